//! What `sealgate explain` prints: per recipient, the approval, each matching rule with
//! the evidence for each of its conditions, and the verdict.
//!
//! The same [`Explanation`] serialises to JSON (`--json`, shape documented in README)
//! and displays as text for people. Detector hits appear only redacted.
//! Invariant: the verdicts in an explanation are exactly what `judge_message` returns
//! for the same input; explain never decides anything itself.

use crate::policy::verdict::{RecipientVerdict, RuleRef};
use serde::Serialize;
use std::fmt;

/// The whole dry run for one message.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// Hash of the policy files used (same as in the audit log).
    pub policy_version: String,
    /// The `[[client]]` name the message came from (`local` without AUTH).
    pub client: String,
    /// The envelope sender.
    pub from: String,
    /// What the policy engine saw in the message.
    pub message: MessageSummary,
    /// One entry per recipient, in the order given.
    pub recipients: Vec<RecipientExplanation>,
}

/// The message as content conditions saw it.
#[derive(Debug, Clone, Serialize)]
pub struct MessageSummary {
    /// Bytes as received.
    pub size: usize,
    /// False when the bytes did not parse as a message (then the whole input is one text).
    pub parsed: bool,
    /// Decoded top-level subject.
    pub subject: String,
    /// Where the texts searched by `body` came from (`text part`, `html part (as text)`, ...).
    pub texts: Vec<String>,
    /// Every attachment (nested messages included).
    pub attachments: Vec<AttachmentSummary>,
}

/// One attachment.
#[derive(Debug, Clone, Serialize)]
pub struct AttachmentSummary {
    /// File name, when the sender gave one.
    pub name: Option<String>,
    /// Declared MIME type, lower case.
    pub content_type: String,
}

/// Result of the `[recipients]` lists for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalOutcome {
    /// An allow entry covers the recipient and no deny entry does.
    Approved,
    /// A deny entry covers the recipient.
    Denied,
    /// No allow entry covers the recipient.
    NotApproved,
}

/// Which list entry decided approval.
#[derive(Debug, Clone, Serialize)]
pub struct Approval {
    /// Approved, denied or not approved.
    pub outcome: ApprovalOutcome,
    /// The deciding entry as written (none for "not approved").
    pub entry: Option<String>,
    /// The file holding that entry.
    pub file: Option<String>,
    /// The address the upstream may route the recipient to (percent hack, bang path,
    /// quoted `@`; only with `allow_routing_characters`) that decided, when not itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routed_as: Option<String>,
}

/// Why one condition of a rule held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// The condition key (`from`, `to`, `body`, ...).
    pub condition: String,
    /// The entry of that condition that matched, as written.
    pub pattern: String,
    /// What it matched; detector hits are redacted (`4111 **** **** 1111`).
    pub matched: String,
    /// Where in the message, for content conditions (`text part`, `attachment name`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

impl Evidence {
    pub(crate) fn new(
        condition: &str,
        pattern: &str,
        matched: &str,
        location: Option<String>,
    ) -> Self {
        Evidence {
            condition: condition.to_owned(),
            pattern: pattern.to_owned(),
            matched: matched.to_owned(),
            location,
        }
    }
}

/// A rule that matched one recipient.
#[derive(Debug, Clone, Serialize)]
pub struct RuleMatch {
    /// The rule and its file.
    pub rule: RuleRef,
    /// One entry per condition of the rule (none for a rule without conditions).
    pub evidence: Vec<Evidence>,
    /// The rule's actions as written (`reject`, `sign`, `encrypt`, ...).
    pub actions: Vec<String>,
}

/// Everything decided for one recipient.
#[derive(Debug, Clone, Serialize)]
pub struct RecipientExplanation {
    /// The recipient as given.
    pub recipient: String,
    /// The canonical, lower-cased form the lists and rules judged (none when the
    /// address has no canonical form and was refused for it).
    pub judged_as: Option<String>,
    /// The address without its subaddress (`ceo+x@d` → `ceo@d`), judged too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subaddress_of: Option<String>,
    /// What `[recipients]` said.
    pub approval: Approval,
    /// Rules that matched, in policy order (empty when the recipient is not approved).
    pub matched_rules: Vec<RuleMatch>,
    /// The final verdict, as `judge_message` returns it.
    pub verdict: RecipientVerdict,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "policy version {}", self.policy_version)?;
        writeln!(f, "client {}, from <{}>", self.client, self.from)?;
        let m = &self.message;
        writeln!(
            f,
            "message: {} bytes{}, subject {:?}, {} text(s) searched, {} attachment(s)",
            m.size,
            if m.parsed {
                ""
            } else {
                " (not parseable as MIME: searched as one text)"
            },
            m.subject,
            m.texts.len(),
            m.attachments.len()
        )?;
        for a in &m.attachments {
            writeln!(
                f,
                "  attachment {} ({})",
                a.name.as_deref().unwrap_or("(no name)"),
                a.content_type
            )?;
        }
        for r in &self.recipients {
            writeln!(f)?;
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl fmt::Display for RecipientExplanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "recipient <{}>", self.recipient)?;
        match (&self.judged_as, &self.subaddress_of) {
            (Some(j), Some(b)) => writeln!(f, "  judged as <{j}>, a subaddress of <{b}>")?,
            (Some(j), None) => writeln!(f, "  judged as <{j}>")?,
            (None, _) => writeln!(f, "  no canonical form: refused before the lists")?,
        }
        let a = &self.approval;
        let file = a.file.as_deref().unwrap_or("policy");
        match (&a.outcome, &a.entry) {
            (ApprovalOutcome::Approved, Some(e)) => writeln!(f, "  approved by \"{e}\" in {file}")?,
            (ApprovalOutcome::Denied, Some(e)) => writeln!(f, "  denied by \"{e}\" in {file}")?,
            _ => writeln!(f, "  not approved: no allow entry covers it ({file})")?,
        }
        if let Some(r) = &a.routed_as {
            writeln!(f, "  (judged as the upstream may route it: <{r}>)")?;
        }
        for m in &self.matched_rules {
            writeln!(f, "  matched {}", m.rule)?;
            if m.evidence.is_empty() {
                writeln!(f, "    (no conditions: matches every message)")?;
            }
            for e in &m.evidence {
                write!(
                    f,
                    "    {}: \"{}\" matched \"{}\"",
                    e.condition, e.pattern, e.matched
                )?;
                if let Some(l) = &e.location {
                    write!(f, " in {l}")?;
                }
                writeln!(f)?;
            }
            writeln!(f, "    actions: {}", m.actions.join(", "))?;
        }
        match &self.verdict {
            RecipientVerdict::Accept { actions, .. } => {
                let mut parts = Vec::new();
                if actions.signs() {
                    parts.push("sign".to_owned());
                }
                if let Some(fallback) = actions.if_no_certificate() {
                    parts.push(format!("encrypt (if no certificate: {})", fallback.name()));
                }
                if !actions.order().is_empty() {
                    let order: Vec<&str> = actions.order().iter().map(|k| k.name()).collect();
                    parts.push(format!("encryption order {}", order.join(" > ")));
                }
                parts.extend(actions.attachments.describe());
                if parts.is_empty() {
                    writeln!(f, "  verdict: accept, sent as is")
                } else {
                    writeln!(f, "  verdict: accept, then {}", parts.join(", "))
                }
            }
            RecipientVerdict::Reject { reason, by } => {
                writeln!(f, "  verdict: reject: {reason} ({by})")
            }
        }
    }
}
