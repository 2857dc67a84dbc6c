//! The listener's command-reading and STARTTLS phases, over a real socket to
//! `sealgate serve`: an over-long command line is answered once and the session goes
//! on; commands pipelined after STARTTLS are discarded (CVE-2011-0411), seen by a real
//! TLS client (Python's `ssl`).

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

#[test]
fn an_over_long_command_line_is_answered_once_and_the_session_goes_on() {
    let mut env = TestEnv::new(EnvOptions::default());
    env.start_serve();
    let mut c = Smtp::connect(env.port);
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    // 23 KiB, over the 12 KiB limit, in two writes with a pause: the rest of the line
    // arrives after the refusal and is discarded, not answered again.
    c.write_raw(b"NOOP ");
    c.write_raw(&vec![b'a'; 13 * 1024]);
    std::thread::sleep(Duration::from_millis(200));
    c.write_raw(&vec![b'a'; 10 * 1024]);
    c.write_raw(b"\r\nNOOP\r\n");
    let r = c.reply();
    assert!(r.starts_with("500 5.5.6 line too long"), "{r}");
    let r = c.reply();
    assert!(r.starts_with("250"), "the NOOP after the long line: {r}");
    assert!(c.cmd("QUIT").starts_with("221"));
}

const STARTTLS_CLIENT: &str = r#"
import socket, ssl, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
def reply(f):
    lines = []
    while True:
        l = f.readline().decode()
        lines.append(l.rstrip())
        if len(l) < 4 or l[3] != "-":
            return "\n".join(lines)
f = s.makefile("rb")
print("greeting", reply(f))
s.sendall(b"EHLO a.test\r\n")
print("ehlo", reply(f).replace("\n", "|"))
# MAIL pipelined behind STARTTLS: in plain text, so it must not count.
s.sendall(b"STARTTLS\r\nMAIL FROM:<x@example.com>\r\n")
print("starttls", reply(f))
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(s, server_hostname="gw.test")
tf = t.makefile("rb")
print("version", t.version())
t.sendall(b"NOOP\r\nQUIT\r\n")
rest = tf.read().decode().strip().split("\r\n")
print("after", "|".join(rest))
"#;

#[test]
fn commands_pipelined_after_starttls_are_discarded() {
    let mut env = TestEnv::new(EnvOptions {
        server_extra: "tls_cert = \"certs/good.pem\"\ntls_key = \"certs/good.key\"\n".into(),
        ..EnvOptions::default()
    });
    env.start_serve();
    let out = Command::new("python3")
        .arg("-c")
        .arg(STARTTLS_CLIENT)
        .arg(env.port.to_string())
        .output()
        .expect("python3 is installed by .ci/run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("ehlo 250") && text.contains("STARTTLS"),
        "{text}"
    );
    assert!(text.contains("starttls 220"), "{text}");
    assert!(text.contains("version TLSv1."), "{text}");
    // Under TLS exactly two replies, NOOP's and QUIT's: the pipelined MAIL got none.
    let after = text
        .lines()
        .find_map(|l| l.strip_prefix("after "))
        .unwrap_or_default();
    let replies: Vec<&str> = after.split('|').collect();
    assert_eq!(replies.len(), 2, "{text}");
    assert!(
        replies[0].starts_with("250") && replies[1].starts_with("221"),
        "{text}"
    );
}
