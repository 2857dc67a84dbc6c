//! `sealgate demo`: a newcomer's whole pipeline on one machine.
//!
//! On first run it makes a demo CA, an upstream TLS certificate, S/MIME certificates and
//! a DKIM key under DIR, OpenPGP keys (a signer and one recipient, made with Sequoia), writes the example policies and a config, starts a TLS-only
//! capture upstream that writes each message it receives to DIR/outbox, starts the proxy,
//! sends a few sample messages through it, prints what happened and where to look, and
//! keeps serving until Ctrl-C. Everything stays on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::ops::pki::{self, KeyKind};

const RECIPIENTS_POLICY: &str = include_str!("../../policies/00-recipients.toml");
const RULES_POLICY: &str = include_str!("../../policies/50-rules.toml");

/// One sample message the demo sends, and what the user should expect.
struct Sample {
    title: &'static str,
    from: &'static str,
    to: &'static [&'static str],
    message: String,
    expect: &'static str,
}

fn samples() -> Vec<Sample> {
    let date = crate::clock::rfc5322_date(crate::clock::unix_now() as i64);
    let attachment = "JVBERi0xLjQKJcOkw7zDtsOfCjEgMCBvYmoKPDwvVHlwZS9DYXRhbG9nPj4KZW5kb2JqCnRyYWlsZXIKPDwvUm9vdCAxIDAgUj4+CiUlRU9GCg==";
    vec![
        Sample {
            title: "a plain notice inside the company",
            from: "billing@example.com",
            to: &["accounts@example.com"],
            message: format!("From: Billing <billing@example.com>\r\nTo: accounts@example.com\r\nSubject: Nightly billing run finished\r\nDate: {date}\r\n\r\nThe nightly billing run finished: 1200 invoices.\r\n"),
            expect: "relayed unchanged, DKIM-signed",
        },
        Sample {
            title: "a payslip to the bank",
            from: "payroll@example.com",
            to: &["alice@bank.example"],
            message: format!("From: Payroll <payroll@example.com>\r\nTo: alice@bank.example\r\nSubject: Payroll file November\r\nDate: {date}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease find the payroll file attached.\r\n--b1\r\nContent-Type: application/pdf; name=\"payroll-2026-11.pdf\"\r\nContent-Disposition: attachment; filename=\"payroll-2026-11.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{attachment}\r\n--b1--\r\n"),
            expect: "S/MIME signed, then encrypted to alice's certificate",
        },
        Sample {
            title: "a payslip to a bank contact with an OpenPGP key",
            from: "payroll@example.com",
            to: &["dora@bank.example"],
            message: format!("From: Payroll <payroll@example.com>\r\nTo: dora@bank.example\r\nSubject: Payroll file November\r\nDate: {date}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe payroll totals for November are ready.\r\n"),
            expect: "no S/MIME certificate but an OpenPGP key: PGP/MIME, signed and encrypted to dora's key",
        },
        Sample {
            title: "a card number to a partner without a certificate",
            from: "billing@example.com",
            to: &["orders@partner.example"],
            message: format!("From: Billing <billing@example.com>\r\nTo: orders@partner.example\r\nSubject: Refund\r\nDate: {date}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b2\"\r\n\r\n--b2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nRefund to card 4111 1111 1111 1111, see the statement.\r\n--b2\r\nContent-Type: application/pdf; name=\"statement.pdf\"\r\nContent-Disposition: attachment; filename=\"statement.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{attachment}\r\n--b2--\r\n"),
            expect: "no certificate: attachments moved into an AES-256 zip; the password goes separately to security@example.com",
        },
        Sample {
            title: "an executable attachment",
            from: "monitor@example.com",
            to: &["ops@example.com"],
            message: format!("From: monitor@example.com\r\nTo: ops@example.com\r\nSubject: tool update\r\nDate: {date}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b3\"\r\n\r\n--b3\r\nContent-Type: text/plain\r\n\r\nNew tool attached.\r\n--b3\r\nContent-Type: application/octet-stream; name=\"tool.exe\"\r\nContent-Disposition: attachment; filename=\"tool.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n--b3--\r\n"),
            expect: "attachment replaced by a notice with its name, size and SHA-256",
        },
        Sample {
            title: "a recipient nobody approved",
            from: "billing@example.com",
            to: &["someone@evil.example"],
            message: format!("From: billing@example.com\r\nTo: someone@evil.example\r\nSubject: hello\r\nDate: {date}\r\n\r\nhi\r\n"),
            expect: "refused at RCPT with 550 5.7.1, naming the policy file",
        },
    ]
}

/// Creates keys, certificates, policies and config under `dir` unless they exist.
fn prepare(dir: &Path, port: u16, upstream: SocketAddr) -> anyhow::Result<PathBuf> {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).with_context(|| format!("{}", certs.display()))?;
    if !certs.join("ca.pem").exists() {
        let ca = pki::ca("sealgate demo CA")?;
        pki::write_cert(&certs.join("ca.pem"), &ca.cert)?;
        pki::write_key(&certs.join("ca.key"), &ca.key)?;
        let up = pki::server(&ca, &["localhost"], &["127.0.0.1"])?;
        pki::write_cert(&certs.join("upstream.pem"), &up.cert)?;
        pki::write_key(&certs.join("upstream.key"), &up.key)?;
        let signer = pki::smime(&ca, "payroll@example.com", KeyKind::Rsa2048, -1, 730)?;
        pki::write_cert(&certs.join("signing/example.com.pem"), &signer.cert)?;
        pki::write_key(&certs.join("signing/example.com.key"), &signer.key)?;
        for (addr, kind) in [
            ("alice@bank.example", KeyKind::Rsa2048),
            ("bob@bank.example", KeyKind::EcP256),
        ] {
            let c = pki::smime(&ca, addr, kind, -1, 730)?;
            pki::write_cert(&certs.join(format!("recipients/{addr}.pem")), &c.cert)?;
            pki::write_key(&dir.join(format!("recipient-keys/{addr}.key")), &c.key)?;
        }
        let dkim_dir = certs.join("dkim");
        std::fs::create_dir_all(&dkim_dir)?;
        let record = crate::transform::dkim::keygen(
            "example.com",
            "s2026",
            crate::transform::dkim::Algorithm::Rsa,
            2048,
            &dkim_dir.join("example.com.s2026.key"),
        )?;
        std::fs::write(
            dkim_dir.join("example.com.s2026.txt"),
            format!("{record}\n"),
        )?;
    }
    if !certs.join("openpgp").exists() {
        openpgp_keys(dir, &certs)?;
    }
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies)?;
    for (name, text) in [
        ("00-recipients.toml", RECIPIENTS_POLICY),
        ("50-rules.toml", RULES_POLICY),
    ] {
        let p = policies.join(name);
        if !p.exists() {
            std::fs::write(&p, text)?;
        }
    }
    let config = dir.join("sealgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"# Written by `sealgate demo`; rewritten on every demo start.
[server]
listen = ["127.0.0.1:{port}"]
hostname = "demo.sealgate.test"

[spool]
dir = "spool"

[upstream]
# The demo's built-in capture server: TLS from the first byte, certificate from the demo CA.
host = "localhost"
port = {up_port}
tls = "implicit"
ca_file = "certs/ca.pem"
retry_base = "5s"

[smime]
recipient_certs = "certs/recipients"
[[smime.signer]]
senders = ["*@example.com"]
cert = "certs/signing/example.com.pem"
key_file = "certs/signing/example.com.key"

[openpgp]
keyring = "certs/openpgp"
[[openpgp.signer]]
senders = ["*@example.com"]
key_file = "certs/openpgp-signing/example.com.sec.asc"

[[dkim]]
domain = "example.com"
selector = "s2026"
key_file = "certs/dkim/example.com.s2026.key"

[audit]
path = "audit.jsonl"

[policy]
dir = "policies"
"#,
            up_port = upstream.port()
        ),
    )?;
    Ok(config)
}

/// The OpenPGP side of the demo, made with Sequoia's CertBuilder (Curve25519): a signer
/// for payroll@example.com and dora@bank.example's certificate in the keyring, her
/// secret key beside the S/MIME recipient keys so that `gpg --import` can read her mail.
fn openpgp_keys(dir: &Path, certs: &Path) -> anyhow::Result<()> {
    use sequoia_openpgp::cert::CertBuilder;
    use sequoia_openpgp::serialize::SerializeInto;
    let make = |uid: &str| -> anyhow::Result<sequoia_openpgp::Cert> {
        // RFC 4880 (v4) keys announcing SEIPDv1 only: GnuPG 2.2 reads neither v6 keys
        // nor SEIPDv2, which senders use when every recipient announces it.
        Ok(CertBuilder::general_purpose(Some(uid))
            .set_profile(sequoia_openpgp::Profile::RFC4880)?
            .set_features(sequoia_openpgp::types::Features::empty().set_seipdv1())?
            .generate()?
            .0)
    };
    let signer = make("Payroll <payroll@example.com>")?;
    let dora = make("Dora <dora@bank.example>")?;
    let ring = certs.join("openpgp");
    std::fs::create_dir_all(&ring)?;
    std::fs::write(ring.join("dora@bank.example.asc"), dora.armored().to_vec()?)?;
    let signing = certs.join("openpgp-signing");
    std::fs::create_dir_all(&signing)?;
    crate::secret::write_private(
        &signing.join("example.com.sec.asc"),
        &signer.as_tsk().armored().to_vec()?,
    )?;
    std::fs::write(signing.join("example.com.asc"), signer.armored().to_vec()?)?;
    let keys = dir.join("recipient-keys");
    std::fs::create_dir_all(&keys)?;
    crate::secret::write_private(
        &keys.join("dora@bank.example.sec.asc"),
        &dora.as_tsk().armored().to_vec()?,
    )?;
    Ok(())
}

fn count_eml(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    e.file_name().to_string_lossy().ends_with(".eml")
                        && !e.file_name().to_string_lossy().starts_with('.')
                })
                .count()
        })
        .unwrap_or(0)
}

/// Runs the demo; returns after Ctrl-C (or after the samples with `once`).
pub async fn run(dir: &Path, port: u16, once: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let outbox = dir.join("outbox");
    std::fs::create_dir_all(&outbox)?;
    let upstream_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr = upstream_listener.local_addr()?;
    let config = prepare(&dir, port, upstream_addr)?;
    let acceptor = crate::runtime::server_tls(
        &dir.join("certs/upstream.pem"),
        &dir.join("certs/upstream.key"),
    )?;
    tokio::spawn(crate::ops::capture::serve(
        upstream_listener,
        acceptor,
        crate::ops::capture::CaptureOptions {
            dir: outbox.clone(),
            implicit: true,
            offer_starttls: true,
            rcpt_reply: None,
            data_reply: None,
        },
    ));
    let running = crate::ops::serve::start(&config)
        .await
        .with_context(|| format!("starting sealgate with {}", config.display()))?;
    let addr = running
        .addrs
        .first()
        .copied()
        .context("no listen address")?;
    println!("sealgate demo in {}", dir.display());
    println!("  proxy:    smtp://{addr} (plain SMTP on loopback, as legacy apps speak it)");
    println!(
        "  upstream: built-in capture server on {upstream_addr}, TLS only, writing to {}",
        outbox.display()
    );
    println!();
    let before = count_eml(&outbox);
    let mut expected = 0;
    for s in samples() {
        let to: Vec<String> = s.to.iter().map(|x| x.to_string()).collect();
        let (from, msg) = (s.from.to_string(), s.message.clone().into_bytes());
        let result = tokio::task::spawn_blocking(move || {
            crate::smtp::submit::submit(addr, &from, &to, &msg, None)
        })
        .await?;
        match result {
            Ok(reply) => {
                expected += 1;
                if s.title.contains("without a certificate") {
                    expected += 1; // the password message
                }
                println!(
                    "- {}: accepted ({})\n    expected: {}",
                    s.title,
                    reply.trim(),
                    s.expect
                );
            }
            Err(e) => println!(
                "- {}: refused: {}\n    expected: {}",
                s.title,
                e.to_string().replace('\n', " / "),
                s.expect
            ),
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while count_eml(&outbox) < before + expected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!();
    println!(
        "{} message(s) reached the upstream; look at them in {}",
        count_eml(&outbox) - before,
        outbox.display()
    );
    println!("  audit log:   {}", dir.join("audit.jsonl").display());
    println!("  decrypt:     openssl cms -decrypt -in {}/<file>.eml -recip {}/certs/recipients/alice@bank.example.pem -inkey {}/recipient-keys/alice@bank.example.key", outbox.display(), dir.display(), dir.display());
    println!("  OpenPGP:     gpg --import {d}/recipient-keys/dora@bank.example.sec.asc {d}/certs/openpgp-signing/example.com.asc; gpg --decrypt <the part encrypted.asc of dora's .eml>", d = dir.display());
    println!("  dry run:     sealgate explain -c {} --from payroll@example.com --to alice@bank.example MSG.eml", config.display());
    println!(
        "  DKIM record: {}",
        dir.join("certs/dkim/example.com.s2026.txt").display()
    );
    if once {
        let _ = running.shutdown.send(true);
        let _ = running.done.await;
        return Ok(());
    }
    println!();
    println!("Still serving. Send your own, e.g.:");
    println!("  swaks --server {addr} --from payroll@example.com --to bob@bank.example --attach @some.pdf");
    println!("Press Ctrl-C to stop.");
    let _ = running.done.await;
    Ok(())
}
