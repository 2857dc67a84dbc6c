//! S/MIME signing and encryption of one message (RFC 8551), with our own MIME writer
//! around the CMS structures OpenSSL builds.
//!
//! Its one job: take a canonical (CRLF) message and return it signed, encrypted, or
//! both (sign first, then encrypt), self-checked. Outer header fields (From, To, Subject,
//! Date, Message-ID, ...) stay outside; the signed or encrypted content is the MIME entity
//! made of the original `Content-*` fields and the body, byte for byte.
//!
//! Invariants:
//! - nothing leaves this module unless OpenSSL verified our own signature over exactly
//!   the bytes we emit, and parsed (and, with `encrypt_to_self`, decrypted) our own
//!   EnvelopedData;
//! - a private key is read only through [`crate::secret::read_secret_file`];
//! - a message that asks for encryption is never returned unencrypted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::pkey::{Id, PKey, Private};
use openssl::stack::Stack;
use openssl::x509::X509;
use serde::Deserialize;
use sha2::Digest;

use super::certstore::{self, CertStore, Purpose, StoreError};
pub use super::certstore::{NoCertificate, Unusable};
use super::mime::{self, Entity, Kind};

/// Content-encryption algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Cipher {
    /// AES-256-CBC in EnvelopedData: what every S/MIME client reads.
    #[default]
    #[serde(rename = "aes256-cbc")]
    Aes256Cbc,
    /// AES-256-GCM in AuthEnvelopedData (RFC 5083/5084): authenticated, newer clients only.
    #[serde(rename = "aes256-gcm")]
    Aes256Gcm,
}

/// RSA key transport padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyTransport {
    /// RSAES-PKCS1-v1_5: the default, read by every client.
    #[default]
    Pkcs1v15,
    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256.
    Oaep,
}

/// `[[smime.signer]]`: who signs mail from which senders.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerConfig {
    /// Globs on the envelope sender (`*@example.com`); the first signer that matches wins.
    pub senders: Vec<String>,
    /// The signing certificate (PEM or DER).
    pub cert: PathBuf,
    /// The private key (PEM, PKCS#8 or traditional); must not be group/world-readable.
    pub key_file: PathBuf,
    /// Intermediate certificates to include in the signature (PEM).
    #[serde(default)]
    pub chain: Option<PathBuf>,
    /// `true`: opaque `application/pkcs7-mime; smime-type=signed-data` instead of a
    /// readable `multipart/signed`.
    #[serde(default)]
    pub opaque: bool,
}

/// `[smime]` in sealgate.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmimeConfig {
    /// Directory of recipient certificates (PEM or DER), found by the addresses they carry.
    #[serde(default = "default_recipient_certs")]
    pub recipient_certs: PathBuf,
    /// `aes256-cbc` (default) or `aes256-gcm`.
    #[serde(default)]
    pub cipher: Cipher,
    /// PEM bundle; when set, recipient certificates must chain to one of these.
    #[serde(default)]
    pub trust_anchors: Option<PathBuf>,
    /// Also encrypt to the sender's signing certificate, so the sender can read it back.
    #[serde(default)]
    pub encrypt_to_self: bool,
    /// `pkcs1v15` (default) or `oaep` for RSA recipients.
    #[serde(default)]
    pub key_transport: KeyTransport,
    /// RFC 9788 header protection: the real Subject travels inside, outside it reads `...`.
    #[serde(default)]
    pub header_protection: bool,
    /// Gateway certificates per domain: `"partner.example" = "certs/partner-gateway.pem"`.
    /// Used when no personal certificate fits the recipient.
    #[serde(default)]
    pub domain_certs: BTreeMap<String, PathBuf>,
    /// Signing identities.
    #[serde(default)]
    pub signer: Vec<SignerConfig>,
}

fn default_recipient_certs() -> PathBuf {
    PathBuf::from("certs/recipients")
}

impl Default for SmimeConfig {
    fn default() -> Self {
        SmimeConfig {
            recipient_certs: default_recipient_certs(),
            cipher: Cipher::default(),
            trust_anchors: None,
            encrypt_to_self: false,
            key_transport: KeyTransport::default(),
            header_protection: false,
            domain_certs: BTreeMap::new(),
            signer: Vec::new(),
        }
    }
}

/// Why S/MIME could not be set up or applied.
#[derive(Debug, thiserror::Error)]
pub enum SmimeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    #[error("{path}: {why}")]
    Signer { path: PathBuf, why: String },
    #[error("no [[smime.signer]] matches sender {0}")]
    NoSigner(String),
    #[error("{0}")]
    NoCertificate(#[from] NoCertificate),
    #[error("OpenSSL failed while {doing}: {source}")]
    Crypto {
        doing: &'static str,
        #[source]
        source: openssl::error::ErrorStack,
    },
    #[error("self-check failed: {0}")]
    SelfCheck(String),
}

impl SmimeError {
    /// True when retrying later cannot help (configuration or certificate problems).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            SmimeError::NoSigner(_) | SmimeError::NoCertificate(_) | SmimeError::Signer { .. }
        )
    }
}

fn crypto(doing: &'static str) -> impl FnOnce(openssl::error::ErrorStack) -> SmimeError {
    move |source| SmimeError::Crypto { doing, source }
}

/// A recipient certificate chosen for an address (for `explain`, audit and the pipeline).
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// The file it came from.
    pub path: PathBuf,
    /// One-line subject.
    pub subject: String,
    /// Addresses it carries.
    pub addresses: Vec<String>,
    /// notAfter as OpenSSL prints it.
    pub not_after: String,
    /// SHA-256 fingerprint of the DER, hex.
    pub fingerprint: String,
    /// `RSA-2048`, `EC prime256v1`, ...
    pub key: String,
    /// The certificate.
    pub cert: X509,
}

/// The signer chosen for a sender (for `explain` and audit).
#[derive(Debug, Clone)]
pub struct SignerInfo {
    /// The certificate file.
    pub cert_path: PathBuf,
    /// One-line subject.
    pub subject: String,
    /// `RSA-2048`, `EC secp384r1`, ...
    pub key: String,
    /// Opaque signed-data instead of multipart/signed.
    pub opaque: bool,
    /// notAfter of the signing certificate.
    pub not_after: String,
}

struct Signer {
    /// Sender globs, lower case.
    senders: Vec<String>,
    cert: X509,
    key: PKey<Private>,
    /// Intermediates included in each signature.
    chain: Vec<X509>,
    opaque: bool,
    info: SignerInfo,
    /// Problems found at load that do not stop signing (expiry soon, key usage).
    warnings: Vec<String>,
}

/// Loaded certificates and keys; immutable after [`Smime::load`], cheap to share in an `Arc`.
pub struct Smime {
    store: CertStore,
    signers: Vec<Signer>,
    cipher: Cipher,
    key_transport: KeyTransport,
    encrypt_to_self: bool,
    header_protection: bool,
}

impl std::fmt::Debug for Smime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smime")
            .field("certificates", &self.store.len())
            .field("signers", &self.signers.len())
            .field("cipher", &self.cipher)
            .finish()
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl Smime {
    /// Loads everything `cfg` names; relative paths are resolved against `base` (the
    /// directory of the config file). Signer problems are errors; unusable recipient
    /// certificates are kept out and reported by [`Smime::warnings`].
    pub fn load(cfg: &SmimeConfig, base: &Path) -> Result<Smime, SmimeError> {
        let domain_certs: Vec<(String, PathBuf)> = cfg
            .domain_certs
            .iter()
            .map(|(d, p)| (d.clone(), resolve(base, p)))
            .collect();
        let anchors = cfg.trust_anchors.as_ref().map(|p| resolve(base, p));
        let store = CertStore::load(
            &resolve(base, &cfg.recipient_certs),
            &domain_certs,
            anchors.as_deref(),
        )?;
        let mut signers = Vec::new();
        for sc in &cfg.signer {
            signers.push(load_signer(sc, base)?);
        }
        Ok(Smime {
            store,
            signers,
            cipher: cfg.cipher,
            key_transport: cfg.key_transport,
            encrypt_to_self: cfg.encrypt_to_self,
            header_protection: cfg.header_protection,
        })
    }

    /// True when `addr` has a usable certificate now.
    pub fn has_certificate(&self, addr: &str) -> bool {
        self.store.lookup(addr).is_ok()
    }

    /// The certificate to encrypt to for `addr`, or why there is none.
    pub fn certificate_for(&self, addr: &str) -> Result<CertInfo, NoCertificate> {
        let c = self.store.lookup(addr)?;
        Ok(CertInfo {
            path: c.path.clone(),
            subject: c.subject(),
            addresses: c.addresses.clone(),
            not_after: c.not_after(),
            fingerprint: c.fingerprint.clone(),
            key: c.key_description.clone(),
            cert: c.cert.clone(),
        })
    }

    /// The signer for an envelope sender: the first `[[smime.signer]]` whose globs match.
    pub fn signer_for(&self, sender: &str) -> Option<SignerInfo> {
        self.signer(sender).map(|s| s.info.clone())
    }

    fn signer(&self, sender: &str) -> Option<&Signer> {
        let sender = sender.trim().to_ascii_lowercase();
        self.signers
            .iter()
            .find(|s| s.senders.iter().any(|g| glob_match(g, &sender)))
    }

    /// For `sealgate check`: unusable or soon-expiring recipient certificates, unreadable
    /// files, and signer certificates that expire within 30 days.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = self.store.warnings(30);
        for s in &self.signers {
            out.extend(s.warnings.iter().cloned());
        }
        out
    }

    /// Applies S/MIME to a whole canonical (CRLF) message.
    ///
    /// `sign`: sign with the signer for `sender`. `encrypt_to`: encrypt to these
    /// certificates (all in one EnvelopedData; plus the signer's own certificate with
    /// `encrypt_to_self`). Returns the new message.
    pub fn protect(
        &self,
        message: &[u8],
        sender: &str,
        sign: bool,
        encrypt_to: Option<&[X509]>,
    ) -> Result<Vec<u8>, SmimeError> {
        let split = mime::header_end(message);
        let (header, body) = message.split_at(split);
        let fields = mime::fields(header);
        let encrypting = encrypt_to.is_some();
        let mut outer: Vec<Vec<u8>> = Vec::new();
        let mut content: Vec<u8> = Vec::new();
        let mut has_ct = false;
        for f in &fields {
            if f.is_content() {
                has_ct |= f.is("content-type");
                content.extend_from_slice(f.raw);
            } else if !f.is("mime-version") && !f.name.is_empty() {
                outer.push(f.raw.to_vec());
            }
        }
        if !has_ct {
            content.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n");
        }
        if self.header_protection {
            content = protect_headers(&content, &fields, encrypting);
            if encrypting {
                for o in outer.iter_mut() {
                    if o.len() >= 8 && o[..8].eq_ignore_ascii_case(b"subject:") {
                        *o = b"Subject: ...\r\n".to_vec();
                    }
                }
            }
        }
        let mut entity = content;
        entity.extend_from_slice(b"\r\n");
        entity.extend_from_slice(body);

        let signer = self.signer(sender);
        if sign {
            let s = signer.ok_or_else(|| SmimeError::NoSigner(sender.to_string()))?;
            if !encrypting && !s.opaque {
                entity = to_7bit(entity);
            }
            entity = sign_entity(s, entity)?;
        }
        if let Some(certs) = encrypt_to {
            let to_self = if self.encrypt_to_self { signer } else { None };
            entity = self.encrypt_entity(certs, to_self, entity)?;
        }
        let mut head = Vec::with_capacity(header.len() + 32);
        for o in &outer {
            head.extend_from_slice(o);
        }
        head.extend_from_slice(b"MIME-Version: 1.0\r\n");
        // In place: a 25 MiB message is not held twice here.
        entity.splice(0..0, head);
        Ok(entity)
    }

    /// Encrypts `entity` (consumed, so that its memory is freed before the output is
    /// encoded) and returns the `application/pkcs7-mime` entity, self-checked.
    fn encrypt_entity(
        &self,
        certs: &[X509],
        to_self: Option<&Signer>,
        entity: Vec<u8>,
    ) -> Result<Vec<u8>, SmimeError> {
        let mut stack = Stack::new().map_err(crypto("building the recipient list"))?;
        for c in certs.iter().chain(to_self.map(|s| &s.cert)) {
            stack
                .push(c.clone())
                .map_err(crypto("building the recipient list"))?;
        }
        let cipher = match self.cipher {
            Cipher::Aes256Cbc => openssl::symm::Cipher::aes_256_cbc(),
            Cipher::Aes256Gcm => openssl::symm::Cipher::aes_256_gcm(),
        };
        // Only needed to compare a decrypt-to-self; hashing is not free on large messages.
        let digest = to_self.map(|_| sha2::Sha256::digest(&entity));
        let der = match self.key_transport {
            KeyTransport::Pkcs1v15 => {
                let cms = CmsContentInfo::encrypt(&stack, &entity, cipher, CMSOptions::BINARY)
                    .map_err(crypto("encrypting"))?;
                drop(entity);
                cms.to_der().map_err(crypto("encoding the EnvelopedData"))?
            }
            KeyTransport::Oaep => oaep::encrypt(&stack, &entity, cipher)
                .map_err(crypto("encrypting with RSA-OAEP"))?,
        };
        // Self-check: our own output parses; with a key of our own, it decrypts to the input.
        let parsed = CmsContentInfo::from_der(&der)
            .map_err(|e| SmimeError::SelfCheck(format!("own EnvelopedData does not parse: {e}")))?;
        if let Some(s) = to_self {
            let plain = parsed.decrypt(&s.key, &s.cert).map_err(|e| {
                SmimeError::SelfCheck(format!("own EnvelopedData does not decrypt: {e}"))
            })?;
            if Some(sha2::Sha256::digest(&plain)) != digest {
                return Err(SmimeError::SelfCheck(
                    "own EnvelopedData decrypts to different content".into(),
                ));
            }
        }
        drop(parsed);
        let smime_type = match self.cipher {
            Cipher::Aes256Cbc => "enveloped-data",
            Cipher::Aes256Gcm => "authEnveloped-data",
        };
        let mut out = format!(
            "Content-Type: application/pkcs7-mime; smime-type={smime_type}; name=smime.p7m\r\n\
             Content-Disposition: attachment; filename=smime.p7m\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n"
        )
        .into_bytes();
        out.extend_from_slice(&mime::encode_base64_lines(&der));
        Ok(out)
    }
}

fn load_signer(sc: &SignerConfig, base: &Path) -> Result<Signer, SmimeError> {
    let cert_path = resolve(base, &sc.cert);
    let cert = certstore::read_certs(&cert_path)?
        .into_iter()
        .next()
        .ok_or_else(|| SmimeError::Signer {
            path: cert_path.clone(),
            why: "no certificate in file".into(),
        })?;
    let key_path = resolve(base, &sc.key_file);
    let key_bytes = crate::secret::read_secret_file(&key_path)?;
    let key = PKey::private_key_from_pem(&key_bytes)
        .or_else(|_| PKey::private_key_from_der(&key_bytes))
        .map_err(|_| SmimeError::Signer {
            path: key_path.clone(),
            why: "not a PEM or DER private key (encrypted keys are not supported)".into(),
        })?;
    let signer_err = |why: String| SmimeError::Signer {
        path: key_path.clone(),
        why,
    };
    match key.id() {
        Id::RSA => {
            if key.bits() < 2048 {
                return Err(signer_err(format!(
                    "RSA key of {} bits is too small (at least 2048)",
                    key.bits()
                )));
            }
        }
        Id::EC => {
            let curve = key
                .ec_key()
                .ok()
                .and_then(|k| k.group().curve_name())
                .map(|n| n.as_raw());
            let ok = [
                openssl::nid::Nid::X9_62_PRIME256V1.as_raw(),
                openssl::nid::Nid::SECP384R1.as_raw(),
            ];
            if !curve.is_some_and(|c| ok.contains(&c)) {
                return Err(signer_err("EC key must be on P-256 or P-384".into()));
            }
        }
        other => return Err(signer_err(format!("unsupported key type {other:?}"))),
    }
    let matches = cert
        .public_key()
        .map(|p| p.public_eq(&key))
        .unwrap_or(false);
    if !matches {
        return Err(signer_err(format!(
            "key does not belong to certificate {}",
            cert_path.display()
        )));
    }
    let chain = match &sc.chain {
        Some(p) => certstore::read_certs(&resolve(base, p))?,
        None => Vec::new(),
    };
    let stored = certstore::stored(cert_path.clone(), cert.clone(), Purpose::Sign);
    let mut warnings = Vec::new();
    if let Err(why) = stored.check_now() {
        warnings.push(format!(
            "{}: signing certificate: {why}",
            cert_path.display()
        ));
    } else if let Ok(soon) = openssl::asn1::Asn1Time::days_from_now(30) {
        if cert.not_after() < soon.as_ref() {
            warnings.push(format!(
                "{}: signing certificate expires within 30 days ({})",
                cert_path.display(),
                stored.not_after()
            ));
        }
    }
    Ok(Signer {
        senders: sc.senders.iter().map(|s| s.to_ascii_lowercase()).collect(),
        info: SignerInfo {
            cert_path,
            subject: stored.subject(),
            key: stored.key_description.clone(),
            opaque: sc.opaque,
            not_after: stored.not_after(),
        },
        cert,
        key,
        chain,
        opaque: sc.opaque,
        warnings,
    })
}

/// Signs `entity` (a canonical MIME entity, consumed) and returns the new entity:
/// `multipart/signed` or opaque signed-data, after verifying the signature over the
/// emitted bytes.
fn sign_entity(s: &Signer, entity: Vec<u8>) -> Result<Vec<u8>, SmimeError> {
    let mut chain = Stack::new().map_err(crypto("preparing the signer chain"))?;
    for c in &s.chain {
        chain
            .push(c.clone())
            .map_err(crypto("preparing the signer chain"))?;
    }
    let mut flags = CMSOptions::BINARY;
    if !s.opaque {
        flags |= CMSOptions::DETACHED;
    }
    let cms = CmsContentInfo::sign(
        Some(&s.cert),
        Some(&s.key),
        Some(&chain),
        Some(&entity),
        flags,
    )
    .map_err(crypto("signing"))?;
    let der = cms.to_der().map_err(crypto("encoding the signature"))?;
    drop(cms);
    // Self-check: the signature we emit verifies over exactly these bytes.
    let mut check = CmsContentInfo::from_der(&der)
        .map_err(|e| SmimeError::SelfCheck(format!("own signature does not parse: {e}")))?;
    let verify_flags = CMSOptions::BINARY | CMSOptions::NO_SIGNER_CERT_VERIFY;
    if s.opaque {
        let mut content = Vec::new();
        check
            .verify(None, None, None, Some(&mut content), verify_flags)
            .map_err(|e| SmimeError::SelfCheck(format!("own signature does not verify: {e}")))?;
        if content != entity {
            return Err(SmimeError::SelfCheck(
                "own signed-data carries different content".into(),
            ));
        }
        drop(content);
        drop(entity);
        let mut out =
            b"Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\n\
Content-Disposition: attachment; filename=smime.p7m\r\n\
Content-Transfer-Encoding: base64\r\n\r\n"
                .to_vec();
        out.extend_from_slice(&mime::encode_base64_lines(&der));
        return Ok(out);
    }
    let boundary = mime::fresh_boundary("----sealgate-signed", &entity);
    let mut out = format!(
        "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256;\r\n \
         boundary=\"{boundary}\"\r\n\r\n\
         This is an S/MIME signed message\r\n\r\n--{boundary}\r\n"
    )
    .into_bytes();
    let content_start = out.len();
    out.extend_from_slice(&entity);
    let content_end = out.len();
    drop(entity);
    out.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\n\
             Content-Type: application/pkcs7-signature; name=smime.p7s\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=smime.p7s\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(&mime::encode_base64_lines(&der));
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    // Verified over the bytes as they sit in the output, so what we check is what we send.
    check
        .verify(
            None,
            None,
            Some(&out[content_start..content_end]),
            None,
            verify_flags,
        )
        .map_err(|e| SmimeError::SelfCheck(format!("own signature does not verify: {e}")))?;
    Ok(out)
}

/// RFC 9788: copies the message's own header fields into the cryptographic payload's
/// header (`content`), marks its Content-Type with `hp="cipher"` (encrypted) or
/// `hp="clear"` (signed only), and records the outer values in `HP-Outer` fields.
fn protect_headers(content: &[u8], fields: &[mime::Field<'_>], encrypting: bool) -> Vec<u8> {
    const PROTECTED: [&str; 10] = [
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "reply-to",
        "in-reply-to",
        "references",
        "followup-to",
    ];
    let mut out = Vec::with_capacity(content.len() + 512);
    let hp = if encrypting { "cipher" } else { "clear" };
    for f in mime::fields(content) {
        if f.is("content-type") {
            let raw = f.raw.strip_suffix(b"\r\n").unwrap_or(f.raw);
            out.extend_from_slice(raw);
            out.extend_from_slice(format!(";\r\n hp=\"{hp}\"\r\n").as_bytes());
        } else {
            out.extend_from_slice(f.raw);
        }
    }
    for f in fields {
        if PROTECTED.iter().any(|p| f.is(p)) {
            out.extend_from_slice(f.raw);
        }
    }
    if encrypting {
        for f in fields {
            if PROTECTED.iter().any(|p| f.is(p)) {
                let value = if f.is("subject") {
                    "...".to_string()
                } else {
                    f.value()
                };
                out.extend_from_slice(format!("HP-Outer: {}: {value}\r\n", f.name).as_bytes());
            }
        }
    }
    out
}

/// Re-encodes leaf parts that carry 8-bit data in 7bit/8bit/binary transfer encoding as
/// base64, so that a detached signature survives relays that downgrade 8BITMIME.
/// Parts already 7-bit stay byte-identical.
pub fn to_7bit(entity: Vec<u8>) -> Vec<u8> {
    if entity.iter().all(|c| *c < 0x80) {
        return entity;
    }
    let tree = mime::parse(&entity);
    let rewritten = mime::rewrite(&tree, &mut |e: &Entity<'_>, _parent: Option<&str>| {
        let needs = matches!(e.kind, Kind::Leaf)
            && matches!(
                e.info.transfer_encoding.as_str(),
                "7bit" | "8bit" | "binary"
            )
            && e.body.iter().any(|c| *c >= 0x80);
        if !needs {
            return mime::Edit::Keep;
        }
        let mut out = Vec::with_capacity(e.raw.len() * 4 / 3 + 64);
        for f in mime::fields(e.header) {
            if !f.is("content-transfer-encoding") {
                out.extend_from_slice(f.raw);
            }
        }
        out.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n\r\n");
        out.extend_from_slice(&mime::encode_base64_lines(e.body));
        mime::Edit::Replace(out)
    });
    let changed = match rewritten {
        Some(std::borrow::Cow::Owned(v)) => Some(v),
        _ => None,
    };
    drop(tree);
    changed.unwrap_or(entity)
}

/// Case-insensitive glob with `*` (any run) and `?` (one character); `pattern` lower case.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// RSA-OAEP key transport, which `CMS_encrypt` cannot select: the EnvelopedData is
/// built with `CMS_PARTIAL`, each RSA recipient's key-transport context is switched to
/// OAEP (SHA-256, MGF1-SHA-256), then `CMS_final` encrypts. EC recipients are added the
/// same way and use ECDH as usual.
mod oaep {
    use foreign_types::ForeignTypeRef;
    use openssl::error::ErrorStack;
    use openssl::hash::MessageDigest;
    use openssl::pkey::Id;
    use openssl::stack::StackRef;
    use openssl::symm::Cipher;
    use openssl::x509::X509;
    use std::os::raw::{c_int, c_uchar, c_uint, c_void};

    const CMS_BINARY: c_uint = 0x80;
    const CMS_PARTIAL: c_uint = 0x4000;
    const CMS_KEY_PARAM: c_uint = 0x40000;
    const RSA_PKCS1_OAEP_PADDING: c_int = 4;

    extern "C" {
        fn BIO_new_mem_buf(buf: *const c_void, len: c_int) -> *mut c_void;
        fn BIO_free(b: *mut c_void) -> c_int;
        fn CMS_encrypt(
            certs: *mut c_void,
            data: *mut c_void,
            cipher: *const c_void,
            flags: c_uint,
        ) -> *mut c_void;
        fn CMS_add1_recipient_cert(
            cms: *mut c_void,
            recip: *mut c_void,
            flags: c_uint,
        ) -> *mut c_void;
        fn CMS_RecipientInfo_get0_pkey_ctx(ri: *mut c_void) -> *mut c_void;
        fn EVP_PKEY_CTX_set_rsa_padding(ctx: *mut c_void, pad: c_int) -> c_int;
        fn EVP_PKEY_CTX_set_rsa_oaep_md(ctx: *mut c_void, md: *const c_void) -> c_int;
        fn EVP_PKEY_CTX_set_rsa_mgf1_md(ctx: *mut c_void, md: *const c_void) -> c_int;
        fn CMS_final(
            cms: *mut c_void,
            data: *mut c_void,
            dcont: *mut c_void,
            flags: c_uint,
        ) -> c_int;
        fn i2d_CMS_ContentInfo(cms: *mut c_void, out: *mut *mut c_uchar) -> c_int;
        fn CMS_ContentInfo_free(cms: *mut c_void);
    }

    /// Frees the CMS structure and the BIO however we leave.
    struct Guard {
        cms: *mut c_void,
        bio: *mut c_void,
    }
    impl Drop for Guard {
        fn drop(&mut self) {
            // SAFETY: both pointers are either null or owned by this guard alone.
            unsafe {
                if !self.cms.is_null() {
                    CMS_ContentInfo_free(self.cms);
                }
                if !self.bio.is_null() {
                    BIO_free(self.bio);
                }
            }
        }
    }

    pub fn encrypt(
        certs: &StackRef<X509>,
        data: &[u8],
        cipher: Cipher,
    ) -> Result<Vec<u8>, ErrorStack> {
        let len = c_int::try_from(data.len()).map_err(|_| ErrorStack::get())?;
        let sha256 = MessageDigest::sha256();
        // SAFETY: every pointer passed below is valid for the call: `data` outlives the
        // BIO (freed by the guard before return), the X509 pointers belong to `certs`
        // which outlives this function, and OpenSSL copies (up-refs) what it keeps.
        unsafe {
            let mut g = Guard {
                cms: std::ptr::null_mut(),
                bio: BIO_new_mem_buf(data.as_ptr().cast(), len),
            };
            if g.bio.is_null() {
                return Err(ErrorStack::get());
            }
            g.cms = CMS_encrypt(
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                cipher.as_ptr().cast(),
                CMS_BINARY | CMS_PARTIAL,
            );
            if g.cms.is_null() {
                return Err(ErrorStack::get());
            }
            for cert in certs {
                let is_rsa = cert.public_key().map(|k| k.id() == Id::RSA)?;
                let flags = if is_rsa { CMS_KEY_PARAM } else { 0 };
                let ri = CMS_add1_recipient_cert(g.cms, cert.as_ptr().cast(), flags);
                if ri.is_null() {
                    return Err(ErrorStack::get());
                }
                if is_rsa {
                    let ctx = CMS_RecipientInfo_get0_pkey_ctx(ri);
                    if ctx.is_null()
                        || EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) <= 0
                        || EVP_PKEY_CTX_set_rsa_oaep_md(ctx, sha256.as_ptr().cast()) <= 0
                        || EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, sha256.as_ptr().cast()) <= 0
                    {
                        return Err(ErrorStack::get());
                    }
                }
            }
            if CMS_final(g.cms, g.bio, std::ptr::null_mut(), CMS_BINARY) <= 0 {
                return Err(ErrorStack::get());
            }
            let n = i2d_CMS_ContentInfo(g.cms, std::ptr::null_mut());
            let n = usize::try_from(n).map_err(|_| ErrorStack::get())?;
            if n == 0 {
                return Err(ErrorStack::get());
            }
            let mut out = vec![0u8; n];
            let mut p = out.as_mut_ptr();
            if i2d_CMS_ContentInfo(g.cms, &mut p) <= 0 {
                return Err(ErrorStack::get());
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_sender_patterns() {
        assert!(glob_match("*@example.com", "Payroll@Example.com"));
        assert!(!glob_match("*@example.com", "x@example.com.evil"));
        assert!(glob_match("a?c@*", "abc@d"));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn to_7bit_reencodes_only_8bit_leaves() {
        let e = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b--\r\n";
        let out = to_7bit(e.as_bytes().to_vec());
        assert!(out.iter().all(|c| *c < 0x80));
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("Content-Transfer-Encoding: base64\r\n\r\nR3LDvMOfZQ==\r\n"));
        assert!(s.contains("Content-Type: text/plain\r\n\r\nplain\r\n--b--"));
    }
}
