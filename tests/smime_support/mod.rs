//! Test PKI and helpers shared by the S/MIME and attachment tests: a CA, RSA and EC
//! recipients, an expired certificate, one without emailProtection, signers, written
//! under a temp dir; and a runner for the real tools (openssl, gpgsm, 7z).
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Name, X509};
use sealgate::transform::smime::{SignerConfig, Smime, SmimeConfig};

#[derive(Clone, Copy, Debug)]
pub enum KeyKind {
    Rsa2048,
    EcP256,
    EcP384,
}

pub fn new_key(kind: KeyKind) -> PKey<Private> {
    match kind {
        KeyKind::Rsa2048 => PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
        KeyKind::EcP256 => {
            let g = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
            PKey::from_ec_key(EcKey::generate(&g).unwrap()).unwrap()
        }
        KeyKind::EcP384 => {
            let g = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
            PKey::from_ec_key(EcKey::generate(&g).unwrap()).unwrap()
        }
    }
}

/// What kind of certificate to make.
pub struct CertSpec<'a> {
    pub cn: &'a str,
    pub email: Option<&'a str>,
    /// Days from now (may be negative).
    pub not_before_days: i64,
    pub not_after_days: i64,
    /// `Some("email")`, `Some("server")`, or None for no EKU extension.
    pub eku: Option<&'a str>,
    pub ca: bool,
}

impl<'a> CertSpec<'a> {
    pub fn person(email: &'a str) -> Self {
        CertSpec {
            cn: email,
            email: Some(email),
            not_before_days: -1,
            not_after_days: 365,
            eku: Some("email"),
            ca: false,
        }
    }
}

pub fn make_cert(
    spec: &CertSpec<'_>,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
) -> X509 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, spec.cn).unwrap();
    if let Some(e) = spec.email {
        name.append_entry_by_nid(Nid::PKCS9_EMAILADDRESS, e)
            .unwrap();
    }
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial
        .rand(64, openssl::bn::MsbOption::MAYBE_ZERO, false)
        .unwrap();
    b.set_serial_number(&Asn1Integer::from_bn(&serial).unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    match issuer {
        Some((ic, _)) => b.set_issuer_name(ic.subject_name()).unwrap(),
        None => b.set_issuer_name(&name).unwrap(),
    }
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(now + spec.not_before_days * 86400).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now + spec.not_after_days * 86400).unwrap())
        .unwrap();
    if spec.ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .unwrap(),
        )
        .unwrap();
    } else {
        b.append_extension(BasicConstraints::new().build().unwrap())
            .unwrap();
        let mut ku = KeyUsage::new();
        ku.critical().digital_signature().non_repudiation();
        if key.id() == openssl::pkey::Id::RSA {
            ku.key_encipherment();
        } else {
            ku.key_agreement();
        }
        b.append_extension(ku.build().unwrap()).unwrap();
        match spec.eku {
            Some("email") => b
                .append_extension(ExtendedKeyUsage::new().email_protection().build().unwrap())
                .unwrap(),
            Some(_) => b
                .append_extension(ExtendedKeyUsage::new().server_auth().build().unwrap())
                .unwrap(),
            None => {}
        }
    }
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(issuer.map(|(c, _)| c.as_ref()), None))
        .unwrap();
    b.append_extension(ski).unwrap();
    if let Some((ic, _)) = issuer {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(ic), None))
            .unwrap();
        b.append_extension(aki).unwrap();
    }
    if let Some(e) = spec.email {
        let san = SubjectAlternativeName::new()
            .email(e)
            .build(&b.x509v3_context(issuer.map(|(c, _)| c.as_ref()), None))
            .unwrap();
        b.append_extension(san).unwrap();
    }
    let signing_key = issuer.map(|(_, k)| k).unwrap_or(key);
    b.sign(signing_key, MessageDigest::sha256()).unwrap();
    b.build()
}

/// One identity: certificate and key on disk.
#[derive(Clone)]
pub struct Ident {
    pub email: String,
    pub cert: X509,
    pub key: PKey<Private>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

pub fn write_key(path: &Path, key: &PKey<Private>) {
    std::fs::write(path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The test PKI on disk.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: X509,
    pub ca_key: PKey<Private>,
    pub ca_path: PathBuf,
    /// `recipients/`: alice (RSA), bob (EC P-256), carol (expired), dave (serverAuth only).
    pub recipients: PathBuf,
    pub alice: Ident,
    pub bob: Ident,
    pub carol: Ident,
    pub dave: Ident,
    /// Signer for *@example.com, RSA.
    pub signer_rsa: Ident,
    /// Signer for *@ec.example.com, ECDSA P-384.
    pub signer_ec: Ident,
}

impl Pki {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn issue(
        &self,
        spec: &CertSpec<'_>,
        kind: KeyKind,
        file: &str,
        into_recipients: bool,
    ) -> Ident {
        let key = new_key(kind);
        let cert = make_cert(spec, &key, Some((&self.ca, &self.ca_key)));
        let base = if into_recipients {
            self.recipients.clone()
        } else {
            self.dir.path().to_path_buf()
        };
        let cert_path = base.join(format!("{file}.pem"));
        std::fs::write(&cert_path, cert.to_pem().unwrap()).unwrap();
        // keys never go into the recipients directory
        let key_path = self.dir.path().join(format!("{file}.key"));
        write_key(&key_path, &key);
        Ident {
            email: spec.email.unwrap_or("").to_string(),
            cert,
            key,
            cert_path,
            key_path,
        }
    }

    pub fn config(&self) -> SmimeConfig {
        SmimeConfig {
            recipient_certs: PathBuf::from("recipients"),
            signer: vec![
                SignerConfig {
                    senders: vec!["*@ec.example.com".into()],
                    cert: PathBuf::from("signer-ec.pem"),
                    key_file: PathBuf::from("signer-ec.key"),
                    chain: Some(PathBuf::from("ca.pem")),
                    opaque: false,
                },
                SignerConfig {
                    senders: vec!["*@example.com".into()],
                    cert: PathBuf::from("signer-rsa.pem"),
                    key_file: PathBuf::from("signer-rsa.key"),
                    chain: Some(PathBuf::from("ca.pem")),
                    opaque: false,
                },
            ],
            ..SmimeConfig::default()
        }
    }

    pub fn load(&self, cfg: &SmimeConfig) -> Smime {
        Smime::load(cfg, self.dir.path()).unwrap()
    }
}

pub fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = new_key(KeyKind::Rsa2048);
    let ca = make_cert(
        &CertSpec {
            cn: "sealgate test CA",
            email: None,
            not_before_days: -30,
            not_after_days: 3650,
            eku: None,
            ca: true,
        },
        &ca_key,
        None,
    );
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.to_pem().unwrap()).unwrap();
    let recipients = dir.path().join("recipients");
    std::fs::create_dir(&recipients).unwrap();
    let placeholder = Ident {
        email: String::new(),
        cert: ca.clone(),
        key: ca_key.clone(),
        cert_path: PathBuf::new(),
        key_path: PathBuf::new(),
    };
    let mut p = Pki {
        dir,
        ca,
        ca_key,
        ca_path,
        recipients,
        alice: placeholder.clone(),
        bob: placeholder.clone(),
        carol: placeholder.clone(),
        dave: placeholder.clone(),
        signer_rsa: placeholder.clone(),
        signer_ec: placeholder,
    };
    p.alice = p.issue(
        &CertSpec::person("alice@bank.example"),
        KeyKind::Rsa2048,
        "alice",
        true,
    );
    p.bob = p.issue(
        &CertSpec::person("Bob@Bank.Example"),
        KeyKind::EcP256,
        "bob",
        true,
    );
    p.carol = p.issue(
        &CertSpec {
            not_before_days: -400,
            not_after_days: -35,
            ..CertSpec::person("carol@bank.example")
        },
        KeyKind::Rsa2048,
        "carol",
        true,
    );
    p.dave = p.issue(
        &CertSpec {
            eku: Some("server"),
            ..CertSpec::person("dave@bank.example")
        },
        KeyKind::Rsa2048,
        "dave",
        true,
    );
    p.signer_rsa = p.issue(
        &CertSpec::person("payroll@example.com"),
        KeyKind::Rsa2048,
        "signer-rsa",
        false,
    );
    p.signer_ec = p.issue(
        &CertSpec::person("ops@ec.example.com"),
        KeyKind::EcP384,
        "signer-ec",
        false,
    );
    p
}

/// Runs a command with stdin, returns output; panics with stderr when it fails and `must` is set.
pub fn run(cmd: &str, args: &[&str], stdin: Option<&[u8]>, must: bool) -> Output {
    use std::io::Write;
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let data = stdin.map(|d| d.to_vec()).unwrap_or_default();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    if must && !out.status.success() {
        panic!(
            "{cmd} {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The MIME entity S/MIME protects in a message: its Content-* fields (or a default
/// Content-Type) and body, byte for byte. Written independently of sealgate's parser.
pub fn content_entity(message: &[u8]) -> Vec<u8> {
    let split = if message.starts_with(b"\r\n") {
        2
    } else {
        message
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(message.len(), |i| i + 4)
    };
    let header = &message[..split];
    let mut out: Vec<u8> = Vec::new();
    let mut in_content = false;
    let mut has_ct = false;
    let mut pos = 0;
    while pos < header.len() {
        let end = header[pos..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(header.len(), |i| pos + i + 2);
        let line = &header[pos..end];
        pos = end;
        if line == b"\r\n" {
            break;
        }
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            if in_content {
                out.extend_from_slice(line);
            }
            continue;
        }
        let lower = line.to_ascii_lowercase();
        in_content = lower.starts_with(b"content-") && line.contains(&b':');
        if in_content {
            let name_end = line.iter().position(|c| *c == b':').unwrap();
            has_ct |= line[..name_end]
                .trim_ascii()
                .eq_ignore_ascii_case(b"content-type");
            out.extend_from_slice(line);
        }
    }
    if !has_ct {
        out.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&message[split..]);
    out
}

/// A multipart message with an 8-bit UTF-8 body, a binary attachment and a nested message.
pub fn rich_message() -> Vec<u8> {
    let mut bin = Vec::new();
    for i in 0..3000u32 {
        bin.extend_from_slice(&i.to_le_bytes());
    }
    let b64 = {
        use base64::Engine;
        let t = base64::engine::general_purpose::STANDARD.encode(&bin);
        t.as_bytes()
            .chunks(76)
            .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
            .collect::<String>()
    };
    format!(
        "From: Payroll <payroll@example.com>\r\n\
         To: alice@bank.example, bob@bank.example\r\n\
         Subject: Gehaltsabrechnung März\r\n\
         Date: Mon, 30 Nov 2026 10:00:00 +0100\r\n\
         Message-ID: <rich-1@example.com>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
         \r\n\
         --outer\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         Grüße aus Köln — naïve café ✓\r\n\
         --outer\r\n\
         Content-Type: application/octet-stream; name=\"data.bin\"\r\n\
         Content-Disposition: attachment; filename=\"data.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         {b64}\
         --outer\r\n\
         Content-Type: message/rfc822\r\n\
         \r\n\
         From: someone@else.example\r\n\
         Subject: forwarded\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         Inner ümlaut body\r\n\
         --outer--\r\n"
    )
    .into_bytes()
}
