//! DKIM: loading signing keys, signing the final outgoing message, and generating keys.
//!
//! Its one job is to add `DKIM-Signature` headers, computed by mail-auth, for the domain
//! of the header `From` (so that DMARC aligns), as the very last transform over the exact
//! bytes that will be relayed.
//!
//! Invariants:
//! - Nothing reachable from message content panics: a message whose `From` cannot be
//!   parsed, or whose `From` addresses disagree on the domain, is returned unchanged.
//! - A parent domain's key signs a subdomain only when its entry says `sign_subdomains`.
//! - Every configured key for the chosen domain signs, so RSA and Ed25519 keys for one
//!   domain give two signatures (RFC 8463).
//! - Key material is never logged or formatted; errors name the key file only.
//! - Keys are read through [`crate::secret::read_secret_file`], which refuses key files
//!   readable by group or others; RSA keys below 2048 bits are refused.
//!
//! mail-auth does the DKIM work (canonicalisation, body hash, header list, `DKIM-Signature`
//! syntax). The RSA private-key operation itself is OpenSSL's (blinded, and about twice as
//! fast as ring's here, which the signing benchmark needs); Ed25519 stays with ring.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use mail_auth::common::crypto::{CryptoError, Ed25519Key, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner as MailAuthSigner, Done, Signature};
use openssl::pkey::{Id, PKey, Private};
use serde::{Deserialize, Serialize};

use crate::message::{mime, Headers};
use crate::secret::{read_secret_file, SecretError};

/// Headers covered by every signature, in the order RFC 6376 §5.4.1 suggests. Headers
/// that the message lacks are signed as absent, so adding one later breaks the signature.
const SIGNED_HEADERS: [&str; 11] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Reply-To",
    "In-Reply-To",
    "References",
];

/// Headers listed once more than they occur ("over-signed"): a second `From`, `Subject`,
/// `To` or `Date` added in transit makes verification fail.
const OVERSIGNED_HEADERS: [&str; 4] = ["From", "Subject", "To", "Date"];

/// Smallest RSA modulus we sign with (RFC 8301).
const MIN_RSA_BITS: u32 = 2048;

/// One `[[dkim]]` entry of `sealgate.toml`.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DkimConfig {
    /// The signing domain (`d=`); messages whose header From is in this domain are signed.
    pub domain: String,
    /// The selector (`s=`); the public key lives at `selector._domainkey.domain`.
    pub selector: String,
    /// PEM private key, RSA (>= 2048 bits) or Ed25519, PKCS#8 or PKCS#1; mode 0600.
    pub key_file: PathBuf,
    /// Also sign mail from subdomains of `domain` (e.g. `billing.example.com`) with this key.
    #[serde(default)]
    pub sign_subdomains: bool,
    /// Signature lifetime, e.g. `"7d"`; written as `x=`. No `x=` when absent.
    pub expire: Option<String>,
    /// `sealgate check` warns when the key file is older than this, e.g. `"365d"`.
    pub max_key_age: Option<String>,
}

/// Why DKIM keys could not be loaded, generated or used. Messages name files, never keys.
#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("{path}: not a usable PEM private key (PKCS#8 or PKCS#1 expected): {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("{path}: RSA key has {bits} bits; DKIM needs at least {MIN_RSA_BITS} (make a new one with `sealgate dkim-keygen`)")]
    WeakKey { path: PathBuf, bits: u32 },
    #[error("{path}: RSA key has {bits} bits; at most 4096 are supported")]
    OversizedKey { path: PathBuf, bits: u32 },
    #[error("{path}: key type {kind} cannot sign DKIM; use RSA or Ed25519")]
    UnsupportedKeyType { path: PathBuf, kind: String },
    #[error("[[dkim]] domain {domain:?}: {reason}")]
    BadEntry { domain: String, reason: String },
    #[error("{path} already exists; refusing to overwrite a key (choose a new selector or remove the file)")]
    KeyExists { path: PathBuf },
    #[error("{path}: cannot write key: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("RSA key size {0} is not supported; choose 2048, 3072 or 4096")]
    BadBits(u32),
    #[error("unknown DKIM algorithm {0:?}; choose rsa or ed25519")]
    UnknownAlgorithm(String),
    #[error("DKIM signing with {domain} selector {selector} failed: {reason}")]
    Sign {
        domain: String,
        selector: String,
        reason: String,
    },
}

/// Key algorithm, as written in the DNS record's `k=` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Rsa,
    Ed25519,
}

impl Algorithm {
    /// The `k=` value of the DNS record.
    pub fn dns_name(self) -> &'static str {
        match self {
            Algorithm::Rsa => "rsa",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.dns_name())
    }
}

impl std::str::FromStr for Algorithm {
    type Err = DkimError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "rsa" => Ok(Algorithm::Rsa),
            "ed25519" => Ok(Algorithm::Ed25519),
            _ => Err(DkimError::UnknownAlgorithm(s.to_string())),
        }
    }
}

/// What is public about one configured key: enough for `doctor`, `check` and `explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Signing domain, lower case, no trailing dot.
    pub domain: String,
    pub selector: String,
    pub algorithm: Algorithm,
    /// RSA modulus size; 256 for Ed25519.
    pub bits: u32,
    /// The key file, resolved against the config directory.
    pub path: PathBuf,
    /// The bytes of the DNS record's `p=` tag: SubjectPublicKeyInfo DER for RSA, the raw
    /// 32-byte key for Ed25519.
    pub public_key: Vec<u8>,
    /// The key file's modification time, used as the key's age.
    pub modified: Option<SystemTime>,
    pub sign_subdomains: bool,
}

impl KeyInfo {
    /// `selector._domainkey.domain`, without trailing dot.
    pub fn dns_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }

    /// The TXT record value, unsplit: `v=DKIM1; k=rsa; p=...`.
    pub fn txt_value(&self) -> String {
        format!(
            "v=DKIM1; k={}; p={}",
            self.algorithm.dns_name(),
            base64::engine::general_purpose::STANDARD.encode(&self.public_key)
        )
    }

    /// The zone-file line to paste: the value split into quoted strings of at most 255 bytes.
    pub fn txt_record(&self) -> String {
        format_txt_record(&self.dns_name(), &self.txt_value())
    }

    /// How long ago the key file was last modified.
    pub fn age(&self) -> Option<Duration> {
        self.modified
            .and_then(|m| SystemTime::now().duration_since(m).ok())
    }
}

/// Which key signs (or would sign) a message; for `explain` and the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SigningKeyRef {
    pub domain: String,
    pub selector: String,
    pub algorithm: Algorithm,
    pub key_file: PathBuf,
}

/// An RSA private key whose PKCS#1 v1.5 SHA-256 signature OpenSSL computes, for mail-auth.
struct OpensslRsaKey {
    /// Invariant: an RSA key of 2048 to 4096 bits (checked in `load_key`).
    key: PKey<Private>,
}

impl SigningKey for OpensslRsaKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        let mut data = Vec::with_capacity(1024);
        input.write(&mut data);
        let fail = |e: openssl::error::ErrorStack| {
            mail_auth::Error::Crypto(CryptoError::Library(first_error(&e)))
        };
        let mut signer =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &self.key)
                .map_err(fail)?;
        signer.update(&data).map_err(fail)?;
        signer.sign_to_vec().map_err(fail)
    }

    fn algorithm(&self) -> mail_auth::common::crypto::Algorithm {
        mail_auth::common::crypto::Algorithm::RsaSha256
    }
}

/// A private key ready for mail-auth, before the signer template is built.
enum PrivateKey {
    Rsa(OpensslRsaKey),
    Ed25519(Ed25519Key),
}

/// A mail-auth signer (template with d=, s=, h=, c=, x=) for either key type.
enum KeySigner {
    Rsa(MailAuthSigner<OpensslRsaKey, Done>),
    Ed25519(MailAuthSigner<Ed25519Key, Done>),
}

impl KeySigner {
    fn new(key: PrivateKey, info: &KeyInfo, expire: Option<Duration>) -> KeySigner {
        fn template<T: SigningKey>(
            key: T,
            info: &KeyInfo,
            expire: Option<Duration>,
        ) -> MailAuthSigner<T, Done> {
            let signer = MailAuthSigner::from_key(key)
                .domain(info.domain.clone())
                .selector(info.selector.clone())
                .headers(
                    SIGNED_HEADERS
                        .iter()
                        .chain(OVERSIGNED_HEADERS.iter())
                        .copied(),
                )
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Relaxed);
            match expire {
                Some(expire) => signer.expiration(expire.as_secs()),
                None => signer,
            }
        }
        match key {
            PrivateKey::Rsa(k) => KeySigner::Rsa(template(k, info, expire)),
            PrivateKey::Ed25519(k) => KeySigner::Ed25519(template(k, info, expire)),
        }
    }

    fn sign(&self, message: &[u8]) -> mail_auth::Result<Signature> {
        match self {
            KeySigner::Rsa(s) => s.sign(message),
            KeySigner::Ed25519(s) => s.sign(message),
        }
    }
}

/// One loaded key with its signer.
struct LoadedKey {
    info: KeyInfo,
    signer: KeySigner,
}

/// All configured DKIM keys, loaded once; shared between sessions in an `Arc`.
pub struct DkimSigner {
    /// In configuration order; signatures are prepended in this order.
    keys: Vec<LoadedKey>,
    /// Non-fatal findings (old keys), for `sealgate check`.
    warnings: Vec<String>,
}

impl std::fmt::Debug for DkimSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the keys themselves.
        f.debug_struct("DkimSigner")
            .field(
                "keys",
                &self.keys.iter().map(|k| &k.info).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl DkimSigner {
    /// Loads every `[[dkim]]` entry; relative key paths are resolved against `base`.
    pub fn load(entries: &[DkimConfig], base: &Path) -> Result<DkimSigner, DkimError> {
        let mut keys: Vec<LoadedKey> = Vec::with_capacity(entries.len());
        let mut warnings = Vec::new();
        for entry in entries {
            let domain = crate::address::normalize_domain(&entry.domain);
            if keys
                .iter()
                .any(|k| k.info.domain == domain && k.info.selector == entry.selector)
            {
                return Err(bad_entry(
                    entry,
                    "selector",
                    format!("{:?} is configured twice for this domain", entry.selector),
                ));
            }
            let expire = entry
                .expire
                .as_deref()
                .map(|text| {
                    dkim_duration(text).map_err(|reason| bad_entry(entry, "expire", reason))
                })
                .transpose()?;
            let max_age = entry
                .max_key_age
                .as_deref()
                .map(|text| {
                    dkim_duration(text).map_err(|reason| bad_entry(entry, "max_key_age", reason))
                })
                .transpose()?;
            let (info, key) = load_key(entry, base)?;
            if let (Some(max_age), Some(age)) = (max_age, info.age()) {
                if age > max_age {
                    warnings.push(format!(
                        "{}: DKIM key for {} (selector {}) is {} days old, older than max_key_age {}; rotate it: sealgate dkim-keygen --domain {} --selector NEW",
                        info.path.display(),
                        info.domain,
                        info.selector,
                        age.as_secs() / 86_400,
                        entry.max_key_age.as_deref().unwrap_or_default(),
                        info.domain,
                    ));
                }
            }
            let signer = KeySigner::new(key, &info, expire);
            keys.push(LoadedKey { info, signer });
        }
        Ok(DkimSigner { keys, warnings })
    }

    /// Signs for the header-From domain (DMARC alignment). A parent domain's key signs a
    /// subdomain only if its entry has `sign_subdomains`. Several keys for one domain give
    /// several `DKIM-Signature` headers. Returns the message with the signature header(s)
    /// prepended, or unchanged when no key fits.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, DkimError> {
        self.sign_for(message, &Headers::from_fields_of(message))
    }

    /// [`sign`](Self::sign) for a message whose header fields are already indexed:
    /// `headers` is the header block of `message` (as [`crate::message::Message`] holds
    /// it), so the From domain is not read again.
    pub fn sign_with_headers(
        &self,
        message: &[u8],
        headers: &Headers<'_>,
    ) -> Result<Vec<u8>, DkimError> {
        self.sign_for(message, &headers.from_fields())
    }

    /// Signs `message`, whose From fields hold `from` ([`Headers::from_fields`]).
    fn sign_for(&self, message: &[u8], from: &[Vec<String>]) -> Result<Vec<u8>, DkimError> {
        let keys = self.keys_for_message(from);
        if keys.is_empty() {
            return Ok(message.to_vec());
        }
        // mail-auth 0.13 hashes whitespace-only lines at the end of the body as empty
        // lines instead of dropping them (RFC 6376 §3.4.4), so it signs over a copy whose
        // trailing lines have the same relaxed canonical form; the original is relayed.
        let to_sign = without_trailing_whitespace_lines(message);
        let mut headers = Vec::with_capacity(600 * keys.len());
        for key in keys {
            let signature = key.signer.sign(&to_sign).map_err(|err| DkimError::Sign {
                domain: key.info.domain.clone(),
                selector: key.info.selector.clone(),
                reason: err.to_string(),
            })?;
            headers.extend_from_slice(signature.to_header().as_bytes());
        }
        let mut out = headers;
        out.reserve(message.len());
        out.extend_from_slice(message);
        Ok(out)
    }

    /// The keys [`sign`](Self::sign) would use for this message; empty when none fits.
    pub fn signing_keys_for(&self, message: &[u8]) -> Vec<SigningKeyRef> {
        self.keys_for_message(&Headers::from_fields_of(message))
            .into_iter()
            .map(|k| SigningKeyRef {
                domain: k.info.domain.clone(),
                selector: k.info.selector.clone(),
                algorithm: k.info.algorithm,
                key_file: k.info.path.clone(),
            })
            .collect()
    }

    /// True when mail from `domain` (e.g. a sender's domain) would be signed.
    pub fn covers(&self, domain: &str) -> bool {
        !self
            .keys_for_domain(&crate::address::normalize_domain(domain))
            .is_empty()
    }

    /// The configured signing domains, sorted, without duplicates.
    pub fn domains(&self) -> Vec<String> {
        let mut domains: Vec<String> = self.keys.iter().map(|k| k.info.domain.clone()).collect();
        domains.sort();
        domains.dedup();
        domains
    }

    /// Public facts about every loaded key, in configuration order.
    pub fn keys(&self) -> Vec<KeyInfo> {
        self.keys.iter().map(|k| k.info.clone()).collect()
    }

    /// Non-fatal problems found while loading (keys older than `max_key_age`).
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    fn keys_for_message(&self, from: &[Vec<String>]) -> Vec<&LoadedKey> {
        match header_from_domain(from) {
            Some(domain) => self.keys_for_domain(&domain),
            None => Vec::new(),
        }
    }

    /// Exact domain first; otherwise the nearest parent whose entries allow subdomains.
    fn keys_for_domain(&self, domain: &str) -> Vec<&LoadedKey> {
        let exact: Vec<&LoadedKey> = self
            .keys
            .iter()
            .filter(|k| k.info.domain == domain)
            .collect();
        if !exact.is_empty() {
            return exact;
        }
        let mut rest = domain;
        while let Some((_, parent)) = rest.split_once('.') {
            let found: Vec<&LoadedKey> = self
                .keys
                .iter()
                .filter(|k| k.info.sign_subdomains && k.info.domain == parent)
                .collect();
            if !found.is_empty() {
                return found;
            }
            rest = parent;
        }
        Vec::new()
    }
}

/// Reads one entry's key without building a signer: for `doctor` and `check`.
pub fn inspect_key(entry: &DkimConfig, base: &Path) -> Result<KeyInfo, DkimError> {
    load_key(entry, base).map(|(info, _)| info)
}

fn bad_entry(entry: &DkimConfig, key: &str, reason: String) -> DkimError {
    DkimError::BadEntry {
        domain: entry.domain.clone(),
        reason: format!("{key}: {reason}"),
    }
}

fn load_key(entry: &DkimConfig, base: &Path) -> Result<(KeyInfo, PrivateKey), DkimError> {
    let domain = crate::address::normalize_domain(&entry.domain);
    check_dns_label_text(&domain).map_err(|reason| bad_entry(entry, "domain", reason))?;
    check_dns_label_text(&entry.selector).map_err(|reason| bad_entry(entry, "selector", reason))?;
    let path = if entry.key_file.is_absolute() {
        entry.key_file.clone()
    } else {
        base.join(&entry.key_file)
    };
    let pem = read_secret_file(&path)?;
    let bad = |reason: String| DkimError::BadKey {
        path: path.clone(),
        reason,
    };
    // OpenSSL reads PKCS#8 ("PRIVATE KEY") and PKCS#1 ("RSA PRIVATE KEY") alike.
    let pkey = PKey::<Private>::private_key_from_pem(&pem).map_err(|e| bad(first_error(&e)))?;
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let (algorithm, bits, public_key, key) = match pkey.id() {
        Id::RSA => {
            let bits = pkey.bits();
            if bits < MIN_RSA_BITS {
                return Err(DkimError::WeakKey { path, bits });
            }
            if bits > 4096 {
                return Err(DkimError::OversizedKey { path, bits });
            }
            let spki = pkey.public_key_to_der().map_err(|e| bad(first_error(&e)))?;
            let rsa = pkey.rsa().map_err(|e| bad(first_error(&e)))?;
            if !rsa.check_key().map_err(|e| bad(first_error(&e)))? {
                return Err(bad("RSA key fails its consistency check".into()));
            }
            (
                Algorithm::Rsa,
                bits,
                spki,
                PrivateKey::Rsa(OpensslRsaKey { key: pkey }),
            )
        }
        Id::ED25519 => {
            let public = pkey.raw_public_key().map_err(|e| bad(first_error(&e)))?;
            let seed = pkey.raw_private_key().map_err(|e| bad(first_error(&e)))?;
            let key = Ed25519Key::from_seed_and_public_key(&seed, &public)
                .map_err(|e| bad(e.to_string()))?;
            (Algorithm::Ed25519, 256, public, PrivateKey::Ed25519(key))
        }
        other => {
            return Err(DkimError::UnsupportedKeyType {
                path,
                kind: format!("{other:?}"),
            })
        }
    };
    let info = KeyInfo {
        domain,
        selector: entry.selector.clone(),
        algorithm,
        bits,
        path,
        public_key,
        modified,
        sign_subdomains: entry.sign_subdomains,
    };
    Ok((info, key))
}

/// OpenSSL error stacks can be long; the first reason is what a person needs.
fn first_error(stack: &openssl::error::ErrorStack) -> String {
    stack
        .errors()
        .first()
        .and_then(|e| e.reason().map(str::to_string))
        .unwrap_or_else(|| "unreadable key".to_string())
}

/// Domains and selectors: ASCII letters, digits, `-`, `_` and dots between non-empty labels.
fn check_dns_label_text(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if !text.is_ascii() {
        return Err("must be ASCII; write an internationalised name as its xn-- form".into());
    }
    for label in text.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{text:?} is not a valid DNS name"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "{text:?} may hold only letters, digits, '-', '_' and '.'"
            ));
        }
    }
    Ok(())
}

/// A DKIM duration (`expire`, `max_key_age`): the grammar of [`crate::units`], and a
/// whole number of seconds, at least one (the `x=` tag counts seconds).
pub fn dkim_duration(text: &str) -> Result<Duration, String> {
    let d = crate::units::parse_duration(text).map_err(|e| e.to_string())?;
    if d.is_zero() || d.subsec_nanos() != 0 {
        return Err(format!(
            "\"{}\" must be a whole number of seconds, at least one, like \"7d\"",
            text.trim()
        ));
    }
    Ok(d)
}

/// The message with the whitespace (SP, HTAB) removed from the lines that follow the
/// body's last non-blank line, keeping their line breaks: the same relaxed body
/// canonicalization, in a form mail-auth hashes correctly. Unchanged (borrowed) when
/// those lines hold no whitespace.
fn without_trailing_whitespace_lines(message: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    let body_start = mime::header_end(message);
    let body = message.get(body_start..).unwrap_or_default();
    let is_blank = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let tail_start = match body.iter().rposition(|b| !is_blank(b)) {
        // Everything after the end of the last line with content.
        Some(last) => match body[last..].iter().position(|&b| b == b'\n') {
            Some(nl) => last + nl + 1,
            None => return Cow::Borrowed(message),
        },
        None => 0,
    };
    let tail = &body[tail_start..];
    if !tail.iter().any(|&b| b == b' ' || b == b'\t') {
        return Cow::Borrowed(message);
    }
    let mut out = Vec::with_capacity(message.len());
    out.extend_from_slice(&message[..body_start + tail_start]);
    for _ in tail.iter().filter(|&&b| b == b'\n') {
        out.extend_from_slice(b"\r\n");
    }
    Cow::Owned(out)
}

/// `written` (a domain as a message gives it) as the lower-case A-label form, when it is
/// written in one form only: ASCII letters, digits, `-` and `_` in non-empty labels, or
/// U-labels that IDNA maps back to exactly what is written (ignoring case). `None` for a
/// name that UTS-46 would map to another one (full-width or mathematical letters, a soft
/// hyphen, an ideographic dot): the reader sees one name and the signer would sign another.
pub(crate) fn strict_domain(written: &str) -> Option<String> {
    let d = written.strip_suffix('.').unwrap_or(written);
    if d.is_empty() {
        return None;
    }
    let ldh = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if d.is_ascii() {
        return d.split('.').all(ldh).then(|| d.to_ascii_lowercase());
    }
    let ascii = idna::domain_to_ascii(d).ok()?;
    let (back, result) = idna::domain_to_unicode(&ascii);
    result.ok()?;
    (back == d.to_lowercase() && ascii.split('.').all(ldh)).then_some(ascii)
}

/// The domain of the header `From`, if every address in every `From` field shares it
/// and each is written in one form only ([`strict_domain`]).
fn header_from_domain(from: &[Vec<String>]) -> Option<String> {
    let mut domain: Option<String> = None;
    for address in from.iter().flatten() {
        let (_, d) = address.rsplit_once('@')?;
        let d = strict_domain(d)?;
        match &domain {
            Some(seen) if *seen != d => return None,
            Some(_) => {}
            None => domain = Some(d),
        }
    }
    domain
}

/// `name. IN TXT ( "..." "..." )` with each string at most 255 bytes (RFC 1035 §3.3.14).
pub fn format_txt_record(name: &str, value: &str) -> String {
    let strings: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
        .collect();
    format!("{name}. IN TXT ( {} )", strings.join(" "))
}

/// Writes a new key (mode 0600, refuses to overwrite) and returns the DNS TXT record text,
/// split into <=255-byte quoted strings, ready to paste:
/// `S._domainkey.D. IN TXT ( "v=DKIM1; k=rsa; p=..." "..." )`.
/// `bits` matters for RSA only (2048, 3072 or 4096).
pub fn keygen(
    domain: &str,
    selector: &str,
    algorithm: Algorithm,
    bits: u32,
    out: &Path,
) -> Result<String, DkimError> {
    let domain_n = crate::address::normalize_domain(domain);
    let entry_err = |reason: String| DkimError::BadEntry {
        domain: domain.to_string(),
        reason,
    };
    check_dns_label_text(&domain_n).map_err(|r| entry_err(format!("domain: {r}")))?;
    check_dns_label_text(selector).map_err(|r| entry_err(format!("selector: {r}")))?;
    let bad = |e: openssl::error::ErrorStack| DkimError::BadKey {
        path: out.to_path_buf(),
        reason: first_error(&e),
    };
    let (pkey, public_key, bits) = match algorithm {
        Algorithm::Rsa => {
            if !matches!(bits, 2048 | 3072 | 4096) {
                return Err(DkimError::BadBits(bits));
            }
            let rsa = openssl::rsa::Rsa::generate(bits).map_err(bad)?;
            let pkey = PKey::from_rsa(rsa).map_err(bad)?;
            let spki = pkey.public_key_to_der().map_err(bad)?;
            (pkey, spki, bits)
        }
        Algorithm::Ed25519 => {
            let pkey = PKey::generate_ed25519().map_err(bad)?;
            let raw = pkey.raw_public_key().map_err(bad)?;
            (pkey, raw, 256)
        }
    };
    let pem = pkey.private_key_to_pem_pkcs8().map_err(bad)?;

    if out.exists() {
        return Err(DkimError::KeyExists {
            path: out.to_path_buf(),
        });
    }
    let write_err = |source| DkimError::Write {
        path: out.to_path_buf(),
        source,
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(write_err)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                DkimError::KeyExists {
                    path: out.to_path_buf(),
                }
            } else {
                write_err(source)
            }
        })?;
    file.write_all(&pem).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;

    let info = KeyInfo {
        domain: domain_n,
        selector: selector.to_string(),
        algorithm,
        bits,
        path: out.to_path_buf(),
        public_key,
        modified: None,
        sign_subdomains: false,
    };
    Ok(info.txt_record())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_domain(message: &[u8]) -> Option<String> {
        header_from_domain(&Headers::from_fields_of(message))
    }
    use std::os::unix::fs::PermissionsExt;

    fn entry(domain: &str, selector: &str, key: &str) -> DkimConfig {
        DkimConfig {
            domain: domain.into(),
            selector: selector.into(),
            key_file: key.into(),
            sign_subdomains: false,
            expire: None,
            max_key_age: None,
        }
    }

    const MSG: &[u8] = b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: hi\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\nHello\r\n";

    #[test]
    fn keygen_writes_0600_key_and_refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k/ex.key");
        let rec = keygen("example.com", "s1", Algorithm::Ed25519, 0, &p).unwrap();
        assert!(
            rec.starts_with("s1._domainkey.example.com. IN TXT ( \"v=DKIM1; k=ed25519; p="),
            "{rec}"
        );
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = keygen("example.com", "s1", Algorithm::Ed25519, 0, &p).unwrap_err();
        assert!(matches!(err, DkimError::KeyExists { .. }), "{err}");
    }

    #[test]
    fn rsa_record_is_split_into_255_byte_strings() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rsa.key");
        let rec = keygen("example.com", "s1", Algorithm::Rsa, 2048, &p).unwrap();
        let strings: Vec<&str> = rec.split('"').skip(1).step_by(2).collect();
        assert!(strings.len() >= 2, "{rec}");
        assert!(strings.iter().all(|s| s.len() <= 255));
        assert!(strings.concat().starts_with("v=DKIM1; k=rsa; p=MIIBIjAN"));
    }

    #[test]
    fn signs_from_domain_with_both_keys_and_skips_others() {
        let dir = tempfile::tempdir().unwrap();
        keygen(
            "example.com",
            "r",
            Algorithm::Rsa,
            2048,
            &dir.path().join("r.key"),
        )
        .unwrap();
        keygen(
            "example.com",
            "e",
            Algorithm::Ed25519,
            0,
            &dir.path().join("e.key"),
        )
        .unwrap();
        let signer = DkimSigner::load(
            &[
                entry("example.com", "r", "r.key"),
                entry("Example.COM.", "e", "e.key"),
            ],
            dir.path(),
        )
        .unwrap();
        let out = signer.sign(MSG).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("DKIM-Signature:").count(), 2, "{text}");
        assert!(text.contains("a=rsa-sha256") && text.contains("a=ed25519-sha256"));
        let other = String::from_utf8_lossy(MSG).replace("example.com>", "other.example>");
        assert_eq!(signer.sign(other.as_bytes()).unwrap(), other.as_bytes());
        let sub = String::from_utf8_lossy(MSG).replace("@example.com>", "@billing.example.com>");
        assert_eq!(signer.sign(sub.as_bytes()).unwrap(), sub.as_bytes());
        assert_eq!(signer.domains(), vec!["example.com".to_string()]);
    }

    #[test]
    fn parent_key_signs_subdomain_only_when_configured() {
        let dir = tempfile::tempdir().unwrap();
        keygen(
            "example.com",
            "e",
            Algorithm::Ed25519,
            0,
            &dir.path().join("e.key"),
        )
        .unwrap();
        let mut e = entry("example.com", "e", "e.key");
        e.sign_subdomains = true;
        let signer = DkimSigner::load(&[e], dir.path()).unwrap();
        let sub = String::from_utf8_lossy(MSG).replace("@example.com>", "@billing.example.com>");
        let out = String::from_utf8(signer.sign(sub.as_bytes()).unwrap()).unwrap();
        assert!(out.contains("d=example.com;"), "{out}");
        assert!(signer.covers("a.b.example.com"));
        assert!(!signer.covers("badexample.com"));
    }

    #[test]
    fn refuses_short_rsa_key_and_loose_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let rsa = openssl::rsa::Rsa::generate(1024).unwrap();
        let p = dir.path().join("short.key");
        std::fs::write(&p, rsa.private_key_to_pem().unwrap()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err =
            DkimSigner::load(&[entry("example.com", "s", "short.key")], dir.path()).unwrap_err();
        assert!(
            matches!(err, DkimError::WeakKey { bits: 1024, .. }),
            "{err}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err =
            DkimSigner::load(&[entry("example.com", "s", "short.key")], dir.path()).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn reads_pkcs1_rsa_pem() {
        let dir = tempfile::tempdir().unwrap();
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let p = dir.path().join("pkcs1.key");
        let pem = rsa.private_key_to_pem().unwrap();
        assert!(pem.starts_with(b"-----BEGIN RSA PRIVATE KEY"));
        std::fs::write(&p, pem).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = DkimSigner::load(&[entry("example.com", "s", "pkcs1.key")], dir.path()).unwrap();
        assert_eq!(s.keys()[0].bits, 2048);
        assert!(s
            .sign(MSG)
            .unwrap()
            .starts_with(b"DKIM-Signature: v=1; a=rsa-sha256"));
    }

    #[test]
    fn mixed_from_domains_are_not_signed() {
        assert_eq!(from_domain(MSG).as_deref(), Some("example.com"));
        assert_eq!(from_domain(b"From: a@x.example, b@y.example\r\n\r\n"), None);
        assert_eq!(
            from_domain(b"From: a@X.example, b@x.EXAMPLE\r\n\r\n").as_deref(),
            Some("x.example")
        );
        assert_eq!(from_domain(b"Subject: none\r\n\r\n"), None);
        // Names UTS-46 would map to example.com are not signed as example.com.
        for spoof in [
            "\u{ff45}xample.com",
            "ex\u{ad}ample.com",
            "example\u{3002}com",
            "\u{1d41e}xample.com",
        ] {
            let m = format!("From: billing@{spoof}\r\n\r\n");
            assert_eq!(from_domain(m.as_bytes()), None, "{spoof:?}");
        }
        assert_eq!(from_domain(b""), None);
        assert_eq!(from_domain(b"From: \xff\xfe@\r\n\r\n"), None);
        // An SMTPUTF8 From in U-labels meets its A-label `[[dkim]]` domain.
        assert_eq!(
            from_domain("From: billing@Exämple.com\r\n\r\n".as_bytes()).as_deref(),
            Some("xn--exmple-cua.com")
        );
    }

    #[test]
    fn trailing_whitespace_lines_are_emptied_for_hashing_only() {
        let h = b"From: a@example.com\r\n\r\n";
        let with = |body: &[u8]| [h.as_slice(), body].concat();
        for (body, want) in [
            (&b"a\r\n \r\n"[..], &b"a\r\n\r\n"[..]),
            (b"a\r\n\t\r\n \r\n", b"a\r\n\r\n\r\n"),
            (b"  \r\n", b"\r\n"),
            (b"a\r\n \t", b"a\r\n"),
        ] {
            assert_eq!(
                without_trailing_whitespace_lines(&with(body)).as_ref(),
                with(want).as_slice()
            );
        }
        for body in [&b"a \r\n"[..], b"a\r\n \r\nb\r\n", b"a\r\n\r\n", b""] {
            assert!(matches!(
                without_trailing_whitespace_lines(&with(body)),
                std::borrow::Cow::Borrowed(_)
            ));
        }
    }

    #[test]
    fn refuses_the_same_selector_twice() {
        let dir = tempfile::tempdir().unwrap();
        keygen(
            "example.com",
            "e",
            Algorithm::Ed25519,
            0,
            &dir.path().join("e.key"),
        )
        .unwrap();
        let e = entry("example.com", "e", "e.key");
        let err = DkimSigner::load(&[e.clone(), e], dir.path()).unwrap_err();
        assert!(err.to_string().contains("configured twice"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(dkim_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert!(dkim_duration("7").is_err());
        assert!(dkim_duration("0d").is_err());
        assert!(dkim_duration("250ms").is_err());
        assert_eq!(dkim_duration("2000ms").unwrap(), Duration::from_secs(2));
        assert!(dkim_duration("99999999999999999999w").is_err());
    }

    #[test]
    fn warns_about_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.key");
        keygen("example.com", "e", Algorithm::Ed25519, 0, &p).unwrap();
        let old = SystemTime::now() - Duration::from_secs(400 * 86_400);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let mut e = entry("example.com", "e", "e.key");
        e.max_key_age = Some("365d".into());
        let s = DkimSigner::load(&[e], dir.path()).unwrap();
        let w = s.warnings();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("400 days old"), "{w:?}");
    }
}
