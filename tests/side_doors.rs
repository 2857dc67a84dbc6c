//! The doors beside the SMTP front door, tried as a local attacker would (issue 10):
//! bounces, the metrics listener, a second server on the spool, operator output,
//! `explain --write`, idle slot holders, the audit log. Every test runs the `sealgate`
//! binary against real peers (the aiosmtpd sink, `sealgate capture`, a DNS server,
//! many real sockets) and looks at what a user would see.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A hazard a terminal acts on: C0 (newline and tab allowed where `lines` is true),
/// DEL, C1, line separators, bidirectional controls.
fn hazards(text: &str, lines: bool) -> Vec<char> {
    text.chars()
        .filter(|&c| {
            !(lines && (c == '\n' || c == '\t'))
                && (c < ' '
                    || ('\u{7f}'..='\u{9f}').contains(&c)
                    || matches!(c, '\u{2028}' | '\u{2029}')
                    || ('\u{202a}'..='\u{202e}').contains(&c)
                    || ('\u{2066}'..='\u{2069}').contains(&c))
        })
        .collect()
}

fn run(args: &[&str], config: &Path) -> (bool, String, String) {
    let out = Command::new(SEALGATE)
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .expect("run sealgate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_policy(env: &TestEnv, text: &str) {
    std::fs::write(env.path().join("policies/00-recipients.toml"), text).unwrap();
}

const RESTRICTED: &str =
    "[recipients]\nallow = [\"example.com\", \"example.net\"]\ndeny = [\"ceo@example.com\"]\n";

// ---------------------------------------------------------------------------------------
// 1. A bounce is mail

/// Without a postmaster, a sender the recipient policy refuses (not allowed, or denied)
/// is refused at MAIL, so that no DSN can be due to it later; an approved one passes.
#[test]
fn a_sender_whose_bounces_could_go_nowhere_is_refused_at_mail() {
    let mut env = TestEnv::new(EnvOptions::default());
    write_policy(&env, RESTRICTED);
    env.start_serve();
    for sender in ["attacker@evil.example", "CEO@example.com"] {
        let mut c = Smtp::connect(env.port);
        c.cmd("EHLO client.test");
        let r = c.cmd(&format!("MAIL FROM:<{sender}>"));
        assert!(
            r.starts_with("550 5.7.1") && r.contains("sender not approved as a bounce recipient"),
            "{sender}: {r}"
        );
        assert!(r.contains("00-recipients.toml"), "names the file: {r}");
    }
    let r = send(
        env.port,
        "app@example.com",
        &["user@example.net"],
        &message("fine", "x"),
    );
    assert!(r.starts_with("250 2.0.0"), "{r}");
    // The null sender has no bounces at all.
    let r = send(env.port, "", &["user@example.net"], &message("null", "x"));
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let ev = env.wait_for_event("rejected", |e| e["stage"] == "mail");
    assert_eq!(ev["from"], "attacker@evil.example", "{ev}");
}

/// With `postmaster` set, an unapproved sender is accepted, and when a real upstream
/// (aiosmtpd) refuses the recipient the DSN goes to the postmaster, not to the sender;
/// it carries at most 8 KiB of the 63 KB of client headers, never the body, and no
/// line over 998 octets.
#[test]
fn the_bounce_of_an_unapproved_sender_goes_to_the_postmaster_with_bounded_headers() {
    let mut env = TestEnv::new(EnvOptions {
        server_extra: "postmaster = \"postmaster@example.com\"".into(),
        ..EnvOptions::default()
    });
    write_policy(&env, RESTRICTED);
    let sink = env.start_sink(SinkOptions {
        reject_rcpt: Some("nosuch@*".into()),
        ..SinkOptions::default()
    });
    env.start_serve();

    let mut msg =
        String::from("From: attacker@evil.example\r\nTo: nosuch@example.net\r\nSubject: cards\r\n");
    let mut n = 0;
    while msg.len() < 63 * 1024 {
        msg.push_str(&format!("X-Card-{n}: 4111 1111 1111 {:04}\r\n", n % 10000));
        n += 1;
    }
    msg.push_str("\r\nBODY-SECRET-MARKER\r\n");
    let id = queue_id(&send(
        env.port,
        "attacker@evil.example",
        &["nosuch@example.net"],
        msg.as_bytes(),
    ));
    let ev = env.wait_for_event("bounced", |e| {
        e["queue_id"].as_str().is_some_and(|q| q.starts_with(&id))
    });
    assert_eq!(ev["dsn_to"], "postmaster@example.com", "{ev}");
    assert!(
        ev["note"].as_str().unwrap_or("").contains("postmaster"),
        "{ev}"
    );
    let got = env.wait_for_messages(&sink, 1);
    let dsn = got
        .iter()
        .find(|m| m.from.is_empty())
        .expect("a DSN with the null sender");
    assert_eq!(dsn.rcpts, vec!["postmaster@example.com"]);
    assert!(got
        .iter()
        .all(|m| !m.rcpts.iter().any(|r| r.contains("evil.example"))));
    let text = dsn.text();
    assert!(!text.contains("BODY-SECRET-MARKER"));
    assert!(text.contains("Status: 5.1.1"), "{text}");
    assert!(text.contains("To: <postmaster@example.com>"), "{text}");
    assert!(
        dsn.bytes.len() < 8 * 1024 + 4096,
        "DSN of {} bytes",
        dsn.bytes.len()
    );
    let cards = text.matches("X-Card-").count();
    assert!(cards > 0 && cards < 300, "{cards} card headers returned");
    for line in text.split("\r\n") {
        assert!(line.len() <= 998, "line of {} octets", line.len());
    }
}

/// A message accepted while its sender was approved, whose sender the policy denies by
/// the time a real upstream refuses the recipient: no DSN goes out (there is no
/// postmaster), and the `bounced` record says why.
#[test]
fn a_bounce_for_a_sender_denied_since_acceptance_goes_nowhere_and_is_audited() {
    let mut env = TestEnv::new(EnvOptions::default());
    env.start_serve();
    // No upstream yet: the message waits in the queue.
    let id = queue_id(&send(
        env.port,
        "app@example.com",
        &["nosuch@example.net"],
        &message("late deny", "x"),
    ));
    env.wait_for_event("deferred", |e| {
        e["queue_id"].as_str().is_some_and(|q| q.starts_with(&id))
    });
    write_policy(
        &env,
        "[recipients]\nallow = [\"*\"]\ndeny = [\"app@example.com\"]\n",
    );
    env.wait_for_event("reloaded", |_| true);
    let sink = env.start_sink(SinkOptions {
        reject_rcpt: Some("nosuch@*".into()),
        ..SinkOptions::default()
    });
    let ev = env.wait_for_event("bounced", |e| {
        e["queue_id"].as_str().is_some_and(|q| q.starts_with(&id))
    });
    assert!(ev["dsn"].is_null(), "{ev}");
    let note = ev["note"].as_str().unwrap_or("");
    assert!(
        note.contains("no DSN is sent")
            && note.contains("<app@example.com>: recipient denied")
            && note.contains("no [server] postmaster"),
        "{ev}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        received(&sink.dir).is_empty(),
        "nothing may reach the upstream"
    );
}

/// An upstream reply of 1,200 characters with a `2.0.0` on a 550: every DSN line stays
/// within 998 octets (the Diagnostic-Code folded), and `Status:` is 5.0.0, consistent
/// with `Action: failed`.
#[test]
fn dsn_lines_fit_998_octets_and_status_agrees_with_the_reply() {
    let mut env = TestEnv::new(EnvOptions::default());
    let long = format!("550 2.0.0 {}", "refused-because ".repeat(75));
    // aiosmtpd refuses nosuch@ with that reply and takes the DSN to app@.
    let dir = env.path().join("sink-long");
    std::fs::create_dir_all(&dir).unwrap();
    let certs = env.path().join("certs");
    let log = env.path().join("sink-long.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut sink = Proc {
        child: Command::new("python3")
            .arg(format!("{FIXTURES}/aiosmtpd_sink.py"))
            .args(["--port", &env.upstream_port.to_string(), "--starttls"])
            .arg("--dir")
            .arg(&dir)
            .arg("--cert")
            .arg(certs.join("good.pem"))
            .arg("--key")
            .arg(certs.join("good.key"))
            .args(["--reject-rcpt", "nosuch@*", "--reject-reply", &long])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
        log,
        name: "aiosmtpd sink".into(),
    };
    wait_for_port(env.upstream_port, &mut sink);
    env.start_serve();
    let id = queue_id(&send(
        env.port,
        "app@example.com",
        &["nosuch@example.net"],
        &message("long reply", "x"),
    ));
    env.wait_for_event("bounced", |e| {
        e["queue_id"].as_str().is_some_and(|q| q.starts_with(&id))
    });
    let got = wait_for_files(&dir, 1, TIMEOUT);
    let text = got[0].text();
    assert!(
        text.contains("Action: failed\r\nStatus: 5.0.0\r\n"),
        "{text}"
    );
    assert!(text.contains("Diagnostic-Code: smtp; 550 2.0.0 refused-because"));
    for line in text.split("\r\n") {
        assert!(line.len() <= 998, "line of {} octets: {line}", line.len());
    }
    let longest = text.split("\r\n").map(str::len).max().unwrap_or(0);
    assert!(longest <= 990, "folded: longest line {longest}");
}

// ---------------------------------------------------------------------------------------
// 3. The metrics listener under a 1,024 descriptor limit

/// Raises this process's descriptor limit to its hard limit (the test itself holds the
/// idle connections); returns the soft limit now in force.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// User+system CPU seconds of `pid` so far (/proc/PID/stat fields 14 and 15).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // fields after the command: state is field 3, so utime (14) is index 11.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Opens up to `n` idle connections to `port` at once (`wait` to connect each).
fn idle_connections(port: u16, n: usize, wait: Duration) -> Vec<TcpStream> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                tokio::spawn(async move {
                    tokio::time::timeout(wait, tokio::net::TcpStream::connect(("127.0.0.1", port)))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .and_then(|s| s.into_std().ok())
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            if let Ok(Some(s)) = t.await {
                out.push(s);
            }
        }
        out
    })
}

/// Thousands of idle connections to the metrics port of a server limited to 1,024
/// descriptors: SMTP submissions still get 250, the server holds few descriptors and
/// does not spin. Then the SMTP listener itself is driven out of descriptors: it backs
/// off instead of spinning, and serves again once they are freed.
#[test]
fn idle_metrics_connections_do_not_starve_smtp_under_1024_descriptors() {
    let have = raise_nofile();
    let idle = 3000.min(have.saturating_sub(200) as usize);
    let env = TestEnv::new(EnvOptions {
        server_extra: "max_connections = 5000".into(),
        ..EnvOptions::default()
    });
    let metrics_port = free_port();
    let mut cfg = std::fs::read_to_string(&env.config).unwrap();
    cfg.push_str(&format!(
        "\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"
    ));
    std::fs::write(&env.config, cfg).unwrap();
    let log = env.path().join("serve-limited.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut proc = Proc {
        child: Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -n 1024 && exec '{SEALGATE}' serve -c '{}'",
                env.config.display()
            ))
            .current_dir(env.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .env("SEALGATE_LOG", "info")
            .spawn()
            .unwrap(),
        log,
        name: "sealgate serve (ulimit -n 1024)".into(),
    };
    wait_for_port(env.port, &mut proc);
    wait_for_port(metrics_port, &mut proc);
    let pid = proc.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 1024 ")),
        "{limits}"
    );

    // Beyond the 16 being served, connections wait in the kernel's accept queue (its
    // backlog bounds them; the rest never complete the handshake): none costs a descriptor.
    let mut held = Vec::new();
    for _ in 0..idle / 100 {
        held.extend(idle_connections(
            metrics_port,
            100,
            Duration::from_millis(300),
        ));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(held.len() > 16, "only {} connections opened", held.len());
    std::thread::sleep(Duration::from_millis(500));
    let fds = open_fds(pid);
    assert!(
        fds < 200,
        "server holds {fds} descriptors with {} idle scrapers",
        held.len()
    );
    for i in 0..5 {
        let r = send(
            env.port,
            "app@example.com",
            &["user@example.net"],
            &message(&format!("under load {i}"), "x"),
        );
        assert!(
            r.starts_with("250 2.0.0"),
            "submission {i}: {r}\n{}",
            proc.log_text()
        );
    }
    let before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_seconds(pid) - before;
    eprintln!(
        "metrics flood: {} idle connections, {fds} server fds, {used:.2} s CPU in 3 s",
        held.len()
    );
    assert!(used < 0.9, "server used {used:.2} s CPU in 3 s");
    drop(held);

    // The SMTP listener out of descriptors (max_connections is 5000, the limit 1024).
    // In batches the accept queue can take, until the server is out of descriptors.
    let mut smtp_idle = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while !proc.log_text().contains("backing off") && Instant::now() < deadline {
        smtp_idle.extend(idle_connections(env.port, 100, Duration::from_secs(2)));
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_seconds(pid) - before;
    eprintln!(
        "SMTP flood: {} connections, {} server fds, {used:.2} s CPU in 3 s",
        smtp_idle.len(),
        open_fds(pid)
    );
    assert!(used < 0.9, "SMTP accept loop spun: {used:.2} s CPU in 3 s");
    assert!(
        proc.log_text().contains("backing off"),
        "{}",
        proc.log_text()
    );
    drop(smtp_idle);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let r = std::panic::catch_unwind(|| {
            send(
                env.port,
                "app@example.com",
                &["user@example.net"],
                &message("after the flood", "x"),
            )
        });
        match r {
            Ok(r) if r.starts_with("250 2.0.0") => break,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            other => panic!("no recovery: {other:?}\n{}", proc.log_text()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// 4. A second server on the same spool

/// While a running server receives a stream of submissions, a second `serve` on the
/// same spool exits with a clear error before touching the spool: every submission to
/// the first still gets 250.
#[test]
fn a_second_serve_stops_before_touching_the_spool() {
    let mut env = TestEnv::new(EnvOptions::default());
    env.start_serve();
    let port = env.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let body = "x".repeat(200_000);
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let stop = stop.clone();
            let body = body.clone();
            std::thread::spawn(move || {
                let mut replies = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || i < 5 {
                    let m = message(&format!("stream {t} {i}"), &body);
                    replies.push(send(port, "app@example.com", &["user@example.net"], &m));
                    i += 1;
                }
                replies
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let out = Command::new(SEALGATE)
            .arg("serve")
            .arg("-c")
            .arg(&env.config)
            .current_dir(env.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "second serve ran: {err}");
        assert!(
            err.contains("another sealgate serve (pid") && err.contains("sealgate.pid"),
            "{err}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let replies: Vec<String> = senders
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let bad: Vec<&String> = replies.iter().filter(|r| !r.starts_with("250")).collect();
    assert!(
        bad.is_empty(),
        "{} of {} failed: {bad:?}",
        bad.len(),
        replies.len()
    );
    assert!(env.serve_running());
}

// ---------------------------------------------------------------------------------------
// 5. Operator output, and 7b/7c: the audit log

/// A deferral whose upstream reply carries escape sequences, a Subject with one, and an
/// SMTPUTF8 sender with U+2028 and U+202E: `queue list` and `queue show` print them
/// escaped; the audit log holds none of them raw, and records the TLS version of the
/// deferring session.
#[test]
fn operator_output_and_audit_log_escape_control_characters() {
    let mut env = TestEnv::new(EnvOptions::default());
    let _up = env.start_capture(CaptureOptions {
        rcpt_reply: Some("451 4.3.0 \u{1b}[2J\u{1b}]0;owned\u{7} try later".into()),
        ..CaptureOptions::default()
    });
    env.start_serve();
    let sender = "app\u{2028}x\u{202e}gpj.exe@example.com";
    let mut c = Smtp::connect(env.port);
    c.cmd("EHLO client.test");
    let r = c.cmd(&format!("MAIL FROM:<{sender}> SMTPUTF8"));
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd("RCPT TO:<user@example.net>");
    assert!(r.starts_with("250"), "{r}");
    let msg = crlf(b"From: app@example.com\nSubject: \x1b[31mRED\x1b]8;;http://evil.example\x07\nMessage-ID: <esc@test>\n\nbody\n");
    let id = queue_id(&c.data(&msg));
    let ev = env.wait_for_event("deferred", |e| {
        e["queue_id"].as_str().is_some_and(|q| q.starts_with(&id))
    });
    let tls = ev["tls_version"].as_str().unwrap_or("");
    assert!(
        tls.starts_with("TLS"),
        "deferral after TLS records its version: {ev}"
    );

    let (ok, list, err) = run(&["queue", "list"], &env.config);
    assert!(ok, "{err}");
    assert_eq!(hazards(&list, true), Vec::<char>::new(), "{list:?}");
    assert!(list.contains("\\x1B[2J"), "{list}");
    assert!(
        list.contains("\\u{2028}") && list.contains("\\u{202E}"),
        "{list}"
    );

    let (ok, show, err) = run(&["queue", "show", &id], &env.config);
    assert!(ok, "{err}");
    assert_eq!(hazards(&show, true), Vec::<char>::new(), "{show:?}");
    assert!(show.contains("Subject: \\x1B[31mRED"), "{show}");

    let raw = std::fs::read_to_string(&env.audit).unwrap();
    for line in raw.lines() {
        assert_eq!(hazards(line, false), Vec::<char>::new(), "{line:?}");
    }
    assert!(raw.contains("\\u2028") && raw.contains("\\u202e"), "{raw}");
    // Escaped, the values are still the originals.
    let received = env.wait_for_event("received", |_| true);
    assert_eq!(received["from"], sender);
}

/// `explain` quotes the text a rule matched: an escape sequence in a Subject is shown
/// escaped, never sent to the terminal.
#[test]
fn explain_prints_matched_client_text_escaped() {
    let env = TestEnv::new(EnvOptions::default());
    std::fs::write(
        env.path().join("policies/10-rules.toml"),
        "[[rule]]\nname = \"urgent\"\nsubject = [\"(?i)urgent.*\"]\nactions = [\"reject\"]\n",
    )
    .unwrap();
    let eml = env.path().join("m.eml");
    std::fs::write(
        &eml,
        crlf(b"From: app@example.com\nTo: user@example.net\nSubject: URGENT \x1b[2J\x1b]0;owned\x07 \xe2\x80\xae gpj.exe\n\nbody\n"),
    )
    .unwrap();
    let out = Command::new(SEALGATE)
        .args([
            "explain",
            "--from",
            "app@example.com",
            "--to",
            "user@example.net",
            "-c",
        ])
        .arg(&env.config)
        .arg(&eml)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The policy's text folding turned C0 into spaces; the bidi override is escaped.
    assert!(text.contains("matched \"URGENT"), "{text}");
    assert!(text.contains("\\u{202E}"), "{text}");
    assert_eq!(hazards(&text, true), Vec::<char>::new(), "{text:?}");
}

/// `doctor` against a DNS server publishing records with escape sequences and a bidi
/// override: the output holds none of them raw, and each such record is a FAIL.
#[test]
fn doctor_escapes_and_fails_records_with_control_characters() {
    let zone = vec![
        ("hostile.example", "v=spf1 -all \u{1b}[2J"),
        ("_dmarc.hostile.example", "v=DMARC1; p=reject\u{202e}"),
        (
            "_mta-sts.hostile.example",
            "v=STSv1; id=1\u{1b}]8;;http://evil\u{7}",
        ),
        (
            "_smtp._tls.hostile.example",
            "v=TLSRPTv1; rua=mailto:a@hostile.example\u{1b}[31m",
        ),
    ];
    let dns = start_dns(zone);
    let env = TestEnv::new(EnvOptions::default());
    let mut cfg = std::fs::read_to_string(&env.config).unwrap();
    cfg.push_str(
        "\n[[client]]\nname = \"app\"\nusername = \"app\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA\"\nallowed_senders = [\"app@hostile.example\"]\n",
    );
    std::fs::write(&env.config, cfg).unwrap();
    let out = Command::new(SEALGATE)
        .args(["doctor", "--dns", &dns.to_string(), "-c"])
        .arg(&env.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(hazards(&text, true), Vec::<char>::new(), "{text:?}");
    for check in ["spf", "dmarc", "mta-sts", "tls-rpt"] {
        let line = text
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(check) || l.contains(&format!(" {check} ")))
            .unwrap_or_else(|| panic!("no {check} line:\n{text}"));
        assert!(
            line.starts_with("FAIL") && line.contains("control characters"),
            "{line}"
        );
    }
    assert!(
        text.contains("\\x1B[2J") && text.contains("\\u{202E}"),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(1));
}

/// A minimal authoritative DNS server (UDP) answering TXT queries from `zone`.
fn start_dns(zone: Vec<(&str, &str)>) -> std::net::SocketAddr {
    let zone: Vec<(String, String)> = zone
        .into_iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let (udp, tcp) = loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        if let Ok(tcp) = std::net::TcpListener::bind(udp.local_addr().unwrap()) {
            break (udp, tcp);
        }
    };
    let addr = udp.local_addr().unwrap();
    let answer = move |query: &[u8]| -> Option<Vec<u8>> {
        if query.len() < 12 {
            return None;
        }
        let mut pos = 12;
        let mut labels = Vec::new();
        loop {
            let len = *query.get(pos)? as usize;
            pos += 1;
            if len == 0 {
                break;
            }
            labels.push(String::from_utf8_lossy(query.get(pos..pos + len)?).to_ascii_lowercase());
            pos += len;
        }
        let qtype = u16::from_be_bytes([*query.get(pos)?, *query.get(pos + 1)?]);
        let question = &query[12..pos + 4];
        let name = labels.join(".");
        let records: Vec<&String> = zone
            .iter()
            .filter(|(n, _)| *n == name && qtype == 16)
            .map(|(_, v)| v)
            .collect();
        let mut rdata_all = Vec::new();
        for r in &records {
            let mut rdata = Vec::new();
            for chunk in r.as_bytes().chunks(255) {
                rdata.push(chunk.len() as u8);
                rdata.extend_from_slice(chunk);
            }
            rdata_all.extend_from_slice(&[0xC0, 0x0C, 0, 16, 0, 1, 0, 0, 0, 60]);
            rdata_all.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            rdata_all.extend_from_slice(&rdata);
        }
        let rcode: u16 = if records.is_empty() && !zone.iter().any(|(n, _)| n.ends_with(&name)) {
            3
        } else {
            0
        };
        let rd = u16::from_be_bytes([query[2], query[3]]) & 0x0100;
        let flags = 0x8000 | 0x0400 | rd | rcode;
        let mut out = query[0..2].to_vec();
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&[0, 1]);
        out.extend_from_slice(&(records.len() as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(question);
        out.extend_from_slice(&rdata_all);
        Some(out)
    };
    let answer = std::sync::Arc::new(answer);
    let a = answer.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = udp.recv_from(&mut buf) {
            if let Some(out) = a(&buf[..n]) {
                let _ = udp.send_to(&out, peer);
            }
        }
    });
    std::thread::spawn(move || {
        for stream in tcp.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut len = [0u8; 2];
            if s.read_exact(&mut len).is_err() {
                continue;
            }
            let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
            if s.read_exact(&mut q).is_err() {
                continue;
            }
            if let Some(out) = answer(&q) {
                let mut framed = (out.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&out);
                let _ = s.write_all(&framed);
            }
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------
// 6. explain --write

/// `explain --write` sets an existing directory of ours to 0700 (0777 did not change
/// before), creates a new one 0700, and refuses a symbolic link to a directory.
#[test]
fn explain_write_makes_its_directory_private_and_refuses_a_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new(EnvOptions::default());
    let eml = env.path().join("m.eml");
    std::fs::write(&eml, message("explain", "hello")).unwrap();
    let explain = |dir: &Path| {
        Command::new(SEALGATE)
            .args([
                "explain",
                "--from",
                "app@example.com",
                "--to",
                "user@example.net",
                "--write",
            ])
            .arg(dir)
            .arg("-c")
            .arg(&env.config)
            .arg(&eml)
            .output()
            .unwrap()
    };
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;

    let open = env.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = explain(&open);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&open), 0o700);
    assert!(open.join("copy-1.eml").exists());

    let fresh = env.path().join("new/sub");
    assert!(explain(&fresh).status.success());
    assert_eq!(mode(&fresh), 0o700);

    let target = env.path().join("target");
    std::fs::create_dir(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    let link = env.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = explain(&link);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("symbolic link"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        0,
        "nothing written through the link"
    );
    assert_eq!(mode(&target), 0o755, "the link's target is left alone");
}

// ---------------------------------------------------------------------------------------
// 7a. Slot holders

/// `max_connections` clients that only send NOOP every second hold every slot; a new
/// client still gets its greeting, because under stress a session gets one command
/// outside a transaction before `421 4.7.0`.
#[test]
fn noop_clients_holding_every_slot_do_not_starve_a_new_client() {
    let mut env = TestEnv::new(EnvOptions {
        server_extra: "max_connections = 20".into(),
        ..EnvOptions::default()
    });
    env.start_serve();
    let port = env.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let holders: Vec<_> = (0..20)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = Smtp::connect(port);
                c.cmd("EHLO holder.test");
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    c.write_raw(b"NOOP\r\n");
                    match c.try_reply() {
                        Some(r) if r.starts_with("250") => {}
                        other => return other,
                    }
                    std::thread::sleep(Duration::from_millis(1000));
                }
                None
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut greeting = [0u8; 3];
    s.read_exact(&mut greeting).expect("a greeting within 20 s");
    assert_eq!(&greeting, b"220");
    let waited = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ends: Vec<Option<String>> = holders.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        ends.iter()
            .flatten()
            .any(|r| r.starts_with("421 4.7.0") && r.contains("junk_command_limit")),
        "{ends:?}"
    );
    eprintln!("new client greeted after {waited:?}");
}

// ---------------------------------------------------------------------------------------
// 7d. The policy directory watcher

/// Refused at RCPT right now (a fresh session, so the newest policy applies)?
fn rcpt_refused(port: u16, rcpt: &str) -> bool {
    let mut c = Smtp::connect(port);
    c.cmd("EHLO probe.test");
    let r = c.cmd("MAIL FROM:<app@example.com>");
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
    let _ = c.cmd("QUIT");
    r.starts_with("550")
}

/// A policy file rewritten in place in two steps (the first leaves out the deny list),
/// 500 and 800 ms apart: at no moment is the half-written list in force, and each
/// finished change is one reload, audited once.
#[test]
fn a_policy_file_written_in_two_steps_is_never_half_in_force() {
    let mut env = TestEnv::new(EnvOptions::default());
    write_policy(
        &env,
        "[recipients]\nallow = [\"*\"]\ndeny = [\"ceo@example.com\"]\n",
    );
    env.start_serve();
    assert!(rcpt_refused(env.port, "ceo@example.com"));
    let reloads = |env: &TestEnv| {
        env.audit_events()
            .iter()
            .filter(|e| e["event"] == "reloaded")
            .count()
    };
    let reloads_before = reloads(&env);
    // Each round starts at another phase of the watcher's one-second poll.
    let rounds = [500u64, 800, 800, 800];
    for (round, gap) in rounds.iter().enumerate() {
        std::thread::sleep(Duration::from_millis(300 * round as u64));
        let file = env.path().join("policies/00-recipients.toml");
        let gap = *gap;
        let writer = std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&file)
                .unwrap();
            f.write_all(b"[recipients]\nallow = [\"*\"]\n").unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(gap));
            f.write_all(
                format!("deny = [\"ceo@example.com\", \"cfo{round}@example.com\"]\n").as_bytes(),
            )
            .unwrap();
        });
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            assert!(
                rcpt_refused(env.port, "ceo@example.com"),
                "round {round}: the half-written list (no deny) was in force after {:?}\n{}",
                started.elapsed(),
                env.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        writer.join().unwrap();
        wait_until(
            "the finished change in force",
            || env.diagnostics(),
            || rcpt_refused(env.port, &format!("cfo{round}@example.com")).then_some(()),
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        reloads(&env) - reloads_before,
        rounds.len(),
        "one audited reload per change\n{}",
        env.diagnostics()
    );
}

/// With `max_connections_per_peer = 2`, a third session from 127.0.0.1 is told `421
/// 4.7.0` at once, while another address (127.0.0.2) still gets its greeting.
#[test]
fn one_address_cannot_take_more_than_its_share_of_slots() {
    let mut env = TestEnv::new(EnvOptions {
        server_extra: "max_connections = 10\nmax_connections_per_peer = 2".into(),
        ..EnvOptions::default()
    });
    env.start_serve();
    // start_serve's readiness probe (a connection from 127.0.0.1) holds a slot until the
    // server has seen it close, which a loaded machine may not have done yet: take the
    // two slots as soon as they are free, then the third connection must be refused.
    let greeted = || {
        let mut s = TcpStream::connect(("127.0.0.1", env.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut g = [0u8; 3];
        s.read_exact(&mut g).ok()?;
        (&g == b"220").then_some(s)
    };
    let _a = wait_until(
        "a first session from 127.0.0.1",
        || env.diagnostics(),
        greeted,
    );
    let _b = wait_until(
        "a second session from 127.0.0.1",
        || env.diagnostics(),
        greeted,
    );
    let mut third = TcpStream::connect(("127.0.0.1", env.port)).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reply = String::new();
    let _ = third.read_to_string(&mut reply);
    assert!(
        reply.starts_with("421 4.7.0 too many connections from 127.0.0.1"),
        "{reply:?}"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let other = rt
        .block_on(async {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.bind("127.0.0.2:0".parse().unwrap())?;
            s.connect(format!("127.0.0.1:{}", env.port).parse().unwrap())
                .await
        })
        .expect("connect from 127.0.0.2");
    let mut other = other.into_std().unwrap();
    other.set_nonblocking(false).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut greeting = [0u8; 3];
    other.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"220");
    // A slot given back is available to the address again.
    drop(_a);
    wait_until(
        "a session from 127.0.0.1 again",
        || env.diagnostics(),
        || {
            let mut s = TcpStream::connect(("127.0.0.1", env.port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            let mut g = [0u8; 3];
            s.read_exact(&mut g).ok()?;
            (&g == b"220").then_some(())
        },
    );
}

/// `sealgate check` names a postmaster the recipient policy refuses as an error: the
/// bounces meant for it would go nowhere.
#[test]
fn check_refuses_a_postmaster_the_policy_refuses() {
    let env = TestEnv::new(EnvOptions {
        server_extra: "postmaster = \"ceo@example.com\"".into(),
        ..EnvOptions::default()
    });
    write_policy(&env, RESTRICTED);
    let (ok, out, err) = run(&["check"], &env.config);
    assert!(!ok, "{out}{err}");
    assert!(
        out.contains("[server] postmaster <ceo@example.com> is refused by the recipient policy"),
        "{out}{err}"
    );
}
