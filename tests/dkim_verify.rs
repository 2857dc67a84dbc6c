//! DKIM signatures made by sealgate, checked by two independent verifiers: dkimpy
//! (Python, with PyNaCl for Ed25519) and OpenDKIM (`opendkim -t` with `TestPublicKeys`).
//! Both read the public keys from the DNS records that `keygen` printed, never from our
//! own structures, so a wrong record format fails here too.

use std::path::{Path, PathBuf};
use std::process::Command;

use sealgate::transform::dkim::{keygen, Algorithm, DkimConfig, DkimSigner};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// Keys written by `keygen` into a temporary directory, and the records it printed.
struct Setup {
    dir: tempfile::TempDir,
    /// `NAME VALUE` lines built from the printed records (dkimpy and OpenDKIM read this).
    keys_file: PathBuf,
    signer: DkimSigner,
}

/// Turns `s._domainkey.d. IN TXT ( "v=DKIM1; ..." "..." )` into (`s._domainkey.d`, value).
fn parse_printed_record(record: &str) -> (String, String) {
    let (name, rest) = record.split_once(' ').expect("record has a name");
    assert!(
        rest.starts_with("IN TXT ( \"") && rest.ends_with("\" )"),
        "{record}"
    );
    let strings: Vec<&str> = rest.split('"').skip(1).step_by(2).collect();
    for s in &strings {
        assert!(
            s.len() <= 255,
            "TXT string longer than 255 bytes in {record}"
        );
    }
    (name.trim_end_matches('.').to_string(), strings.concat())
}

/// Our selectors; signatures already in a message (corpus mail) use others and are ignored.
const SELECTORS: [&str; 2] = ["sg-rsa", "sg-ed"];

/// One RSA-2048 and one Ed25519 key (selectors `sg-rsa` and `sg-ed`) for each domain.
fn setup(domains: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = String::new();
    let mut entries = Vec::new();
    for (alg, selector) in [
        (Algorithm::Rsa, SELECTORS[0]),
        (Algorithm::Ed25519, SELECTORS[1]),
    ] {
        let key_file = PathBuf::from(format!("{selector}.key"));
        let record = keygen(
            "example.com",
            selector,
            alg,
            2048,
            &dir.path().join(&key_file),
        )
        .unwrap();
        let (_, value) = parse_printed_record(&record);
        for domain in domains {
            lines.push_str(&format!("{selector}._domainkey.{domain} {value}\n"));
            entries.push(DkimConfig {
                domain: domain.to_string(),
                selector: selector.to_string(),
                key_file: key_file.clone(),
                sign_subdomains: false,
                expire: Some("7d".into()),
                max_key_age: None,
            });
        }
    }
    let keys_file = dir.path().join("keys.txt");
    std::fs::write(&keys_file, lines).unwrap();
    let signer = DkimSigner::load(&entries, dir.path()).unwrap();
    Setup {
        dir,
        keys_file,
        signer,
    }
}

/// dkimpy's verdict per signature, in header order: (algorithm, pass).
fn dkimpy(setup: &Setup, message: &[u8]) -> Vec<(String, bool)> {
    let path = setup.dir.path().join("msg-dkimpy.eml");
    std::fs::write(&path, message).unwrap();
    let out = Command::new("python3")
        .arg(Path::new(FIXTURES).join("dkim/verify_dkimpy.py"))
        .arg(&setup.keys_file)
        .arg(&path)
        .output()
        .expect("python3 must be installed (with dkimpy and pynacl)");
    assert!(
        out.status.success(),
        "dkimpy helper failed (pip install dkimpy pynacl): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|s| SELECTORS.contains(&s["s"].as_str().unwrap()))
        .map(|s| {
            (
                s["a"].as_str().unwrap().to_string(),
                s["pass"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// OpenDKIM's verdicts, from the Authentication-Results it adds: (algorithm, result).
fn opendkim(setup: &Setup, message: &[u8]) -> Vec<(String, String)> {
    let path = setup.dir.path().join("msg-opendkim.eml");
    std::fs::write(&path, message).unwrap();
    let conf = setup.dir.path().join("opendkim.conf");
    std::fs::write(
        &conf,
        format!(
            "Mode v\nSyslog no\nAlwaysAddARHeader yes\nTestPublicKeys {}\n",
            setup.keys_file.display()
        ),
    )
    .unwrap();
    let out = Command::new("opendkim")
        .arg("-x")
        .arg(&conf)
        .arg("-vvv") // prints the Authentication-Results it would add
        .arg("-t")
        .arg(&path)
        .output()
        .expect("opendkim must be installed (Debian package opendkim)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "opendkim failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut results = Vec::new();
    for segment in stdout.split(';') {
        let segment = segment.trim();
        if let Some(rest) = segment.strip_prefix("dkim=") {
            let result = rest.split_whitespace().next().unwrap_or("").to_string();
            let field = |name: &str| {
                segment
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .unwrap_or("?")
                    .to_string()
            };
            if SELECTORS.contains(&field("header.s=").as_str()) {
                results.push((field("header.a="), result));
            }
        }
    }
    results
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(FIXTURES).join("dkim").join(name)).unwrap()
}

fn assert_all_pass(setup: &Setup, signed: &[u8], expected: usize) {
    let py = dkimpy(setup, signed);
    assert_eq!(py.len(), expected, "dkimpy saw {py:?}");
    assert!(
        py.iter().all(|(_, ok)| *ok),
        "dkimpy: {py:?}\n{}",
        String::from_utf8_lossy(signed)
    );
    let od = opendkim(setup, signed);
    assert_eq!(od.len(), expected, "opendkim saw {od:?}");
    assert!(
        od.iter().all(|(_, r)| r == "pass"),
        "opendkim: {od:?}\n{}",
        String::from_utf8_lossy(signed)
    );
}

fn assert_all_fail(setup: &Setup, tampered: &[u8]) {
    let py = dkimpy(setup, tampered);
    assert_eq!(py.len(), 2, "{py:?}");
    assert!(
        py.iter().all(|(_, ok)| !*ok),
        "dkimpy accepted a tampered message: {py:?}"
    );
    let od = opendkim(setup, tampered);
    assert_eq!(od.len(), 2, "{od:?}");
    assert!(
        od.iter().all(|(_, r)| r != "pass"),
        "opendkim accepted a tampered message: {od:?}"
    );
}

/// Inserts `line` (with CRLF) right after the DKIM-Signature headers.
fn insert_after_signatures(signed: &[u8], line: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(signed).into_owned();
    let pos = text
        .find("\r\nFrom:")
        .expect("From header after signatures")
        + 2;
    let mut out = text.clone();
    out.insert_str(pos, &format!("{line}\r\n"));
    out.into_bytes()
}

#[test]
fn dual_rsa_and_ed25519_signatures_both_verify() {
    let s = setup(&["example.com"]);
    let signed = s.signer.sign(&fixture("plain.eml")).unwrap();
    let text = String::from_utf8_lossy(&signed);
    assert!(
        text.starts_with(
            "DKIM-Signature: v=1; a=rsa-sha256; s=sg-rsa; d=example.com; c=relaxed/relaxed;"
        ),
        "{text}"
    );
    assert!(
        text.contains("a=ed25519-sha256; s=sg-ed; d=example.com"),
        "{text}"
    );
    assert!(text.contains("x="), "expire = 7d must give x=: {text}");
    let py = dkimpy(&s, &signed);
    assert_eq!(
        py,
        vec![
            ("rsa-sha256".to_string(), true),
            ("ed25519-sha256".to_string(), true)
        ]
    );
    let od = opendkim(&s, &signed);
    assert_eq!(
        od,
        vec![
            ("rsa-sha256".to_string(), "pass".to_string()),
            ("ed25519-sha256".to_string(), "pass".to_string())
        ],
    );
}

#[test]
fn signs_the_headers_the_issue_lists_and_oversigns_from_subject_to_date() {
    let s = setup(&["example.com"]);
    let signed = s.signer.sign(&fixture("plain.eml")).unwrap();
    let text = String::from_utf8_lossy(&signed);
    let first = text.split("\r\nFrom:").next().unwrap();
    let unfolded: String = first.split("\r\n\t").collect::<Vec<_>>().concat();
    let h = unfolded
        .split(';')
        .find_map(|t| t.trim().strip_prefix("h="))
        .expect("h= tag")
        .to_ascii_lowercase();
    let names: Vec<&str> = h.split(':').collect();
    for (name, times) in [
        ("from", 2),
        ("subject", 2),
        ("to", 2),
        ("date", 2),
        ("cc", 1),
        ("reply-to", 1),
        ("message-id", 1),
    ] {
        assert_eq!(
            names.iter().filter(|n| **n == name).count(),
            times,
            "{name} in h={h}"
        );
    }
    assert!(unfolded.contains(" t="), "t= present: {unfolded}");
}

#[test]
fn eight_bit_body_verifies() {
    let s = setup(&["example.com"]);
    let signed = s.signer.sign(&fixture("8bit-body.eml")).unwrap();
    assert_all_pass(&s, &signed, 2);
}

#[test]
fn whitespace_only_lines_at_the_end_of_the_body_verify() {
    let s = setup(&["example.com"]);
    let head = "From: a@example.com\r\nTo: b@example.org\r\nSubject: ws\r\n\r\n";
    for body in [
        "a\r\n \r\n",
        "a\r\n\t\r\n\r\n",
        "a  \t b\r\n  \r\nc\t\r\n \r\n",
        "a\r\n \r\n \r\n",
        "  \r\n",
    ] {
        let message = format!("{head}{body}");
        let signed = s.signer.sign(message.as_bytes()).unwrap();
        assert!(
            signed.ends_with(message.as_bytes()),
            "the relayed bytes are the original"
        );
        assert_all_pass(&s, &signed, 2);
    }
}

#[test]
fn smime_encrypted_message_verifies() {
    let s = setup(&["example.com"]);
    let signed = s.signer.sign(&fixture("smime-encrypted.eml")).unwrap();
    assert_all_pass(&s, &signed, 2);
}

#[test]
fn changing_a_signed_header_fails_verification() {
    let s = setup(&["example.com"]);
    let signed = s.signer.sign(&fixture("plain.eml")).unwrap();
    let text = String::from_utf8_lossy(&signed);
    let tampered = text.replace(
        "Subject: Quarterly report",
        "Subject: Quarterly report (urgent)",
    );
    assert_ne!(tampered, text);
    assert_all_fail(&s, tampered.as_bytes());
}

#[test]
fn changing_the_body_fails_verification() {
    let s = setup(&["example.com"]);
    let signed = s.signer.sign(&fixture("plain.eml")).unwrap();
    let text = String::from_utf8_lossy(&signed);
    let tampered = text.replace("numbers are attached", "numbers are wrong");
    assert_all_fail(&s, tampered.as_bytes());
}

#[test]
fn adding_a_second_from_fails_verification() {
    let s = setup(&["example.com"]);
    let signed = s.signer.sign(&fixture("plain.eml")).unwrap();
    assert_all_fail(
        &s,
        &insert_after_signatures(&signed, "From: Mallory <ceo@example.com>"),
    );
}

#[test]
fn adding_a_second_subject_or_a_cc_fails_verification() {
    let s = setup(&["example.com"]);
    let signed = s.signer.sign(&fixture("plain.eml")).unwrap();
    assert_all_fail(
        &s,
        &insert_after_signatures(&signed, "Subject: Pay this invoice"),
    );
    assert_all_fail(
        &s,
        &insert_after_signatures(&signed, "Cc: mallory@evil.example"),
    );
}

#[test]
fn unrelated_header_may_be_added_without_breaking_signatures() {
    let s = setup(&["example.com"]);
    let signed = s.signer.sign(&fixture("plain.eml")).unwrap();
    assert_all_pass(
        &s,
        &insert_after_signatures(&signed, "Received: from relay by mx"),
        2,
    );
}

/// The pipeline hands DKIM CRLF-normalised messages that end in CRLF (SMTP DATA cannot
/// end otherwise); do the same for the corpus. (OpenDKIM's `-t` mode reports "message not
/// signed" for a file whose last line lacks its newline.)
fn to_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 20);
    let mut prev = 0u8;
    for &b in raw {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn from_domain(raw: &[u8]) -> Option<String> {
    let msg = mail_parser::MessageParser::new().parse_headers(raw)?;
    let addr = msg.from()?.first()?.address()?;
    let (_, d) = addr.rsplit_once('@')?;
    let d = d.trim_end_matches('.').to_ascii_lowercase();
    (!d.is_empty()
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
    .then_some(d)
}

#[test]
fn corpus_messages_never_panic_and_signed_ones_verify() {
    let mut files = Vec::new();
    for folder in ["rfc", "malformed", "thirdparty"] {
        for e in std::fs::read_dir(Path::new(FIXTURES).join("corpus").join(folder)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "eml") {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(
        files.len() >= 40,
        "corpus copied into tests/fixtures/corpus"
    );
    let raws: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let mut domains: Vec<String> = raws.iter().filter_map(|r| from_domain(r)).collect();
    domains.sort();
    domains.dedup();
    let domain_refs: Vec<&str> = domains.iter().map(String::as_str).collect();
    let s = setup(&domain_refs);

    let mut verified = 0;
    for (path, raw) in files.iter().zip(&raws) {
        // Raw bytes, whatever their line endings: must not panic or fail.
        s.signer
            .sign(raw)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Deterministic byte mutations (NUL, bare CR/LF, 8-bit, colons) must not panic either.
        let mut seed = raw.len() as u64 | 1;
        for _ in 0..10 {
            let mut m = raw.clone();
            for _ in 0..8 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                if !m.is_empty() {
                    let at = (seed as usize) % m.len();
                    m[at] = [0u8, b'\r', b'\n', 0xff, b':', b' ', b'@'][(seed >> 32) as usize % 7];
                }
            }
            let _ = s.signer.sign(&m);
        }
        // Truncated prefixes exercise header parsing on half messages.
        for cut in [1, raw.len() / 3, raw.len() / 2] {
            let _ = s.signer.sign(&raw[..cut.min(raw.len())]);
        }
        let crlf = to_crlf(raw);
        let signed = s.signer.sign(&crlf).unwrap();
        if signed.len() == crlf.len() {
            continue; // no From domain: left unsigned, as designed
        }
        let py = dkimpy(&s, &signed);
        assert!(
            py.len() == 2 && py.iter().all(|(_, ok)| *ok),
            "{}: dkimpy {py:?}",
            path.display()
        );
        let od = opendkim(&s, &signed);
        if od.len() != 2 {
            let keep = std::env::temp_dir().join("sealgate-dkim-corpus-failure.eml");
            std::fs::write(&keep, &signed).unwrap();
        }
        assert!(
            od.len() == 2 && od.iter().all(|(_, r)| r == "pass"),
            "{}: opendkim {od:?} (signed copy kept in {})",
            path.display(),
            std::env::temp_dir()
                .join("sealgate-dkim-corpus-failure.eml")
                .display()
        );
        verified += 1;
    }
    assert!(
        verified >= 20,
        "only {verified} corpus messages were signed"
    );
}
