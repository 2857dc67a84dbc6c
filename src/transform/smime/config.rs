//! The `[smime]` section of sealgate.toml: its types, defaults and doc sentences.
//!
//! Its one job: describe what the operator may configure. It never reads a file, a key
//! or a certificate (that is [`super::Smime::load`]); every field has a default or is
//! required, and unknown keys are refused (`deny_unknown_fields`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

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
