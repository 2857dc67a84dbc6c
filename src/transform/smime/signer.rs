//! Loading one `[[smime.signer]]`: its certificate, its private key and chain, checked
//! once at load.
//!
//! Its one job: turn a [`SignerConfig`] into a ready [`Signer`]. It never signs a
//! message (that is `sign`).
//!
//! Invariants: a private key is read only through [`crate::secret::read_secret_file`]
//! (which refuses group/world-readable files); a signer is only built when the key is
//! RSA of at least 2048 bits or EC on P-256/P-384 and belongs to the certificate;
//! problems that do not stop signing (expiry within 30 days, key usage) become warnings,
//! and [`Signer::usable_now`] is checked again before every signature.

use std::path::Path;

use openssl::pkey::{Id, PKey, Private};
use openssl::x509::X509;

use super::sign::SignTemplate;
use super::{resolve, SignerConfig, SignerInfo, SmimeError};
use crate::transform::certstore::{self, Purpose, Unusable};

pub(super) struct Signer {
    /// Sender globs, lower case.
    pub(super) senders: Vec<String>,
    pub(super) cert: X509,
    pub(super) key: PKey<Private>,
    /// The certificate's public key, for the self-check of each signature.
    pub(super) public: PKey<openssl::pkey::Public>,
    /// The certificate as DER, for the self-check (is it carried in the signature?).
    pub(super) cert_der: Vec<u8>,
    /// The parts of a SignedData that are the same for every message, taken from one
    /// signature OpenSSL made at load (certificate chain, algorithms, SMIMECapabilities).
    pub(super) template: SignTemplate,
    pub(super) opaque: bool,
    pub(super) info: SignerInfo,
    /// Problems found at load that do not stop signing (expiry soon, key usage).
    pub(super) warnings: Vec<String>,
}

impl Signer {
    /// The purpose and key checks of load, and the validity dates as of now.
    pub(super) fn usable_now(&self) -> Result<(), Unusable> {
        certstore::static_checks(&self.cert, Purpose::Sign)?;
        certstore::check_dates(&self.cert)
    }
}

/// Loads one `[[smime.signer]]`: its certificate, its key (which must belong to it),
/// its chain, and the signature template made once from them.
pub(super) fn load_signer(sc: &SignerConfig, base: &Path) -> Result<Signer, SmimeError> {
    let cert_path = resolve(base, &sc.cert);
    let cert = certstore::read_certs(&cert_path)?
        .into_iter()
        .next()
        .ok_or_else(|| SmimeError::Signer {
            path: cert_path.clone(),
            why: "no certificate in file".into(),
        })?;
    let key_path = resolve(base, &sc.key_file);
    let key = read_key(&key_path)?;
    let matches = cert
        .public_key()
        .map(|p| p.public_eq(&key))
        .unwrap_or(false);
    if !matches {
        return Err(SmimeError::Signer {
            path: key_path,
            why: format!("key does not belong to certificate {}", cert_path.display()),
        });
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
    let warnings = load_warnings(&cert, &cert_path, &stored);
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

/// Reads a signing key through [`crate::secret::read_secret_file`] and accepts only
/// RSA of at least 2048 bits or EC on P-256/P-384.
fn read_key(key_path: &Path) -> Result<PKey<Private>, SmimeError> {
    let key_bytes = crate::secret::read_secret_file(key_path)?;
    let key = PKey::private_key_from_pem(&key_bytes)
        .or_else(|_| PKey::private_key_from_der(&key_bytes))
        .map_err(|_| SmimeError::Signer {
            path: key_path.to_path_buf(),
            why: "not a PEM or DER private key (encrypted keys are not supported)".into(),
        })?;
    let signer_err = |why: String| SmimeError::Signer {
        path: key_path.to_path_buf(),
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
    Ok(key)
}

/// What does not stop signing but `sealgate check` should say: the certificate is not
/// usable now (it is checked again before each signature), or expires within 30 days.
fn load_warnings(cert: &X509, cert_path: &Path, stored: &certstore::StoredCert) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Err(why) = stored.check_now() {
        warnings.push(format!(
            "{}: signing certificate: {why}",
            cert_path.display()
        ));
    } else if let v @ crate::validity::Validity::ExpiresSoon { .. } =
        crate::validity::of(cert, crate::validity::WARN_DAYS)
    {
        // The same wording as `check` and `doctor` use for any certificate.
        warnings.push(format!("{}: signing certificate {v}", cert_path.display()));
    }
    warnings
}

/// A fresh RSA key and a self-signed certificate for `signer@example.com` (SAN e-mail),
/// valid from now for `days` days.
#[cfg(test)]
pub(super) fn self_signed(days: u32) -> (PKey<openssl::pkey::Private>, X509) {
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
    b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(days).unwrap())
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
    (key, b.build())
}

/// A signer with a fresh self-signed RSA certificate, built as [`load_signer`] builds it.
#[cfg(test)]
pub(super) fn test_signer(opaque: bool) -> Signer {
    let (key, cert) = self_signed(30);
    Signer {
        senders: vec!["*".into()],
        template: SignTemplate::from_openssl(&cert, &key, &[]).unwrap(),
        public: cert.public_key().unwrap(),
        cert_der: cert.to_der().unwrap(),
        info: SignerInfo {
            cert_path: std::path::PathBuf::new(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signing_certificate_near_its_end_is_warned_about_in_the_shared_wording() {
        let path = Path::new("signer.pem");
        let warn = |cert: &X509| {
            let stored = certstore::stored(path.to_path_buf(), cert.clone(), Purpose::Sign);
            load_warnings(cert, path, &stored)
        };
        let (_, soon) = self_signed(10);
        // 10 whole days, or 9 when a second ticked between making and checking it.
        let said = warn(&soon);
        let expected = |days| {
            format!(
                "signer.pem: signing certificate expires in {days} days ({})",
                soon.not_after()
            )
        };
        assert!(
            said == vec![expected(10)] || said == vec![expected(9)],
            "{said:?}"
        );
        assert!(warn(&self_signed(365).1).is_empty());
    }
}
