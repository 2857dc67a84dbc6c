//! The client half of the interop matrix (issue 8 §B): sixteen real mail clients, each a
//! program in its own process (tests/interop/clients/, installed by .ci/run), send the
//! same four messages (plain ASCII; UTF-8 subject, display name and body; an attachment;
//! a single-line HTML body of 6,026 octets) through `sealgate serve` with a DEFAULT-like
//! configuration plus DKIM, to the aiosmtpd sink as upstream. Each landed message is
//! decoded with Python's email package (tests/interop/check_landed.py) and must say what
//! was sent; its DKIM signature must verify with dkimpy. One message goes through a
//! sign+encrypt rule and must decrypt and verify with `openssl cms`.
//!
//! The test writes the matrix to target/interop-matrix.md (scripts/interop-table.sh puts
//! it into README.md) before it asserts, so a failing cell is recorded with its reason.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::interop::*;
use support::*;

const CLIENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/clients");
const JAVA_CP: &str = "/usr/share/java/jakarta-mail.jar:/usr/share/java/jakarta-activation.jar";
const SENDER: &str = "app@example.com";

/// One client of the matrix.
struct Client {
    name: &'static str,
    /// How it hands the message over, for the table.
    via: &'static str,
    /// The Debian/npm packages it needs (named when missing).
    package: &'static str,
    /// Shell tests that must all succeed for the client to be usable.
    probes: &'static [&'static str],
    /// The command line before HOST PORT FROM TO CASE (`{sendmail}` is replaced).
    argv: &'static [&'static str],
}

const fn client(
    name: &'static str,
    via: &'static str,
    package: &'static str,
    probes: &'static [&'static str],
    argv: &'static [&'static str],
) -> Client {
    Client {
        name,
        via,
        package,
        probes,
        argv,
    }
}

const ALL: &[Client] = &[
    client(
        "python smtplib sendmail(bytes)",
        "SMTP, LF line ends",
        "python3",
        &["command -v python3"],
        &["python3", "python_sendmail_bytes.py"],
    ),
    client(
        "python smtplib sendmail(str)",
        "SMTP",
        "python3",
        &["command -v python3"],
        &["python3", "python_sendmail_str.py"],
    ),
    client(
        "python smtplib send_message",
        "SMTP",
        "python3",
        &["command -v python3"],
        &["python3", "python_send_message.py"],
    ),
    client(
        "nodemailer",
        "SMTP",
        "nodejs, npm; `npm ci` in tests/interop/node",
        &[
            "command -v node",
            "test -f ../node/node_modules/nodemailer/package.json",
        ],
        &["node", "nodemailer.js"],
    ),
    client(
        "Perl Net::SMTP",
        "SMTP",
        "perl",
        &["perl -MNet::SMTP -MMIME::Base64 -e1"],
        &["perl", "perl_net_smtp.pl"],
    ),
    client(
        "Perl Email::Sender",
        "SMTP",
        "libemail-sender-perl, libemail-mime-perl",
        &["perl -MEmail::Sender::Simple -MEmail::Sender::Transport::SMTP -MEmail::MIME -e1"],
        &["perl", "perl_email_sender.pl"],
    ),
    client(
        "Ruby mail gem (net/smtp)",
        "SMTP",
        "ruby, ruby-mail",
        &["ruby -rmail -e1"],
        &["ruby", "ruby_mail.rb"],
    ),
    client(
        "PHP mail()",
        "sendmail -t -i",
        "php-cli",
        &["command -v php"],
        &[
            "php",
            "-d",
            "sendmail_path={sendmail} -t -i",
            "php_mail.php",
        ],
    ),
    client(
        "PHPMailer",
        "SMTP",
        "php-cli, libphp-phpmailer",
        &[
            "command -v php",
            "test -f /usr/share/php/libphp-phpmailer/autoload.php",
        ],
        &["php", "phpmailer.php"],
    ),
    client(
        "Jakarta Mail",
        "SMTP",
        "libjakarta-mail-java, a JDK (default-jdk-headless)",
        &[
            "command -v java",
            "test -f /usr/share/java/jakarta-mail.jar",
            "test -f /usr/share/java/jakarta-activation.jar",
            "java --list-modules | grep -q jdk.compiler",
        ],
        &["java", "-cp", JAVA_CP, "JakartaMail.java"],
    ),
    client(
        "Go net/smtp",
        "SMTP",
        "golang-go",
        &["command -v go"],
        &["go", "run", "go_net_smtp.go"],
    ),
    client(
        "curl --upload-file",
        "SMTP, LF file",
        "curl",
        &["command -v curl"],
        &["sh", "curl.sh"],
    ),
    client(
        "msmtp",
        "SMTP, LF on stdin",
        "msmtp",
        &["command -v msmtp"],
        &["sh", "msmtp.sh"],
    ),
    client(
        "swaks",
        "SMTP",
        "swaks",
        &["command -v swaks"],
        &["sh", "swaks.sh"],
    ),
    client(
        "s-nail (mailx)",
        "sendmail",
        "s-nail",
        &["command -v s-nail"],
        &["sh", "s-nail.sh"],
    ),
    client(
        "mutt",
        "sendmail",
        "mutt",
        &["command -v mutt"],
        &["sh", "mutt.sh"],
    ),
];

/// Every client whose probes fail, with the packages to install.
fn missing_clients() -> Vec<String> {
    let mut missing = Vec::new();
    for c in ALL {
        for probe in c.probes {
            let ok = Command::new("sh")
                .arg("-c")
                .arg(format!("{probe} >/dev/null 2>&1"))
                .current_dir(CLIENTS)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                missing.push(format!(
                    "{}: `{probe}` failed; install {} (.ci/run does)",
                    c.name, c.package
                ));
                break;
            }
        }
    }
    missing
}

/// The address a client/case pair sends to; it tells the landed messages apart.
fn rcpt_for(client: usize, case: &str) -> String {
    format!("c{client}-{case}@example.net")
}

/// One client's results, one per case.
type RowResults = Vec<Result<(), String>>;

/// Shared context of the client runs.
struct Ctx {
    port: u16,
    sendmail: PathBuf,
    config: PathBuf,
    gocache: PathBuf,
    logs: PathBuf,
}

fn run_client(ctx: &Ctx, idx: usize, case: &str, to: &str) -> Run {
    let c = &ALL[idx];
    let sendmail = ctx.sendmail.display().to_string();
    let argv: Vec<String> = c
        .argv
        .iter()
        .map(|a| a.replace("{sendmail}", &sendmail))
        .collect();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .args(["127.0.0.1", &ctx.port.to_string(), SENDER, to, case])
        .current_dir(CLIENTS)
        .env("SEALGATE_SENDMAIL", &ctx.sendmail)
        .env("SEALGATE_CONFIG", &ctx.config)
        .env("GOCACHE", &ctx.gocache)
        .env("GOPATH", ctx.gocache.join("gopath"))
        .env("GOFLAGS", "")
        .env("GO111MODULE", "off")
        .env("USER", "app");
    run_with_deadline(
        cmd,
        &ctx.logs.join(format!("c{idx}-{case}.log")),
        Duration::from_secs(120),
    )
}

/// The landed message (path) sent to `rcpt`: waits until it is in the sink, or sealgate
/// audited a bounce for it, or 60 s passed.
fn landed(env: &TestEnv, dir: &Path, rcpt: &str) -> Result<PathBuf, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mine = |e: &serde_json::Value| {
        e["rcpts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r.as_str() == Some(rcpt)))
    };
    loop {
        if let Some(m) = received(dir)
            .into_iter()
            .find(|m| m.rcpts.iter().any(|r| r.eq_ignore_ascii_case(rcpt)))
        {
            return Ok(dir.join(m.name));
        }
        let events = env.audit_events();
        if let Some(b) = events.iter().find(|e| e["event"] == "bounced" && mine(e)) {
            return Err(format!(
                "answered 250, then bounced by the upstream: {}",
                b["reasons"]
                    .as_array()
                    .and_then(|r| r.first())
                    .and_then(|r| r.as_str())
                    .unwrap_or("?")
            ));
        }
        if Instant::now() > deadline {
            let seen: Vec<String> = events
                .iter()
                .filter(|e| mine(e))
                .map(|e| e["event"].as_str().unwrap_or("?").to_string())
                .collect();
            return Err(format!(
                "not delivered within 60 s; audit events: {}",
                seen.join(", ")
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The result of one pair: sent, landed, decoded as sent, DKIM verifies.
fn check_pair(
    env: &TestEnv,
    sink: &Path,
    keys: &Path,
    ctx: &Ctx,
    idx: usize,
    case: &str,
) -> Result<(), String> {
    let rcpt = rcpt_for(idx, case);
    let run = run_client(ctx, idx, case, &rcpt);
    if !run.ok() {
        return Err(format!("refused: {}", run.reason()));
    }
    let eml = landed(env, sink, &rcpt)?;
    let got = decode(&eml)?;
    compare(case, &got, true)?;
    dkim_verifies(keys, &eml)
}

/// `openssl cms` decrypts the landed message with the recipient's key and verifies the
/// signature inside against the test CA; returns the signed content.
fn cms_decrypt_verify(dir: &Path, eml: &Path) -> Result<PathBuf, String> {
    let dec = dir.join("smime.dec");
    let out = Command::new("openssl")
        .args(["cms", "-decrypt", "-in"])
        .arg(eml)
        .arg("-recip")
        .arg(dir.join("smime/secure.pem"))
        .arg("-inkey")
        .arg(dir.join("smime/secure.key"))
        .arg("-out")
        .arg(&dec)
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "openssl cms -decrypt: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("")
        ));
    }
    let inner = dir.join("smime.inner.eml");
    let out = Command::new("openssl")
        .args(["cms", "-verify", "-in"])
        .arg(&dec)
        .arg("-CAfile")
        .arg(dir.join("smime/ca.pem"))
        .arg("-out")
        .arg(&inner)
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "openssl cms -verify: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("")
        ));
    }
    Ok(inner)
}

/// Adds an S/MIME signer for app@example.com, a certificate for secure@bank.example and
/// a rule that signs and encrypts everything to it.
fn add_smime(env: &TestEnv) {
    use sealgate::ops::pki;
    let dir = env.path().join("smime");
    std::fs::create_dir_all(dir.join("recipients")).unwrap();
    let ca = pki::ca("interop S/MIME CA").unwrap();
    pki::write_cert(&dir.join("ca.pem"), &ca.cert).unwrap();
    let signer = pki::smime(&ca, SENDER, pki::KeyKind::Rsa2048, -1, 365).unwrap();
    pki::write_cert(&dir.join("signer.pem"), &signer.cert).unwrap();
    pki::write_key(&dir.join("signer.key"), &signer.key).unwrap();
    let rcpt = pki::smime(&ca, "secure@bank.example", pki::KeyKind::Rsa2048, -1, 365).unwrap();
    pki::write_cert(&dir.join("recipients/secure.pem"), &rcpt.cert).unwrap();
    pki::write_cert(&dir.join("secure.pem"), &rcpt.cert).unwrap();
    pki::write_key(&dir.join("secure.key"), &rcpt.key).unwrap();
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config.push_str(&format!(
        "\n[smime]\nrecipient_certs = \"{d}/recipients\"\n\n[[smime.signer]]\nsenders = [\"{SENDER}\"]\n\
         cert = \"{d}/signer.pem\"\nkey_file = \"{d}/signer.key\"\n",
        d = dir.display()
    ));
    std::fs::write(&env.config, config).unwrap();
    std::fs::write(
        env.path().join("policies/50-interop.toml"),
        "[[rule]]\nname = \"interop: sign and encrypt to secure@\"\nto = [\"secure@bank.example\"]\n\
         actions = [\"sign\", \"encrypt\"]\n",
    )
    .unwrap();
}

#[test]
fn real_clients_send_through_a_default_config_and_land_decoded_as_sent_with_dkim() {
    let missing = missing_clients();
    assert!(
        missing.is_empty(),
        "interop clients are missing (run .ci/run):\n{}",
        missing.join("\n")
    );
    let mut env = TestEnv::new(EnvOptions::default());
    let keys = default_like_with_dkim(&env);
    add_smime(&env);
    let sink = env.start_sink(SinkOptions::default());
    env.start_serve();

    let bin = env.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let sendmail = bin.join("sendmail");
    std::os::unix::fs::symlink(SEALGATE, &sendmail).unwrap();
    let logs = env.path().join("client-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let ctx = Ctx {
        port: env.port,
        sendmail,
        config: env.config.clone(),
        gocache: env.path().join("gocache"),
        logs,
    };

    // Six workers take clients from a shared list; each client sends its four cases in turn.
    let started = Instant::now();
    let results: Arc<Mutex<Vec<Option<RowResults>>>> = Arc::new(Mutex::new(vec![None; ALL.len()]));
    let next = Arc::new(Mutex::new(0usize));
    std::thread::scope(|s| {
        for _ in 0..6 {
            let (results, next, ctx, env, keys, sink) =
                (results.clone(), next.clone(), &ctx, &env, &keys, &sink.dir);
            s.spawn(move || loop {
                let idx = {
                    let mut n = next.lock().unwrap();
                    let i = *n;
                    *n += 1;
                    i
                };
                if idx >= ALL.len() {
                    return;
                }
                let row: Vec<Result<(), String>> = CASES
                    .iter()
                    .map(|case| check_pair(env, sink, keys, ctx, idx, case))
                    .collect();
                results.lock().unwrap()[idx] = Some(row);
            });
        }
    });

    // The sign+encrypt rule: one message, decrypted and verified with openssl cms.
    let smime_to = "secure@bank.example";
    let smime = (|| {
        let idx = 2; // python smtplib send_message
        let run = run_client(&ctx, idx, "utf8", smime_to);
        if !run.ok() {
            return Err(format!("refused: {}", run.reason()));
        }
        let eml = landed(&env, &sink.dir, smime_to)?;
        dkim_verifies(&keys, &eml)?;
        let inner = cms_decrypt_verify(env.path(), &eml)?;
        compare("utf8", &decode(&inner)?, false)?;
        // The outer header still carries the decoded subject and sender name.
        compare("utf8", &decode(&eml)?, true).or_else(|e| {
            if e.starts_with("no text/plain") {
                Ok(())
            } else {
                Err(e)
            }
        })
    })();
    let elapsed = started.elapsed();

    let results = results.lock().unwrap().clone();
    let mut md = String::new();
    md.push_str(
        "### Clients\n\nEach client sends four messages through `sealgate serve` (default \
         settings, DKIM key for example.com) to an aiosmtpd upstream; a cell passes when the \
         message landed, decodes (Python `email`) to exactly what was sent, and its DKIM \
         signature verifies (dkimpy). Written by `tests/interop_clients.rs`.\n\n\
         | client | hands over by | plain ASCII | UTF-8 subject, name, body | attachment | 6,026-octet HTML line |\n\
         |---|---|---|---|---|---|\n",
    );
    let mut failures = Vec::new();
    for (i, c) in ALL.iter().enumerate() {
        let row = results[i].clone().unwrap_or_default();
        md.push_str(&format!("| {} | {} |", c.name, c.via));
        for (case, r) in CASES.iter().zip(&row) {
            md.push_str(&format!(" {} |", cell(r)));
            if let Err(e) = r {
                failures.push(format!("{} / {case}: {e}", c.name));
            }
        }
        md.push('\n');
    }
    md.push_str(&format!(
        "\nSigned and encrypted by a rule (python `send_message`, UTF-8 case, to a recipient \
         with a certificate): `openssl cms -decrypt` then `-verify`, content as sent, DKIM: \
         {}.\n",
        cell(&smime)
    ));
    if let Err(e) = &smime {
        failures.push(format!("S/MIME rule: {e}"));
    }
    let path = write_matrix_part("10-clients", &md);
    eprintln!(
        "{md}\n(written to {}; {} pairs in {:.0?})",
        path.display(),
        ALL.len() * CASES.len() + 1,
        elapsed
    );
    assert!(
        failures.is_empty(),
        "{} of {} client/message pairs failed:\n{}\n{}",
        failures.len(),
        ALL.len() * CASES.len() + 1,
        failures.join("\n"),
        env.diagnostics()
    );
}

#[test]
fn interop_table_script_replaces_only_the_marked_readme_section() {
    let dir = tempfile::tempdir().unwrap();
    let readme = dir.path().join("README.md");
    let matrix = dir.path().join("matrix.md");
    std::fs::write(
        &readme,
        "# t\n\nbefore\n<!-- interop-matrix:begin -->\nold table\n<!-- interop-matrix:end -->\nafter\n",
    )
    .unwrap();
    std::fs::write(&matrix, "| a | b |\n|---|---|\n| x | **FAIL**: why |\n").unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/interop-table.sh");
    for _ in 0..2 {
        let out = Command::new("bash")
            .arg(script)
            .arg(&matrix)
            .arg(&readme)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(&readme).unwrap();
    assert!(
        text.starts_with("# t\n\nbefore\n<!-- interop-matrix:begin -->\n"),
        "{text}"
    );
    assert!(
        text.ends_with("<!-- interop-matrix:end -->\nafter\n"),
        "{text}"
    );
    assert!(!text.contains("old table"), "{text}");
    assert_eq!(text.matches("| x | **FAIL**: why |").count(), 1, "{text}");
    // Without the markers the script refuses instead of appending somewhere.
    std::fs::write(&readme, "# no markers\n").unwrap();
    let out = Command::new("bash")
        .arg(script)
        .arg(&matrix)
        .arg(&readme)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&readme).unwrap(), "# no markers\n");
}

#[test]
fn a_failed_client_is_summed_up_by_the_smtp_reply_it_got() {
    let status = Command::new("false").status().unwrap();
    let run = |output: &str| Run {
        status: Some(status),
        output: output.into(),
    };
    let py = run("Traceback (most recent call last):\n  File \"x.py\", line 12\nsmtplib.SMTPDataError: (550, b'5.6.11 message refused: bare LF (RFC 5321 \\xc2\\xa72.3.8)')\n");
    assert!(
        py.reason()
            .starts_with("550 5.6.11 message refused: bare LF (RFC 5321"),
        "{}",
        py.reason()
    );
    let curl = run("< 550 5.6.11 message refused\n* closing\ncurl: (8) Weird server reply\n");
    assert!(
        curl.reason().starts_with("550 5.6.11 message refused"),
        "{}",
        curl.reason()
    );
    let other = run("something broke\n\n");
    assert!(
        other.reason().starts_with("something broke"),
        "{}",
        other.reason()
    );
}
