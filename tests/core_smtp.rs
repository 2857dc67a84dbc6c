//! The listener facing local applications, over a real socket to `sealgate serve`:
//! the size limit, SMTP smuggling variants, and hostile input.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::*;

/// Peak resident memory (VmHWM) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}

#[test]
fn size_limit_is_enforced_without_buffering() {
    let mut env = TestEnv::new(EnvOptions {
        max_message_size: "64KiB".into(),
        ..EnvOptions::default()
    });
    let up = env.start_good_capture();
    env.start_serve();
    let pid = env.serve.as_ref().unwrap().pid();

    let mut c = Smtp::connect(env.port);
    let ehlo = c.cmd("EHLO app.test");
    assert!(
        ehlo.contains("SIZE 65536"),
        "EHLO announces the limit: {ehlo}"
    );
    // Declared too big: refused at MAIL.
    let r = c.cmd("MAIL FROM:<app@example.com> SIZE=1048576");
    assert!(r.starts_with("552 5.3.4"), "{r}");

    // Undeclared 1 MiB: refused after DATA, and the session goes on.
    let big_body =
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n".repeat(16 * 1024);
    let big = message("too big", &big_body);
    assert!(big.len() > 1024 * 1024);
    assert!(c.cmd("MAIL FROM:<app@example.com>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<user@example.net>").starts_with("250"));
    let r = c.data(&big);
    assert!(r.starts_with("552 5.3.4"), "{r}");
    assert!(c.cmd("RSET").starts_with("250"));
    assert!(c.cmd("NOOP").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<app@example.com>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<user@example.net>").starts_with("250"));
    let small = message("small enough", "fits");
    let id = queue_id(&c.data(&small));

    // 32 MiB more in the same session: the server's peak memory barely moves, so the
    // excess was counted, not kept.
    let before = peak_rss_kib(pid);
    assert!(c.cmd("MAIL FROM:<app@example.com>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<user@example.net>").starts_with("250"));
    let huge = message("huge", &big_body.repeat(32));
    let r = c.data(&huge);
    assert!(r.starts_with("552 5.3.4"), "{r}");
    let after = peak_rss_kib(pid);
    eprintln!("serve peak RSS: {before} KiB before, {after} KiB after the 32 MiB message");
    assert!(
        after.saturating_sub(before) < 16 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB while refusing a 32 MiB message"
    );
    assert!(c.cmd("QUIT").starts_with("221"));

    let got = env.wait_for_messages(&up, 1);
    assert_relayed_unchanged(&small, &got[0].bytes, "the message after the refusals");
    env.wait_for_event("relayed", |e| {
        e["queue_id"].as_str().is_some_and(|q| q.starts_with(&id))
    });
    assert!(env
        .audit_events()
        .iter()
        .all(|e| e["event"] != "received" || e["queue_id"] == id));
    assert_eq!(received(&up.dir).len(), 1);
}

/// The end-of-data look-alikes of CVE-2023-51766 and friends.
const VARIANTS: [(&str, &[u8]); 4] = [
    ("<LF>.<LF>", b"\n.\n"),
    ("<CR><LF>.<LF>", b"\r\n.\n"),
    ("<LF>.<CR><LF>", b"\n.\r\n"),
    ("<CR>.<CR><LF>", b"\r.\r\n"),
];

/// A DATA payload: a message, a fake end of data, a smuggled transaction, the real end.
fn smuggling_payload(variant: &[u8], n: usize) -> Vec<u8> {
    let mut p = format!(
        "From: <app@example.com>\r\nTo: <user@example.net>\r\nSubject: carrier {n}\r\n\r\nfirst part"
    )
    .into_bytes();
    p.extend_from_slice(variant);
    p.extend_from_slice(
        format!(
            "MAIL FROM:<ceo@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n\
             From: <ceo@example.com>\r\nSubject: smuggled {n}\r\n\r\nSMUGGLED-BODY-{n}\r\n"
        )
        .as_bytes(),
    );
    p.extend_from_slice(b"\r\n.\r\n");
    p
}

/// Sends one smuggling attempt raw (no dot-stuffing: the bytes are the attack) and
/// returns every reply the server sent for it, up to and including QUIT's.
fn smuggle(port: u16, variant: &[u8], n: usize) -> (String, String) {
    let mut c = Smtp::connect(port);
    assert!(c.cmd("EHLO app.test").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<app@example.com>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<user@example.net>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.write_raw(&smuggling_payload(variant, n));
    let first = c.reply();
    c.write_raw(b"QUIT\r\n");
    (first, c.rest())
}

#[test]
fn smuggling_variants_are_refused() {
    let mut env = TestEnv::new(EnvOptions::default());
    let up = env.start_good_capture();
    env.start_serve();
    for (n, (name, variant)) in VARIANTS.iter().enumerate() {
        let (first, rest) = smuggle(env.port, variant, n);
        assert!(first.starts_with("550 5.6.11"), "{name}: {first}");
        assert!(
            rest.starts_with("221") && rest.lines().count() == 1,
            "{name}: a second reply after the 550: {rest:?}"
        );
    }
    // A clean message afterwards is the only one the upstream ever sees.
    let clean = message("clean after smuggling", "nothing to see");
    let id = queue_id(&send(
        env.port,
        "app@example.com",
        &["user@example.net"],
        &clean,
    ));
    let got = env.wait_for_messages(&up, 1);
    env.wait_for_event("relayed", |e| {
        e["queue_id"].as_str().is_some_and(|q| q.starts_with(&id))
    });
    assert_eq!(
        got.len(),
        1,
        "the upstream received a smuggled or refused message"
    );
    assert_relayed_unchanged(&clean, &got[0].bytes, "clean message");
    let received_events = env
        .audit_events()
        .into_iter()
        .filter(|e| e["event"] == "received")
        .count();
    assert_eq!(received_events, 1, "only the clean message was accepted");
}

#[test]
fn smuggling_variants_are_normalized_never_split() {
    let mut env = TestEnv::new(EnvOptions {
        bare_line_endings: "normalize".into(),
        ..EnvOptions::default()
    });
    let up = env.start_good_capture();
    env.start_serve();
    for (n, (name, variant)) in VARIANTS.iter().enumerate() {
        let (first, rest) = smuggle(env.port, variant, n);
        assert!(first.starts_with("250 2.0.0 queued as"), "{name}: {first}");
        assert!(
            rest.starts_with("221") && rest.lines().count() == 1,
            "{name}: a second reply: {rest:?}"
        );
    }
    let got = env.wait_for_messages(&up, VARIANTS.len());
    env.wait_for_empty_queue();
    let got_after = received(&up.dir);
    assert_eq!(
        got_after.len(),
        VARIANTS.len(),
        "exactly one message per attempt: {got:?}"
    );
    for (n, (name, _)) in VARIANTS.iter().enumerate() {
        let m = got_after
            .iter()
            .find(|m| m.header("Subject").as_deref() == Some(&format!("carrier {n}")))
            .unwrap_or_else(|| panic!("{name}: the carrier message did not arrive"));
        assert_eq!(m.from, "app@example.com", "{name}");
        assert_eq!(m.rcpts, vec!["user@example.net"], "{name}");
        let text = m.text();
        assert!(
            text.contains(&format!("SMUGGLED-BODY-{n}")),
            "{name}: smuggled text is body: {text}"
        );
        assert!(
            text.contains("RCPT TO:<victim@example.org>"),
            "{name}: {text}"
        );
        for (i, b) in m.bytes.iter().enumerate() {
            if *b == b'\n' {
                assert_eq!(m.bytes[i - 1], b'\r', "{name}: bare LF relayed");
            }
            if *b == b'\r' {
                assert_eq!(m.bytes.get(i + 1), Some(&b'\n'), "{name}: bare CR relayed");
            }
        }
    }
    assert!(got_after
        .iter()
        .all(|m| !m.rcpts.iter().any(|r| r.contains("victim"))));
    let events = env.audit_events();
    assert_eq!(
        events.iter().filter(|e| e["event"] == "received").count(),
        VARIANTS.len()
    );
}

/// xorshift64*: reproducible noise without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What session `i` of the random-bytes test sends.
fn hostile_input(i: u64) -> Vec<u8> {
    let mut r = Noise(0x9E37_79B9_7F4A_7C15 ^ (i + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    let len = 1 + r.below(64 * 1024) as usize;
    let prefix =
        b"EHLO fuzz\r\nMAIL FROM:<fuzz@example.com>\r\nRCPT TO:<fuzz@example.net>\r\nDATA\r\n";
    match i % 7 {
        // Pure binary noise.
        0 => r.bytes(len),
        // One huge line, far beyond the command line limit, then a command.
        1 => {
            let mut v: Vec<u8> = (0..200 * 1024 + len)
                .map(|_| b'A' + (r.next() % 26) as u8)
                .collect();
            v.extend_from_slice(b"\r\nNOOP\r\nQUIT\r\n");
            v
        }
        // Many short lines of noise, CR and LF and NUL included.
        2 => {
            let mut v = Vec::new();
            for _ in 0..500 {
                let n = r.below(80) as usize;
                v.extend(r.bytes(n));
                v.extend_from_slice([&b"\r\n"[..], b"\n", b"\r", b"\0\r\n"][r.below(4) as usize]);
            }
            v
        }
        // A transaction whose DATA is noise and never ends.
        3 => {
            let mut v = prefix.to_vec();
            v.extend(r.bytes(len));
            v
        }
        // A transaction whose DATA is noise, then ends, then more noise.
        4 => {
            let mut v = prefix.to_vec();
            v.extend(r.bytes(len));
            v.extend_from_slice(b"\r\n.\r\n");
            v.extend(r.bytes(len / 4));
            v
        }
        // STARTTLS and AUTH (neither is configured) followed by noise.
        5 => {
            let mut v = b"EHLO fuzz\r\nSTARTTLS\r\n".to_vec();
            v.extend(r.bytes(512));
            v.extend_from_slice(b"\r\nAUTH PLAIN ");
            v.extend(r.bytes(len.min(20_000)));
            v.extend_from_slice(b"\r\nAUTH LOGIN\r\n");
            v.extend(r.bytes(64));
            v
        }
        // Valid verbs with hostile arguments.
        _ => {
            let mut v = b"EHLO ".to_vec();
            v.extend(r.bytes(300));
            for verb in [
                "MAIL FROM:<",
                "RCPT TO:<",
                "MAIL FROM:",
                "RCPT TO:<@a,@b:",
                "VRFY ",
                "HELP ",
                "BDAT 100 LAST",
            ] {
                v.extend_from_slice(b"\r\n");
                v.extend_from_slice(verb.as_bytes());
                let n = r.below(600) as usize;
                v.extend(r.bytes(n));
                v.push(b'>');
            }
            v.extend_from_slice(b"\r\nDATA\r\n");
            v
        }
    }
}

/// Connects, writes `input` (errors ignored: the server may hang up first), half-closes,
/// and reads until the server closes. Returns false if the connection was refused.
fn hostile_session(port: u16, input: &[u8]) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(20)));
    let reader = {
        let mut r = s.try_clone().expect("clone socket");
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
        })
    };
    let _ = s.write_all(input);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let _ = reader.join();
    true
}

#[test]
fn survives_300_sessions_of_random_bytes() {
    let mut env = TestEnv::new(EnvOptions::default());
    let up = env.start_good_capture();
    env.start_serve();
    let port = env.port;
    for batch in 0..6u64 {
        let handles: Vec<_> = (0..50u64)
            .map(|k| {
                let i = batch * 50 + k;
                std::thread::spawn(move || hostile_session(port, &hostile_input(i)))
            })
            .collect();
        for (k, h) in handles.into_iter().enumerate() {
            assert!(
                h.join().expect("session thread"),
                "session {} could not connect",
                batch * 50 + k as u64
            );
        }
        assert!(
            env.serve_running(),
            "sealgate died during batch {batch}\n{}",
            env.diagnostics()
        );
    }
    let msg = message("still alive after the noise", "a normal message");
    let reply = send(env.port, "app@example.com", &["user@example.net"], &msg);
    let id = queue_id(&reply);
    env.wait_for_event("relayed", |e| {
        e["queue_id"].as_str().is_some_and(|q| q.starts_with(&id))
    });
    let got = received(&up.dir);
    let m = got
        .iter()
        .find(|m| m.header("Subject").as_deref() == Some("still alive after the noise"))
        .expect("the normal message arrived");
    assert_relayed_unchanged(&msg, &m.bytes, "after the noise");
    assert!(env.serve_running());
}

/// A message whose attached messages nest `levels` deep, plain or with the innermost
/// levels inside a base64 `message/rfc822` part (which mail-parser decodes).
fn nested_message(levels: usize, base64_inside: bool) -> Vec<u8> {
    let head = "From: app@example.com\r\nTo: user@example.net\r\nSubject: nested\r\n\
                MIME-Version: 1.0\r\n";
    let inner = format!(
        "{}Content-Type: text/plain\r\n\r\nthe innermost text\r\n",
        "Content-Type: message/rfc822\r\n\r\n".repeat(levels)
    );
    if !base64_inside {
        return format!("{head}{inner}").into_bytes();
    }
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(inner);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "{head}Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
         Content-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n\
         Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
        lines.join("\r\n")
    )
    .into_bytes()
}

/// A multipart nested `levels` deep.
fn nested_multipart(levels: usize) -> Vec<u8> {
    let mut m = String::from(
        "From: app@example.com\r\nTo: user@example.net\r\nSubject: nested\r\nMIME-Version: 1.0\r\n",
    );
    for i in 0..levels {
        m += &format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n");
    }
    m += "Content-Type: text/plain\r\n\r\nthe innermost text\r\n";
    for i in (0..levels).rev() {
        m += &format!("--b{i}--\r\n");
    }
    m.into_bytes()
}

/// A Content-Type split into `n` RFC 2231 continuations (mail-parser merges them in
/// quadratic time: 100,000 took minutes).
fn continuations(n: usize) -> Vec<u8> {
    let params: Vec<String> = (0..n).map(|i| format!("p{i}*{i}=\"v\"")).collect();
    format!(
        "From: app@example.com\r\nTo: user@example.net\r\nSubject: params\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; {}\r\n\r\nbody\r\n",
        params.join("; ")
    )
    .into_bytes()
}

/// MIME beyond sealgate's limits is refused with a reply that says so, and the server
/// lives on: tens of thousands of nested levels once overflowed a worker's stack
/// (mail-parser builds and drops such a tree recursively), and 100,000 continuations
/// held a worker for minutes. A message within the limits goes out unchanged.
#[test]
fn mime_beyond_the_limits_is_refused_without_crashing_or_stalling() {
    let mut env = TestEnv::new(EnvOptions::default());
    let up = env.start_good_capture();
    env.start_serve();

    let deep = "nested more than 32 levels";
    for (what, why, msg) in [
        (
            "20,000 attached messages",
            deep,
            nested_message(20_000, false),
        ),
        (
            "200,000 attached messages",
            deep,
            nested_message(200_000, false),
        ),
        ("50,000 inside base64", deep, nested_message(50_000, true)),
        ("30,000 multiparts", deep, nested_multipart(30_000)),
        ("33 attached messages", deep, nested_message(33, false)),
        (
            "100,000 RFC 2231 continuations",
            "continuations",
            continuations(100_000),
        ),
    ] {
        let r = send(env.port, "app@example.com", &["user@example.net"], &msg);
        assert!(
            r.starts_with("550 5.7.1") && r.contains("built-in MIME limits") && r.contains(why),
            "{what}: {r}"
        );
    }
    let fine = nested_message(20, false);
    let id = queue_id(&send(
        env.port,
        "app@example.com",
        &["user@example.net"],
        &fine,
    ));
    let got = env.wait_for_messages(&up, 1);
    assert_relayed_unchanged(&fine, &got[0].bytes, "a message nested 20 levels");
    env.wait_for_event("relayed", |e| {
        e["queue_id"].as_str().is_some_and(|q| q.starts_with(&id))
    });
    let rejected: Vec<_> = env
        .audit_events()
        .into_iter()
        .filter(|e| e["event"] == "rejected")
        .collect();
    assert_eq!(rejected.len(), 6, "each refusal audited: {rejected:?}");
    for e in &rejected {
        assert_eq!(e["rules"]["detail"]["rule"], "MIME limits", "{e}");
    }
}

/// A client that pipelines commands and never reads the replies fills the socket
/// buffers; the server must give up on it after `command_timeout` instead of holding
/// its connection slot forever. With `max_connections = 1`, the next client is served.
#[test]
fn a_client_that_never_reads_does_not_hold_its_slot() {
    let mut env = TestEnv::new(EnvOptions {
        server_extra: "max_connections = 1\ncommand_timeout = \"2s\"".into(),
        ..EnvOptions::default()
    });
    env.start_serve();

    let mut stalled = TcpStream::connect(("127.0.0.1", env.port)).unwrap();
    // About 40 MB of replies: more than any loopback socket buffers hold.
    let flood = "NOOP\r\n".repeat(100_000);
    let writer = std::thread::spawn(move || {
        let _ = stalled.write_all(b"EHLO stalled.test\r\n");
        for _ in 0..30 {
            if stalled.write_all(flood.as_bytes()).is_err() {
                break;
            }
        }
        stalled // kept open, never read
    });

    // Give the flood time to fill the buffers, then queue behind it.
    std::thread::sleep(Duration::from_secs(1));
    let started = std::time::Instant::now();
    let mut next = TcpStream::connect(("127.0.0.1", env.port)).unwrap();
    next.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut greeting = [0u8; 64];
    let n = next.read(&mut greeting).unwrap_or(0);
    let text = String::from_utf8_lossy(&greeting[..n]).to_string();
    assert!(
        text.starts_with("220 "),
        "no greeting within 30 s while a client that never reads held the only slot: {text:?}"
    );
    eprintln!("served after {:?}", started.elapsed());
    let _stalled = writer.join().unwrap();
}

/// Sends `bytes` one every half second, without reading, until a write fails (the
/// server closed the connection) or 25 s pass; true when cut off.
fn trickle_until_cut_off(c: &mut TcpStream, bytes: &[u8]) -> bool {
    let started = std::time::Instant::now();
    for b in bytes.iter().cycle().take(60) {
        if c.write_all(&[*b]).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
        if started.elapsed() > Duration::from_secs(25) {
            break;
        }
    }
    false
}

/// A command line, and a line of message text, must arrive whole within the timeout of
/// when the server starts waiting for it: a client trickling one byte every half second
/// (each read well within the timeout) is cut off instead of holding its slot for ever.
#[test]
fn trickled_lines_time_out_as_a_whole() {
    let mut env = TestEnv::new(EnvOptions {
        server_extra: "command_timeout = \"2s\"\ndata_timeout = \"2s\"".into(),
        ..EnvOptions::default()
    });
    env.start_serve();
    let mut c = TcpStream::connect(("127.0.0.1", env.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut greeting = [0u8; 128];
    assert!(c.read(&mut greeting).unwrap() > 0);
    // (A per-read timeout would never fire here; the server would wait for ever.)
    assert!(
        trickle_until_cut_off(&mut c, b"EHLO a-very-slow-client.example.test"),
        "still connected while trickling a command"
    );

    let mut s = Smtp::connect(env.port);
    assert!(s.cmd("EHLO c").starts_with("250"));
    assert!(s.cmd("MAIL FROM:<app@example.com>").starts_with("250"));
    assert!(s.cmd("RCPT TO:<user@example.net>").starts_with("250"));
    assert!(s.cmd("DATA").starts_with("354"));
    let mut raw = s.into_stream();
    assert!(
        trickle_until_cut_off(&mut raw, b"Subject: a very slow message body"),
        "still connected while trickling message text"
    );
}
