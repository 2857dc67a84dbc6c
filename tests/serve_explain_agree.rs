//! `explain` shows what `serve` does: every message of the corpus, of the policy
//! fixtures and of the hostile and interop fixtures goes through a real `sealgate serve` (relaying to a real `sealgate capture`
//! upstream) and through `sealgate explain --write` with the same envelope and policy,
//! and the two must agree on accepted vs refused, on the refusal reply, and for
//! accepted messages on the outgoing bytes (volatile parts masked: trace headers added
//! at receipt, DKIM b=/bh=/t=, random MIME boundaries, zip contents and passwords).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{crlf, EnvOptions, Smtp, TestEnv, SEALGATE};

const POLICY: &str = r#"
[[rule]]
name = "no executables"
attachment_name = ["*.exe"]
actions = ["strip-attachments"]

[[rule]]
name = "cards travel zipped"
body = ["builtin:credit-card"]
actions = ["zip-attachments"]

[[rule]]
name = "no csv"
attachment_type = ["text/csv"]
actions = ["reject"]
message = "spreadsheets go through the file share"
"#;

/// Every message the comparison runs over: the corpus, the policy, hostile and interop fixtures.
fn messages() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut v = Vec::new();
    for dir in [
        "corpus/rfc",
        "corpus/malformed",
        "corpus/thirdparty",
        "policy/messages",
        "hostile",
        "interop",
    ] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort();
        v.extend(files);
    }
    v
}

/// The header block of a CRLF message (up to the empty line) and the rest.
fn split(m: &[u8]) -> (&[u8], &[u8]) {
    match m.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(p) => (&m[..p + 2], &m[p + 2..]),
        None => (m, b""),
    }
}

/// Top-level header fields, unfolded lines kept with their continuations.
fn fields(header: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(header);
    let mut out: Vec<String> = Vec::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        match out.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => {
                last.push_str("\r\n");
                last.push_str(line);
            }
            _ => out.push(line.to_string()),
        }
    }
    out
}

/// The copy with its volatile parts replaced by fixed marks. `original` is the message
/// as submitted: a Date or Message-ID it holds is compared, one added at receipt is not.
fn mask(copy: &[u8], original: &[u8]) -> String {
    let orig = String::from_utf8_lossy(original).to_ascii_lowercase();
    let (header, body) = split(copy);
    let mut out = String::new();
    for f in fields(header) {
        let name = f.split(':').next().unwrap_or("").to_ascii_lowercase();
        let value = f.split_once(':').map(|x| x.1.trim()).unwrap_or("");
        let masked = match name.as_str() {
            "received" if !orig.contains(&value.to_ascii_lowercase()) => "Received: *".into(),
            "date" | "message-id" if !orig.contains(&value.to_ascii_lowercase()) => {
                format!("{name}: *")
            }
            "dkim-signature" => f
                .split(';')
                .map(|t| {
                    let k = t.trim().split('=').next().unwrap_or("");
                    if ["b", "bh", "t", "x"].contains(&k) {
                        format!("{k}=*")
                    } else {
                        t.trim().to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(";"),
            _ => f,
        };
        out.push_str(&masked);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut body = String::from_utf8_lossy(body).into_owned();
    // Boundaries sealgate made are random: each boundary not in the original becomes
    // a numbered mark, in order of first appearance.
    let whole = format!("{out}{body}");
    let mut n = 0;
    for part in whole.split("boundary=").skip(1) {
        let b: String = part
            .trim_start_matches('"')
            .chars()
            .take_while(|c| !matches!(c, '"' | ';' | '\r' | '\n' | ' '))
            .collect();
        if !b.is_empty() && !orig.contains(&b.to_ascii_lowercase()) {
            n += 1;
            out = out.replace(&b, &format!("BOUNDARY{n}"));
            body = body.replace(&b, &format!("BOUNDARY{n}"));
        }
    }
    // A zip is encrypted with a random password: its bytes, and the password mail's
    // text, differ on every run. The rest of the structure is compared.
    let mut masked_body = String::new();
    let mut in_zip = false;
    for line in body.split("\r\n") {
        if line
            .to_ascii_lowercase()
            .starts_with("content-type: application/zip")
        {
            in_zip = true;
        } else if line.starts_with("--") {
            in_zip = false;
        }
        if in_zip && !line.is_empty() && !line.contains(':') {
            masked_body.push_str("ZIPDATA\r\n");
        } else {
            masked_body.push_str(line);
            masked_body.push_str("\r\n");
        }
    }
    out + &masked_body
}

/// What one side decided for a message: `Ok(copies keyed by recipients)` or the reply.
type Outcome = Result<BTreeMap<Vec<String>, String>, String>;

/// Copies whose plan strips or zips attachments, over all `explain` runs.
static TRANSFORMED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn explain(
    env: &TestEnv,
    from: &str,
    rcpts: &[String],
    file: &Path,
    out: &Path,
    original: &[u8],
) -> Outcome {
    let mut cmd = Command::new(SEALGATE);
    cmd.arg("explain")
        .arg("-c")
        .arg(&env.config)
        .arg("--json")
        .arg("--from")
        .arg(from)
        .arg("--to")
        .args(rcpts)
        .arg("--write")
        .arg(out)
        .arg("--")
        .arg(file)
        .current_dir(env.path());
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "explain {}: {}",
        file.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    if v["accepted"] != true {
        return Err(v["reply"].as_str().unwrap_or("").to_string());
    }
    let mut copies = BTreeMap::new();
    for (n, c) in v["copies"].as_array().unwrap().iter().enumerate() {
        let a = &c["actions"];
        if a["strip_attachments"] == true || a["zip_attachments"] == true {
            TRANSFORMED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut r: Vec<String> = c["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        r.sort();
        let bytes = std::fs::read(out.join(format!("copy-{}.eml", n + 1))).unwrap();
        copies.insert(r, mask(&bytes, original));
        for k in 1.. {
            let p = out.join(format!("copy-{}-extra-{k}.eml", n + 1));
            let Ok(bytes) = std::fs::read(&p) else { break };
            // The password mail goes to the sender: keyed by that.
            copies.insert(vec![format!("password:{from}")], mask_password(&bytes));
        }
    }
    Ok(copies)
}

/// The password mail: its header (Date masked) only; the body holds the random password.
fn mask_password(m: &[u8]) -> String {
    let (header, _) = split(m);
    fields(header)
        .into_iter()
        .map(|f| {
            let lower = f.to_ascii_lowercase();
            if lower.starts_with("date:") || lower.starts_with("message-id:") {
                "volatile: *".to_string()
            } else if lower.starts_with("dkim-signature:") {
                "DKIM-Signature: *".to_string()
            } else {
                f
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn submit(port: u16, from: &str, rcpts: &[String], message: &[u8]) -> String {
    let mut c = Smtp::connect(port);
    let r = c.cmd("EHLO client.test");
    assert!(r.starts_with("250"), "EHLO: {r}");
    let eight = if message.iter().any(|&b| b >= 0x80) {
        " BODY=8BITMIME"
    } else {
        ""
    };
    let r = c.cmd(&format!("MAIL FROM:<{from}>{eight}"));
    if !r.starts_with('2') {
        return r;
    }
    for rcpt in rcpts {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        if !r.starts_with('2') {
            return r;
        }
    }
    let r = c.data(message);
    let _ = c.cmd("QUIT");
    r
}

#[test]
fn serve_and_explain_decide_the_same_for_every_corpus_message() {
    let mut env = TestEnv::new(EnvOptions::default());
    let root = env.path().to_path_buf();
    std::fs::write(root.join("policies/10-rules.toml"), POLICY).unwrap();
    // A DKIM key for example.com, so signing runs on both sides.
    let key = root.join("dkim.key");
    let kg = Command::new(SEALGATE)
        .args([
            "dkim-keygen",
            "--domain",
            "example.com",
            "--selector",
            "s1",
            "--out",
        ])
        .arg(&key)
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        kg.status.success(),
        "{}",
        String::from_utf8_lossy(&kg.stderr)
    );
    let mut cfg = std::fs::read_to_string(&env.config).unwrap();
    cfg.push_str(&format!(
        "\n[[dkim]]\ndomain = \"example.com\"\nselector = \"s1\"\nkey_file = \"{}\"\n",
        key.display()
    ));
    std::fs::write(&env.config, cfg).unwrap();
    let up = env.start_good_capture();
    env.start_serve();

    let files = messages();
    assert!(files.len() >= 60, "corpus missing: {}", files.len());
    let mut expected: Vec<(PathBuf, Vec<u8>, Outcome)> = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for (i, file) in files.iter().enumerate() {
        let mut message = crlf(&std::fs::read(file).unwrap());
        // SMTP DATA ends the last line: both sides get the message as it arrives.
        if !message.is_empty() && !message.ends_with(b"\r\n") {
            message.extend_from_slice(b"\r\n");
        }
        let input = root.join(format!("in-{i}.eml"));
        std::fs::write(&input, &message).unwrap();
        let from = format!("app{i}@example.com");
        let rcpts = vec![format!("m{i}a@example.net"), format!("m{i}b@example.org")];
        let out = root.join(format!("explain-{i}"));
        let predicted = explain(&env, &from, &rcpts, &input, &out, &message);
        let reply = submit(env.port, &from, &rcpts, &message);
        match &predicted {
            Ok(copies) => {
                assert!(
                    reply.starts_with("250"),
                    "{}: explain accepts, serve answers {reply}",
                    file.display()
                );
                assert!(
                    !copies.is_empty(),
                    "{}: accepted without copies",
                    file.display()
                );
                accepted += 1;
            }
            Err(why) => {
                let first = reply.lines().next().unwrap_or("");
                assert!(
                    !reply.starts_with("250") && why.starts_with(first) && !first.is_empty(),
                    "{}: explain refuses with {why:?}, serve answers {reply:?}",
                    file.display()
                );
                refused += 1;
            }
        }
        expected.push((file.clone(), message, predicted));
    }
    let total: usize = expected
        .iter()
        .map(|e| e.2.as_ref().map_or(0, |c| c.len()))
        .sum();
    let got = env.wait_for_messages(&up, total);
    assert_eq!(
        got.len(),
        total,
        "more copies relayed than explain predicted"
    );
    let mut relayed: BTreeMap<Vec<String>, &support::Received> = BTreeMap::new();
    for r in &got {
        let mut key = r.rcpts.clone();
        key.sort();
        if r.rcpts.iter().any(|x| x.starts_with("app")) {
            key = vec![format!("password:{}", r.rcpts.join(","))];
        }
        relayed.insert(key, r);
    }
    for (file, original, predicted) in &expected {
        let Ok(copies) = predicted else { continue };
        for (key, want) in copies {
            let r = relayed
                .get(key)
                .unwrap_or_else(|| panic!("{}: no relayed copy for {key:?}", file.display()));
            let got = if key[0].starts_with("password:") {
                mask_password(&r.bytes)
            } else {
                mask(&r.bytes, original)
            };
            assert_eq!(&got, want, "{}: copy for {key:?} differs", file.display());
        }
    }
    let transformed = TRANSFORMED.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{accepted} accepted, {refused} refused, {transformed} transformed, {total} copies");
    assert!(
        accepted > 40 && refused > 0 && transformed >= 2,
        "{accepted}/{refused}/{transformed}"
    );
}
