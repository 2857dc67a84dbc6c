//! S/MIME signing and encryption of one message (RFC 8551), with our own MIME writer
//! around the CMS structures OpenSSL builds.
//!
//! Its one job: take a canonical (CRLF) message and return it signed, encrypted, or
//! both (sign first, then encrypt), self-checked. Outer header fields (From, To, Subject,
//! Date, Message-ID, ...) stay outside; the signed or encrypted content is the MIME entity
//! made of the original `Content-*` fields and the body, byte for byte.
//!
//! One job per file: `config` (the `[smime]` section), `signer` (loading signing keys
//! and certificates), `sign` (SignedData and its self-check), `envelope` (EnvelopedData),
//! `oaep` (RSA-OAEP through OpenSSL's C API), `der` and `oid` (the DER they share).
//! This file holds the [`Smime`] handle: load, lookups, and [`Smime::protect`], which
//! runs the steps in order. It never writes DER or calls OpenSSL's C API itself: those
//! stay in the files named above.
//!
//! Invariants:
//! - nothing leaves this module unless our own signature, read back from the emitted
//!   base64 and parsed on its own, carries a SHA-256 digest equal to that of the content
//!   bytes as they sit in the output and verifies (OpenSSL, signer's certificate key)
//!   over its signed attributes; and OpenSSL parsed (and, with `encrypt_to_self`,
//!   decrypted) our own EnvelopedData;
//! - per message, signing costs one SHA-256 and one private-key operation: what is the
//!   same for every signature (certificate chain, algorithm identifiers, SMIMECapabilities)
//!   comes from one `CMS_sign` at load (`sign::SignTemplate`);
//! - a private key is read only through [`crate::secret::read_secret_file`];
//! - a message that asks for encryption is never returned unencrypted.

mod config;
mod der;
mod envelope;
mod oaep;
mod oid;
mod sign;
mod signer;

use std::path::{Path, PathBuf};

use openssl::x509::X509;

use crate::glob::glob_match;

use super::certstore::{CertStore, StoreError};
pub use super::certstore::{NoCertificate, Unusable};
use super::payload::{protect_headers, to_7bit};
use crate::message::mime;
pub use config::{Cipher, KeyTransport, SignerConfig, SmimeConfig};
use sign::sign_entity;
use signer::{load_signer, Signer};

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
        let encrypting = encrypt_to.is_some();
        let split = mime::header_end(message);
        let (header, body) = message.split_at(split);
        let (head, content) = self.split_header(header, encrypting);
        let signer = self.signer(sender);
        let sign_with = if sign {
            Some(usable_signer(signer, sender)?)
        } else {
            None
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

    /// Splits a message's header block into the outer header (every field but the
    /// `Content-*` ones and MIME-Version, then `MIME-Version: 1.0`) and the header of the
    /// entity to protect (the `Content-*` fields, a plain-text Content-Type when there
    /// was none, and with header protection a copy of the protected fields). With header
    /// protection and encryption, the outer Subject reads `...`.
    fn split_header(&self, header: &[u8], encrypting: bool) -> (Vec<u8>, Vec<u8>) {
        let fields = mime::fields(header);
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
        (head, content)
    }
}

/// The signer to sign with, or why there is none: a signature clients would reject is
/// not sent, so the certificate must be valid now and fit for S/MIME signing (load only
/// warned about it).
fn usable_signer<'a>(signer: Option<&'a Signer>, sender: &str) -> Result<&'a Signer, SmimeError> {
    let s = signer.ok_or_else(|| SmimeError::NoSigner(sender.to_string()))?;
    s.usable_now().map_err(|why| SmimeError::Signer {
        path: s.info.cert_path.clone(),
        why: format!("the signing certificate cannot be used: {why}"),
    })?;
    Ok(s)
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
}
