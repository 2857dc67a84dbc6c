//! The relay over real sockets: sealgate as a child process, real TLS SMTP upstreams
//! (the third-party aiosmtpd server, and sealgate's own fault-injecting `capture`),
//! real clients (swaks, Python smtplib, a Rust socket).
//!
//! What a user must be able to rely on: mail goes out only over verified TLS; a bad
//! upstream (no STARTTLS, wrong host name, untrusted CA, 4xx) keeps the message queued
//! until a proper one is back; a 5xx comes back to the sender as a DSN; the upstream
//! password never shows up anywhere; real-world messages pass unchanged or are refused.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

/// The body a relay test sends; swaks and smtplib pass it through unchanged.
fn sample(subject: &str) -> Vec<u8> {
    message(
        subject,
        "Hello from the integration test.\nUnicode is not needed; 7-bit text with a long line: \
         0123456789012345678901234567890123456789012345678901234567890123456789\n\n-- \nsig",
    )
}

/// Sends the message in `file` as Python's smtplib does (raw DATA, sender
/// app@example.com); returns the final reply.
fn smtplib_send(port: u16, rcpts: &[&str], file: &std::path::Path) -> String {
    let script = r#"
import smtplib, sys
port, path, rcpts = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
with smtplib.SMTP("127.0.0.1", port, local_hostname="app.test") as s:
    s.ehlo()
    s.mail("app@example.com")
    for r in rcpts:
        s.rcpt(r)
    code, text = s.data(open(path, "rb").read())
    print(code, text.decode())
"#;
    let out = Command::new("python3")
        .args(["-c", script, &port.to_string()])
        .arg(file)
        .args(rcpts)
        .output()
        .expect("python3");
    let reply = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "smtplib failed: {reply}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    reply
}

fn assert_relayed_record(env: &TestEnv, queue_id: &str) -> serde_json::Value {
    let ev = env.wait_for_event("relayed", |e| {
        e["queue_id"]
            .as_str()
            .is_some_and(|q| q.starts_with(queue_id))
    });
    let tls = ev["tls_version"].as_str().unwrap_or("");
    assert!(
        tls.starts_with("TLSv1_2") || tls.starts_with("TLSv1_3"),
        "relayed record without a TLS version: {ev}"
    );
    assert!(
        !ev["cipher"].as_str().unwrap_or("").is_empty(),
        "relayed record without a cipher: {ev}"
    );
    ev
}

#[test]
fn relays_over_starttls_to_a_real_tls_server() {
    let mut env = TestEnv::new(EnvOptions::default());
    let sink = env.start_sink(SinkOptions::default());
    env.start_serve();

    let msg = sample("starttls via swaks");
    let file = env.path().join("swaks.eml");
    // swaks ends the data with CRLF "." CRLF itself, so the file leaves off the last CRLF.
    std::fs::write(&file, msg.strip_suffix(b"\r\n").unwrap()).unwrap();
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", env.port)])
        .args([
            "--from",
            "app@example.com",
            "--to",
            "user@example.net",
            "--helo",
            "app.test",
        ])
        .arg("--data")
        .arg(&file)
        .output()
        .expect("swaks is installed");
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "swaks failed:\n{transcript}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = transcript
        .lines()
        .find(|l| l.contains("queued as"))
        .unwrap_or_else(|| panic!("no 'queued as' in the swaks transcript:\n{transcript}"));
    let id = line.rsplit(' ').next().unwrap().to_string();

    let got = env.wait_for_messages(&sink, 1);
    assert_eq!(got.len(), 1, "exactly one message arrives");
    assert_eq!(got[0].from, "app@example.com");
    assert_eq!(got[0].rcpts, vec!["user@example.net"]);
    assert_relayed_unchanged(&msg, &got[0].bytes, "swaks over STARTTLS");
    let ev = assert_relayed_record(&env, &id);
    assert_eq!(ev["rcpts"], serde_json::json!(["user@example.net"]));
    assert_eq!(ev["message_id"], "<starttls-via-swaks@test.sealgate>");
}

#[test]
fn relays_over_implicit_tls_to_a_real_tls_server() {
    let mut env = TestEnv::new(EnvOptions {
        tls: Tls::Implicit,
        ..EnvOptions::default()
    });
    let sink = env.start_sink(SinkOptions {
        implicit: true,
        ..SinkOptions::default()
    });
    env.start_serve();

    let msg = sample("implicit via smtplib");
    let file = env.path().join("smtplib.eml");
    std::fs::write(&file, &msg).unwrap();
    let id = queue_id(&smtplib_send(env.port, &["user@example.net"], &file));

    let got = env.wait_for_messages(&sink, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpts, vec!["user@example.net"]);
    assert_relayed_unchanged(&msg, &got[0].bytes, "smtplib over implicit TLS");
    assert_relayed_record(&env, &id);
}

/// An application that writes its blind copies into a `Bcc:` field and sends by SMTP:
/// the field never reaches the upstream (as Postfix's cleanup removes it), the blind
/// recipient still gets the message, and the rest arrives unchanged.
#[test]
fn a_bcc_field_never_reaches_the_upstream() {
    let mut env = TestEnv::new(EnvOptions::default());
    let sink = env.start_sink(SinkOptions::default());
    env.start_serve();
    let msg = sample("with a Bcc field");
    let mut with_bcc =
        b"Bcc: Hidden Auditor <auditor@example.net>,\r\n archive@example.net\r\n".to_vec();
    with_bcc.extend_from_slice(&msg);
    let file = env.path().join("bcc.eml");
    std::fs::write(&file, &with_bcc).unwrap();
    queue_id(&smtplib_send(
        env.port,
        &["user@example.net", "auditor@example.net"],
        &file,
    ));
    let got = env.wait_for_messages(&sink, 1);
    assert_eq!(
        got[0].rcpts,
        vec!["user@example.net", "auditor@example.net"]
    );
    let text = String::from_utf8_lossy(&got[0].bytes);
    assert!(
        !text.contains("Bcc:") && !text.contains("Hidden Auditor") && !text.contains("archive@"),
        "the Bcc field travelled:\n{text}"
    );
    assert_relayed_unchanged(&msg, &got[0].bytes, "without its Bcc field");
}

/// A bad upstream: the message is accepted, nothing leaves, `queue list` says why; when
/// a proper upstream takes the port, the queued message goes out.
fn deferred_until_a_proper_upstream(bad: CaptureOptions, reason_words: &[&str]) {
    let mut env = TestEnv::new(EnvOptions::default());
    let mut bad_up = env.start_capture(bad);
    env.start_serve();

    let msg = sample("held back");
    let id = queue_id(&send(
        env.port,
        "app@example.com",
        &["user@example.net"],
        &msg,
    ));
    let ev = env.wait_for_event("deferred", |e| {
        e["queue_id"].as_str().is_some_and(|q| q.starts_with(&id))
    });
    let reason = ev["reason"].as_str().unwrap_or("").to_string();
    for w in reason_words {
        assert!(
            reason.to_lowercase().contains(&w.to_lowercase()),
            "deferral reason {reason:?} lacks {w:?}"
        );
    }
    assert!(
        received(&bad_up.dir).is_empty(),
        "a message reached the bad upstream"
    );
    assert!(
        !bad_up.dir.join("PLAINTEXT-LEAK").exists(),
        "MAIL was sent in plaintext"
    );
    let list = env.queue_list();
    let row = list
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not in queue list:\n{list}"));
    assert!(
        row.contains("deferred: "),
        "queue list row does not say deferred: {row}"
    );
    for w in reason_words {
        assert!(
            row.to_lowercase().contains(&w.to_lowercase()),
            "queue list row lacks {w:?}: {row}"
        );
    }

    bad_up.proc.kill();
    assert!(
        !bad_up.dir.join("PLAINTEXT-LEAK").exists(),
        "MAIL was sent in plaintext"
    );
    let good = env.start_good_capture();
    let got = env.wait_for_messages(&good, 1);
    assert_relayed_unchanged(&msg, &got[0].bytes, "after the upstream was fixed");
    assert_relayed_record(&env, &id);
    env.wait_for_empty_queue();
    assert!(received(&bad_up.dir).is_empty());
}

#[test]
fn refuses_upstream_without_starttls() {
    deferred_until_a_proper_upstream(
        CaptureOptions {
            no_starttls: true,
            ..CaptureOptions::default()
        },
        &["does not offer STARTTLS", "nothing was sent"],
    );
}

#[test]
fn refuses_upstream_certificate_for_another_host() {
    deferred_until_a_proper_upstream(
        CaptureOptions {
            cert: UpstreamCert::OtherHost,
            ..CaptureOptions::default()
        },
        &["TLS with upstream localhost failed", "not valid for name"],
    );
}

#[test]
fn refuses_upstream_from_untrusted_ca() {
    deferred_until_a_proper_upstream(
        CaptureOptions {
            cert: UpstreamCert::Untrusted,
            ..CaptureOptions::default()
        },
        &["TLS with upstream localhost failed", "UnknownIssuer"],
    );
}

#[test]
fn refuses_implicit_tls_upstream_from_untrusted_ca() {
    let mut env = TestEnv::new(EnvOptions {
        tls: Tls::Implicit,
        ..EnvOptions::default()
    });
    let mut bad = env.start_capture(CaptureOptions {
        cert: UpstreamCert::Untrusted,
        implicit: true,
        ..CaptureOptions::default()
    });
    env.start_serve();
    let id = queue_id(&send(
        env.port,
        "app@example.com",
        &["user@example.net"],
        &sample("implicit rogue"),
    ));
    let ev = env.wait_for_event("deferred", |e| {
        e["queue_id"].as_str().is_some_and(|q| q.starts_with(&id))
    });
    assert!(
        ev["reason"]
            .as_str()
            .unwrap_or("")
            .contains("UnknownIssuer"),
        "{ev}"
    );
    assert!(received(&bad.dir).is_empty());
    bad.proc.kill();
    let good = env.start_good_capture();
    env.wait_for_messages(&good, 1);
    assert_relayed_record(&env, &id);
}

#[test]
fn retries_after_4xx() {
    let mut env = TestEnv::new(EnvOptions::default());
    let mut busy = env.start_capture(CaptureOptions {
        rcpt_reply: Some("451 4.3.0 try later".into()),
        ..CaptureOptions::default()
    });
    env.start_serve();
    let msg = sample("try again");
    let id = queue_id(&send(
        env.port,
        "app@example.com",
        &["user@example.net"],
        &msg,
    ));
    let is_ours =
        |e: &serde_json::Value| e["queue_id"].as_str().is_some_and(|q| q.starts_with(&id));
    // At least two attempts against the 4xx upstream (retry_base 1s), each deferred.
    env.wait_for_event("deferred", |e| {
        is_ours(e) && e["attempts"].as_u64() >= Some(2)
    });
    let ev = env.wait_for_event("deferred", is_ours);
    assert!(
        ev["reason"]
            .as_str()
            .unwrap_or("")
            .contains("451 4.3.0 try later"),
        "{ev}"
    );
    assert!(
        env.audit_events().iter().all(|e| e["event"] != "bounced"),
        "a 4xx must not bounce"
    );
    let list = env.queue_list();
    assert!(
        list.lines()
            .any(|l| l.starts_with(&id) && l.contains("451 4.3.0")),
        "{list}"
    );

    busy.proc.kill();
    let good = env.start_good_capture();
    let got = env.wait_for_messages(&good, 1);
    assert_relayed_unchanged(&msg, &got[0].bytes, "after 4xx");
    let relayed = assert_relayed_record(&env, &id);
    assert!(relayed["attempts"].as_u64() >= Some(3), "{relayed}");
    assert!(received(&busy.dir).is_empty());
}

#[test]
fn bounces_5xx_with_a_dsn() {
    let mut env = TestEnv::new(EnvOptions::default());
    // aiosmtpd refuses one recipient with 550 5.1.1 and accepts everyone else, so the DSN
    // can go out through the same upstream.
    let sink = env.start_sink(SinkOptions {
        reject_rcpt: Some("nosuch@*".into()),
        ..SinkOptions::default()
    });
    env.start_serve();

    let secret = "BODY-MARKER-that-must-not-come-back";
    let msg = message("quarterly report", &format!("{secret}\nsecond line"));
    let id = queue_id(&send(
        env.port,
        "app@example.com",
        &["ok@example.net", "nosuch@example.net"],
        &msg,
    ));
    let bounced = env.wait_for_event("bounced", |e| {
        e["queue_id"].as_str().is_some_and(|q| q.starts_with(&id))
    });
    assert_eq!(
        bounced["rcpts"],
        serde_json::json!(["nosuch@example.net"]),
        "{bounced}"
    );
    assert!(bounced["dsn"].is_string(), "{bounced}");

    let got = env.wait_for_messages(&sink, 2);
    assert_eq!(got.len(), 2, "the message to ok@ and one DSN");
    let original = got
        .iter()
        .find(|m| m.from == "app@example.com")
        .expect("the original to ok@");
    assert_eq!(original.rcpts, vec!["ok@example.net"]);
    assert_relayed_unchanged(&msg, &original.bytes, "partly refused message");
    let dsn = got.iter().find(|m| m.from.is_empty()).unwrap_or_else(|| {
        panic!(
            "no DSN with the null sender among {:?}",
            got.iter().map(|m| &m.envelope).collect::<Vec<_>>()
        )
    });
    assert_eq!(dsn.rcpts, vec!["app@example.com"]);
    let text = dsn.text();
    let ctype = dsn.header("Content-Type").unwrap_or_default();
    assert!(
        ctype.contains("multipart/report") && ctype.contains("report-type=delivery-status"),
        "{ctype}"
    );
    assert!(text.contains("Status: 5.1.1"), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; nosuch@example.net"),
        "{text}"
    );
    assert!(
        !text.contains("Final-Recipient: rfc822; ok@example.net"),
        "{text}"
    );
    assert!(text.contains("Action: failed"), "{text}");
    assert!(text.contains("Content-Type: text/rfc822-headers"), "{text}");
    assert!(
        text.contains("Subject: quarterly report"),
        "original headers are returned: {text}"
    );
    assert!(
        text.contains("Message-ID: <quarterly-report@test.sealgate>"),
        "{text}"
    );
    assert!(
        !text.contains(secret),
        "the original body must not come back: {text}"
    );
    let parsed = mail_parser::MessageParser::default()
        .parse(&dsn.bytes)
        .expect("DSN parses");
    assert_eq!(
        parsed.subject(),
        Some("Undelivered Mail Returned to Sender")
    );

    // A null-sender message that fails for good is dropped without a DSN.
    let null_id = queue_id(&send(
        env.port,
        "",
        &["nosuch@example.net"],
        &message("null sender", "x"),
    ));
    let ev = env.wait_for_event("bounced", |e| {
        e["queue_id"]
            .as_str()
            .is_some_and(|q| q.starts_with(&null_id))
    });
    assert!(ev["dsn"].is_null(), "{ev}");
    env.wait_for_empty_queue();
    assert_eq!(
        received(&sink.dir).len(),
        2,
        "no DSN for a null-sender message"
    );
}

/// The upstream password, and the forms AUTH PLAIN and LOGIN put on the wire, appear in
/// no log, no audit record, no spool file.
#[test]
fn upstream_password_never_logged() {
    use base64::Engine;
    let user = "relay@example.com";
    let password = "Tr0ub4dor-&-3-correct-horse-17";
    let mut env = TestEnv::new(EnvOptions {
        upstream_auth: Some((user.into(), password.into())),
        ..EnvOptions::default()
    });
    env.serve_env.push(("SEALGATE_LOG".into(), "trace".into()));
    let mut plain = env.start_sink(SinkOptions {
        auth: Some((user.into(), password.into())),
        auth_mech: Some("PLAIN".into()),
        ..SinkOptions::default()
    });
    env.start_serve();
    let first = queue_id(&send(
        env.port,
        "app@example.com",
        &["user@example.net"],
        &sample("auth plain"),
    ));
    let got = env.wait_for_messages(&plain, 1);
    assert_eq!(got[0].envelope["auth"], user, "delivered after AUTH PLAIN");
    assert_relayed_record(&env, &first);

    // Queue one message while no upstream runs, so it rests in the spool for a while.
    plain.proc.kill();
    let second = queue_id(&send(
        env.port,
        "app@example.com",
        &["user@example.net"],
        &sample("auth login"),
    ));
    env.wait_for_event("deferred", |e| {
        e["queue_id"]
            .as_str()
            .is_some_and(|q| q.starts_with(&second))
    });
    let spool_while_queued = read_tree(&env.spool);
    let login = env.start_sink(SinkOptions {
        auth: Some((user.into(), password.into())),
        auth_mech: Some("LOGIN".into()),
        ..SinkOptions::default()
    });
    let got = env.wait_for_messages(&login, 1);
    assert_eq!(got[0].envelope["auth"], user, "delivered after AUTH LOGIN");
    assert_relayed_record(&env, &second);
    let list = env.queue_list();
    env.kill_serve();

    let b64 = base64::engine::general_purpose::STANDARD;
    let forbidden = [
        password.to_string(),
        b64.encode(password),
        b64.encode(format!("\0{user}\0{password}")),
        b64.encode(format!("{user}\0{user}\0{password}")),
        "Tr0ub4dor".to_string(),
    ];
    let log = std::fs::read_to_string(env.path().join("serve-1.log")).unwrap();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "SEALGATE_LOG=trace took no effect"
    );
    let mut places = vec![
        ("serve log".to_string(), log.into_bytes()),
        ("audit log".to_string(), std::fs::read(&env.audit).unwrap()),
        ("queue list".to_string(), list.into_bytes()),
    ];
    places.extend(spool_while_queued);
    places.extend(read_tree(&env.spool));
    for (place, bytes) in &places {
        let text = String::from_utf8_lossy(bytes);
        for f in &forbidden {
            assert!(
                !text.contains(f.as_str()),
                "{place} contains the password (as {f:?})"
            );
        }
    }
}

/// Every file under `dir`, with its path.
fn read_tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(read_tree(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p.display().to_string(), b));
        }
    }
    out
}

/// Real-world messages (RFC examples, Dovecot's test corpus) relayed with an allow-all
/// policy and no rules: each arrives byte-identical after the trace headers sealgate
/// adds, or is refused with a 5xx. Never a 4xx, a hang or a crash.
#[test]
fn corpus_messages_relay_unchanged_or_are_refused() {
    let mut env = TestEnv::new(EnvOptions::default());
    let up = env.start_good_capture();
    env.start_serve();
    let corpus = Path::new(FIXTURES).join("corpus");
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for folder in ["rfc", "malformed", "thirdparty"] {
        let mut files: Vec<_> = std::fs::read_dir(corpus.join(folder))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no corpus messages in {folder}");
        for f in files {
            let name = format!("{folder}/{}", f.file_name().unwrap().to_string_lossy());
            let rcpt = format!(
                "{}-{}@example.net",
                folder,
                f.file_stem().unwrap().to_string_lossy()
            );
            let mut sent = crlf(&std::fs::read(&f).unwrap());
            let reply = send(env.port, "app@example.com", &[&rcpt], &sent);
            if !sent.ends_with(b"\r\n") {
                // The client ends the last line before the terminating dot.
                sent.extend_from_slice(b"\r\n");
            }
            assert!(
                env.serve_running(),
                "sealgate died on {name}\n{}",
                env.diagnostics()
            );
            match reply.as_bytes()[0] {
                b'2' => accepted.push((name, rcpt, sent)),
                b'5' => refused.push((name, reply)),
                _ => panic!(
                    "{name}: neither accepted nor refused for good: {reply}\n{}",
                    env.diagnostics()
                ),
            }
        }
    }
    eprintln!(
        "corpus: {} accepted, {} refused: {refused:?}",
        accepted.len(),
        refused.len()
    );
    assert!(
        accepted.len() >= 40,
        "most of the corpus should pass: refused {refused:?}"
    );
    for (_, reply) in &refused {
        assert!(
            reply.contains(" 5."),
            "a refusal without an enhanced code: {reply}"
        );
    }
    let got = env.wait_for_messages(&up, accepted.len());
    assert_eq!(
        got.len(),
        accepted.len(),
        "one arrival per accepted message"
    );
    let seven_bit = |m: &[u8]| m.is_ascii() && m.split(|&b| b == b'\n').all(|l| l.len() <= 999);
    for (name, rcpt, sent) in &accepted {
        let m = got
            .iter()
            .find(|m| m.rcpts == [rcpt.clone()])
            .unwrap_or_else(|| panic!("{name} did not arrive"));
        if seven_bit(sent) {
            assert_relayed_unchanged(sent, &m.bytes, name);
        } else {
            // 8-bit data and long lines are re-encoded at receipt (seven_bit.rs): what
            // arrives is 7-bit with short lines, and every part decodes to the same.
            assert!(
                seven_bit(&m.bytes),
                "{name}: 8-bit data or a long line relayed"
            );
            assert_eq!(decoded_parts(&m.bytes), decoded_parts(sent), "{name}");
        }
    }
}

/// The decoded content of every leaf part, as mail-parser reads it.
fn decoded_parts(message: &[u8]) -> Vec<Vec<u8>> {
    let parsed = mail_parser::MessageParser::default()
        .parse(message)
        .expect("a message");
    parsed
        .parts
        .iter()
        .filter(|p| !matches!(p.body, mail_parser::PartType::Multipart(_)))
        .map(|p| p.contents().to_vec())
        .collect()
}

/// Sends `subject` through a server whose upstream plays `scenario`, waits for the
/// deferral and checks its reason; returns the queue id and the upstream.
fn deferred_by_scripted_upstream(
    scenario: &str,
    subject: &str,
    reason: &str,
) -> (TestEnv, String, Upstream) {
    let mut env = TestEnv::new(EnvOptions::default());
    let up = env.start_scripted(scenario, 0.0);
    env.start_serve();
    let id = queue_id(&send(
        env.port,
        "app@example.com",
        &["user@example.net"],
        &sample(subject),
    ));
    let ev = env.wait_for_event("deferred", |e| {
        e["queue_id"].as_str().is_some_and(|q| q.starts_with(&id))
    });
    assert!(ev["reason"].as_str().unwrap_or("").contains(reason), "{ev}");
    (env, id, up)
}

/// An upstream that answers DATA with 250 instead of 354 got no message text: that is
/// not a delivery. The message stays queued (it was once audited `relayed` and removed).
#[test]
fn a_2xx_reply_to_data_is_not_a_delivery() {
    let (env, id, up) =
        deferred_by_scripted_upstream("data250", "no 354", "unexpected reply to DATA");
    assert!(env.events_for("relayed", &id).is_empty());
    assert!(received(&up.dir).is_empty());
    assert!(env.queue_list().lines().any(|l| l.starts_with(&id)));
}

/// In `starttls` mode the greeting and EHLO come before TLS, so anyone on the path could
/// have sent them: a 554 there defers the message, it never bounces it.
#[test]
fn a_5xx_before_tls_defers_and_never_bounces() {
    let (env, _, _up) =
        deferred_by_scripted_upstream("greet554", "pre-TLS 554", "before TLS was established");
    assert!(env.audit_events().iter().all(|e| e["event"] != "bounced"));
}

/// A RSET that times out leaves the dialogue out of step: a connection reused after it
/// would read the previous command's reply for each new one (a late 250 taken for the
/// end of data: a message audited as relayed that never arrived). The connection is
/// dropped instead, and the next message arrives for real.
#[test]
fn a_timed_out_rset_retires_the_connection() {
    // One relay worker, so the second message would get the first one's connection.
    let mut env = TestEnv::new(EnvOptions {
        upstream_timeout: "1s".into(),
        upstream_extra: "connections = 1".into(),
        ..EnvOptions::default()
    });
    let up = env.start_scripted("rset-slow", 2.0);
    env.start_serve();
    let first = queue_id(&send(
        env.port,
        "app@example.com",
        &["user@example.net"],
        &sample("first gets 451"),
    ));
    env.wait_for_event("deferred", |e| {
        e["queue_id"]
            .as_str()
            .is_some_and(|q| q.starts_with(&first))
    });
    let second_msg = sample("second after a slow RSET");
    let second = queue_id(&send(
        env.port,
        "app@example.com",
        &["user@example.net"],
        &second_msg,
    ));
    env.wait_for_event("relayed", |e| {
        e["queue_id"]
            .as_str()
            .is_some_and(|q| q.starts_with(&second))
    });
    let got = received(&up.dir);
    assert!(
        got.iter()
            .any(|m| m.bytes.ends_with(b"second after a slow RSET\r\n")
                || String::from_utf8_lossy(&m.bytes).contains("second after a slow RSET")),
        "audited as relayed, but the upstream has {} message(s)",
        got.len()
    );
}

/// RFC 6152: 8-bit data goes only to an upstream that announces 8BITMIME. An 8-bit body
/// is converted at receipt (transform/seven_bit.rs), so it reaches such an upstream as
/// quoted-printable; an SMTPUTF8 message keeps its 8-bit data and bounces with 5.6.3 and
/// a reason the sender can act on (converting it at relay time would break its DKIM
/// signature).
#[test]
fn eight_bit_mail_is_not_sent_to_an_upstream_without_8bitmime() {
    let mut env = TestEnv::new(EnvOptions::default());
    let up = env.start_scripted("no8bit", 0.0);
    env.start_serve();
    let eight = "From: app@example.com\r\nTo: user@example.net\r\nSubject: 8bit\r\n\
                 MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Transfer-Encoding: 8bit\r\n\r\nGr\u{fc}\u{df}e\r\n";
    let id8 = queue_id(&send(
        env.port,
        "app@example.com",
        &["user@example.net"],
        eight.as_bytes(),
    ));
    env.wait_for_event("relayed", |e| {
        e["queue_id"].as_str().is_some_and(|q| q.starts_with(&id8))
    });
    // SMTPUTF8: the 8-bit data stays, and the upstream cannot take it.
    let mut c = Smtp::connect(env.port);
    c.cmd("EHLO app.test");
    assert!(c
        .cmd("MAIL FROM:<app@example.com> SMTPUTF8")
        .starts_with("250"));
    assert!(c.cmd("RCPT TO:<user@example.net>").starts_with("250"));
    let id = queue_id(&c.data(eight.as_bytes()));
    c.cmd("QUIT");
    let ev = env.wait_for_event("bounced", |e| {
        e["queue_id"].as_str().is_some_and(|q| q.starts_with(&id))
    });
    assert!(ev.to_string().contains("5.6.3"), "{ev}");
    // A DSN was made (it inherits SMTPUTF8, so this upstream cannot take it either).
    assert!(ev["dsn"].as_str().is_some(), "no DSN: {ev}");
    let got = env.wait_for_messages(&up, 1);
    assert!(
        got.iter().all(|m| m.bytes.iter().all(|&b| b < 0x80)),
        "8-bit data reached the upstream"
    );
    assert!(
        got.iter()
            .any(|m| m.header("Subject").as_deref() == Some("8bit")
                && m.header("Content-Transfer-Encoding").as_deref() == Some("quoted-printable")
                && m.text().contains("Gr=C3=BC=C3=9Fe")),
        "the 8-bit body did not arrive as quoted-printable"
    );
}

/// An upstream whose enhanced code disagrees with its basic code is decided by the basic
/// code (src/queue/reply.rs): `421 5.7.0` keeps the message queued however permanent the
/// `5.7.0` sounds, and `550 4.2.2` bounces it however temporary the `4.2.2` sounds, with
/// the upstream's words kept verbatim in the reason.
#[test]
fn a_mismatched_upstream_reply_is_decided_by_its_basic_code() {
    let mut env = TestEnv::new(EnvOptions::default());
    let mut first = env.start_capture(CaptureOptions {
        rcpt_reply: Some("421 5.7.0 go away".into()),
        ..CaptureOptions::default()
    });
    env.start_serve();
    let id = queue_id(&send(
        env.port,
        "app@example.com",
        &["user@example.net"],
        &sample("mismatched"),
    ));
    let is_ours =
        |e: &serde_json::Value| e["queue_id"].as_str().is_some_and(|q| q.starts_with(&id));
    let ev = env.wait_for_event("deferred", is_ours);
    assert!(
        ev["reason"]
            .as_str()
            .unwrap_or("")
            .contains("421 5.7.0 go away"),
        "{ev}"
    );
    assert!(
        env.events_for("bounced", &id).is_empty(),
        "a 421 must not bounce"
    );

    first.proc.kill();
    let second = env.start_capture(CaptureOptions {
        rcpt_reply: Some("550 4.2.2 mailbox full".into()),
        ..CaptureOptions::default()
    });
    let ev = env.wait_for_event("bounced", |e| is_ours(e) && e["dsn"].is_string());
    assert_eq!(ev["rcpts"], serde_json::json!(["user@example.net"]), "{ev}");
    assert!(
        ev["reasons"][0]
            .as_str()
            .unwrap_or("")
            .contains("550 4.2.2 mailbox full"),
        "{ev}"
    );
    assert!(received(&second.dir).is_empty());
}
