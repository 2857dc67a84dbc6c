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

/// The union of every matching rule's actions for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Default)]
pub struct Actions {
    /// S/MIME-sign with the signer chosen by the envelope sender.
    pub sign: bool,
    /// S/MIME-encrypt to the recipient's certificate.
    pub encrypt: bool,
    /// Only meaningful with `encrypt`: what happens when the recipient has no certificate.
    /// When several rules disagree, `Reject` wins.
    pub if_no_certificate: NoCertFallback,
    /// Replace each attachment with a notice (name, type, size, SHA-256).
    pub strip_attachments: bool,
    /// Move attachments into one AES-256 zip; the password goes to `password_to`.
    pub zip_attachments: bool,
    /// Where the zip password goes; `None` means the envelope sender.
    pub password_to: Option<String>,
    /// A rule's own preference order for `sign`/`encrypt` (the first matching rule that
    /// sets one); empty means `[policy] encryption`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub encryption: Vec<CryptoKind>,
    /// Set by planning: the kind chosen for this recipient's encryption (first kind in
    /// the order with a usable key). `None` before planning and when not encrypting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<CryptoKind>,
}

impl Actions {
    /// True when the message leaves exactly as received (DKIM aside).
    pub fn is_pass_through(&self) -> bool {
        !self.sign && !self.encrypt && !self.strip_attachments && !self.zip_attachments
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
