//! Attachment protection as a user sees it: `7z x -p` opens the zip and gives back the
//! attachments bit-identical; the password travels only in its own message; stripping
//! leaves a notice with name, type, size and SHA-256; the body stays byte-identical.

mod smime_support;

use sealgate::policy::verdict::{Actions, Attachments, Crypto, CryptoKind};
use sealgate::transform::{apply, Plan};
use sha2::{Digest, Sha256};
use smime_support::*;

fn plan_with(actions: Actions) -> Plan {
    Plan {
        actions,
        recipients: vec!["alice@bank.example".into()],
        notes: Vec::new(),
    }
}

fn attachment_bytes() -> Vec<u8> {
    let mut bin = Vec::new();
    for i in 0..3000u32 {
        bin.extend_from_slice(&i.to_le_bytes());
    }
    bin
}

const BODY_PART: &str = "--outer\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln — naïve café ✓\r\n--outer\r\n";

#[test]
fn zip_opens_with_7z_and_password_travels_separately() {
    let dir = tempfile::tempdir().unwrap();
    let msg = rich_message();
    let actions = Actions::attachments(Attachments::Zip {
        password_to: Some("security@example.com".into()),
    });
    let out = apply(&plan_with(actions), "payroll@example.com", &msg, None).unwrap();
    let text = String::from_utf8(out.message.clone()).unwrap();
    // The body part is byte-identical; the readable notice says where the password is.
    assert!(text.contains(BODY_PART), "{text}");
    assert!(text.contains("separate message to security@example.com"));
    assert!(text.contains("7-Zip"));
    // The password message
    assert_eq!(out.extra.len(), 1);
    let extra = &out.extra[0];
    assert_eq!(extra.to, ["security@example.com"]);
    assert_eq!(extra.from, "payroll@example.com");
    let pw_mail = mail_parser::MessageParser::default()
        .parse(&extra.message)
        .unwrap();
    let pw_text = pw_mail.body_text(0).unwrap().to_string();
    let pw = pw_text
        .lines()
        .find_map(|l| l.strip_prefix("Password: "))
        .unwrap()
        .trim()
        .to_string();
    assert!(pw.len() >= 20);
    assert!(!text.contains(&pw), "password in the main message");
    assert!(
        out.notes.iter().all(|n| !n.contains(&pw)),
        "password in the notes"
    );
    let sha = format!("{:x}", Sha256::digest(attachment_bytes()));
    assert!(
        out.notes
            .iter()
            .any(|n| n.contains("data.bin") && n.contains(&sha)),
        "{:?}",
        out.notes
    );
    // Extract the archive with 7z.
    let parsed = mail_parser::MessageParser::default()
        .parse(&out.message)
        .unwrap();
    let zip_part = parsed
        .attachments()
        .find(|a| mail_parser::MimeHeaders::attachment_name(*a) == Some("attachments.zip"))
        .unwrap();
    let zpath = dir.path().join("attachments.zip");
    std::fs::write(&zpath, zip_part.contents()).unwrap();
    let outdir = dir.path().join("x");
    run(
        "7z",
        &[
            "x",
            &format!("-p{pw}"),
            &format!("-o{}", p(&outdir)),
            p(&zpath),
        ],
        None,
        true,
    );
    assert_eq!(
        std::fs::read(outdir.join("data.bin")).unwrap(),
        attachment_bytes()
    );
    // the forwarded message was an inline part, not an attachment: still in the body
    assert!(text.contains("Inner ümlaut body"));
    // A wrong password does not open it.
    let bad = run("7z", &["t", "-pwrong-password", p(&zpath)], None, false);
    assert!(!bad.status.success());
    // 7z reports AES-256.
    let info = run(
        "7z",
        &["l", "-slt", &format!("-p{pw}"), p(&zpath)],
        None,
        true,
    );
    assert!(String::from_utf8_lossy(&info.stdout).contains("AES-256"));
}

#[test]
fn forwarded_message_attachment_is_zipped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let inner = b"From: x@y.example\r\nSubject: old\r\n\r\nold body\r\n";
    let mut msg = b"From: a@example.com\r\nTo: b@bank.example\r\nSubject: fwd\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"old.eml\"\r\n\r\n".to_vec();
    msg.extend_from_slice(inner);
    msg.extend_from_slice(b"\r\n--b--\r\n");
    let out = apply(
        &plan_with(Actions::attachments(Attachments::Zip { password_to: None })),
        "a@example.com",
        &msg,
        None,
    )
    .unwrap();
    assert_eq!(
        out.extra[0].to,
        ["a@example.com"],
        "password goes to the sender by default"
    );
    let parsed = mail_parser::MessageParser::default()
        .parse(&out.message)
        .unwrap();
    let zip_part = parsed
        .attachments()
        .find(|a| mail_parser::MimeHeaders::attachment_name(*a) == Some("attachments.zip"))
        .unwrap();
    let zpath = dir.path().join("a.zip");
    std::fs::write(&zpath, zip_part.contents()).unwrap();
    let pw_mail = String::from_utf8_lossy(&out.extra[0].message).to_string();
    let pw = pw_mail
        .lines()
        .find_map(|l| l.strip_prefix("Password: "))
        .unwrap()
        .trim()
        .to_string();
    let outdir = dir.path().join("x");
    run(
        "7z",
        &[
            "x",
            &format!("-p{pw}"),
            &format!("-o{}", p(&outdir)),
            p(&zpath),
        ],
        None,
        true,
    );
    // the part body (without the CRLF that belongs to the delimiter)
    assert_eq!(std::fs::read(outdir.join("old.eml")).unwrap(), &inner[..]);
}

#[test]
fn strip_leaves_a_notice_with_name_type_size_and_hash() {
    let msg = rich_message();
    let out = apply(
        &plan_with(Actions::attachments(Attachments::Strip)),
        "payroll@example.com",
        &msg,
        None,
    )
    .unwrap();
    let text = String::from_utf8(out.message).unwrap();
    assert!(text.contains(BODY_PART));
    let sha = format!("{:x}", Sha256::digest(attachment_bytes()));
    assert!(
        text.contains(&format!(
            "\"data.bin\" (application/octet-stream, 12000 bytes, SHA-256 {sha})"
        )),
        "{text}"
    );
    assert!(out.extra.is_empty());
    assert!(out
        .notes
        .iter()
        .any(|n| n.starts_with("stripped attachment \"data.bin\"")));
    // Headers stay as they were.
    assert!(text.starts_with("From: Payroll <payroll@example.com>\r\n"));
}

#[test]
fn zip_then_sign_and_encrypt_decrypts_to_the_zipped_message() {
    let pki = pki();
    let smime = pki.load(&pki.config());
    let actions = Actions {
        attachments: Attachments::Zip { password_to: None },
        crypto: Crypto::planned(true, Some(CryptoKind::Smime)),
    };
    let out = apply(
        &plan_with(actions),
        "payroll@example.com",
        &rich_message(),
        Some(&smime),
    )
    .unwrap();
    let f = pki.path("z.eml");
    std::fs::write(&f, &out.message).unwrap();
    let dec = pki.path("z.out");
    run(
        "openssl",
        &[
            "cms",
            "-decrypt",
            "-in",
            p(&f),
            "-recip",
            p(&pki.alice.cert_path),
            "-inkey",
            p(&pki.alice.key_path),
            "-binary",
            "-out",
            p(&dec),
        ],
        None,
        true,
    );
    let inner = String::from_utf8_lossy(&std::fs::read(&dec).unwrap()).to_string();
    assert!(inner.contains("attachments.zip"));
    assert!(inner.contains("Grüße aus Köln"));
}
