//! S/MIME signing and encryption of one message (RFC 8551), with our own MIME writer
//! around the CMS structures OpenSSL builds.
//!
//! Its one job: take a canonical (CRLF) message and return it signed, encrypted, or
//! both (sign first, then encrypt), self-checked. Outer header fields (From, To, Subject,
//! Date, Message-ID, ...) stay outside; the signed or encrypted content is the MIME entity
//! made of the original `Content-*` fields and the body, byte for byte.
//!
//! Invariants:
//! - nothing leaves this module unless our own signature, read back from the emitted
//!   base64 and parsed on its own, carries a SHA-256 digest equal to that of the content
//!   bytes as they sit in the output and verifies (OpenSSL, signer's certificate key)
//!   over its signed attributes; and OpenSSL parsed (and, with `encrypt_to_self`,
//!   decrypted) our own EnvelopedData;
//! - per message, signing costs one SHA-256 and one private-key operation: what is the
//!   same for every signature (certificate chain, algorithm identifiers, SMIMECapabilities)
//!   comes from one `CMS_sign` at load ([`SignTemplate`]);
//! - a private key is read only through [`crate::secret::read_secret_file`];
//! - a message that asks for encryption is never returned unencrypted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::pkey::{Id, PKey, Private};
use openssl::stack::Stack;
use openssl::x509::X509;
use serde::Deserialize;

use crate::glob::glob_match;
use sha2::Digest;

use super::certstore::{self, CertStore, Purpose, StoreError};
pub use super::certstore::{NoCertificate, Unusable};
use crate::message::mime::{self, Entity, Kind};

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
    /// The certificate's public key, for the self-check of each signature.
    public: PKey<openssl::pkey::Public>,
    /// The certificate as DER, for the self-check (is it carried in the signature?).
    cert_der: Vec<u8>,
    /// The parts of a SignedData that are the same for every message, taken from one
    /// signature OpenSSL made at load (certificate chain, algorithms, SMIMECapabilities).
    template: SignTemplate,
    opaque: bool,
    info: SignerInfo,
    /// Problems found at load that do not stop signing (expiry soon, key usage).
    warnings: Vec<String>,
}

impl Signer {
    /// The purpose and key checks of load, and the validity dates as of now.
    fn usable_now(&self) -> Result<(), Unusable> {
        certstore::static_checks(&self.cert, Purpose::Sign)?;
        certstore::check_dates(&self.cert)
    }
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

impl Smime {
    /// True with `header_protection = true`: then no clear-text message sealgate sends
    /// may carry a protected field's value (the zip password message uses a neutral subject).
    pub fn protects_headers(&self) -> bool {
        self.header_protection
    }
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
        let mut out = self.store.warnings(crate::validity::WARN_DAYS);
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
                    // `Subject :` (obsolete syntax, white space before the colon) is the
                    // subject too: readers show it.
                    if mime::fields(o).first().is_some_and(|f| f.is("subject")) {
                        *o = b"Subject: ...\r\n".to_vec();
                    }
                }
            }
        }
        let mut head = Vec::with_capacity(header.len() + 32);
        for o in &outer {
            head.extend_from_slice(o);
        }
        head.extend_from_slice(b"MIME-Version: 1.0\r\n");

        let signer = self.signer(sender);
        let sign_with = match (sign, signer) {
            (true, Some(s)) => {
                // A signature clients would reject is not sent: the certificate must be
                // valid now and fit for S/MIME signing (load only warned about it).
                if let Err(why) = s.usable_now() {
                    return Err(SmimeError::Signer {
                        path: s.info.cert_path.clone(),
                        why: format!("the signing certificate cannot be used: {why}"),
                    });
                }
                Some(s)
            }
            (true, None) => return Err(SmimeError::NoSigner(sender.to_string())),
            (false, _) => None,
        };
        // Room for the multipart/signed wrapping, so that signing inserts it in place
        // instead of holding the entity twice (this matters for a 25 MiB message).
        let slack = sign_with.map_or(0, |s| head.len() + 1024 + s.template.certificates.len() * 2);
        let mut entity = Vec::with_capacity(content.len() + 2 + body.len() + slack);
        entity.extend_from_slice(&content);
        drop(content);
        entity.extend_from_slice(b"\r\n");
        entity.extend_from_slice(body);

        if let Some(s) = sign_with {
            if !encrypting && !s.opaque {
                entity = to_7bit(entity);
            }
            // The outer header goes in front of whichever step runs last.
            let prefix: &[u8] = if encrypting { &[] } else { &head };
            entity = sign_entity(s, entity, prefix)?;
        }
        if let Some(certs) = encrypt_to {
            let to_self = if self.encrypt_to_self { signer } else { None };
            entity = self.encrypt_entity(certs, to_self, entity, &head)?;
        }
        if !sign && !encrypting {
            entity.splice(0..0, head);
        }
        Ok(entity)
    }

    /// Encrypts `entity` (consumed, so that its memory is freed before the output is
    /// encoded) and returns `prefix` followed by the `application/pkcs7-mime` entity,
    /// self-checked.
    fn encrypt_entity(
        &self,
        certs: &[X509],
        to_self: Option<&Signer>,
        entity: Vec<u8>,
        prefix: &[u8],
    ) -> Result<Vec<u8>, SmimeError> {
        let recipients: Vec<&X509> = certs.iter().chain(to_self.map(|s| &s.cert)).collect();
        // Only needed to compare a decrypt-to-self; hashing is not free on large messages.
        let digest = to_self.map(|_| sha2::Sha256::digest(&entity));
        let all_rsa = recipients
            .iter()
            .all(|c| c.public_key().is_ok_and(|k| k.id() == Id::RSA));
        let der = if all_rsa
            && self.cipher == Cipher::Aes256Cbc
            && self.key_transport == KeyTransport::Pkcs1v15
        {
            // The default, built directly: CMS_encrypt streams the content through a BIO
            // chain into a growing buffer, copies it into the structure and again to
            // encode it (together about as much as the AES itself).
            // Room for the base64 form and the header in front of it, which replace the
            // DER in the same buffer.
            let room = prefix.len() + 256;
            envelope::rsa_aes256_cbc(&recipients, &entity, room)?
        } else {
            let mut stack = Stack::new().map_err(crypto("building the recipient list"))?;
            for c in &recipients {
                stack
                    .push((*c).clone())
                    .map_err(crypto("building the recipient list"))?;
            }
            let cipher = match self.cipher {
                Cipher::Aes256Cbc => openssl::symm::Cipher::aes_256_cbc(),
                Cipher::Aes256Gcm => openssl::symm::Cipher::aes_256_gcm(),
            };
            match self.key_transport {
                KeyTransport::Pkcs1v15 => {
                    let cms = CmsContentInfo::encrypt(&stack, &entity, cipher, CMSOptions::BINARY)
                        .map_err(crypto("encrypting"))?;
                    cms.to_der().map_err(crypto("encoding the EnvelopedData"))?
                }
                KeyTransport::Oaep => oaep::encrypt(&stack, &entity, cipher)
                    .map_err(crypto("encrypting with RSA-OAEP"))?,
            }
        };
        drop(entity);
        // Self-check: OpenSSL parses our output; with a key of our own, it decrypts to the input.
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
        let part_header = format!(
            "Content-Type: application/pkcs7-mime; smime-type={smime_type}; name=smime.p7m\r\n\
             Content-Disposition: attachment; filename=smime.p7m\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n"
        );
        let mut lead = prefix.to_vec();
        lead.extend_from_slice(part_header.as_bytes());
        Ok(mime::base64_lines_behind(&lead, der))
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
    let template =
        SignTemplate::from_openssl(&cert, &key, &chain).map_err(|why| SmimeError::Signer {
            path: cert_path.clone(),
            why: format!("cannot prepare signatures: {why}"),
        })?;
    let public = cert.public_key().map_err(|e| SmimeError::Signer {
        path: cert_path.clone(),
        why: format!("unreadable public key: {e}"),
    })?;
    let cert_der = cert.to_der().map_err(|e| SmimeError::Signer {
        path: cert_path.clone(),
        why: format!("certificate does not encode: {e}"),
    })?;
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
        public,
        cert_der,
        template,
        opaque: sc.opaque,
        warnings,
    })
}

/// Signs `entity` (a canonical MIME entity, consumed) and returns `prefix` followed by
/// the new entity: `multipart/signed` or opaque signed-data, after checking the
/// signature as it sits in the emitted bytes.
///
/// The content is hashed once, in place in the output buffer, and that digest goes into
/// the signed attributes; the self-check then reads the signature back from the emitted
/// base64, parses it on its own, and verifies it with the certificate's public key.
fn sign_entity(s: &Signer, mut entity: Vec<u8>, prefix: &[u8]) -> Result<Vec<u8>, SmimeError> {
    if s.opaque {
        let digest: [u8; 32] = sha2::Sha256::digest(&entity).into();
        let der = s.template.signed_data(s, &digest, Some(&entity))?;
        drop(entity);
        // Opaque: the check hashes the content found inside the DER again.
        check_signed_data(s, &der, None).map_err(SmimeError::SelfCheck)?;
        let part_header =
            b"Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\n\
Content-Disposition: attachment; filename=smime.p7m\r\n\
Content-Transfer-Encoding: base64\r\n\r\n";
        let lead = [prefix, &part_header[..]].concat();
        return Ok(mime::base64_lines_behind(&lead, der));
    }
    let boundary = mime::fresh_boundary("----sealgate-signed", &entity);
    let mut lead = prefix.to_vec();
    lead.extend_from_slice(
        format!(
            "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256;\r\n \
             boundary=\"{boundary}\"\r\n\r\n\
             This is an S/MIME signed message\r\n\r\n--{boundary}\r\n"
        )
        .as_bytes(),
    );
    let content_start = lead.len();
    let content_end = content_start + entity.len();
    // In place (protect reserved the room): the entity is not held twice.
    entity.splice(0..0, lead);
    let mut out = entity;
    let digest: [u8; 32] = sha2::Sha256::digest(&out[content_start..content_end]).into();
    let der = s.template.signed_data(s, &digest, None)?;
    out.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\n\
             Content-Type: application/pkcs7-signature; name=smime.p7s\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=smime.p7s\r\n\r\n"
        )
        .as_bytes(),
    );
    let sig_start = out.len();
    mime::append_base64_lines(&der, &mut out);
    let sig_end = out.len();
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    // Self-check over what we send: the signature as decoded from the emitted base64,
    // against the digest of the content bytes as they sit in the output.
    let emitted = mime::decode_base64_lines(&out[sig_start..sig_end])
        .ok_or_else(|| SmimeError::SelfCheck("own signature is not valid base64".into()))?;
    check_signed_data(s, &emitted, Some(&digest)).map_err(SmimeError::SelfCheck)?;
    Ok(out)
}

/// What every SignedData of one signer shares, as DER, taken from a signature OpenSSL
/// itself made at load: so the algorithm identifiers, the certificate set (signer and
/// chain) and the SMIMECapabilities attribute are exactly what `CMS_sign` emits, while
/// each message costs one SHA-256 and one private-key operation (OpenSSL 3.0's
/// `CMS_sign` also looks up every cipher for SMIMECapabilities, and re-parsing its
/// output decodes every certificate again).
struct SignTemplate {
    /// SignedData `version` (INTEGER).
    version: Vec<u8>,
    /// SignedData `digestAlgorithms` (SET).
    digest_algorithms: Vec<u8>,
    /// SignedData `certificates` (`[0] IMPLICIT SET OF Certificate`): signer and chain.
    certificates: Vec<u8>,
    /// SignerInfo `version` (INTEGER).
    signer_version: Vec<u8>,
    /// SignerInfo `sid` (IssuerAndSerialNumber of the signing certificate).
    sid: Vec<u8>,
    /// SignerInfo `digestAlgorithm`: SHA-256.
    digest_algorithm: Vec<u8>,
    /// SignerInfo `signatureAlgorithm`: rsaEncryption or ecdsa-with-SHA256.
    signature_algorithm: Vec<u8>,
    /// The whole SMIMECapabilities Attribute, as OpenSSL computed it.
    smime_capabilities: Vec<u8>,
}

impl SignTemplate {
    fn from_openssl(cert: &X509, key: &PKey<Private>, chain: &[X509]) -> Result<Self, String> {
        let mut stack = Stack::new().map_err(|e| e.to_string())?;
        for c in chain {
            stack.push(c.clone()).map_err(|e| e.to_string())?;
        }
        let cms = CmsContentInfo::sign(
            Some(cert),
            Some(key),
            Some(&stack),
            Some(b"sealgate"),
            CMSOptions::BINARY | CMSOptions::DETACHED,
        )
        .map_err(|e| e.to_string())?;
        let der = cms.to_der().map_err(|e| e.to_string())?;
        let bad = || "unexpected structure in OpenSSL's SignedData".to_string();
        let sd = signed_data_parts(&der).ok_or_else(bad)?;
        let si = signer_info_parts(sd.signer_info).ok_or_else(bad)?;
        let caps = attributes(si.signed_attrs)
            .find(|(oid, _, _)| *oid == oid::SMIME_CAPABILITIES)
            .map(|(_, _, raw)| raw.to_vec())
            .ok_or("OpenSSL added no SMIMECapabilities attribute")?;
        let certificates = sd.certificates.ok_or("OpenSSL included no certificates")?;
        Ok(SignTemplate {
            version: sd.version.to_vec(),
            digest_algorithms: sd.digest_algorithms.to_vec(),
            certificates: certificates.to_vec(),
            signer_version: si.version.to_vec(),
            sid: si.sid.to_vec(),
            digest_algorithm: si.digest_algorithm.to_vec(),
            signature_algorithm: si.signature_algorithm.to_vec(),
            smime_capabilities: caps,
        })
    }

    /// A SignedData over content with SHA-256 `digest`, signed now by `s`; `content`
    /// is embedded for opaque signing and left out (detached) otherwise.
    fn signed_data(
        &self,
        s: &Signer,
        digest: &[u8; 32],
        content: Option<&[u8]>,
    ) -> Result<Vec<u8>, SmimeError> {
        let mut attrs = [
            der::tlv(
                der::SEQUENCE,
                &[oid::CONTENT_TYPE, &der::tlv(der::SET, &[oid::DATA])],
            ),
            der::tlv(
                der::SEQUENCE,
                &[oid::SIGNING_TIME, &der::tlv(der::SET, &[&der::time_now()])],
            ),
            der::tlv(
                der::SEQUENCE,
                &[
                    oid::MESSAGE_DIGEST,
                    &der::tlv(der::SET, &[&der::tlv(der::OCTET_STRING, &[digest])]),
                ],
            ),
            self.smime_capabilities.clone(),
        ];
        attrs.sort(); // DER orders a SET OF by encoding
        let attr_refs: Vec<&[u8]> = attrs.iter().map(Vec::as_slice).collect();
        // Signed as a SET (RFC 5652 5.4), carried as [0] IMPLICIT.
        let to_sign = der::tlv(der::SET, &attr_refs);
        let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &s.key)
            .map_err(crypto("signing"))?;
        signer.update(&to_sign).map_err(crypto("signing"))?;
        let signature = signer.sign_to_vec().map_err(crypto("signing"))?;
        let signer_info = der::tlv(
            der::SEQUENCE,
            &[
                &self.signer_version,
                &self.sid,
                &self.digest_algorithm,
                &der::tlv(der::CTX0, &attr_refs),
                &self.signature_algorithm,
                &der::tlv(der::OCTET_STRING, &[&signature]),
            ],
        );
        let signer_infos = der::tlv(der::SET, &[&signer_info]);
        // encapContentInfo, written around the content without copying it twice.
        let (econtent_len, inner_len) = match content {
            Some(c) => {
                let octets = der::header_len(c.len()) + c.len();
                (octets, der::header_len(octets) + octets)
            }
            None => (0, 0),
        };
        let encap_len = oid::DATA.len() + inner_len;
        let sd_len = self.version.len()
            + self.digest_algorithms.len()
            + der::header_len(encap_len)
            + encap_len
            + self.certificates.len()
            + signer_infos.len();
        let explicit_len = der::header_len(sd_len) + sd_len;
        let ci_len = oid::SIGNED_DATA.len() + der::header_len(explicit_len) + explicit_len;
        let mut out = Vec::with_capacity(der::header_len(ci_len) + ci_len);
        der::header(der::SEQUENCE, ci_len, &mut out);
        out.extend_from_slice(oid::SIGNED_DATA);
        der::header(der::CTX0, explicit_len, &mut out);
        der::header(der::SEQUENCE, sd_len, &mut out);
        out.extend_from_slice(&self.version);
        out.extend_from_slice(&self.digest_algorithms);
        der::header(der::SEQUENCE, encap_len, &mut out);
        out.extend_from_slice(oid::DATA);
        if let Some(c) = content {
            der::header(der::CTX0, econtent_len, &mut out);
            der::header(der::OCTET_STRING, c.len(), &mut out);
            out.extend_from_slice(c);
        }
        out.extend_from_slice(&self.certificates);
        out.extend_from_slice(&signer_infos);
        debug_assert_eq!(out.len(), out.capacity());
        Ok(out)
    }
}

/// The fields of a SignedData ContentInfo, as raw DER elements.
struct SignedDataParts<'a> {
    version: &'a [u8],
    digest_algorithms: &'a [u8],
    /// `eContent` OCTET STRING value, for opaque signatures.
    content: Option<&'a [u8]>,
    content_type: &'a [u8],
    certificates: Option<&'a [u8]>,
    /// The first (only) SignerInfo.
    signer_info: &'a [u8],
}

fn signed_data_parts(d: &[u8]) -> Option<SignedDataParts<'_>> {
    let mut top = der::Reader::new(d);
    let ci = top.expect(der::SEQUENCE)?;
    if !top.is_empty() {
        return None;
    }
    let mut ci = der::Reader::new(ci.value);
    if ci.expect(der::OID)?.raw != oid::SIGNED_DATA {
        return None;
    }
    let explicit = ci.expect(der::CTX0)?;
    let mut sd = der::Reader::new(
        der::Reader::new(explicit.value)
            .expect(der::SEQUENCE)?
            .value,
    );
    let version = sd.expect(der::INTEGER)?.raw;
    let digest_algorithms = sd.expect(der::SET)?.raw;
    let mut encap = der::Reader::new(sd.expect(der::SEQUENCE)?.value);
    let content_type = encap.expect(der::OID)?.raw;
    let content = match encap.next() {
        Some(e) if e.tag == der::CTX0 => {
            let mut inner = der::Reader::new(e.value);
            Some(inner.expect(der::OCTET_STRING)?.value)
        }
        Some(_) => return None,
        None => None,
    };
    let mut next = sd.next()?;
    let mut certificates = None;
    if next.tag == der::CTX0 {
        certificates = Some(next.raw);
        next = sd.next()?;
    }
    if next.tag == der::CTX0 | 1 {
        next = sd.next()?; // CRLs: none of ours, skipped
    }
    if next.tag != der::SET || !sd.is_empty() {
        return None;
    }
    let mut infos = der::Reader::new(next.value);
    let signer_info = infos.expect(der::SEQUENCE)?.raw;
    Some(SignedDataParts {
        version,
        digest_algorithms,
        content,
        content_type,
        certificates,
        signer_info,
    })
}

/// The fields of a SignerInfo, as raw DER elements (`signed_attrs` with its `[0]` tag).
struct SignerInfoParts<'a> {
    version: &'a [u8],
    sid: &'a [u8],
    digest_algorithm: &'a [u8],
    signed_attrs: &'a [u8],
    signature_algorithm: &'a [u8],
    signature: &'a [u8],
}

fn signer_info_parts(d: &[u8]) -> Option<SignerInfoParts<'_>> {
    let mut si = der::Reader::new(der::Reader::new(d).expect(der::SEQUENCE)?.value);
    let parts = SignerInfoParts {
        version: si.expect(der::INTEGER)?.raw,
        sid: si.next()?.raw,
        digest_algorithm: si.expect(der::SEQUENCE)?.raw,
        signed_attrs: si.expect(der::CTX0)?.raw,
        signature_algorithm: si.expect(der::SEQUENCE)?.raw,
        signature: si.expect(der::OCTET_STRING)?.value,
    };
    // unsignedAttrs are not ours to have
    si.is_empty().then_some(parts)
}

/// The attributes in a `[0]` signedAttrs element: (type OID, value SET contents, raw).
fn attributes(signed_attrs: &[u8]) -> impl Iterator<Item = (&[u8], &[u8], &[u8])> {
    let inner = der::Reader::new(signed_attrs)
        .next()
        .map_or(&[][..], |t| t.value);
    let mut r = der::Reader::new(inner);
    std::iter::from_fn(move || {
        let attr = r.expect(der::SEQUENCE)?;
        let mut a = der::Reader::new(attr.value);
        let oid = a.expect(der::OID)?.raw;
        let values = a.expect(der::SET)?.value;
        Some((oid, values, attr.raw))
    })
}

/// The self-check of a SignedData we made: it parses on its own, names our certificate
/// and carries it, has the content type, signing time, SMIMECapabilities and a SHA-256
/// message digest equal to `digest` (or, when `None`, to the digest of the embedded
/// content), and its signature over the signed attributes verifies with the signing
/// certificate's public key.
fn check_signed_data(s: &Signer, d: &[u8], digest: Option<&[u8; 32]>) -> Result<(), String> {
    let sd = signed_data_parts(d).ok_or("own signature does not parse")?;
    let si = signer_info_parts(sd.signer_info).ok_or("own SignerInfo does not parse")?;
    if sd.content_type != oid::DATA {
        return Err("own signature has an unexpected content type".into());
    }
    if si.sid != s.template.sid.as_slice() {
        return Err("own signature names another certificate".into());
    }
    let carries_cert = sd.certificates.is_some_and(|c| {
        let mut r = der::Reader::new(der::Reader::new(c).next().map_or(&[][..], |t| t.value));
        std::iter::from_fn(|| r.next()).any(|t| t.raw == s.cert_der.as_slice())
    });
    if !carries_cert {
        return Err("own signature does not carry the signing certificate".into());
    }
    if !si
        .digest_algorithm
        .windows(oid::SHA256.len())
        .any(|w| w == oid::SHA256)
    {
        return Err("own signature does not use SHA-256".into());
    }
    let wanted: [u8; 32] = match (digest, sd.content) {
        (Some(d), None) => *d,
        (None, Some(c)) => sha2::Sha256::digest(c).into(),
        _ => return Err("own signature is detached where it should not be, or not".into()),
    };
    let (mut content_type, mut time, mut caps, mut message_digest) = (false, false, false, false);
    for (oid, values, _) in attributes(si.signed_attrs) {
        match oid {
            o if o == oid::CONTENT_TYPE => content_type = values == oid::DATA,
            o if o == oid::SIGNING_TIME => time = true,
            o if o == oid::SMIME_CAPABILITIES => caps = true,
            o if o == oid::MESSAGE_DIGEST => {
                let mut v = der::Reader::new(values);
                message_digest = v
                    .expect(der::OCTET_STRING)
                    .is_some_and(|o| o.value == wanted.as_slice());
                if !message_digest {
                    return Err("own signature's message digest does not match the content".into());
                }
            }
            _ => {}
        }
    }
    if !(content_type && time && caps && message_digest) {
        return Err("own signature lacks a required signed attribute".into());
    }
    // What was signed is the SET OF attributes, not their [0] IMPLICIT form.
    let mut signed = si.signed_attrs.to_vec();
    signed[0] = der::SET; // signed_attrs parsed as a TLV above, so it is not empty
    let mut verifier =
        openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &s.public)
            .map_err(|e| e.to_string())?;
    verifier.update(&signed).map_err(|e| e.to_string())?;
    match verifier.verify(si.signature) {
        Ok(true) => Ok(()),
        Ok(false) => Err("own signature does not verify".into()),
        Err(e) => Err(format!("own signature does not verify: {e}")),
    }
}

/// Object identifiers used here, as whole DER elements (tag, length, value).
mod oid {
    pub const DATA: &[u8] = &[6, 9, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 1, 7, 1];
    pub const SIGNED_DATA: &[u8] = &[6, 9, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 1, 7, 2];
    pub const ENVELOPED_DATA: &[u8] = &[6, 9, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 1, 7, 3];
    pub const CONTENT_TYPE: &[u8] = &[6, 9, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 1, 9, 3];
    pub const MESSAGE_DIGEST: &[u8] = &[6, 9, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 1, 9, 4];
    pub const SIGNING_TIME: &[u8] = &[6, 9, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 1, 9, 5];
    pub const SMIME_CAPABILITIES: &[u8] = &[6, 9, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 1, 9, 15];
    pub const RSA_ENCRYPTION: &[u8] = &[6, 9, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 1, 1, 1];
    pub const SHA256: &[u8] = &[6, 9, 0x60, 0x86, 0x48, 1, 0x65, 3, 4, 2, 1];
    pub const AES256_CBC: &[u8] = &[6, 9, 0x60, 0x86, 0x48, 1, 0x65, 3, 4, 1, 42];
}

/// Just enough DER to write the CMS structures above and read our own back.
mod der {
    pub const INTEGER: u8 = 0x02;
    pub const OCTET_STRING: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const OID: u8 = 0x06;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    /// `[0]` constructed.
    pub const CTX0: u8 = 0xA0;
    /// `[0]` primitive (IMPLICIT OCTET STRING).
    pub const CTX0_PRIMITIVE: u8 = 0x80;

    fn len_octets(len: usize) -> usize {
        (usize::BITS - len.leading_zeros()).div_ceil(8) as usize
    }

    /// Length of the tag and length octets for content of `len` bytes.
    pub fn header_len(len: usize) -> usize {
        if len < 0x80 {
            2
        } else {
            2 + len_octets(len)
        }
    }

    pub fn header(tag: u8, len: usize, out: &mut Vec<u8>) {
        out.push(tag);
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let n = len_octets(len);
            out.push(0x80 | n as u8);
            for i in (0..n).rev() {
                out.push((len >> (8 * i)) as u8);
            }
        }
    }

    /// One element whose content is `parts` concatenated.
    pub fn tlv(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
        let len = parts.iter().map(|p| p.len()).sum();
        let mut out = Vec::with_capacity(header_len(len) + len);
        header(tag, len, &mut out);
        for p in parts {
            out.extend_from_slice(p);
        }
        out
    }

    /// The current time as the signingTime value: UTCTime until 2049, GeneralizedTime after.
    pub fn time_now() -> Vec<u8> {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (days, rem) = (secs / 86_400, secs % 86_400);
        // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        let hms = format!("{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60);
        if year < 2050 {
            let t = format!("{:02}{month:02}{day:02}{hms}", year % 100);
            tlv(0x17, &[t.as_bytes()])
        } else {
            let t = format!("{year:04}{month:02}{day:02}{hms}");
            tlv(0x18, &[t.as_bytes()])
        }
    }

    /// One element read from DER: its tag, its content, and the whole encoding.
    pub struct Tlv<'a> {
        pub tag: u8,
        pub value: &'a [u8],
        pub raw: &'a [u8],
    }

    /// Reads consecutive elements; `None` on anything malformed (never panics).
    pub struct Reader<'a> {
        rest: &'a [u8],
    }

    impl<'a> Reader<'a> {
        pub fn new(data: &'a [u8]) -> Self {
            Reader { rest: data }
        }

        pub fn is_empty(&self) -> bool {
            self.rest.is_empty()
        }

        #[allow(clippy::should_implement_trait)]
        pub fn next(&mut self) -> Option<Tlv<'a>> {
            let d = self.rest;
            let tag = *d.first()?;
            if tag & 0x1F == 0x1F {
                return None; // multi-byte tags do not occur in what we read
            }
            let first = *d.get(1)?;
            let (len, head) = if first < 0x80 {
                (usize::from(first), 2)
            } else {
                let n = usize::from(first & 0x7F);
                if n == 0 || n > std::mem::size_of::<usize>() {
                    return None; // indefinite length is not DER
                }
                let len = d
                    .get(2..2 + n)?
                    .iter()
                    .fold(0usize, |l, b| (l << 8) | usize::from(*b));
                (len, 2 + n)
            };
            let raw = d.get(..head.checked_add(len)?)?;
            self.rest = &d[raw.len()..];
            Some(Tlv {
                tag,
                value: &raw[head..],
                raw,
            })
        }

        /// The next element if it has `tag`.
        pub fn expect(&mut self, tag: u8) -> Option<Tlv<'a>> {
            self.next().filter(|t| t.tag == tag)
        }
    }

    /// IssuerAndSerialNumber of a certificate, copied from its own DER.
    pub fn issuer_and_serial(cert_der: &[u8]) -> Option<Vec<u8>> {
        let cert = Reader::new(cert_der).expect(SEQUENCE)?;
        let tbs = Reader::new(cert.value).expect(SEQUENCE)?;
        let mut tbs = Reader::new(tbs.value);
        let mut serial = tbs.next()?;
        if serial.tag == 0xA0 {
            serial = tbs.next()?; // explicit version
        }
        if serial.tag != INTEGER {
            return None;
        }
        let _signature = tbs.expect(SEQUENCE)?;
        let issuer = tbs.expect(SEQUENCE)?;
        Some(tlv(SEQUENCE, &[issuer.raw, serial.raw]))
    }
}

/// EnvelopedData with RSA PKCS#1 v1.5 key transport and AES-256-CBC (RFC 5652 6,
/// RFC 3565), built directly: the content is encrypted once, straight into the DER.
mod envelope {
    use super::{crypto, der, oid, SmimeError};
    use openssl::symm::{Cipher, Crypter, Mode};
    use openssl::x509::X509;

    /// The DER in a buffer with room to grow into its base64 form plus `room` bytes.
    pub fn rsa_aes256_cbc(
        recipients: &[&X509],
        content: &[u8],
        room: usize,
    ) -> Result<Vec<u8>, SmimeError> {
        let mut key = [0u8; 32];
        let mut iv = [0u8; 16];
        let mut fresh = [0u8; 48];
        openssl::rand::rand_bytes(&mut fresh).map_err(crypto("choosing a content key"))?;
        key.copy_from_slice(&fresh[..32]);
        iv.copy_from_slice(&fresh[32..]);
        let result = build(recipients, content, &key, &iv, room);
        extern "C" {
            fn OPENSSL_cleanse(ptr: *mut std::os::raw::c_void, len: usize);
        }
        // SAFETY: `key` is a live local array of `key.len()` bytes that nothing else
        // borrows; OPENSSL_cleanse only writes zeros within that range.
        unsafe { OPENSSL_cleanse(key.as_mut_ptr().cast(), key.len()) };
        // SAFETY: as above, for the local array `fresh`.
        unsafe { OPENSSL_cleanse(fresh.as_mut_ptr().cast(), fresh.len()) };
        result
    }

    fn build(
        recipients: &[&X509],
        content: &[u8],
        key: &[u8; 32],
        iv: &[u8; 16],
        room: usize,
    ) -> Result<Vec<u8>, SmimeError> {
        let rsa_alg = der::tlv(der::SEQUENCE, &[oid::RSA_ENCRYPTION, &[der::NULL, 0]]);
        let mut infos = Vec::with_capacity(recipients.len());
        for cert in recipients {
            let cert_der = cert
                .to_der()
                .map_err(crypto("reading a recipient certificate"))?;
            let rid = der::issuer_and_serial(&cert_der).ok_or_else(|| {
                SmimeError::SelfCheck("recipient certificate does not parse".into())
            })?;
            let rsa = cert
                .public_key()
                .and_then(|k| k.rsa())
                .map_err(crypto("reading a recipient key"))?;
            let mut wrapped = vec![0u8; rsa.size() as usize];
            let n = rsa
                .public_encrypt(key, &mut wrapped, openssl::rsa::Padding::PKCS1)
                .map_err(crypto("encrypting the content key"))?;
            wrapped.truncate(n);
            infos.push(der::tlv(
                der::SEQUENCE,
                &[
                    &[der::INTEGER, 1, 0],
                    &rid,
                    &rsa_alg,
                    &der::tlv(der::OCTET_STRING, &[&wrapped]),
                ],
            ));
        }
        infos.sort(); // DER orders a SET OF by encoding
        let info_refs: Vec<&[u8]> = infos.iter().map(Vec::as_slice).collect();
        let recipient_infos = der::tlv(der::SET, &info_refs);
        let algorithm = der::tlv(
            der::SEQUENCE,
            &[oid::AES256_CBC, &der::tlv(der::OCTET_STRING, &[iv])],
        );
        // CBC with PKCS#7 padding always adds 1..=16 bytes.
        let ct_len = (content.len() / 16 + 1) * 16;
        let eci_len = oid::DATA.len() + algorithm.len() + der::header_len(ct_len) + ct_len;
        let env_len = 3 + recipient_infos.len() + der::header_len(eci_len) + eci_len;
        let explicit_len = der::header_len(env_len) + env_len;
        let ci_len = oid::ENVELOPED_DATA.len() + der::header_len(explicit_len) + explicit_len;
        let total = der::header_len(ci_len) + ci_len;
        // `Crypter` wants a block more than it may write; the base64 form replaces the
        // DER in this buffer later.
        let mut out = Vec::with_capacity(
            (total + 16).max(crate::message::mime::base64_lines_len(total)) + room,
        );
        der::header(der::SEQUENCE, ci_len, &mut out);
        out.extend_from_slice(oid::ENVELOPED_DATA);
        der::header(der::CTX0, explicit_len, &mut out);
        der::header(der::SEQUENCE, env_len, &mut out);
        out.extend_from_slice(&[der::INTEGER, 1, 0]);
        out.extend_from_slice(&recipient_infos);
        der::header(der::SEQUENCE, eci_len, &mut out);
        out.extend_from_slice(oid::DATA);
        out.extend_from_slice(&algorithm);
        der::header(der::CTX0_PRIMITIVE, ct_len, &mut out);
        let start = out.len();
        out.resize(start + ct_len + 16, 0);
        let mut c = Crypter::new(Cipher::aes_256_cbc(), Mode::Encrypt, key, Some(iv))
            .map_err(crypto("encrypting"))?;
        let mut n = c
            .update(content, &mut out[start..])
            .map_err(crypto("encrypting"))?;
        n += c
            .finalize(&mut out[start + n..])
            .map_err(crypto("encrypting"))?;
        if n != ct_len {
            return Err(SmimeError::SelfCheck(format!(
                "ciphertext is {n} bytes, expected {ct_len}"
            )));
        }
        out.truncate(start + ct_len);
        debug_assert_eq!(out.len(), total);
        Ok(out)
    }
}

/// RFC 9788: copies the message's own header fields into the cryptographic payload's
/// header (`content`), marks its Content-Type with `hp="cipher"` (encrypted) or
/// `hp="clear"` (signed only), and records the outer values in `HP-Outer` fields.
pub(crate) fn protect_headers(
    content: &[u8],
    fields: &[mime::Field<'_>],
    encrypting: bool,
) -> Vec<u8> {
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

/// Re-encodes leaf parts that carry 8-bit data, or lines longer than RFC 5322's 998
/// octets, in 7bit/8bit/binary transfer encoding as base64, so that a detached signature
/// survives relays that downgrade 8BITMIME or fold long lines (RFC 8551 §3.1.3 asks for
/// exactly this before signing). Parts already 7-bit with short lines stay byte-identical.
pub fn to_7bit(entity: Vec<u8>) -> Vec<u8> {
    if entity.iter().all(|c| *c < 0x80) && !mime::has_long_line(&entity) {
        return entity;
    }
    let tree = mime::parse(&entity);
    let rewritten = mime::rewrite(&tree, &mut |e: &Entity<'_>, _parent: Option<&str>| {
        let needs = matches!(e.kind, Kind::Leaf)
            && matches!(
                e.info.transfer_encoding.as_str(),
                "7bit" | "8bit" | "binary"
            )
            && (e.body.iter().any(|c| *c >= 0x80) || mime::has_long_line(e.body));
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

    /// A signer with a fresh self-signed RSA certificate, as [`load_signer`] builds it.
    fn test_signer(opaque: bool) -> Signer {
        use openssl::x509::extension::SubjectAlternativeName;
        let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let mut name = openssl::x509::X509Name::builder().unwrap();
        name.append_entry_by_text("CN", "signer@example.com")
            .unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(30).unwrap())
            .unwrap();
        let serial = openssl::bn::BigNum::from_u32(4242)
            .unwrap()
            .to_asn1_integer()
            .unwrap();
        b.set_serial_number(&serial).unwrap();
        let san = SubjectAlternativeName::new()
            .email("signer@example.com")
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(san).unwrap();
        b.sign(&key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        let cert = b.build();
        Signer {
            senders: vec!["*".into()],
            template: SignTemplate::from_openssl(&cert, &key, &[]).unwrap(),
            public: cert.public_key().unwrap(),
            cert_der: cert.to_der().unwrap(),
            info: SignerInfo {
                cert_path: PathBuf::new(),
                subject: String::new(),
                key: String::new(),
                opaque,
                not_after: String::new(),
            },
            cert,
            key,
            opaque,
            warnings: Vec::new(),
        }
    }

    const ENTITY: &[u8] = b"Content-Type: text/plain\r\n\r\nhello\r\n";

    /// The base64 signature part of a multipart/signed entity, decoded.
    fn emitted_signature(out: &[u8]) -> Vec<u8> {
        let text = std::str::from_utf8(out).unwrap();
        let marker = "filename=smime.p7s\r\n\r\n";
        let start = text.find(marker).unwrap() + marker.len();
        let end = start + text[start..].find("\r\n\r\n--").unwrap();
        mime::decode_body(&out[start..end], "base64").into_owned()
    }

    #[test]
    fn signature_carries_sha256_signing_time_capabilities_and_verifies_with_openssl() {
        let s = test_signer(false);
        let out = sign_entity(&s, ENTITY.to_vec(), b"").unwrap();
        let der = emitted_signature(&out);
        let digest: [u8; 32] = sha2::Sha256::digest(ENTITY).into();
        check_signed_data(&s, &der, Some(&digest)).unwrap();
        // OpenSSL itself reads and verifies what we built by hand.
        let mut cms = CmsContentInfo::from_der(&der).unwrap();
        cms.verify(
            None,
            None,
            Some(ENTITY),
            None,
            CMSOptions::BINARY | CMSOptions::NO_SIGNER_CERT_VERIFY,
        )
        .unwrap();
        let si = signer_info_parts(signed_data_parts(&der).unwrap().signer_info).unwrap();
        let oids: Vec<&[u8]> = attributes(si.signed_attrs).map(|(o, _, _)| o).collect();
        for want in [
            oid::CONTENT_TYPE,
            oid::SIGNING_TIME,
            oid::MESSAGE_DIGEST,
            oid::SMIME_CAPABILITIES,
        ] {
            assert!(oids.contains(&want));
        }
    }

    #[test]
    fn self_check_fails_on_a_corrupted_signature() {
        let s = test_signer(false);
        let out = sign_entity(&s, ENTITY.to_vec(), b"").unwrap();
        let der = emitted_signature(&out);
        let digest: [u8; 32] = sha2::Sha256::digest(ENTITY).into();
        // Any single flipped byte of the signature structure is caught.
        let mut caught = 0;
        for at in (0..der.len()).step_by(7) {
            let mut bad = der.clone();
            bad[at] ^= 0x01;
            if check_signed_data(&s, &bad, Some(&digest)).is_err() {
                caught += 1;
            }
        }
        let tried = der.len().div_ceil(7);
        // Flips inside the certificates' own signatures or unused bits may go unseen
        // by this check (OpenSSL's verify ignores them too); everything we sign is seen.
        assert!(caught * 10 >= tried * 9, "caught {caught} of {tried}");
        let sd = signed_data_parts(&der).unwrap();
        let at = der.len() - 3; // inside the RSA signature value
        assert!(sd.signer_info.len() > 3);
        let mut bad = der.clone();
        bad[at] ^= 0x80;
        assert!(check_signed_data(&s, &bad, Some(&digest)).is_err());
    }

    #[test]
    fn self_check_fails_on_corrupted_content() {
        let s = test_signer(false);
        let out = sign_entity(&s, ENTITY.to_vec(), b"").unwrap();
        let der = emitted_signature(&out);
        let corrupted = b"Content-Type: text/plain\r\n\r\nhellO\r\n";
        let digest: [u8; 32] = sha2::Sha256::digest(corrupted).into();
        let err = check_signed_data(&s, &der, Some(&digest)).unwrap_err();
        assert!(err.contains("message digest"), "{err}");
    }

    #[test]
    fn opaque_signature_self_check_rehashes_the_embedded_content() {
        let s = test_signer(true);
        let digest: [u8; 32] = sha2::Sha256::digest(ENTITY).into();
        let der = s.template.signed_data(&s, &digest, Some(ENTITY)).unwrap();
        check_signed_data(&s, &der, None).unwrap();
        let mut bad = der.clone();
        let at = mime::find(&bad, b"hello").unwrap();
        bad[at] = b'j';
        assert!(check_signed_data(&s, &bad, None).is_err());
    }

    #[test]
    fn oids_match_openssl() {
        use openssl::asn1::Asn1Object;
        for (ours, dotted) in [
            (oid::DATA, "1.2.840.113549.1.7.1"),
            (oid::SIGNED_DATA, "1.2.840.113549.1.7.2"),
            (oid::ENVELOPED_DATA, "1.2.840.113549.1.7.3"),
            (oid::CONTENT_TYPE, "1.2.840.113549.1.9.3"),
            (oid::MESSAGE_DIGEST, "1.2.840.113549.1.9.4"),
            (oid::SIGNING_TIME, "1.2.840.113549.1.9.5"),
            (oid::SMIME_CAPABILITIES, "1.2.840.113549.1.9.15"),
            (oid::RSA_ENCRYPTION, "1.2.840.113549.1.1.1"),
            (oid::SHA256, "2.16.840.1.101.3.4.2.1"),
            (oid::AES256_CBC, "2.16.840.1.101.3.4.1.42"),
        ] {
            let o = Asn1Object::from_str(dotted).unwrap();
            assert_eq!(&ours[2..], o.as_slice(), "{dotted}");
            assert_eq!(usize::from(ours[1]), ours.len() - 2);
        }
    }

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

    #[test]
    fn to_7bit_reencodes_leaves_with_lines_over_998_octets() {
        let long = "x".repeat(999);
        let ok = "y".repeat(998);
        let e = format!("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/csv\r\n\r\n{long}\r\n--b\r\nContent-Type: text/plain\r\n\r\n{ok}\r\n--b--\r\n");
        let out = String::from_utf8(to_7bit(e.clone().into_bytes())).unwrap();
        assert!(!mime::has_long_line(out.as_bytes()));
        assert!(
            out.contains("Content-Type: text/csv\r\nContent-Transfer-Encoding: base64\r\n\r\neHh4")
        );
        assert!(out.contains(&format!("Content-Type: text/plain\r\n\r\n{ok}\r\n--b--")));
        // 998 octets is within the limit: nothing changes.
        let fine = format!("Content-Type: text/plain\r\n\r\n{ok}\r\n");
        assert_eq!(to_7bit(fine.clone().into_bytes()), fine.into_bytes());
    }
}
