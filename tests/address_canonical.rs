//! One canonical address (issue 9 §1), proved against the upstream that would have been
//! fooled: `sealgate serve` relays to a private Debian Postfix 3.7 configured as Debian
//! ships it (percent hack, bang paths and `recipient_delimiter = +` on), and Postfix's
//! mail log and Maildirs are the evidence of where mail went.
//!
//! The policy approves `approved.test` and denies `ceo@approved.test`; Postfix has
//! mailboxes for `ceo@approved.test`, `alice@approved.test` and `user@other.test` (the
//! unapproved domain). No spelling may put mail into ceo's or other.test's mailbox.

mod support;

use support::postfix::{Postfix, PostfixOptions};
use support::*;

const POLICY: &str = "[recipients]\nallow = [\"approved.test\"]\ndeny = [\"ceo@approved.test\"]\n";

fn setup(server_extra: &str) -> (TestEnv, Postfix) {
    let mut env = TestEnv::new(EnvOptions {
        server_extra: server_extra.into(),
        ..EnvOptions::default()
    });
    std::fs::write(env.path().join("policies/00-recipients.toml"), POLICY).unwrap();
    let pf = Postfix::start(PostfixOptions::for_env(&env));
    env.start_serve();
    (env, pf)
}

/// One transaction to `rcpt`; returns the RCPT reply, and the final reply when accepted.
fn try_rcpt(port: u16, from: &str, rcpt: &str, subject: &str) -> (String, Option<String>) {
    let mut c = Smtp::connect(port);
    assert!(c.cmd("EHLO app.test").starts_with("250"));
    let r = c.cmd(&format!("MAIL FROM:<{from}>"));
    assert!(r.starts_with("250"), "MAIL: {r}");
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
    let fin = r.starts_with("250").then(|| {
        let m = crlf(
            format!(
                "From: app@approved.test\nTo: someone@approved.test\nSubject: {subject}\n\
                 Message-ID: <{subject}@app.test>\n\nbody of {subject}\n"
            )
            .as_bytes(),
        );
        c.data(&m)
    });
    let _ = c.cmd("QUIT");
    (r, fin)
}

fn nothing_reached_denied_or_unapproved(pf: &Postfix) {
    assert!(
        pf.messages("ceo@approved.test").is_empty(),
        "a message reached the denied mailbox:\n{}",
        pf.log_text()
    );
    assert!(
        pf.messages("user@other.test").is_empty(),
        "a message reached the unapproved domain:\n{}",
        pf.log_text()
    );
    for line in pf.deliveries() {
        assert!(
            !line.contains("@other.test>") && !line.contains("to=<ceo@approved.test>"),
            "Postfix delivered to a denied or unapproved address: {line}"
        );
    }
}

#[test]
fn routing_spellings_and_subaddresses_never_reach_a_denied_mailbox_or_an_unapproved_domain() {
    let (env, pf) = setup("");
    let refused = [
        (
            "user%other.test@approved.test",
            "550 5.1.3",
            "routing character '%'",
        ),
        (
            "other.test!user@approved.test",
            "550 5.1.3",
            "routing character '!'",
        ),
        ("ceo(x)@approved.test", "550 5.1.3", "comments"),
        (
            "user@other.test@approved.test",
            "550 5.1.3",
            "more than one '@'",
        ),
        (
            "\"user@other.test\"@approved.test",
            "550 5.1.3",
            "routing character '@'",
        ),
        (
            "\"ceo%x\"@approved.test",
            "550 5.1.3",
            "routing character '%'",
        ),
        ("@relay.test:user@other.test", "550 5.1.3", "source routes"),
        (
            "ceo+x@approved.test",
            "550 5.7.1",
            "denied by \"ceo@approved.test\"",
        ),
        (
            "CEO+Board@Approved.Test.",
            "550 5.7.1",
            "denied by \"ceo@approved.test\"",
        ),
        (
            "\"ceo\"@approved.test",
            "550 5.7.1",
            "denied by \"ceo@approved.test\"",
        ),
        ("user@other.test", "550 5.7.1", "not approved"),
    ];
    for (n, (rcpt, code, why)) in refused.iter().enumerate() {
        let (r, fin) = try_rcpt(env.port, "app@approved.test", rcpt, &format!("refused-{n}"));
        assert!(
            r.starts_with(code),
            "<{rcpt}>: expected {code}, got {r:?} then {fin:?}"
        );
        assert!(r.contains(why), "<{rcpt}>: {r}");
    }
    // Each refusal is audited with the address as the client wrote it.
    let rejected = env.wait_for_event("rejected", |e| {
        e["stage"] == "rcpt" && e["address"] == "user%other.test@approved.test"
    });
    assert!(
        rejected["reply"].as_str().unwrap().starts_with("550 5.1.3"),
        "{rejected}"
    );
    // The sender is read the same way.
    let mut c = Smtp::connect(env.port);
    c.cmd("EHLO app.test");
    let r = c.cmd("MAIL FROM:<app%other.test@approved.test>");
    assert!(r.starts_with("550 5.1.7"), "{r}");
    // Approved spellings still go through, relayed in their canonical form.
    let accepted = [
        "alice+news@approved.test",
        "\"alice\"@approved.test",
        "Alice@APPROVED.test.",
    ];
    for (n, rcpt) in accepted.iter().enumerate() {
        let (r, fin) = try_rcpt(env.port, "app@approved.test", rcpt, &format!("ok-{n}"));
        assert!(r.starts_with("250"), "<{rcpt}>: {r}");
        let fin = fin.unwrap();
        assert!(fin.starts_with("250 2.0.0"), "<{rcpt}>: {fin}");
    }
    wait_until(
        "3 messages in alice's Maildir",
        || format!("{}\n--- postfix ---\n{}", env.diagnostics(), pf.log_text()),
        || (pf.messages("alice@approved.test").len() >= 3).then_some(()),
    );
    let log = pf.log_text();
    // Relayed canonical: the subaddress as written (Postfix's delimiter finds alice's
    // Maildir), the needless quotes gone, the domain lower case without its dot.
    for to in [
        "to=<alice+news@approved.test>",
        "to=<alice@approved.test>",
        "to=<Alice@approved.test>",
    ] {
        assert!(log.contains(to), "{to}:\n{log}");
    }
    assert!(!log.contains("orig_to="), "Postfix rewrote nothing:\n{log}");
    assert!(
        log.contains("TLS connection established from localhost[127.0.0.1]"),
        "{log}"
    );
    nothing_reached_denied_or_unapproved(&pf);
    assert!(
        !log.contains("to=<ceo"),
        "no delivery attempt to ceo at all:\n{log}"
    );
}

/// The control: the harness's Postfix really does reroute such spellings, so the test
/// above can fail. With `allow_routing_characters = true` the percent hack reaches
/// other.test when the policy approves other.test too; where the upstream may route it
/// is judged as well, so a denied or unapproved destination is still refused.
#[test]
fn with_routing_characters_allowed_postfix_reroutes_and_sealgate_judges_the_route() {
    let (env, pf) = setup("allow_routing_characters = true");
    std::fs::write(
        env.path().join("policies/00-recipients.toml"),
        "[recipients]\nallow = [\"approved.test\", \"other.test\"]\ndeny = [\"ceo@approved.test\"]\n",
    )
    .unwrap();
    // SIGHUP rather than the directory watcher: the file may have been written before
    // the watcher was in place (seen under load).
    let pid = env.serve.as_ref().expect("serve runs").pid();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    env.wait_for_event("reloaded", |_| true);
    let (r, fin) = try_rcpt(
        env.port,
        "app@approved.test",
        "user%other.test@approved.test",
        "percent",
    );
    assert!(r.starts_with("250"), "{r}");
    assert!(fin.unwrap().starts_with("250 2.0.0"));
    wait_until(
        "the percent hack delivered to other.test",
        || format!("{}\n--- postfix ---\n{}", env.diagnostics(), pf.log_text()),
        || (!pf.messages("user@other.test").is_empty()).then_some(()),
    );
    assert!(pf
        .log_text()
        .contains("to=<user@other.test>, orig_to=<user%other.test@approved.test>"));
    for (rcpt, why) in [
        (
            "ceo%approved.test@approved.test",
            "denied by \"ceo@approved.test\" (as the upstream may route it: <ceo@approved.test>)",
        ),
        (
            "approved.test!ceo+x@approved.test",
            "denied by \"ceo@approved.test\" (as the upstream may route it: <ceo+x@approved.test>)",
        ),
        (
            "\"bob@elsewhere.test\"@approved.test",
            "not approved (as the upstream may route it: <bob@elsewhere.test>)",
        ),
    ] {
        let (r, _) = try_rcpt(env.port, "app@approved.test", rcpt, "routed");
        assert!(
            r.starts_with("550 5.7.1") && r.contains(why),
            "<{rcpt}>: {r}"
        );
    }
    // Comments and a second '@' stay refused even then.
    let (r, _) = try_rcpt(env.port, "app@approved.test", "ceo(x)@approved.test", "c");
    assert!(r.starts_with("550 5.1.3"), "{r}");
    assert!(pf.messages("ceo@approved.test").is_empty());
}

/// `sealgate explain` (a real process) shows the canonical form it judged, the
/// subaddress base, and refuses a routing spelling before the lists.
#[test]
fn explain_shows_the_canonical_form_it_judged() {
    let env = TestEnv::new(EnvOptions::default());
    std::fs::write(env.path().join("policies/00-recipients.toml"), POLICY).unwrap();
    let msg = env.path().join("m.eml");
    std::fs::write(
        &msg,
        crlf(b"From: app@approved.test\nSubject: x\n\nhello\n"),
    )
    .unwrap();
    let out = std::process::Command::new(SEALGATE)
        .arg("explain")
        .arg("-c")
        .arg(&env.config)
        .args(["--from", "App@Approved.Test"])
        .args(["--to", "\"CEO+Board\"@Approved.Test."])
        .args(["--to", "user%other.test@approved.test"])
        .args(["--to", "alice@approved.test"])
        .arg(&msg)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}{}", String::from_utf8_lossy(&out.stderr)));
    let r = &v["explanation"]["recipients"];
    assert_eq!(r[0]["judged_as"], "ceo+board@approved.test", "{v:#}");
    assert_eq!(r[0]["subaddress_of"], "ceo@approved.test", "{v:#}");
    assert_eq!(r[0]["approval"]["outcome"], "denied", "{v:#}");
    assert!(r[1]["judged_as"].is_null(), "{v:#}");
    let refused = v["refused"].as_array().unwrap();
    assert!(
        refused
            .iter()
            .any(|x| x["rcpt"] == "user%other.test@approved.test"
                && x["stage"] == "rcpt"
                && x["reason"]
                    .as_str()
                    .unwrap()
                    .contains("routing character '%'")),
        "{v:#}"
    );
    assert_eq!(r[2]["approval"]["outcome"], "approved", "{v:#}");
    assert_eq!(v["explanation"]["from"], "app@approved.test", "{v:#}");
}
