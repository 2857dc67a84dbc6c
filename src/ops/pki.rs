//! Throwaway certificates for `sealgate demo` and the tests: a CA, TLS server
//! certificates, S/MIME certificates (RSA or EC) and DKIM keys.
//!
//! Nothing here is meant for production keys; it writes private keys with mode 0600
//! all the same, because sealgate refuses anything looser.

use std::path::Path;

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

/// A certificate and its key.
pub struct Issued {
    pub cert: X509,
    pub key: PKey<Private>,
}

/// Key algorithm for generated certificates.
#[derive(Debug, Clone, Copy)]
pub enum KeyKind {
    Rsa2048,
    EcP256,
}

fn new_key(kind: KeyKind) -> Result<PKey<Private>, ErrorStack> {
    match kind {
        KeyKind::Rsa2048 => PKey::from_rsa(Rsa::generate(2048)?),
        KeyKind::EcP256 => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
            PKey::from_ec_key(EcKey::generate(&group)?)
        }
    }
}

fn serial() -> Result<Asn1Integer, ErrorStack> {
    let mut bn = BigNum::new()?;
    bn.rand(120, MsbOption::MAYBE_ZERO, false)?;
    bn.to_asn1_integer()
}

fn builder(
    cn: &str,
    key: &PKey<Private>,
    days_from: i64,
    days_to: i64,
) -> Result<X509Builder, ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, cn)?;
    let name = name.build();
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = serial()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_pubkey(key)?;
    let now = crate::clock::unix_now() as i64;
    let not_before = Asn1Time::from_unix(now + days_from * 86400)?;
    let not_after = Asn1Time::from_unix(now + days_to * 86400)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    Ok(b)
}

/// A self-signed CA.
pub fn ca(cn: &str) -> Result<Issued, ErrorStack> {
    let key = new_key(KeyKind::Rsa2048)?;
    let mut b = builder(cn, &key, -1, 3650)?;
    let mut subject = X509NameBuilder::new()?;
    subject.append_entry_by_nid(Nid::COMMONNAME, cn)?;
    b.set_issuer_name(&subject.build())?;
    b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()?,
    )?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok(Issued {
        cert: b.build(),
        key,
    })
}

/// A TLS server certificate for `dns` names and `ips`, signed by `ca`, valid for 825 days.
pub fn server(ca: &Issued, dns: &[&str], ips: &[&str]) -> Result<Issued, ErrorStack> {
    server_valid(ca, dns, ips, -1, 825)
}

/// A TLS server certificate as [`server`] makes, valid from `days_from` to `days_to`
/// relative to now (an expired one for tests: `-30, -1`).
pub fn server_valid(
    ca: &Issued,
    dns: &[&str],
    ips: &[&str],
    days_from: i64,
    days_to: i64,
) -> Result<Issued, ErrorStack> {
    let key = new_key(KeyKind::EcP256)?;
    let cn = dns
        .first()
        .copied()
        .or(ips.first().copied())
        .unwrap_or("localhost");
    let mut b = builder(cn, &key, days_from, days_to)?;
    b.set_issuer_name(ca.cert.subject_name())?;
    let mut san = SubjectAlternativeName::new();
    for d in dns {
        san.dns(d);
    }
    for i in ips {
        san.ip(i);
    }
    let san = san.build(&b.x509v3_context(Some(&ca.cert), None))?;
    b.append_extension(san)?;
    b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
    b.sign(&ca.key, MessageDigest::sha256())?;
    Ok(Issued {
        cert: b.build(),
        key,
    })
}

/// An S/MIME certificate for `email`, valid from `days_from` to `days_to` relative to now.
pub fn smime(
    ca: &Issued,
    email: &str,
    kind: KeyKind,
    days_from: i64,
    days_to: i64,
) -> Result<Issued, ErrorStack> {
    let key = new_key(kind)?;
    let mut b = builder(email, &key, days_from, days_to)?;
    b.set_issuer_name(ca.cert.subject_name())?;
    let san = SubjectAlternativeName::new()
        .email(email)
        .build(&b.x509v3_context(Some(&ca.cert), None))?;
    b.append_extension(san)?;
    b.append_extension(ExtendedKeyUsage::new().email_protection().build()?)?;
    let mut ku = KeyUsage::new();
    ku.critical().digital_signature().non_repudiation();
    match kind {
        KeyKind::Rsa2048 => ku.key_encipherment(),
        KeyKind::EcP256 => ku.key_agreement(),
    };
    b.append_extension(ku.build()?)?;
    b.sign(&ca.key, MessageDigest::sha256())?;
    Ok(Issued {
        cert: b.build(),
        key,
    })
}

/// Writes a certificate as PEM (mode 0644).
pub fn write_cert(path: &Path, cert: &X509) -> std::io::Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(path, cert.to_pem().map_err(std::io::Error::other)?)
}

/// Writes a private key as PKCS#8 PEM with mode 0600.
pub fn write_key(path: &Path, key: &PKey<Private>) -> std::io::Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    let pem = key
        .private_key_to_pem_pkcs8()
        .map_err(std::io::Error::other)?;
    crate::secret::write_private(path, &pem)
}
