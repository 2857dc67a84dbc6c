//! sendmail's modes and options as callers use them (issue 8): `-bs`, `-bp`, `-bv`,
//! `-bi`, `-bt`, `-q`, `-h`, clustered and harmless options, and the maildrop that keeps
//! a message while `serve` is down until `serve` collects it (at start and on SIGUSR1).
//! Every test runs the `sealgate` binary; the maildrop tests run sendmail as `nobody`.

mod support;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const MSG: &[u8] = b"From: App <app@example.com>\nTo: user@example.net\nSubject: modes\n\nbody\n";

/// `-bs`: an SMTP session on stdin/stdout is the listener's own session.
#[test]
fn bs_runs_an_smtp_session_on_stdin_and_stdout() {
    let mut env = TestEnv::new(EnvOptions::default());
    let up = env.start_good_capture();
    env.start_serve();
    let script = b"EHLO app.local\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<user@example.net>\r\n\
DATA\r\nFrom: app@example.com\r\nTo: user@example.net\r\nSubject: via -bs\r\n\r\nhello\r\n..dot\r\n.\r\nQUIT\r\n";
    let r = sendmail_run(&["-bs"], &env.config, &[], script, false);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.starts_with("220 gw.test"), "{}", r.stdout);
    for want in ["250-gw.test", "354", "250 2.0.0", "221"] {
        assert!(r.stdout.contains(want), "{want}: {}", r.stdout);
    }
    let got = env.wait_for_messages(&up, 1);
    assert_eq!(got[0].from, "app@example.com");
    assert!(
        got[0].text().ends_with("\r\n\r\nhello\r\n.dot\r\n"),
        "{}",
        got[0].text()
    );
}

/// `-bv`: each recipient checked at RCPT (the policy's verdict), nothing sent; exit 67
/// when one is undeliverable.
#[test]
fn bv_verifies_recipients_without_sending() {
    let mut env = TestEnv::new(EnvOptions::default());
    std::fs::write(
        env.path().join("policies/00-recipients.toml"),
        "[recipients]\nallow = [\"*\"]\ndeny = [\"ceo@example.com\"]\n",
    )
    .unwrap();
    let up = env.start_good_capture();
    env.start_serve();
    let r = sendmail_run(
        &["-bv", "ok@example.net", "ceo@example.com"],
        &env.config,
        &[],
        b"",
        false,
    );
    assert_eq!(r.code, Some(67), "{}", r.stderr);
    assert!(
        r.stdout.contains("ok@example.net... deliverable\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("ceo@example.com... undeliverable: 550"),
        "{}",
        r.stdout
    );
    let r = sendmail_run(&["-bv", "ok@example.net"], &env.config, &[], b"", false);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    std::thread::sleep(Duration::from_millis(500));
    assert!(received(&up.dir).is_empty());
    assert!(!env.audit_events().iter().any(|e| e["event"] == "received"));
}

/// `-bp` lists the queue as `sealgate queue list` does.
#[test]
fn bp_lists_the_queue() {
    let mut env = TestEnv::new(EnvOptions::default());
    // No upstream: the message stays queued.
    env.start_serve();
    let r = sendmail_run(
        &["-i", "-f", "queued@example.com", "u@example.net"],
        &env.config,
        &[],
        MSG,
        false,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let r = sendmail_run(&["-bp"], &env.config, &[], b"", false);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.starts_with("id "), "{}", r.stdout);
    assert!(r.stdout.contains("queued@example.com"), "{}", r.stdout);
}

/// `-bi`/`-I` (newaliases) do nothing and succeed; `-bt` and `-bd` are refused with 64
/// and a reason; `-h` and `--help` print the usage; nothing is read or sent.
#[test]
fn other_modes_answer_as_sendmail_does() {
    let mut env = TestEnv::new(EnvOptions::default());
    let up = env.start_good_capture();
    env.start_serve();
    for args in [vec!["-bi"], vec!["-I"]] {
        let r = sendmail_run(&args, &env.config, &[], MSG, false);
        assert_eq!(r.code, Some(0), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("newaliases"), "{}", r.stderr);
    }
    let r = sendmail_run(&["-bt"], &env.config, &[], MSG, false);
    assert_eq!(r.code, Some(64));
    assert!(
        r.stderr
            .contains("-bt (address test mode) is not supported"),
        "{}",
        r.stderr
    );
    let r = sendmail_run(&["-bd"], &env.config, &[], MSG, false);
    assert_eq!(r.code, Some(64));
    assert!(r.stderr.contains("sealgate serve"), "{}", r.stderr);
    for args in [vec!["-h"], vec!["--help"], vec!["-h", "user@example.net"]] {
        let r = sendmail_run(&args, &env.config, &[], MSG, false);
        assert_eq!(r.code, Some(0), "{args:?}");
        assert!(r.stdout.starts_with("usage: sendmail"), "{}", r.stdout);
    }
    let r = sendmail_run(&["-d0.1", "user@example.net"], &env.config, &[], MSG, false);
    assert_eq!(r.code, Some(64));
    assert!(r.stderr.contains("unknown option -d"), "{}", r.stderr);
    // `-q` alone flushes the queue, `-q30m` is ignored: neither takes the word after it
    // as its argument, and neither reads or sends a message.
    let r = sendmail_run(&["-q"], &env.config, &[], MSG, false);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let r = sendmail_run(&["-q30m", "user@example.net"], &env.config, &[], MSG, false);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("-q30m ignored"), "{}", r.stderr);
    std::thread::sleep(Duration::from_millis(500));
    assert!(received(&up.dir).is_empty());
}

/// Clustered flags and the options cron, mutt, PHP and others pass are accepted as
/// Postfix's sendmail accepts them, each taking its own argument and no more:
/// `-h 3` is a hop count, `-c` takes none, `-r` is `-f`.
#[test]
fn clustered_and_harmless_options_are_accepted() {
    let mut env = TestEnv::new(EnvOptions::default());
    let up = env.start_good_capture();
    env.start_serve();
    let r = sendmail_run(
        &[
            "-ti",
            "-U",
            "-G",
            "-h",
            "3",
            "-Am",
            "-C",
            "/etc/mail/sendmail.cf",
            "-oem",
            "-O",
            "DeliveryMode=b",
            "-N",
            "never",
            "-R",
            "hdrs",
            "-V",
            "envid1",
            "-X",
            "/dev/null",
            "-B",
            "8BITMIME",
            "-F",
            "Cron Daemon",
            "-c",
            "-v",
            "-r",
            "app@example.com",
            "--",
            "extra@example.net",
        ],
        &env.config,
        &[],
        MSG,
        false,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let got = env.wait_for_messages(&up, 1);
    assert_eq!(got[0].from, "app@example.com");
    let mut rcpts = got[0].rcpts.clone();
    rcpts.sort();
    assert_eq!(rcpts, vec!["extra@example.net", "user@example.net"]);
    // -it with a lone dot: kept (-i), and the recipients from the header.
    let r = sendmail_run(
        &["-it"],
        &env.config,
        &[],
        b"To: second@example.net\nSubject: lone dot\n\na\n.\nb\n",
        false,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let got = env.wait_for_messages(&up, 2);
    let m = got
        .iter()
        .find(|m| m.rcpts == vec!["second@example.net"])
        .unwrap();
    assert!(
        m.text().ends_with("\r\n\r\na\r\n.\r\nb\r\n"),
        "{}",
        m.text()
    );
}

/// Makes the test environment reachable by `nobody` (the tempdir is 0700) and the
/// configuration readable, as an installation with callers of other users has it.
fn open_for_callers(env: &TestEnv) {
    std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&env.config, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// serve prepares the maildrop as it starts, just after it binds its listener: waits
/// for it (mode 3733) and returns its path.
fn wait_for_maildrop(env: &TestEnv) -> PathBuf {
    let md = env.spool.join("maildrop");
    wait_until("serve prepares the maildrop", String::new, || {
        std::fs::metadata(&md)
            .ok()
            .filter(|m| m.mode() & 0o7777 == 0o3733)
    });
    md
}

fn maildrop_files(env: &TestEnv) -> Vec<PathBuf> {
    std::fs::read_dir(env.spool.join("maildrop"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "mail"))
                .collect()
        })
        .unwrap_or_default()
}

/// Issue 8: nothing is lost while `serve` is down. sendmail run as `nobody` keeps the
/// message in `<spool>/maildrop/` (a 0640 file owned by nobody, in a 3733 directory
/// nobody cannot list), exits 0 and says so; `serve`, started again, collects it
/// through the session and policy path (identified by the uid) and the upstream gets
/// it; the file is gone.
#[test]
fn maildrop_keeps_mail_while_serve_is_down_and_serve_delivers_it() {
    if !is_root() {
        eprintln!("skipped: needs root to run sendmail as nobody");
        return;
    }
    let mut env = TestEnv::new(EnvOptions::default());
    open_for_callers(&env);
    env.start_serve();
    let md = wait_for_maildrop(&env);
    env.kill_serve();
    let r = sendmail_run(
        &["-t", "-i"],
        &env.config,
        &[],
        b"From: App <app@example.com>\nTo: user@example.net\nSubject: while down\nMessage-ID: <down@test>\n\nkept\n",
        true,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("the message is kept in"), "{}", r.stderr);
    let files = maildrop_files(&env);
    assert_eq!(files.len(), 1, "{files:?}");
    let meta = std::fs::metadata(&files[0]).unwrap();
    assert_eq!(meta.uid(), 65534, "owned by nobody");
    assert_eq!(meta.mode() & 0o777, 0o640);
    // nobody can drop mail but cannot list the maildrop.
    let ls = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "ls"])
        .arg(&md)
        .output()
        .unwrap();
    assert!(!ls.status.success(), "nobody listed the maildrop");

    let up = env.start_sink(SinkOptions::default());
    env.start_serve();
    let got = env.wait_for_messages(&up, 1);
    assert_eq!(got[0].from, "appuser@gw.test");
    assert_eq!(got[0].rcpts, vec!["user@example.net"]);
    assert!(
        got[0].text().contains("from maildrop uid 65534"),
        "{}",
        got[0].text()
    );
    assert!(got[0].text().ends_with("\r\n\r\nkept\r\n"));
    wait_until("the maildrop file removed", String::new, || {
        maildrop_files(&env).is_empty().then_some(())
    });
    env.wait_for_event("relayed", |e| e["message_id"] == "<down@test>");
}

/// A maildrop message meets the policy like an SMTP one: a denied recipient is refused
/// when collected (audited with the uid, file removed, not sent; the sender gets a DSN),
/// and collection also runs on SIGUSR1 while `serve` is up (sendmail drops the message
/// when its configuration names a listener that is not there).
#[test]
fn maildrop_is_collected_on_sigusr1_and_the_policy_applies() {
    if !is_root() {
        eprintln!("skipped: needs root to run sendmail as nobody");
        return;
    }
    let mut env = TestEnv::new(EnvOptions::default());
    std::fs::write(
        env.path().join("policies/00-recipients.toml"),
        "[recipients]\nallow = [\"*\"]\ndeny = [\"ceo@example.com\"]\n",
    )
    .unwrap();
    open_for_callers(&env);
    let up = env.start_sink(SinkOptions::default());
    env.start_serve();
    wait_for_maildrop(&env);
    // The same installation, as seen by a sendmail whose listener is down.
    let dead = env.path().join("dead-listener.toml");
    let text = std::fs::read_to_string(&env.config).unwrap().replace(
        &format!("127.0.0.1:{}", env.port),
        &format!("127.0.0.1:{}", free_port()),
    );
    let text = text.replace(
        "dir = \"spool\"",
        &format!("dir = \"{}\"", env.spool.display()),
    );
    std::fs::write(&dead, text).unwrap();
    std::fs::set_permissions(&dead, std::fs::Permissions::from_mode(0o644)).unwrap();
    // The third is refused too, and its sender is an address the policy refuses as a
    // recipient: no DSN goes there.
    for (from, rcpt) in [
        ("app@example.com", "ceo@example.com"),
        ("app@example.com", "ok@example.net"),
        ("ceo@example.com", "ceo@example.com"),
    ] {
        let r = sendmail_run(&["-i", "-f", from, rcpt], &dead, &[], MSG, true);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        assert!(r.stderr.contains("kept in"), "{}", r.stderr);
    }
    let pid = env.serve.as_ref().unwrap().pid();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGUSR1) };
    // Well before the 30-second periodic pass: the accepted message, and the DSN that
    // tells the sender about the refused one (headers only, from the null sender).
    let got = wait_until_within(
        Duration::from_secs(20),
        "the maildrop message and the DSN delivered after SIGUSR1",
        String::new,
        || {
            let g = received(&up.dir);
            (g.len() >= 2).then_some(g)
        },
    );
    assert_eq!(got.len(), 2, "{got:?}");
    let ok = got.iter().find(|m| m.from == "app@example.com").unwrap();
    assert_eq!(ok.rcpts, vec!["ok@example.net"]);
    let dsn = got.iter().find(|m| m.from.is_empty()).unwrap();
    assert_eq!(dsn.rcpts, vec!["app@example.com"]);
    let text = dsn.text();
    assert!(
        text.contains("Final-Recipient: rfc822; ceo@example.com"),
        "{text}"
    );
    assert!(text.contains("Action: failed\r\nStatus: 5."), "{text}");
    assert!(
        !text.contains("\r\n\r\nbody\r\n"),
        "the body must not travel back: {text}"
    );
    let refusal = env.wait_for_event("rejected", |e| e["stage"] == "rcpt" && e["uid"] == 65534);
    assert_eq!(refusal["rcpts"][0], "ceo@example.com");
    let suppressed = env.wait_for_event("bounce-suppressed", |e| e["uid"] == 65534);
    assert_eq!(suppressed["to"], "ceo@example.com");
    wait_until("the maildrop files removed", String::new, || {
        maildrop_files(&env).is_empty().then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(received(&up.dir).len(), 2);
}

/// While `serve` is down and the spool has no maildrop (serve never ran, or a caller
/// cannot write there), sendmail exits 75 (EX_TEMPFAIL) and says so: the caller keeps
/// the message.
#[test]
fn without_a_maildrop_sendmail_exits_75() {
    let env = TestEnv::new(EnvOptions::default());
    let r = sendmail_run(&["-i", "u@example.net"], &env.config, &[], MSG, false);
    assert_eq!(r.code, Some(75), "{}", r.stderr);
    assert!(r.stderr.contains("maildrop cannot take it"), "{}", r.stderr);
}

/// A `sendmail` symlink to the binary under test, as installed at /usr/sbin/sendmail.
fn sendmail_link(env: &TestEnv) -> PathBuf {
    let link = env.path().join("bin").join("sendmail");
    if !link.exists() {
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(SEALGATE, &link).unwrap();
    }
    link
}

fn run_caller(mut cmd: Command, env: &TestEnv, input: &[u8]) -> String {
    cmd.env("SEALGATE_CONFIG", &env.config)
        .env("HOME", env.path())
        .env("USER", "appuser")
        .current_dir(env.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn the caller");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?}: {text}");
    text
}

/// Real callers of /usr/sbin/sendmail (issue 8): PHP's mail() with
/// `sendmail_path = "sendmail -t -i"`, s-nail and mutt, each with the arguments it
/// passes by itself; each message arrives with the envelope the caller meant.
#[test]
fn php_s_nail_and_mutt_send_through_the_sendmail_link() {
    let mut env = TestEnv::new(EnvOptions::default());
    let up = env.start_good_capture();
    env.start_serve();
    let link = sendmail_link(&env);

    let mut php = Command::new("php");
    php.arg("-n")
        .arg("-d")
        .arg(format!("sendmail_path={} -t -i", link.display()))
        .arg("-r")
        .arg(
            "exit(mail('php-to@example.net', 'from php', \"line 1\\n.\\nline 3\", \
             \"From: App <app@example.com>\\r\\nCc: php-cc@example.net\\r\\nBcc: php-bcc@example.net\") ? 0 : 1);",
        );
    run_caller(php, &env, b"");

    let mut snail = Command::new("s-nail");
    snail
        .args(["-n", "-#", "-S", "sendwait", "-S"])
        .arg(format!("mta={}", link.display()))
        .args([
            "-r",
            "snail@example.com",
            "-s",
            "from s-nail",
            "snail-to@example.net",
        ]);
    run_caller(snail, &env, b"s-nail body\n");

    let mut mutt = Command::new("mutt");
    mutt.args(["-n", "-F", "/dev/null", "-e"])
        .arg(format!("set sendmail=\"{} -oem -oi\"", link.display()))
        .args([
            "-e",
            "set from=mutt@example.com",
            "-e",
            "set use_envelope_from=yes",
        ])
        .args(["-s", "from mutt", "--", "mutt-to@example.net"]);
    run_caller(mutt, &env, b"mutt body\n");

    let got = env.wait_for_messages(&up, 3);
    let find = |s: &str| {
        got.iter()
            .find(|m| m.header("Subject").as_deref() == Some(s))
            .unwrap_or_else(|| panic!("no message {s:?} in {got:?}"))
    };
    let php = find("from php");
    let mut rcpts = php.rcpts.clone();
    rcpts.sort();
    assert_eq!(
        rcpts,
        vec![
            "php-bcc@example.net",
            "php-cc@example.net",
            "php-to@example.net"
        ]
    );
    assert!(!php.text().contains("php-bcc"), "{}", php.text());
    assert!(
        php.text().contains("\r\nline 1\r\n.\r\nline 3"),
        "{}",
        php.text()
    );
    let snail = find("from s-nail");
    assert_eq!(snail.from, "snail@example.com");
    assert_eq!(snail.rcpts, vec!["snail-to@example.net"]);
    let mutt = find("from mutt");
    assert_eq!(mutt.from, "mutt@example.com");
    assert_eq!(mutt.rcpts, vec!["mutt-to@example.net"]);
}

/// cron's own invocation (`-FCronDaemon -i -B8BITMIME -oem root`): the options are
/// accepted and the bare `root` becomes `root@hostname`, as Postfix appends
/// `@$myorigin`; the sender without `-f` is USER@hostname.
#[test]
fn cron_style_invocation_qualifies_a_bare_recipient() {
    let mut env = TestEnv::new(EnvOptions::default());
    let up = env.start_good_capture();
    env.start_serve();
    let r = sendmail_run(
        &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],
        &env.config,
        &[],
        b"From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@host> run-parts\n\noutput\n",
        false,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let got = env.wait_for_messages(&up, 1);
    assert_eq!(got[0].rcpts, vec!["root@gw.test"]);
    assert_eq!(got[0].from, "appuser@gw.test");
}

/// Linked as `mailq` the binary lists the queue (`-bp`); as `newaliases` it does
/// nothing and succeeds (`-bi`), as sendmail's own links do.
#[test]
fn mailq_and_newaliases_links() {
    let mut env = TestEnv::new(EnvOptions::default());
    env.start_serve();
    let bin = env.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["mailq", "newaliases"] {
        std::os::unix::fs::symlink(SEALGATE, bin.join(name)).unwrap();
    }
    let out = Command::new(bin.join("mailq"))
        .env("SEALGATE_CONFIG", &env.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("id "),
        "{out:?}"
    );
    let out = Command::new(bin.join("newaliases"))
        .env("SEALGATE_CONFIG", &env.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("newaliases"));
}
