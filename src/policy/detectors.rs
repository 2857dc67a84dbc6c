//! Built-in detectors for `body = ["builtin:NAME"]`: sensitive data that a regex alone finds badly.
//!
//! Each detector finds candidates with a linear-time regex and then validates them the
//! way the issuing scheme does (Luhn for cards, ISO 7064 mod-97 for IBANs, SSA ranges
//! for US SSNs, ...), so that order numbers and phone numbers do not trip a rule.
//! A hit is only ever shown redacted (`4111 **** **** 1111`): explain output and logs
//! must not become a second copy of the secret.
//! Invariant: detectors never panic on any input and run in time linear in the text.

use regex::Regex;
use serde::Serialize;
use std::sync::LazyLock;

/// One built-in detector; written `builtin:<name>` in policy files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Detector {
    /// Payment card numbers: 13–19 digits, optionally grouped by single spaces or dashes
    /// (one kind per number), first digit 2–6 (the payment-card industries), Luhn-valid,
    /// not all one digit.
    CreditCard,
    /// IBANs (ISO 13616): country code with its registered length, mod-97 check digits;
    /// electronic form or printed in groups separated by single spaces.
    Iban,
    /// US Social Security numbers written `AAA-GG-SSSS` or `AAA GG SSSS`; area not 000,
    /// 666 or 900–999, group not 00, serial not 0000, and not the well-known invalid
    /// numbers 078-05-1120, 219-09-9999 and 123-45-6789. Nine bare digits are not matched.
    UsSsn,
    /// E-mail addresses (`local@domain.tld`).
    EmailAddress,
    /// PEM / OpenSSH / PGP private key blocks (the BEGIN line followed by key material),
    /// also when quoted in a reply (`> ` before each line).
    PrivateKey,
    /// AWS access key IDs (`AKIA`, `ASIA`, `ABIA`, `ACCA` followed by 16 base-32 characters).
    AwsAccessKey,
    /// UK National Insurance numbers (`AB 12 34 56 C`), with the prefixes HMRC never issues refused.
    UkNino,
    /// GitHub tokens (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` + 36 characters, `github_pat_...`).
    GithubToken,
}

/// Where a detector found something, and how to show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hit {
    /// Byte range in the searched text.
    #[serde(skip)]
    pub range: std::ops::Range<usize>,
    /// The hit with its secret part masked, safe to print.
    pub redacted: String,
}

impl Detector {
    /// Every detector, in the order documented.
    pub const ALL: [Detector; 8] = [
        Detector::CreditCard,
        Detector::Iban,
        Detector::UsSsn,
        Detector::EmailAddress,
        Detector::PrivateKey,
        Detector::AwsAccessKey,
        Detector::UkNino,
        Detector::GithubToken,
    ];

    /// The name after `builtin:`.
    pub fn name(self) -> &'static str {
        match self {
            Detector::CreditCard => "credit-card",
            Detector::Iban => "iban",
            Detector::UsSsn => "us-ssn",
            Detector::EmailAddress => "email-address",
            Detector::PrivateKey => "private-key",
            Detector::AwsAccessKey => "aws-access-key",
            Detector::UkNino => "uk-nino",
            Detector::GithubToken => "github-token",
        }
    }

    /// The detector called `name` (without `builtin:`).
    pub fn from_name(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The first validated hit in `text`, if any.
    pub fn find(self, text: &str) -> Option<Hit> {
        match self {
            Detector::CreditCard => find_card(text),
            Detector::Iban => find_iban(text),
            Detector::UsSsn => find_ssn(text),
            Detector::EmailAddress => EMAIL.find(text).map(|m| Hit {
                range: m.range(),
                redacted: redact_email(m.as_str()),
            }),
            Detector::PrivateKey => PRIVATE_KEY.captures(text).and_then(|c| {
                let all = c.get(0)?;
                let begin = c.get(1)?.as_str();
                Some(Hit {
                    range: all.range(),
                    redacted: format!("{begin} [key material redacted]"),
                })
            }),
            Detector::AwsAccessKey => AWS_KEY.find(text).map(|m| Hit {
                range: m.range(),
                redacted: keep_ends(m.as_str(), 4, 4),
            }),
            Detector::UkNino => find_nino(text),
            Detector::GithubToken => GITHUB_TOKEN.find(text).map(|m| {
                let s = m.as_str();
                let prefix_len = if s.starts_with("github_pat_") { 11 } else { 4 };
                Hit {
                    range: m.range(),
                    redacted: keep_ends(s, prefix_len, 0),
                }
            }),
        }
    }
}

/// Compiles a constant pattern. Each pattern below is exercised by the unit tests
/// (`every_detector_pattern_compiles`), so a typo fails the test suite, not production;
/// should one fail anyway, the detector matches nothing instead of panicking.
fn constant_regex(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|_| {
        // `[^\s\S]` can never match.
        Regex::new(r"[^\s\S]").unwrap_or_else(|_| unreachable_regex())
    })
}

#[allow(clippy::unwrap_used)]
fn unreachable_regex() -> Regex {
    // Proof: the empty pattern is always valid.
    Regex::new("").unwrap()
}

static CARD_RUN: LazyLock<Regex> = LazyLock::new(|| constant_regex(r"[0-9](?:[ -]?[0-9]){12,}"));
static IBAN: LazyLock<Regex> =
    LazyLock::new(|| constant_regex(r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[0-9A-Z]){8,32}"));
static SSN: LazyLock<Regex> =
    LazyLock::new(|| constant_regex(r"(?-u:\b)([0-9]{3})([- ])([0-9]{2})([- ])([0-9]{4})(?-u:\b)"));
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    constant_regex(
        r"(?i-u:\b)[a-z0-9._%+\-]+@[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?)*\.[a-z]{2,63}(?-u:\b)",
    )
});
static PRIVATE_KEY: LazyLock<Regex> = LazyLock::new(|| {
    constant_regex(
        r"(-----BEGIN (?:(?:RSA|EC|DSA|OPENSSH|ENCRYPTED|PGP) )?PRIVATE KEY(?: BLOCK)?-----)[ \t]*\r?\n(?:[ \t>]*[A-Za-z\-]+:[^\r\n]*\r?\n)*[\s>]*[A-Za-z0-9+/=]{40,}",
    )
});
static AWS_KEY: LazyLock<Regex> =
    LazyLock::new(|| constant_regex(r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}(?-u:\b)"));
static NINO: LazyLock<Regex> = LazyLock::new(|| {
    constant_regex(
        r"(?-u:\b)([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]) ?([0-9]{2}) ?([0-9]{2}) ?([0-9]{2}) ?([A-D])(?-u:\b)",
    )
});
static GITHUB_TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    constant_regex(r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})(?-u:\b)")
});

/// For each detector in [`Detector::ALL`] order: could it find something in `text`?
///
/// Cheap scans (memchr for the literal ones, 8 bytes at a time to the next digit for the
/// others) testing, for each detector, a condition that every match of
/// its regex implies (so `false` is always right to skip the detector; `true` only means
/// "run it"): a card needs 13 digits joined by at most single spaces or dashes; an IBAN two
/// capitals and two digits; a US SSN `ddd?dd?dddd` with `?` a space or dash; a UK NINO two
/// capitals, an optional space and two digits; an e-mail address an `@`; a private key
/// `-----BEGIN `; an AWS key `AKIA`, `ASIA`, `ABIA` or `ACCA`; a GitHub token `gh[pousr]_`
/// or `github_pat_`. This replaced a `RegexSet` of the eight regexes, which (all matches
/// wanted, so always to the end of the text) cost ~28 instructions a byte.
pub(crate) fn candidates(text: &str) -> [bool; Detector::ALL.len()] {
    use memchr::memmem;
    const CARD: usize = 0;
    const IBAN: usize = 1;
    const SSN: usize = 2;
    const EMAIL: usize = 3;
    const KEY: usize = 4;
    const AWS: usize = 5;
    const NINO: usize = 6;
    const GITHUB: usize = 7;
    let mut out = [false; Detector::ALL.len()];
    let b = text.as_bytes();
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let digit = |i: usize| at(i).is_ascii_digit();
    let upper = |i: usize| at(i).is_ascii_uppercase();
    let sep = |i: usize| matches!(at(i), b' ' | b'-');

    // Literal ones: memchr/memmem (SIMD).
    out[EMAIL] = memchr::memchr(b'@', b).is_some();
    out[KEY] = memmem::find(b, b"-----BEGIN ").is_some();
    out[AWS] = [&b"AKIA"[..], b"ASIA", b"ABIA", b"ACCA"]
        .iter()
        .any(|k| memmem::find(b, k).is_some());
    out[GITHUB] = memmem::find(b, b"github_pat_").is_some()
        || memmem::find_iter(b, b"gh")
            .any(|i| matches!(at(i + 2), b'p' | b'o' | b'u' | b's' | b'r') && at(i + 3) == b'_');

    // The others all contain two adjacent digits; find runs of digits joined by single
    // spaces or dashes (what the card regex needs), 8 bytes at a time between them.
    let mut i = 0;
    while i < b.len() {
        if let Some(chunk) = b.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            if !has_ascii_digit(u64::from_le_bytes(word)) {
                i += 8;
                continue;
            }
        }
        if !digit(i) {
            i += 1;
            continue;
        }
        // A run starts at `i`.
        let mut digits = 0usize;
        let mut j = i;
        loop {
            if digit(j) {
                digits += 1;
                if digit(j + 1) {
                    if upper(j.wrapping_sub(2)) && upper(j.wrapping_sub(1)) {
                        out[IBAN] = true;
                        out[NINO] = true;
                    }
                    if at(j.wrapping_sub(1)) == b' '
                        && upper(j.wrapping_sub(3))
                        && upper(j.wrapping_sub(2))
                    {
                        out[NINO] = true;
                    }
                    if digit(j + 2)
                        && sep(j + 3)
                        && digit(j + 4)
                        && digit(j + 5)
                        && sep(j + 6)
                        && digit(j + 7)
                        && digit(j + 8)
                        && digit(j + 9)
                        && digit(j + 10)
                    {
                        out[SSN] = true;
                    }
                }
                j += 1;
            } else if sep(j) && digit(j + 1) {
                j += 1;
            } else {
                break;
            }
        }
        if digits >= 13 {
            out[CARD] = true;
        }
        i = j.max(i + 1);
    }
    out
}

/// True when one of the 8 bytes of `x` is an ASCII digit (SWAR: Hacker's Delight's
/// "has a byte between m and n", exact for bytes below 0x80; bytes from 0x80 never count).
fn has_ascii_digit(x: u64) -> bool {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    let low7 = x & (ONES * 0x7f);
    // Bytes > '0' - 1 and < '9' + 1.
    let above = low7.wrapping_add(ONES * (0x7f - 0x2f)) & HIGH;
    let below = (ONES * (0x7f + 0x3a)).wrapping_sub(low7) & HIGH;
    (above & below & !x) != 0
}

/// Luhn (mod 10) over ASCII digits.
pub(crate) fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d.wrapping_sub(b'0'));
        if v > 9 {
            return false;
        }
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

fn plausible_card(digits: &[u8]) -> bool {
    (13..=19).contains(&digits.len())
        && matches!(digits.first(), Some(b'2'..=b'6'))
        && digits.iter().any(|d| Some(d) != digits.first())
        && luhn_valid(digits)
}

/// Finds a card number inside runs of digit groups: every window of whole groups with
/// 13–19 digits and one kind of separator is tried, so "ref 12 4111 1111 1111 1111" is found.
fn find_card(text: &str) -> Option<Hit> {
    for run in CARD_RUN.find_iter(text) {
        let s = run.as_str();
        // (start, end) byte offsets of each digit group within the run.
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut start = None;
        for (i, b) in s.bytes().enumerate() {
            match (b.is_ascii_digit(), start) {
                (true, None) => start = Some(i),
                (false, Some(st)) => {
                    groups.push((st, i));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(st) = start {
            groups.push((st, s.len()));
        }
        for first in 0..groups.len() {
            let mut digits: Vec<u8> = Vec::with_capacity(19);
            let mut sep: Option<u8> = None;
            for (k, &(gs, ge)) in groups.iter().enumerate().skip(first) {
                if k > first {
                    let this_sep = s.as_bytes().get(gs - 1).copied();
                    if sep.is_some() && sep != this_sep {
                        break;
                    }
                    sep = this_sep;
                }
                digits.extend_from_slice(s.as_bytes().get(gs..ge).unwrap_or(&[]));
                if digits.len() > 19 {
                    break;
                }
                if plausible_card(&digits) {
                    let (a, _) = groups[first];
                    let range = run.start() + a..run.start() + ge;
                    let shown = text.get(range.clone()).unwrap_or("");
                    return Some(Hit {
                        redacted: mask_digits(shown, 4, 4),
                        range,
                    });
                }
            }
        }
    }
    None
}

/// Replaces every digit except the first `keep_first` and last `keep_last` with `*`,
/// keeping separators: `4111 1111 1111 1111` → `4111 **** **** 1111`.
fn mask_digits(s: &str, keep_first: usize, keep_last: usize) -> String {
    let total = s.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    s.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if seen <= keep_first || seen > total.saturating_sub(keep_last) {
                    c
                } else {
                    '*'
                }
            } else {
                c
            }
        })
        .collect()
}

/// Keeps `first` and `last` characters, masks the rest.
fn keep_ends(s: &str, first: usize, last: usize) -> String {
    let n = s.chars().count();
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if i < first || i >= n.saturating_sub(last) {
                c
            } else {
                '*'
            }
        })
        .collect()
}

fn redact_email(s: &str) -> String {
    match s.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

/// Registered IBAN lengths by country (SWIFT IBAN registry).
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BI", 27),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DJ", 27),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FK", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HN", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("LY", 25),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MN", 20),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NI", 28),
    ("NL", 18),
    ("NO", 15),
    ("OM", 23),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("RU", 33),
    ("SA", 24),
    ("SC", 31),
    ("SD", 18),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("SO", 23),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
    ("YE", 30),
];

/// ISO 7064 MOD 97-10 over an IBAN in electronic form (upper-case alphanumerics).
pub(crate) fn iban_checksum_valid(iban: &[u8]) -> bool {
    if iban.len() < 5 {
        return false;
    }
    let (head, tail) = iban.split_at(4);
    let mut rem: u32 = 0;
    for &c in tail.iter().chain(head) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn find_iban(text: &str) -> Option<Hit> {
    for m in IBAN.find_iter(text) {
        let s = m.as_str().as_bytes();
        let Some(country) = m.as_str().get(0..2) else {
            continue;
        };
        let Some(&(_, len)) = IBAN_LENGTHS.iter().find(|(c, _)| *c == country) else {
            continue;
        };
        let mut compact = Vec::with_capacity(len);
        let mut end = 0;
        for (i, &b) in s.iter().enumerate() {
            if b != b' ' {
                compact.push(b);
                if compact.len() == len {
                    end = i + 1;
                    break;
                }
            }
        }
        if compact.len() != len {
            continue;
        }
        // The IBAN must end here: no letter or digit directly after it.
        let after = text.as_bytes().get(m.start() + end).copied();
        if after.is_some_and(|b| b.is_ascii_alphanumeric()) {
            continue;
        }
        if iban_checksum_valid(&compact) {
            let range = m.start()..m.start() + end;
            let shown = text.get(range.clone()).unwrap_or("");
            let n = shown.chars().filter(|c| *c != ' ').count();
            let mut seen = 0;
            let redacted = shown
                .chars()
                .map(|c| {
                    if c == ' ' {
                        return c;
                    }
                    seen += 1;
                    if seen <= 4 || seen > n.saturating_sub(4) {
                        c
                    } else {
                        '*'
                    }
                })
                .collect();
            return Some(Hit { range, redacted });
        }
    }
    None
}

fn find_ssn(text: &str) -> Option<Hit> {
    for c in SSN.captures_iter(text) {
        let (Some(all), Some(area), Some(s1), Some(group), Some(s2), Some(serial)) =
            (c.get(0), c.get(1), c.get(2), c.get(3), c.get(4), c.get(5))
        else {
            continue;
        };
        if s1.as_str() != s2.as_str() {
            continue;
        }
        // Not part of a longer dashed number such as 12-123-45-6789.
        let before = text.as_bytes().get(all.start().wrapping_sub(1)).copied();
        let after = text.as_bytes().get(all.end()).copied();
        if matches!(before, Some(b'-')) || matches!(after, Some(b'-')) {
            continue;
        }
        let a: u32 = area.as_str().parse().unwrap_or(0);
        let g: u32 = group.as_str().parse().unwrap_or(0);
        let s: u32 = serial.as_str().parse().unwrap_or(0);
        let valid = a != 0 && a != 666 && a < 900 && g != 0 && s != 0;
        let famous = matches!((a, g, s), (78, 5, 1120) | (219, 9, 9999) | (123, 45, 6789));
        if valid && !famous {
            let sep = s1.as_str();
            return Some(Hit {
                range: all.range(),
                redacted: format!("***{sep}**{sep}{}", serial.as_str()),
            });
        }
    }
    None
}

fn find_nino(text: &str) -> Option<Hit> {
    for c in NINO.captures_iter(text) {
        let (Some(all), Some(prefix)) = (c.get(0), c.get(1)) else {
            continue;
        };
        if matches!(
            prefix.as_str(),
            "BG" | "GB" | "KN" | "NK" | "NT" | "TN" | "ZZ"
        ) {
            continue;
        }
        return Some(Hit {
            range: all.range(),
            redacted: mask_digits(all.as_str(), 0, 0),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(d: Detector, text: &str) -> Option<String> {
        d.find(text).map(|h| h.redacted)
    }

    #[test]
    fn every_detector_pattern_compiles() {
        for re in [
            &*CARD_RUN,
            &*IBAN,
            &*SSN,
            &*EMAIL,
            &*PRIVATE_KEY,
            &*AWS_KEY,
            &*NINO,
            &*GITHUB_TOKEN,
        ] {
            // The fallback pattern is `[^\s\S]`; a real pattern is never that.
            assert_ne!(re.as_str(), r"[^\s\S]");
        }
        for d in Detector::ALL {
            assert_eq!(Detector::from_name(d.name()), Some(d));
        }
        let c = candidates("4111 1111 1111 1111 and AKIAIOSFODNN7EXAMPLE");
        assert_eq!(c, [true, false, false, false, false, true, false, false]);
    }

    /// `candidates` may say "maybe" too often, never "no" when the detector's regex matches.
    #[test]
    fn candidates_never_miss_a_regex_match() {
        let regexes = [
            &*CARD_RUN,
            &*IBAN,
            &*SSN,
            &*EMAIL,
            &*PRIVATE_KEY,
            &*AWS_KEY,
            &*NINO,
            &*GITHUB_TOKEN,
        ];
        let check = |t: &str| {
            let c = candidates(t);
            for (i, re) in regexes.iter().enumerate() {
                if re.is_match(t) {
                    assert!(c[i], "detector {:?} skipped on {t:?}", Detector::ALL[i]);
                }
            }
        };
        for t in [
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "1- 4111111111111",
            "12 -4111 1111 1111 1111",
            "DE89 3704 0044 0532 0130 00",
            "GB82WEST12345698765432",
            "078-05-1120 and 123 45 6789",
            "AB 12 34 56 C, AB123456C",
            "a.b@example.com",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0123456789abcdefghijklmnopqrstuvwxyzABCD",
            "AKIAIOSFODNN7EXAMPLE ASIA ABIA ACCA",
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789 github_pat_",
        ] {
            check(t);
        }
        let fragments = [
            "0",
            "1",
            "4",
            "9",
            " ",
            "-",
            "--",
            "A",
            "B",
            "K",
            "I",
            "S",
            "C",
            "Z",
            "@",
            "x",
            ".",
            "g",
            "h",
            "p",
            "_",
            "github_pat_",
            "-----BEGIN ",
            "\n",
            "é",
            "DE",
            "AB",
            "ghp_",
            "AKIA",
            "com",
            "a",
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for x in 0..=255u8 {
            for pos in 0..8 {
                let mut w = [b'a'; 8];
                w[pos] = x;
                assert_eq!(has_ascii_digit(u64::from_le_bytes(w)), x.is_ascii_digit());
            }
        }
        for _ in 0..50_000 {
            let len = (next() % 40) as usize;
            let mut s = String::new();
            for _ in 0..len {
                s.push_str(fragments[(next() % fragments.len() as u64) as usize]);
            }
            check(&s);
        }
    }

    #[test]
    fn credit_card_positive() {
        assert_eq!(
            hit(Detector::CreditCard, "card 4111 1111 1111 1111 exp 12/29").as_deref(),
            Some("4111 **** **** 1111")
        );
        assert_eq!(
            hit(Detector::CreditCard, "4111-1111-1111-1111").as_deref(),
            Some("4111-****-****-1111")
        );
        assert_eq!(
            hit(Detector::CreditCard, "mc:5555555555554444.").as_deref(),
            Some("5555********4444")
        );
        // Amex, 15 digits, 4-6-5 grouping.
        assert!(hit(Detector::CreditCard, "3782 822463 10005").is_some());
        // Card after an unrelated number in the same run of groups.
        assert!(hit(Detector::CreditCard, "ref 12 4111 1111 1111 1111").is_some());
    }

    #[test]
    fn credit_card_negative() {
        // Luhn fails.
        assert!(hit(Detector::CreditCard, "4111 1111 1111 1112").is_none());
        // Luhn-valid but all zeros / not a payment-card industry digit.
        assert!(hit(Detector::CreditCard, "0000 0000 0000 0000").is_none());
        assert!(hit(Detector::CreditCard, "7992739871300000").is_none());
        // Too short, and a phone number.
        assert!(hit(Detector::CreditCard, "4111 1111 1111").is_none());
        assert!(hit(Detector::CreditCard, "+1 555 123 4567").is_none());
        // Mixed separators are not one number.
        assert!(hit(Detector::CreditCard, "4111-1111 1111-1111").is_none());
        // A longer bare digit string is not a card.
        assert!(hit(Detector::CreditCard, "41111111111111110000").is_none());
    }

    #[test]
    fn iban_positive_and_negative() {
        assert_eq!(
            hit(Detector::Iban, "pay to DE89 3704 0044 0532 0130 00 please").as_deref(),
            Some("DE89 **** **** **** **30 00")
        );
        assert!(hit(Detector::Iban, "GB82WEST12345698765432").is_some());
        assert!(hit(Detector::Iban, "NO9386011117947").is_some());
        // Wrong check digits, wrong length, unknown country.
        assert!(hit(Detector::Iban, "DE88 3704 0044 0532 0130 00").is_none());
        assert!(hit(Detector::Iban, "DE89370400440532013").is_none());
        assert!(hit(Detector::Iban, "ZZ89370400440532013000").is_none());
        // Glued to more characters.
        assert!(hit(Detector::Iban, "GB82WEST12345698765432X").is_none());
    }

    #[test]
    fn us_ssn_positive_and_negative() {
        assert_eq!(
            hit(Detector::UsSsn, "SSN: 536-22-1234.").as_deref(),
            Some("***-**-1234")
        );
        assert!(hit(Detector::UsSsn, "536 22 1234").is_some());
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "912-12-3456",
            "536-00-1234",
            "536-22-0000",
            "078-05-1120",
            "123-45-6789",
            "536-22 1234",
            "536221234",
            "1-536-22-1234",
        ] {
            assert!(hit(Detector::UsSsn, bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn email_address_positive_and_negative() {
        assert_eq!(
            hit(
                Detector::EmailAddress,
                "write to alice.smith@mail.example.org now"
            )
            .as_deref(),
            Some("a***@mail.example.org")
        );
        assert!(hit(Detector::EmailAddress, "alice at example dot org").is_none());
        assert!(hit(Detector::EmailAddress, "user@localhost").is_none());
    }

    #[test]
    fn private_key_positive_and_negative() {
        let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(
            hit(Detector::PrivateKey, key).as_deref(),
            Some("-----BEGIN RSA PRIVATE KEY----- [key material redacted]")
        );
        let pkcs8 = "x\r\n-----BEGIN PRIVATE KEY-----\r\nMC4CAQAwBQYDK2VwBCIEIBbmYHdaIs7WkZb2yGczQxNNUOGvLBcxYfyZrVaUUvYX\r\n";
        assert!(hit(Detector::PrivateKey, pkcs8).is_some());
        // Quoted in a reply.
        let quoted = "> -----BEGIN RSA PRIVATE KEY-----\r\n> MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\r\n>> x\r\n";
        assert!(hit(Detector::PrivateKey, quoted).is_some());
        // A public key, and a mention of the marker without key material.
        assert!(hit(
            Detector::PrivateKey,
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n"
        )
        .is_none());
        assert!(hit(
            Detector::PrivateKey,
            "never paste -----BEGIN PRIVATE KEY----- into mail"
        )
        .is_none());
    }

    #[test]
    fn aws_access_key_positive_and_negative() {
        assert_eq!(
            hit(Detector::AwsAccessKey, "key=AKIAIOSFODNN7EXAMPLE;").as_deref(),
            Some("AKIA************MPLE")
        );
        // 0, 1, 8, 9 are not base-32; too short; unknown prefix.
        assert!(hit(Detector::AwsAccessKey, "AKIAIOSFODNN1EXAMPLE").is_none());
        assert!(hit(Detector::AwsAccessKey, "AKIAIOSFODNN7EXAMPL").is_none());
        assert!(hit(Detector::AwsAccessKey, "AKIBIOSFODNN7EXAMPLE").is_none());
    }

    #[test]
    fn uk_nino_positive_and_negative() {
        assert_eq!(
            hit(Detector::UkNino, "NI number AB 12 34 56 C.").as_deref(),
            Some("AB ** ** ** C")
        );
        assert!(hit(Detector::UkNino, "JG103759A").is_some());
        // Never-issued prefixes, forbidden letters, bad suffix.
        assert!(hit(Detector::UkNino, "GB 12 34 56 C").is_none());
        assert!(hit(Detector::UkNino, "DA 12 34 56 C").is_none());
        assert!(hit(Detector::UkNino, "AO 12 34 56 C").is_none());
        assert!(hit(Detector::UkNino, "AB 12 34 56 E").is_none());
    }

    #[test]
    fn github_token_positive_and_negative() {
        let tok = format!("ghp_{}", "a1B2c3D4e5".repeat(3) + "F6g7H8");
        assert_eq!(tok.len(), 40);
        let shown = hit(Detector::GithubToken, &format!("token {tok} ok")).unwrap();
        assert!(shown.starts_with("ghp_****"));
        assert!(hit(Detector::GithubToken, "ghp_short").is_none());
        assert!(hit(Detector::GithubToken, &format!("ghx_{}", &tok[4..])).is_none());
    }

    #[test]
    fn detectors_survive_odd_input() {
        let odd = "é4111\u{0}1111 ---- ---- DE89 ÄÖ 536-22-\u{FEFF}1234 @@ a@b. AKIA";
        for d in Detector::ALL {
            let _ = d.find(odd);
            let _ = d.find("");
        }
    }
}
