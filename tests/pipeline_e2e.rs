//! The whole pipeline across process boundaries: `sealgate demo --once` runs the proxy,
//! relays its five samples over TLS to the capture upstream, and the results are checked
//! with the tools a recipient would use: `openssl cms` (decrypt, verify), dkimpy (DKIM,
//! with the record `dkim-keygen` printed), `7z` (the zip, with the password from the
//! separate message).

use mail_parser::MimeHeaders;
use std::path::{Path, PathBuf};
use std::process::Command;

mod support;

use support::demo::demo_dir as demo;

/// Captured messages, keyed by envelope recipient.
fn outbox(dir: &Path) -> Vec<(Vec<String>, PathBuf, String)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir.join("outbox")).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "json") {
            let env: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            let rcpts = rcpts_of(&env);
            let eml = p.with_extension("eml");
            let text = String::from_utf8_lossy(&std::fs::read(&eml).unwrap()).into_owned();
            v.push((rcpts, eml, text));
        }
    }
    v
}

/// The `rcpts` of an envelope (outbox `.json` or spool header).
fn rcpts_of(env: &serde_json::Value) -> Vec<String> {
    env["rcpts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

fn find<'a>(
    msgs: &'a [(Vec<String>, PathBuf, String)],
    rcpt: &str,
) -> &'a (Vec<String>, PathBuf, String) {
    msgs.iter()
        .find(|(r, _, _)| r.iter().any(|x| x == rcpt))
        .unwrap_or_else(|| panic!("nothing for {rcpt}"))
}

fn dkim_keys_file(dir: &Path) -> PathBuf {
    // "s2026._domainkey.example.com. IN TXT ( "..." "..." )" -> "NAME VALUE"
    let rec = std::fs::read_to_string(dir.join("certs/dkim/example.com.s2026.txt")).unwrap();
    let name = rec.split_whitespace().next().unwrap().to_string();
    let value: String = rec.split('"').skip(1).step_by(2).collect();
    let p = dir.join("dkim-keys.txt");
    std::fs::write(&p, format!("{name} {value}\n")).unwrap();
    p
}

fn dkim_passes(keys: &Path, eml: &Path) -> bool {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/dkim/verify_dkimpy.py"
        ))
        .arg(keys)
        .arg(eml)
        .output()
        .expect("python3 with dkimpy (installed by .ci/run)");
    let text = String::from_utf8_lossy(&out.stdout);
    !text.trim().is_empty() && text.lines().all(|l| l.contains("\"pass\": true"))
}

#[test]
fn demo_output_decrypts_verifies_and_passes_dkim_with_real_tools() {
    let (_tmp, dir) = demo();
    let msgs = outbox(&dir);
    assert_eq!(
        msgs.len(),
        6,
        "five samples (one of them OpenPGP) and one password message reach the upstream"
    );
    let keys = dkim_keys_file(&dir);
    for (rcpts, eml, _) in &msgs {
        assert!(
            dkim_passes(&keys, eml),
            "DKIM must verify for {rcpts:?} ({})",
            eml.display()
        );
    }

    // The payslip: encrypted to alice, then signed by payroll, decrypts and verifies.
    let (_, eml, text) = find(&msgs, "alice@bank.example");
    assert!(text.contains("application/pkcs7-mime"), "{text}");
    assert!(
        !text.contains("Please find the payroll file attached"),
        "no plaintext outside"
    );
    let dec = dir.join("payslip.dec");
    let st = Command::new("openssl")
        .args(["cms", "-decrypt", "-in"])
        .arg(eml)
        .arg("-recip")
        .arg(dir.join("certs/recipients/alice@bank.example.pem"))
        .arg("-inkey")
        .arg(dir.join("recipient-keys/alice@bank.example.key"))
        .arg("-out")
        .arg(&dec)
        .status()
        .unwrap();
    assert!(st.success());
    let verified = dir.join("payslip.txt");
    let out = Command::new("openssl")
        .args(["cms", "-verify", "-in"])
        .arg(&dec)
        .arg("-CAfile")
        .arg(dir.join("certs/ca.pem"))
        .arg("-out")
        .arg(&verified)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inner = std::fs::read_to_string(&verified).unwrap();
    assert!(
        inner.contains("Please find the payroll file attached."),
        "{inner}"
    );
    assert!(inner.contains("payroll-2026-11.pdf"), "{inner}");

    // The card number without a certificate: body readable, attachment zipped, the password
    // only in the separate message to security@, and 7z opens the zip with it.
    let (_, _, zipped) = find(&msgs, "orders@partner.example");
    let (_, _, pwmail) = find(&msgs, "security@example.com");
    let parsed = mail_parser::MessageParser::default()
        .parse(zipped.as_bytes())
        .unwrap();
    let zip = parsed
        .attachments()
        .find(|a| a.attachment_name().is_some_and(|n| n.ends_with(".zip")))
        .expect("a zip attachment");
    let zip_path = dir.join("attachments.zip");
    std::fs::write(&zip_path, zip.contents()).unwrap();
    let pw_parsed = mail_parser::MessageParser::default()
        .parse(pwmail.as_bytes())
        .unwrap();
    let pw_body = pw_parsed.body_text(0).unwrap().into_owned();
    let password = pw_body
        .split_whitespace()
        .find(|w| w.len() >= 20 && w.chars().all(|c| c.is_ascii_alphanumeric()))
        .expect("a password of at least 20 characters")
        .to_string();
    assert!(
        !zipped.contains(&password),
        "the password never travels with the zip"
    );
    let audit = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap();
    assert!(!audit.contains(&password), "the password is never audited");
    let out_dir = dir.join("unzipped");
    let st = Command::new("7z")
        .arg("x")
        .arg(format!("-p{password}"))
        .arg(format!("-o{}", out_dir.display()))
        .arg("-y")
        .arg(&zip_path)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stdout)
    );
    assert!(std::fs::read(out_dir.join("statement.pdf"))
        .unwrap()
        .starts_with(b"%PDF-1.4"));

    // The executable: replaced by a notice naming it and its SHA-256.
    let (_, _, stripped) = find(&msgs, "ops@example.com");
    assert!(stripped.contains("tool.exe"), "{stripped}");
    assert!(
        !stripped.contains("TVqQAAMAAAAEAAAA"),
        "the executable is gone"
    );
    assert!(
        stripped.to_ascii_lowercase().contains("sha-256") || stripped.contains("SHA256"),
        "{stripped}"
    );
}

/// Decrypts `eml` as `who` (a demo recipient) with `openssl cms`; true when it could.
fn decrypts_as(dir: &Path, eml: &Path, who: &str) -> bool {
    Command::new("openssl")
        .args(["cms", "-decrypt", "-in"])
        .arg(eml)
        .arg("-recip")
        .arg(dir.join(format!("certs/recipients/{who}.pem")))
        .arg("-inkey")
        .arg(dir.join(format!("recipient-keys/{who}.key")))
        .arg("-out")
        .arg(dir.join("bcc.dec"))
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// An encrypted payslip to alice with bob on Bcc, through a real SMTP session: each gets
/// a copy of their own, so bob's EnvelopedData does not name alice's certificate nor
/// alice's bob's (`openssl cms -decrypt` with the other's key finds no recipient).
#[test]
fn a_bcc_recipient_of_encrypted_mail_gets_a_copy_of_its_own() {
    let (_tmp, dir) = demo();
    let server = support::demo::serve_demo(&dir, "", "");
    let mut c = support::Smtp::connect(server.port);
    c.cmd("EHLO bcc.test");
    assert!(c.cmd("MAIL FROM:<payroll@example.com>").starts_with("250"));
    for r in ["alice@bank.example", "bob@bank.example"] {
        let reply = c.cmd(&format!("RCPT TO:<{r}>"));
        assert!(reply.starts_with("250"), "{r}: {reply}");
    }
    let reply = c.data(b"From: payroll@example.com\r\nTo: alice@bank.example\r\nSubject: payslip\r\n\r\nYour payslip.\r\n");
    assert!(reply.starts_with("250"), "{reply}");
    c.cmd("QUIT");

    // The demo's upstream is gone: the copies wait in the spool.
    let mut copies = Vec::new();
    for e in std::fs::read_dir(dir.join("spool/queue"))
        .unwrap()
        .flatten()
    {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "msg") {
            continue;
        }
        let raw = std::fs::read(&p).unwrap();
        let mut parts = raw.splitn(3, |&b| b == b'\n');
        let (_magic, header, message) = (parts.next(), parts.next(), parts.next());
        let env: serde_json::Value = serde_json::from_slice(header.unwrap()).unwrap();
        let rcpts = rcpts_of(&env);
        let eml = p.with_extension("eml");
        std::fs::write(&eml, message.unwrap()).unwrap();
        copies.push((rcpts, eml));
    }
    copies.sort();
    let rcpts: Vec<&Vec<String>> = copies.iter().map(|(r, _)| r).collect();
    assert_eq!(
        rcpts,
        [
            &vec!["alice@bank.example".to_string()],
            &vec!["bob@bank.example".to_string()]
        ]
    );
    let (alice, bob) = (&copies[0].1, &copies[1].1);
    assert!(decrypts_as(&dir, alice, "alice@bank.example"));
    assert!(decrypts_as(&dir, bob, "bob@bank.example"));
    assert!(
        !decrypts_as(&dir, bob, "alice@bank.example"),
        "bob's copy must not be encrypted to alice"
    );
    assert!(
        !decrypts_as(&dir, alice, "bob@bank.example"),
        "alice's copy must not name bob"
    );
}
