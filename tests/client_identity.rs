//! App identities: `[[client]]` AUTH with argon2 hashes, `allowed_senders` enforced on
//! MAIL FROM and on the header From, `require_auth`, STARTTLS towards local clients.
//! Clients are real: swaks, as a sysadmin would test with.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod support;

use support::demo::{demo_dir, serve_demo, DemoServer};
use support::SEALGATE as BIN;

struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    server: DemoServer,
    port: u16,
}

fn hash(pw: &str) -> String {
    let mut c = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin
        .take()
        .unwrap()
        .write_all(format!("{pw}\n").as_bytes())
        .unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A demo setup plus a `billing` client, started with `serve`; `extra_server` goes into `[server]`.
fn start(extra_server: &str) -> Env {
    let (tmp, dir) = demo_dir();
    let client = format!(
        "\n[[client]]\nname = \"billing\"\nusername = \"billing\"\npassword_hash = \"{}\"\nallowed_senders = [\"billing@example.com\", \"*@billing.example.com\"]\n",
        hash("s3cret pass")
    );
    let server = serve_demo(&dir, extra_server, &client);
    let port = server.port;
    Env {
        _tmp: tmp,
        dir,
        server,
        port,
    }
}

/// Runs swaks; returns (exit ok, transcript).
fn swaks(port: u16, args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new("swaks")
        .args([
            "--server",
            &format!("127.0.0.1:{port}"),
            "--timeout",
            "30",
            "--hide-informational",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("swaks is installed by .ci/run");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn authenticated_client_may_use_only_its_senders() {
    let env = start("");
    let auth = [
        "--auth",
        "PLAIN",
        "--auth-user",
        "billing",
        "--auth-password",
        "s3cret pass",
    ];
    let (ok, t) = swaks(
        env.port,
        &[
            &auth[..],
            &[
                "--from",
                "billing@example.com",
                "--to",
                "accounts@example.com",
                "--h-From",
                "billing@example.com",
            ],
        ]
        .concat(),
        &env.dir,
    );
    assert!(ok && t.contains("250 2.0.0 queued as"), "{t}");

    let (ok, t) = swaks(
        env.port,
        &[
            &auth[..],
            &[
                "--from",
                "payroll@example.com",
                "--to",
                "accounts@example.com",
            ],
        ]
        .concat(),
        &env.dir,
    );
    assert!(
        !ok && t.contains("550 5.7.1 <payroll@example.com>: sender not allowed for client billing"),
        "{t}"
    );

    // Envelope allowed, header From forged: refused at end of DATA.
    let (ok, t) = swaks(
        env.port,
        &[
            &auth[..],
            &[
                "--from",
                "billing@example.com",
                "--to",
                "accounts@example.com",
                "--h-From",
                "ceo@example.com",
            ],
        ]
        .concat(),
        &env.dir,
    );
    assert!(
        !ok && t.contains("550 5.7.1 header From <ceo@example.com> not allowed for client billing"),
        "{t}"
    );

    // A second From field (RFC 5322 allows one) does not slip the forged one past the
    // check: every From field is checked, not only the last one.
    let two_froms = env.dir.join("two-froms.eml");
    std::fs::write(
        &two_froms,
        "From: CEO <ceo@example.com>\r\nFrom: billing@example.com\r\nTo: accounts@example.com\r\nSubject: pay\r\n\r\nhi\r\n",
    )
    .unwrap();
    let data = two_froms.to_str().unwrap();
    let (ok, t) = swaks(
        env.port,
        &[
            &auth[..],
            &[
                "--from",
                "billing@example.com",
                "--to",
                "accounts@example.com",
                "--data",
                data,
            ],
        ]
        .concat(),
        &env.dir,
    );
    assert!(
        !ok && t.contains("550 5.7.1 header From <ceo@example.com> not allowed for client billing"),
        "{t}"
    );

    // `explain --client billing` shows the same refusal: it runs serve's decision path,
    // header From check included (it used to accept this message).
    let out = Command::new(BIN)
        .args([
            "explain",
            "-c",
            "sealgate.toml",
            "--json",
            "--client",
            "billing",
            "--from",
            "billing@example.com",
            "--to",
            "accounts@example.com",
            "--",
            data,
        ])
        .current_dir(&env.dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["accepted"], false, "{v}");
    assert!(
        v["reply"].as_str().is_some_and(|r| r
            .starts_with("550 5.7.1 header From <ceo@example.com> not allowed for client billing")),
        "{v}"
    );
    // And the MAIL-time check: an envelope sender the client may not use is refused
    // before any recipient, by serve and by explain alike.
    let out = Command::new(BIN)
        .args([
            "explain",
            "-c",
            "sealgate.toml",
            "--json",
            "--client",
            "billing",
            "--from",
            "ceo@example.com",
            "--to",
            "accounts@example.com",
            "--",
            data,
        ])
        .current_dir(&env.dir)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["accepted"], false, "{v}");
    assert!(
        v["reply"]
            .as_str()
            .is_some_and(|r| r
                .starts_with("550 5.7.1 <ceo@example.com>: sender not allowed for client billing")),
        "{v}"
    );

    let (ok, t) = swaks(
        env.port,
        &[
            "--auth",
            "PLAIN",
            "--auth-user",
            "billing",
            "--auth-password",
            "wrong",
            "--from",
            "billing@example.com",
            "--to",
            "accounts@example.com",
        ],
        &env.dir,
    );
    assert!(!ok && t.contains("535 5.7.8"), "{t}");
    let audit = std::fs::read_to_string(env.dir.join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"client\":\"billing\""), "{audit}");
    assert!(!audit.contains("s3cret"), "no password in the audit log");
}

#[test]
fn require_auth_refuses_anonymous_mail_and_starttls_works() {
    let env = start("require_auth = true\ntls_cert = \"certs/upstream.pem\"\ntls_key = \"certs/upstream.key\"\n");
    let (ok, t) = swaks(
        env.port,
        &[
            "--from",
            "billing@example.com",
            "--to",
            "accounts@example.com",
        ],
        &env.dir,
    );
    assert!(
        !ok && t.contains("530 5.7.0 authentication required"),
        "{t}"
    );
    let (ok, t) = swaks(
        env.port,
        &[
            "--tls",
            "--auth",
            "LOGIN",
            "--auth-user",
            "billing",
            "--auth-password",
            "s3cret pass",
            "--from",
            "x@billing.example.com",
            "--to",
            "accounts@example.com",
            "--h-From",
            "x@billing.example.com",
        ],
        &env.dir,
    );
    assert!(ok && t.contains("250 2.0.0 queued as"), "{t}");
    let spool = std::fs::read_dir(env.dir.join("spool/queue"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".msg"))
        .unwrap();
    let m = std::fs::read_to_string(spool.path()).unwrap();
    assert!(
        m.contains("with ESMTPSA id"),
        "Received header records TLS + AUTH: {m}"
    );
}

#[test]
fn policy_refusals_are_seen_by_a_real_client_at_rcpt_and_at_data() {
    let env = start("");
    // RCPT time: a content-free rule requires encryption and carol has no certificate.
    let (ok, t) = swaks(
        env.port,
        &[
            "--from",
            "payroll@example.com",
            "--to",
            "carol@bank.example",
        ],
        &env.dir,
    );
    assert!(!ok, "{t}");
    assert!(
        t.contains("550 5.7.1 <carol@bank.example>: no S/MIME certificate or OpenPGP key for this recipient, and policy requires encryption (rule \"payroll to the bank is signed and encrypted\" in policies/50-rules.toml)"),
        "{t}"
    );
    // RCPT time: deny list.
    let (ok, t) = swaks(
        env.port,
        &["--from", "billing@example.com", "--to", "ceo@example.com"],
        &env.dir,
    );
    assert!(
        !ok && t.contains("550 5.7.1 <ceo@example.com>: recipient denied"),
        "{t}"
    );
    // DATA time: a content rule refuses the whole message, naming the rule.
    let key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\nMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n-----END PRIVATE KEY-----\n";
    let body = dir_file(&env.dir, "key.txt", key);
    let (ok, t) = swaks(
        env.port,
        &[
            "--from",
            "billing@example.com",
            "--to",
            "ops@example.com",
            "--body",
            &body,
        ],
        &env.dir,
    );
    assert!(!ok, "{t}");
    assert!(
        t.contains("550 5.7.1 message refused for <ops@example.com>: message contains a private key or cloud credential (rule \"private keys never leave\" in policies/50-rules.toml)"),
        "{t}"
    );
    let audit = std::fs::read_to_string(env.dir.join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"event\":\"rejected\""), "{audit}");
    assert!(
        !audit.contains("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"),
        "no content in the audit log"
    );
}

fn dir_file(dir: &Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    format!("@{}", p.display())
}

#[test]
fn sigterm_lets_a_message_in_progress_finish_then_exits() {
    use std::io::{BufRead, BufReader, Write};
    let mut env = start("");
    let s = std::net::TcpStream::connect(("127.0.0.1", env.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let mut reply = |r: &mut BufReader<std::net::TcpStream>| loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return line.clone();
        }
    };
    reply(&mut r);
    write!(
        w,
        "EHLO t\r\nMAIL FROM:<billing@example.com>\r\nRCPT TO:<ops@example.com>\r\nDATA\r\n"
    )
    .unwrap();
    reply(&mut r);
    reply(&mut r);
    reply(&mut r);
    assert!(reply(&mut r).starts_with("354"));
    write!(w, "Subject: in flight\r\n\r\nfirst half\r\n").unwrap();
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(env.server.child.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(500));
    write!(w, "second half\r\n.\r\n").unwrap();
    let fin = reply(&mut r);
    assert!(
        fin.starts_with("250 2.0.0 queued as"),
        "the message in flight is accepted: {fin}"
    );
    let status = env.server.child.wait().unwrap();
    assert!(status.success(), "serve exits cleanly: {status:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", env.port)).is_err(),
        "no longer listening"
    );
    let queued = std::fs::read_dir(env.dir.join("spool/queue"))
        .unwrap()
        .flatten()
        .count();
    assert!(
        queued >= 1,
        "the accepted message is in the spool for the next start"
    );
}
