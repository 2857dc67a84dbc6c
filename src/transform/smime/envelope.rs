//! EnvelopedData: encrypting one MIME entity to its recipients and wrapping it as
//! `application/pkcs7-mime`.
//!
//! Its one job: the encryption step of [`super::Smime::protect`]. The default (RSA
//! PKCS#1 v1.5 key transport, AES-256-CBC, RFC 5652 6 and RFC 3565) is built directly,
//! the content encrypted once straight into the DER; the other ciphers and OAEP go
//! through OpenSSL.
//!
//! Invariants: nothing is returned that OpenSSL cannot parse back (and, with
//! `encrypt_to_self`, decrypt to the same bytes); the content key never outlives the
//! call (it is cleansed); this module never signs and never sees a private key except
//! the sender's own, for the decrypt-to-self check.

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::pkey::Id;
use openssl::stack::Stack;
use openssl::symm::{Crypter, Mode};
use openssl::x509::X509;
use sha2::Digest;

use super::signer::Signer;
use super::{crypto, der, oaep, oid, Cipher, KeyTransport, Smime, SmimeError};
use crate::message::mime;

impl Smime {
    /// Encrypts `entity` (consumed, so that its memory is freed before the output is
    /// encoded) and returns `prefix` followed by the `application/pkcs7-mime` entity,
    /// self-checked.
    pub(super) fn encrypt_entity(
        &self,
        certs: &[X509],
        to_self: Option<&Signer>,
        entity: Vec<u8>,
        prefix: &[u8],
    ) -> Result<Vec<u8>, SmimeError> {
        let recipients: Vec<&X509> = certs.iter().chain(to_self.map(|s| &s.cert)).collect();
        // Only needed to compare a decrypt-to-self; hashing is not free on large messages.
        let digest: Option<[u8; 32]> = to_self.map(|_| sha2::Sha256::digest(&entity).into());
        // Room for the base64 form and the header in front of it, which replace the DER
        // in the same buffer.
        let der = self.enveloped_data(&recipients, entity, prefix.len() + 256)?;
        check_enveloped_data(&der, to_self, digest)?;
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

    /// The EnvelopedData DER of `entity` (consumed: freed before the caller encodes
    /// the output) for `recipients`, in a buffer with `room` bytes to spare.
    fn enveloped_data(
        &self,
        recipients: &[&X509],
        entity: Vec<u8>,
        room: usize,
    ) -> Result<Vec<u8>, SmimeError> {
        let all_rsa = recipients
            .iter()
            .all(|c| c.public_key().is_ok_and(|k| k.id() == Id::RSA));
        if all_rsa
            && self.cipher == Cipher::Aes256Cbc
            && self.key_transport == KeyTransport::Pkcs1v15
        {
            // The default, built directly: CMS_encrypt streams the content through a BIO
            // chain into a growing buffer, copies it into the structure and again to
            // encode it (together about as much as the AES itself).
            return rsa_aes256_cbc(recipients, &entity, room);
        }
        let mut stack = Stack::new().map_err(crypto("building the recipient list"))?;
        for c in recipients {
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
                cms.to_der().map_err(crypto("encoding the EnvelopedData"))
            }
            KeyTransport::Oaep => {
                oaep::encrypt(&stack, &entity, cipher).map_err(crypto("encrypting with RSA-OAEP"))
            }
        }
    }
}

/// Self-check: OpenSSL parses our EnvelopedData; with a key of our own (`to_self`), it
/// decrypts to content whose SHA-256 is `digest`.
fn check_enveloped_data(
    der: &[u8],
    to_self: Option<&Signer>,
    digest: Option<[u8; 32]>,
) -> Result<(), SmimeError> {
    let parsed = CmsContentInfo::from_der(der)
        .map_err(|e| SmimeError::SelfCheck(format!("own EnvelopedData does not parse: {e}")))?;
    if let Some(s) = to_self {
        let plain = parsed.decrypt(&s.key, &s.cert).map_err(|e| {
            SmimeError::SelfCheck(format!("own EnvelopedData does not decrypt: {e}"))
        })?;
        let got: [u8; 32] = sha2::Sha256::digest(&plain).into();
        if digest != Some(got) {
            return Err(SmimeError::SelfCheck(
                "own EnvelopedData decrypts to different content".into(),
            ));
        }
    }
    Ok(())
}

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
    let recipient_infos = recipient_infos(recipients, key)?;
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
    let mut out = Vec::with_capacity((total + 16).max(mime::base64_lines_len(total)) + room);
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
    let mut c = Crypter::new(
        openssl::symm::Cipher::aes_256_cbc(),
        Mode::Encrypt,
        key,
        Some(iv),
    )
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

/// The `recipientInfos` SET: for each recipient, its IssuerAndSerialNumber and the
/// content `key` wrapped with its RSA public key (PKCS#1 v1.5).
fn recipient_infos(recipients: &[&X509], key: &[u8; 32]) -> Result<Vec<u8>, SmimeError> {
    let rsa_alg = der::tlv(der::SEQUENCE, &[oid::RSA_ENCRYPTION, &[der::NULL, 0]]);
    let mut infos = Vec::with_capacity(recipients.len());
    for cert in recipients {
        let cert_der = cert
            .to_der()
            .map_err(crypto("reading a recipient certificate"))?;
        let rid = der::issuer_and_serial(&cert_der)
            .ok_or_else(|| SmimeError::SelfCheck("recipient certificate does not parse".into()))?;
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
    Ok(der::tlv(der::SET, &info_refs))
}
