//! CMS SignedData (RFC 5652 5) for one MIME entity, as `multipart/signed` (RFC 8551
//! 3.5) or opaque `application/pkcs7-mime; smime-type=signed-data`.
//!
//! Its one job: the signing step of [`super::Smime::protect`], and the self-check of
//! what it signed. It never loads keys (that is `signer`) and never encrypts.
//!
//! Invariants:
//! - nothing is returned unless our own signature, read back from the emitted base64
//!   and parsed on its own, carries a SHA-256 digest equal to that of the content bytes
//!   as they sit in the output, and verifies with the certificate's public key over its
//!   signed attributes;
//! - per message, signing costs one SHA-256 and one private-key operation: what is the
//!   same for every signature comes from one `CMS_sign` at load ([`SignTemplate`]).

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::X509;
use sha2::Digest;

use super::signer::Signer;
use super::{crypto, der, oid, SmimeError};
use crate::message::mime;

/// Signs `entity` (a canonical MIME entity, consumed) and returns `prefix` followed by
/// the new entity: `multipart/signed` or opaque signed-data, after checking the
/// signature as it sits in the emitted bytes.
///
/// The content is hashed once, in place in the output buffer, and that digest goes into
/// the signed attributes; the self-check then reads the signature back from the emitted
/// base64, parses it on its own, and verifies it with the certificate's public key.
pub(super) fn sign_entity(
    s: &Signer,
    entity: Vec<u8>,
    prefix: &[u8],
) -> Result<Vec<u8>, SmimeError> {
    if s.opaque {
        sign_opaque(s, entity, prefix)
    } else {
        sign_detached(s, entity, prefix)
    }
}

/// Opaque signed-data: the content travels inside the DER, and the self-check hashes
/// the content found there again.
fn sign_opaque(s: &Signer, entity: Vec<u8>, prefix: &[u8]) -> Result<Vec<u8>, SmimeError> {
    let digest: [u8; 32] = sha2::Sha256::digest(&entity).into();
    let der = s.template.signed_data(s, &digest, Some(&entity))?;
    drop(entity);
    check_signed_data(s, &der, None).map_err(SmimeError::SelfCheck)?;
    let part_header =
        b"Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\n\
Content-Disposition: attachment; filename=smime.p7m\r\n\
Content-Transfer-Encoding: base64\r\n\r\n";
    let lead = [prefix, &part_header[..]].concat();
    Ok(mime::base64_lines_behind(&lead, der))
}

/// `multipart/signed`: the entity as its first part, byte for byte, and the detached
/// signature over those bytes as its second.
fn sign_detached(s: &Signer, mut entity: Vec<u8>, prefix: &[u8]) -> Result<Vec<u8>, SmimeError> {
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
pub(super) struct SignTemplate {
    /// SignedData `version` (INTEGER).
    version: Vec<u8>,
    /// SignedData `digestAlgorithms` (SET).
    digest_algorithms: Vec<u8>,
    /// SignedData `certificates` (`[0] IMPLICIT SET OF Certificate`): signer and chain.
    pub(super) certificates: Vec<u8>,
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
    pub(super) fn from_openssl(
        cert: &X509,
        key: &PKey<Private>,
        chain: &[X509],
    ) -> Result<Self, String> {
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
    pub(super) fn signed_data(
        &self,
        s: &Signer,
        digest: &[u8; 32],
        content: Option<&[u8]>,
    ) -> Result<Vec<u8>, SmimeError> {
        let signer_infos = self.signer_infos(s, digest)?;
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

    /// The `signerInfos` SET: signed attributes (content type, signing time now, the
    /// message `digest`, SMIMECapabilities) and `s`'s signature over them.
    fn signer_infos(&self, s: &Signer, digest: &[u8; 32]) -> Result<Vec<u8>, SmimeError> {
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
        Ok(der::tlv(der::SET, &[&signer_info]))
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
    let ci = top.take(der::SEQUENCE)?;
    if !top.is_empty() {
        return None;
    }
    let mut ci = der::Reader::new(ci.value);
    if ci.take(der::OID)?.raw != oid::SIGNED_DATA {
        return None;
    }
    let explicit = ci.take(der::CTX0)?;
    let mut sd = der::Reader::new(der::Reader::new(explicit.value).take(der::SEQUENCE)?.value);
    let version = sd.take(der::INTEGER)?.raw;
    let digest_algorithms = sd.take(der::SET)?.raw;
    let mut encap = der::Reader::new(sd.take(der::SEQUENCE)?.value);
    let content_type = encap.take(der::OID)?.raw;
    let content = match encap.next() {
        Some(e) if e.tag == der::CTX0 => {
            let mut inner = der::Reader::new(e.value);
            Some(inner.take(der::OCTET_STRING)?.value)
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
    let signer_info = infos.take(der::SEQUENCE)?.raw;
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
    let mut si = der::Reader::new(der::Reader::new(d).take(der::SEQUENCE)?.value);
    let parts = SignerInfoParts {
        version: si.take(der::INTEGER)?.raw,
        sid: si.next()?.raw,
        digest_algorithm: si.take(der::SEQUENCE)?.raw,
        signed_attrs: si.take(der::CTX0)?.raw,
        signature_algorithm: si.take(der::SEQUENCE)?.raw,
        signature: si.take(der::OCTET_STRING)?.value,
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
        let attr = r.take(der::SEQUENCE)?;
        let mut a = der::Reader::new(attr.value);
        let oid = a.take(der::OID)?.raw;
        let values = a.take(der::SET)?.value;
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
    check_attributes(si.signed_attrs, &wanted)?;
    verify_signature(s, si.signed_attrs, si.signature)
}

/// The signed attributes we always add are there: content type `data`, a signing
/// time, SMIMECapabilities, and a message digest equal to `wanted`.
fn check_attributes(signed_attrs: &[u8], wanted: &[u8; 32]) -> Result<(), String> {
    let (mut content_type, mut time, mut caps, mut message_digest) = (false, false, false, false);
    for (oid, values, _) in attributes(signed_attrs) {
        match oid {
            o if o == oid::CONTENT_TYPE => content_type = values == oid::DATA,
            o if o == oid::SIGNING_TIME => time = true,
            o if o == oid::SMIME_CAPABILITIES => caps = true,
            o if o == oid::MESSAGE_DIGEST => {
                let mut v = der::Reader::new(values);
                message_digest = v
                    .take(der::OCTET_STRING)
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
    Ok(())
}

/// The signature over the signed attributes verifies with the signing certificate's
/// public key.
fn verify_signature(s: &Signer, signed_attrs: &[u8], signature: &[u8]) -> Result<(), String> {
    // What was signed is the SET OF attributes, not their [0] IMPLICIT form.
    let mut signed = signed_attrs.to_vec();
    // `signer_info_parts` parsed it as a TLV, so it is not empty; refused if it were.
    *signed
        .first_mut()
        .ok_or("own signature has no signed attributes")? = der::SET;
    let mut verifier =
        openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &s.public)
            .map_err(|e| e.to_string())?;
    verifier.update(&signed).map_err(|e| e.to_string())?;
    match verifier.verify(signature) {
        Ok(true) => Ok(()),
        Ok(false) => Err("own signature does not verify".into()),
        Err(e) => Err(format!("own signature does not verify: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::smime::signer::test_signer;

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
}
