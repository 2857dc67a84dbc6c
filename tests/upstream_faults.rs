//! Upstreams as they really misbehave, each a real process on loopback: a 421 greeting,
//! a 452 for one of three recipients, a 552 after the data, a connection dropped in the
//! middle of DATA, STARTTLS refused, an expired certificate, and an upstream killed and
//! restarted while 500 messages flow through.
//!
//! What a user must be able to rely on: nothing acknowledged with `250` is lost;
//! temporary failures are retried, for the affected recipients only; a permanent failure
//! brings exactly one DSN; nothing but EHLO/STARTTLS/QUIT ever goes out in clear;
//! duplicates happen only where README says they can (an upstream that took the data
//! but died before its `250` reached us).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::*;

fn sample(subject: &str) -> Vec<u8> {
    message(subject, "A line of text.\nAnd another one.")
}

fn is_for(id: &str) -> impl Fn(&serde_json::Value) -> bool + '_ {
    move |e| e["queue_id"].as_str().is_some_and(|q| q.starts_with(id))
}

/// A `421` greeting is the upstream saying "not now": the message is deferred, and the
/// next attempt after the upstream is back delivers it, once.
#[test]
fn a_421_greeting_defers_and_the_next_connection_delivers() {
    let mut env = TestEnv::new(EnvOptions::default());
    let up = env.start_scripted("greet421", 0.0);
    env.start_serve();
    let msg = sample("after a 421 greeting");
    let id = queue_id(&send(
        env.port,
        "app@example.com",
        &["user@example.net"],
        &msg,
    ));
    let deferred = env.wait_for_event("deferred", is_for(&id));
    assert!(
        deferred["reason"].as_str().unwrap_or("").contains("421"),
        "{deferred}"
    );
    assert!(received(&up.dir).is_empty());
    std::fs::write(up.dir.join("greet-ok.flag"), b"").expect("flag");
    env.wait_for_event("relayed", is_for(&id));
    let got = env.wait_for_messages(&up, 1);
    assert_eq!(got.len(), 1, "delivered exactly once");
    assert!(got[0].text().contains("after a 421 greeting"));
    assert!(env.events_for("bounced", &id).is_empty());
    env.wait_for_empty_queue();
}

/// A `452` for the second of three recipients: the other two get the message at once,
/// the second one on a later attempt, nobody twice, and nobody gets a DSN.
#[test]
fn a_452_for_one_of_three_recipients_is_retried_for_that_recipient_only() {
    let mut env = TestEnv::new(EnvOptions::default());
    let up = env.start_scripted("rcpt452", 0.0);
    env.start_serve();
    let msg = sample("three recipients, one 452");
    let id = queue_id(&send(
        env.port,
        "app@example.com",
        &[
            "first@example.net",
            "second@example.net",
            "third@example.net",
        ],
        &msg,
    ));
    let got = env.wait_for_messages(&up, 2);
    env.wait_for_empty_queue();
    let got = if got.len() < 2 {
        env.wait_for_messages(&up, 2)
    } else {
        got
    };
    let mut per_rcpt: HashMap<String, usize> = HashMap::new();
    for m in &got {
        assert!(m.text().contains("three recipients, one 452"));
        for r in &m.rcpts {
            *per_rcpt.entry(r.clone()).or_default() += 1;
        }
    }
    for r in [
        "first@example.net",
        "second@example.net",
        "third@example.net",
    ] {
        assert_eq!(per_rcpt.get(r), Some(&1), "{r} in {per_rcpt:?}");
    }
    assert_eq!(got.len(), 2, "one transaction for two, one for the retried");
    let later = got
        .iter()
        .find(|m| m.rcpts == ["second@example.net"])
        .expect("the 452'd recipient alone in a later transaction");
    assert_eq!(later.from, "app@example.com");
    assert!(
        env.events_for("bounced", &id).is_empty(),
        "a 452 never bounces"
    );
    let deferred = env.events_for("deferred", &id);
    assert!(
        deferred.iter().any(|e| e.to_string().contains("452 4.5.3")),
        "{deferred:?}"
    );
}

/// A `552` after the data is permanent: exactly one DSN goes to the sender, naming the
/// status, and the message is not tried again.
#[test]
fn a_552_after_data_bounces_exactly_once() {
    let mut env = TestEnv::new(EnvOptions::default());
    let up = env.start_scripted("data552", 0.0);
    env.start_serve();
    let id = queue_id(&send(
        env.port,
        "app@example.com",
        &["user@example.net"],
        &sample("refused after data"),
    ));
    env.wait_for_event("bounced", is_for(&id));
    let got = env.wait_for_messages(&up, 1);
    env.wait_for_empty_queue();
    // Time for a wrong retry (retry_base is 1 s) or a second DSN to show up.
    std::thread::sleep(Duration::from_secs(3));
    let got_after = received(&up.dir);
    assert_eq!(got_after.len(), got.len(), "nothing more arrived");
    let dsns: Vec<_> = got_after.iter().filter(|m| m.from.is_empty()).collect();
    assert_eq!(dsns.len(), 1, "exactly one DSN");
    assert_eq!(dsns[0].rcpts, ["app@example.com"]);
    let text = dsns[0].text();
    assert!(text.contains("Status: 5.3.4"), "{text}");
    assert!(text.contains("Action: failed"), "{text}");
    assert!(
        got_after.iter().all(|m| !m.from.eq("app@example.com")),
        "the 552'd message never counts as delivered"
    );
    assert_eq!(env.events_for("bounced", &id).len(), 1);
    // The DSN's own queue id is derived from the entry's: only the DSN was relayed.
    let relayed = env.events_for("relayed", &id);
    assert!(
        relayed.iter().all(|e| e["from"] == ""),
        "the refused message was audited as relayed: {relayed:?}"
    );
}

/// A connection dropped in the middle of DATA is no delivery: the message is deferred
/// and delivered whole on the next attempt, once.
#[test]
fn a_connection_dropped_during_data_defers_then_delivers_once() {
    let mut env = TestEnv::new(EnvOptions::default());
    let up = env.start_scripted("dropdata", 0.0);
    env.start_serve();
    let msg = sample("dropped during data");
    let id = queue_id(&send(
        env.port,
        "app@example.com",
        &["user@example.net"],
        &msg,
    ));
    env.wait_for_event("deferred", is_for(&id));
    env.wait_for_event("relayed", is_for(&id));
    let got = env.wait_for_messages(&up, 1);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].text().ends_with("And another one.\r\n"),
        "{}",
        got[0].text()
    );
    assert!(env.events_for("bounced", &id).is_empty());
    env.wait_for_empty_queue();
}

/// STARTTLS answered with `454`: the message waits, and no command but QUIT follows in
/// clear (no MAIL, no RCPT, no AUTH, no data).
#[test]
fn starttls_refused_defers_and_nothing_goes_out_in_clear() {
    let mut env = TestEnv::new(EnvOptions::default());
    let mut bad = env.start_scripted("starttls454", 0.0);
    env.start_serve();
    let msg = sample("no TLS, no mail");
    let id = queue_id(&send(
        env.port,
        "app@example.com",
        &["user@example.net"],
        &msg,
    ));
    let ev = env.wait_for_event("deferred", is_for(&id));
    assert!(ev["reason"].as_str().unwrap_or("").contains("454"), "{ev}");
    std::thread::sleep(Duration::from_millis(500));
    let clear = std::fs::read_to_string(bad.dir.join("cleartext.log")).unwrap_or_default();
    assert!(
        clear.lines().all(|l| l.trim().eq_ignore_ascii_case("QUIT")),
        "sent in clear after a refused STARTTLS: {clear:?}"
    );
    assert!(received(&bad.dir).is_empty());
    bad.proc.kill();
    let good = env.start_good_capture();
    let got = env.wait_for_messages(&good, 1);
    assert!(got[0].text().contains("no TLS, no mail"));
    env.wait_for_empty_queue();
}

/// An upstream whose certificate expired yesterday is not trusted: deferred, the reason
/// says so, nothing is sent; a valid certificate later gets the message out.
#[test]
fn an_expired_upstream_certificate_defers() {
    let mut env = TestEnv::new(EnvOptions::default());
    let mut bad = env.start_capture(CaptureOptions {
        cert: UpstreamCert::Expired,
        ..CaptureOptions::default()
    });
    env.start_serve();
    let id = queue_id(&send(
        env.port,
        "app@example.com",
        &["user@example.net"],
        &sample("expired certificate"),
    ));
    let ev = env.wait_for_event("deferred", is_for(&id));
    assert!(
        ev["reason"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
            .contains("expired"),
        "{ev}"
    );
    assert!(received(&bad.dir).is_empty());
    assert!(!bad.dir.join("PLAINTEXT-LEAK").exists());
    bad.proc.kill();
    let good = env.start_good_capture();
    env.wait_for_messages(&good, 1);
    env.wait_for_empty_queue();
}

/// The upstream (aiosmtpd, a third-party server) is killed with SIGKILL while 500
/// messages flow through, and started again a second later. Every message answered
/// `250` arrives; a message can arrive twice only if the upstream had stored it when it
/// died (its `250` never reached us), so duplicates are at most the number of
/// connections that were open at the kill.
#[test]
fn an_upstream_restarted_during_500_messages_loses_nothing() {
    const N: usize = 500;
    const SENDERS: usize = 4;
    let mut env = TestEnv::new(EnvOptions {
        upstream_extra: "connections = 4".into(),
        ..EnvOptions::default()
    });
    let mut first = env.start_sink(SinkOptions::default());
    env.start_serve();
    let port = env.port;
    let senders: Vec<_> = (0..SENDERS)
        .map(|t| {
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for i in (t..N).step_by(SENDERS) {
                    let reply = send(
                        port,
                        "app@example.com",
                        &["user@example.net"],
                        &sample(&format!("restart-run message {i:04}")),
                    );
                    assert!(reply.starts_with("250"), "{reply}");
                    ids.push(i);
                }
                ids
            })
        })
        .collect();
    // Kill the upstream once a good part of the run has arrived.
    wait_until_within(
        Duration::from_secs(120),
        "150 messages at the first upstream",
        || env.diagnostics(),
        || (received(&first.dir).len() >= 150).then_some(()),
    );
    first.proc.kill();
    std::thread::sleep(Duration::from_secs(1));
    let second = env.start_sink(SinkOptions::default());
    let mut accepted = 0;
    for s in senders {
        accepted += s.join().expect("sender thread").len();
    }
    assert_eq!(accepted, N, "every submission was answered 250");

    let count = |dirs: &[&std::path::Path]| {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for d in dirs {
            for m in received(d) {
                let subject = m.header("Subject").unwrap_or_default();
                *seen.entry(subject.trim().to_string()).or_default() += 1;
            }
        }
        seen
    };
    let seen = wait_until_within(
        Duration::from_secs(180),
        "all 500 messages at one upstream or the other",
        || env.diagnostics(),
        || {
            let seen = count(&[&first.dir, &second.dir]);
            (seen.len() >= N).then_some(seen)
        },
    );
    for i in 0..N {
        assert!(
            seen.contains_key(&format!("restart-run message {i:04}")),
            "message {i} was lost"
        );
    }
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    assert!(
        duplicates <= 4,
        "{duplicates} duplicates; at most one per open connection is explainable"
    );
    assert!(
        env.audit_events().iter().all(|e| e["event"] != "bounced"),
        "a restart never bounces"
    );
    env.wait_for_empty_queue();
    eprintln!(
        "restart run: {N} accepted, {} at the first upstream, {} at the second, {duplicates} duplicate(s)",
        received(&first.dir).len(),
        received(&second.dir).len()
    );
}
