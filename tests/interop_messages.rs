//! What legacy applications send, through a DEFAULT `sealgate serve`, to a strict
//! upstream: every client and the upstream are real programs in their own processes.
//!
//! Clients: Python's smtplib (`sendmail(frm, to, msg.as_bytes())`, LF line ends) and the
//! curl binary (`--upload-file` of an LF file, `-F --crlf`, which writes CR CR LF).
//! Upstream: tests/fixtures/strict_upstream.py, which refuses lines over 998 octets, bare
//! line ends, and 8-bit data (it offers no 8BITMIME). What arrives is read by Python's
//! email parser (decoded content compared with what was sent) and by dkimpy (the DKIM
//! signature must verify).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use support::*;

const CLIENTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/interop/clients.py"
);

/// A default-configuration sealgate with a DKIM key for example.com, in front of the
/// strict upstream; the test messages written by clients.py.
struct Interop {
    env: TestEnv,
    up: Upstream,
    /// `NAME VALUE` DNS records for verify_dkimpy.py.
    keys: PathBuf,
    /// The messages clients.py wrote.
    msgs: PathBuf,
}

fn setup() -> Interop {
    let env = TestEnv::new(EnvOptions::default());
    // The harness writes bare_line_endings; a default configuration has none.
    let text = std::fs::read_to_string(&env.config).unwrap();
    let mut text: String = text
        .lines()
        .filter(|l| !l.starts_with("bare_line_endings"))
        .map(|l| format!("{l}\n"))
        .collect();
    let record = sealgate::transform::dkim::keygen(
        "example.com",
        "interop",
        sealgate::transform::dkim::Algorithm::Rsa,
        2048,
        &env.path().join("dkim.key"),
    )
    .unwrap();
    let (name, rest) = record.split_once(' ').unwrap();
    let value: String = rest.split('"').skip(1).step_by(2).collect();
    let keys = env.path().join("dkim-records.txt");
    std::fs::write(&keys, format!("{} {value}\n", name.trim_end_matches('.'))).unwrap();
    text.push_str(
        "\n[[dkim]]\ndomain = \"example.com\"\nselector = \"interop\"\nkey_file = \"dkim.key\"\n",
    );
    std::fs::write(&env.config, text).unwrap();

    let dir = env.path().join("strict-upstream");
    std::fs::create_dir_all(&dir).unwrap();
    let log = env.path().join("strict-upstream.log");
    let out = std::fs::File::create(&log).unwrap();
    let certs = env.path().join("certs");
    let child = Command::new("python3")
        .arg(format!("{FIXTURES}/strict_upstream.py"))
        .arg("--port")
        .arg(env.upstream_port.to_string())
        .arg("--dir")
        .arg(&dir)
        .arg("--cert")
        .arg(certs.join("good.pem"))
        .arg("--key")
        .arg(certs.join("good.key"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("python3 for the strict upstream");
    let mut proc = Proc {
        child,
        log,
        name: "strict upstream".into(),
    };
    wait_for_port(env.upstream_port, &mut proc);
    let up = Upstream { proc, dir };

    let msgs = env.path().join("messages");
    python(&["make", msgs.to_str().unwrap()]);
    let mut it = Interop {
        env,
        up,
        keys,
        msgs,
    };
    it.env.start_serve();
    it
}

/// Runs clients.py; returns its stdout.
fn python(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(CLIENTS)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "clients.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Interop {
    fn msg(&self, name: &str) -> PathBuf {
        self.msgs.join(name)
    }

    /// smtplib.sendmail(from, [to], the file's bytes).
    fn smtplib(&self, from: &str, to: &str, file: &str) {
        python(&[
            "send",
            &self.env.port.to_string(),
            from,
            to,
            self.msg(file).to_str().unwrap(),
        ]);
    }

    /// The message that arrived for `rcpt` (waits for it).
    fn arrived(&self, rcpt: &str) -> Received {
        wait_until(
            &format!("a message for {rcpt} at the strict upstream"),
            || {
                format!(
                    "{}\n--- strict upstream refused ---\n{}",
                    self.env.diagnostics(),
                    std::fs::read_to_string(self.up.dir.join("refused.log")).unwrap_or_default()
                )
            },
            || {
                received(&self.up.dir)
                    .into_iter()
                    .find(|m| m.rcpts.iter().any(|r| r == rcpt))
            },
        )
    }

    /// What Python's email parser reads in a message file.
    fn leaves(&self, path: &Path) -> Value {
        serde_json::from_str(&python(&["leaves", path.to_str().unwrap()])).unwrap()
    }

    fn arrived_leaves(&self, m: &Received) -> Value {
        let p = self.env.path().join(format!("arrived-{}", m.name));
        std::fs::write(&p, &m.bytes).unwrap();
        self.leaves(&p)
    }

    /// dkimpy's verdict on our signature (selector `interop`).
    fn dkim_passes(&self, m: &Received) -> bool {
        let p = self.env.path().join(format!("dkim-{}", m.name));
        std::fs::write(&p, &m.bytes).unwrap();
        let out = Command::new("python3")
            .arg(format!("{FIXTURES}/dkim/verify_dkimpy.py"))
            .arg(&self.keys)
            .arg(&p)
            .output()
            .expect("python3 with dkimpy");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let ours: Vec<&Value> = v
            .as_array()
            .map(|a| a.iter().filter(|s| s["s"] == "interop").collect())
            .unwrap_or_default();
        ours.len() == 1 && ours[0]["pass"] == true
    }

    fn assert_strict(&self, m: &Received, what: &str) {
        for (i, line) in m.bytes.split(|&b| b == b'\n').enumerate() {
            assert!(
                line.len() <= 999,
                "{what}: line {i} has {} octets",
                line.len()
            );
            assert!(line.is_ascii(), "{what}: line {i} has 8-bit data");
        }
        assert!(
            self.dkim_passes(m),
            "{what}: DKIM does not verify\n{}",
            m.text()
        );
    }

    fn assert_empty_queue(&self) {
        self.env.wait_for_empty_queue();
        assert!(
            !self.up.dir.join("refused.log").exists(),
            "the strict upstream refused something: {}",
            std::fs::read_to_string(self.up.dir.join("refused.log")).unwrap_or_default()
        );
    }
}

#[test]
fn python_sendmail_bytes_and_a_5000_octet_html_line_reach_a_strict_upstream_signed() {
    let it = setup();
    for (file, rcpt) in [
        ("plain.eml", "plain@example.net"),
        ("html.eml", "html@example.net"),
        ("attach.eml", "attach@example.net"),
        ("raw8.eml", "raw8@example.net"),
    ] {
        it.smtplib("app@example.com", rcpt, file);
        let m = it.arrived(rcpt);
        it.assert_strict(&m, file);
        let sent = it.leaves(&it.msg(file));
        let got = it.arrived_leaves(&m);
        assert_eq!(got, sent, "{file}: decoded content differs\n{}", m.text());
    }
    // The HTML line was re-encoded, not cut: quoted-printable, same text.
    let html = it.arrived("html@example.net");
    assert_eq!(
        html.header("Content-Transfer-Encoding").as_deref(),
        Some("quoted-printable")
    );
    // The raw UTF-8 subject is RFC 2047 now, the body text is declared UTF-8.
    let raw8 = it.leaves(
        &it.env
            .path()
            .join(format!("arrived-{}", it.arrived("raw8@example.net").name)),
    );
    assert_eq!(raw8["subject"], "Grüße, raw UTF-8");
    assert_eq!(raw8["leaves"][0]["text"], "Käse und Brötchen");
    it.assert_empty_queue();
}

#[test]
fn headerless_text_from_a_script_is_delivered_with_the_fields_it_lacked() {
    let it = setup();
    it.smtplib("cron@example.com", "root@example.net", "headerless.txt");
    let m = it.arrived("root@example.net");
    it.assert_strict(&m, "headerless");
    assert_eq!(m.header("From").as_deref(), Some("cron@example.com"));
    assert!(m.header("Date").is_some() && m.header("Message-ID").is_some());
    let got = it.arrived_leaves(&m);
    // "Error: none" is body text, not a header field.
    assert_eq!(got["leaves"][0]["text"], "backup finished\nError: none");
    let received = it
        .env
        .wait_for_event("received", |e| e["rcpts"][0] == "root@example.net");
    let repairs = received["repairs"].to_string();
    assert!(
        repairs.contains("From: cron@example.com added"),
        "{repairs}"
    );
    it.assert_empty_queue();
}

#[test]
fn curl_upload_of_an_lf_file_and_form_with_crlf_arrive_whole_and_signed() {
    let it = setup();
    let url = format!("smtp://127.0.0.1:{}", it.env.port);
    let run = |args: &[&str]| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "60",
                &url,
                "--mail-from",
                "app@example.com",
            ])
            .args(args)
            .current_dir(&it.msgs)
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "--mail-rcpt",
        "upload@example.net",
        "--upload-file",
        "curl-upload.eml",
    ]);
    let m = it.arrived("upload@example.net");
    it.assert_strict(&m, "curl --upload-file");
    let sent = it.leaves(&it.msg("curl-upload.eml"));
    assert_eq!(it.arrived_leaves(&m), sent, "{}", m.text());
    // curl does not dot-stuff after a bare LF: its dots are kept as written.
    assert!(sent["leaves"][0]["text"]
        .as_str()
        .unwrap()
        .contains("\n.a dot line that curl does not stuff\n..two dots\n"));

    run(&[
        "--mail-rcpt",
        "form@example.net",
        "-H",
        "From: app@example.com",
        "-H",
        "To: form@example.net",
        "-H",
        "Subject: curl form",
        "-F",
        "=<form-body.txt;type=text/plain",
        "--crlf",
    ]);
    let m = it.arrived("form@example.net");
    it.assert_strict(&m, "curl -F --crlf");
    // CR CR LF made no empty lines: the header block kept From and Subject.
    assert_eq!(m.header("From").as_deref(), Some("app@example.com"));
    assert_eq!(m.header("Subject").as_deref(), Some("curl form"));
    let got = it.arrived_leaves(&m);
    let texts: Vec<&str> = got["leaves"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["text"].as_str())
        .collect();
    assert_eq!(
        texts,
        ["first line of the form\n.dot line\nlast line"],
        "{}",
        m.text()
    );
    it.assert_empty_queue();
}

#[test]
fn refusals_at_data_name_the_reason_and_are_audited() {
    let it = setup();
    let refuse = |message: &[u8]| -> String {
        let mut c = Smtp::connect(it.env.port);
        c.cmd("EHLO app.test");
        assert!(c.cmd("MAIL FROM:<app@example.com>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<x@example.net>").starts_with("250"));
        let r = c.data(message);
        c.cmd("QUIT");
        r
    };
    // An empty line before the header fields: refused, not relayed without a From.
    let r = refuse(b"\r\nFrom: app@example.com\r\nSubject: cut off\r\n\r\nbody\r\n");
    assert!(r.starts_with("550 5.6.0") && r.contains("empty"), "{r}");
    // A header line that cannot be folded.
    let token = "t".repeat(1200);
    let r = refuse(format!("From: app@example.com\r\nX-Token: {token}\r\n\r\nbody\r\n").as_bytes());
    assert!(r.starts_with("550 5.6.0") && r.contains("X-Token"), "{r}");
    // 8-bit in a field with no 7-bit form, without SMTPUTF8.
    let r = refuse("From: app@example.com\r\nMessage-ID: <ä@example.com>\r\n\r\nx\r\n".as_bytes());
    assert!(
        r.starts_with("550 5.6.0") && r.contains("Message-ID"),
        "{r}"
    );
    let events = it.env.audit_events();
    let rejected: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "rejected" && e["stage"] == "data")
        .collect();
    assert_eq!(rejected.len(), 3, "{events:?}");
    // Refused commands are audited too: SIZE over the limit, a recipient past the
    // sequence.
    let mut c = Smtp::connect(it.env.port);
    c.cmd("EHLO app.test");
    let r = c.cmd("MAIL FROM:<app@example.com> SIZE=999999999999");
    assert!(r.starts_with("552"), "{r}");
    let r = c.cmd("RCPT TO:<x@example.net>");
    assert!(r.starts_with("503"), "{r}");
    c.cmd("QUIT");
    let mail = it.env.wait_for_event("rejected", |e| e["stage"] == "mail");
    assert!(
        mail["reply"].as_str().unwrap().starts_with("552 5.3.4"),
        "{mail}"
    );
    assert!(mail["command"]
        .as_str()
        .unwrap()
        .contains("SIZE=999999999999"));
    it.env.wait_for_event("rejected", |e| e["stage"] == "rcpt");

    // With bare_line_endings = "reject", the 5.6.11 refusal is audited too.
    let mut env = TestEnv::new(EnvOptions::default());
    env.start_serve();
    let mut c = Smtp::connect(env.port);
    c.cmd("EHLO app.test");
    c.cmd("MAIL FROM:<app@example.com>");
    c.cmd("RCPT TO:<x@example.net>");
    assert!(c.cmd("DATA").starts_with("354"));
    c.write_raw(b"From: app@example.com\nSubject: lf\n\nbody\n\r\n.\r\n");
    let r = c.reply();
    assert!(r.starts_with("550 5.6.11"), "{r}");
    let e = env.wait_for_event("rejected", |e| e["stage"] == "data");
    assert!(
        e["reply"].as_str().unwrap().starts_with("550 5.6.11"),
        "{e}"
    );
    assert_eq!(e["rules"]["detail"], "bare_line_endings");
    assert!(it.up.proc.log_text().is_empty() || !it.up.dir.join("refused.log").exists());
}

mod smime_support;

/// A real message whose folded header lines lost their leading white space (Received and
/// DKIM-Signature continuations in column 1, some without a colon): every one of those
/// lines must come out of every transform. The signed+encrypted copy used to drop the
/// lines without a colon (mime::fields gave them no name; S/MIME skipped nameless
/// fields) while the plain copy kept them.
#[test]
fn header_lines_that_lost_their_folding_survive_every_transform() {
    use sealgate::policy::verdict::{Actions, Attachments, Crypto, CryptoKind};
    use sealgate::transform::{apply, Plan};
    use smime_support::{p, pki, run};

    let raw = crlf(&std::fs::read(format!("{FIXTURES}/interop/lost-folding.eml")).unwrap());
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let header_lines: Vec<String> = String::from_utf8_lossy(&raw[..head_end])
        .split("\r\n")
        .map(str::to_string)
        .collect();
    assert!(header_lines
        .iter()
        .any(|l| l.starts_with("b=") && !l.contains(':')));

    let pki = pki();
    let smime = pki.load(&pki.config());
    let cases = [
        (
            "sign+encrypt",
            Actions {
                crypto: Crypto::planned(true, Some(CryptoKind::Smime)),
                ..Actions::default()
            },
        ),
        ("sign", Actions::sign()),
        (
            "encrypt",
            Actions {
                crypto: Crypto::planned(false, Some(CryptoKind::Smime)),
                ..Actions::default()
            },
        ),
        ("strip", Actions::attachments(Attachments::Strip)),
        (
            "zip",
            Actions::attachments(Attachments::Zip { password_to: None }),
        ),
        ("plain", Actions::default()),
    ];
    for (what, actions) in cases {
        let plan = Plan {
            actions: actions.clone(),
            recipients: vec!["alice@bank.example".into()],
            notes: Vec::new(),
        };
        let out = apply(&plan, "payroll@example.com", &raw, Some(&smime))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut seen = String::from_utf8_lossy(&out.message).into_owned();
        if actions.encrypts() {
            let f = pki.path("lost-folding.p7m.eml");
            std::fs::write(&f, &out.message).unwrap();
            let dec = pki.path("lost-folding.dec");
            run(
                "openssl",
                &[
                    "cms",
                    "-decrypt",
                    "-in",
                    p(&f),
                    "-recip",
                    p(&pki.alice.cert_path),
                    "-inkey",
                    p(&pki.alice.key_path),
                    "-binary",
                    "-out",
                    p(&dec),
                ],
                None,
                true,
            );
            seen.push_str(&String::from_utf8_lossy(&std::fs::read(&dec).unwrap()));
        }
        for line in &header_lines {
            assert!(
                seen.contains(line.as_str()),
                "{what}: header line {line:?} was lost\n{seen}"
            );
        }
    }
}
