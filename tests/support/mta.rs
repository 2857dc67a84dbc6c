//! Exim and chasquid as real upstreams for the interop matrix (tests/interop_upstreams.rs).
//!
//! Debian's MTA packages conflict with each other (each provides mail-transport-agent)
//! and Postfix is the one installed, so .ci/run unpacks exim4-daemon-light, exim4-base
//! and chasquid with `apt-get download` + `dpkg-deb -x` under /opt/sealgate-test
//! (override with SEALGATE_TEST_EXIM / SEALGATE_TEST_CHASQUID). Each test starts its own
//! instance with its own configuration, spool, log and mailbox in a temporary directory,
//! listening on loopback ports picked at run time, with the test certificate for
//! `localhost` and AUTH for one fixed user. Messages land as one file per message under
//! `mail/LOCALPART/new/`.
//!
//! Exim, started as root with `-C`, drops to its compiled-in user `Debian-exim` (which
//! .ci/run creates), so everything it reads or writes is handed to that user.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{free_port, is_root, wait_for_port, Proc, TestEnv};

/// The user name and password sealgate authenticates with (chasquid: a full address).
pub const EXIM_USER: &str = "sealgate";
pub const CHASQUID_USER: &str = "sealgate@example.net";
pub const PASSWORD: &str = "interop-secret";

fn root(var: &str, default: &str) -> PathBuf {
    PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_string()))
}

/// The unpacked Exim tree.
pub fn exim_root() -> PathBuf {
    root("SEALGATE_TEST_EXIM", "/opt/sealgate-test/exim")
}

/// The unpacked chasquid tree.
pub fn chasquid_root() -> PathBuf {
    root("SEALGATE_TEST_CHASQUID", "/opt/sealgate-test/chasquid")
}

/// What is missing to run the MTA harness (empty when all is there).
pub fn missing() -> Vec<String> {
    let mut m = Vec::new();
    if !exim_root().join("usr/sbin/exim4").exists() {
        m.push(format!(
            "{}/usr/sbin/exim4 (exim4-daemon-light + exim4-base, unpacked by .ci/run)",
            exim_root().display()
        ));
    }
    if is_root() && uid_of("Debian-exim").is_none() {
        m.push("the system user Debian-exim (.ci/run creates it)".into());
    }
    if !chasquid_root().join("usr/bin/chasquid").exists() {
        m.push(format!(
            "{}/usr/bin/chasquid (chasquid, unpacked by .ci/run)",
            chasquid_root().display()
        ));
    }
    m
}

fn id(args: &[&str]) -> Option<String> {
    let out = Command::new("id").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn uid_of(user: &str) -> Option<(u32, u32)> {
    let uid = id(&["-u", user])?.parse().ok()?;
    let gid = id(&["-g", user])?.parse().ok()?;
    Some((uid, gid))
}

/// Hands `path` (recursively) to `owner` when running as root.
fn give(path: &Path, owner: Option<(u32, u32)>) {
    let Some((uid, gid)) = owner else { return };
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap().flatten() {
            give(&e.path(), owner);
        }
    }
}

/// A running MTA instance; killed on drop (its temporary directory goes with it).
pub struct Mta {
    pub name: String,
    pub proc: Proc,
    /// Its temporary directory.
    pub dir: tempfile::TempDir,
    /// Where it delivers (see [`Mta::delivered`]).
    pub mail: PathBuf,
    /// Its own logs (Exim: mainlog; chasquid: mail log and debug log).
    pub logs: Vec<PathBuf>,
    /// How it was configured, for the matrix.
    pub settings: String,
}

impl Mta {
    /// The messages delivered to `rcpt`, oldest first. chasquid's delivery agent files
    /// them by local part; Exim keeps one maildir (a file name from `$local_part` is
    /// tainted data it refuses) and names the recipient in `Envelope-to:`.
    pub fn delivered(&self, rcpt: &str) -> Vec<PathBuf> {
        let local = rcpt.split('@').next().unwrap_or(rcpt);
        let list = |dir: PathBuf| -> Vec<PathBuf> {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map(|rd| rd.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            files.sort();
            files
        };
        if self.name == "exim" {
            let want = format!("Envelope-to: {rcpt}");
            list(self.mail.join("exim/new"))
                .into_iter()
                .filter(|f| {
                    std::fs::read(f).is_ok_and(|b| {
                        String::from_utf8_lossy(&b)
                            .lines()
                            .take_while(|l| !l.is_empty())
                            .any(|l| l.eq_ignore_ascii_case(&want))
                    })
                })
                .collect()
        } else {
            list(self.mail.join(local).join("new"))
        }
    }

    /// All its logs, concatenated.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        for l in &self.logs {
            s.push_str(&String::from_utf8_lossy(
                &std::fs::read(l).unwrap_or_default(),
            ));
        }
        s.push_str(&self.proc.log_text());
        s
    }
}

fn tempdir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    // Exim runs as Debian-exim: it must reach its files inside.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Exim with STARTTLS (the test certificate) and AUTH PLAIN/LOGIN for [`EXIM_USER`],
/// on `env.upstream_port`. `strict`: `accept_8bitmime = false` and a DATA ACL that
/// refuses any line over 998 octets (`$max_received_linelength`; Exim 4.96 has no
/// option for it).
pub fn start_exim(env: &TestEnv, strict: bool) -> Mta {
    let dir = tempdir("sealgate-exim-");
    let d = dir.path();
    for sub in ["spool", "log", "mail"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::fs::copy(env.path().join("certs/good.pem"), d.join("cert.pem")).unwrap();
    std::fs::copy(env.path().join("certs/good.key"), d.join("key.pem")).unwrap();
    let exim = exim_root().join("usr/sbin/exim4");
    let (user, owner) = if is_root() {
        ("Debian-exim".to_string(), uid_of("Debian-exim"))
    } else {
        (id(&["-un"]).unwrap_or_default(), None)
    };
    let group = if is_root() {
        "Debian-exim".to_string()
    } else {
        id(&["-gn"]).unwrap_or_default()
    };
    let strict_main = if strict {
        "accept_8bitmime = false\n"
    } else {
        ""
    };
    let strict_acl = if strict {
        "  deny message = 5.5.2 line longer than 998 octets ($max_received_linelength)\n    \
         condition = ${if >{$max_received_linelength}{998}}\n"
    } else {
        ""
    };
    let config = format!(
        r#"# Written by tests/support/mta.rs
primary_hostname = exim.test
exim_path = {exim}
exim_user = {user}
exim_group = {group}
keep_environment =
spool_directory = {d}/spool
log_file_path = {d}/log/%slog
log_selector = +tls_cipher +tls_peerdn +smtp_connection +received_recipients
daemon_smtp_ports = {port}
local_interfaces = 127.0.0.1
tls_advertise_hosts = *
tls_certificate = {d}/cert.pem
tls_privatekey = {d}/key.pem
domainlist local_domains = *
acl_smtp_rcpt = acl_rcpt
acl_smtp_data = acl_data
{strict_main}
begin acl
acl_rcpt:
  accept authenticated = *
  deny message = 5.7.1 authentication required
acl_data:
{strict_acl}  accept

begin routers
all:
  driver = accept
  transport = maildir

begin transports
maildir:
  driver = appendfile
  directory = {d}/mail/exim
  maildir_format
  create_directory
  delivery_date_add
  envelope_to_add
  return_path_add
  user = {user}

begin authenticators
plain:
  driver = plaintext
  public_name = PLAIN
  server_advertise_condition = ${{if def:tls_in_cipher}}
  server_condition = ${{if and {{{{eq{{$auth2}}{{{EXIM_USER}}}}}{{eq{{$auth3}}{{{PASSWORD}}}}}}}}}
  server_set_id = $auth2
login:
  driver = plaintext
  public_name = LOGIN
  server_advertise_condition = ${{if def:tls_in_cipher}}
  server_prompts = Username:: : Password::
  server_condition = ${{if and {{{{eq{{$auth1}}{{{EXIM_USER}}}}}{{eq{{$auth2}}{{{PASSWORD}}}}}}}}}
  server_set_id = $auth1
"#,
        exim = exim.display(),
        d = d.display(),
        port = env.upstream_port,
    );
    // Exim wants its configuration owned by root (CONFIGURE_OWNER): the rest is its own.
    for sub in ["spool", "log", "mail", "cert.pem", "key.pem"] {
        give(&d.join(sub), owner);
    }
    std::fs::write(d.join("exim.conf"), config).unwrap();
    let out = std::fs::File::create(d.join("daemon.out")).unwrap();
    let child = Command::new(&exim)
        .arg("-C")
        .arg(d.join("exim.conf"))
        .args(["-bdf", "-q5s", "-oP"])
        .arg(d.join("exim.pid"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", exim.display()));
    let mut proc = Proc {
        child,
        log: d.join("daemon.out"),
        name: "exim".into(),
    };
    wait_for_port(env.upstream_port, &mut proc);
    Mta {
        name: "exim".into(),
        proc,
        mail: d.join("mail"),
        logs: vec![d.join("log/mainlog"), d.join("log/paniclog")],
        settings: if strict {
            "`accept_8bitmime = false`, DATA lines ≤ 998 octets".into()
        } else {
            "defaults".into()
        },
        dir,
    }
}

/// chasquid with the test certificate and user [`CHASQUID_USER`]; its submission port
/// (STARTTLS) or, with `implicit`, its submission-over-TLS port is `env.upstream_port`.
/// `local_users` get mailboxes (chasquid refuses unknown local recipients).
pub fn start_chasquid(env: &TestEnv, implicit: bool, local_users: &[&str]) -> Mta {
    let dir = tempdir("sealgate-chasquid-");
    let d = dir.path();
    let conf = d.join("conf");
    std::fs::create_dir_all(conf.join("certs/localhost")).unwrap();
    std::fs::create_dir_all(d.join("data")).unwrap();
    std::fs::create_dir_all(d.join("mail")).unwrap();
    std::fs::copy(
        env.path().join("certs/good.pem"),
        conf.join("certs/localhost/fullchain.pem"),
    )
    .unwrap();
    std::fs::copy(
        env.path().join("certs/good.key"),
        conf.join("certs/localhost/privkey.pem"),
    )
    .unwrap();
    // The delivery agent: one file per message in mail/LOCALPART/new/.
    let deliver = d.join("deliver.sh");
    std::fs::write(
        &deliver,
        format!(
            "#!/bin/sh\n# chasquid's mail_delivery_agent_bin: $1 is the recipient.\n\
             box={mail}/${{1%%@*}}\nmkdir -p \"$box/tmp\" \"$box/new\"\nf=\"$box/tmp/$$\"\n\
             cat > \"$f\" && mv \"$f\" \"$box/new/$(date +%s%N).$$.eml\"\n",
            mail = d.join("mail").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&deliver, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (sub, tls) = if implicit {
        (free_port(), env.upstream_port)
    } else {
        (env.upstream_port, free_port())
    };
    std::fs::write(
        conf.join("chasquid.conf"),
        format!(
            "# Written by tests/support/mta.rs\nhostname: \"localhost\"\n\
             smtp_address: \"127.0.0.1:{smtp}\"\nsubmission_address: \"127.0.0.1:{sub}\"\n\
             submission_over_tls_address: \"127.0.0.1:{tls}\"\ndata_dir: \"{d}/data\"\n\
             mail_delivery_agent_bin: \"{deliver}\"\nmail_delivery_agent_args: \"%to%\"\n\
             mail_log_path: \"{d}/mail.log\"\n",
            smtp = free_port(),
            d = d.display(),
            deliver = deliver.display(),
        ),
    )
    .unwrap();
    let util = chasquid_root().join("usr/bin/chasquid-util");
    let mut users = vec![CHASQUID_USER];
    users.extend_from_slice(local_users);
    for u in users {
        let out = Command::new(&util)
            .arg(format!("-C={}", conf.display()))
            .arg("user-add")
            .arg(u)
            .arg(format!("--password={PASSWORD}"))
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", util.display()));
        assert!(
            out.status.success(),
            "chasquid-util user-add {u}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = std::fs::File::create(d.join("chasquid.out")).unwrap();
    let bin = chasquid_root().join("usr/bin/chasquid");
    let child = Command::new(&bin)
        .arg("-config_dir")
        .arg(&conf)
        .arg("-logfile")
        .arg(d.join("chasquid.log"))
        .args(["-v", "1"])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let mut proc = Proc {
        child,
        log: d.join("chasquid.out"),
        name: "chasquid".into(),
    };
    wait_for_port(env.upstream_port, &mut proc);
    Mta {
        name: "chasquid".into(),
        proc,
        mail: d.join("mail"),
        logs: vec![d.join("mail.log"), d.join("chasquid.log")],
        settings: if implicit {
            "submission over TLS (implicit), defaults".into()
        } else {
            "submission with STARTTLS, defaults".into()
        },
        dir,
    }
}
