//! What policy decided for one recipient, in the words the rest of the pipeline uses.
//!
//! This module only names decisions; it never makes one. The policy engine produces
//! [`RecipientVerdict`]s, the transform pipeline consumes [`Actions`], and `explain`
//! and the audit log print them.

use serde::Serialize;

/// What to do when a rule says `encrypt` but no usable certificate exists for a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum NoCertFallback {
    /// Refuse the recipient (`550 5.7.1`). The default: encryption is never skipped silently.
    #[default]
    Reject,
    /// Send the body readable, with the attachments moved into an AES-256 zip.
    ZipAttachments,
    /// Send the body readable, with the attachments replaced by a notice.
    StripAttachments,
}

/// A way to sign and encrypt mail end to end; `[policy] encryption` and a rule's own
/// `encryption` list them in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CryptoKind {
    /// S/MIME (CMS), certificates from `[smime]`.
    Smime,
    /// OpenPGP as PGP/MIME (RFC 3156), keys from `[openpgp]`.
    Openpgp,
}

impl CryptoKind {
    /// The order used when neither the rule nor `[policy]` names one.
    pub const DEFAULT_ORDER: [CryptoKind; 2] = [CryptoKind::Smime, CryptoKind::Openpgp];

    /// The name used in configuration, explain and audit.
    pub fn name(self) -> &'static str {
        match self {
            CryptoKind::Smime => "smime",
            CryptoKind::Openpgp => "openpgp",
        }
    }
}

/// What happens to a copy's attachments. Stripping wins over zipping when rules
/// disagree (nothing is left to zip), so "strip and zip" cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Attachments {
    /// Attachments travel as they are.
    #[default]
    Keep,
    /// Each attachment is replaced by a notice (name, type, size, SHA-256).
    Strip,
    /// Attachments move into one AES-256 zip; the password goes to `password_to`
    /// (`None`: the envelope sender) in a separate message.
    Zip {
        /// Where the zip password goes; `None` means the envelope sender.
        password_to: Option<String>,
    },
}

impl Attachments {
    /// The choice when both `self` and `other` apply: strip over zip over keep; two
    /// zips send the password to the first address named.
    pub fn and(self, other: Attachments) -> Attachments {
        match (self, other) {
            (Attachments::Strip, _) | (_, Attachments::Strip) => Attachments::Strip,
            (Attachments::Zip { password_to: a }, Attachments::Zip { password_to: b }) => {
                Attachments::Zip {
                    password_to: a.or(b),
                }
            }
            (Attachments::Zip { password_to }, _) | (_, Attachments::Zip { password_to }) => {
                Attachments::Zip { password_to }
            }
            (Attachments::Keep, Attachments::Keep) => Attachments::Keep,
        }
    }

    /// How explain names the choice: `strip-attachments` or `zip-attachments (password
    /// to ...)`; `None` when attachments are kept.
    pub fn describe(&self) -> Option<String> {
        match self {
            Attachments::Keep => None,
            Attachments::Strip => Some("strip-attachments".into()),
            Attachments::Zip { password_to } => Some(format!(
                "zip-attachments (password to {})",
                password_to.as_deref().unwrap_or("the sender")
            )),
        }
    }

    /// Where the zip password goes, when zipping and a rule named an address.
    pub fn password_to(&self) -> Option<&str> {
        match self {
            Attachments::Zip { password_to } => password_to.as_deref(),
            _ => None,
        }
    }
}

/// What happens to a copy that must be encrypted when no kind in the order has a
/// usable key for its recipient; [`NoCertFallback`] names it as written in policy files.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum IfNoKey {
    /// Refuse the recipient (`550 5.7.1`): encryption is never skipped silently.
    #[default]
    Reject,
    /// Send the body readable, with the attachments replaced by a notice.
    Strip,
    /// Send the body readable, with the attachments in an AES-256 zip whose password
    /// goes to `password_to` (`None`: the envelope sender).
    Zip {
        /// Where the zip password goes; `None` means the envelope sender.
        password_to: Option<String>,
    },
}

impl IfNoKey {
    /// The fallback as written in policy files.
    pub fn fallback(&self) -> NoCertFallback {
        match self {
            IfNoKey::Reject => NoCertFallback::Reject,
            IfNoKey::Strip => NoCertFallback::StripAttachments,
            IfNoKey::Zip { .. } => NoCertFallback::ZipAttachments,
        }
    }

    /// What is done to the attachments instead of encrypting; `None` refuses.
    pub fn instead(&self) -> Option<Attachments> {
        match self {
            IfNoKey::Reject => None,
            IfNoKey::Strip => Some(Attachments::Strip),
            IfNoKey::Zip { password_to } => Some(Attachments::Zip {
                password_to: password_to.clone(),
            }),
        }
    }
}

impl NoCertFallback {
    /// The name used in policy files, explain and notes.
    pub fn name(self) -> &'static str {
        match self {
            NoCertFallback::Reject => "reject",
            NoCertFallback::ZipAttachments => "zip-attachments",
            NoCertFallback::StripAttachments => "strip-attachments",
        }
    }
}

/// Signing and encryption of a copy. Policy produces [`Crypto::Encrypt`] (the kind is
/// not known yet); planning turns it into [`Crypto::EncryptWith`] (the kind chosen for
/// the recipient) or, through the fallback, into [`Crypto::Sign`] or [`Crypto::None`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Crypto {
    /// Neither signed nor encrypted.
    #[default]
    None,
    /// Signed only, by the first kind in `order` with a signer for the sender.
    Sign {
        /// A rule's own preference order; empty means `[policy] encryption`.
        order: Vec<CryptoKind>,
    },
    /// Encrypted (and signed inside when `sign`) with the first kind in `order` that has
    /// a usable key for the recipient; `if_no_key` when none has.
    Encrypt {
        /// Also sign, inside the encryption.
        sign: bool,
        /// A rule's own preference order; empty means `[policy] encryption`.
        order: Vec<CryptoKind>,
        /// What happens when no kind has a usable key.
        if_no_key: IfNoKey,
    },
    /// Set by planning: encrypted (and signed inside when `sign`) with `kind`, which has
    /// a usable key for every recipient of the copy.
    EncryptWith {
        /// Also sign, inside the encryption.
        sign: bool,
        /// The kind chosen for the recipient.
        kind: CryptoKind,
    },
}

impl Crypto {
    /// Signing and encryption as planning leaves them: encrypted with `encrypt_with`
    /// (signed inside when `sign`), else signed only in the `[policy]` order when
    /// `sign`, else neither.
    pub fn planned(sign: bool, encrypt_with: Option<CryptoKind>) -> Crypto {
        match (sign, encrypt_with) {
            (sign, Some(kind)) => Crypto::EncryptWith { sign, kind },
            (true, None) => Crypto::Sign { order: Vec::new() },
            (false, None) => Crypto::None,
        }
    }
}

/// What is done to one recipient's copy: the union of every matching rule's actions
/// (see `PolicySet::judge_message`), later resolved per recipient by planning.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Actions {
    /// Attachments kept, stripped or zipped.
    pub attachments: Attachments,
    /// Signing and encryption.
    pub crypto: Crypto,
}

impl Actions {
    /// Signed only, in the `[policy]` order.
    pub fn sign() -> Actions {
        Actions {
            crypto: Crypto::Sign { order: Vec::new() },
            ..Actions::default()
        }
    }

    /// Encrypted (signed too when `sign`) in the `[policy]` order; `if_no_key` otherwise.
    pub fn encrypt(sign: bool, if_no_key: IfNoKey) -> Actions {
        Actions {
            crypto: Crypto::Encrypt {
                sign,
                order: Vec::new(),
                if_no_key,
            },
            ..Actions::default()
        }
    }

    /// Only the attachments change.
    pub fn attachments(attachments: Attachments) -> Actions {
        Actions {
            attachments,
            ..Actions::default()
        }
    }

    /// True when the message leaves exactly as received (DKIM aside).
    pub fn is_pass_through(&self) -> bool {
        self.attachments == Attachments::Keep && self.crypto == Crypto::None
    }

    /// True when the copy is signed (alone or inside the encryption).
    pub fn signs(&self) -> bool {
        match &self.crypto {
            Crypto::None => false,
            Crypto::Sign { .. } => true,
            Crypto::Encrypt { sign, .. } | Crypto::EncryptWith { sign, .. } => *sign,
        }
    }

    /// True when the copy is to be encrypted (kind chosen or not).
    pub fn encrypts(&self) -> bool {
        matches!(
            self.crypto,
            Crypto::Encrypt { .. } | Crypto::EncryptWith { .. }
        )
    }

    /// The kind planning chose for encryption.
    pub fn kind(&self) -> Option<CryptoKind> {
        match self.crypto {
            Crypto::EncryptWith { kind, .. } => Some(kind),
            _ => None,
        }
    }

    /// A rule's own preference order, while it still matters (before a kind is chosen);
    /// empty means `[policy] encryption`.
    pub fn order(&self) -> &[CryptoKind] {
        match &self.crypto {
            Crypto::Sign { order } | Crypto::Encrypt { order, .. } => order,
            Crypto::None | Crypto::EncryptWith { .. } => &[],
        }
    }

    /// The fallback, while encryption is required and no kind is chosen yet.
    pub fn if_no_certificate(&self) -> Option<NoCertFallback> {
        match &self.crypto {
            Crypto::Encrypt { if_no_key, .. } => Some(if_no_key.fallback()),
            _ => None,
        }
    }

    /// Where a zip password would go (zipping, or the zip fallback), when a rule named
    /// an address; `None` means the envelope sender.
    pub fn password_to(&self) -> Option<&str> {
        match (&self.attachments, &self.crypto) {
            (Attachments::Zip { password_to }, _)
            | (
                _,
                Crypto::Encrypt {
                    if_no_key: IfNoKey::Zip { password_to },
                    ..
                },
            ) => password_to.as_deref(),
            _ => None,
        }
    }
}

/// The JSON form of [`Actions`] (explain's `--json`, the audit log): flat flags, as
/// readers of that output know them.
#[derive(Serialize)]
struct ActionsJson<'a> {
    sign: bool,
    encrypt: bool,
    if_no_certificate: NoCertFallback,
    strip_attachments: bool,
    zip_attachments: bool,
    password_to: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    encryption: &'a [CryptoKind],
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<CryptoKind>,
}

impl Serialize for Actions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ActionsJson {
            sign: self.signs(),
            encrypt: self.encrypts(),
            if_no_certificate: self.if_no_certificate().unwrap_or_default(),
            strip_attachments: self.attachments == Attachments::Strip,
            zip_attachments: matches!(self.attachments, Attachments::Zip { .. }),
            password_to: self.password_to(),
            encryption: self.order(),
            kind: self.kind(),
        }
        .serialize(s)
    }
}

/// Which rule in which file decided something; printed in SMTP replies and the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct RuleRef {
    /// The policy file, as given relative to the policy directory's parent (e.g. `policies/10-bank.toml`).
    pub file: String,
    /// The rule's `name`, or `[recipients]` for the allow/deny list.
    pub rule: String,
}

impl RuleRef {
    /// The `file` of a limit that sealgate itself enforces, whatever the policy says.
    pub const BUILT_IN: &'static str = "(built-in)";

    /// A decision made by one of sealgate's own limits rather than a policy file.
    pub fn built_in(rule: &str) -> RuleRef {
        RuleRef {
            file: Self::BUILT_IN.into(),
            rule: rule.into(),
        }
    }
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.file == Self::BUILT_IN {
            write!(f, "sealgate's built-in {}", self.rule)
        } else if self.rule == "[recipients]" {
            write!(f, "{}", self.file)
        } else {
            write!(f, "rule \"{}\" in {}", self.rule, self.file)
        }
    }
}

/// The policy's answer for one recipient of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum RecipientVerdict {
    /// Deliver, after applying `actions`. `rules` lists every rule that matched.
    Accept {
        actions: Actions,
        rules: Vec<RuleRef>,
    },
    /// Refuse; `reason` is the text for the SMTP reply (without code), `by` what decided it.
    Reject { reason: String, by: RuleRef },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_wins_over_zip_and_the_first_password_address_is_kept() {
        let zip = |p: Option<&str>| Attachments::Zip {
            password_to: p.map(str::to_owned),
        };
        assert_eq!(zip(None).and(Attachments::Strip), Attachments::Strip);
        assert_eq!(Attachments::Strip.and(zip(Some("a@x"))), Attachments::Strip);
        assert_eq!(Attachments::Keep.and(zip(Some("a@x"))), zip(Some("a@x")));
        assert_eq!(zip(None).and(zip(Some("a@x"))), zip(Some("a@x")));
        assert_eq!(zip(Some("b@x")).and(zip(Some("a@x"))), zip(Some("b@x")));
        assert_eq!(Attachments::Keep.and(Attachments::Keep), Attachments::Keep);
    }

    /// explain's `--json` and the audit log keep the flat fields they always had.
    #[test]
    fn json_keeps_the_flat_fields() {
        let policy = Actions {
            attachments: Attachments::Keep,
            crypto: Crypto::Encrypt {
                sign: true,
                order: vec![CryptoKind::Openpgp],
                if_no_key: IfNoKey::Zip {
                    password_to: Some("sec@example.com".into()),
                },
            },
        };
        assert_eq!(
            serde_json::to_value(&policy).unwrap(),
            serde_json::json!({"sign": true, "encrypt": true,
                "if_no_certificate": "zip-attachments", "strip_attachments": false,
                "zip_attachments": false, "password_to": "sec@example.com",
                "encryption": ["openpgp"]})
        );
        let planned = Actions {
            attachments: Attachments::Strip,
            crypto: Crypto::planned(false, Some(CryptoKind::Smime)),
        };
        assert_eq!(
            serde_json::to_value(&planned).unwrap(),
            serde_json::json!({"sign": false, "encrypt": true,
                "if_no_certificate": "reject", "strip_attachments": true,
                "zip_attachments": false, "password_to": null, "kind": "smime"})
        );
        assert_eq!(
            serde_json::to_value(Actions::default()).unwrap(),
            serde_json::json!({"sign": false, "encrypt": false,
                "if_no_certificate": "reject", "strip_attachments": false,
                "zip_attachments": false, "password_to": null})
        );
    }
}
