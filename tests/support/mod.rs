//! The harness of the core integration tests: real processes, real sockets.
//!
//! A [`TestEnv`] is one sealgate installation in a temporary directory: certificates
//! (a test CA, a good `localhost` upstream certificate, one for `other.example`, one
//! from an untrusted second CA), `sealgate.toml`, an allow-all policy, spool and audit
//! log. It starts `sealgate serve` as a child process and upstream peers (`sealgate
//! capture`, or the third-party aiosmtpd sink) as further children, all killed on drop.
//! Every port is picked free at run time, so tests run in parallel.
//!
//! Waiting is always polling with short sleeps against a generous deadline
//! ([`TIMEOUT`]); no test asserts on timing.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod demo;
pub mod interop;
pub mod mta;
pub mod postfix;

use sealgate::ops::pki;
use serde_json::Value;

/// How long any wait may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The sealgate binary under test.
pub const SEALGATE: &str = env!("CARGO_BIN_EXE_sealgate");

/// The `sealgate` binary at a path every user can reach, for tests that run it as
/// `nobody`: the checkout (and so `target/`) may sit below a directory only root may
/// enter, such as `/root`. A hard link (or copy) in a 0755 directory under the system
/// temp dir, made once per test process.
pub fn sealgate_for_everyone() -> &'static str {
    use std::os::unix::fs::PermissionsExt;
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sealgate-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("binary dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let bin = dir.join("sealgate");
        let _ = std::fs::remove_file(&bin);
        if std::fs::hard_link(SEALGATE, &bin).is_err() {
            std::fs::copy(SEALGATE, &bin).expect("copy the sealgate binary");
        }
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        bin.to_string_lossy().into_owned()
    })
}

/// The fixtures directory.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// A port nobody listens on right now (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Certificates shared by every environment of one test process (key generation is
/// the slow part); each environment writes its own copies.
struct Pki {
    ca: pki::Issued,
    good: pki::Issued,
    other_host: pki::Issued,
    untrusted: pki::Issued,
    expired: pki::Issued,
}

fn shared_pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = pki::ca("sealgate test CA").expect("CA");
        let good = pki::server(&ca, &["localhost"], &["127.0.0.1"]).expect("good cert");
        let other_host = pki::server(&ca, &["other.example"], &[]).expect("other cert");
        let rogue = pki::ca("untrusted rogue CA").expect("rogue CA");
        let untrusted = pki::server(&rogue, &["localhost"], &["127.0.0.1"]).expect("rogue cert");
        let expired =
            pki::server_valid(&ca, &["localhost"], &["127.0.0.1"], -30, -1).expect("expired cert");
        Pki {
            ca,
            good,
            other_host,
            untrusted,
            expired,
        }
    })
}

/// Which certificate an upstream peer presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamCert {
    /// For `localhost`, from the CA sealgate trusts.
    Good,
    /// From the trusted CA, but for `other.example`.
    OtherHost,
    /// For `localhost`, from a CA sealgate does not trust.
    Untrusted,
    /// For `localhost`, from the trusted CA, expired yesterday.
    Expired,
}

impl UpstreamCert {
    fn stem(self) -> &'static str {
        match self {
            UpstreamCert::Good => "good",
            UpstreamCert::OtherHost => "other-host",
            UpstreamCert::Untrusted => "untrusted",
            UpstreamCert::Expired => "expired",
        }
    }
}

/// How sealgate talks to its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    Starttls,
    Implicit,
}

/// What goes into `sealgate.toml`.
#[derive(Debug, Clone)]
pub struct EnvOptions {
    pub tls: Tls,
    pub max_message_size: String,
    /// `"reject"` or `"normalize"`.
    pub bare_line_endings: String,
    /// Upstream AUTH: user name and password (written to a 0600 file).
    pub upstream_auth: Option<(String, String)>,
    /// More `[server]` lines, e.g. `max_connections = 1`.
    pub server_extra: String,
    /// `[upstream] timeout`.
    pub upstream_timeout: String,
    /// More `[upstream]` lines, e.g. `connections = 1`.
    pub upstream_extra: String,
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions {
            tls: Tls::Starttls,
            max_message_size: "10MiB".into(),
            bare_line_endings: "reject".into(),
            upstream_auth: None,
            server_extra: String::new(),
            upstream_timeout: "10s".into(),
            upstream_extra: String::new(),
        }
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub child: Child,
    /// stdout+stderr of the process.
    pub log: PathBuf,
    pub name: String,
}

impl Proc {
    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An upstream SMTP peer.
pub struct Upstream {
    pub proc: Proc,
    /// Where it writes received messages.
    pub dir: PathBuf,
}

/// Options for `sealgate capture`.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub cert: UpstreamCert,
    pub implicit: bool,
    pub no_starttls: bool,
    pub rcpt_reply: Option<String>,
    pub data_reply: Option<String>,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            cert: UpstreamCert::Good,
            implicit: false,
            no_starttls: false,
            rcpt_reply: None,
            data_reply: None,
        }
    }
}

/// Options for the aiosmtpd sink (tests/fixtures/aiosmtpd_sink.py).
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    pub implicit: bool,
    /// RCPT glob answered with `550 5.1.1`.
    pub reject_rcpt: Option<String>,
    pub auth: Option<(String, String)>,
    /// `"PLAIN"` or `"LOGIN"`: the only mechanism offered.
    pub auth_mech: Option<String>,
}

/// One message an upstream peer received.
#[derive(Debug, Clone)]
pub struct Received {
    pub name: String,
    pub bytes: Vec<u8>,
    pub from: String,
    pub rcpts: Vec<String>,
    pub envelope: Value,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The value of the first header `name` (unfolded), if any.
    pub fn header(&self, name: &str) -> Option<String> {
        header_value(&self.bytes, name)
    }
}

/// The value of the first header `name` in a message's header block (unfolded).
pub fn header_value(message: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut found: Option<String> = None;
    for line in head.split("\r\n") {
        if let Some(v) = found.as_mut() {
            if line.starts_with([' ', '\t']) {
                v.push_str(line);
                continue;
            }
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case(name) {
                found = Some(v.trim().to_string());
            }
        }
    }
    found
}

/// All messages in a peer's folder, oldest first (names are counters).
pub fn received(dir: &Path) -> Vec<Received> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".eml") && !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .filter_map(|n| {
            let bytes = std::fs::read(dir.join(&n)).ok()?;
            let stem = n.trim_end_matches(".eml");
            let envelope: Value = std::fs::read(dir.join(format!("{stem}.json")))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            Some(Received {
                name: n.clone(),
                bytes,
                from: envelope["from"].as_str().unwrap_or("").to_string(),
                rcpts: envelope["rcpts"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
                envelope,
            })
        })
        .collect()
}

/// Polls `f` until it returns `Some`, or panics after [`TIMEOUT`] with `what` and `diag()`.
pub fn wait_until<T>(what: &str, diag: impl Fn() -> String, f: impl FnMut() -> Option<T>) -> T {
    wait_until_within(TIMEOUT, what, diag, f)
}

/// [`wait_until`] with its own deadline, for waits that scale with the work.
pub fn wait_until_within<T>(
    timeout: Duration,
    what: &str,
    diag: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}\n{}", diag());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `dir` holds at least `n` messages; returns them all.
pub fn wait_for_files(dir: &Path, n: usize, timeout: Duration) -> Vec<Received> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = received(dir);
        if got.len() >= n {
            return got;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {n} messages in {}; have {}",
                dir.display(),
                got.len()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The audit log's records (a partially written last line is skipped).
pub fn audit_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits until `port` on 127.0.0.1 accepts connections, while `proc` keeps running.
pub fn wait_for_port(port: u16, proc: &mut Proc) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!(
                "{} exited ({status}) before listening on {port}:\n{}",
                proc.name,
                proc.log_text()
            );
        }
        if Instant::now() > deadline {
            panic!(
                "{} never listened on {port}:\n{}",
                proc.name,
                proc.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Appends `.` to lines starting with `.` and the terminating `.CRLF` (RFC 5321 §4.5.2).
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    sealgate::queue::upstream::dot_stuff(message)
}

/// LF (or CRLF) line endings to CRLF.
pub fn crlf(input: &[u8]) -> Vec<u8> {
    sealgate::smtp::submit::to_crlf(input)
}

/// A simple test message with CRLF endings.
pub fn message(subject: &str, body: &str) -> Vec<u8> {
    let id = format!("<{}@test.sealgate>", subject.replace(' ', "-"));
    crlf(
        format!(
            "From: App <app@example.com>\nTo: <user@example.net>\nSubject: {subject}\nMessage-ID: {id}\n\
             Date: Sun, 29 Nov 2026 13:00:00 +0000\n\n{body}\n"
        )
        .as_bytes(),
    )
}

/// A blocking SMTP client for talking to sealgate over a real socket.
pub struct Smtp {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Smtp {
    /// The raw connection, for writing by hand (e.g. slowly).
    pub fn into_stream(self) -> TcpStream {
        self.w
    }

    /// Connects and reads the greeting (which must be 220).
    pub fn connect(port: u16) -> Smtp {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to sealgate");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut c = Smtp {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        let g = c.reply();
        assert!(g.starts_with("220"), "greeting: {g}");
        c
    }

    /// One (possibly multi-line) reply, lines joined with `\n`.
    pub fn reply(&mut self) -> String {
        self.try_reply().expect("a reply from sealgate")
    }

    /// One reply, or `None` at EOF / on error.
    pub fn try_reply(&mut self) -> Option<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            match self.r.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return Some(lines.join("\n"));
            }
        }
    }

    /// Sends one command line and returns the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.write_raw(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).expect("write to sealgate");
        self.w.flush().unwrap();
    }

    /// DATA (expects 354), the dot-stuffed message, and the final reply.
    pub fn data(&mut self, message: &[u8]) -> String {
        let r = self.cmd("DATA");
        assert!(r.starts_with("354"), "DATA: {r}");
        self.write_raw(&dot_stuff(message));
        self.reply()
    }

    /// Everything the server still sends until it closes.
    pub fn rest(mut self) -> String {
        let _ = self.w.shutdown(std::net::Shutdown::Write);
        let mut s = String::new();
        let _ = self.r.read_to_string(&mut s);
        s
    }
}

/// One whole transaction. Returns the final reply, or the first reply that was not 2xx.
pub fn send(port: u16, from: &str, rcpts: &[&str], message: &[u8]) -> String {
    let mut c = Smtp::connect(port);
    let r = c.cmd("EHLO client.test");
    assert!(r.starts_with("250"), "EHLO: {r}");
    let r = c.cmd(&format!("MAIL FROM:<{from}>"));
    if !r.starts_with('2') {
        return r;
    }
    for rcpt in rcpts {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        if !r.starts_with('2') {
            return r;
        }
    }
    let r = c.data(message);
    let _ = c.cmd("QUIT");
    r
}

/// The queue id in `250 2.0.0 queued as ID`.
pub fn queue_id(reply: &str) -> String {
    assert!(reply.starts_with("250 2.0.0"), "not queued: {reply}");
    reply.rsplit(' ').next().unwrap().trim().to_string()
}

/// One sealgate installation in a temporary directory.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub opts: EnvOptions,
    /// sealgate's listen port.
    pub port: u16,
    /// The port its upstream is expected on.
    pub upstream_port: u16,
    pub config: PathBuf,
    pub audit: PathBuf,
    pub spool: PathBuf,
    pub serve: Option<Proc>,
    /// Extra environment for `serve` (e.g. SEALGATE_LOG).
    pub serve_env: Vec<(String, String)>,
    peers: usize,
    serves: usize,
}

impl TestEnv {
    /// Writes certificates, config and policy (does not start anything).
    pub fn new(opts: EnvOptions) -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("sealgate-core-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        let p = shared_pki();
        let certs = root.join("certs");
        pki::write_cert(&certs.join("ca.pem"), &p.ca.cert).unwrap();
        for (stem, issued) in [
            ("good", &p.good),
            ("other-host", &p.other_host),
            ("untrusted", &p.untrusted),
            ("expired", &p.expired),
        ] {
            pki::write_cert(&certs.join(format!("{stem}.pem")), &issued.cert).unwrap();
            pki::write_key(&certs.join(format!("{stem}.key")), &issued.key).unwrap();
        }
        std::fs::create_dir_all(root.join("policies")).unwrap();
        std::fs::write(
            root.join("policies/00-recipients.toml"),
            "[recipients]\nallow = [\"*\"]\n",
        )
        .unwrap();
        let port = free_port();
        let mut upstream_port = free_port();
        while upstream_port == port {
            upstream_port = free_port();
        }
        let auth = match &opts.upstream_auth {
            Some((user, password)) => {
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(root.join("upstream-password"))
                    .unwrap();
                f.write_all(format!("{password}\n").as_bytes()).unwrap();
                format!("username = \"{user}\"\npassword_file = \"upstream-password\"\n")
            }
            None => String::new(),
        };
        let config_text = format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nhostname = \"gw.test\"\n\
             max_message_size = \"{size}\"\nbare_line_endings = \"{ble}\"\n{extra}\n\n\
             [spool]\ndir = \"spool\"\n\n\
             [upstream]\nhost = \"localhost\"\nport = {upstream_port}\ntls = \"{tls}\"\n\
             ca_file = \"certs/ca.pem\"\nretry_base = \"1s\"\nmax_retry_interval = \"2s\"\n\
             timeout = \"{upstream_timeout}\"\n{upstream_extra}\n{auth}\n\
             [audit]\npath = \"audit.jsonl\"\n\n[policy]\ndir = \"policies\"\n",
            size = opts.max_message_size,
            ble = opts.bare_line_endings,
            extra = opts.server_extra,
            upstream_timeout = opts.upstream_timeout,
            upstream_extra = opts.upstream_extra,
            tls = match opts.tls {
                Tls::Starttls => "starttls",
                Tls::Implicit => "implicit",
            },
        );
        let config = root.join("sealgate.toml");
        std::fs::write(&config, config_text).unwrap();
        TestEnv {
            audit: root.join("audit.jsonl"),
            spool: root.join("spool"),
            config,
            dir,
            opts,
            port,
            upstream_port,
            serve: None,
            serve_env: Vec::new(),
            peers: 0,
            serves: 0,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `sealgate serve` and waits until it accepts connections.
    pub fn start_serve(&mut self) {
        assert!(self.serve.is_none(), "serve is already running");
        self.serves += 1;
        let log = self.path().join(format!("serve-{}.log", self.serves));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(SEALGATE);
        cmd.arg("serve")
            .arg("-c")
            .arg(&self.config)
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .env("SEALGATE_LOG", "info");
        for (k, v) in &self.serve_env {
            cmd.env(k, v);
        }
        let mut proc = Proc {
            child: cmd.spawn().expect("spawn sealgate serve"),
            log,
            name: "sealgate serve".into(),
        };
        wait_for_port(self.port, &mut proc);
        self.serve = Some(proc);
    }

    /// `kill -9` of the running server.
    pub fn kill_serve(&mut self) {
        if let Some(mut p) = self.serve.take() {
            p.kill();
        }
    }

    /// True while the server process runs.
    pub fn serve_running(&mut self) -> bool {
        self.serve.as_mut().is_some_and(|p| p.is_running())
    }

    fn peer_dir(&mut self, kind: &str) -> (PathBuf, PathBuf) {
        self.peers += 1;
        let dir = self.path().join(format!("{kind}-{}", self.peers));
        std::fs::create_dir_all(&dir).unwrap();
        let log = self.path().join(format!("{kind}-{}.log", self.peers));
        (dir, log)
    }

    fn spawn_peer(&self, mut cmd: Command, name: &str, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        cmd.current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let mut proc = Proc {
            child: cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}")),
            log,
            name: name.into(),
        };
        wait_for_port(self.upstream_port, &mut proc);
        proc
    }

    /// Starts `sealgate capture` on the upstream port, writing to a fresh folder.
    pub fn start_capture(&mut self, o: CaptureOptions) -> Upstream {
        let (dir, log) = self.peer_dir("capture");
        let certs = self.path().join("certs");
        let mut cmd = Command::new(SEALGATE);
        cmd.arg("capture")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.upstream_port))
            .arg("--cert")
            .arg(certs.join(format!("{}.pem", o.cert.stem())))
            .arg("--key")
            .arg(certs.join(format!("{}.key", o.cert.stem())))
            .arg("--dir")
            .arg(&dir);
        if o.implicit {
            cmd.arg("--implicit");
        }
        if o.no_starttls {
            cmd.arg("--no-starttls");
        }
        if let Some(r) = &o.rcpt_reply {
            cmd.arg("--rcpt-reply").arg(r);
        }
        if let Some(r) = &o.data_reply {
            cmd.arg("--data-reply").arg(r);
        }
        let proc = self.spawn_peer(cmd, "sealgate capture", log);
        Upstream { proc, dir }
    }

    /// A well-behaved capture upstream in the configured TLS mode.
    pub fn start_good_capture(&mut self) -> Upstream {
        let implicit = self.opts.tls == Tls::Implicit;
        self.start_capture(CaptureOptions {
            implicit,
            ..CaptureOptions::default()
        })
    }

    /// Starts the aiosmtpd sink (a third-party SMTP server) on the upstream port.
    pub fn start_sink(&mut self, o: SinkOptions) -> Upstream {
        let (dir, log) = self.peer_dir("aiosmtpd");
        let mut cmd = self.python_peer("aiosmtpd_sink.py", &dir);
        cmd.arg(if o.implicit {
            "--implicit"
        } else {
            "--starttls"
        });
        if let Some(r) = &o.reject_rcpt {
            cmd.arg("--reject-rcpt").arg(r);
        }
        if let Some((u, p)) = &o.auth {
            cmd.arg("--auth").arg(format!("{u}:{p}"));
        }
        if let Some(m) = &o.auth_mech {
            cmd.arg("--auth-mech").arg(m);
        }
        let proc = self.spawn_peer(cmd, "aiosmtpd sink", log);
        Upstream { proc, dir }
    }

    /// `python3 tests/fixtures/SCRIPT` on the upstream port with the good certificate,
    /// writing what it receives to `dir`.
    fn python_peer(&self, script: &str, dir: &Path) -> Command {
        let certs = self.path().join("certs");
        let mut cmd = Command::new("python3");
        cmd.arg(format!("{FIXTURES}/{script}"))
            .arg("--port")
            .arg(self.upstream_port.to_string())
            .arg("--dir")
            .arg(dir)
            .arg("--cert")
            .arg(certs.join("good.pem"))
            .arg("--key")
            .arg(certs.join("good.key"));
        cmd
    }

    /// `tests/fixtures/scripted_upstream.py` (STARTTLS, good certificate) playing
    /// `scenario` on the upstream port.
    pub fn start_scripted(&mut self, scenario: &str, delay_secs: f64) -> Upstream {
        let (dir, log) = self.peer_dir("scripted");
        let mut cmd = self.python_peer("scripted_upstream.py", &dir);
        cmd.arg("--scenario")
            .arg(scenario)
            .arg("--delay")
            .arg(delay_secs.to_string());
        let proc = self.spawn_peer(cmd, "scripted upstream", log);
        Upstream { proc, dir }
    }

    /// The audit log's records so far.
    pub fn audit_events(&self) -> Vec<Value> {
        audit_events(&self.audit)
    }

    /// Audit records of `event` for the entry `id` and its copies (`ID-1`, `ID-2`, ...).
    pub fn events_for(&self, event: &str, id: &str) -> Vec<Value> {
        self.audit_events()
            .into_iter()
            .filter(|e| {
                e["event"] == event && e["queue_id"].as_str().is_some_and(|q| q.starts_with(id))
            })
            .collect()
    }

    /// Waits for an audit record with `event` for which `pred` holds.
    pub fn wait_for_event(&self, event: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_until(
            &format!("audit event {event:?}"),
            || self.diagnostics(),
            || {
                self.audit_events()
                    .into_iter()
                    .find(|e| e["event"] == event && pred(e))
            },
        )
    }

    /// Waits until `up` holds at least `n` messages.
    pub fn wait_for_messages(&self, up: &Upstream, n: usize) -> Vec<Received> {
        wait_until(
            &format!("{n} message(s) in {}", up.dir.display()),
            || {
                format!(
                    "{}\n--- upstream log ---\n{}",
                    self.diagnostics(),
                    up.proc.log_text()
                )
            },
            || {
                let got = received(&up.dir);
                (got.len() >= n).then_some(got)
            },
        )
    }

    /// Waits until `sealgate queue list` shows no entry.
    pub fn wait_for_empty_queue(&self) {
        wait_until(
            "an empty queue",
            || self.queue_list(),
            || self.queue_list().contains("0 entries queued").then_some(()),
        );
    }

    /// `sealgate queue list` output (exit status must be 0).
    pub fn queue_list(&self) -> String {
        let out = Command::new(SEALGATE)
            .args(["queue", "list", "-c"])
            .arg(&self.config)
            .output()
            .expect("run sealgate queue list");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "queue list failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// What a failing test should print: server log and audit log tails.
    pub fn diagnostics(&self) -> String {
        let tail = |s: String, n: usize| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        let serve_logs: String = (1..=self.serves)
            .map(|i| {
                let p = self.path().join(format!("serve-{i}.log"));
                format!(
                    "--- serve-{i}.log ---\n{}\n",
                    tail(std::fs::read_to_string(p).unwrap_or_default(), 40)
                )
            })
            .collect();
        format!(
            "{serve_logs}--- audit.jsonl ---\n{}",
            tail(std::fs::read_to_string(&self.audit).unwrap_or_default(), 30)
        )
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.kill_serve();
    }
}

/// Checks that `arrived` is exactly what sealgate adds (a `Received:` header, and `Date:`
/// / `Message-ID:` / `From:` when missing) followed by `sent` byte for byte.
pub fn assert_relayed_unchanged(sent: &[u8], arrived: &[u8], what: &str) {
    assert!(
        arrived.len() >= sent.len() && arrived.ends_with(sent),
        "{what}: the relayed message is not the submitted one plus trace headers\n--- sent ---\n{}\n--- arrived ---\n{}",
        String::from_utf8_lossy(sent),
        String::from_utf8_lossy(arrived)
    );
    let prefix = String::from_utf8_lossy(&arrived[..arrived.len() - sent.len()]).into_owned();
    assert!(
        prefix.starts_with("Received: from "),
        "{what}: no Received header first:\n{prefix}"
    );
    assert!(
        prefix.ends_with("\r\n"),
        "{what}: prefix does not end a line:\n{prefix}"
    );
    let lines: Vec<&str> = prefix
        .strip_suffix("\r\n")
        .unwrap_or(&prefix)
        .split("\r\n")
        .collect();
    // Like Postfix's cleanup, sealgate adds a From field (the envelope sender) to a
    // message that has none.
    let sent_has_from = header_value(sent, "From").is_some();
    for (i, l) in lines.iter().enumerate() {
        let ok = l.starts_with("Received: ")
            || l.starts_with('\t')
            || l.starts_with("Date: ")
            || l.starts_with("Message-ID: ")
            || (l.starts_with("From: ") && !sent_has_from)
            // a body-only submission gets an empty line after the added headers
            || (l.is_empty() && i == lines.len() - 1);
        assert!(ok, "{what}: unexpected added line {l:?} in\n{prefix}");
    }
    assert_eq!(prefix.matches("Received: ").count(), 1, "{what}: {prefix}");
}

/// The output of one sendmail run.
pub struct SendmailRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `sealgate sendmail args` with `input` on stdin, SEALGATE_CONFIG=`config` and
/// the extra environment; as the unprivileged user `nobody` when `as_nobody`.
pub fn sendmail_run(
    args: &[&str],
    config: &Path,
    env: &[(&str, &str)],
    input: &[u8],
    as_nobody: bool,
) -> SendmailRun {
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            sealgate_for_everyone(),
            "sendmail",
        ]);
        c
    } else {
        let mut c = Command::new(SEALGATE);
        c.arg("sendmail");
        c
    };
    cmd.args(args)
        .env("SEALGATE_CONFIG", config)
        .env("USER", "appuser")
        .env_remove("SEALGATE_USER")
        .env_remove("SEALGATE_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn sendmail");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    SendmailRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
