//! The sendmail-compatible entry point: an app that pipes a message into
//! `sendmail -t -i` (or `sealgate sendmail`) gets it relayed like any SMTP submission.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use support::*;

/// Runs `program args` with `input` on stdin and SEALGATE_CONFIG set; returns stderr.
fn pipe(program: &Path, args: &[&str], config: &Path, input: &[u8]) -> String {
    let mut child = Command::new(program)
        .args(args)
        .env("SEALGATE_CONFIG", config)
        .env("USER", "appuser")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sendmail");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}): {stderr}",
        program.display(),
        out.status
    );
    stderr
}

fn assert_crlf_only(bytes: &[u8], what: &str) {
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            assert!(
                i > 0 && bytes[i - 1] == b'\r',
                "{what}: bare LF at byte {i}"
            );
        }
    }
}

#[test]
fn sendmail_entry_point_submits() {
    let mut env = TestEnv::new(EnvOptions::default());
    let up = env.start_good_capture();
    env.start_serve();

    // `sealgate sendmail -t -i`: recipients from To/Cc/Bcc, Bcc removed, a lone dot kept.
    let input =
        b"From: App <app@example.com>\nTo: Alice <alice@example.net>\nCc: bob@example.net\n\
Bcc: carol-hidden@example.org\nSubject: sendmail -t\nMessage-ID: <sendmail-t@test>\n\n\
line one\n.\nafter a lone dot (kept with -i)\n";
    pipe(
        Path::new(SEALGATE),
        &["sendmail", "-t", "-i"],
        &env.config,
        input,
    );
    let got = env.wait_for_messages(&up, 1);
    let m = &got[0];
    assert_eq!(m.from, "appuser@gw.test", "default sender is USER@hostname");
    let mut rcpts = m.rcpts.clone();
    rcpts.sort();
    assert_eq!(
        rcpts,
        vec![
            "alice@example.net",
            "bob@example.net",
            "carol-hidden@example.org"
        ]
    );
    assert_crlf_only(&m.bytes, "sendmail -t -i");
    let text = m.text();
    assert!(
        !text.contains("Bcc:") && !text.contains("carol-hidden"),
        "Bcc must not travel: {text}"
    );
    assert!(
        text.contains(
            "\r\nTo: Alice <alice@example.net>\r\nCc: bob@example.net\r\nSubject: sendmail -t\r\n"
        ),
        "{text}"
    );
    assert!(
        text.ends_with("\r\n\r\nline one\r\n.\r\nafter a lone dot (kept with -i)\r\n"),
        "{text}"
    );
    env.wait_for_event("relayed", |e| e["message_id"] == "<sendmail-t@test>");
}

#[test]
fn sendmail_symlink_submits() {
    let mut env = TestEnv::new(EnvOptions::default());
    let up = env.start_good_capture();
    env.start_serve();
    let link = env.path().join("bin").join("sendmail");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(SEALGATE, &link).unwrap();

    // Invoked as `sendmail -f ADDR RCPT`, without -i: a line with a single dot ends the message.
    let input = b"From: App <app@example.com>\nTo: dave@example.net\nSubject: via symlink\n\nbody line\n.\nnot part of the message\n";
    pipe(
        &link,
        &["-f", "app@example.com", "dave@example.net"],
        &env.config,
        input,
    );
    let got = env.wait_for_messages(&up, 1);
    let m = &got[0];
    assert_eq!(m.from, "app@example.com");
    assert_eq!(m.rcpts, vec!["dave@example.net"]);
    assert_crlf_only(&m.bytes, "sendmail symlink");
    let text = m.text();
    assert!(
        text.ends_with("\r\nSubject: via symlink\r\n\r\nbody line\r\n"),
        "{text}"
    );
    assert!(!text.contains("not part of the message"), "{text}");
    assert!(
        m.header("Message-ID")
            .is_some_and(|id| id.ends_with("@gw.test>")),
        "a Message-ID is added: {text}"
    );
}

/// A message bigger than `max_message_size` is refused by sendmail itself, with a clear
/// error and exit 69 (EX_UNAVAILABLE, as for a 552 from the listener), after reading
/// no more than twice the limit: 200 MiB piped in are not held in memory first.
#[test]
fn sendmail_refuses_an_oversized_message_without_reading_it_all() {
    let env = TestEnv::new(EnvOptions {
        max_message_size: "64KiB".into(),
        ..EnvOptions::default()
    });
    let mut child = Command::new(SEALGATE)
        .args(["sendmail", "-i", "user@example.net"])
        .env("SEALGATE_CONFIG", &env.config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sendmail");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = b"Subject: big\n\n".iter().chain(&[b'x'; 1 << 20]).copied();
        let chunk: Vec<u8> = chunk.collect();
        let mut written = 0usize;
        for _ in 0..200 {
            if stdin.write_all(&chunk).is_err() {
                break;
            }
            written += chunk.len();
        }
        written
    });
    let out = child.wait_with_output().unwrap();
    let written = writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains("larger than the limit of 65536 bytes (max_message_size)"),
        "{stderr}"
    );
    assert!(
        written < 100 << 20,
        "sendmail read {written} bytes before refusing"
    );
}
