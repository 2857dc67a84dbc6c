//! Shared pieces of the interop matrix (tests/interop_clients.rs, tests/interop_upstreams.rs):
//! the DEFAULT-like configuration with a DKIM key, the four messages every client sends
//! and what a recipient must decode from them (tests/interop/check_landed.py), DKIM
//! verification with dkimpy against the record `dkim-keygen` printed, running a program
//! with a deadline, and the Markdown matrix written to target/interop-matrix.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{TestEnv, FIXTURES, SEALGATE};

/// tests/interop: client scripts, the checker, the attachment.
pub const INTEROP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");

/// The four messages of the matrix, in column order.
pub const CASES: [&str; 4] = ["plain", "utf8", "attach", "html"];

/// The DKIM selector the interop configuration signs with.
pub const SELECTOR: &str = "interop";

/// What a recipient must see after decoding one case.
pub struct Expected {
    pub subject: &'static str,
    pub from_name: &'static str,
    /// The text/plain part, decoded, line ends as LF, trailing line ends removed.
    pub text: Option<&'static str>,
    /// The text/html part, likewise.
    pub html: Option<String>,
    /// (file name, SHA-256) of each attachment.
    pub attachments: Vec<(String, String)>,
}

/// The single-line HTML body of the `html` case: 6,026 octets.
pub fn long_html() -> String {
    format!(
        "<html><body>{}</body></html>",
        "<p>interop long line</p>".repeat(250)
    )
}

/// SHA-256 (hex) of tests/interop/report.bin, computed with `sha256sum`'s algorithm by
/// openssl so the test does not trust its own hashing.
pub fn attachment_sha256() -> String {
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-r"])
        .arg(format!("{INTEROP}/report.bin"))
        .output()
        .expect("openssl (Debian package openssl)");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

pub fn expected(case: &str) -> Expected {
    match case {
        "plain" => Expected {
            subject: "Interop plain ASCII",
            from_name: "Interop App",
            text: Some("Hello from the interop matrix.\nSecond line, plain ASCII."),
            html: None,
            attachments: vec![],
        },
        "utf8" => Expected {
            subject: "Grüße aus Köln ✓ – Prüfung",
            from_name: "Jürgen Müller",
            text: Some("Grüße aus Köln: äöü ÄÖÜ ß € ✓\nZweite Zeile."),
            html: None,
            attachments: vec![],
        },
        "attach" => Expected {
            subject: "Interop attachment",
            from_name: "Interop App",
            text: Some("The report is attached."),
            html: None,
            attachments: vec![("report.bin".into(), attachment_sha256())],
        },
        "html" => Expected {
            subject: "Interop long HTML line",
            from_name: "Interop App",
            text: None,
            html: Some(long_html()),
            attachments: vec![],
        },
        other => panic!("unknown interop case {other}"),
    }
}

/// tests/interop/check_landed.py on a message file: its JSON.
pub fn decode(eml: &Path) -> Result<Value, String> {
    let out = Command::new("python3")
        .arg(format!("{INTEROP}/check_landed.py"))
        .arg(eml)
        .output()
        .map_err(|e| format!("python3 (Debian package python3): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "check_landed.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("check_landed.py output: {e}"))
}

fn shorten(s: &str, n: usize) -> String {
    let s = s.replace('\n', "\\n");
    if s.chars().count() <= n {
        s
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// Compares what check_landed.py decoded with what `case` sent; the first difference.
pub fn compare(case: &str, got: &Value, check_headers: bool) -> Result<(), String> {
    let want = expected(case);
    let s = |k: &str| got[k].as_str().map(str::to_string);
    if check_headers {
        if s("subject").as_deref() != Some(want.subject) {
            return Err(format!(
                "Subject decodes to {:?}",
                shorten(&s("subject").unwrap_or_default(), 60)
            ));
        }
        if s("from_name").as_deref() != Some(want.from_name) {
            return Err(format!(
                "From display name decodes to {:?} (From address {:?})",
                s("from_name").unwrap_or_default(),
                s("from_addr").unwrap_or_default()
            ));
        }
    }
    if let Some(text) = want.text {
        match s("text") {
            Some(t) if t == text => {}
            Some(t) => return Err(format!("text differs: {:?}", shorten(&t, 80))),
            None => return Err("no text/plain part".into()),
        }
    }
    if let Some(html) = &want.html {
        match s("html") {
            Some(h) if &h == html => {}
            Some(h) => {
                return Err(format!(
                    "HTML differs ({} octets, want {}): {:?}",
                    h.len(),
                    html.len(),
                    shorten(&h, 60)
                ))
            }
            None => return Err("no text/html part".into()),
        }
    }
    let atts: Vec<(String, String)> = got["attachments"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    (
                        x["name"].as_str().unwrap_or("").to_string(),
                        x["sha256"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if atts != want.attachments {
        return Err(format!("attachments differ: {atts:?}"));
    }
    Ok(())
}

/// A DKIM key for example.com (selector [`SELECTOR`]) made by `sealgate dkim-keygen`,
/// a `[[dkim]]` entry for it, and no `bare_line_endings` line, so the server runs with
/// the built-in default for everything the tests do not need to set. Returns the
/// dkimpy keys file ("NAME VALUE" lines from the printed record).
pub fn default_like_with_dkim(env: &TestEnv) -> PathBuf {
    let key = env.path().join("dkim-interop.key");
    let out = Command::new(SEALGATE)
        .args([
            "dkim-keygen",
            "--domain",
            "example.com",
            "--selector",
            SELECTOR,
            "--out",
        ])
        .arg(&key)
        .output()
        .expect("run sealgate dkim-keygen");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "dkim-keygen: {printed}");
    let record = printed
        .lines()
        .find(|l| l.contains("._domainkey."))
        .unwrap_or_else(|| panic!("no record in {printed}"));
    let name = record
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('.');
    let value: String = record.split('"').skip(1).step_by(2).collect();
    let keys = env.path().join("dkim-keys.txt");
    std::fs::write(&keys, format!("{name} {value}\n")).unwrap();
    let config = std::fs::read_to_string(&env.config).unwrap();
    let config: String = config
        .lines()
        .filter(|l| !l.starts_with("bare_line_endings"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        &env.config,
        format!(
            "{config}\n[[dkim]]\ndomain = \"example.com\"\nselector = \"{SELECTOR}\"\nkey_file = \"{}\"\n",
            key.display()
        ),
    )
    .unwrap();
    keys
}

/// dkimpy (tests/fixtures/dkim/verify_dkimpy.py) on `eml`: Ok when our signature is
/// there and verifies.
pub fn dkim_verifies(keys: &Path, eml: &Path) -> Result<(), String> {
    let out = Command::new("python3")
        .arg(format!("{FIXTURES}/dkim/verify_dkimpy.py"))
        .arg(keys)
        .arg(eml)
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "dkimpy helper failed (pip install dkimpy): {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let ours: Vec<&Value> = v
        .as_array()
        .map(|a| a.iter().filter(|s| s["s"] == SELECTOR).collect())
        .unwrap_or_default();
    match ours.as_slice() {
        [] => Err("no DKIM signature".into()),
        sigs if sigs.iter().all(|s| s["pass"] == true) => Ok(()),
        _ => Err(format!(
            "DKIM does not verify (dkimpy: {})",
            shorten(String::from_utf8_lossy(&out.stderr).trim(), 80)
        )),
    }
}

/// A finished (or killed) program run.
pub struct Run {
    /// `None`: killed at the deadline.
    pub status: Option<std::process::ExitStatus>,
    /// stdout and stderr, interleaved as written.
    pub output: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The line that says why it failed: the last SMTP reply with an error code, or the
    /// last line of output.
    pub fn reason(&self) -> String {
        let re = regex::Regex::new(r"\b[45]\d\d(?:[ -]?|, b.)[45]\.\d{1,3}\.\d{1,3}").unwrap();
        let lines: Vec<&str> = self.output.lines().map(str::trim).collect();
        let line = lines
            .iter()
            .rev()
            .find(|l| re.is_match(l))
            .or_else(|| lines.iter().rev().find(|l| !l.is_empty()))
            .copied()
            .unwrap_or("");
        // Python's smtplib says `SMTPDataError: (550, b'5.6.11 ...')`: the reply as a tuple.
        let tuple = regex::Regex::new(r#"\(([45]\d\d), b['"](.*?)['"]\)"#).unwrap();
        let joined;
        let line = if let Some(c) = tuple.captures(line) {
            joined = format!("{} {}", &c[1], &c[2]);
            joined.as_str()
        } else {
            match re.find(line) {
                Some(m) => &line[m.start()..],
                None => line,
            }
        };
        let status = match self.status {
            None => "killed after the deadline".to_string(),
            Some(s) => format!("{s}"),
        };
        format!("{} ({status})", shorten(line, 110))
    }
}

/// Runs `cmd` with stdout+stderr to `log`, killing it after `timeout`.
pub fn run_with_deadline(mut cmd: Command, log: &Path, timeout: Duration) -> Run {
    let out = std::fs::File::create(log).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Run {
                status: None,
                output: format!("cannot start {cmd:?}: {e}"),
            }
        }
    };
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    Run {
        status,
        output: String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned(),
    }
}

/// True when `program` is on PATH.
pub fn on_path(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The target directory (CARGO_TARGET_TMPDIR is target/tmp).
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Writes one section of the matrix (target/interop-matrix.d/PART.md) and rebuilds
/// target/interop-matrix.md from all sections in name order; returns its path.
pub fn write_matrix_part(part: &str, markdown: &str) -> PathBuf {
    let dir = target_dir().join("interop-matrix.d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{part}.md")), markdown).unwrap();
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    names.sort();
    let all: Vec<String> = names
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    let path = target_dir().join("interop-matrix.md");
    std::fs::write(&path, all.join("\n")).unwrap();
    path
}

/// A Markdown table cell: `pass`, or `FAIL: reason` with `|` escaped.
pub fn cell(result: &Result<(), String>) -> String {
    match result {
        Ok(()) => "pass".into(),
        Err(e) => format!("**FAIL**: {}", e.replace('|', "\\|")),
    }
}
