//! A private Debian Postfix 3.7 instance as sealgate's upstream, for one test.
//!
//! [`Postfix::start`] writes its own `config_directory`, `queue_directory` and
//! `data_directory` under a fresh temporary directory, listens with `smtpd` (STARTTLS
//! offered, a certificate from the test CA) on one loopback port, logs through postlogd
//! to `maillog` in that directory, and delivers every configured mailbox into a Maildir
//! under `mail/`. Everything else is as Debian ships it: `allow_percent_hack` and
//! `swap_bangpath` at their defaults (on), `recipient_delimiter = +` as Debian's
//! post-install writes. The local domains (`mydestination`) are where Postfix applies the
//! percent hack and bang paths, so a test can show what such spellings would reach.
//! `postfix -c DIR stop` runs on drop. The instance runs as its own process tree (master
//! and its children), started and stopped by the `postfix` command, as on a server.
//!
//! Needs root (Postfix's master starts as root) and the `postfix` package (`.ci/run`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where Debian installs the Postfix commands.
pub const POSTFIX: &str = "/usr/sbin/postfix";

/// What the instance serves.
#[derive(Debug, Clone)]
pub struct PostfixOptions {
    /// Loopback port of `smtpd`.
    pub port: u16,
    /// PEM certificate (chain) `smtpd` presents with STARTTLS.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The CA that signed `cert` (handed to tests as [`Postfix::ca`]).
    pub ca: PathBuf,
    /// `mydestination`: domains delivered locally (percent hack and bang paths apply).
    pub local_domains: Vec<String>,
    /// Addresses with a Maildir; domains not in `local_domains` become virtual domains.
    pub mailboxes: Vec<String>,
    /// More `main.cf` lines (`name = value`), e.g. `smtpd_tls_protocols = <=TLSv1.2`.
    pub main_extra: Vec<String>,
}

impl PostfixOptions {
    /// The defaults for a test: `approved.test` local with `ceo` and `alice`, and
    /// `user@other.test` in a virtual domain (the "unapproved" destination).
    pub fn new(port: u16, cert: &Path, key: &Path, ca: &Path) -> PostfixOptions {
        PostfixOptions {
            port,
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            ca: ca.to_path_buf(),
            local_domains: vec!["approved.test".into()],
            mailboxes: vec![
                "ceo@approved.test".into(),
                "alice@approved.test".into(),
                "user@other.test".into(),
            ],
            main_extra: Vec::new(),
        }
    }

    /// Uses a [`super::TestEnv`]'s upstream port and its `localhost` certificate.
    pub fn for_env(env: &super::TestEnv) -> PostfixOptions {
        let certs = env.path().join("certs");
        PostfixOptions::new(
            env.upstream_port,
            &certs.join("good.pem"),
            &certs.join("good.key"),
            &certs.join("ca.pem"),
        )
    }
}

/// A running Postfix; stopped on drop.
pub struct Postfix {
    /// Holds config, queue, data, mail and the log (mode 0755: Postfix's users traverse it).
    pub dir: tempfile::TempDir,
    /// `smtpd`'s port on 127.0.0.1.
    pub port: u16,
    /// The CA that signed Postfix's certificate.
    pub ca: PathBuf,
    /// `maillog_file`.
    pub log: PathBuf,
    /// Root of the Maildirs: `mail/<domain>/<local>/`.
    pub mail: PathBuf,
    /// `config_directory`.
    pub config_dir: PathBuf,
    running: bool,
}

fn chown(path: &Path, user: &str) {
    let ok = Command::new("chown")
        .arg(user)
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "chown {user} {}", path.display());
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every service with `chroot = n`: a private instance has no copied /etc in its queue.
const MASTER_CF: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

impl Postfix {
    /// Writes the instance and runs `postfix start`; returns once `smtpd` accepts.
    pub fn start(o: PostfixOptions) -> Postfix {
        let dir = tempfile::Builder::new()
            .prefix("sealgate-postfix-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        set_mode(&root, 0o755);
        let conf = root.join("conf");
        let queue = root.join("queue");
        let data = root.join("data");
        let mail = root.join("mail");
        for d in [&conf, &queue, &data, &mail] {
            std::fs::create_dir_all(d).unwrap();
            set_mode(d, 0o755);
        }
        chown(&data, "postfix");
        chown(&mail, "nobody:nogroup");
        std::fs::copy(&o.cert, conf.join("cert.pem")).unwrap();
        std::fs::copy(&o.key, conf.join("key.pem")).unwrap();
        set_mode(&conf.join("key.pem"), 0o600);
        let mut vmailbox = String::new();
        let mut virtual_domains: Vec<String> = Vec::new();
        for m in &o.mailboxes {
            let (local, domain) = m.rsplit_once('@').expect("mailbox local@domain");
            vmailbox.push_str(&format!("{m} {domain}/{local}/\n"));
            if !o.local_domains.iter().any(|d| d == domain)
                && !virtual_domains.iter().any(|d| d == domain)
            {
                virtual_domains.push(domain.to_owned());
            }
        }
        std::fs::write(conf.join("vmailbox"), vmailbox).unwrap();
        let r = root.display();
        let mut main = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {r}/queue\n\
             data_directory = {r}/data\n\
             maillog_file = {r}/maillog\n\
             maillog_file_prefixes = {r}\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             myhostname = postfix.test\n\
             mydestination = {local}\n\
             mynetworks = 127.0.0.0/8\n\
             recipient_delimiter = +\n\
             alias_maps =\n\
             alias_database =\n\
             local_transport = virtual\n\
             local_recipient_maps = $virtual_mailbox_maps\n\
             virtual_mailbox_domains = {virt}\n\
             virtual_mailbox_base = {r}/mail\n\
             virtual_mailbox_maps = texthash:{r}/conf/vmailbox\n\
             virtual_uid_maps = static:65534\n\
             virtual_gid_maps = static:65534\n\
             smtpd_tls_security_level = may\n\
             smtpd_tls_cert_file = {r}/conf/cert.pem\n\
             smtpd_tls_key_file = {r}/conf/key.pem\n\
             smtpd_tls_loglevel = 1\n\
             smtpd_tls_received_header = yes\n",
            local = o.local_domains.join(", "),
            virt = virtual_domains.join(", "),
        );
        for l in &o.main_extra {
            main.push_str(l);
            main.push('\n');
        }
        std::fs::write(conf.join("main.cf"), main).unwrap();
        std::fs::write(
            conf.join("master.cf"),
            format!(
                "127.0.0.1:{}  inet  n  -  n  -  -  smtpd\n{MASTER_CF}",
                o.port
            ),
        )
        .unwrap();
        let mut pf = Postfix {
            port: o.port,
            ca: o.ca.clone(),
            log: root.join("maillog"),
            mail,
            config_dir: conf,
            dir,
            running: false,
        };
        let out = pf.postfix("start");
        assert!(
            out.status.success(),
            "postfix start failed:\n{}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            pf.log_text()
        );
        pf.running = true;
        let deadline = Instant::now() + super::TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", o.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "postfix never listened on {}:\n{}",
                o.port,
                pf.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pf
    }

    /// Runs `postfix -c CONFIG_DIR <verb>`.
    pub fn postfix(&self, verb: &str) -> std::process::Output {
        Command::new(POSTFIX)
            .arg("-c")
            .arg(&self.config_dir)
            .arg(verb)
            .output()
            .expect("run postfix (apt-get install postfix)")
    }

    /// `postfix stop` (idempotent).
    pub fn stop(&mut self) {
        if self.running {
            self.running = false;
            let _ = self.postfix("stop");
        }
    }

    /// The mail log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines of delivery attempts (`status=`), in order.
    pub fn deliveries(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains(" status="))
            .map(str::to_owned)
            .collect()
    }

    /// The Maildir of `address` (`mail/<domain>/<local>/`).
    pub fn maildir(&self, address: &str) -> PathBuf {
        let (local, domain) = address.rsplit_once('@').expect("local@domain");
        self.mail.join(domain).join(local)
    }

    /// Messages delivered to `address` (Maildir `new/` and `cur/`), oldest name first.
    pub fn messages(&self, address: &str) -> Vec<String> {
        let md = self.maildir(address);
        let mut files: Vec<PathBuf> = ["new", "cur"]
            .iter()
            .filter_map(|d| std::fs::read_dir(md.join(d)).ok())
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned())
            .collect()
    }

    /// Every delivered message under `mail/`, as (Maildir path relative to `mail/`, text).
    pub fn all_messages(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut stack = vec![self.mail.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(rel) = p.strip_prefix(&self.mail) {
                    let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default())
                        .into_owned();
                    out.push((rel.display().to_string(), text));
                }
            }
        }
        out.sort();
        out
    }

    /// Waits until the log holds a line for which `pred` is true; returns it.
    pub fn wait_for_log(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        super::wait_until(
            what,
            || self.log_text(),
            || self.log_text().lines().find(|l| pred(l)).map(str::to_owned),
        )
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
    }
}
