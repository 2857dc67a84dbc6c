//! Recipient certificates: found by the e-mail addresses they carry.
//!
//! Its one job is to answer "which certificate may I encrypt to for this address, and
//! if none, why not". It loads PEM and DER files from one directory plus the
//! per-domain certificates named in the config, indexes each certificate under every
//! rfc822Name in its subjectAltName and every emailAddress in its subject (lower case),
//! and checks each one once at load (purpose, key usage, key type, optional trust
//! anchors) and again at lookup (validity dates, since a server runs for months).
//!
//! Invariant: [`CertStore::lookup`] never returns a certificate that failed a check;
//! among several usable ones the newest (latest notBefore) wins.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::Id;
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509ExtendedKeyUsage, X509KeyUsage, X509StoreContext, X509};

/// Why a certificate is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// Not valid now: expired, not yet valid, or the clock unreadable.
    Dates(crate::validity::Validity),
    /// It has an extendedKeyUsage extension without emailProtection.
    NoEmailProtection,
    /// Its keyUsage extension does not allow the key to be used for encryption.
    KeyUsage(String),
    /// Its key is neither RSA nor EC.
    UnsupportedKey(String),
    /// `trust_anchors` is set and the certificate does not chain to one.
    Untrusted(String),
    /// It carries no e-mail address (only reported for domain certificates' files).
    NoAddress,
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::Dates(v) => write!(f, "{v}"),
            Unusable::NoEmailProtection => {
                write!(f, "extended key usage lacks emailProtection")
            }
            Unusable::KeyUsage(why) => write!(f, "key usage {why}"),
            Unusable::UnsupportedKey(k) => write!(f, "unsupported key type {k}"),
            Unusable::Untrusted(why) => write!(f, "does not chain to a trust anchor: {why}"),
            Unusable::NoAddress => write!(f, "carries no e-mail address"),
        }
    }
}

/// A certificate as loaded, with what the store learnt about it.
#[derive(Clone)]
pub struct StoredCert {
    /// The file it came from.
    pub path: PathBuf,
    /// The certificate itself.
    pub cert: X509,
    /// Lower-case addresses it carries (SAN rfc822Name and subject emailAddress).
    pub addresses: Vec<String>,
    /// Checks that do not depend on time; `Err` means never used.
    pub static_check: Result<(), Unusable>,
    /// SHA-256 of the DER, lower-case hex.
    pub fingerprint: String,
    /// `RSA-2048`, `EC prime256v1`, ...
    pub key_description: String,
}

impl fmt::Debug for StoredCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredCert")
            .field("path", &self.path)
            .field("addresses", &self.addresses)
            .field("static_check", &self.static_check)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl StoredCert {
    /// Time-dependent and static checks together, as of now.
    pub fn check_now(&self) -> Result<(), Unusable> {
        self.static_check.clone()?;
        check_dates(&self.cert)
    }

    /// notAfter as printed by OpenSSL (`Jan  1 00:00:00 2030 GMT`).
    pub fn not_after(&self) -> String {
        self.cert.not_after().to_string()
    }

    /// One-line subject, e.g. `CN=Alice, emailAddress=alice@example.com`.
    pub fn subject(&self) -> String {
        describe_name(self.cert.subject_name())
    }
}

/// No usable certificate for an address; says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NoCertificate {
    /// The address looked up.
    pub address: String,
    /// Certificates that carry the address but may not be used, with the reason.
    pub rejected: Vec<(PathBuf, Unusable)>,
}

impl fmt::Display for NoCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rejected.is_empty() {
            return write!(f, "no certificate for {}", self.address);
        }
        write!(f, "no usable certificate for {}:", self.address)?;
        for (i, (path, why)) in self.rejected.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            write!(f, "{sep}{} {why}", path.display())?;
        }
        Ok(())
    }
}

/// Why the store could not be built at all.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a PEM or DER certificate")]
    NotACertificate { path: PathBuf },
    #[error("{path}: trust anchors unusable: {why}")]
    TrustAnchors { path: PathBuf, why: String },
}

/// What the certificate is for; decides which key usage it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A recipient's certificate (encryption).
    Encrypt,
    /// Our own signing certificate.
    Sign,
}

/// The loaded recipient certificates.
#[derive(Debug, Default)]
pub struct CertStore {
    /// Every certificate read, usable or not.
    certs: Vec<StoredCert>,
    /// Lower-case address -> indexes into `certs`.
    by_address: HashMap<String, Vec<usize>>,
    /// Lower-case domain -> index into `certs` (from `domain_certs`).
    by_domain: BTreeMap<String, usize>,
    /// Files that could not be read or parsed; reported by `warnings`.
    load_problems: Vec<String>,
}

impl CertStore {
    /// Loads every file in `dir` (not recursive; hidden files skipped) and the domain
    /// certificates. A missing directory yields an empty store and a warning; an
    /// unreadable or unparsable file is skipped with a warning.
    pub fn load(
        dir: &Path,
        domain_certs: &[(String, PathBuf)],
        trust_anchors: Option<&Path>,
    ) -> Result<CertStore, StoreError> {
        let mut store = CertStore::default();
        let mut files: Vec<PathBuf> = Vec::new();
        match std::fs::read_dir(dir) {
            Ok(rd) => {
                for entry in rd.flatten() {
                    let p = entry.path();
                    let hidden = p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_none_or(|n| n.starts_with('.'));
                    if !hidden && p.is_file() {
                        files.push(p);
                    }
                }
            }
            Err(e) => store.load_problems.push(format!(
                "{}: recipient certificate directory unreadable ({e}); nothing can be encrypted",
                dir.display()
            )),
        }
        files.sort();
        for path in files {
            match read_certs(&path) {
                Ok(certs) => {
                    for cert in certs {
                        store.push(path.clone(), cert);
                    }
                }
                Err(e) => store.load_problems.push(format!("{e}; skipped")),
            }
        }
        for (domain, path) in domain_certs {
            let certs = read_certs(path)?;
            // A file may hold a chain; the first certificate is the gateway's own.
            let Some(cert) = certs.into_iter().next() else {
                return Err(StoreError::NotACertificate { path: path.clone() });
            };
            let domain_lc = domain.trim().to_ascii_lowercase();
            if domain_lc.contains(['@', '*']) {
                store.load_problems.push(format!(
                    "[smime.domain_certs] \"{domain}\": write the domain alone \
                     (\"partner.example\"); this entry never matches"
                ));
            }
            let named = addresses_of(&cert);
            if !named.is_empty() && !named.iter().any(|a| a.ends_with(&format!("@{domain_lc}"))) {
                store.load_problems.push(format!(
                    "{}: gateway certificate for {domain} names only {} - is it the right one?",
                    path.display(),
                    named.join(", ")
                ));
            }
            let idx = store.push_unindexed(path.clone(), cert);
            store.by_domain.insert(domain.to_ascii_lowercase(), idx);
        }
        if let Some(anchors) = trust_anchors {
            store.check_trust(anchors)?;
        }
        Ok(store)
    }

    fn push(&mut self, path: PathBuf, cert: X509) {
        if cert_is_ca(&cert) {
            // A CA certificate in the directory: a possible intermediate, never a
            // recipient, even when it carries an address.
            if !addresses_of(&cert).is_empty() {
                self.load_problems.push(format!(
                    "{}: a CA certificate (keyCertSign) is not used as a recipient certificate",
                    path.display()
                ));
            }
            self.certs.push(stored(path, cert, Purpose::Encrypt));
            return;
        }
        let idx = self.push_unindexed(path, cert);
        for a in self.certs[idx].addresses.clone() {
            self.by_address.entry(a).or_default().push(idx);
        }
    }

    fn push_unindexed(&mut self, path: PathBuf, cert: X509) -> usize {
        self.certs.push(stored(path, cert, Purpose::Encrypt));
        self.certs.len() - 1
    }

    /// Marks every certificate that does not chain to one of the anchors (intermediates
    /// may come from the directory itself). Time is not checked here.
    fn check_trust(&mut self, anchors: &Path) -> Result<(), StoreError> {
        let anchor_certs = read_certs(anchors)?;
        let trust_err = |why: String| StoreError::TrustAnchors {
            path: anchors.to_path_buf(),
            why,
        };
        let mut builder = X509StoreBuilder::new().map_err(|e| trust_err(e.to_string()))?;
        for c in anchor_certs {
            builder.add_cert(c).map_err(|e| trust_err(e.to_string()))?;
        }
        builder
            .set_flags(X509VerifyFlags::NO_CHECK_TIME | X509VerifyFlags::PARTIAL_CHAIN)
            .map_err(|e| trust_err(e.to_string()))?;
        let x509_store: X509Store = builder.build();
        let mut chain = Stack::new().map_err(|e| trust_err(e.to_string()))?;
        for c in &self.certs {
            if cert_is_ca(&c.cert) {
                chain
                    .push(c.cert.clone())
                    .map_err(|e| trust_err(e.to_string()))?;
            }
        }
        for c in &mut self.certs {
            if c.static_check.is_err() {
                continue;
            }
            if let Err(why) = verify_chain(&x509_store, &chain, &c.cert) {
                c.static_check = Err(Unusable::Untrusted(why));
            }
        }
        Ok(())
    }

    /// The certificate to encrypt to for `addr`: the newest usable one carrying the
    /// address, else the domain certificate for its domain.
    pub fn lookup(&self, addr: &str) -> Result<&StoredCert, NoCertificate> {
        // As the policy spells addresses: case-insensitive, no trailing dot on the domain.
        let key = addr.trim().trim_end_matches('.').to_ascii_lowercase();
        let mut rejected = Vec::new();
        let mut best: Option<&StoredCert> = None;
        for &i in self.by_address.get(&key).into_iter().flatten() {
            let Some(c) = self.certs.get(i) else { continue };
            match c.check_now() {
                Ok(()) => {
                    let newer = best.is_none_or(|b| {
                        c.cert.not_before().compare(b.cert.not_before()).ok()
                            == Some(std::cmp::Ordering::Greater)
                    });
                    if newer {
                        best = Some(c);
                    }
                }
                Err(why) => rejected.push((c.path.clone(), why)),
            }
        }
        if let Some(b) = best {
            return Ok(b);
        }
        if let Some(domain) = key.rsplit_once('@').map(|(_, d)| d) {
            if let Some(c) = self.by_domain.get(domain).and_then(|i| self.certs.get(*i)) {
                match c.check_now() {
                    Ok(()) => return Ok(c),
                    Err(why) => rejected.push((c.path.clone(), why)),
                }
            }
        }
        Err(NoCertificate {
            address: key,
            rejected,
        })
    }

    /// Number of certificates read (usable or not).
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// True when no certificate was read.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// Problems for `sealgate check`: unreadable files, unusable certificates with the
    /// reason, and certificates expiring within `days`.
    pub fn warnings(&self, days: i64) -> Vec<String> {
        let mut out = self.load_problems.clone();
        for c in &self.certs {
            if cert_is_ca(&c.cert) && c.addresses.is_empty() {
                continue;
            }
            let who = if c.addresses.is_empty() {
                String::from("(no address)")
            } else {
                c.addresses.join(", ")
            };
            match c.check_now() {
                Err(why) => out.push(format!("{}: {who}: not used: {why}", c.path.display())),
                Ok(()) => {
                    let v = crate::validity::of(&c.cert, days);
                    if let crate::validity::Validity::ExpiresSoon { .. } = v {
                        out.push(format!("{}: {who}: {v}", c.path.display()));
                    }
                }
            }
        }
        out
    }
}

/// Reads all certificates in a PEM file (several allowed) or one DER certificate.
pub fn read_certs(path: &Path) -> Result<Vec<X509>, StoreError> {
    let bytes = std::fs::read(path).map_err(|source| StoreError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if let Ok(certs) = X509::stack_from_pem(&bytes) {
        if !certs.is_empty() {
            return Ok(certs);
        }
    }
    X509::from_der(&bytes)
        .map(|c| vec![c])
        .map_err(|_| StoreError::NotACertificate {
            path: path.to_path_buf(),
        })
}

/// Builds the record for one certificate with its time-independent checks done.
pub fn stored(path: PathBuf, cert: X509, purpose: Purpose) -> StoredCert {
    let addresses = addresses_of(&cert);
    let fingerprint = cert
        .digest(MessageDigest::sha256())
        .map(|d| crate::hex::lower(&d))
        .unwrap_or_default();
    let key_description = describe_key(&cert);
    let static_check = static_checks(&cert, purpose);
    StoredCert {
        path,
        cert,
        addresses,
        static_check,
        fingerprint,
        key_description,
    }
}

/// Every rfc822Name in the SAN and emailAddress in the subject, lower case, deduplicated.
pub fn addresses_of(cert: &X509) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(sans) = cert.subject_alt_names() {
        for san in &sans {
            if let Some(e) = san.email() {
                out.push(e.trim().to_ascii_lowercase());
            }
        }
    }
    // The legacy subject emailAddress counts only when the SAN names no address
    // (RFC 8550 3): a certificate whose SAN says mallory@ cannot also claim alice@.
    if out.is_empty() {
        for entry in cert.subject_name().entries_by_nid(Nid::PKCS9_EMAILADDRESS) {
            if let Ok(s) = entry.data().to_string() {
                out.push(s.trim().to_ascii_lowercase());
            }
        }
    }
    out.retain(|a| a.contains('@'));
    out.sort();
    out.dedup();
    out
}

fn cert_is_ca(cert: &X509) -> bool {
    // X509_check_ca-like: keyCertSign in key usage is enough for our purposes.
    cert.key_usage()
        .is_some_and(|ku| ku.contains(X509KeyUsage::KEY_CERT_SIGN))
}

/// Purpose and key checks that do not depend on the time.
pub fn static_checks(cert: &X509, purpose: Purpose) -> Result<(), Unusable> {
    if let Some(eku) = cert.extended_key_usage() {
        if !eku.contains(X509ExtendedKeyUsage::SMIME) && !eku.contains(X509ExtendedKeyUsage::ANYEKU)
        {
            return Err(Unusable::NoEmailProtection);
        }
    }
    let key = cert
        .public_key()
        .map_err(|_| Unusable::UnsupportedKey("unreadable".into()))?;
    let ku = cert.key_usage();
    match (key.id(), purpose) {
        (Id::RSA, Purpose::Encrypt) => {
            if let Some(ku) = ku {
                if !ku.contains(X509KeyUsage::KEY_ENCIPHERMENT) {
                    return Err(Unusable::KeyUsage("lacks keyEncipherment".into()));
                }
            }
        }
        (Id::EC, Purpose::Encrypt) => {
            if let Some(ku) = ku {
                if !ku.contains(X509KeyUsage::KEY_AGREEMENT) {
                    return Err(Unusable::KeyUsage("lacks keyAgreement".into()));
                }
            }
        }
        (Id::RSA | Id::EC, Purpose::Sign) => {
            if let Some(ku) = ku {
                if !ku.contains(X509KeyUsage::DIGITAL_SIGNATURE)
                    && !ku.contains(X509KeyUsage::NON_REPUDIATION)
                {
                    return Err(Unusable::KeyUsage("lacks digitalSignature".into()));
                }
            }
        }
        (other, _) => return Err(Unusable::UnsupportedKey(format!("{other:?}"))),
    }
    Ok(())
}

/// notBefore <= now <= notAfter (an unreadable clock refuses rather than guesses).
pub fn check_dates(cert: &X509) -> Result<(), Unusable> {
    let v = crate::validity::of(cert, 0);
    if v.is_usable() {
        Ok(())
    } else {
        Err(Unusable::Dates(v))
    }
}

fn verify_chain(store: &X509Store, chain: &Stack<X509>, cert: &X509) -> Result<(), String> {
    let mut ctx = X509StoreContext::new().map_err(|e| e.to_string())?;
    let result = ctx.init(store, cert, chain, |c| {
        let ok = c.verify_cert()?;
        Ok((ok, c.error().to_string()))
    });
    match result {
        Ok((true, _)) => Ok(()),
        Ok((false, why)) => Err(why),
        Err(e) => Err(e.to_string()),
    }
}

fn describe_key(cert: &X509) -> String {
    let Ok(key) = cert.public_key() else {
        return "unknown".into();
    };
    match key.id() {
        Id::RSA => format!("RSA-{}", key.bits()),
        Id::EC => key
            .ec_key()
            .ok()
            .and_then(|k| k.group().curve_name())
            .and_then(|n| n.short_name().ok())
            .map_or_else(|| "EC".to_string(), |n| format!("EC {n}")),
        other => format!("{other:?}"),
    }
}

/// `CN=..., emailAddress=...` for messages.
pub fn describe_name(name: &openssl::x509::X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let val = e.data().to_string().unwrap_or_default();
            format!("{key}={val}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}
