//! The upstream half of the interop matrix (issue 8 §B): `sealgate serve` (DEFAULT-like
//! configuration plus DKIM, upstream AUTH) relays to real mail servers started by the
//! test — Postfix with SASL AUTH over STARTTLS and implicit TLS, with its defaults and
//! with `line_length_limit = 998` and no 8BITMIME; Exim with STARTTLS and AUTH, with its defaults and with its strictest settings
//! (`accept_8bitmime = false`, no DATA line over 998 octets), and chasquid on its
//! submission (STARTTLS) and submission-over-TLS ports (tests/support/mta.rs).
//!
//! Five messages go through each, sent by real Python smtplib clients
//! (tests/interop/clients): plain ASCII; a UTF-8 8-bit body, once with CRLF
//! (`send_message`) and once with LF line ends (`sendmail(msg.as_bytes())`); an attachment; a 6,026-octet HTML line that the client
//! sends unencoded. A cell passes when the message is in the upstream's mailbox, decodes
//! to what was sent and its DKIM signature verifies. Per upstream: its own log shows the
//! TLS session and the AUTH, and sealgate's queue is empty at the end. The rows go to
//! target/interop-matrix.md before the test asserts.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use support::interop::*;
use support::mta;
use support::postfix::{Postfix, PostfixOptions};
use support::*;

const CLIENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/clients");

/// (case, client script, column title).
const MESSAGES: [(&str, &str, &str); 5] = [
    ("plain", "python_send_message.py", "plain ASCII"),
    (
        "utf8",
        "python_send_message.py",
        "UTF-8 8-bit body (`send_message`)",
    ),
    (
        "utf8",
        "python_sendmail_bytes.py",
        "UTF-8 8-bit body, LF line ends (`sendmail(as_bytes())`)",
    ),
    ("attach", "python_send_message.py", "attachment"),
    (
        "html",
        "python_sendmail_str.py",
        "6,026-octet HTML line, unencoded",
    ),
];

#[derive(Clone, Copy)]
enum Variant {
    Postfix { strict: bool, implicit: bool },
    Exim { strict: bool },
    Chasquid { implicit: bool },
}

impl Variant {
    fn tls(self) -> Tls {
        match self {
            Variant::Chasquid { implicit: true } | Variant::Postfix { implicit: true, .. } => {
                Tls::Implicit
            }
            _ => Tls::Starttls,
        }
    }
}

const VARIANTS: [Variant; 7] = [
    Variant::Postfix {
        strict: false,
        implicit: false,
    },
    Variant::Postfix {
        strict: true,
        implicit: false,
    },
    Variant::Postfix {
        strict: false,
        implicit: true,
    },
    Variant::Exim { strict: false },
    Variant::Exim { strict: true },
    Variant::Chasquid { implicit: false },
    Variant::Chasquid { implicit: true },
];

/// The recipient of message `i`; it tells the delivered files apart.
fn rcpt(i: usize) -> String {
    format!("m{i}-{}@example.net", MESSAGES[i].0)
}

/// The Postfix user sealgate authenticates as (Cyrus sasldb, realm postfix.test).
const POSTFIX_USER: &str = "sealgate";

/// A running upstream: Exim or chasquid (tests/support/mta.rs) or Postfix
/// (tests/support/postfix.rs) with Cyrus SASL added.
enum Up {
    Mta(mta::Mta),
    Postfix(Postfix, String),
}

impl Up {
    fn delivered(&self, rcpt: &str) -> Vec<PathBuf> {
        match self {
            Up::Mta(m) => m.delivered(rcpt),
            Up::Postfix(p, _) => {
                let md = p.maildir(rcpt);
                let mut files: Vec<PathBuf> = ["new", "cur"]
                    .iter()
                    .filter_map(|d| std::fs::read_dir(md.join(d)).ok())
                    .flatten()
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .collect();
                files.sort();
                files
            }
        }
    }

    fn log_text(&self) -> String {
        match self {
            Up::Mta(m) => m.log_text(),
            Up::Postfix(p, _) => p.log_text(),
        }
    }

    fn settings(&self) -> String {
        match self {
            Up::Mta(m) => m.settings.clone(),
            Up::Postfix(_, s) => s.clone(),
        }
    }

    fn mail_root(&self) -> PathBuf {
        match self {
            Up::Mta(m) => m.mail.clone(),
            Up::Postfix(p, _) => p.mail.clone(),
        }
    }
}

/// Debian's Postfix with SASL AUTH (Cyrus sasldb, PLAIN and LOGIN after TLS only) for
/// [`POSTFIX_USER`]; `strict`: `line_length_limit = 998` and no 8BITMIME announced
/// (`smtpd_discard_ehlo_keywords`); `implicit`: `smtpd_tls_wrappermode = yes`.
fn start_postfix(env: &TestEnv, strict: bool, implicit: bool, mailboxes: &[String]) -> Up {
    let mut o = PostfixOptions::for_env(env);
    o.mailboxes = mailboxes.to_vec();
    o.mailboxes.push("app@example.com".into()); // DSNs, if any
    o.main_extra = vec![
        "smtpd_sasl_auth_enable = yes".into(),
        "smtpd_sasl_local_domain = postfix.test".into(),
        "smtpd_sasl_security_options = noanonymous".into(),
        "smtpd_tls_auth_only = yes".into(),
        "smtpd_relay_restrictions = permit_sasl_authenticated, reject".into(),
        "smtpd_recipient_restrictions = permit_sasl_authenticated, reject".into(),
    ];
    let mut settings = vec![];
    if strict {
        o.main_extra.push("line_length_limit = 998".into());
        o.main_extra
            .push("smtpd_discard_ehlo_keywords = 8bitmime".into());
        settings.push("`line_length_limit = 998`, no 8BITMIME");
    }
    if implicit {
        o.main_extra.push("smtpd_tls_wrappermode = yes".into());
        settings.push("implicit TLS (`smtpd_tls_wrappermode`)");
    } else {
        settings.push("STARTTLS");
    }
    let pf = Postfix::start(o);
    // smtpd reads $config_directory/sasl/smtpd.conf when it first starts SASL, i.e. at
    // the first connection: written now, before sealgate connects.
    let sasl = pf.config_dir.join("sasl");
    std::fs::create_dir_all(&sasl).unwrap();
    let db = pf.config_dir.join("sasldb2");
    std::fs::write(
        sasl.join("smtpd.conf"),
        format!(
            "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\nsasldb_path: {}\n",
            db.display()
        ),
    )
    .unwrap();
    let mut child = Command::new("saslpasswd2")
        .args(["-p", "-c", "-f"])
        .arg(&db)
        .args(["-u", "postfix.test", POSTFIX_USER])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("saslpasswd2 (Debian package sasl2-bin)");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(mta::PASSWORD.as_bytes())
            .unwrap();
    }
    assert!(child.wait().unwrap().success(), "saslpasswd2 failed");
    let ok = Command::new("chown")
        .arg("postfix")
        .arg(&db)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "chown postfix {}", db.display());
    Up::Postfix(pf, settings.join(", "))
}

/// One upstream's row: settings, a result per message, the log check, the queue check.
struct Row {
    upstream: String,
    settings: String,
    cells: Vec<Result<(), String>>,
    log: Result<(), String>,
    queue: Result<(), String>,
}

/// The delivered file for `rcpt`, or why there is none (a bounce sealgate audited).
fn delivered(env: &TestEnv, up: &Up, rcpt: &str) -> Result<PathBuf, String> {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        if let Some(f) = up.delivered(rcpt).into_iter().next() {
            return Ok(f);
        }
        let events = env.audit_events();
        let mine = |e: &serde_json::Value| {
            e["rcpts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|r| r.as_str() == Some(rcpt)))
        };
        if let Some(b) = events.iter().find(|e| e["event"] == "bounced" && mine(e)) {
            return Err(format!(
                "answered 250, then bounced: {}",
                b["reasons"]
                    .as_array()
                    .and_then(|r| r.first())
                    .and_then(|r| r.as_str())
                    .unwrap_or("?")
            ));
        }
        if Instant::now() > deadline {
            let seen: Vec<&str> = events
                .iter()
                .filter(|e| mine(e))
                .map(|e| e["event"].as_str().unwrap_or("?"))
                .collect();
            return Err(format!(
                "not in the mailbox within 45 s; audit events: {}; mailbox files: {:?}",
                seen.join(", "),
                walk(&up.mail_root())
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every file under `dir` (diagnostics).
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

/// The upstream's own log shows TLS and AUTH for sealgate's sessions.
fn log_shows_tls_and_auth(variant: Variant, up: &Up) -> Result<(), String> {
    let log = up.log_text();
    let (tls, auth) = match variant {
        Variant::Postfix { .. } => (
            log.contains("TLS connection established from"),
            log.contains(&format!("sasl_username={POSTFIX_USER}")),
        ),
        Variant::Exim { .. } => {
            // "<= FROM H=... P=esmtpsa X=TLS1.3:... A=plain:sealgate ..."
            let received: Vec<&str> = log.lines().filter(|l| l.contains(" <= ")).collect();
            (
                !received.is_empty() && received.iter().all(|l| l.contains(" X=TLS")),
                !received.is_empty()
                    && received.iter().all(|l| {
                        l.contains(&format!("A=plain:{}", mta::EXIM_USER))
                            || l.contains(&format!("A=login:{}", mta::EXIM_USER))
                    }),
            )
        }
        Variant::Chasquid { implicit } => (
            if implicit {
                // chasquid logs the mode of every connection it accepts.
                log.contains("Connected, mode: submission+TLS")
            } else {
                log.contains("jump to TLS was successful")
            },
            log.contains(&format!("auth succeeded for {}", mta::CHASQUID_USER)),
        ),
    };
    match (tls, auth) {
        (true, true) => Ok(()),
        _ => Err(format!(
            "log lacks {}{}",
            if tls { "" } else { "the TLS session " },
            if auth { "" } else { "the AUTH" }
        )),
    }
}

fn run_variant(variant: Variant) -> Row {
    let mut env = TestEnv::new(EnvOptions {
        tls: variant.tls(),
        upstream_auth: Some((
            match variant {
                Variant::Postfix { .. } => POSTFIX_USER,
                Variant::Exim { .. } => mta::EXIM_USER,
                Variant::Chasquid { .. } => mta::CHASQUID_USER,
            }
            .to_string(),
            mta::PASSWORD.to_string(),
        )),
        ..EnvOptions::default()
    });
    let keys = default_like_with_dkim(&env);
    let locals: Vec<String> = (0..MESSAGES.len()).map(rcpt).collect();
    let up = match variant {
        Variant::Postfix { strict, implicit } => start_postfix(&env, strict, implicit, &locals),
        Variant::Exim { strict } => Up::Mta(mta::start_exim(&env, strict)),
        Variant::Chasquid { implicit } => {
            let refs: Vec<&str> = locals.iter().map(String::as_str).collect();
            Up::Mta(mta::start_chasquid(&env, implicit, &refs))
        }
    };
    env.start_serve();

    let logs = env.path().join("client-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut accepted = Vec::new();
    for (i, (case, script, _)) in MESSAGES.iter().enumerate() {
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .args(["127.0.0.1", &env.port.to_string(), "app@example.com"])
            .arg(rcpt(i))
            .arg(case)
            .current_dir(CLIENTS);
        let run = run_with_deadline(
            cmd,
            &logs.join(format!("{i}-{case}.log")),
            Duration::from_secs(60),
        );
        accepted.push(if run.ok() {
            Ok(())
        } else {
            Err(format!("refused: {}", run.reason()))
        });
    }
    let cells: Vec<Result<(), String>> = MESSAGES
        .iter()
        .zip(accepted)
        .enumerate()
        .map(|(i, ((case, _, _), sent))| {
            sent?;
            let file = delivered(&env, &up, &rcpt(i))?;
            compare(case, &decode(&file)?, true)?;
            dkim_verifies(&keys, &file)
        })
        .collect();
    let log = log_shows_tls_and_auth(variant, &up);
    // Everything relayed or bounced (a DSN is relayed too): the spool empties.
    let deadline = Instant::now() + Duration::from_secs(30);
    let queue = loop {
        let list = env.queue_list();
        if list.trim().is_empty() || list.lines().any(|l| l.trim() == "0 entries queued") {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err(format!(
                "queue not empty: {}",
                list.lines().next().unwrap_or("")
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let row = Row {
        upstream: upstream_name(variant),
        settings: up.settings(),
        cells,
        log,
        queue,
    };
    if row.cells.iter().any(|c| c.is_err()) || row.log.is_err() || row.queue.is_err() {
        eprintln!(
            "--- {} ({}) ---\n{}\n--- upstream log ---\n{}",
            row.upstream,
            row.settings,
            env.diagnostics(),
            up.log_text()
                .lines()
                .filter(|l| [" => ", " == ", " ** ", "error", "rror:", "Tainted"]
                    .iter()
                    .any(|m| l.contains(m)))
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    row
}

/// The row of a variant whose harness panicked (e.g. the MTA did not start).
fn broken_row(variant: Variant, panic: Box<dyn std::any::Any + Send>) -> Row {
    let msg = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    let first = msg.lines().take(3).collect::<Vec<_>>().join(" ");
    let err = || Err(format!("harness failed: {first}"));
    Row {
        upstream: upstream_name(variant),
        settings: String::new(),
        cells: MESSAGES.iter().map(|_| err()).collect(),
        log: err(),
        queue: err(),
    }
}

fn upstream_name(variant: Variant) -> String {
    match variant {
        Variant::Postfix { .. } => "Postfix 3.7 (SASL AUTH)".into(),
        Variant::Exim { .. } => "Exim 4.96 (STARTTLS, AUTH PLAIN)".into(),
        Variant::Chasquid { implicit: false } => "chasquid 1.11 submission (STARTTLS, AUTH)".into(),
        Variant::Chasquid { implicit: true } => "chasquid 1.11 submission over TLS (AUTH)".into(),
    }
}

#[test]
fn real_upstreams_receive_what_sealgate_relays_with_tls_auth_and_dkim() {
    let missing = mta::missing();
    assert!(
        missing.is_empty(),
        "upstream MTAs are missing (run .ci/run):\n{}",
        missing.join("\n")
    );
    let started = Instant::now();
    let rows: Vec<Row> = std::thread::scope(|s| {
        let handles: Vec<_> = VARIANTS
            .iter()
            .map(|&v| s.spawn(move || run_variant(v)))
            .collect();
        handles
            .into_iter()
            .zip(VARIANTS)
            .map(|(h, v)| h.join().unwrap_or_else(|e| broken_row(v, e)))
            .collect()
    });
    let mut md = String::from(
        "### Upstreams\n\n`sealgate serve` (default settings, DKIM, upstream AUTH) relays five \
         messages from Python smtplib to each upstream, started by the test on loopback; a cell \
         passes when the message is in the upstream's mailbox, decodes to what was sent and \
         DKIM verifies. Written by `tests/interop_upstreams.rs`.\n\n| upstream | settings |",
    );
    for (_, _, title) in MESSAGES {
        md.push_str(&format!(" {title} |"));
    }
    md.push_str(" TLS + AUTH in its log | sealgate queue empty |\n|---|---|");
    md.push_str(&"---|".repeat(MESSAGES.len() + 2));
    md.push('\n');
    let mut failures = Vec::new();
    for r in &rows {
        md.push_str(&format!("| {} | {} |", r.upstream, r.settings));
        for (c, (case, _, _)) in r.cells.iter().zip(MESSAGES) {
            md.push_str(&format!(" {} |", cell(c)));
            if let Err(e) = c {
                failures.push(format!("{} ({}) / {case}: {e}", r.upstream, r.settings));
            }
        }
        md.push_str(&format!(" {} | {} |\n", cell(&r.log), cell(&r.queue)));
        for (what, res) in [("log", &r.log), ("queue", &r.queue)] {
            if let Err(e) = res {
                failures.push(format!("{} ({}) / {what}: {e}", r.upstream, r.settings));
            }
        }
    }
    let path = write_matrix_part("20-upstreams", &md);
    eprintln!(
        "{md}\n(written to {} in {:.0?})",
        path.display(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} upstream checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
