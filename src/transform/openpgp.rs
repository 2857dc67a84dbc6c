//! OpenPGP signing and encryption of one message as PGP/MIME (RFC 3156), with keys from
//! a keyring of exported certificates, on top of Sequoia (`sequoia-openpgp`).
//!
//! Its one job: take a canonical (CRLF) message and return it `multipart/signed`
//! (detached signature over the first part), `multipart/encrypted` (the full inner MIME
//! entity, signed inside when asked: one OpenPGP message, as GnuPG and Thunderbird
//! write it), self-checked. Outer header fields stay outside, as for S/MIME.
//!
//! Invariants:
//! - packets are written and parsed by Sequoia only; this module writes MIME around them;
//! - key validity is Sequoia's `StandardPolicy` at the time of use: a certificate that is
//!   revoked (the certificate, not only a subkey), expired, has no live encryption
//!   subkey, or whose binding signatures the policy rejects (SHA-1 after its cut-off) is
//!   never encrypted to, and [`OpenPgp::key_for`] says why;
//! - nothing leaves this module unless our own signature verified (parsed back from the
//!   bytes we emit, checked with the signer's public key against the one SHA-256 of the
//!   signed bytes that it was made from) and our own encrypted output parsed with PKESK
//!   recipients that are exactly the key IDs we meant; otherwise
//!   [`OpenPgpError::SelfCheck`] (`451 4.7.0`);
//! - a secret key is read only through [`crate::secret::read_secret_file`] (0600);
//! - a message that asks for encryption is never returned unencrypted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use openpgp::cert::prelude::*;
use openpgp::crypto::hash::Context as HashContext;
use openpgp::crypto::{KeyPair, Password};
use openpgp::packet::signature::SignatureBuilder;
use openpgp::packet::{OnePassSig, Signature, Tag};
use openpgp::parse::{PacketParser, PacketParserBuilder, PacketParserResult, Parse};
use openpgp::policy::{HashAlgoSecurity, Policy, StandardPolicy};
use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message, Recipient};
use openpgp::serialize::Serialize;
use openpgp::types::{HashAlgorithm, RevocationStatus, SignatureType};
use openpgp::{armor, Cert, KeyID, Packet};
use sequoia_openpgp as openpgp;
use serde::Deserialize;

use crate::glob::glob_match;

use crate::message::mime;

/// `[[openpgp.signer]]`: who signs mail from which senders.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgpSignerConfig {
    /// Globs on the envelope sender (`*@example.com`); the first signer that matches wins.
    pub senders: Vec<String>,
    /// The secret key, as `gpg --export-secret-keys` writes it (armored or binary); mode 0600.
    pub key_file: PathBuf,
    /// A file (mode 0600) whose first line is the key's passphrase.
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
    /// An environment variable holding the key's passphrase.
    #[serde(default)]
    pub passphrase_env: Option<String>,
}

/// `[openpgp]` in sealgate.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenPgpConfig {
    /// A directory of files, or one file, as `gpg --export` writes them (armored or
    /// binary, many certificates per file); found by every User ID address.
    #[serde(default = "default_keyring")]
    pub keyring: PathBuf,
    /// Also encrypt to the signer's own key, so the sender can read the message back.
    #[serde(default)]
    pub encrypt_to_self: bool,
    /// RFC 9788 header protection for OpenPGP messages; unset follows `[smime] header_protection`.
    #[serde(default)]
    pub header_protection: Option<bool>,
    /// Signing identities.
    #[serde(default)]
    pub signer: Vec<PgpSignerConfig>,
}

fn default_keyring() -> PathBuf {
    PathBuf::from("certs/openpgp")
}

impl Default for OpenPgpConfig {
    fn default() -> Self {
        OpenPgpConfig {
            keyring: default_keyring(),
            encrypt_to_self: false,
            header_protection: None,
            signer: Vec::new(),
        }
    }
}

/// Why OpenPGP could not be set up or applied.
#[derive(Debug, thiserror::Error)]
pub enum OpenPgpError {
    #[error("{path}: {why}")]
    Keyring { path: PathBuf, why: String },
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    #[error("{path}: {why}")]
    Signer { path: PathBuf, why: String },
    #[error("no [[openpgp.signer]] matches sender {0}")]
    NoSigner(String),
    #[error("{0}")]
    NoKey(#[from] NoKey),
    #[error("OpenPGP failed while {doing}: {why}")]
    Crypto { doing: &'static str, why: String },
    #[error("self-check failed: {0}")]
    SelfCheck(String),
}

impl OpenPgpError {
    /// True when retrying later cannot help (configuration or key problems).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            OpenPgpError::NoSigner(_) | OpenPgpError::NoKey(_) | OpenPgpError::Signer { .. }
        )
    }
}

fn crypto(doing: &'static str) -> impl FnOnce(anyhow::Error) -> OpenPgpError {
    move |e| OpenPgpError::Crypto {
        doing,
        why: e.to_string(),
    }
}

fn io_crypto(doing: &'static str) -> impl FnOnce(std::io::Error) -> OpenPgpError {
    move |e| OpenPgpError::Crypto {
        doing,
        why: e.to_string(),
    }
}

/// No usable OpenPGP key for an address, and why (each key found and its flaw).
#[derive(Debug, Clone, thiserror::Error)]
#[error("no usable OpenPGP key for {addr}: {why}")]
pub struct NoKey {
    /// The address as looked up.
    pub addr: String,
    /// In words, naming each key found and why it cannot be used.
    pub why: String,
}

/// The key chosen for an address (for `explain`, audit and the pipeline).
#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// The keyring file it came from (the first, when merged from several).
    pub path: PathBuf,
    /// The certificate's (primary key's) fingerprint, hex.
    pub fingerprint: String,
    /// Fingerprints of the encryption subkeys used.
    pub subkeys: Vec<String>,
    /// The primary key's algorithm and size, e.g. `RSA3072`, `EdDSA`.
    pub algorithm: String,
    /// Other keys carrying the address that were not used, with the reason.
    pub skipped: Vec<String>,
}

/// The signer chosen for a sender (for `explain` and audit).
#[derive(Debug, Clone)]
pub struct PgpSignerInfo {
    /// The secret key file.
    pub key_file: PathBuf,
    /// The certificate fingerprint.
    pub fingerprint: String,
    /// The fingerprint of the signing (sub)key.
    pub signing_key: String,
    /// Algorithm of the signing key.
    pub algorithm: String,
}

struct PgpSigner {
    /// Sender globs, lower case.
    senders: Vec<String>,
    /// The public certificate, for verifying our own signatures.
    cert: Cert,
    /// The unlocked signing key.
    keypair: KeyPair,
    info: PgpSignerInfo,
}

/// One certificate in the keyring, duplicates merged.
struct Stored {
    cert: Cert,
    path: PathBuf,
}

/// Loaded keyring and signers; immutable after [`OpenPgp::load`], cheap to share in an `Arc`.
pub struct OpenPgp {
    certs: Vec<Stored>,
    /// Normalised address -> indices into `certs`.
    by_addr: HashMap<String, Vec<usize>>,
    signers: Vec<PgpSigner>,
    encrypt_to_self: bool,
    header_protection: bool,
    /// Files that could not be read as OpenPGP certificates (kept out).
    load_warnings: Vec<String>,
}

impl std::fmt::Debug for OpenPgp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenPgp")
            .field("certificates", &self.certs.len())
            .field("signers", &self.signers.len())
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

/// The policy every decision here is made under.
fn policy() -> StandardPolicy<'static> {
    StandardPolicy::new()
}

/// An address as the index keeps it: lower case, the domain as an A-label.
pub fn normalize_address(addr: &str) -> String {
    let addr = addr.trim().trim_start_matches('<').trim_end_matches('>');
    match addr.rsplit_once('@') {
        Some((local, domain)) => {
            let domain = crate::address::normalize_domain(domain);
            format!("{}@{domain}", local.to_lowercase())
        }
        None => addr.to_lowercase(),
    }
}

/// True for a GnuPG keybox (`pubring.kbx`): version-1 header blob with magic `KBXf` at offset 8.
fn is_keybox(bytes: &[u8]) -> bool {
    bytes.get(8..12) == Some(b"KBXf")
}

/// Describes a key's algorithm and size, e.g. `RSA3072`, `EdDSA`, `ECDSA NistP256`.
fn algorithm_of<P: openpgp::packet::key::KeyParts, R: openpgp::packet::key::KeyRole>(
    key: &openpgp::packet::Key<P, R>,
) -> String {
    use openpgp::crypto::mpi::PublicKey as P;
    let algo = key.pk_algo();
    match key.mpis() {
        P::ECDH { curve, .. } | P::EdDSA { curve, .. } | P::ECDSA { curve, .. } => {
            format!("{algo} {curve}")
        }
        m => match m.bits() {
            Some(bits) => format!("{algo}{bits}"),
            None => algo.to_string(),
        },
    }
}

impl OpenPgp {
    /// Loads the keyring and signers `cfg` names; relative paths are resolved against
    /// `base`. A keybox file or an unreadable keyring path is an error; a file that holds
    /// no certificate is kept out and reported by [`OpenPgp::warnings`]; signer problems
    /// are errors. `smime_header_protection` is the `[smime]` setting, followed when
    /// `[openpgp] header_protection` is unset.
    pub fn load(
        cfg: &OpenPgpConfig,
        base: &Path,
        smime_header_protection: bool,
    ) -> Result<OpenPgp, OpenPgpError> {
        let keyring = resolve(base, &cfg.keyring);
        let mut files = Vec::new();
        let meta = std::fs::metadata(&keyring).map_err(|e| OpenPgpError::Keyring {
            path: keyring.clone(),
            why: format!("cannot read the keyring: {e}"),
        })?;
        if meta.is_dir() {
            let rd = std::fs::read_dir(&keyring).map_err(|e| OpenPgpError::Keyring {
                path: keyring.clone(),
                why: format!("cannot list the keyring directory: {e}"),
            })?;
            for entry in rd.flatten() {
                let p = entry.path();
                let hidden = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'));
                if p.is_file() && !hidden {
                    files.push(p);
                }
            }
            files.sort();
        } else {
            files.push(keyring.clone());
        }
        let mut certs: Vec<Stored> = Vec::new();
        let mut by_fpr: HashMap<openpgp::Fingerprint, usize> = HashMap::new();
        let mut load_warnings = Vec::new();
        for path in files {
            let bytes = std::fs::read(&path).map_err(|e| OpenPgpError::Keyring {
                path: path.clone(),
                why: format!("cannot read: {e}"),
            })?;
            if is_keybox(&bytes) {
                return Err(OpenPgpError::Keyring {
                    path,
                    why: "this is a GnuPG keybox (pubring.kbx), which sealgate does not read; \
                          export the keys instead: gpg --export --armor ADDRESS > FILE.asc"
                        .into(),
                });
            }
            let parsed: Vec<Cert> = match CertParser::from_bytes(&bytes) {
                Ok(parser) => {
                    let mut v = Vec::new();
                    for c in parser {
                        match c {
                            Ok(c) => v.push(c),
                            Err(e) => load_warnings.push(format!(
                                "{}: an OpenPGP certificate in it does not parse: {e}",
                                path.display()
                            )),
                        }
                    }
                    v
                }
                Err(e) => {
                    load_warnings.push(format!(
                        "{}: not an OpenPGP keyring file: {e}",
                        path.display()
                    ));
                    continue;
                }
            };
            if parsed.is_empty() {
                load_warnings.push(format!(
                    "{}: holds no OpenPGP certificate (kept out)",
                    path.display()
                ));
            }
            for cert in parsed {
                // A secret key file in the keyring directory gives its public part only.
                let cert = cert.strip_secret_key_material();
                let fpr = cert.fingerprint();
                match by_fpr.get(&fpr) {
                    Some(&i) => {
                        if let Some(s) = certs.get_mut(i) {
                            let old = s.cert.clone();
                            s.cert = old.clone().merge_public(cert).unwrap_or(old);
                        }
                    }
                    None => {
                        by_fpr.insert(fpr, certs.len());
                        certs.push(Stored {
                            cert,
                            path: path.clone(),
                        });
                    }
                }
            }
        }
        let mut by_addr: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, s) in certs.iter().enumerate() {
            let mut seen = BTreeSet::new();
            for ua in s.cert.userids() {
                if let Ok(Some(email)) = ua.userid().email() {
                    let n = normalize_address(email);
                    if seen.insert(n.clone()) {
                        by_addr.entry(n).or_default().push(i);
                    }
                }
            }
        }
        let mut signers = Vec::new();
        for sc in &cfg.signer {
            signers.push(load_signer(sc, base)?);
        }
        Ok(OpenPgp {
            certs,
            by_addr,
            signers,
            encrypt_to_self: cfg.encrypt_to_self,
            header_protection: cfg.header_protection.unwrap_or(smime_header_protection),
            load_warnings,
        })
    }

    /// Number of certificates in the keyring (after merging duplicates).
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// True when the keyring holds no certificate.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// True when `addr` has a usable key now.
    pub fn has_key(&self, addr: &str) -> bool {
        self.key_for(addr).is_ok()
    }

    /// The key to encrypt to for `addr` (the newest usable certificate carrying the
    /// address on a valid User ID, with all of its usable encryption subkeys), or why
    /// there is none, naming each key found.
    pub fn key_for(&self, addr: &str) -> Result<KeyInfo, NoKey> {
        self.choose_key(addr).map(|(_, info)| info)
    }

    /// [`OpenPgp::key_for`] with the certificate itself.
    fn choose_key(&self, addr: &str) -> Result<(&Cert, KeyInfo), NoKey> {
        let n = normalize_address(addr);
        let Some(idx) = self.by_addr.get(&n) else {
            return Err(NoKey {
                addr: addr.to_string(),
                why: "no certificate in the keyring carries this address".into(),
            });
        };
        let mut best: Option<(std::time::SystemTime, KeyInfo, &Cert)> = None;
        let mut skipped = Vec::new();
        for s in idx.iter().filter_map(|&i| self.certs.get(i)) {
            match usable(&s.cert, Some(&n)) {
                Ok(subkeys) => {
                    let created = s.cert.primary_key().key().creation_time();
                    let info = KeyInfo {
                        path: s.path.clone(),
                        fingerprint: s.cert.fingerprint().to_hex(),
                        subkeys,
                        algorithm: algorithm_of(s.cert.primary_key().key()),
                        skipped: Vec::new(),
                    };
                    match &best {
                        Some((t, old, _)) if *t >= created => {
                            skipped.push(format!(
                                "{} ({}): an older key than {} for the same address",
                                info.fingerprint,
                                s.path.display(),
                                old.fingerprint
                            ));
                        }
                        _ => {
                            if let Some((_, old, _)) = best.take() {
                                skipped.push(format!(
                                    "{} ({}): an older key than {} for the same address",
                                    old.fingerprint,
                                    old.path.display(),
                                    info.fingerprint
                                ));
                            }
                            best = Some((created, info, &s.cert));
                        }
                    }
                }
                Err(why) => skipped.push(format!(
                    "{} ({}): {why}",
                    s.cert.fingerprint().to_hex(),
                    s.path.display()
                )),
            }
        }
        match best {
            Some((_, mut info, cert)) => {
                info.skipped = skipped;
                Ok((cert, info))
            }
            None => Err(NoKey {
                addr: addr.to_string(),
                why: format!("key {}", skipped.join("; key ")),
            }),
        }
    }

    /// The signer for an envelope sender: the first `[[openpgp.signer]]` whose globs match.
    pub fn signer_for(&self, sender: &str) -> Option<PgpSignerInfo> {
        self.signer(sender).map(|s| s.info.clone())
    }

    fn signer(&self, sender: &str) -> Option<&PgpSigner> {
        let sender = sender.trim().to_ascii_lowercase();
        self.signers
            .iter()
            .find(|s| s.senders.iter().any(|g| glob_match(g, &sender)))
    }

    /// For `sealgate check`: keyring files that hold no certificate and every
    /// certificate that cannot be encrypted to now, with the reason and fingerprint.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = self.load_warnings.clone();
        for s in &self.certs {
            match usable(&s.cert, None) {
                Err(why) => out.push(format!(
                    "{}: OpenPGP key {} cannot be used: {why}",
                    s.path.display(),
                    s.cert.fingerprint().to_hex()
                )),
                Ok(_) => {
                    if let Some(days) =
                        expires_within(&s.cert, crate::validity::WARN_DAYS.unsigned_abs())
                    {
                        out.push(format!(
                            "{}: OpenPGP key {} expires in {days} day(s)",
                            s.path.display(),
                            s.cert.fingerprint().to_hex()
                        ));
                    }
                }
            }
        }
        for sg in &self.signers {
            if let Some(days) = expires_within(&sg.cert, crate::validity::WARN_DAYS.unsigned_abs())
            {
                out.push(format!(
                    "{}: OpenPGP signing key {} expires in {days} day(s)",
                    sg.info.key_file.display(),
                    sg.info.fingerprint
                ));
            }
        }
        out
    }

    /// Applies PGP/MIME to a whole canonical (CRLF) message.
    ///
    /// `sign`: sign with the signer for `sender`. `encrypt_to`: addresses to encrypt to
    /// (each one's key from [`OpenPgp::key_for`]; plus the signer's key with
    /// `encrypt_to_self`). Returns the new message.
    pub fn protect(
        &self,
        message: &[u8],
        sender: &str,
        sign: bool,
        encrypt_to: Option<&[String]>,
    ) -> Result<Vec<u8>, OpenPgpError> {
        let encrypting = encrypt_to.is_some();
        let signer = match (sign, self.signer(sender)) {
            (true, Some(s)) => Some(s),
            (true, None) => return Err(OpenPgpError::NoSigner(sender.to_string())),
            (false, _) => None,
        };
        let (head, entity) = split_entity(message, self.header_protection, encrypting);
        match encrypt_to {
            None => match signer {
                Some(s) => self.sign_detached(s, &head, entity),
                None => {
                    let mut out = head;
                    out.extend_from_slice(&entity);
                    Ok(out)
                }
            },
            Some(addrs) => {
                let inner = match signer {
                    Some(s) => Some(sign_inline(s, &entity)?),
                    None => None,
                };
                let to_self = if self.encrypt_to_self {
                    self.signer(sender)
                } else {
                    None
                };
                let binary = self.encrypt(addrs, to_self, inner.as_deref(), &entity)?;
                drop(entity);
                drop(inner);
                // Base64 cannot contain '-', so the boundary cannot occur in the armor.
                let boundary = mime::fresh_boundary("pgp", b"");
                let mut lead = head;
                lead.extend_from_slice(
                    format!(
                        "Content-Type: multipart/encrypted;\r\n protocol=\"application/pgp-encrypted\";\r\n boundary=\"{boundary}\"\r\n\r\n\
                         This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n\
                         --{boundary}\r\n\
                         Content-Type: application/pgp-encrypted\r\n\
                         Content-Description: PGP/MIME version identification\r\n\r\n\
                         Version: 1\r\n\r\n\
                         --{boundary}\r\n\
                         Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\
                         Content-Description: OpenPGP encrypted message\r\n\
                         Content-Disposition: inline; filename=\"encrypted.asc\"\r\n\r\n\
                         -----BEGIN PGP MESSAGE-----\r\n\r\n"
                    )
                    .as_bytes(),
                );
                // ASCII armor written directly with CRLF lines of 76 characters, in the
                // ciphertext's own buffer. Without the optional CRC-24 line (RFC 9580
                // §6.1: receivers must not require it; GnuPG 2.2 and RNP read it).
                let mut out = mime::base64_lines_behind(&lead, binary);
                out.extend_from_slice(
                    format!("-----END PGP MESSAGE-----\r\n\r\n--{boundary}--\r\n").as_bytes(),
                );
                Ok(out)
            }
        }
    }

    /// `multipart/signed` with a detached signature over the 7-bit-safe entity, checked
    /// against the bytes as they sit in the output.
    fn sign_detached(
        &self,
        s: &PgpSigner,
        head: &[u8],
        entity: Vec<u8>,
    ) -> Result<Vec<u8>, OpenPgpError> {
        let entity = super::payload::to_7bit(entity);
        let boundary = mime::fresh_boundary("pgp", &entity);
        let mut out = Vec::with_capacity(head.len() + entity.len() + 2048);
        out.extend_from_slice(head);
        out.extend_from_slice(
            format!(
                "Content-Type: multipart/signed; micalg=pgp-sha256;\r\n protocol=\"application/pgp-signature\";\r\n boundary=\"{boundary}\"\r\n\r\n\
                 This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n\
                 --{boundary}\r\n"
            )
            .as_bytes(),
        );
        let start = out.len();
        out.extend_from_slice(&entity);
        let end = out.len();
        drop(entity);
        // Signed over the part as it sits in the output; the digest context is kept for
        // the self-check below.
        let Some(part) = out.get(start..end) else {
            return Err(OpenPgpError::SelfCheck(
                "own output is shorter than written".into(),
            ));
        };
        let (sig, content) = sign_data(s, part)?;
        let sig = mime::canonical_crlf(&armored_signature(sig)?).into_owned();
        out.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\n\
                 Content-Type: application/pgp-signature; name=\"signature.asc\"\r\n\
                 Content-Description: OpenPGP digital signature\r\n\
                 Content-Disposition: attachment; filename=\"signature.asc\"\r\n\r\n"
            )
            .as_bytes(),
        );
        let sig_start = out.len();
        out.extend_from_slice(&sig);
        let sig_end = out.len();
        out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        // Self-check on the emitted bytes: the signature as written (parsed back from the
        // armor) against the hash of the part as written.
        let Some(written) = out.get(sig_start..sig_end) else {
            return Err(OpenPgpError::SelfCheck(
                "own output is shorter than written".into(),
            ));
        };
        check_own_signature(s, &parse_signature(written)?, content)?;
        Ok(out)
    }

    /// Encrypts `inner` (an already signed OpenPGP message) or, without it, `entity` as
    /// literal data, to every usable encryption subkey of each address (and `to_self`).
    /// Returns the binary OpenPGP message after checking its PKESK recipients.
    fn encrypt(
        &self,
        addrs: &[String],
        to_self: Option<&PgpSigner>,
        inner: Option<&[u8]>,
        entity: &[u8],
    ) -> Result<Vec<u8>, OpenPgpError> {
        let p = policy();
        let mut certs: Vec<&Cert> = Vec::new();
        for a in addrs {
            certs.push(self.choose_key(a)?.0);
        }
        let self_cert = to_self.map(|s| &s.cert);
        let valid: Vec<ValidCert<'_>> = certs
            .iter()
            .copied()
            .chain(self_cert)
            .map(|c| c.with_policy(&p, None))
            .collect::<Result<_, _>>()
            .map_err(crypto("checking the recipient keys"))?;
        let mut recipients: Vec<Recipient<'_>> = Vec::new();
        let mut intended: BTreeSet<String> = BTreeSet::new();
        for vc in &valid {
            for ka in encryption_keys(vc) {
                intended.insert(ka.key().keyid().to_hex());
                recipients.push(ka.into());
            }
        }
        if recipients.is_empty() {
            return Err(OpenPgpError::SelfCheck(
                "no encryption subkey left to encrypt to".into(),
            ));
        }
        let room = inner.map_or(entity.len(), <[u8]>::len);
        // Room for the base64 form that replaces the ciphertext in the same buffer.
        let mut sink = Vec::with_capacity(mime::base64_lines_len(room + 1024) + 2048);
        {
            let m = Message::new(&mut sink);
            let m = Encryptor::for_recipients(m, recipients)
                .build()
                .map_err(crypto("encrypting"))?;
            match inner {
                Some(signed) => {
                    let mut m = m;
                    m.write_all(signed).map_err(io_crypto("encrypting"))?;
                    m.finalize().map_err(crypto("encrypting"))?;
                }
                None => {
                    let mut w = LiteralWriter::new(m)
                        .build()
                        .map_err(crypto("encrypting"))?;
                    w.write_all(entity).map_err(io_crypto("encrypting"))?;
                    w.finalize().map_err(crypto("encrypting"))?;
                }
            }
        }
        // Self-check: the output parses, and its PKESKs name exactly the intended keys.
        let named = pkesk_recipients(&sink)?;
        if named != intended {
            return Err(OpenPgpError::SelfCheck(format!(
                "own message is encrypted to key IDs {named:?}, expected {intended:?}"
            )));
        }
        Ok(sink)
    }
}

/// Days until the certificate expires, when that is within `days` days from now.
fn expires_within(cert: &Cert, days: u64) -> Option<u64> {
    let p = policy();
    let vc = cert.with_policy(&p, None).ok()?;
    let at = vc.primary_key().key_expiration_time()?;
    let left = at.duration_since(std::time::SystemTime::now()).ok()?;
    let d = left.as_secs() / 86_400;
    (d < days).then_some(d)
}

/// The live encryption-capable keys of a valid certificate under the policy.
fn encryption_keys<'a>(
    vc: &'a ValidCert<'a>,
) -> impl Iterator<Item = ValidErasedKeyAmalgamation<'a, openpgp::packet::key::PublicParts>> + 'a {
    vc.keys()
        .supported()
        .alive()
        .revoked(false)
        .for_transport_encryption()
        .for_storage_encryption()
}

/// Whether `cert` can be encrypted to now (for `addr`, on a valid User ID, when given):
/// the fingerprints of its usable encryption subkeys, or why not.
fn usable(cert: &Cert, addr: Option<&str>) -> Result<Vec<String>, String> {
    let p = policy();
    let vc = cert.with_policy(&p, None).map_err(|e| {
        format!("not valid under the standard policy ({e}): e.g. a SHA-1 or missing self-signature")
    })?;
    if let RevocationStatus::Revoked(_) = vc.revocation_status() {
        return Err("the certificate is revoked".into());
    }
    if let Err(e) = vc.alive() {
        return Err(format!("the certificate is expired or not yet valid ({e})"));
    }
    if let Some(addr) = addr {
        let on_valid_uid = vc.userids().any(|ua| {
            !matches!(ua.revocation_status(), RevocationStatus::Revoked(_))
                && ua
                    .userid()
                    .email()
                    .ok()
                    .flatten()
                    .is_some_and(|e| normalize_address(e) == addr)
        });
        if !on_valid_uid {
            return Err(format!(
                "the User ID with {addr} is revoked or not validly bound"
            ));
        }
    }
    let keys: Vec<String> = encryption_keys(&vc)
        .map(|ka| ka.key().fingerprint().to_hex())
        .collect();
    if keys.is_empty() {
        let any_enc = cert.keys().any(|ka| {
            ka.self_signatures().any(|s| {
                s.key_flags()
                    .is_some_and(|f| f.for_transport_encryption() || f.for_storage_encryption())
            })
        });
        return Err(if any_enc {
            "its encryption subkeys are expired, revoked or bound by signatures the standard policy rejects (e.g. SHA-1)".into()
        } else {
            "no encryption-capable subkey (a sign-only key)".into()
        });
    }
    Ok(keys)
}

fn load_signer(sc: &PgpSignerConfig, base: &Path) -> Result<PgpSigner, OpenPgpError> {
    let path = resolve(base, &sc.key_file);
    let err = |why: String| OpenPgpError::Signer {
        path: path.clone(),
        why,
    };
    let bytes = crate::secret::read_secret_file(&path)?;
    let cert =
        Cert::from_bytes(&bytes).map_err(|e| err(format!("not an OpenPGP secret key: {e}")))?;
    drop(bytes);
    let password = match (&sc.passphrase_file, &sc.passphrase_env) {
        (Some(_), Some(_)) => {
            return Err(err("set passphrase_file or passphrase_env, not both".into()))
        }
        (Some(f), None) => Some(Password::from(crate::secret::read_password_file(
            &resolve(base, f),
        )?)),
        (None, Some(v)) => Some(Password::from(crate::secret::read_password_env(v)?)),
        (None, None) => None,
    };
    let p = policy();
    let vc = cert.with_policy(&p, None).map_err(|e| {
        err(format!(
            "the key is not valid under the standard policy: {e}"
        ))
    })?;
    if let RevocationStatus::Revoked(_) = vc.revocation_status() {
        return Err(err("the certificate is revoked".into()));
    }
    vc.alive()
        .map_err(|e| err(format!("the certificate is expired: {e}")))?;
    let ka = vc
        .keys()
        .secret()
        .alive()
        .revoked(false)
        .for_signing()
        .next()
        .ok_or_else(|| err("no live signing key with secret key material".into()))?;
    let mut key = ka.key().clone();
    if !key.has_unencrypted_secret() {
        let Some(pw) = &password else {
            return Err(err(
                "the secret key is protected: set passphrase_file or passphrase_env".into(),
            ));
        };
        key = key.decrypt_secret(pw).map_err(|e| {
            err(format!(
                "cannot unlock the secret key (wrong passphrase?): {e}"
            ))
        })?;
    }
    let info = PgpSignerInfo {
        key_file: path.clone(),
        fingerprint: cert.fingerprint().to_hex(),
        signing_key: key.fingerprint().to_hex(),
        algorithm: algorithm_of(&key),
    };
    let keypair = key
        .into_keypair()
        .map_err(|e| err(format!("cannot use the signing key: {e}")))?;
    Ok(PgpSigner {
        senders: sc.senders.iter().map(|s| s.to_ascii_lowercase()).collect(),
        cert: cert.strip_secret_key_material(),
        keypair,
        info,
    })
}

/// Splits a message into the outer header (non-`Content-*` fields plus `MIME-Version`)
/// and the inner MIME entity (the `Content-*` fields and the body), with RFC 9788
/// header protection when asked. The same split as S/MIME's.
fn split_entity(message: &[u8], header_protection: bool, encrypting: bool) -> (Vec<u8>, Vec<u8>) {
    let split = mime::header_end(message);
    let (header, body) = message.split_at(split);
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
    if header_protection {
        content = super::payload::protect_headers(&content, &fields, encrypting);
        if encrypting {
            for o in outer.iter_mut() {
                if o.len() >= 8 && o[..8].eq_ignore_ascii_case(b"subject:") {
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
    let mut entity = Vec::with_capacity(content.len() + 2 + body.len());
    entity.extend_from_slice(&content);
    entity.extend_from_slice(b"\r\n");
    entity.extend_from_slice(body);
    (head, entity)
}

/// A SHA-256 signature (binary document) by `s` over `data`, and a copy of the digest
/// context over `data` taken before the signature's trailer went in: the self-check
/// verifies the signature as written against it, so the content is hashed once.
fn sign_data(s: &PgpSigner, data: &[u8]) -> Result<(Signature, HashContext), OpenPgpError> {
    let version = s.keypair.public().version();
    let mut hash = HashAlgorithm::SHA256
        .context()
        .map_err(crypto("signing"))?
        .for_signature(version);
    let mut builder = SignatureBuilder::new(SignatureType::Binary);
    if version == 6 {
        // v6 signatures are salted: the salt is hashed before the content.
        let size = HashAlgorithm::SHA256
            .salt_size()
            .map_err(crypto("signing"))?;
        let mut salt = vec![0; size];
        openpgp::crypto::random(&mut salt).map_err(crypto("signing"))?;
        hash.update(&salt);
        builder = builder.set_prefix_salt(salt).0;
    }
    hash.update(data);
    let check = hash.clone();
    let mut keypair = s.keypair.clone();
    let sig = builder
        .sign_hash(&mut keypair, hash)
        .map_err(crypto("signing"))?;
    Ok((sig, check))
}

/// The self-check of a signature of ours, as parsed back from the bytes we wrote: a
/// binary-document signature the standard policy accepts, by a signing key of the
/// signer's (public) certificate that is valid at the signature's time, and
/// cryptographically valid under that public key over `content`, the digest context of
/// exactly the signed bytes ([`sign_data`]).
fn check_own_signature(
    s: &PgpSigner,
    sig: &Signature,
    content: HashContext,
) -> Result<(), OpenPgpError> {
    let fail =
        |e: anyhow::Error| OpenPgpError::SelfCheck(format!("own signature does not verify: {e}"));
    if sig.typ() != SignatureType::Binary {
        return Err(OpenPgpError::SelfCheck(format!(
            "own signature has type {}, expected a binary-document signature",
            sig.typ()
        )));
    }
    let p = policy();
    p.signature(sig, HashAlgoSecurity::CollisionResistance)
        .map_err(fail)?;
    let vc = s
        .cert
        .with_policy(&p, sig.signature_creation_time())
        .map_err(fail)?;
    let ka = vc
        .keys()
        .key_handle(s.keypair.public().fingerprint())
        .alive()
        .revoked(false)
        .for_signing()
        .next()
        .ok_or_else(|| {
            OpenPgpError::SelfCheck(format!(
                "the signing key {} is not a live signing key of the signer's certificate",
                s.info.signing_key
            ))
        })?;
    sig.verify_hash(ka.key(), content).map_err(fail)
}

/// The one signature packet in `bytes` (armored or binary), parsed as a receiver would.
fn parse_signature(bytes: &[u8]) -> Result<Signature, OpenPgpError> {
    let fail =
        |e: anyhow::Error| OpenPgpError::SelfCheck(format!("own signature does not parse: {e}"));
    let mut ppr = PacketParser::from_bytes(bytes).map_err(fail)?;
    let mut sigs = Vec::new();
    while let PacketParserResult::Some(pp) = ppr {
        let (packet, next) = pp.next().map_err(fail)?;
        match packet {
            Packet::Signature(sig) => sigs.push(sig),
            other => {
                return Err(OpenPgpError::SelfCheck(format!(
                    "own signature holds a {} packet",
                    other.tag()
                )))
            }
        }
        ppr = next;
    }
    match (sigs.pop(), sigs.is_empty()) {
        (Some(sig), true) => Ok(sig),
        _ => Err(OpenPgpError::SelfCheck(
            "own signature is not exactly one signature packet".into(),
        )),
    }
}

/// An armored signature packet (as a detached signature is written).
fn armored_signature(sig: Signature) -> Result<Vec<u8>, OpenPgpError> {
    let mut sink = Vec::with_capacity(1024);
    let mut w =
        armor::Writer::new(&mut sink, armor::Kind::Signature).map_err(io_crypto("armoring"))?;
    Packet::Signature(sig)
        .serialize(&mut w)
        .map_err(crypto("armoring"))?;
    w.finalize().map_err(io_crypto("armoring"))?;
    Ok(sink)
}

/// A binary inline-signed OpenPGP message (one-pass signature, literal data, signature)
/// over `data`. Before it is returned it is parsed back: exactly those three packets, a
/// literal body equal to `data`, and a signature that passes [`check_own_signature`]
/// against the one hash of `data` that it was made from.
fn sign_inline(s: &PgpSigner, data: &[u8]) -> Result<Vec<u8>, OpenPgpError> {
    let (sig, content) = sign_data(s, data)?;
    let mut ops = OnePassSig::try_from(&sig).map_err(crypto("signing"))?;
    ops.set_last(true);
    let mut sink = Vec::with_capacity(data.len() + 1024);
    Packet::from(ops)
        .serialize(&mut sink)
        .map_err(crypto("signing"))?;
    {
        let mut w = LiteralWriter::new(Message::new(&mut sink))
            .build()
            .map_err(crypto("signing"))?;
        w.write_all(data).map_err(io_crypto("signing"))?;
        w.finalize().map_err(crypto("signing"))?;
    }
    Packet::Signature(sig)
        .serialize(&mut sink)
        .map_err(crypto("signing"))?;

    // Read back as a receiver would (without hashing again: `content` is that hash).
    let fail = |e: anyhow::Error| {
        OpenPgpError::SelfCheck(format!("own signed message does not parse: {e}"))
    };
    let mut tags = Vec::new();
    let mut same = false;
    let mut parsed = None;
    {
        let mut ppr = PacketParserBuilder::from_bytes(&sink[..])
            .map_err(fail)?
            .automatic_hashing(false)
            .build()
            .map_err(fail)?;
        loop {
            match ppr {
                PacketParserResult::Some(mut pp) => {
                    if let Packet::Literal(_) = pp.packet {
                        same = pp.buffer_unread_content().map_err(fail)? == data;
                    }
                    let (packet, next) = pp.next().map_err(fail)?;
                    tags.push(packet.tag());
                    if let Packet::Signature(sig) = packet {
                        parsed = Some(sig);
                    }
                    ppr = next;
                }
                PacketParserResult::EOF(eof) => {
                    eof.is_message().map_err(fail)?;
                    break;
                }
            }
        }
    }
    if tags != [Tag::OnePassSig, Tag::Literal, Tag::Signature] || !same {
        return Err(OpenPgpError::SelfCheck(format!(
            "own signed message reads back as {tags:?}{}",
            if same { "" } else { " with other content" }
        )));
    }
    let Some(parsed) = parsed else {
        return Err(OpenPgpError::SelfCheck(
            "own signed message has no signature".into(),
        ));
    };
    check_own_signature(s, &parsed, content)?;
    Ok(sink)
}

/// Parses an OpenPGP message and returns the key IDs its PKESK packets name (hex),
/// after checking that an encrypted data packet follows them.
pub fn pkesk_recipients(message: &[u8]) -> Result<BTreeSet<String>, OpenPgpError> {
    let fail =
        |e: anyhow::Error| OpenPgpError::SelfCheck(format!("own message does not parse: {e}"));
    let mut ids = BTreeSet::new();
    let mut seip = false;
    let mut ppr = PacketParser::from_bytes(message).map_err(fail)?;
    while let PacketParserResult::Some(pp) = ppr {
        match &pp.packet {
            Packet::PKESK(p) => match p.recipient() {
                Some(h) => {
                    ids.insert(KeyID::from(h).to_hex());
                }
                None => {
                    return Err(OpenPgpError::SelfCheck(
                        "own message has an anonymous recipient".into(),
                    ))
                }
            },
            Packet::SEIP(_) => {
                // The encrypted data follows the PKESKs; its body cannot be read
                // without a secret key, so the parse ends here.
                seip = true;
                break;
            }
            _ => {}
        }
        let (_, next) = pp.next().map_err(fail)?;
        ppr = next;
    }
    if !seip {
        return Err(OpenPgpError::SelfCheck(
            "own message has no encrypted data packet".into(),
        ));
    }
    Ok(ids)
}

/// True when a message is already encrypted at the top level: PGP/MIME
/// (`multipart/encrypted`) or S/MIME enveloped (`application/pkcs7-mime` that is not
/// signed-data). Such a message is passed on untouched, never wrapped twice.
pub fn is_encrypted(message: &[u8]) -> Option<&'static str> {
    let split = mime::header_end(message);
    let header = message.get(..split).unwrap_or(message);
    let ct = mime::fields(header)
        .into_iter()
        .find(|f| f.is("content-type"))
        .map(|f| f.value().to_ascii_lowercase())?;
    let ct = ct.trim();
    if ct.starts_with("multipart/encrypted") {
        return Some("multipart/encrypted");
    }
    if ct.starts_with("application/pkcs7-mime") || ct.starts_with("application/x-pkcs7-mime") {
        let params: BTreeMap<String, String> = ct
            .split(';')
            .skip(1)
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
            .collect();
        let st = params.get("smime-type").map(String::as_str);
        if !matches!(
            st,
            Some("signed-data") | Some("certs-only") | Some("compressed-data")
        ) {
            return Some("application/pkcs7-mime enveloped");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_lower_case_with_a_label_domains() {
        assert_eq!(
            normalize_address("Alice@Bücher.Example"),
            "alice@xn--bcher-kva.example"
        );
        assert_eq!(normalize_address("<Bob@X.Example>"), "bob@x.example");
    }

    #[test]
    fn keybox_magic_is_recognised() {
        let mut kbx = vec![0u8, 0, 0, 32, 1, 1, 0, 0];
        kbx.extend_from_slice(b"KBXf");
        assert!(is_keybox(&kbx));
        assert!(!is_keybox(b"-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    }

    #[test]
    fn already_encrypted_messages_are_recognised() {
        assert_eq!(
            is_encrypted(b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=x\r\n\r\n"),
            Some("multipart/encrypted")
        );
        assert!(is_encrypted(
            b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\n"
        )
        .is_some());
        assert!(is_encrypted(
            b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n\r\n"
        )
        .is_none());
        assert!(is_encrypted(b"Content-Type: multipart/signed; boundary=x\r\n\r\n").is_none());
        assert!(is_encrypted(b"Subject: x\r\n\r\nbody").is_none());
    }

    use openpgp::serialize::SerializeInto;
    use std::os::unix::fs::PermissionsExt;

    /// A keyring directory with `certs` and a signer (its own certificate) for *@example.com.
    fn load_with(dir: &Path, certs: &[&Cert], signer: &Cert, hp: bool, to_self: bool) -> OpenPgp {
        let ring = dir.join("ring");
        std::fs::create_dir_all(&ring).unwrap();
        for (i, c) in certs.iter().enumerate() {
            std::fs::write(ring.join(format!("{i}.asc")), c.armored().to_vec().unwrap()).unwrap();
        }
        let key = dir.join("signer.asc");
        std::fs::write(&key, signer.as_tsk().armored().to_vec().unwrap()).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let cfg = OpenPgpConfig {
            keyring: ring,
            encrypt_to_self: to_self,
            header_protection: Some(hp),
            signer: vec![PgpSignerConfig {
                senders: vec!["*@example.com".into()],
                key_file: key,
                passphrase_file: None,
                passphrase_env: None,
            }],
        };
        OpenPgp::load(&cfg, dir, false).unwrap()
    }

    fn cert(uid: &str) -> Cert {
        CertBuilder::general_purpose(Some(uid))
            .generate()
            .unwrap()
            .0
    }

    const MSG: &[u8] = b"From: p@example.com\r\nTo: alice@bank.example\r\nSubject: salaries\r\nContent-Type: text/plain\r\n\r\nhello\r\n";

    #[test]
    fn encrypts_to_every_usable_subkey_and_the_signer_with_encrypt_to_self() {
        let dir = tempfile::tempdir().unwrap();
        let alice = CertBuilder::general_purpose(Some("Alice <alice@bank.example>"))
            .add_transport_encryption_subkey()
            .generate()
            .unwrap()
            .0;
        let signer = cert("P <p@example.com>");
        let pgp = load_with(dir.path(), &[&alice], &signer, false, true);
        let out = pgp
            .protect(
                MSG,
                "p@example.com",
                true,
                Some(&["alice@bank.example".to_string()]),
            )
            .unwrap();
        let text = String::from_utf8_lossy(&out).to_string();
        let start = text.find("-----BEGIN PGP MESSAGE-----").unwrap();
        let end = text.find("-----END PGP MESSAGE-----").unwrap() + 25;
        let ids = pkesk_recipients(&text.as_bytes()[start..end]).unwrap();
        let p = policy();
        let mut expected = BTreeSet::new();
        for c in [&alice, &signer] {
            let vc = c.with_policy(&p, None).unwrap();
            for ka in encryption_keys(&vc) {
                expected.insert(ka.key().keyid().to_hex());
            }
        }
        assert_eq!(
            expected.len(),
            3,
            "two subkeys for alice, one for the signer"
        );
        assert_eq!(ids, expected);
    }

    #[test]
    fn a_flipped_byte_fails_the_signature_self_check() {
        let dir = tempfile::tempdir().unwrap();
        let signer = cert("P <p@example.com>");
        let pgp = load_with(dir.path(), &[], &signer, false, false);
        let s = pgp.signer("p@example.com").unwrap();
        let (sig, content) = sign_data(s, b"content\r\n").unwrap();
        let written = armored_signature(sig).unwrap();
        let sig = parse_signature(&written).unwrap();
        assert!(check_own_signature(s, &sig, content).is_ok());
        let (_, other) = sign_data(s, b"contenu\r\n").unwrap();
        let e = check_own_signature(s, &sig, other).unwrap_err();
        assert!(matches!(e, OpenPgpError::SelfCheck(_)), "{e}");
        let t = super::super::TransformError::OpenPgp(e);
        assert!(
            !t.is_permanent(),
            "a self-check failure is temporary (451 4.7.0)"
        );
    }

    #[test]
    fn the_self_check_refuses_another_keys_signature_and_the_inline_form_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let other_dir = tempfile::tempdir().unwrap();
        let pgp = load_with(dir.path(), &[], &cert("P <p@example.com>"), false, false);
        let other = load_with(
            other_dir.path(),
            &[],
            &cert("Q <q@example.com>"),
            false,
            false,
        );
        let (s, o) = (
            pgp.signer("p@example.com").unwrap(),
            other.signer("q@example.com").unwrap(),
        );
        let (sig, content) = sign_data(o, b"content\r\n").unwrap();
        let e = check_own_signature(s, &sig, content).unwrap_err();
        assert!(matches!(e, OpenPgpError::SelfCheck(_)), "{e}");
        // The inline form reads back as three packets and verifies.
        let signed = sign_inline(s, b"content\r\n").unwrap();
        let tags: Vec<Tag> = openpgp::PacketPile::from_bytes(&signed)
            .unwrap()
            .children()
            .map(|p| p.tag())
            .collect();
        assert_eq!(tags, [Tag::OnePassSig, Tag::Literal, Tag::Signature]);
    }

    #[test]
    fn a_revoked_certificate_is_not_used_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, rev) = CertBuilder::general_purpose(Some("Alice <alice@bank.example>"))
            .generate()
            .unwrap();
        let alice = alice.insert_packets(rev).unwrap().0;
        let signer = cert("P <p@example.com>");
        let pgp = load_with(dir.path(), &[&alice], &signer, false, false);
        let e = pgp.key_for("Alice@Bank.example").unwrap_err().to_string();
        assert!(
            e.contains("revoked") && e.contains(&alice.fingerprint().to_hex()),
            "{e}"
        );
        assert!(pgp.warnings().iter().any(|w| w.contains("revoked")));
    }

    #[test]
    fn check_warns_about_a_key_that_expires_soon() {
        let dir = tempfile::tempdir().unwrap();
        let soon = CertBuilder::general_purpose(Some("Soon <soon@bank.example>"))
            .set_validity_period(std::time::Duration::from_secs(10 * 86_400))
            .generate()
            .unwrap()
            .0;
        let signer = cert("P <p@example.com>");
        let pgp = load_with(dir.path(), &[&soon], &signer, false, false);
        assert!(pgp.key_for("soon@bank.example").is_ok());
        let w = pgp.warnings();
        assert!(
            w.iter().any(|l| l.contains(&soon.fingerprint().to_hex()) && l.contains("expires in 9 day")),
            "{w:?}"
        );
    }

    #[test]
    fn a_sha1_subkey_binding_made_after_the_cut_off_is_not_used() {
        use openpgp::packet::key::{Key4, SecretParts, SubordinateRole};
        use openpgp::packet::signature::SignatureBuilder;
        use openpgp::types::{Curve, KeyFlags, SignatureType};
        let dir = tempfile::tempdir().unwrap();
        let (primary, _) = CertBuilder::new()
            .set_profile(openpgp::Profile::RFC4880)
            .unwrap()
            .add_userid("Weak <weak@bank.example>")
            .generate()
            .unwrap();
        let mut signer = primary
            .primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .unwrap()
            .into_keypair()
            .unwrap();
        let sub: openpgp::packet::Key<SecretParts, SubordinateRole> =
            Key4::generate_ecc(false, Curve::Cv25519).unwrap().into();
        let builder = SignatureBuilder::new(SignatureType::SubkeyBinding)
            .set_hash_algo(HashAlgorithm::SHA1)
            .set_key_flags(
                KeyFlags::empty()
                    .set_transport_encryption()
                    .set_storage_encryption(),
            )
            .unwrap();
        let binding = sub.bind(&mut signer, &primary, builder).unwrap();
        let weak = primary
            .insert_packets(vec![Packet::from(sub.take_secret().0), binding.into()])
            .unwrap()
            .0;
        assert_eq!(weak.keys().subkeys().count(), 1);
        let other = cert("P <p@example.com>");
        let pgp = load_with(dir.path(), &[&weak], &other, false, false);
        let e = pgp.key_for("weak@bank.example").unwrap_err().to_string();
        assert!(e.contains("SHA-1"), "{e}");
    }

    #[test]
    fn a_protected_signing_key_is_unlocked_from_the_environment_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let signer = CertBuilder::general_purpose(Some("P <p@example.com>"))
            .set_password(Some("s3cret".into()))
            .generate()
            .unwrap()
            .0;
        let key = dir.path().join("signer.asc");
        std::fs::write(&key, signer.as_tsk().armored().to_vec().unwrap()).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::create_dir(dir.path().join("ring")).unwrap();
        let cfg = |env: Option<&str>| OpenPgpConfig {
            keyring: dir.path().join("ring"),
            signer: vec![PgpSignerConfig {
                senders: vec!["*@example.com".into()],
                key_file: key.clone(),
                passphrase_file: None,
                passphrase_env: env.map(str::to_string),
            }],
            ..OpenPgpConfig::default()
        };
        let e = OpenPgp::load(&cfg(None), dir.path(), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("passphrase"), "{e}");
        std::env::set_var("SEALGATE_TEST_PGP_WRONG", "nope");
        let e = OpenPgp::load(&cfg(Some("SEALGATE_TEST_PGP_WRONG")), dir.path(), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("wrong passphrase"), "{e}");
        std::env::set_var("SEALGATE_TEST_PGP_RIGHT", "s3cret");
        let pgp = OpenPgp::load(&cfg(Some("SEALGATE_TEST_PGP_RIGHT")), dir.path(), false).unwrap();
        assert!(pgp.protect(MSG, "p@example.com", true, None).is_ok());
    }

    #[test]
    fn duplicates_merge_and_newest_usable_key_wins() {
        let dir = tempfile::tempdir().unwrap();
        let old = cert("Alice <alice@bank.example>");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let new = cert("Alice (new) <alice@bank.example>");
        let signer = cert("P <p@example.com>");
        let pgp = load_with(dir.path(), &[&old, &new, &old], &signer, false, false);
        assert_eq!(pgp.len(), 2, "the duplicate is merged");
        let k = pgp.key_for("alice@bank.example").unwrap();
        assert_eq!(k.fingerprint, new.fingerprint().to_hex());
        assert!(
            k.skipped[0].contains(&old.fingerprint().to_hex()),
            "{:?}",
            k.skipped
        );
    }

    #[test]
    fn header_protection_puts_the_subject_inside() {
        let dir = tempfile::tempdir().unwrap();
        let signer = cert("P <p@example.com>");
        let pgp = load_with(dir.path(), &[], &signer, true, false);
        let out = pgp.protect(MSG, "p@example.com", true, None).unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("hp=\"clear\""), "{text}");
        let signed_part = &text[text.find("hp=").unwrap()..];
        assert!(signed_part.contains("Subject: salaries"), "{text}");
        let (head, _) = split_entity(MSG, true, true);
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.contains("Subject: ...") && !head.contains("salaries"),
            "{head}"
        );
    }
}
