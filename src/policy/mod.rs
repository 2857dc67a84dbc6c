//! Policy files (`policies/*.toml`): parse with file:line:col errors, judge recipients, explain.
//!
//! A [`PolicySet`] is everything in the policy directory, compiled: the `[recipients]`
//! allow/deny lists (hash maps) and the `[[rule]]`s (globs, regexes, one `RegexSet` for all
//! body regexes). It is immutable once loaded; reload builds a new one and swaps it in,
//! so a session keeps the set it started with.
//!
//! # Policy language
//!
//! ```toml
//! [recipients]                     # required in at least one file; lists from all files are merged
//! allow = ["example.com", "*.example.com", "alice@partner.org"]   # "*" approves everyone
//! deny  = ["ceo@example.com"]      # wins over allow
//!
//! [[rule]]
//! name = "payroll to the bank"     # required; printable ASCII; appears in SMTP replies
//! from = ["payroll@example.com"]   # globs (* and ?) on the envelope sender, case-insensitive
//! to = ["*@bank.example"]          # globs on the recipient (rules are judged per recipient)
//! client = ["billing"]             # [[client]] names from sealgate.toml, or "local"
//! subject = ["(?i)invoice"]        # regexes on the decoded Subject
//! header = ["X-Mailer: (?i)billing"]   # "Field-Name: regex" on each value of that field
//! body = ["builtin:credit-card", "(?i)\\bconfidential\\b"]   # regexes and detectors
//! attachment_name = ["*.exe"]      # globs on attachment file names
//! attachment_type = ["image/*"]    # globs on declared MIME types
//! size_over = "10MiB"              # message size; B, KiB, MiB, GiB, KB, MB, GB
//! actions = ["sign", "encrypt"]    # reject, sign, encrypt, strip-attachments, zip-attachments
//! message = "..."                  # reply text for reject (default "refused by policy")
//! if_no_certificate = "reject"     # with encrypt: reject | zip-attachments | strip-attachments
//! password_to = "security@example.com"   # with zip-attachments: who gets the password (default: sender)
//! ```
//!
//! Semantics: a list condition holds when any entry matches; a rule matches when all its
//! conditions hold (a rule without conditions matches every message); every matching rule
//! contributes its actions; `reject` wins over everything (the first rejecting rule in
//! file order names the reason). When rules disagree on `if_no_certificate`, the most
//! protective wins: reject, then strip-attachments, then zip-attachments. When both
//! strip-attachments and zip-attachments apply, strip-attachments wins (nothing of the
//! attachments leaves). `password_to`: the first matching rule that sets it.
//!
//! `header`: the field name is matched case-insensitively and exactly (no wildcards); the
//! regex is searched (not anchored) in each value of each field with that name at the top
//! level of the message, both as written (folded lines joined) and decoded (RFC 2047); the
//! condition holds when any value matches. `"X-Priority:"` with an empty regex tests that
//! the field is present.
//!
//! `body` searches every text part (text/plain, text/html converted to text, text
//! attachments), the same inside attached messages (and their subjects), and every
//! attachment file name, after transfer-encoding and charset decoding. Binary attachments
//! (PDF, Office, archives) are not searched. Regexes use the `regex` crate: linear time,
//! no look-around or back-references.
//!
//! Invariant: no input message can make judging panic or take more than linear time;
//! judging never reads files or the network.

mod content;
pub mod detectors;
mod diagnostic;
mod explain;
mod html;
mod load;
mod patterns;
mod recipients;
mod rules;
pub mod verdict;

pub use content::{is_default_ignorable, seen, Seen, SeenLeaf};
pub use diagnostic::{Diagnostic, PolicyError, Severity};
pub use explain::{
    Approval, ApprovalOutcome, AttachmentSummary, Evidence, Explanation, MessageSummary,
    RecipientExplanation, RuleMatch,
};

use crate::policy::rules::AttachmentAction;
use crate::policy::verdict::{
    Actions, Attachments, Crypto, CryptoKind, IfNoKey, NoCertFallback, RecipientVerdict, RuleRef,
};
use content::MessageView;

/// The rule name in replies and audit records when [`crate::message::mime::hazard`]
/// refuses a message.
pub const MIME_LIMITS: &str = "MIME limits";

/// The rule name when an address has no canonical form (`crate::address`).
pub const ADDRESS_SYNTAX: &str = "address rules (RFC 5321; sealgate.toml [server])";
use recipients::{AddressList, NormalAddress};
use rules::{Banks, Rule, Scan};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The envelope as far as policy cares.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The `[[client]]` name of the app, or `local` for unauthenticated loopback clients.
    pub client: &'a str,
    /// The envelope sender (MAIL FROM), with or without angle brackets; empty for `<>`.
    pub from: &'a str,
}

/// Why a recipient is refused, and what decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Reply text without code, e.g. `recipient not approved` or a rule's `message`.
    pub reason: String,
    /// The file (for `[recipients]`) or rule that decided.
    pub by: RuleRef,
}

/// All policy files of a directory, compiled and ready to judge.
#[derive(Debug)]
pub struct PolicySet {
    /// Short hex SHA-256 over file names and contents.
    version: String,
    /// Display names (`policies/10-bank.toml`), in load order.
    files: Vec<String>,
    allow: AddressList,
    deny: AddressList,
    /// Named when a recipient is approved by no entry.
    not_approved_by: RuleRef,
    /// All rules, in file order then position.
    rules: Vec<Rule>,
    /// Indexes into `rules` of rules that do not look at content (decided at RCPT).
    rcpt_rules: Vec<usize>,
    /// Every regex, one multi-pattern bank per condition kind.
    banks: Banks,
    /// False when no rule looks at subject, headers, body or attachments: judging then
    /// does not parse the message at all (only its size can matter).
    needs_parse: bool,
    /// Warnings from loading; the set is usable.
    warnings: Vec<Diagnostic>,
    /// How addresses are read before judging (`[server] allow_routing_characters`).
    address_rules: crate::address::AddressRules,
    /// `[server] recipient_delimiter`: where a subaddress starts (`ceo+x` is `ceo`'s).
    delimiters: Vec<char>,
}

/// A recipient as the policy judges it, or why it cannot be judged.
type ReadAddress = Result<NormalAddress, crate::address::AddressError>;

/// An error about a whole file (reading it, its name), shown at 1:1.
fn file_error(file: String, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        file,
        line: 1,
        col: 1,
        message: message.into(),
        severity: Severity::Error,
    }
}

impl PolicySet {
    /// Reads `dir/*.toml` in name order; file names are shown as `<dir name>/<file>`
    /// (e.g. `policies/10-bank.toml`). Hidden files (`.name.toml`) are skipped.
    pub fn load(dir: &Path) -> Result<PolicySet, PolicyError> {
        let prefix = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        Self::load_with_prefix(dir, &prefix)
    }

    /// Like [`PolicySet::load`], with file names shown as `<display_prefix>/<file>`.
    pub fn load_with_prefix(dir: &Path, display_prefix: &str) -> Result<PolicySet, PolicyError> {
        let show = |name: &str| {
            if display_prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{}/{}", display_prefix.trim_end_matches('/'), name)
            }
        };
        let fail = |file: String, message: String| PolicyError {
            diagnostics: vec![file_error(file, message)],
        };
        let entries = std::fs::read_dir(dir).map_err(|e| {
            fail(
                display_prefix.to_owned(),
                format!("cannot read policy directory {}: {e}", dir.display()),
            )
        })?;
        let mut names: Vec<String> = Vec::new();
        let mut diagnostics = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    return Err(fail(
                        display_prefix.to_owned(),
                        format!("cannot list policy directory {}: {e}", dir.display()),
                    ))
                }
            };
            let name = entry.file_name();
            let policy_like = |n: &[u8]| n.ends_with(b".toml") && !n.starts_with(b".");
            let Some(name) = name.to_str() else {
                // Only a would-be policy file matters; `café.bak` in Latin-1 beside them does not.
                if policy_like(std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str())) {
                    diagnostics.push(file_error(
                        show(&name.to_string_lossy()),
                        "file name is not UTF-8; rename it",
                    ));
                }
                continue;
            };
            if !policy_like(name.as_bytes()) {
                continue;
            }
            // A policy file that cannot be read (a dangling symlink, a directory) is an
            // error: skipping it would drop its rules without a word.
            match std::fs::metadata(entry.path()) {
                Ok(m) if m.is_file() => names.push(name.to_owned()),
                Ok(_) => diagnostics.push(file_error(show(name), "not a regular file")),
                Err(e) => diagnostics.push(file_error(
                    show(name),
                    format!("cannot read (a dangling symlink?): {e}"),
                )),
            }
        }
        names.sort();
        let mut files = Vec::new();
        let mut hasher = Sha256::new();
        for name in &names {
            match std::fs::read(dir.join(name)) {
                Ok(bytes) => {
                    hasher.update(name.as_bytes());
                    hasher.update([0]);
                    hasher.update(&bytes);
                    hasher.update([0]);
                    match String::from_utf8(bytes) {
                        Ok(text) => files.push((show(name), text)),
                        Err(e) => {
                            // Where the first bad byte is, as line:col.
                            let good = e.as_bytes().get(..e.utf8_error().valid_up_to());
                            let good = good.unwrap_or_default();
                            let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
                            let line_start =
                                good.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
                            let col = good.len() - line_start + 1;
                            diagnostics.push(Diagnostic {
                                file: show(name),
                                line,
                                col,
                                message:
                                    "not UTF-8: TOML files must be UTF-8 (save the file as UTF-8)"
                                        .into(),
                                severity: Severity::Error,
                            })
                        }
                    }
                }
                Err(e) => diagnostics.push(file_error(show(name), format!("cannot read: {e}"))),
            }
        }
        if names.is_empty() {
            return Err(fail(
                display_prefix.to_owned(),
                format!(
                    "no policy files (*.toml) in {}: at least one must have [recipients] with allow = [...]",
                    dir.display()
                ),
            ));
        }
        let version = short_hex(&hasher.finalize());
        Self::build(files, version, diagnostics)
    }

    /// Compiles policy files given as (display name, contents), in that order.
    /// Used by tests and benchmarks; [`PolicySet::load`] is this plus reading the directory.
    pub fn from_sources(files: &[(String, String)]) -> Result<PolicySet, PolicyError> {
        let mut hasher = Sha256::new();
        for (name, text) in files {
            let base = name.rsplit('/').next().unwrap_or(name);
            hasher.update(base.as_bytes());
            hasher.update([0]);
            hasher.update(text.as_bytes());
            hasher.update([0]);
        }
        Self::build(files.to_vec(), short_hex(&hasher.finalize()), Vec::new())
    }

    fn build(
        files: Vec<(String, String)>,
        version: String,
        mut diagnostics: Vec<Diagnostic>,
    ) -> Result<PolicySet, PolicyError> {
        let c = load::compile(&files);
        diagnostics.extend(c.diagnostics);
        // Errors first (by file, line, col), then warnings.
        diagnostics.sort_by(|a, b| {
            (a.severity != Severity::Error, &a.file, a.line, a.col).cmp(&(
                b.severity != Severity::Error,
                &b.file,
                b.line,
                b.col,
            ))
        });
        if diagnostics.iter().any(|d| d.severity == Severity::Error) {
            return Err(PolicyError { diagnostics });
        }
        let names: Vec<String> = files.into_iter().map(|(n, _)| n).collect();
        let not_approved_by = RuleRef {
            file: c
                .allow_file
                .and_then(|i| names.get(i).cloned())
                .unwrap_or_default(),
            rule: "[recipients]".into(),
        };
        let rcpt_rules = c
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_content_free())
            .map(|(i, _)| i)
            .collect();
        let needs_parse = c.rules.iter().any(|r| {
            r.subject.is_some()
                || r.header.is_some()
                || r.body.is_some()
                || r.attachment_name.is_some()
                || r.attachment_type.is_some()
        });
        Ok(PolicySet {
            needs_parse,
            version,
            files: names,
            allow: c.allow,
            deny: c.deny,
            not_approved_by,
            rules: c.rules,
            rcpt_rules,
            banks: c.banks,
            warnings: diagnostics,
            address_rules: crate::address::AddressRules::default(),
            delimiters: vec!['+'],
        })
    }

    /// Sets how addresses are read (from `[server]`): whether routing characters are
    /// accepted, and the subaddress delimiters (default `+`, as Debian's Postfix).
    pub fn set_address_reading(
        &mut self,
        rules: crate::address::AddressRules,
        delimiters: &[char],
    ) {
        self.address_rules = rules;
        self.delimiters = delimiters.to_vec();
    }

    /// The canonical, lower-cased form an address is judged in (`crate::address`), with
    /// its subaddress base; an address that has none is refused before any list is asked.
    fn read_address(&self, raw: &str) -> ReadAddress {
        let s = raw.trim();
        let s = s.strip_prefix('<').unwrap_or(s);
        let s = s.strip_suffix('>').unwrap_or(s);
        let c = crate::address::canonical(s, self.address_rules)?;
        let mut a = NormalAddress::with_delimiters(c.as_str(), &self.delimiters);
        a.routed = crate::address::routed_forms(c.as_str());
        Ok(a)
    }

    /// The envelope sender as judged: canonical when it has a canonical form, else as
    /// written (lower case); the null sender stays empty.
    fn read_sender(&self, from: &str) -> String {
        match self.read_address(from) {
            Ok(a) => a.full,
            Err(_) => NormalAddress::new(from).full,
        }
    }

    /// Short hex SHA-256 of the file names and contents; recorded in every audit record.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Warnings found while loading (a rule that can never match, one shadowed by a reject, ...).
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// The policy files, as displayed, in load order.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Number of rules in the set.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Errors for `client` entries naming no `[[client]]` of the configuration (`local`
    /// is always known): such a rule could never match, which for a restriction is
    /// a silent hole. For `sealgate check` and reload, which know the configuration.
    pub fn check_clients(&self, known: &[&str]) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for rule in &self.rules {
            let Some(clients) = &rule.client else {
                continue;
            };
            for (i, c) in clients.iter().enumerate() {
                if c != "local" && !known.contains(&c.as_str()) {
                    let (line, col) = rule.client_pos.get(i).copied().unwrap_or(rule.pos);
                    let mut names: Vec<&str> = known.to_vec();
                    names.push("local");
                    out.push(Diagnostic {
                        file: rule.id.file.clone(),
                        line,
                        col,
                        message: format!(
                            "rule \"{}\": client \"{c}\" is not a [[client]] in the configuration (known: {})",
                            rule.id.rule,
                            names.join(", ")
                        ),
                        severity: Severity::Error,
                    });
                }
            }
        }
        out
    }

    /// Warnings for rules that sign or encrypt while the configuration has no `[smime]`:
    /// every message such a rule matches is refused (or, for `encrypt` with a fallback,
    /// only has its attachments zipped or stripped). For `sealgate check`.
    pub fn check_smime(&self, smime_configured: bool) -> Vec<Diagnostic> {
        if smime_configured {
            return Vec::new();
        }
        self.rules
            .iter()
            .filter(|r| r.actions.sign || r.actions.encrypt.is_some())
            .map(|rule| {
                let (line, col) = rule.pos;
                let what = if rule.actions.sign { "sign" } else { "encrypt" };
                Diagnostic {
                    file: rule.id.file.clone(),
                    line,
                    col,
                    message: format!(
                        "rule \"{}\" says {what} but the configuration has no [smime] section: the messages it matches cannot be {what}ed",
                        rule.id.rule
                    ),
                    severity: Severity::Warning,
                }
            })
            .collect()
    }

    /// `[recipients]`: denied, approved or not approved, with the deciding entry. An
    /// address with routing characters (allowed by `[server] allow_routing_characters`)
    /// is approved only when every address the upstream may route it to is, too.
    fn approval(&self, addr: &NormalAddress) -> Approval {
        let shown = |file: usize| self.files.get(file).cloned();
        let routed: Vec<NormalAddress> = addr
            .routed
            .iter()
            .map(|r| NormalAddress::with_delimiters(r, &self.delimiters))
            .collect();
        let forms = std::iter::once((addr, None)).chain(routed.iter().map(|r| (r, Some(r))));
        for (form, routed_as) in forms.clone() {
            if let Some(src) = self.deny.lookup(form) {
                return Approval {
                    outcome: ApprovalOutcome::Denied,
                    entry: Some(src.entry.clone()),
                    file: shown(src.file),
                    routed_as: routed_as.map(|r| r.full.clone()),
                };
            }
        }
        let mut approved = None;
        for (form, routed_as) in forms {
            match self.allow.lookup(form) {
                Some(src) => {
                    approved.get_or_insert(Approval {
                        outcome: ApprovalOutcome::Approved,
                        entry: Some(src.entry.clone()),
                        file: shown(src.file),
                        routed_as: None,
                    });
                }
                None => {
                    return Approval {
                        outcome: ApprovalOutcome::NotApproved,
                        entry: None,
                        file: Some(self.not_approved_by.file.clone()),
                        routed_as: routed_as.map(|r| r.full.clone()),
                    }
                }
            }
        }
        approved.unwrap_or(Approval {
            outcome: ApprovalOutcome::NotApproved,
            entry: None,
            file: Some(self.not_approved_by.file.clone()),
            routed_as: None,
        })
    }

    fn approval_rejection(a: &Approval) -> Option<Rejection> {
        let by = RuleRef {
            file: a.file.clone().unwrap_or_default(),
            rule: "[recipients]".into(),
        };
        match a.outcome {
            ApprovalOutcome::Approved => None,
            ApprovalOutcome::Denied => Some(Rejection {
                reason: format!(
                    "recipient denied by \"{}\"{}",
                    a.entry.as_deref().unwrap_or(""),
                    routed_note(a)
                ),
                by,
            }),
            ApprovalOutcome::NotApproved => Some(Rejection {
                reason: format!("recipient not approved{}", routed_note(a)),
                by,
            }),
        }
    }

    /// RCPT-time decision: the allow/deny lists and the rules whose conditions do not
    /// depend on content (only `from`, `to`, `client`). A matching `reject` rule refuses;
    /// a matching `encrypt` rule whose `if_no_certificate` is `reject` (the default)
    /// refuses when `has_certificate(rcpt)` is false. Content rules wait for DATA.
    pub fn judge_rcpt(
        &self,
        env: &Envelope,
        rcpt: &str,
        has_certificate: &dyn Fn(&str) -> bool,
    ) -> Result<(), Rejection> {
        let addr = self.read_address(rcpt).map_err(|e| Rejection {
            reason: e.to_string(),
            by: RuleRef::built_in(ADDRESS_SYNTAX),
        })?;
        if let Some(r) = Self::approval_rejection(&self.approval(&addr)) {
            return Err(r);
        }
        let from = self.read_sender(env.from);
        let mut scratch = Vec::new();
        let mut needs_certificate: Option<&Rule> = None;
        for &i in &self.rcpt_rules {
            let Some(rule) = self.rules.get(i) else {
                continue;
            };
            scratch.clear();
            if !rule.envelope_matches(env.client, &from, &mut scratch)
                || self.to_matches(rule, &addr).is_err()
            {
                continue;
            }
            if let Some(reason) = &rule.actions.reject {
                return Err(Rejection {
                    reason: reason.clone(),
                    by: rule.id.clone(),
                });
            }
            if needs_certificate.is_none() && rule.actions.encrypt == Some(NoCertFallback::Reject) {
                needs_certificate = Some(rule);
            }
        }
        if let Some(rule) = needs_certificate {
            if !has_certificate(&addr.full) {
                return Err(Rejection {
                    reason:
                        "no S/MIME certificate or OpenPGP key for this recipient, and policy requires encryption"
                            .into(),
                    by: rule.id.clone(),
                });
            }
        }
        Ok(())
    }

    /// DATA-time decision per recipient (same order as `rcpts`): the lists, then every rule.
    /// The message is parsed once with mail-parser, and only when a rule looks at content.
    pub fn judge_message(
        &self,
        env: &Envelope,
        rcpts: &[String],
        message: &[u8],
    ) -> Vec<RecipientVerdict> {
        self.verdicts(
            env,
            rcpts,
            &MessageView::for_rules(message, self.needs_parse),
        )
    }

    /// [`PolicySet::judge_message`] for a message the pipeline has read once and found
    /// within the MIME limits: the rules see its header index and MIME tree as they are.
    pub fn judge_read_message(
        &self,
        env: &Envelope,
        rcpts: &[String],
        message: &crate::message::Message<'_>,
    ) -> Vec<RecipientVerdict> {
        self.verdicts(
            env,
            rcpts,
            &MessageView::of_message(message, self.needs_parse),
        )
    }

    fn verdicts(
        &self,
        env: &Envelope,
        rcpts: &[String],
        view: &MessageView,
    ) -> Vec<RecipientVerdict> {
        self.evaluate(env, rcpts, view, false)
            .into_iter()
            .map(|r| r.verdict)
            .collect()
    }

    /// Like [`PolicySet::judge_message`], with the evidence for each decision.
    pub fn explain(&self, env: &Envelope, rcpts: &[String], message: &[u8]) -> Explanation {
        self.explain_view(env, rcpts, &MessageView::new(message))
    }

    /// [`PolicySet::explain`] for a message the pipeline has read once
    /// ([`PolicySet::judge_read_message`]): the evidence of exactly what it judged.
    pub fn explain_read_message(
        &self,
        env: &Envelope,
        rcpts: &[String],
        message: &crate::message::Message<'_>,
    ) -> Explanation {
        self.explain_view(env, rcpts, &MessageView::of_message(message, true))
    }

    fn explain_view(&self, env: &Envelope, rcpts: &[String], view: &MessageView) -> Explanation {
        let recipients = self.evaluate(env, rcpts, view, true);
        Explanation {
            policy_version: self.version.clone(),
            client: env.client.to_owned(),
            from: self.read_sender(env.from),
            message: MessageSummary {
                size: view.size,
                parsed: view.parsed,
                subject: view.subject.clone(),
                texts: view.texts.iter().map(|(s, _)| s.0.clone()).collect(),
                attachments: view
                    .attachments
                    .iter()
                    .map(|a| AttachmentSummary {
                        name: a.name.clone(),
                        content_type: a.content_type.clone(),
                    })
                    .collect(),
            },
            recipients,
        }
    }

    /// The one evaluation behind judge_message and explain.
    fn evaluate(
        &self,
        env: &Envelope,
        rcpts: &[String],
        view: &MessageView,
        explain: bool,
    ) -> Vec<RecipientExplanation> {
        let from = self.read_sender(env.from);
        let read: Vec<ReadAddress> = rcpts.iter().map(|r| self.read_address(r)).collect();
        // An unreadable address is judged as the empty address: no entry covers it, and
        // its verdict below is the address error.
        let addrs: Vec<NormalAddress> = read
            .iter()
            .map(|r| r.clone().unwrap_or_else(|_| NormalAddress::new("")))
            .collect();
        let approvals: Vec<Approval> = addrs
            .iter()
            .zip(&read)
            .map(|(a, r)| match r {
                Ok(_) => self.approval(a),
                Err(_) => Approval {
                    outcome: ApprovalOutcome::NotApproved,
                    entry: None,
                    file: Some(RuleRef::BUILT_IN.into()),
                    routed_as: None,
                },
            })
            .collect();
        let approved: Vec<bool> = approvals
            .iter()
            .map(|a| a.outcome == ApprovalOutcome::Approved)
            .collect();
        let scan = Scan::new(view, &self.banks, explain);
        // Per recipient: (rule index, evidence).
        let mut matched: Vec<Vec<(usize, Vec<Evidence>)>> = vec![Vec::new(); rcpts.len()];
        let mut env_evidence = Vec::new();
        let mut content_evidence = Vec::new();
        let mut to_hits = Vec::new();
        for (ri, rule) in self.rules.iter().enumerate() {
            env_evidence.clear();
            if !rule.envelope_matches(env.client, &from, &mut env_evidence) {
                continue;
            }
            to_hits.clear();
            for (i, addr) in addrs.iter().enumerate() {
                if !approved[i] {
                    continue;
                }
                if let Ok(g) = self.to_matches(rule, addr) {
                    to_hits.push((i, g));
                }
            }
            if to_hits.is_empty() {
                continue;
            }
            content_evidence.clear();
            if !rule.content_matches(&scan, &mut content_evidence) {
                continue;
            }
            for &(i, g) in &to_hits {
                let mut ev = env_evidence.clone();
                if let (Some(g), Some(a)) = (g, addrs.get(i)) {
                    ev.push(Evidence::new("to", g.as_str(), &a.full, None));
                }
                ev.extend(content_evidence.iter().cloned());
                if let Some(m) = matched.get_mut(i) {
                    m.push((ri, ev));
                }
            }
        }
        rcpts
            .iter()
            .zip(read)
            .zip(approvals)
            .zip(matched)
            .map(|(((rcpt, read), approval), matches)| {
                let verdict = match (&read, Self::approval_rejection(&approval)) {
                    (Err(e), _) => RecipientVerdict::Reject {
                        reason: e.to_string(),
                        by: RuleRef::built_in(ADDRESS_SYNTAX),
                    },
                    (Ok(_), Some(r)) => RecipientVerdict::Reject {
                        reason: r.reason,
                        by: r.by,
                    },
                    (Ok(_), None) if view.hazard.is_some() => RecipientVerdict::Reject {
                        reason: view.hazard.map(|h| h.to_string()).unwrap_or_default(),
                        by: RuleRef::built_in(MIME_LIMITS),
                    },
                    (Ok(_), None) => self.combine(matches.iter().map(|(ri, _)| *ri)),
                };
                let matched_rules = matches
                    .into_iter()
                    .filter_map(|(ri, evidence)| {
                        let rule = self.rules.get(ri)?;
                        Some(RuleMatch {
                            rule: rule.id.clone(),
                            evidence,
                            actions: rule.actions.names(),
                        })
                    })
                    .collect();
                let (judged_as, subaddress_of) = match read {
                    Ok(a) => (Some(a.full), a.base),
                    Err(_) => (None, None),
                };
                RecipientExplanation {
                    recipient: rcpt.clone(),
                    judged_as,
                    subaddress_of,
                    approval,
                    matched_rules,
                    verdict,
                }
            })
            .collect()
    }

    /// A rule's `to` condition against the address, then against its subaddress base
    /// (mail to `ceo+x@` lands in `ceo@`'s mailbox, so rules about `ceo@` apply).
    /// With routing characters allowed, the addresses the upstream may route it to are
    /// tried too (rules only add actions, so matching more forms never relaxes a policy).
    fn to_matches<'r>(
        &self,
        rule: &'r Rule,
        addr: &NormalAddress,
    ) -> Result<Option<&'r crate::glob::Glob>, ()> {
        let one = |a: &NormalAddress| {
            rule.to_matches(&a.full).or_else(|e| match &a.base {
                Some(b) => rule.to_matches(b),
                None => Err(e),
            })
        };
        one(addr).or_else(|e| {
            addr.routed
                .iter()
                .find_map(|r| one(&NormalAddress::with_delimiters(r, &self.delimiters)).ok())
                .ok_or(e)
        })
    }

    /// Folds the actions of the matching rules (in policy order) into one verdict:
    /// `reject` wins; the other actions add up. Where rules disagree, stripping wins over
    /// zipping, the most protective `if_no_certificate` wins (see [`most_protective`]),
    /// and the first `password_to` and the first `encryption` order named are used.
    fn combine(&self, matching: impl Iterator<Item = usize>) -> RecipientVerdict {
        let (mut sign, mut encrypt, mut strip, mut zip) = (false, false, false, false);
        let mut fallback: Option<NoCertFallback> = None;
        let mut password_to: Option<String> = None;
        let mut order: Vec<CryptoKind> = Vec::new();
        let mut rules = Vec::new();
        for rule in matching.filter_map(|i| self.rules.get(i)) {
            let a = &rule.actions;
            if let Some(reason) = &a.reject {
                return RecipientVerdict::Reject {
                    reason: reason.clone(),
                    by: rule.id.clone(),
                };
            }
            sign |= a.sign;
            encrypt |= a.encrypt.is_some();
            strip |= a.attachments == AttachmentAction::Strip;
            zip |= a.attachments == AttachmentAction::Zip;
            if let Some(f) = a.encrypt {
                fallback = Some(match fallback {
                    None => f,
                    Some(old) => most_protective(old, f),
                });
            }
            if password_to.is_none() {
                password_to.clone_from(&a.password_to);
            }
            if order.is_empty() {
                order.clone_from(&a.encryption);
            }
            rules.push(rule.id.clone());
        }
        let attachments = if strip {
            Attachments::Strip
        } else if zip {
            Attachments::Zip {
                password_to: password_to.clone(),
            }
        } else {
            Attachments::Keep
        };
        let crypto = if encrypt {
            let if_no_key = match fallback.unwrap_or_default() {
                NoCertFallback::Reject => IfNoKey::Reject,
                NoCertFallback::StripAttachments => IfNoKey::Strip,
                NoCertFallback::ZipAttachments => IfNoKey::Zip { password_to },
            };
            Crypto::Encrypt {
                sign,
                order,
                if_no_key,
            }
        } else if sign {
            Crypto::Sign { order }
        } else {
            Crypto::None
        };
        RecipientVerdict::Accept {
            actions: Actions {
                attachments,
                crypto,
            },
            rules,
        }
    }
}

/// ` (as the upstream may route it: <x>)` when a routed form decided.
fn routed_note(a: &Approval) -> String {
    a.routed_as
        .as_deref()
        .map(|r| format!(" (as the upstream may route it: <{r}>)"))
        .unwrap_or_default()
}

/// Reject, then strip-attachments, then zip-attachments.
fn most_protective(a: NoCertFallback, b: NoCertFallback) -> NoCertFallback {
    let rank = |f: NoCertFallback| match f {
        NoCertFallback::Reject => 0,
        NoCertFallback::StripAttachments => 1,
        NoCertFallback::ZipAttachments => 2,
    };
    if rank(a) <= rank(b) {
        a
    } else {
        b
    }
}

fn short_hex(digest: &[u8]) -> String {
    crate::hex::lower(&digest[..digest.len().min(6)])
}

#[cfg(test)]
mod tests;
