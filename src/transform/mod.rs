//! Message transforms, applied in a fixed order: [`seven_bit`] (once per message, at
//! receipt and before policy: long lines and 8-bit data converted, or the message
//! refused at DATA), then per copy attachments, sign, encrypt (S/MIME or OpenPGP,
//! chosen per recipient), then DKIM (which the caller applies to
//! [`Outgoing::message`]).
//!
//! Two steps:
//! - [`plan_with_keys`] ([`plan`] for S/MIME alone) picks the kind per recipient (the
//!   first in the order with a usable key, [`Keys::choose`]), passes mail that is already
//!   encrypted untouched, resolves certificates per recipient, applies the `if_no_certificate`
//!   fallbacks and groups recipients whose effective actions are identical (one
//!   outgoing copy each). A recipient whose rule requires encryption, with fallback
//!   `reject` and no usable certificate, is refused there: plaintext never leaves
//!   silently. [`separate_hidden_recipients`] then gives each Bcc recipient of an
//!   encrypted copy a copy of its own.
//! - [`apply_message`] ([`apply_with_keys`], [`apply`] for bytes) builds one outgoing copy: attachments (strip or
//!   zip) -> sign -> encrypt, each S/MIME or OpenPGP step self-checked before anything
//!   is returned.
//!
//! Invariants: a plan whose actions say `encrypt` yields an encrypted message or an
//! error, never plaintext; notes are audit-safe (file names, sizes, hashes, certificate
//! fingerprints; never a password or message content).

pub mod attachments;
pub mod certstore;
pub mod dkim;
pub mod openpgp;
pub mod payload;
pub mod seven_bit;
pub mod smime;

use std::borrow::Cow;

use crate::message::{mime, Headers, Message};
use crate::policy::verdict::{Actions, Attachments, Crypto, CryptoKind};
use openpgp::{OpenPgp, OpenPgpError};
use smime::{NoCertificate, Smime, SmimeError};

/// The key material and preference order that [`plan_with_keys`] and
/// [`apply_with_keys`] choose from: S/MIME, OpenPGP, and `[policy] encryption`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Keys<'a> {
    /// `[smime]`, when configured.
    pub smime: Option<&'a Smime>,
    /// `[openpgp]`, when configured.
    pub openpgp: Option<&'a OpenPgp>,
    /// `[policy] encryption`; empty means [`CryptoKind::DEFAULT_ORDER`].
    pub order: &'a [CryptoKind],
}

impl<'a> Keys<'a> {
    /// S/MIME only, in the default order (what [`plan`] and [`apply`] use).
    pub fn smime_only(smime: Option<&'a Smime>) -> Keys<'a> {
        Keys {
            smime,
            openpgp: None,
            order: &[],
        }
    }

    /// The order for these actions: the rule's own, else `[policy]`'s, else the default.
    pub fn order_for<'b>(&'b self, a: &'b Actions) -> &'b [CryptoKind] {
        if !a.order().is_empty() {
            a.order()
        } else if !self.order.is_empty() {
            self.order
        } else {
            &CryptoKind::DEFAULT_ORDER
        }
    }

    /// The first kind in `a`'s order with a usable key for `rcpt`, or why there is
    /// none, naming each kind's reason.
    pub fn choose(&self, rcpt: &str, a: &Actions) -> Result<CryptoKind, String> {
        let mut why = Vec::new();
        for &k in self.order_for(a) {
            match k {
                CryptoKind::Smime => match self.smime {
                    Some(s) => match s.certificate_for(rcpt) {
                        Ok(_) => return Ok(k),
                        Err(e) => why.push(format!("S/MIME: {e}")),
                    },
                    None => why.push("S/MIME is not configured ([smime] missing)".into()),
                },
                CryptoKind::Openpgp => match self.openpgp {
                    Some(p) => match p.key_for(rcpt) {
                        Ok(_) => return Ok(k),
                        Err(e) => why.push(format!("OpenPGP: {e}")),
                    },
                    None => why.push("OpenPGP is not configured ([openpgp] missing)".into()),
                },
            }
        }
        Err(why.join("; "))
    }

    /// True when `rcpt` has a usable key of any kind in the `[policy]` order (RCPT time,
    /// before a rule's own order is known).
    pub fn has_key(&self, rcpt: &str) -> bool {
        self.choose(rcpt, &Actions::default()).is_ok()
    }

    /// The kind that signs a copy that is signed but not encrypted: the first kind in
    /// the order with a signer for `sender`; else the first configured kind (whose
    /// missing signer then refuses the message).
    pub fn sign_kind(&self, sender: &str, a: &Actions) -> Option<CryptoKind> {
        let order = self.order_for(a);
        let has_signer = |k: CryptoKind| match k {
            CryptoKind::Smime => self.smime.is_some_and(|s| s.signer_for(sender).is_some()),
            CryptoKind::Openpgp => self.openpgp.is_some_and(|p| p.signer_for(sender).is_some()),
        };
        let configured = |k: CryptoKind| match k {
            CryptoKind::Smime => self.smime.is_some(),
            CryptoKind::Openpgp => self.openpgp.is_some(),
        };
        order
            .iter()
            .copied()
            .find(|&k| has_signer(k))
            .or_else(|| order.iter().copied().find(|&k| configured(k)))
    }
}

/// One outgoing copy: the recipients that share it and what is done to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The effective actions: from [`plan_with_keys`], encryption has its kind chosen
    /// ([`Crypto::EncryptWith`]) or its fallback applied, never [`Crypto::Encrypt`].
    pub actions: Actions,
    /// Recipients sharing this copy (all encrypted to in one EnvelopedData).
    pub recipients: Vec<String>,
    /// Audit-safe notes on how the plan came about (fallbacks taken).
    pub notes: Vec<String>,
}

/// An extra message caused by a transform, e.g. the password for a zip.
#[derive(Debug, Clone)]
pub struct ExtraMessage {
    /// Envelope sender.
    pub from: String,
    /// Envelope recipients.
    pub to: Vec<String>,
    /// The message, CRLF line ends.
    pub message: Vec<u8>,
}

/// The result of [`apply`].
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The transformed message (before DKIM), CRLF line ends.
    pub message: Vec<u8>,
    /// Further messages to queue with it (the zip password mail).
    pub extra: Vec<ExtraMessage>,
    /// Audit-safe notes: attachment names, sizes, SHA-256; certificates used. Never the password.
    pub notes: Vec<String>,
}

/// Why a copy could not be transformed.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("policy requires S/MIME but [smime] is not configured")]
    SmimeNotConfigured,
    #[error("policy requires encryption: {0}")]
    NoCertificate(#[from] NoCertificate),
    #[error("S/MIME: {0}")]
    Smime(#[from] SmimeError),
    #[error("policy requires OpenPGP but [openpgp] is not configured")]
    OpenPgpNotConfigured,
    #[error("OpenPGP: {0}")]
    OpenPgp(#[from] OpenPgpError),
    #[error("attachments: {0}")]
    Attachments(#[from] attachments::AttachmentError),
    #[error("cannot build the password message: {0}")]
    PasswordMessage(String),
}

impl TransformError {
    /// True when retrying cannot help (configuration, missing signer or certificate):
    /// the session refuses with `550 5.7.1` naming the error. False for failures that
    /// may pass later, such as a failed self-check: the session answers `451 4.7.0`.
    pub fn is_permanent(&self) -> bool {
        match self {
            TransformError::SmimeNotConfigured
            | TransformError::OpenPgpNotConfigured
            | TransformError::NoCertificate(_) => true,
            TransformError::Smime(e) => e.is_permanent(),
            TransformError::OpenPgp(e) => e.is_permanent(),
            TransformError::Attachments(_) | TransformError::PasswordMessage(_) => false,
        }
    }
}

/// Resolves certificates for each `(recipient, actions)`, applies the
/// `if_no_certificate` fallbacks and groups recipients with identical effective
/// actions. Refused recipients come back as `(recipient, reason)`.
pub fn plan(
    recipients: &[(String, Actions)],
    smime: Option<&Smime>,
) -> (Vec<Plan>, Vec<(String, String)>) {
    plan_with_keys(recipients, &Keys::smime_only(smime), b"")
}

/// [`plan`] with S/MIME and OpenPGP: per recipient, `encrypt` takes the first kind in
/// the order (the rule's own, else `[policy] encryption`) with a usable key, and
/// `if_no_certificate` applies when no kind has one. A `message` that is already
/// encrypted (see [`openpgp::is_encrypted`]) is passed on untouched: never signed,
/// stripped or encrypted again.
pub fn plan_with_keys(
    recipients: &[(String, Actions)],
    keys: &Keys<'_>,
    message: &[u8],
) -> (Vec<Plan>, Vec<(String, String)>) {
    let mut plans: Vec<Plan> = Vec::new();
    let mut refused = Vec::new();
    let encrypted = openpgp::is_encrypted(message);
    for (rcpt, actions) in recipients {
        let mut eff = actions.clone();
        let mut notes = Vec::new();
        if let Some(what) = encrypted {
            if !eff.is_pass_through() {
                notes.push(format!(
                    "{rcpt}: already encrypted ({what}): passed on untouched, not signed, stripped or encrypted again"
                ));
            }
            eff = Actions::default();
        }
        if let Crypto::Encrypt {
            sign,
            order,
            if_no_key,
        } = &eff.crypto
        {
            let sign = *sign;
            eff.crypto = match keys.choose(rcpt, &eff) {
                Ok(kind) => Crypto::EncryptWith { sign, kind },
                Err(why) => {
                    let Some(instead) = if_no_key.instead() else {
                        refused.push((rcpt.clone(), format!("encryption required but {why}")));
                        continue;
                    };
                    notes.push(format!(
                        "{rcpt}: not encrypted ({why}); fallback {}",
                        if_no_key.fallback().name()
                    ));
                    eff.attachments = std::mem::take(&mut eff.attachments).and(instead);
                    if sign {
                        Crypto::Sign {
                            order: order.clone(),
                        }
                    } else {
                        Crypto::None
                    }
                }
            };
        }
        match plans.iter_mut().find(|p| p.actions == eff) {
            Some(p) => {
                p.recipients.push(rcpt.clone());
                p.notes.extend(notes);
            }
            None => plans.push(Plan {
                actions: eff,
                recipients: vec![rcpt.clone()],
                notes,
            }),
        }
    }
    (plans, refused)
}

/// Gives every recipient of an encrypting plan that the message's To and Cc do not name
/// (a Bcc recipient) a copy of its own. An EnvelopedData lists one RecipientInfo per
/// certificate (issuer and serial number, or key identifier) in the clear, so a shared
/// copy would show each Bcc recipient to all the others; mail clients that encrypt send
/// Bcc copies separately for the same reason. Plans that do not encrypt are unchanged.
pub fn separate_hidden_recipients(plans: Vec<Plan>, headers: &Headers<'_>) -> Vec<Plan> {
    if !plans
        .iter()
        .any(|p| p.actions.encrypts() && p.recipients.len() > 1)
    {
        return plans;
    }
    let named = headers.recipients();
    let mut out = Vec::with_capacity(plans.len());
    for mut plan in plans {
        if !plan.actions.encrypts() || plan.recipients.len() < 2 {
            out.push(plan);
            continue;
        }
        let (shown, hidden): (Vec<String>, Vec<String>) = std::mem::take(&mut plan.recipients)
            .into_iter()
            .partition(|r| named.contains(&r.to_ascii_lowercase()));
        let mut own = Vec::with_capacity(hidden.len());
        for rcpt in hidden {
            own.push(Plan {
                actions: plan.actions.clone(),
                notes: vec![format!(
                    "{rcpt}: encrypted in a copy of its own (not named in To or Cc)"
                )],
                recipients: vec![rcpt],
            });
        }
        if shown.is_empty() {
            // All hidden: the first one keeps the plan's own notes.
            if let Some(first) = own.first_mut() {
                first.notes.splice(0..0, plan.notes);
            }
        } else {
            plan.recipients = shown;
            out.push(plan);
        }
        out.extend(own);
    }
    out
}

/// The addresses of each top-level `From` field of `message` (any line ends), field by
/// field ([`crate::message::Headers::from_fields`]): for a message outside the pipeline,
/// such as the one `sealgate sendmail` reads.
pub fn header_from_fields(message: &[u8]) -> Vec<Vec<String>> {
    Headers::from_fields_of(message)
}

/// Builds one outgoing copy: attachments -> sign -> encrypt, each S/MIME step
/// self-checked (own signature verified, own EnvelopedData parsed).
pub fn apply(
    plan: &Plan,
    sender: &str,
    message: &[u8],
    smime: Option<&Smime>,
) -> Result<Outgoing, TransformError> {
    apply_with_keys(plan, sender, message, &Keys::smime_only(smime))
}

/// [`apply`] with S/MIME and OpenPGP: the plan's chosen kind encrypts (and signs, as
/// one message); a signed-only copy is signed by the first kind in the order with a
/// signer for `sender`. A message that is already encrypted leaves untouched.
pub fn apply_with_keys(
    plan: &Plan,
    sender: &str,
    message: &[u8],
    keys: &Keys<'_>,
) -> Result<Outgoing, TransformError> {
    let canon = mime::canonical_crlf(message);
    apply_message(plan, sender, &Message::new(&canon), keys)
}

/// [`apply_with_keys`] on a message read once ([`Message`]): its MIME tree and header
/// fields are shared with the policy and the other copies, not parsed again.
pub fn apply_message(
    plan: &Plan,
    sender: &str,
    message: &Message<'_>,
    keys: &Keys<'_>,
) -> Result<Outgoing, TransformError> {
    let a = &plan.actions;
    let mut notes = plan.notes.clone();
    let mut extra = Vec::new();
    let mut current: Cow<'_, [u8]> = Cow::Borrowed(message.bytes());
    if openpgp::is_encrypted(&current).is_some() {
        return Ok(Outgoing {
            message: current.into_owned(),
            extra,
            notes,
        });
    }
    let (sign, encrypt) = (a.signs(), a.encrypts());
    let kind = if encrypt {
        Some(a.kind().unwrap_or(CryptoKind::Smime))
    } else if sign {
        Some(keys.sign_kind(sender, a).unwrap_or(CryptoKind::Smime))
    } else {
        None
    };
    let smime = keys.smime;

    if a.attachments == Attachments::Strip {
        let s = attachments::strip_tree(message.tree());
        for r in &s.removed {
            notes.push(format!("stripped attachment {r}"));
        }
        current = Cow::Owned(s.message);
    } else if let Attachments::Zip { password_to } = &a.attachments {
        let password_to = password_to.as_deref().unwrap_or(sender).to_string();
        let z = attachments::zip_tree(message.tree(), &password_to)?;
        for r in &z.zipped {
            notes.push(format!("zipped attachment {r}"));
        }
        if let Some(pw) = &z.password {
            let neutral = smime.is_some_and(Smime::protects_headers);
            extra.push(password_message(
                sender,
                &password_to,
                message.headers(),
                pw,
                neutral,
            )?);
            notes.push(format!(
                "zip password sent in a separate message to {password_to}"
            ));
        }
        current = Cow::Owned(z.message);
    }

    if kind == Some(CryptoKind::Openpgp) {
        let p = keys.openpgp.ok_or(TransformError::OpenPgpNotConfigured)?;
        if encrypt {
            for r in &plan.recipients {
                let k = p.key_for(r).map_err(OpenPgpError::from)?;
                notes.push(format!(
                    "encrypted to {r} with OpenPGP key {} ({}, {}; subkeys {})",
                    k.fingerprint,
                    k.path.display(),
                    k.algorithm,
                    k.subkeys.join(", ")
                ));
                for s in &k.skipped {
                    notes.push(format!("{r}: OpenPGP key {s}: not used"));
                }
            }
        }
        if sign {
            match p.signer_for(sender) {
                Some(si) => notes.push(format!(
                    "signed with OpenPGP key {} (signing key {}, {}, {})",
                    si.fingerprint,
                    si.signing_key,
                    si.algorithm,
                    if encrypt {
                        "inside the encryption"
                    } else {
                        "PGP/MIME detached"
                    }
                )),
                None => return Err(OpenPgpError::NoSigner(sender.to_string()).into()),
            }
        }
        let to = encrypt.then_some(plan.recipients.as_slice());
        current = Cow::Owned(p.protect(&current, sender, sign, to)?);
    } else if sign || encrypt {
        let s = smime.ok_or(TransformError::SmimeNotConfigured)?;
        let certs = if encrypt {
            let mut certs = Vec::with_capacity(plan.recipients.len());
            for r in &plan.recipients {
                let c = s.certificate_for(r)?;
                notes.push(format!(
                    "encrypted to {r} with {} ({}, sha256 {})",
                    c.path.display(),
                    c.key,
                    c.fingerprint
                ));
                certs.push(c.cert);
            }
            Some(certs)
        } else {
            None
        };
        if sign {
            match s.signer_for(sender) {
                Some(si) => notes.push(format!(
                    "signed as {} ({}, {})",
                    si.subject,
                    si.key,
                    if si.opaque { "opaque" } else { "detached" }
                )),
                None => return Err(SmimeError::NoSigner(sender.to_string()).into()),
            }
        }
        current = Cow::Owned(s.protect(&current, sender, sign, certs.as_deref())?);
    }
    Ok(Outgoing {
        message: current.into_owned(),
        extra,
        notes,
    })
}

/// The separate message that carries a zip password to `to`.
/// The separate message with the zip password. `neutral` (header protection is on): it
/// names neither the subject nor the Message-ID of the message, which travel protected.
fn password_message(
    sender: &str,
    to: &str,
    original: &Headers<'_>,
    password: &str,
    neutral: bool,
) -> Result<ExtraMessage, TransformError> {
    let subject = original.subject().unwrap_or("(no subject)").to_string();
    let message_id = original.message_id().unwrap_or_else(|| "(none)".into());
    let (which, title) = if neutral {
        (
            "a message sent to you".to_string(),
            format!("Password for {}", attachments::ZIP_NAME),
        )
    } else {
        (
            format!("the message \"{subject}\" (Message-ID {message_id})"),
            format!("Password for {}: {subject}", attachments::ZIP_NAME),
        )
    };
    let body = format!(
        "The attachments of {which}\r\n\
         were sent in the encrypted archive {}.\r\n\r\nPassword: {password}\r\n\r\n\
         Open the archive with 7-Zip, WinZip, PeaZip or Keka (AES-256);\r\n\
         Info-ZIP unzip cannot open it. Forward the password to the recipients over a\r\n\
         different channel than the archive, e.g. by phone.\r\n",
        attachments::ZIP_NAME
    );
    let message = mail_builder::MessageBuilder::new()
        .from(sender)
        .to(to)
        .subject(title)
        .text_body(body)
        .write_to_vec()
        .map_err(|e| TransformError::PasswordMessage(e.to_string()))?;
    Ok(ExtraMessage {
        from: sender.to_string(),
        to: vec![to.to_string()],
        message: mime::canonical_crlf(&message).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::verdict::IfNoKey;

    fn enc(if_no_key: IfNoKey) -> Actions {
        Actions::encrypt(false, if_no_key)
    }

    #[test]
    fn plan_refuses_encryption_without_certificate() {
        let (plans, refused) = plan(&[("a@x".into(), enc(IfNoKey::Reject))], None);
        assert!(plans.is_empty());
        assert_eq!(refused.len(), 1);
        assert!(
            refused[0].1.contains("encryption required"),
            "{}",
            refused[0].1
        );
    }

    #[test]
    fn plan_falls_back_and_groups() {
        let rs = [
            ("a@x".to_string(), enc(IfNoKey::Zip { password_to: None })),
            ("b@x".to_string(), Actions::default()),
            (
                "c@x".to_string(),
                Actions::attachments(Attachments::Zip { password_to: None }),
            ),
            ("d@x".to_string(), Actions::default()),
        ];
        let (plans, refused) = plan(&rs, None);
        assert!(refused.is_empty());
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].recipients, ["a@x", "c@x"]);
        assert_eq!(
            plans[0].actions,
            Actions::attachments(Attachments::Zip { password_to: None })
        );
        assert_eq!(plans[0].notes.len(), 1);
        assert_eq!(plans[1].recipients, ["b@x", "d@x"]);
    }

    /// The fallback is combined with what the rules already do to attachments: a strip
    /// from another rule wins over the zip fallback, signing stays with its order, and
    /// the zip fallback sends the password where the rule said.
    #[test]
    fn fallback_joins_the_attachment_choice_and_keeps_signing() {
        let order = vec![CryptoKind::Openpgp];
        let rs = [
            (
                "a@x".to_string(),
                Actions {
                    attachments: Attachments::Strip,
                    crypto: Crypto::Encrypt {
                        sign: true,
                        order: order.clone(),
                        if_no_key: IfNoKey::Zip { password_to: None },
                    },
                },
            ),
            (
                "b@x".to_string(),
                Actions::encrypt(
                    false,
                    IfNoKey::Zip {
                        password_to: Some("sec@x".into()),
                    },
                ),
            ),
        ];
        let (plans, refused) = plan(&rs, None);
        assert!(refused.is_empty());
        assert_eq!(
            plans[0].actions,
            Actions {
                attachments: Attachments::Strip,
                crypto: Crypto::Sign { order },
            }
        );
        assert!(plans[0].notes[0].contains("fallback zip-attachments"));
        assert_eq!(
            plans[1].actions,
            Actions::attachments(Attachments::Zip {
                password_to: Some("sec@x".into())
            })
        );
    }

    fn plan_for(actions: Actions, rcpts: &[&str]) -> Plan {
        Plan {
            actions,
            recipients: rcpts.iter().map(|r| r.to_string()).collect(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn bcc_recipients_of_an_encrypted_copy_get_their_own() {
        let msg = b"From: p@example.com\r\nTo: Alice <Alice@Bank.example>, group: carol@bank.example;\r\nCc: dave@bank.example\r\nSubject: s\r\n\r\nbody\r\n";
        let plans = vec![
            plan_for(
                enc(IfNoKey::Reject),
                &[
                    "alice@bank.example",
                    "bcc1@bank.example",
                    "carol@bank.example",
                    "dave@bank.example",
                    "bcc2@bank.example",
                ],
            ),
            plan_for(Actions::default(), &["x@y.example", "hidden@y.example"]),
        ];
        let out = separate_hidden_recipients(plans, &Headers::of(msg));
        let rcpts: Vec<Vec<&str>> = out
            .iter()
            .map(|p| p.recipients.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            rcpts,
            [
                vec![
                    "alice@bank.example",
                    "carol@bank.example",
                    "dave@bank.example"
                ],
                vec!["bcc1@bank.example"],
                vec!["bcc2@bank.example"],
                vec!["x@y.example", "hidden@y.example"],
            ]
        );
        assert!(out.get(1).is_some_and(|p| p.actions.encrypts()));
        assert!(out
            .get(1)
            .is_some_and(|p| p.notes[0].contains("not named in To or Cc")));

        // Nobody named (To: undisclosed-recipients:;): one copy each.
        let undisclosed = b"From: p@example.com\r\nTo: undisclosed-recipients:;\r\n\r\nbody\r\n";
        let out = separate_hidden_recipients(
            vec![plan_for(enc(IfNoKey::Reject), &["a@x", "b@x"])],
            &Headers::of(undisclosed),
        );
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|p| p.recipients.len() == 1));
    }

    #[test]
    fn self_check_failures_are_temporary() {
        let e = TransformError::Smime(SmimeError::SelfCheck("x".into()));
        assert!(!e.is_permanent());
        assert!(TransformError::SmimeNotConfigured.is_permanent());
    }
}
