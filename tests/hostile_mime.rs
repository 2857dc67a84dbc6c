//! Hostile MIME (tests/fixtures/hostile/, found in review): messages built so that the
//! policy would see one thing and the recipient's mail program another, or so that a
//! transform lets an attachment through. The policy and the transforms now read the
//! same MIME tree, so they must agree on every message, hostile or real.

use std::path::{Path, PathBuf};

mod support;

use sealgate::policy::verdict::{Actions, Attachments, RecipientVerdict};
use sealgate::policy::{Envelope, PolicySet};
use sealgate::transform::attachments;
use sealgate::transform::{apply, Plan};

const POLICY: &str = r#"
[recipients]
allow = ["*"]

[[rule]]
name = "no card numbers"
body = ["builtin:credit-card"]
actions = ["reject"]

[[rule]]
name = "no programs"
attachment_name = ["*.exe"]
actions = ["reject"]
"#;

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hostile")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn policy() -> PolicySet {
    PolicySet::from_sources(&[("policies/rules.toml".into(), POLICY.into())]).unwrap()
}

fn verdict(msg: &[u8]) -> RecipientVerdict {
    let env = Envelope {
        client: "local",
        from: "a@example.com",
    };
    policy()
        .judge_message(&env, &["b@example.com".into()], msg)
        .remove(0)
}

fn refused_by(msg: &[u8]) -> String {
    match verdict(msg) {
        RecipientVerdict::Reject { by, .. } => by.rule,
        other => panic!("not refused: {other:?}"),
    }
}

fn transformed(msg: &[u8], actions: Actions) -> Vec<u8> {
    let plan = Plan {
        actions,
        recipients: vec!["b@example.com".into()],
        notes: Vec::new(),
    };
    apply(&plan, "a@example.com", msg, None).unwrap().message
}

#[test]
fn content_hidden_from_mail_parser_is_judged() {
    // A card or a program that a standard MIME reader (Python's email package) shows,
    // behind an unclosed inner multipart, boundary text in the middle of a line, or a
    // transfer encoding with one bad character.
    for file in [
        "01-unclosed-inner-multipart.eml",
        "02-midline-boundary.eml",
        "02b-dash-boundary.eml",
        "02c-midline-closing-boundary.eml",
        "04-base64-invalid-char.eml",
        "05-qp-double-equals.eml",
        "03-base64-rfc822.eml",
        // Look-alike spaces and digits between the card's digits.
        "06b-html-nbsp.eml",
        "06c-zero-width.eml",
        "06d-html-zwnj-entity.eml",
        "06e-fullwidth.eml",
        // HTML a converter hides but a browser may show.
        "06a-html-entity-nosemi.eml",
        "09a-html-text-in-head.eml",
        "09b-html-style-endtag-attr.eml",
        "09c-html-comment-abrupt.eml",
        "09d-html-comment-bang.eml",
    ] {
        let rule = refused_by(&fixture(file));
        assert!(
            rule == "no card numbers" || rule == "no programs",
            "{file}: {rule}"
        );
    }
}

#[test]
fn ambiguous_structure_is_refused_by_the_mime_limits() {
    for file in [
        "11-four-encoded-levels.eml",
        "13-duplicate-content-type.eml",
    ] {
        assert_eq!(refused_by(&fixture(file)), "MIME limits", "{file}");
    }
}

#[test]
fn a_forwarded_message_in_base64_is_stripped_whole() {
    let out = transformed(
        &fixture("03-base64-rfc822.eml"),
        Actions::attachments(Attachments::Strip),
    );
    assert!(attachments::list(&out).is_empty());
    assert!(String::from_utf8_lossy(&out).contains("was removed"));
}

#[test]
fn file_names_cannot_inject_parts_into_notices() {
    for file in [
        "14a-filename-crlf-rfc2231.eml",
        "14b-filename-crlf-rfc2047.eml",
    ] {
        let msg = fixture(file);
        let stripped = transformed(&msg, Actions::attachments(Attachments::Strip));
        assert!(
            attachments::list(&stripped).is_empty(),
            "{file}: strip left {:?}",
            attachments::list(&stripped)
        );
        let zipped = transformed(
            &msg,
            Actions::attachments(Attachments::Zip { password_to: None }),
        );
        let left: Vec<String> = attachments::list(&zipped)
            .iter()
            .map(|a| a.name.clone())
            .collect();
        assert_eq!(left, [attachments::ZIP_NAME], "{file}");
    }
}

/// What the policy counts as attachments is exactly what strip and zip act on.
#[test]
fn policy_and_transforms_agree_on_attachments_hostile_and_real() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in [
        "hostile",
        "corpus/rfc",
        "corpus/malformed",
        "corpus/thirdparty",
    ] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "eml") {
                files.push(p);
            }
        }
    }
    assert!(files.len() > 60, "fixtures missing");
    let set = policy();
    let env = Envelope {
        client: "local",
        from: "a@example.com",
    };
    let mut compared = 0;
    for p in &files {
        let msg = std::fs::read(p).unwrap();
        if sealgate::message::mime::hazard(&msg).is_some() {
            continue;
        }
        let canon = sealgate::message::mime::canonical_crlf(&msg);
        let seen: Vec<String> = set
            .explain(&env, &["b@example.com".into()], &msg)
            .message
            .attachments
            .iter()
            // Files inside a zip ("a.zip > x.exe") are judged, the zip acted on whole.
            .filter(|a| a.name.as_deref().is_none_or(|n| !n.contains(" > ")))
            .map(|a| a.content_type.clone())
            .collect();
        let acted_on: Vec<String> = attachments::list(&canon)
            .iter()
            .map(|a| a.content_type.clone())
            .collect();
        // Every part strip and zip act on is one the policy saw. The policy also looks
        // inside an attached message that the transforms move as a whole.
        let mut extra = seen.clone();
        for t in &acted_on {
            let i = extra
                .iter()
                .position(|s| s == t)
                .unwrap_or_else(|| panic!("{}: policy did not see {t}", p.display()));
            extra.remove(i);
        }
        assert!(
            extra.is_empty() || acted_on.iter().any(|t| t.starts_with("message/")),
            "{}: policy saw {seen:?}, transforms act on {acted_on:?}",
            p.display()
        );
        compared += 1;
    }
    assert!(compared > 55, "{compared}");
}

/// Parts declared as signatures or PGP control parts, outside the exact structural roles
/// of a well-formed RFC 1847 container (tests/fixtures/hostile/16*.eml).
const DISGUISED_EXE: [&str; 6] = [
    "16a-pkcs7-signature-exe.eml",
    "16b-x-pkcs7-signature-exe.eml",
    "16c-pgp-signature-exe.eml",
    "16d-pgp-encrypted-exe.eml",
    "16f-signed-three-parts.eml",
    "16g-signed-wrong-protocol.eml",
];

/// A policy that picks the action by recipient: strip, zip, refuse `*.exe`, and a card
/// rule that wants encryption and falls back to zip-attachments ([smime] is not
/// configured in the test installation).
const ACTIONS_BY_RECIPIENT: &str = r#"
[[rule]]
name = "strip for strip@"
to = ["strip@example.net"]
actions = ["strip-attachments"]

[[rule]]
name = "zip for zip@"
to = ["zip@example.net"]
actions = ["zip-attachments"]

[[rule]]
name = "no programs"
to = ["names@example.net"]
attachment_name = ["*.exe"]
actions = ["reject"]

[[rule]]
name = "cards leave encrypted"
to = ["cards@example.net"]
body = ["builtin:credit-card"]
actions = ["encrypt"]
if_no_certificate = "zip-attachments"
"#;

/// The base64 text of the disguised program and of the card CSV in the fixtures.
const EXE_B64_START: &str = "TVqQAAMAAAAEAAAA";
const CSV_B64_START: &str = "aWQ7bmFtZTtjYXJk";

#[test]
fn parts_disguised_as_signatures_are_stripped_zipped_and_judged_through_the_binary() {
    use support::{send, CaptureOptions, EnvOptions, TestEnv};
    let mut env = TestEnv::new(EnvOptions::default());
    std::fs::write(
        env.path().join("policies/50-rules.toml"),
        ACTIONS_BY_RECIPIENT,
    )
    .unwrap();
    let up = env.start_capture(CaptureOptions::default());
    env.start_serve();
    let mut expected = 0;
    for file in DISGUISED_EXE {
        let msg = support::crlf(&fixture(file));
        // Refused by the attachment_name rule, naming it.
        let r = send(env.port, "a@example.com", &["names@example.net"], &msg);
        assert!(
            r.starts_with("550") && r.contains("no programs"),
            "{file}: {r}"
        );
        for rcpt in ["strip@example.net", "zip@example.net"] {
            let r = send(env.port, "a@example.com", &[rcpt], &msg);
            assert!(r.starts_with("250"), "{file} to {rcpt}: {r}");
            expected += if rcpt.starts_with("zip") { 2 } else { 1 };
            let got = env.wait_for_messages(&up, expected);
            let m = got
                .iter()
                .rev()
                .find(|m| m.rcpts == [rcpt])
                .unwrap_or_else(|| panic!("{file}: nothing for {rcpt}"));
            let text = m.text();
            assert!(
                !text.contains(EXE_B64_START),
                "{file} to {rcpt}: the program is still in clear:\n{text}"
            );
            let left: Vec<String> = attachments::list(&m.bytes)
                .into_iter()
                .map(|a| a.name)
                .collect();
            if rcpt.starts_with("strip") {
                assert!(text.contains("\"tool.exe\""), "{file}: {text}");
                assert!(text.contains("was removed"), "{file}: {text}");
                assert!(left.is_empty(), "{file}: {left:?}");
            } else {
                assert_eq!(left, [attachments::ZIP_NAME], "{file}: {text}");
            }
        }
    }
    // The card CSV labelled as a PGP signature: the card rule falls back to zip, and the
    // CSV goes into the archive.
    let msg = support::crlf(&fixture("16e-pgp-signature-cards-csv.eml"));
    let r = send(env.port, "a@example.com", &["cards@example.net"], &msg);
    assert!(r.starts_with("250"), "{r}");
    expected += 2;
    let got = env.wait_for_messages(&up, expected);
    let m = got
        .iter()
        .find(|m| m.rcpts == ["cards@example.net"] && m.text().contains("multipart/mixed"))
        .expect("the card message");
    assert!(!m.text().contains(CSV_B64_START), "{}", m.text());
    let left: Vec<String> = attachments::list(&m.bytes)
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(left, [attachments::ZIP_NAME]);
    // A well-formed PGP/MIME signed message keeps its signature part.
    let msg = support::crlf(&fixture("16h-wellformed-pgp-signed.eml"));
    let r = send(env.port, "a@example.com", &["strip@example.net"], &msg);
    assert!(r.starts_with("250"), "{r}");
    expected += 1;
    let got = env.wait_for_messages(&up, expected);
    let last = got
        .iter()
        .rev()
        .find(|m| m.rcpts == ["strip@example.net"])
        .unwrap();
    assert!(
        last.text().contains("-----BEGIN PGP SIGNATURE-----"),
        "{}",
        last.text()
    );
    assert!(!last.text().contains("was removed"), "{}", last.text());
    // A program inside a zip attachment is refused by the attachment_name rule too.
    let zipped = |f: &str| {
        support::crlf(
            &std::fs::read(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures/policy/reader-names-inside-zip")
                    .join(f),
            )
            .unwrap(),
        )
    };
    let r = send(
        env.port,
        "a@example.com",
        &["names@example.net"],
        &zipped("match.eml"),
    );
    assert!(r.starts_with("550") && r.contains("no programs"), "{r}");
    let r = send(
        env.port,
        "a@example.com",
        &["names@example.net"],
        &zipped("nomatch.eml"),
    );
    assert!(r.starts_with("250"), "{r}");
}

#[test]
fn only_the_structural_roles_of_rfc1847_containers_are_exempt() {
    for file in DISGUISED_EXE {
        let names: Vec<String> = attachments::list(&support::crlf(&fixture(file)))
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert!(names.contains(&"tool.exe".to_string()), "{file}: {names:?}");
        assert_eq!(refused_by(&fixture(file)), "no programs", "{file}");
    }
    assert!(
        attachments::list(&support::crlf(&fixture("16h-wellformed-pgp-signed.eml"))).is_empty()
    );
}

/// Part headers that MIME readers split differently (tests/fixtures/hostile/17*.eml):
/// Python's email package shows the declared attachment where mail-parser alone would
/// read a text part without transfer encoding. Refused at DATA by the real binary as a
/// media error naming why, never judged in one reading while the receiver shows another.
#[test]
fn header_blocks_read_differently_are_refused_at_data() {
    use support::{send, EnvOptions, TestEnv};
    let files = [
        "17a-part-header-starts-with-blank-line.eml",
        "17b-part-header-starts-with-continuation.eml",
        "17c-content-type-space-before-colon.eml",
        "17d-part-header-with-non-field-line.eml",
        "17e-whitespace-line-inside-part-header.eml",
    ];
    for file in files {
        assert_eq!(refused_by(&fixture(file)), "MIME limits", "{file}");
    }
    let mut env = TestEnv::new(EnvOptions::default());
    let _up = env.start_capture(support::CaptureOptions::default());
    env.start_serve();
    for file in files {
        let msg = support::crlf(&fixture(file));
        let r = send(env.port, "a@example.com", &["b@example.net"], &msg);
        assert!(
            r.starts_with("550 5.6.0")
                && r.contains("MIME limits")
                && r.contains("mail programs disagree on where its fields end"),
            "{file}: {r}"
        );
    }
}

/// From fields that mail programs (and Python's email package) read as another address
/// than the angle address: refused at DATA for every client, naming why, through the
/// real binary. A plain display name and an IDN written as its U-label pass.
#[test]
fn from_fields_read_two_ways_are_refused_at_data() {
    use support::{send, EnvOptions, TestEnv};
    let mut env = TestEnv::new(EnvOptions::default());
    let up = env.start_capture(support::CaptureOptions::default());
    env.start_serve();
    // A From field with non-ASCII characters is sent as an SMTPUTF8 message (without it
    // an 8-bit address is refused at receipt for that reason alone).
    let send = |port: u16, from: &str, rcpts: &[&str], message: &[u8]| {
        if message.is_ascii() {
            return send(port, from, rcpts, message);
        }
        let mut c = support::Smtp::connect(port);
        assert!(c.cmd("EHLO client.test").starts_with("250"));
        let r = c.cmd(&format!("MAIL FROM:<{from}> SMTPUTF8"));
        assert!(r.starts_with("250"), "MAIL: {r}");
        for rcpt in rcpts {
            let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
            assert!(r.starts_with("250"), "RCPT: {r}");
        }
        c.data(message)
    };
    let msg = |from: &str| {
        support::crlf(
            format!("From: {from}\nTo: b@example.net\nSubject: pay\n\nplease pay\n").as_bytes(),
        )
    };
    for (from, why) in [
        (
            "ceo@example.com <billing@example.com>",
            "looks like an address",
        ),
        (
            "\"ceo@example.com\" <billing@example.com>",
            "looks like an address",
        ),
        ("ceo@example.com: billing@example.com;", "group syntax"),
        // Refused for the no-break space, or (once the 8-bit header is RFC 2047-encoded at
        // receipt) for the display name that reads as an address: either way, refused.
        (
            "ceo@example.com\u{a0}<billing@example.com>",
            "U+00A0|looks like an address",
        ),
        ("Billing\u{2063} <billing@example.com>", "U+2063"),
        ("billing@\u{ff45}xample.com", "not written in one form"),
        ("billing@ex\u{ad}ample.com", "U+00AD"),
        ("billing@example\u{3002}com", "not written in one form"),
        ("billing@\u{1d41e}xample.com", "not written in one form"),
    ] {
        let r = send(
            env.port,
            "billing@example.com",
            &["b@example.net"],
            &msg(from),
        );
        assert!(
            r.starts_with("550 5.6.0")
                && why.split('|').any(|w| r.contains(w))
                && r.contains("header From check"),
            "{from:?}: {r}"
        );
    }
    for from in [
        "Billing <billing@example.com>",
        "billing@example.com",
        "Billing <billing@b\u{fc}cher.example>",
    ] {
        let r = send(
            env.port,
            "billing@example.com",
            &["b@example.net"],
            &msg(from),
        );
        assert!(r.starts_with("250"), "{from:?}: {r}");
    }
    env.wait_for_messages(&up, 3);
}

/// With `header_protection = true`, nothing of the subject appears in clear in any
/// message sealgate writes: a `Subject :` field (white space before the colon, which
/// readers show as the subject) is replaced outside like `Subject:`, and the separate
/// password message of a copy that is zipped and encrypted names neither subject nor
/// Message-ID. Through the real binary (`explain --write` on a `demo` installation).
#[test]
fn header_protection_leaks_no_subject_into_clear_text() {
    use std::process::Command;
    let (_tmp, dir) = support::demo::demo_dir();
    let cfg = dir.join("sealgate.toml");
    let c = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        c.replacen("[smime]\n", "[smime]\nheader_protection = true\n", 1),
    )
    .unwrap();
    std::fs::write(
        dir.join("policies/90-zip.toml"),
        "[[rule]]\nname = \"zip for alice\"\nto = [\"alice@bank.example\"]\nactions = [\"zip-attachments\"]\n",
    )
    .unwrap();
    let secret = "Secret merger plans";
    for (file, subject_field) in [
        ("a.eml", "Subject"),
        ("b.eml", "Subject "),
        ("c.eml", "subject\t"),
    ] {
        std::fs::write(
            dir.join(file),
            format!(
                "From: payroll@example.com\nTo: alice@bank.example\n\
                 Message-ID: <merger-7@example.com>\nMIME-Version: 1.0\n\
                 Content-Type: multipart/mixed; boundary=\"b\"\n{subject_field}: {secret}\n\n\
                 --b\nContent-Type: text/plain\n\n\
                 see attached\n--b\nContent-Type: application/pdf; name=\"plan.pdf\"\n\
                 Content-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n--b--\n"
            ),
        )
        .unwrap();
        let out_dir = format!("out-{file}");
        let out = Command::new(support::SEALGATE)
            .args([
                "explain",
                "-c",
                "sealgate.toml",
                "--from",
                "payroll@example.com",
            ])
            .args([
                "--to",
                "alice@bank.example",
                "--write",
                &out_dir,
                "--",
                file,
            ])
            .current_dir(&dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{file}: {text}");
        let copy = std::fs::read_to_string(dir.join(&out_dir).join("copy-1.eml")).unwrap();
        assert!(
            copy.contains("application/pkcs7-mime"),
            "{file}: not encrypted:\n{copy}"
        );
        assert!(!copy.contains(secret), "{file}: subject in clear:\n{copy}");
        assert!(copy.contains("Subject: ..."), "{file}:\n{copy}");
        let password =
            std::fs::read_to_string(dir.join(&out_dir).join("copy-1-extra-1.eml")).unwrap();
        assert!(password.contains("Password: "), "{file}: {password}");
        assert!(
            !password.contains("Secret") && !password.contains("merger-7"),
            "{file}: the password message names the message:\n{password}"
        );
    }
}
