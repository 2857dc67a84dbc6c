//! A reload takes effect on open upstream connections (issue 10 §2), against a real
//! Debian Postfix 3.7 (tests/support/postfix.rs): a connection pooled before SIGHUP is
//! closed, and no message leaves under the TLS trust or minimum version that the reload
//! replaced once the reload is acknowledged (`reloaded` in the audit log). Postfix's
//! mail log and Maildir are the evidence of what was delivered.

mod support;

use std::process::Command;
use std::time::Duration;

use support::postfix::{Postfix, PostfixOptions};
use support::*;

const POLICY: &str = "[recipients]\nallow = [\"approved.test\"]\n";
const ALICE: &str = "alice@approved.test";

fn setup(postfix_extra: &[&str]) -> (TestEnv, Postfix) {
    let mut env = TestEnv::new(EnvOptions {
        // One worker: its pooled connection is the one the reload must close.
        upstream_extra: "connections = 1".into(),
        ..EnvOptions::default()
    });
    std::fs::write(env.path().join("policies/00-recipients.toml"), POLICY).unwrap();
    let mut o = PostfixOptions::for_env(&env);
    o.main_extra = postfix_extra.iter().map(|s| s.to_string()).collect();
    let pf = Postfix::start(o);
    env.start_serve();
    (env, pf)
}

fn diag(env: &TestEnv, pf: &Postfix) -> String {
    format!("{}\n--- postfix ---\n{}", env.diagnostics(), pf.log_text())
}

fn send_to_alice(env: &TestEnv, subject: &str) -> String {
    let m = crlf(
        format!(
            "From: app@approved.test\nTo: {ALICE}\nSubject: {subject}\n\
             Message-ID: <{subject}@app.test>\n\nbody\n"
        )
        .as_bytes(),
    );
    let r = send(env.port, "app@approved.test", &[ALICE], &m);
    queue_id(&r)
}

/// Delivers one message so that the worker keeps its connection open, changes the
/// config with `edit`, sends SIGHUP and waits for the acknowledgement; then sends three
/// more and shows that none reached Postfix and all three stay queued.
fn reload_closes_the_pooled_connection(env: &TestEnv, pf: &Postfix, edit: impl Fn(&str) -> String) {
    send_to_alice(env, "before-reload");
    wait_until(
        "the first message in alice's Maildir",
        || diag(env, pf),
        || (pf.messages(ALICE).len() == 1).then_some(()),
    );
    // Pooled: the connection that carried it stays open (the earlier disconnects are
    // the harness's port probes).
    let disconnects = || pf.log_text().matches("disconnect from localhost").count();
    let before = disconnects();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        disconnects(),
        before,
        "sealgate closed its connection before the reload:\n{}",
        pf.log_text()
    );
    let text = std::fs::read_to_string(&env.config).unwrap();
    let changed = edit(&text);
    assert_ne!(text, changed, "the edit changed nothing");
    std::fs::write(&env.config, changed).unwrap();
    let pid = env.serve.as_ref().unwrap().pid();
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    env.wait_for_event("reloaded", |_| true);
    // The pooled connection is closed at the reload, not 30 s later when idle.
    wait_until_within(
        Duration::from_secs(5),
        "Postfix to see the pooled connection closed",
        || diag(env, pf),
        || (disconnects() > before).then_some(()),
    );
    let ids: Vec<String> = (1..=3)
        .map(|n| send_to_alice(env, &format!("after-reload-{n}")))
        .collect();
    for id in &ids {
        let copy = format!("{id}-1");
        let e = env.wait_for_event("deferred", |e| e["queue_id"] == copy.as_str());
        assert!(
            e["reason"]
                .as_str()
                .unwrap_or("")
                .to_lowercase()
                .contains("tls"),
            "deferred for a TLS reason: {e}"
        );
    }
    // Let the retries (every 1-2 s) run a while: they fail too.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        pf.messages(ALICE).len(),
        1,
        "a message left under the old TLS settings:\n{}",
        diag(env, pf)
    );
    assert_eq!(
        pf.deliveries().len(),
        1,
        "Postfix delivered only the message from before the reload:\n{}",
        pf.log_text()
    );
    let list = env.queue_list();
    for id in &ids {
        assert!(list.contains(id.as_str()), "{id} still queued:\n{list}");
    }
    assert!(env.audit_events().iter().all(|e| e["event"] != "relayed"
        || e["queue_id"]
            .as_str()
            .is_some_and(|q| !ids.iter().any(|id| q.starts_with(id.as_str())))));
}

#[test]
fn switching_ca_file_closes_pooled_connections_and_nothing_leaves_under_the_old_trust() {
    let (env, pf) = setup(&[]);
    let rogue = sealgate::ops::pki::ca("a CA that did not sign Postfix").unwrap();
    sealgate::ops::pki::write_cert(&env.path().join("certs/other-ca.pem"), &rogue.cert).unwrap();
    reload_closes_the_pooled_connection(&env, &pf, |t| {
        t.replace(
            "ca_file = \"certs/ca.pem\"",
            "ca_file = \"certs/other-ca.pem\"",
        )
    });
}

#[test]
fn raising_min_tls_version_closes_a_tls12_connection_and_nothing_leaves_over_tls12() {
    let (env, pf) = setup(&["smtpd_tls_protocols = <=TLSv1.2"]);
    reload_closes_the_pooled_connection(&env, &pf, |t| {
        t.replace(
            "ca_file = \"certs/ca.pem\"",
            "ca_file = \"certs/ca.pem\"\nmin_tls_version = \"1.3\"",
        )
    });
    let log = pf.log_text();
    assert!(
        log.contains("TLS connection established from localhost[127.0.0.1]: TLSv1.2"),
        "the first message went over TLS 1.2:\n{log}"
    );
    assert!(!log.contains(": TLSv1.3 with"), "{log}");
}
