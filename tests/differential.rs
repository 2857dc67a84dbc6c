//! Differential test of sealgate's reading of MIME against two independent readers:
//! Python's `email` package (policy=default, tests/fixtures/differential/python_view.py)
//! and Node's `mailparser` (node_view.js), each run as its own process.
//!
//! A seeded xorshift mutator changes real messages (tests/fixtures/corpus, the hostile
//! and policy fixtures) at the structural points where readers part ways: header folding,
//! white-space and blank lines, boundaries, duplicated or malformed Content-* fields,
//! transfer encodings. For every mutant that sealgate does not refuse, whatever a reader
//! shows must be something sealgate judges: each attachment a reader shows (by the
//! SHA-256 of its decoded content) is an attachment to sealgate too, under the same file
//! name, and each text a reader shows is content sealgate decoded the same way.
//! The run is bounded in time (`SEALGATE_DIFF_SECONDS`, default 50) and reproducible
//! (`SEALGATE_DIFF_SEED`); a mismatch prints the mutant and where it is written.
//! Messages found this way are kept in tests/fixtures/differential/*.eml and checked on
//! every run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sealgate::policy::{seen, Seen};
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in [
        "corpus/rfc",
        "corpus/malformed",
        "corpus/thirdparty",
        "hostile",
        "policy/messages",
    ] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(DIR).join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort();
        for p in files {
            let raw = std::fs::read(&p).unwrap();
            let canon = sealgate::message::mime::canonical_crlf(&raw).into_owned();
            out.push((
                format!("{dir}/{}", p.file_name().unwrap().to_string_lossy()),
                canon,
            ));
        }
    }
    out
}

/// The lines of `m` (CRLF-terminated, the last possibly not).
fn lines(m: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < m.len() {
        let end =
            sealgate::message::mime::find(&m[start..], b"\r\n").map_or(m.len(), |p| start + p + 2);
        out.push(m[start..end].to_vec());
        start = end;
    }
    out
}

/// Indexes of lines that are in a header block: the message's own, and each part's
/// (after a line starting with `--`), up to the empty line.
fn header_lines(ls: &[Vec<u8>]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut in_header = true;
    for (i, l) in ls.iter().enumerate() {
        if in_header {
            if l == b"\r\n" {
                in_header = false;
            } else {
                out.push(i);
            }
        } else if l.starts_with(b"--") {
            in_header = true;
        }
    }
    out
}

fn is_content_field(l: &[u8]) -> bool {
    l.len() > 8 && l[..8].eq_ignore_ascii_case(b"content-")
}

/// One structural mutation of `m`.
fn mutate(m: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut ls = lines(m);
    if ls.is_empty() {
        return m.to_vec();
    }
    let heads = header_lines(&ls);
    let delims: Vec<usize> = (0..ls.len())
        .filter(|&i| ls[i].starts_with(b"--"))
        .collect();
    let pick = |rng: &mut Rng, v: &[usize]| v.get(rng.below(v.len())).copied();
    match rng.below(12) {
        // White-space-only or continuation line at the start of a part's header.
        0 => {
            if let Some(d) = pick(rng, &delims) {
                let junk: &[u8] = [&b" \r\n"[..], b"\t\r\n", b" x\r\n"][rng.below(3)];
                ls.insert(d + 1, junk.to_vec());
            }
        }
        // Fold a header line at a space, or unfold a continuation.
        1 => {
            if let Some(h) = pick(rng, &heads) {
                let l = ls[h].clone();
                if let Some(sp) = l.iter().skip(1).position(|c| *c == b' ' || *c == b';') {
                    let at = sp + 2;
                    if at < l.len() - 2 {
                        let mut folded = l[..at].to_vec();
                        folded.extend_from_slice(b"\r\n\t");
                        folded.extend_from_slice(&l[at..]);
                        ls[h] = folded;
                    }
                }
            }
        }
        // A white-space-only line inside a header block.
        2 => {
            if let Some(h) = pick(rng, &heads) {
                ls.insert(h + 1, b" \r\n".to_vec());
            }
        }
        // Duplicate a Content-* field, the same or with another value.
        3 => {
            let cs: Vec<usize> = heads
                .iter()
                .copied()
                .filter(|&i| is_content_field(&ls[i]))
                .collect();
            if let Some(c) = pick(rng, &cs) {
                let dup = if rng.below(2) == 0 {
                    ls[c].clone()
                } else {
                    b"Content-Type: text/plain\r\n".to_vec()
                };
                ls.insert(c + 1, dup);
            }
        }
        // White space before a field's colon, or a field name in odd case.
        4 => {
            if let Some(h) = pick(rng, &heads) {
                if let Some(colon) = ls[h].iter().position(|c| *c == b':') {
                    if rng.below(2) == 0 {
                        ls[h].insert(colon, b' ');
                    } else {
                        let l = &mut ls[h];
                        for c in &mut l[..colon] {
                            *c = if c.is_ascii_lowercase() {
                                c.to_ascii_uppercase()
                            } else {
                                c.to_ascii_lowercase()
                            };
                        }
                    }
                }
            }
        }
        // A line that is not a field inside a header block.
        5 => {
            if let Some(h) = pick(rng, &heads) {
                ls.insert(h + 1, b"not a field\r\n".to_vec());
            }
        }
        // Junk after a boundary delimiter, or white space after it.
        6 => {
            if let Some(d) = pick(rng, &delims) {
                let l = &mut ls[d];
                let end = l.len().saturating_sub(2);
                let junk: &[u8] = [&b" "[..], b"\t", b" junk", b"-"][rng.below(4)];
                l.splice(end..end, junk.iter().copied());
            }
        }
        // Change a transfer encoding's spelling or value.
        7 => {
            let cs: Vec<usize> = heads
                .iter()
                .copied()
                .filter(|&i| {
                    ls[i].len() > 26
                        && ls[i][..26].eq_ignore_ascii_case(b"content-transfer-encoding:")
                })
                .collect();
            if let Some(c) = pick(rng, &cs) {
                let v: &[u8] = [
                    &b" BASE64"[..],
                    b" base64 ",
                    b" quoted-printable",
                    b" 7bit",
                    b" x-uuencode",
                    b"base64",
                ][rng.below(6)];
                let mut l = b"Content-Transfer-Encoding:".to_vec();
                l.extend_from_slice(v);
                l.extend_from_slice(b"\r\n");
                ls[c] = l;
            }
        }
        // Remove the empty line that ends a header block, or add one.
        8 => {
            let blanks: Vec<usize> = (0..ls.len()).filter(|&i| ls[i] == b"\r\n").collect();
            if rng.below(2) == 0 {
                if let Some(b) = pick(rng, &blanks) {
                    ls.remove(b);
                }
            } else if let Some(h) = pick(rng, &heads) {
                ls.insert(h, b"\r\n".to_vec());
            }
        }
        // Delete or duplicate a header line.
        9 => {
            if let Some(h) = pick(rng, &heads) {
                if rng.below(2) == 0 {
                    ls.remove(h);
                } else {
                    let l = ls[h].clone();
                    ls.insert(h, l);
                }
            }
        }
        // A disposition and file name added to a part's header.
        10 => {
            if let Some(d) = pick(rng, &delims) {
                let f: &[u8] = [
                    &b"Content-Disposition: attachment; filename=\"tool.exe\"\r\n"[..],
                    b"Content-Disposition: attachment;\r\n filename*=utf-8''t%C3%B6ol.exe\r\n",
                    b"Content-Disposition: inline\r\n",
                    b"Content-Disposition: attachment; filename=tool .exe\r\n",
                ][rng.below(4)];
                ls.insert(d + 1, f.to_vec());
            }
        }
        // Quotes around a boundary parameter removed or doubled.
        _ => {
            if let Some(h) = heads
                .iter()
                .copied()
                .find(|&i| memchr_contains(&ls[i], b"boundary="))
            {
                let l = String::from_utf8_lossy(&ls[h]).into_owned();
                let changed = if l.contains("boundary=\"") {
                    l.replacen("boundary=\"", "boundary=", 1)
                        .replacen("\"\r\n", "\r\n", 1)
                } else {
                    l.replacen("boundary=", "boundary= ", 1)
                };
                ls[h] = changed.into_bytes();
            }
        }
    }
    ls.concat()
}

fn memchr_contains(hay: &[u8], needle: &[u8]) -> bool {
    sealgate::message::mime::find(hay, needle).is_some()
}

/// Runs a viewer over `files`; one JSON value per file.
fn run_viewer(cmd: &str, script: &str, files: &[PathBuf]) -> Vec<Value> {
    let out = Command::new(cmd)
        .arg(Path::new(DIR).join("differential").join(script))
        .args(files)
        .current_dir(Path::new(DIR).join("differential"))
        .output()
        .unwrap_or_else(|e| panic!("{cmd} {script}: {e} (installed by .ci/run)"));
    assert!(
        out.status.success(),
        "{cmd} {script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(values.len(), files.len(), "{script}");
    values
}

/// Whatever `python` and `node` show of one message that sealgate does not judge the
/// same way; empty when they agree.
fn differences(s: &Seen, python: &Value, node: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if s.refused.is_some() {
        return out;
    }
    let by_hash: HashMap<&str, Vec<&sealgate::policy::SeenLeaf>> =
        s.leaves.iter().fold(HashMap::new(), |mut m, l| {
            m.entry(l.sha256_trimmed.as_str()).or_default().push(l);
            m
        });
    let all_text = s.texts.join("\n");
    // Texts compared by their ASCII letters and digits (what detectors and most patterns
    // match): charset decoders differ in how they show bytes they cannot decode.
    let squeeze = |t: &str| -> String { t.chars().filter(char::is_ascii_alphanumeric).collect() };
    let all_squeezed = squeeze(&all_text);
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    for leaf in python["leaves"].as_array().into_iter().flatten() {
        let hash = leaf["sha256_trimmed"].as_str().unwrap_or_default();
        if hash == EMPTY || leaf["opaque"] == true {
            continue;
        }
        let name = leaf["name"].as_str().filter(|n| !n.trim().is_empty());
        let attachment = leaf["attachment"].as_bool().unwrap_or(false);
        let ours = by_hash.get(hash);
        // A part both read as the same named attachment is acted on whole (stripped,
        // zipped) whatever its decoding: a transfer encoding one reader ignores
        // (`quoted-printable  ` with trailing white space, say) changes only its bytes.
        let named_alike = name.is_some_and(|n| {
            s.leaves
                .iter()
                .any(|l| l.attachment && l.name.as_deref().map(str::trim) == Some(n.trim()))
        });
        if attachment && !named_alike {
            match ours {
                None => out.push(format!(
                    "python shows attachment {name:?} ({}) that sealgate does not decode the same",
                    leaf["content_type"]
                )),
                // The exact structural roles of RFC 1847 containers are exempt.
                Some(v) if !v.iter().any(|l| l.attachment) && !exempt(&leaf["content_type"]) => out
                    .push(format!(
                        "python shows attachment {name:?} ({}) that sealgate reads as inline",
                        leaf["content_type"]
                    )),
                Some(v) => {
                    if let Some(n) = name {
                        if !v
                            .iter()
                            .any(|l| l.name.as_deref().map(str::trim) == Some(n.trim()))
                        {
                            out.push(format!(
                                "python names attachment {n:?}, sealgate {:?}",
                                v.iter().map(|l| l.name.clone()).collect::<Vec<_>>()
                            ));
                        }
                    }
                }
            }
        } else if let Some(text) = leaf["text"].as_str() {
            let t = squeeze(text);
            // Text it left in quoted-printable (a transfer encoding it did not
            // recognise) is not a reading sealgate could share.
            let undecoded_qp = text
                .as_bytes()
                .windows(3)
                .any(|w| w[0] == b'=' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit());
            // Text it left in base64 (a transfer encoding spelt in a way it did not
            // recognise) that sealgate decoded.
            let b64: String = text.split_whitespace().collect();
            let undecoded_b64 = b64.len() >= 4
                && b64
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c))
                && {
                    let d = sealgate::message::mime::decode_body(b64.as_bytes(), "base64");
                    let end = d
                        .iter()
                        .rposition(|c| *c != b'\r' && *c != b'\n')
                        .map_or(0, |p| p + 1);
                    use sha2::Digest;
                    let h: String = sha2::Sha256::digest(&d[..end])
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    by_hash.contains_key(h.as_str())
                };
            // Undecodable bytes shown as U+FFFD are nothing a rule could match.
            let garbage = t.chars().filter(|c| *c == '\u{fffd}').count() * 2 > t.chars().count();
            if !t.is_empty()
                && !garbage
                && !undecoded_qp
                && !undecoded_b64
                && ours.is_none()
                && !all_squeezed.contains(&t)
                && leaf["content_type"] == "text/plain"
            {
                out.push(format!(
                    "python shows text {:?} that sealgate does not see",
                    t.chars().take(80).collect::<String>()
                ));
            }
        }
    }
    for a in node["attachments"].as_array().into_iter().flatten() {
        let hash = a["sha256_trimmed"].as_str().unwrap_or_default();
        let ct = a["content_type"].as_str().unwrap_or_default();
        let named_alike = a["name"].as_str().is_some_and(|n| {
            s.leaves
                .iter()
                .any(|l| l.attachment && l.name.as_deref().map(str::trim) == Some(n.trim()))
        });
        // mailparser reads a delimiter with transport padding (`--b `, which RFC 2046
        // allows and sealgate and Python read as a delimiter) as content: it shows less.
        if hash == EMPTY
            || named_alike
            || a["holds_padded_delimiter"] == true
            || ct.starts_with("message/")
            || ct.starts_with("multipart/")
        {
            continue;
        }
        match by_hash.get(hash) {
            None => out.push(format!(
                "mailparser shows attachment {:?} ({ct}) that sealgate does not decode the same",
                a["name"]
            )),
            Some(v)
                if !v.iter().any(|l| l.attachment)
                    && !ct.starts_with("text/")
                    && !exempt(&a["content_type"]) =>
            {
                out.push(format!(
                    "mailparser shows attachment {:?} ({ct}) that sealgate reads as inline",
                    a["name"]
                ))
            }
            _ => {}
        }
    }
    out
}

/// Types that sealgate leaves in place in the structural roles of a well-formed RFC 1847
/// container (`attachments::Roles`), where other readers list them as attachments.
fn exempt(content_type: &Value) -> bool {
    matches!(
        content_type.as_str().unwrap_or_default(),
        "application/pkcs7-signature"
            | "application/x-pkcs7-signature"
            | "application/pgp-signature"
            | "application/pgp-encrypted"
            | "application/octet-stream"
    )
}

fn check_batch(
    batch: &[(String, Vec<u8>)],
    dir: &Path,
    start: usize,
) -> Vec<(String, Vec<u8>, Vec<String>)> {
    let files: Vec<PathBuf> = batch
        .iter()
        .enumerate()
        .map(|(i, (_, m))| {
            let p = dir.join(format!("m{}.eml", start + i));
            std::fs::write(&p, m).unwrap();
            p
        })
        .collect();
    let py = run_viewer("python3", "python_view.py", &files);
    let js = run_viewer("node", "node_view.js", &files);
    let mut found = Vec::new();
    for (((what, m), p), j) in batch.iter().zip(&py).zip(&js) {
        let d = differences(&seen(m), p, j);
        if !d.is_empty() {
            found.push((what.clone(), m.clone(), d));
        }
    }
    found
}

fn report(found: &[(String, Vec<u8>, Vec<String>)], dir: &Path) -> String {
    let mut s = String::new();
    for (i, (what, m, d)) in found.iter().take(5).enumerate() {
        let p = dir.join(format!("found-{i}.eml"));
        std::fs::write(&p, m).unwrap();
        s.push_str(&format!(
            "\n== {what} (kept as {}):\n  {}\n",
            p.display(),
            d.join("\n  ")
        ));
    }
    s
}

/// The messages found by earlier runs, kept as fixtures: sealgate refuses them or reads
/// them as the other readers do.
#[test]
fn found_cases_are_refused_or_read_as_other_readers_read_them() {
    let mut batch = Vec::new();
    for e in std::fs::read_dir(Path::new(DIR).join("differential")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "eml") {
            batch.push((
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            ));
        }
    }
    assert!(batch.len() >= 15, "found cases missing: {}", batch.len());
    // Those whose structure readers split differently are refused outright.
    for (name, m) in &batch {
        let refused = seen(m).refused.is_some();
        let expect = [
            "d01", "d02", "d03", "d04", "d05", "d06", "d07", "d11", "d13", "d15",
        ]
        .iter()
        .any(|p| name.starts_with(p));
        assert_eq!(refused, expect, "{name}: refused {:?}", seen(m).refused);
    }
    let tmp = tempfile::tempdir().unwrap();
    let found = check_batch(&batch, tmp.path(), 0);
    assert!(found.is_empty(), "{}", report(&found, tmp.path()));
}

/// Seeded, time-bounded mutation of real messages; every mutant sealgate accepts must
/// be read by it as Python's email and Node's mailparser read it.
#[test]
fn mutated_messages_are_refused_or_read_as_other_readers_read_them() {
    let seconds: u64 = std::env::var("SEALGATE_DIFF_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("SEALGATE_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5ea1_9a7e_d1ff_0001);
    eprintln!("differential: seed {seed}, {seconds} s (SEALGATE_DIFF_SEED, SEALGATE_DIFF_SECONDS)");
    let seeds = seeds();
    assert!(seeds.len() > 60, "seed corpus missing");
    let mut rng = Rng(seed | 1);
    let tmp = tempfile::tempdir().unwrap();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tried = 0usize;
    let mut found = Vec::new();
    // The unmutated seeds first: real messages must agree too.
    found.extend(check_batch(&seeds, tmp.path(), 0));
    tried += seeds.len();
    while Instant::now() < deadline && found.is_empty() {
        let batch: Vec<(String, Vec<u8>)> = (0..100)
            .map(|_| {
                let (name, m) = &seeds[rng.below(seeds.len())];
                let mut m = m.clone();
                let n = 1 + rng.below(3);
                for _ in 0..n {
                    m = mutate(&m, &mut rng);
                }
                (format!("{name} with {n} mutation(s)"), m)
            })
            .collect();
        found.extend(check_batch(&batch, tmp.path(), tried));
        tried += batch.len();
    }
    eprintln!("differential: {tried} messages compared");
    let kept = tmp.keep();
    assert!(
        found.is_empty(),
        "{} of {tried} messages read differently:{}",
        found.len(),
        report(&found, &kept)
    );
    let _ = std::fs::remove_dir_all(&kept);
}
