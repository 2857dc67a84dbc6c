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

/// A TCP listener that records every connection and every byte sent to it (it never
/// answers, as a hostile process squatting on a port would not need to).
struct Recorder {
    got: std::sync::Arc<std::sync::Mutex<(usize, Vec<u8>)>>,
}

impl Recorder {
    fn bind(addr: &str) -> Option<Recorder> {
        let l = std::net::TcpListener::bind(addr).ok()?;
        let got = std::sync::Arc::new(std::sync::Mutex::new((0usize, Vec::new())));
        let g = got.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let g = g.clone();
                std::thread::spawn(move || {
                    use std::io::Read;
                    g.lock().unwrap().0 += 1;
                    let mut s = s;
                    // Greet like an SMTP server, so a client would go on talking.
                    let _ = s.write_all(b"220 squatter ESMTP\r\n");
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        g.lock().unwrap().1.extend_from_slice(&buf[..n]);
                        let _ = s.write_all(b"250 ok\r\n");
                    }
                });
            }
        });
        Some(Recorder { got })
    }
    fn connections(&self) -> usize {
        self.got.lock().unwrap().0
    }
    fn bytes(&self) -> String {
        String::from_utf8_lossy(&self.got.lock().unwrap().1).into_owned()
    }
}

/// Issue 10: run as `nobody` with a root-only (0600) configuration, with a listener on
/// the configured port and (when free) on the old fallback 127.0.0.1:2525, sendmail
/// sends nothing anywhere, names the file and exits 78 (EX_CONFIG); `-c FILE` does not
/// change that (sendmail's `-c` takes no argument).
#[test]
fn sendmail_as_nobody_with_an_unreadable_config_sends_nothing() {
    if !is_root() {
        eprintln!("skipped: needs root to run sendmail as nobody");
        return;
    }
    let env = TestEnv::new(EnvOptions::default());
    use std::os::unix::fs::PermissionsExt;
    // The directories are searchable, so the only obstacle is the file's own mode.
    std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&env.config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let configured = Recorder::bind(&format!("127.0.0.1:{}", env.port)).expect("bind");
    let fallback = Recorder::bind("127.0.0.1:2525");
    let other = env.path().join("other.toml");
    std::fs::copy(&env.config, &other).unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).unwrap();
    let input = b"From: app@example.com\nTo: user@example.net\nSubject: secret\n\nbody\n";
    for args in [
        vec!["-i", "-f", "app@example.com", "user@example.net"],
        vec!["-c", other.to_str().unwrap(), "-i", "user@example.net"],
        vec!["-t", "-i"],
    ] {
        let r = sendmail_run(
            &args,
            &env.config,
            &[
                ("SEALGATE_USER", "billing"),
                ("SEALGATE_PASSWORD", "s3cret"),
            ],
            input,
            true,
        );
        assert_eq!(r.code, Some(78), "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(&env.config.display().to_string())
                && r.stderr.contains("cannot read")
                && r.stderr.contains("nothing was sent"),
            "{args:?}: {}",
            r.stderr
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(configured.connections(), 0, "{}", configured.bytes());
    if let Some(f) = fallback {
        assert_eq!(f.connections(), 0, "fallback port got: {}", f.bytes());
    }
    // A missing and an invalid configuration are the same error, naming the file.
    let missing = env.path().join("missing.toml");
    let r = sendmail_run(&["-i", "u@example.net"], &missing, &[], input, false);
    assert_eq!(r.code, Some(78), "{}", r.stderr);
    assert!(r.stderr.contains("missing.toml"), "{}", r.stderr);
    let bad = env.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten = 5\n").unwrap();
    let r = sendmail_run(&["-i", "u@example.net"], &bad, &[], input, false);
    assert_eq!(r.code, Some(78), "{}", r.stderr);
    assert!(r.stderr.contains("bad.toml:"), "{}", r.stderr);
    assert_eq!(configured.connections(), 0);
}

/// Issue 10: a CR or LF in `-f` or a recipient argument (PHP's mail() passes user input
/// to `-f`) is refused before anything is sent: the crafted `-f` that used to deliver a
/// second, complete message delivers nothing; the same message with a clean `-f` is
/// delivered, so the path works.
#[test]
fn a_crafted_sender_or_recipient_argument_sends_nothing() {
    let mut env = TestEnv::new(EnvOptions::default());
    let up = env.start_good_capture();
    env.start_serve();
    let input = b"From: app@example.com\nTo: user@example.net\nSubject: hello\n\nbody\n";
    let injected = "a@b.example>\r\nRCPT TO:<x@y.example>\r\nDATA\r\nFrom: ceo@example.com\r\nSubject: forged\r\n\r\nforged\r\n.\r\nMAIL FROM:<a@b.example";
    for args in [
        vec!["-i", "-f", injected, "user@example.net"],
        vec!["-i", &format!("-f{injected}"), "user@example.net"],
        vec![
            "-i",
            "-f",
            "a@b.example\nRCPT TO:<x@y.example>",
            "user@example.net",
        ],
        vec![
            "-i",
            "-f",
            "app@example.com",
            "user@example.net\r\nRCPT TO:<x@y.example>",
        ],
        vec!["-i", "-f", "app@example.com", "user@example.net\tx"],
        vec!["-i", "-r", "a@b.example> SIZE=1", "user@example.net"],
    ] {
        let r = sendmail_run(&args, &env.config, &[], input, false);
        assert_eq!(r.code, Some(64), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("refused"), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty());
    }
    let r = sendmail_run(
        &["-i", "-f", "app@example.com", "user@example.net"],
        &env.config,
        &[],
        input,
        false,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let got = env.wait_for_messages(&up, 1);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let got_all = received(&up.dir);
    assert_eq!(got_all.len(), 1, "only the clean message: {got_all:?}");
    assert_eq!(got[0].from, "app@example.com");
    assert_eq!(got[0].rcpts, vec!["user@example.net"]);
    assert!(!got[0].text().contains("forged"));
    let received_events = env
        .audit_events()
        .into_iter()
        .filter(|e| e["event"] == "received")
        .count();
    assert_eq!(received_events, 1);
}

/// Issue 8: `-t` takes the recipients of every To, Cc and Bcc field, a field folded
/// without commas gives each of its addresses, recipient arguments are added (as
/// Postfix does), and no Bcc travels.
#[test]
fn t_takes_every_to_cc_and_bcc_field() {
    let mut env = TestEnv::new(EnvOptions::default());
    let up = env.start_good_capture();
    env.start_serve();
    let input = b"From: App <app@example.com>\nTo: first@example.net\nTo: second@example.net\n\
Cc: Carl <c1@example.net>\n Dora <c2@example.net>\nBcc: hidden1@example.org\n\
Subject: every field\nBcc: hidden2@example.org,\n hidden3@example.org\n\nbody\n";
    let r = sendmail_run(
        &["-ti", "-f", "app@example.com", "arg@example.net"],
        &env.config,
        &[],
        input,
        false,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let got = env.wait_for_messages(&up, 1);
    let mut rcpts: Vec<String> = got.iter().flat_map(|m| m.rcpts.clone()).collect();
    rcpts.sort();
    assert_eq!(
        rcpts,
        vec![
            "arg@example.net",
            "c1@example.net",
            "c2@example.net",
            "first@example.net",
            "hidden1@example.org",
            "hidden2@example.org",
            "hidden3@example.org",
            "second@example.net"
        ]
    );
    for m in &got {
        assert!(!m.text().contains("hidden"), "{}", m.text());
    }
}

/// Issue 8: a recipient the server refuses makes sendmail fail, never exit 0: policy
/// refusals exit 67 (EX_NOUSER), more than `max_recipients` exit 69; in both cases
/// nothing is sent, not even to the recipients that were accepted (a caller that
/// retries never causes a duplicate).
#[test]
fn a_refused_recipient_fails_sendmail_and_sends_nothing() {
    let mut env = TestEnv::new(EnvOptions {
        server_extra: "max_recipients = 3".into(),
        ..EnvOptions::default()
    });
    std::fs::write(
        env.path().join("policies/00-recipients.toml"),
        "[recipients]\nallow = [\"*\"]\ndeny = [\"ceo@example.com\"]\n",
    )
    .unwrap();
    let up = env.start_good_capture();
    env.start_serve();
    let input = b"From: app@example.com\nSubject: s\n\nbody\n";
    let r = sendmail_run(
        &[
            "-i",
            "-f",
            "app@example.com",
            "ok@example.net",
            "ceo@example.com",
        ],
        &env.config,
        &[],
        input,
        false,
    );
    assert_eq!(r.code, Some(67), "{}", r.stderr);
    assert!(
        r.stderr.contains("<ceo@example.com>: 550")
            && r.stderr.contains("nothing was sent to anyone"),
        "{}",
        r.stderr
    );
    let r = sendmail_run(
        &[
            "-i",
            "a@example.net",
            "b@example.net",
            "c@example.net",
            "d@example.net",
        ],
        &env.config,
        &[],
        input,
        false,
    );
    assert_eq!(r.code, Some(69), "{}", r.stderr);
    assert!(r.stderr.contains("<d@example.net>: 452"), "{}", r.stderr);
    // The same path works for an accepted message: the upstream gets it and only it.
    let r = sendmail_run(&["-i", "ok@example.net"], &env.config, &[], input, false);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    env.wait_for_messages(&up, 1);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let all = received(&up.dir);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].rcpts, vec!["ok@example.net"]);
}

/// Issue 8: without `-f`, `[sendmail] sender_from_header` uses the header From address
/// (when the AUTH client's allowed_senders permit it), else `[sendmail] sender`.
#[test]
fn sendmail_sender_from_config_and_header() {
    let mut env = TestEnv::new(EnvOptions::default());
    let mut cfg = std::fs::read_to_string(&env.config).unwrap();
    cfg.push_str("\n[sendmail]\nsender = \"bounces@example.com\"\nsender_from_header = true\n");
    std::fs::write(&env.config, cfg).unwrap();
    let up = env.start_good_capture();
    env.start_serve();
    // One From address: it becomes the envelope sender.
    let r = sendmail_run(
        &["-t", "-i"],
        &env.config,
        &[],
        b"From: Billing <billing@example.com>\nTo: u@example.net\nSubject: one\n\nb\n",
        false,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // Two From addresses: not one address to use; the configured sender.
    let r = sendmail_run(
        &["-t", "-i"],
        &env.config,
        &[],
        b"From: a@example.com, b@example.com\nSender: a@example.com\nTo: u@example.net\nSubject: two\n\nb\n",
        false,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let got = env.wait_for_messages(&up, 2);
    let by_subject = |s: &str| {
        got.iter()
            .find(|m| m.header("Subject").as_deref() == Some(s))
            .unwrap_or_else(|| panic!("no message {s}"))
            .from
            .clone()
    };
    assert_eq!(by_subject("one"), "billing@example.com");
    assert_eq!(by_subject("two"), "bounces@example.com");
}

/// `sealgate hash-password` for a `[[client]]`.
fn hash_password(pw: &str) -> String {
    let mut c = Command::new(SEALGATE)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(format!("{pw}\n").as_bytes())
        .unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Issue 8: `sender_from_header` uses the header From only when the client sendmail
/// AUTHs as may use it (`allowed_senders`); otherwise `[sendmail] sender`, which the
/// server then holds to the same `allowed_senders` (refused: exit 69, nothing sent).
#[test]
fn sender_from_header_respects_the_auth_clients_allowed_senders() {
    let mut env = TestEnv::new(EnvOptions::default());
    let mut cfg = std::fs::read_to_string(&env.config).unwrap();
    cfg = cfg.replace(
        "[spool]",
        &format!(
            "[[client]]\nname = \"billing\"\nusername = \"billing\"\npassword_hash = \"{}\"\n\
             allowed_senders = [\"billing@example.com\"]\n\n[spool]",
            hash_password("s3cret pass")
        ),
    );
    cfg.push_str("\n[sendmail]\nsender = \"bounces@example.com\"\nsender_from_header = true\n");
    std::fs::write(&env.config, cfg).unwrap();
    let up = env.start_good_capture();
    env.start_serve();
    let auth = [
        ("SEALGATE_USER", "billing"),
        ("SEALGATE_PASSWORD", "s3cret pass"),
    ];
    let r = sendmail_run(
        &["-t", "-i"],
        &env.config,
        &auth,
        b"From: Billing <billing@example.com>\nTo: u@example.net\nSubject: allowed\n\nb\n",
        false,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let got = env.wait_for_messages(&up, 1);
    assert_eq!(got[0].from, "billing@example.com");
    let r = sendmail_run(
        &["-t", "-i"],
        &env.config,
        &auth,
        b"From: Other <other@example.com>\nTo: u@example.net\nSubject: not allowed\n\nb\n",
        false,
    );
    assert_eq!(r.code, Some(69), "{}", r.stderr);
    assert!(r.stderr.contains("bounces@example.com"), "{}", r.stderr);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(received(&up.dir).len(), 1);
}
