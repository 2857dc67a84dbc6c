//! The sysadmin's tools as a user runs them: `check`, `explain`, and live policy reload
//! of a running `serve` (SIGHUP and directory change), all through the real binary.
//! The setup comes from `sealgate demo --once`, so the demo is exercised too.

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod support;

use support::demo::{demo_dir, serve_demo, DemoServer};
use support::{Smtp, SEALGATE as BIN};

fn run(args: &[&str], cwd: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_reports_problems_with_file_line_and_exit_codes() {
    let (_tmp, dir) = demo_dir();
    let ok = run(&["check", "-c", "sealgate.toml"], &dir);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(text(&ok).contains("OK"));

    // A policy mistake: exit 1, file:line:col naming the item.
    let rules = dir.join("policies/50-rules.toml");
    let original = std::fs::read_to_string(&rules).unwrap();
    std::fs::write(
        &rules,
        format!("{original}\n[[rule]]\nname = \"typo\"\nactions = [\"encrypt-everything\"]\n"),
    )
    .unwrap();
    let bad = run(&["check", "-c", "sealgate.toml"], &dir);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    let t = text(&bad);
    let line = original.lines().count() + 4;
    assert!(
        t.contains(&format!("policies/50-rules.toml:{line}:")),
        "{t}"
    );
    assert!(t.contains("encrypt-everything"), "{t}");
    std::fs::write(&rules, &original).unwrap();

    // A key readable by others: exit 1, says how to fix it.
    let key = dir.join("certs/dkim/example.com.s2026.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loose = run(&["check", "-c", "sealgate.toml"], &dir);
    assert_eq!(loose.status.code(), Some(1), "{}", text(&loose));
    assert!(text(&loose).contains("chmod 600"), "{}", text(&loose));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // An unknown configuration key: exit 2 with the position.
    let cfg = dir.join("sealgate.toml");
    let c = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, c.replace("[spool]\n", "[spool]\nfsync = false\n")).unwrap();
    let unknown = run(&["check", "-c", "sealgate.toml"], &dir);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    assert!(
        text(&unknown).contains("sealgate.toml:"),
        "{}",
        text(&unknown)
    );
    assert!(text(&unknown).contains("fsync"), "{}", text(&unknown));
}

#[test]
fn explain_shows_rules_evidence_and_writes_copies() {
    let (_tmp, dir) = demo_dir();
    let msg = dir.join("m.eml");
    std::fs::write(&msg, "From: payroll@example.com\nTo: alice@bank.example\nSubject: pay\n\nRefund to 4111 1111 1111 1111 please\n").unwrap();
    let out = run(
        &[
            "explain",
            "-c",
            "sealgate.toml",
            "--from",
            "payroll@example.com",
            "--to",
            "alice@bank.example",
            "orders@partner.example",
            "ceo@example.com",
            "--write",
            "out",
            "--",
            "m.eml",
        ],
        &dir,
    );
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("matched rule \"payroll to the bank is signed and encrypted\""),
        "{t}"
    );
    assert!(t.contains("4111 **** **** 1111"), "{t}");
    assert!(
        !t.contains("4111 1111 1111 1111"),
        "detector hits must be redacted: {t}"
    );
    assert!(t.contains("refused at RCPT"), "{t}");
    assert!(t.contains("alice@bank.example.pem"), "{t}");
    // Written copies are as private as the spool (a zip's password message lands beside it).
    let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("out"), 0o700);
    assert_eq!(mode("out/copy-1.eml"), 0o600);
    let copy = std::fs::read_to_string(dir.join("out/copy-1.eml")).unwrap();
    assert!(
        copy.contains("application/pkcs7-mime"),
        "copy 1 is encrypted"
    );
    assert!(copy.contains("DKIM-Signature:"), "copy 1 is DKIM-signed");

    let json = run(
        &[
            "explain",
            "-c",
            "sealgate.toml",
            "--json",
            "--from",
            "payroll@example.com",
            "--to",
            "alice@bank.example",
            "--",
            "m.eml",
        ],
        &dir,
    );
    assert!(json.status.success(), "{}", text(&json));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["accepted"], true);
    assert_eq!(v["copies"][0]["actions"]["encrypt"], true);
    assert_eq!(v["copies"][0]["actions"]["sign"], true);
    assert!(v["explanation"]["recipients"][0].is_object(), "{v}");
    assert!(
        v["copies"][0]["certificates"][0]["sha256"].is_string(),
        "{v}"
    );
}

fn serve(dir: &Path) -> DemoServer {
    serve_demo(dir, "", "")
}

fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).unwrap();
    out
}

/// One SMTP transaction; returns the RCPT reply and the final reply (or the RCPT reply twice).
fn send(port: u16, from: &str, rcpt: &str) -> (String, String) {
    let mut c = Smtp::connect(port);
    c.cmd("EHLO t");
    c.cmd(&format!("MAIL FROM:<{from}>"));
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
    if !r.starts_with("250") {
        return (r.clone(), r);
    }
    let fin = c
        .data(format!("From: {from}\r\nTo: {rcpt}\r\nSubject: reload\r\n\r\nhello\r\n").as_bytes());
    c.cmd("QUIT");
    (r, fin)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn audit_has(dir: &Path, event: &str) -> usize {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("\"event\":\"{event}\"")))
        .count()
}

#[test]
fn policy_reload_by_sighup_and_by_directory_change_keeps_sessions_and_refuses_broken_sets() {
    let (_tmp, dir) = demo_dir();
    let srv = serve(&dir);
    let (r, fin) = send(srv.port, "billing@example.com", "accounts@example.com");
    assert!(
        r.starts_with("250") && fin.starts_with("250 2.0.0 queued as"),
        "{r} {fin}"
    );

    // Clients keep sending while the policy changes several times: no session is dropped.
    let port = srv.port;
    let load = std::thread::spawn(move || {
        let mut n = 0;
        let until = Instant::now() + Duration::from_secs(6);
        while Instant::now() < until {
            let (r, fin) = send(port, "billing@example.com", "ops@example.com");
            assert!(r.starts_with("250"), "{r}");
            assert!(fin.starts_with("250 2.0.0 queued as"), "{fin}");
            n += 1;
        }
        n
    });

    // 1. Directory change, no signal: accounts@ becomes denied.
    let recipients = dir.join("policies/00-recipients.toml");
    let original = std::fs::read_to_string(&recipients).unwrap();
    std::fs::write(
        &recipients,
        original.replace("deny = [", "deny = [\n    \"accounts@example.com\","),
    )
    .unwrap();
    let reloaded_before = audit_has(&dir, "reloaded");
    wait_until("reload after directory change", || {
        audit_has(&dir, "reloaded") > reloaded_before
    });
    let (r, _) = send(srv.port, "billing@example.com", "accounts@example.com");
    assert!(
        r.starts_with("550 5.7.1 <accounts@example.com>: recipient denied"),
        "{r}"
    );

    // 2. A broken set: the running one stays, and the failure is logged and audited.
    let failed_before = audit_has(&dir, "reload-failed");
    std::fs::write(
        dir.join("policies/60-broken.toml"),
        "[[rule]]\nname = \"x\"\nsubject = [\"(unclosed\"]\nactions = [\"reject\"]\n",
    )
    .unwrap();
    wait_until("reload-failed", || {
        audit_has(&dir, "reload-failed") > failed_before
    });
    let log = std::fs::read_to_string(&srv.stderr).unwrap();
    assert!(
        log.contains("policies/60-broken.toml:3:"),
        "the log names file:line: {log}"
    );
    let (r, _) = send(srv.port, "billing@example.com", "accounts@example.com");
    assert!(r.starts_with("550"), "old set still in force: {r}");
    std::fs::remove_file(dir.join("policies/60-broken.toml")).unwrap();

    // 3. SIGHUP after restoring the original: accounts@ is approved again.
    std::fs::write(&recipients, &original).unwrap();
    let before = audit_has(&dir, "reloaded");
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(srv.child.id() as i32, libc::SIGHUP) };
    wait_until("reload after SIGHUP", || {
        audit_has(&dir, "reloaded") > before
    });
    wait_until("accounts@ approved again", || {
        send(srv.port, "billing@example.com", "accounts@example.com")
            .0
            .starts_with("250")
    });

    let sent = load.join().unwrap();
    assert!(sent > 3, "load thread sent {sent}");
    let m = scrape(srv.metrics);
    let accepted: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("sealgate_messages_accepted_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(accepted > sent as u64, "metrics: {m}");
    assert!(m.contains("sealgate_recipients_rejected_total "), "{m}");
}

#[test]
fn sighup_picks_up_a_rotated_dkim_key() {
    let (_tmp, dir) = demo_dir();
    let srv = serve(&dir);
    let (_, fin) = send(srv.port, "billing@example.com", "accounts@example.com");
    assert!(fin.starts_with("250"), "{fin}");
    let keygen = run(
        &[
            "dkim-keygen",
            "--domain",
            "example.com",
            "--selector",
            "s2027",
            "--algorithm",
            "ed25519",
            "--out",
            "certs/dkim/example.com.s2027.key",
        ],
        &dir,
    );
    assert!(keygen.status.success(), "{}", text(&keygen));
    assert!(
        String::from_utf8_lossy(&keygen.stdout).contains("s2027._domainkey.example.com"),
        "{}",
        text(&keygen)
    );
    let cfg = dir.join("sealgate.toml");
    let c = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        c.replace("selector = \"s2026\"", "selector = \"s2027\"")
            .replace("example.com.s2026.key", "example.com.s2027.key"),
    )
    .unwrap();
    let before = audit_has(&dir, "reloaded");
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(srv.child.id() as i32, libc::SIGHUP) };
    wait_until("reload", || audit_has(&dir, "reloaded") > before);
    let (_, fin) = send(srv.port, "billing@example.com", "accounts@example.com");
    let id = fin.trim().rsplit(' ').next().unwrap().to_string();
    let spooled = std::fs::read_to_string(dir.join(format!("spool/queue/{id}-1.msg"))).unwrap();
    assert!(
        spooled.contains("s=s2027"),
        "new key signs after SIGHUP: {spooled}"
    );
    assert!(spooled.contains("a=ed25519-sha256"), "{spooled}");
    assert!(!spooled.contains("s=s2026"), "{spooled}");
}

#[test]
fn queue_list_show_retry_delete() {
    let (_tmp, dir) = demo_dir();
    let srv = serve(&dir);
    let (_, fin) = send(srv.port, "billing@example.com", "accounts@example.com");
    // The id the client was told; its one copy is stored as `<told>-1`.
    let told = fin.trim().rsplit(' ').next().unwrap().to_string();
    let id = format!("{told}-1");
    drop(srv);
    let list = run(&["queue", "list", "-c", "sealgate.toml"], &dir);
    assert!(
        list.status.success() && text(&list).contains(&id),
        "{}",
        text(&list)
    );
    assert!(
        text(&list).contains("accounts@example.com"),
        "{}",
        text(&list)
    );
    let show = run(&["queue", "show", &told, "-c", "sealgate.toml"], &dir);
    assert!(show.status.success(), "{}", text(&show));
    assert!(
        text(&show).contains(&format!("id:        {id}")),
        "{}",
        text(&show)
    );
    assert!(
        text(&show).contains("Subject: reload"),
        "headers shown: {}",
        text(&show)
    );
    assert!(
        !text(&show).contains("hello"),
        "the body is not shown: {}",
        text(&show)
    );
    let retry = run(&["queue", "retry", &id, "-c", "sealgate.toml"], &dir);
    assert!(
        retry.status.success() && text(&retry).contains("no running server"),
        "{}",
        text(&retry)
    );
    let del = run(&["queue", "delete", &told, "-c", "sealgate.toml"], &dir);
    assert!(del.status.success(), "{}", text(&del));
    assert!(
        text(&del).contains(&format!("{id}: deleted")),
        "{}",
        text(&del)
    );
    assert_eq!(audit_has(&dir, "deleted"), 1, "the deletion is audited");
    let list = run(&["queue", "list", "-c", "sealgate.toml"], &dir);
    assert!(!text(&list).contains(&id), "{}", text(&list));
    let missing = run(&["queue", "show", &id, "-c", "sealgate.toml"], &dir);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
}

#[test]
fn operator_tools_survive_common_mistakes() {
    let (_tmp, dir) = demo_dir();
    std::fs::write(
        dir.join("m.eml"),
        "From: payroll@example.com\nTo: alice@bank.example\nSubject: pay\n\nhello\n",
    )
    .unwrap();

    // The documented form, message file after the --to addresses, works.
    let out = run(
        &[
            "explain",
            "-c",
            "sealgate.toml",
            "--from",
            "payroll@example.com",
            "--to",
            "alice@bank.example",
            "m.eml",
        ],
        &dir,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("recipient <alice@bank.example>"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("recipient <m.eml>"), "{}", text(&out));

    // An unknown --client is named, not silently judged as nobody.
    let out = run(
        &[
            "explain",
            "-c",
            "sealgate.toml",
            "--client",
            "biling",
            "--from",
            "payroll@example.com",
            "--to",
            "alice@bank.example",
            "m.eml",
        ],
        &dir,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--client biling is not a [[client]]"),
        "{}",
        text(&out)
    );

    // A stale pid file (server died) must not make `queue retry` signal whatever
    // process has that pid now: SIGUSR1 would kill it.
    let mut victim = Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::create_dir_all(dir.join("spool")).unwrap();
    std::fs::write(dir.join("spool/sealgate.pid"), format!("{}\n", victim.id())).unwrap();
    let retry = run(&["queue", "retry", "-c", "sealgate.toml"], &dir);
    assert!(retry.status.success(), "{}", text(&retry));
    assert!(
        text(&retry).contains("no running server"),
        "{}",
        text(&retry)
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        victim.try_wait().unwrap().is_none(),
        "queue retry killed an unrelated process"
    );
    let _ = victim.kill();
    let _ = victim.wait();

    // A directory where the password file should be: an error, without chmod advice.
    let cfg = dir.join("sealgate.toml");
    let original = std::fs::read_to_string(&cfg).unwrap();
    std::fs::create_dir(dir.join("pwdir")).unwrap();
    std::fs::set_permissions(dir.join("pwdir"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(
        &cfg,
        original.replace(
            "[upstream]\n",
            "[upstream]\nusername = \"u\"\npassword_file = \"pwdir\"\n",
        ),
    )
    .unwrap();
    let check = run(&["check", "-c", "sealgate.toml"], &dir);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(text(&check).contains("regular file"), "{}", text(&check));
    // serve says it once, not three times.
    let serve = run(&["serve", "-c", "sealgate.toml"], &dir);
    assert_eq!(serve.status.code(), Some(2), "{}", text(&serve));
    assert_eq!(
        text(&serve).matches("regular file").count(),
        1,
        "{}",
        text(&serve)
    );
    std::fs::write(&cfg, &original).unwrap();

    // A policy error that makes the set's warnings appear too: warnings are not problems.
    let rcpts = dir.join("policies/00-recipients.toml");
    std::fs::write(&rcpts, "[recipients]\nallow = []\n").unwrap();
    let check = run(&["check", "-c", "sealgate.toml"], &dir);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(text(&check).contains(": 1 problem(s)"), "{}", text(&check));

    // A mistyped spool dir: the queue tools say so instead of creating an empty queue.
    std::fs::write(
        &cfg,
        original.replace("dir = \"spool\"", "dir = \"spoool\""),
    )
    .unwrap();
    let list = run(&["queue", "list", "-c", "sealgate.toml"], &dir);
    assert_eq!(list.status.code(), Some(2), "{}", text(&list));
    assert!(text(&list).contains("no spool here"), "{}", text(&list));
    assert!(!dir.join("spoool").exists(), "queue list created a spool");
    std::fs::write(&cfg, &original).unwrap();

    // An empty password is not hashed.
    let empty = Command::new(BIN)
        .arg("hash-password")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(empty.status.code(), Some(2), "{}", text(&empty));
    assert!(text(&empty).contains("empty password"), "{}", text(&empty));
}
