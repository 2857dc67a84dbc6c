//! Runs the whole decision path, `sealgate::pipeline::decide` (receipt checks, trace
//! headers, policy, S/MIME sign + encrypt, DKIM), N times (default 200) on a 100 KiB
//! multipart message from payroll@example.com to one bank recipient, for
//! `valgrind --tool=callgrind` or `perf record`. The runtime is built first from a
//! config written to a temp dir: a recipient allow-list, four rules (two of them content
//! rules), an S/MIME signer and one RSA-2048 recipient certificate, DKIM with an RSA-2048
//! key. Exits non-zero unless the decision is one copy, DKIM-signed, S/MIME enveloped
//! around an S/MIME signature (checked once, by decrypting with the recipient's key).
//!
//! Instructions per message: the set-up (key generation, config and policy loading) is
//! paid once per process, so measure two N and take the difference. Pass a key directory
//! as the second argument so that both runs load the same keys instead of generating
//! them (RSA key generation varies by millions of instructions from run to run):
//!
//! ```text
//! cargo build --release --example pipeline_profile
//! K=$(mktemp -d); target/release/examples/pipeline_profile 1 $K   # makes the keys once
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/pp200.out \
//!     target/release/examples/pipeline_profile 200 $K
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/pp20.out \
//!     target/release/examples/pipeline_profile 20 $K
//! # Ir per message = (Ir(200) - Ir(20)) / 180; Ir is the "summary:" line of each file:
//! grep ^summary /tmp/pp200.out /tmp/pp20.out
//! callgrind_annotate --inclusive=yes /tmp/pp200.out | head -60
//! ```
//!
//! Cross-check: `--toggle-collect='sealgate::pipeline::decide*'` counts only inside
//! `decide` (Ir / N), leaving out the copy of the message handed to it each time.
//!
//! Only `Runtime::load`, `pipeline::decide` and the two envelope types it takes are used,
//! so the example follows the library when modules move.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::cms::CmsContentInfo;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

use sealgate::pipeline::SessionInfo;
use sealgate::runtime::Runtime;
use sealgate::smtp::session::Transaction;

const FROM: &str = "payroll@example.com";
const RCPT: &str = "alice@bank.example";

const POLICY: &str = r#"
[recipients]
allow = ["example.com", "*.example.com", "partner.example", "bank.example", "auditor@audit.example"]
deny = ["ceo@example.com", "*.test.example.com"]

[[rule]]
name = "payroll to the bank is signed and encrypted"
from = ["payroll@example.com"]
to = ["*@bank.example"]
actions = ["sign", "encrypt"]
if_no_certificate = "reject"

[[rule]]
name = "card numbers leave encrypted"
body = ["builtin:credit-card", "(?i)\\bconfidential\\b"]
actions = ["encrypt"]
if_no_certificate = "zip-attachments"
password_to = "security@example.com"

[[rule]]
name = "no executables"
attachment_name = ["*.exe", "*.js", "*.scr", "*.bat", "*.cmd", "*.vbs", "*.msi"]
actions = ["strip-attachments"]

[[rule]]
name = "private keys never leave"
body = ["builtin:private-key", "builtin:aws-access-key"]
actions = ["reject"]
message = "message contains a private key or cloud credential"
"#;

const CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:0"]
hostname = "gw.example.com"

[spool]
dir = "spool"

[upstream]
host = "localhost"
port = 25
tls = "starttls"
ca_file = "keys/ca.pem"

[smime]
recipient_certs = "keys/recipients"
[[smime.signer]]
senders = ["*@example.com"]
cert = "keys/signer.pem"
key_file = "keys/signer.key"

[[dkim]]
domain = "example.com"
selector = "s2026"
key_file = "keys/dkim.key"

[audit]
path = "audit.jsonl"

[policy]
dir = "policies"
"#;

/// A certificate for `cn`, valid from now for two years, signed by `issuer`
/// (self-signed when `None`).
fn certificate(
    cn: &str,
    serial: u32,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
) -> Result<X509, openssl::error::ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, cn)?;
    let name = name.build();
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = BigNum::from_u32(serial)?;
    let serial = Asn1Integer::from_bn(&serial)?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_pubkey(key)?;
    let (not_before, not_after) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(730)?);
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    match issuer {
        None => {
            b.set_issuer_name(&name)?;
            b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
            b.append_extension(KeyUsage::new().critical().key_cert_sign().build()?)?;
            b.sign(key, MessageDigest::sha256())?;
        }
        Some((ca, ca_key)) => {
            b.set_issuer_name(ca.subject_name())?;
            let san = SubjectAlternativeName::new()
                .email(cn)
                .build(&b.x509v3_context(Some(ca), None))?;
            b.append_extension(san)?;
            b.append_extension(ExtendedKeyUsage::new().email_protection().build()?)?;
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .digital_signature()
                    .non_repudiation()
                    .key_encipherment()
                    .build()?,
            )?;
            b.sign(ca_key, MessageDigest::sha256())?;
        }
    }
    Ok(b.build())
}

fn write_key(path: &Path, key: &PKey<Private>) -> Result<(), Box<dyn std::error::Error>> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(&key.private_key_to_pem_pkcs8()?)?;
    Ok(())
}

/// Generates the CA, the signer, the recipient certificate and the DKIM key into `keys`.
fn make_keys(keys: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let rsa = || PKey::from_rsa(Rsa::generate(2048)?);
    std::fs::create_dir_all(keys.join("recipients"))?;
    let ca_key = rsa()?;
    let ca = certificate("pipeline_profile CA", 1, &ca_key, None)?;
    std::fs::write(keys.join("ca.pem"), ca.to_pem()?)?;
    for (cn, serial, cert, key) in [
        (FROM, 2, "signer.pem", "signer.key"),
        (RCPT, 3, "recipients/alice.pem", "alice.key"),
    ] {
        let k = rsa()?;
        std::fs::write(
            keys.join(cert),
            certificate(cn, serial, &k, Some((&ca, &ca_key)))?.to_pem()?,
        )?;
        write_key(&keys.join(key), &k)?;
    }
    write_key(&keys.join("dkim.key"), &rsa()?)?;
    Ok(())
}

/// Copies the key files of `from` into `to` (same layout), keeping key files 0600.
fn copy_keys(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to.join("recipients"))?;
    for name in ["ca.pem", "signer.pem", "recipients/alice.pem"] {
        std::fs::copy(from.join(name), to.join(name))?;
    }
    for name in ["signer.key", "alice.key", "dkim.key"] {
        let bytes = std::fs::read(from.join(name))?;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(to.join(name))?
            .write_all(&bytes)?;
    }
    Ok(())
}

/// A 100 KiB multipart message: a text part with a card number (so the content rule
/// matches too) and a base64 PDF-like attachment of fixed pseudo-random bytes.
fn message() -> Vec<u8> {
    use base64::Engine;
    let mut state: u32 = 0x2545_f491;
    let blob: Vec<u8> = (0..72 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&blob);
    let mut m = format!(
        "From: Payroll <{FROM}>\r\nTo: Alice <{RCPT}>\r\nSubject: Payroll file November\r\n\
         Date: Tue, 01 Dec 2026 00:00:00 +0000\r\nMessage-ID: <profile-1@example.com>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Please find the payroll file attached. Refunds go to card 4111 1111 1111 1111.\r\n"
    );
    for i in 0..40 {
        m.push_str(&format!(
            "Line {i}: employee totals, deductions and transfers for the month of November.\r\n"
        ));
    }
    m.push_str(
        "--b1\r\nContent-Type: application/pdf; name=\"payroll-2026-11.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"payroll-2026-11.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n",
    );
    for line in b64.as_bytes().chunks(76) {
        m.push_str(std::str::from_utf8(line).unwrap_or_default());
        m.push_str("\r\n");
    }
    m.push_str("--b1--\r\n");
    m.into_bytes()
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    let dir = tempfile::tempdir()?;
    let keys = dir.path().join("keys");
    match args.get(2).map(Path::new) {
        Some(saved) if saved.join("dkim.key").exists() => copy_keys(saved, &keys)?,
        Some(saved) => {
            make_keys(saved)?;
            copy_keys(saved, &keys)?;
        }
        None => make_keys(&keys)?,
    }
    std::fs::create_dir_all(dir.path().join("policies"))?;
    std::fs::write(dir.path().join("policies/50-rules.toml"), POLICY)?;
    let config = dir.path().join("sealgate.toml");
    std::fs::write(&config, CONFIG)?;
    let rt = Runtime::load(&config)?;

    let info = SessionInfo {
        client: "local".to_owned(),
        helo: "app.example.com".to_owned(),
        peer: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000),
        tls: false,
    };
    let tx = Transaction {
        from: FROM.to_owned(),
        rcpts: vec![RCPT.to_owned()],
        ..Transaction::default()
    };
    let msg = message();
    let mut checked = false;
    for i in 0..n {
        let decision = sealgate::pipeline::decide(&rt, &info, &tx, "PROFILE1", msg.clone())
            .map_err(|(reply, facts)| format!("refused: {reply:?} {facts:?}"))?;
        if !checked {
            let rcpts: Vec<&[String]> = decision.copies.iter().map(|(e, _)| &e.rcpts[..]).collect();
            let bytes: Vec<&[u8]> = decision.copies.iter().map(|(_, b)| &b[..]).collect();
            expect_transformed(&rcpts, &bytes, &keys)?;
            checked = true;
        }
        std::hint::black_box((i, decision));
    }
    if n > 0 {
        eprintln!(
            "pipeline_profile: {n} x {} bytes, accepted with S/MIME + DKIM",
            msg.len()
        );
    }
    Ok(())
}

/// The expected accept-with-transform: one copy to the recipient, DKIM-signed, S/MIME
/// enveloped, and what the recipient's key decrypts is S/MIME signed.
fn expect_transformed(
    rcpts: &[&[String]],
    copies: &[&[u8]],
    keys: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let ([rcpts], [bytes]) = (rcpts, copies) else {
        return Err(format!("expected one copy, got {}", copies.len()).into());
    };
    let text = String::from_utf8_lossy(bytes);
    if *rcpts != [RCPT]
        || !text.starts_with("DKIM-Signature:")
        || !text.contains("smime-type=enveloped-data")
    {
        return Err(format!(
            "not the expected accept-with-transform: rcpts {:?}, header {:?}",
            rcpts,
            text.lines().take(12).collect::<Vec<_>>()
        )
        .into());
    }
    let cert = X509::from_pem(&std::fs::read(keys.join("recipients/alice.pem"))?)?;
    let key = PKey::private_key_from_pem(&std::fs::read(keys.join("alice.key"))?)?;
    let inner = CmsContentInfo::smime_read_cms(bytes)?.decrypt(&key, &cert)?;
    let inner = String::from_utf8_lossy(&inner);
    if !inner.contains("application/pkcs7-signature") && !inner.contains("signed-data") {
        return Err(format!(
            "decrypted copy is not S/MIME signed: {:?}",
            inner.lines().take(8).collect::<Vec<_>>()
        )
        .into());
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pipeline_profile: {e}");
            ExitCode::FAILURE
        }
    }
}
