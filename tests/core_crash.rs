//! Durability: `250 queued as ID` is a promise that survives `kill -9`.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

/// A client that gives up quietly when the server vanishes.
struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Option<Client> {
        let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        let mut c = Client {
            r: BufReader::new(s.try_clone().ok()?),
            w: s,
        };
        c.reply().filter(|g| g.starts_with("220"))?;
        c.cmd("EHLO crash.test").filter(|r| r.starts_with("250"))?;
        Some(c)
    }

    fn reply(&mut self) -> Option<String> {
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return Some(line.trim_end().to_string());
            }
        }
    }

    fn cmd(&mut self, line: &str) -> Option<String> {
        self.w.write_all(format!("{line}\r\n").as_bytes()).ok()?;
        self.reply()
    }

    /// One transaction; `Some(reply)` to DATA's end, `None` if the connection broke.
    fn transaction(&mut self, subject: &str) -> Option<String> {
        self.cmd("MAIL FROM:<app@example.com>")
            .filter(|r| r.starts_with("250"))?;
        self.cmd("RCPT TO:<user@example.net>")
            .filter(|r| r.starts_with("250"))?;
        self.cmd("DATA").filter(|r| r.starts_with("354"))?;
        let body = format!("payload for {subject}\n").repeat(40);
        self.w
            .write_all(&dot_stuff(&message(subject, &body)))
            .ok()?;
        self.reply()
    }
}

#[test]
fn every_acknowledged_message_survives_kill_9() {
    let mut env = TestEnv::new(EnvOptions::default());
    // No upstream yet: everything acknowledged stays in the spool.
    env.start_serve();
    let port = env.port;
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (acked, stop) = (acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                // Reconnect after each session the server ends; give up once it is gone.
                while !stop.load(Ordering::Relaxed) {
                    let Some(mut c) = Client::connect(port) else {
                        return;
                    };
                    loop {
                        n += 1;
                        let subject = format!("crash-{t}-{n}");
                        match c.transaction(&subject) {
                            Some(r) if r.starts_with("250 2.0.0 queued as") => {
                                acked.lock().unwrap().push((subject, r));
                            }
                            Some(r) => panic!("unexpected reply to {subject}: {r}"),
                            None => break,
                        }
                    }
                }
            })
        })
        .collect();

    let started = Instant::now();
    wait_until(
        "acknowledged messages",
        || env.diagnostics(),
        || {
            (started.elapsed() >= Duration::from_secs(1) && acked.lock().unwrap().len() >= 16)
                .then_some(())
        },
    );
    env.kill_serve();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("client thread");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 16);

    let up = env.start_good_capture();
    env.start_serve();
    let missing = |got: &[Received]| -> Vec<String> {
        acked
            .iter()
            .filter(|(subject, _)| {
                !got.iter()
                    .any(|m| m.header("Subject").as_deref() == Some(subject))
            })
            .map(|(s, r)| format!("{s} ({r})"))
            .collect()
    };
    // Generous: hundreds of messages through a debug build on a busy CI machine.
    wait_until_within(
        Duration::from_secs(180),
        &format!("all {} acknowledged messages upstream", acked.len()),
        || {
            format!(
                "missing: {:?}\n{}",
                missing(&received(&up.dir)),
                env.diagnostics()
            )
        },
        || missing(&received(&up.dir)).is_empty().then_some(()),
    );
    // And each arrived intact.
    for m in received(&up.dir) {
        let subject = m.header("Subject").unwrap();
        let body = format!("payload for {subject}\n").repeat(40);
        assert_relayed_unchanged(&message(&subject, &body), &m.bytes, &subject);
    }
    eprintln!(
        "{} messages acknowledged before kill -9, all delivered after restart",
        acked.len()
    );
}

/// `sealgate queue list` and `queue retry` are operator commands run next to a live
/// server: they must not disturb messages being accepted (no 4xx, nothing lost).
#[test]
fn queue_commands_do_not_disturb_a_running_server() {
    let mut env = TestEnv::new(EnvOptions::default());
    // No upstream: entries pile up in the spool while the commands run.
    env.start_serve();
    let stop = Arc::new(AtomicBool::new(false));
    let operator = {
        let (config, stop) = (env.config.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(Ordering::Relaxed) {
                let action = if runs % 4 == 3 { "retry" } else { "list" };
                let out = std::process::Command::new(SEALGATE)
                    .args(["queue", action, "-c"])
                    .arg(&config)
                    .output()
                    .expect("sealgate queue");
                assert!(
                    out.status.success(),
                    "queue {action}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                runs += 1;
            }
            runs
        })
    };
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let port = env.port;
            std::thread::spawn(move || {
                let mut c = Client::connect(port).expect("connect");
                (0..60)
                    .map(|n| {
                        let subject = format!("operator-{t}-{n}");
                        (subject.clone(), c.transaction(&subject).expect("a reply"))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<(String, String)> = senders
        .into_iter()
        .flat_map(|s| s.join().unwrap())
        .collect();
    stop.store(true, Ordering::Relaxed);
    let runs = operator.join().unwrap();
    let refused: Vec<_> = results
        .iter()
        .filter(|(_, r)| !r.starts_with("250"))
        .collect();
    assert!(
        refused.is_empty(),
        "refused while `queue list/retry` ran ({runs} runs): {refused:?}\n{}",
        env.diagnostics()
    );

    let up = env.start_good_capture();
    wait_until_within(
        Duration::from_secs(120),
        "every message upstream",
        || env.diagnostics(),
        || (received(&up.dir).len() >= results.len()).then_some(()),
    );
}
