//! Reading policy files: TOML with spans → compiled [`Rule`]s and recipient lists.
//!
//! Every file is parsed and checked completely; every problem becomes a [`Diagnostic`]
//! with `file:line:col` pointing at the offending key or entry, so one `sealgate check`
//! shows all mistakes at once. Unknown keys, actions, detectors and values are errors
//! (with a "did you mean" where one is close), never ignored.
//! Invariant: when [`compile`] reports no error, every rule has a name and at least one
//! action, every regex and glob compiled, and at least one recipient is allowed.

use super::detectors::Detector;
use super::diagnostic::{Diagnostic, Severity, Sink};
use super::patterns::{check_syntax, PatternBank, PatternOrigin};
use super::recipients::{parse_entry, AddressList, EntrySource, NormalAddress};
use super::rules::{AttachmentAction, Banks, BodyPattern, HeaderEntry, Rule, RuleActions};
use crate::glob::Glob;
use crate::policy::verdict::{CryptoKind, NoCertFallback, RuleRef};
use crate::units::parse_size;
use std::collections::HashMap;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Keys a `[[rule]]` accepts.
const RULE_KEYS: &[&str] = &[
    "name",
    "from",
    "to",
    "client",
    "subject",
    "header",
    "body",
    "attachment_name",
    "attachment_type",
    "size_over",
    "actions",
    "message",
    "if_no_certificate",
    "password_to",
    "encryption",
];
const ACTIONS: &[&str] = &[
    "reject",
    "sign",
    "encrypt",
    "strip-attachments",
    "zip-attachments",
];
const FALLBACKS: &[&str] = &["reject", "zip-attachments", "strip-attachments"];

/// The result of compiling a whole policy set.
#[derive(Debug, Default)]
pub(crate) struct Compiled {
    pub(crate) allow: AddressList,
    pub(crate) deny: AddressList,
    /// The first file with an `allow` list: named when a recipient is not approved.
    pub(crate) allow_file: Option<usize>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) banks: Banks,
    pub(crate) diagnostics: Vec<Diagnostic>,
}

/// Compiles `files` (display name, contents), in the given order.
pub(crate) fn compile(files: &[(String, String)]) -> Compiled {
    let mut c = Compiled::default();
    let mut recipients_seen: Option<(usize, (usize, usize))> = None;
    for (file_idx, (name, text)) in files.iter().enumerate() {
        let mut sink = Sink::new(name.clone(), text);
        let (doc, errors) = DeTable::parse_recoverable(text);
        if !errors.is_empty() {
            for e in errors {
                let at = e.span().map(|s| s.start).unwrap_or(0);
                let msg = e.message().lines().next().unwrap_or("").trim().to_owned();
                sink.error(at, format!("TOML syntax error: {msg}"));
            }
            c.diagnostics.append(&mut sink.out);
            continue;
        }
        let mut file = FileCompiler {
            sink,
            file_idx,
            banks: &mut c.banks,
            rule_names: HashMap::new(),
        };
        for (key, value) in doc.get_ref().iter() {
            let k: &str = key.get_ref();
            match k {
                "recipients" => {
                    let pos = file.sink.pos(key.span().start);
                    if recipients_seen.is_none() {
                        recipients_seen = Some((file_idx, pos));
                    }
                    file.recipients(value, &mut c.allow, &mut c.deny, &mut c.allow_file);
                }
                "rule" => match value.get_ref() {
                    DeValue::Array(items) => {
                        for item in items {
                            if let Some(rule) = file.rule(item) {
                                c.rules.push(rule);
                            }
                        }
                    }
                    _ => file.sink.error(
                        key.span().start,
                        "`rule` must be an array of tables: write each rule as [[rule]] (two brackets)",
                    ),
                },
                other => {
                    let hint = suggest(other, &["recipients", "rule"])
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    file.sink.error(
                        key.span().start,
                        format!("unknown key `{other}`{hint}: a policy file holds [recipients] and [[rule]] tables"),
                    );
                }
            }
        }
        c.diagnostics.append(&mut file.sink.out);
    }
    for bank in [&mut c.banks.body, &mut c.banks.subject, &mut c.banks.header] {
        if let Err(errors) = bank.build() {
            for (o, message) in errors {
                c.diagnostics.push(Diagnostic {
                    file: o.file,
                    line: o.line,
                    col: o.col,
                    message: format!("{}: {message}", o.what),
                    severity: Severity::Error,
                });
            }
        }
    }

    let any_errors = c.diagnostics.iter().any(|d| d.severity == Severity::Error);
    if c.allow.is_empty() && !any_errors {
        let example = "add [recipients] with allow = [\"example.com\", \"*.example.com\"] (write allow = [\"*\"] to approve every recipient)";
        let d = match recipients_seen {
            Some((f, (line, col))) => Diagnostic {
                file: files[f].0.clone(),
                line,
                col,
                message: format!(
                    "[recipients] approves no recipient, so nothing would be relayed: {example}"
                ),
                severity: Severity::Error,
            },
            None => Diagnostic {
                file: files.first().map(|f| f.0.clone()).unwrap_or_default(),
                line: 1,
                col: 1,
                message: format!(
                    "no policy file has a [recipients] table, which is required: {example}"
                ),
                severity: Severity::Error,
            },
        };
        c.diagnostics.push(d);
    }
    if !any_errors {
        set_warnings(&mut c, files);
    }
    c
}

/// Warnings that need the whole set: `to` entries no approved recipient can match, and
/// rules shadowed by a `reject` rule whose conditions they include.
fn set_warnings(c: &mut Compiled, files: &[(String, String)]) {
    let mut out = Vec::new();
    let file_of = |r: &RuleRef| r.file.clone();
    for rule in &c.rules {
        let (line, col) = rule.pos;
        if let Some(to) = &rule.to {
            for g in to {
                let pat = g.as_str().to_lowercase();
                let Some((local, domain)) = pat.rsplit_once('@') else {
                    continue;
                };
                if domain.contains(['*', '?']) || domain.is_empty() {
                    continue;
                }
                let never = if !local.contains(['*', '?']) {
                    let a = NormalAddress::new(&pat);
                    c.allow.lookup(&a).is_none() || c.deny.lookup(&a).is_some()
                } else {
                    !c.allow.covers_some_address_in(domain) || c.deny.covers_whole_domain(domain)
                };
                if never {
                    out.push(Diagnostic {
                        file: file_of(&rule.id),
                        line,
                        col,
                        message: format!(
                            "rule \"{}\": `to` entry \"{}\" can never match: [recipients] does not approve such recipients",
                            rule.id.rule,
                            g.as_str()
                        ),
                        severity: Severity::Warning,
                    });
                }
            }
        }
    }
    let keys: Vec<_> = c.rules.iter().map(|r| r.condition_keys(&c.banks)).collect();
    for (si, s) in c.rules.iter().enumerate() {
        for (ri, r) in c.rules.iter().enumerate() {
            if ri == si || r.actions.reject.is_none() {
                continue;
            }
            if s.actions.reject.is_some() && ri > si {
                continue;
            }
            // r's every condition appears identically in s (or is a match-all glob list).
            let implied = keys[ri].iter().all(|rk| {
                keys[si].iter().any(|sk| sk == rk)
                    || (matches!(rk.0, "from" | "to" | "attachment_name" | "attachment_type")
                        && rk.1.iter().any(|p| p == "*")
                        && (rk.0 == "from"
                            || rk.0 == "to"
                            || keys[si].iter().any(|sk| sk.0 == rk.0)))
            });
            if implied {
                out.push(Diagnostic {
                    file: s.id.file.clone(),
                    line: s.pos.0,
                    col: s.pos.1,
                    message: format!(
                        "rule \"{}\" never has an effect: {} rejects every message it matches",
                        s.id.rule, r.id
                    ),
                    severity: Severity::Warning,
                });
                break;
            }
        }
    }
    let _ = files;
    c.diagnostics.extend(out);
}

/// Compiles the tables of one file.
struct FileCompiler<'a, 't> {
    sink: Sink<'t>,
    file_idx: usize,
    banks: &'a mut Banks,
    /// Rule names seen in this file, with the line where each was first given.
    rule_names: HashMap<String, usize>,
}

type Val<'i> = Spanned<DeValue<'i>>;

impl FileCompiler<'_, '_> {
    /// A string, or a list of strings (a single string counts as a list of one).
    fn strings(&mut self, what: &str, v: &Val<'_>) -> Option<Vec<(String, usize)>> {
        let at = v.span().start;
        match v.get_ref() {
            DeValue::String(s) => Some(vec![(s.to_string(), at)]),
            DeValue::Array(items) => {
                let mut out = Vec::new();
                let mut ok = true;
                for item in items {
                    match item.get_ref() {
                        DeValue::String(s) => out.push((s.to_string(), item.span().start)),
                        other => {
                            self.sink.error(
                                item.span().start,
                                format!("{what}: expected a string, found {}", other.type_str()),
                            );
                            ok = false;
                        }
                    }
                }
                ok.then_some(out)
            }
            other => {
                self.sink.error(
                    at,
                    format!(
                        "{what}: expected a list of strings like [\"...\"], found {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    fn string(&mut self, what: &str, v: &Val<'_>) -> Option<(String, usize)> {
        match v.get_ref() {
            DeValue::String(s) => Some((s.to_string(), v.span().start)),
            other => {
                self.sink.error(
                    v.span().start,
                    format!("{what}: expected a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn recipients(
        &mut self,
        v: &Val<'_>,
        allow: &mut AddressList,
        deny: &mut AddressList,
        allow_file: &mut Option<usize>,
    ) {
        let DeValue::Table(t) = v.get_ref() else {
            self.sink.error(
                v.span().start,
                "`recipients` must be a table: write [recipients] with allow = [...] and deny = [...]",
            );
            return;
        };
        for (key, value) in t.iter() {
            let k: &str = key.get_ref();
            let list = match k {
                "allow" => &mut *allow,
                "deny" => &mut *deny,
                other => {
                    let hint = suggest(other, &["allow", "deny"])
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    self.sink.error(
                        key.span().start,
                        format!("[recipients]: unknown key `{other}`{hint}; expected `allow` and `deny`"),
                    );
                    continue;
                }
            };
            let Some(entries) = self.strings(&format!("[recipients] {k}"), value) else {
                continue;
            };
            for (raw, at) in entries {
                match parse_entry(&raw) {
                    Ok(entry) => {
                        let prev = list.insert(
                            entry,
                            EntrySource {
                                file: self.file_idx,
                                entry: raw.clone(),
                            },
                        );
                        if prev.is_some() {
                            self.sink.warning(
                                at,
                                format!("[recipients] {k}: \"{raw}\" is listed more than once"),
                            );
                        }
                        if k == "allow" && allow_file.is_none() {
                            *allow_file = Some(self.file_idx);
                        }
                    }
                    Err(e) => self.sink.error(at, format!("[recipients] {k}: {e}")),
                }
            }
        }
    }

    fn globs(&mut self, what: &str, v: &Val<'_>, mime: bool) -> Option<Vec<Glob>> {
        let entries = self.strings(what, v)?;
        let mut out = Vec::new();
        let mut ok = true;
        for (raw, at) in entries {
            if mime && raw.matches('/').count() != 1 {
                self.sink.error(
                    at,
                    format!("{what}: \"{raw}\" is not a MIME type pattern like \"application/x-msdownload\" or \"image/*\""),
                );
                ok = false;
                continue;
            }
            match Glob::new(&raw) {
                Ok(g) => out.push(g),
                Err(e) => {
                    self.sink.error(at, format!("{what}: {e}"));
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// Checks `pattern` and adds it to `bank`; `None` (error reported) when invalid.
    fn regex(&mut self, what: &str, pattern: &str, at: usize, bank: Bank) -> Option<usize> {
        if let Err(e) = check_syntax(pattern) {
            self.sink
                .error(at, format!("{what}: invalid regex \"{pattern}\": {e}"));
            return None;
        }
        if super::patterns::matches_everything(pattern) {
            self.sink.warning(
                at,
                format!("{what}: pattern \"{pattern}\" matches an empty text, so it matches every message"),
            );
        }
        let (line, col) = self.sink.pos(at);
        let origin = PatternOrigin {
            file: self.sink.file.clone(),
            line,
            col,
            what: what.to_owned(),
        };
        let bank: &mut PatternBank = match bank {
            Bank::Body => &mut self.banks.body,
            Bank::Subject => &mut self.banks.subject,
            Bank::Header => &mut self.banks.header,
        };
        Some(bank.add(pattern, origin))
    }

    /// Compiles one `[[rule]]`; `None` when it has errors (already reported). Phases:
    /// the name first (so every message can name the rule), then each key (conditions
    /// compiled, action keys kept as written), the name's own checks, the actions and
    /// their companion keys, and the empty-list warnings.
    fn rule(&mut self, item: &Val<'_>) -> Option<Rule> {
        let table_at = item.span().start;
        let DeValue::Table(t) = item.get_ref() else {
            self.sink.error(table_at, "each [[rule]] must be a table");
            return None;
        };
        let errors_before = self.error_count();
        let name = t
            .iter()
            .find(|(k, _)| {
                let k: &str = k.get_ref();
                k == "name"
            })
            .and_then(|(_, v)| self.string("rule name", v));
        let label = match &name {
            Some((n, _)) => format!("rule \"{n}\""),
            None => "rule".to_owned(),
        };
        let mut rule = Rule {
            id: RuleRef {
                file: self.sink.file.clone(),
                rule: String::new(),
            },
            pos: self.sink.pos(table_at),
            from: None,
            to: None,
            client: None,
            client_pos: Vec::new(),
            subject: None,
            header: None,
            body: None,
            attachment_name: None,
            attachment_type: None,
            size_over: None,
            actions: RuleActions::default(),
        };
        let mut written = WrittenActions::default();
        let mut empty_lists: Vec<(String, usize)> = Vec::new();
        for (key, value) in t.iter() {
            let k: &str = key.get_ref();
            if let DeValue::Array(a) = value.get_ref() {
                if a.is_empty() && k != "actions" {
                    empty_lists.push((k.to_owned(), key.span().start));
                }
            }
            self.rule_key(&label, key, value, &mut rule, &mut written);
        }
        self.rule_name(name, table_at, &mut rule);
        rule.actions = self.rule_actions(&label, table_at, written);
        for (k, at) in empty_lists {
            self.sink.warning(
                at,
                format!("{label}: `{k}` is an empty list, so the rule can never match"),
            );
        }
        (self.error_count() == errors_before).then_some(rule)
    }

    /// How many errors this file has reported so far.
    fn error_count(&self) -> usize {
        self.sink
            .out
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// One key of a `[[rule]]`: a condition is compiled into `rule`, an action key is
    /// kept in `written` for [`Self::rule_actions`], anything else is an error.
    fn rule_key(
        &mut self,
        label: &str,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        value: &Val<'_>,
        rule: &mut Rule,
        written: &mut WrittenActions,
    ) {
        let k: &str = key.get_ref();
        let what = format!("{label}: {k}");
        match k {
            "name" => {}
            "from" => rule.from = self.globs(&what, value, false),
            "to" => rule.to = self.globs(&what, value, false),
            "attachment_name" => rule.attachment_name = self.globs(&what, value, false),
            "attachment_type" => rule.attachment_type = self.globs(&what, value, true),
            "client" => {
                if let Some(list) = self.strings(&what, value) {
                    rule.client_pos = list.iter().map(|(_, at)| self.sink.pos(*at)).collect();
                    rule.client = Some(list.into_iter().map(|(s, _)| s).collect());
                }
            }
            "subject" => {
                rule.subject = self.all_or_none(&what, value, |c, what, p, at| {
                    c.regex(what, p, at, Bank::Subject)
                });
            }
            "header" => rule.header = self.all_or_none(&what, value, Self::header_pattern),
            "body" => rule.body = self.all_or_none(&what, value, Self::body_pattern),
            "size_over" => rule.size_over = self.size_over(&what, value),
            "actions" => written.actions = self.strings(&what, value),
            "message" => written.message = self.string(&what, value),
            "if_no_certificate" => written.fallback = self.fallback(&what, value),
            "password_to" => written.password_to = self.string(&what, value),
            "encryption" => written.encryption = self.encryption(&what, value),
            other => {
                let hint = suggest(other, RULE_KEYS)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                self.sink.error(
                    key.span().start,
                    format!(
                        "{label}: unknown key `{other}`{hint}; conditions are from, to, client, subject, header, body, attachment_name, attachment_type, size_over; other keys are name, actions, message, if_no_certificate, password_to, encryption"
                    ),
                );
            }
        }
    }

    /// A list condition whose entries `compile` one by one: `None` when any entry fails
    /// (each failure reported), so a half-compiled condition never matches less.
    fn all_or_none<T>(
        &mut self,
        what: &str,
        value: &Val<'_>,
        compile: impl Fn(&mut Self, &str, &str, usize) -> Option<T>,
    ) -> Option<Vec<T>> {
        let list = self.strings(what, value)?;
        let out: Vec<T> = list
            .iter()
            .filter_map(|(entry, at)| compile(self, what, entry, *at))
            .collect();
        (out.len() == list.len()).then_some(out)
    }

    /// `size_over`: a size like `"10MiB"` or a number of bytes, with the size as written.
    fn size_over(&mut self, what: &str, value: &Val<'_>) -> Option<(u64, String)> {
        let parsed = match value.get_ref() {
            DeValue::String(s) => parse_size(s)
                .map(|n| (n, s.to_string()))
                .map_err(|e| e.to_string()),
            DeValue::Integer(i) => i
                .as_str()
                .parse::<u64>()
                .map(|n| (n, format!("{n} bytes")))
                .map_err(|_| "expected a size like \"10MiB\"".to_owned()),
            other => Err(format!(
                "expected a size like \"10MiB\", found {}",
                other.type_str()
            )),
        };
        parsed
            .map_err(|e| self.sink.error(value.span().start, format!("{what}: {e}")))
            .ok()
    }

    /// `if_no_certificate`, with where it was written.
    fn fallback(&mut self, what: &str, value: &Val<'_>) -> Option<(NoCertFallback, usize)> {
        let (s, at) = self.string(what, value)?;
        let f = match s.as_str() {
            "reject" => NoCertFallback::Reject,
            "zip-attachments" => NoCertFallback::ZipAttachments,
            "strip-attachments" => NoCertFallback::StripAttachments,
            _ => {
                let hint = suggest(&s, FALLBACKS)
                    .map(|s| format!(" (did you mean \"{s}\"?)"))
                    .unwrap_or_default();
                self.sink.error(
                    at,
                    format!("{what}: unknown value \"{s}\"{hint}; expected \"reject\", \"zip-attachments\" or \"strip-attachments\""),
                );
                return None;
            }
        };
        Some((f, at))
    }

    /// A rule's own `encryption` order, with where its first entry was written; `None`
    /// when empty or when an entry is unknown (reported).
    fn encryption(&mut self, what: &str, value: &Val<'_>) -> Option<(Vec<CryptoKind>, usize)> {
        let list = self.strings(what, value)?;
        let mut kinds = Vec::new();
        for (k, at) in &list {
            match k.as_str() {
                "smime" => kinds.push(CryptoKind::Smime),
                "openpgp" => kinds.push(CryptoKind::Openpgp),
                _ => self.sink.error(
                    *at,
                    format!("{what}: unknown kind \"{k}\"; expected \"smime\" or \"openpgp\""),
                ),
            }
        }
        let at = list.first().map_or(value.span().start, |(_, at)| *at);
        (kinds.len() == list.len() && !kinds.is_empty()).then_some((kinds, at))
    }

    /// Checks the rule's name (present, printable, unique in the file) and sets the
    /// rule's id and position from it.
    fn rule_name(&mut self, name: Option<(String, usize)>, table_at: usize, rule: &mut Rule) {
        let Some((n, at)) = name else {
            self.sink.error(table_at, "[[rule]] without `name`: every rule needs name = \"...\", which appears in SMTP replies and logs");
            return;
        };
        if n.trim().is_empty() {
            self.sink.error(at, "rule name is empty");
        } else if !n.chars().all(|c| c.is_ascii_graphic() || c == ' ') || n.contains('"') {
            self.sink.error(at, format!("rule name {n:?}: use printable ASCII without double quotes, because the name appears in SMTP replies"));
        } else if let Some(&first) = self.rule_names.get(&n) {
            self.sink.error(
                at,
                format!("rule name \"{n}\" is used twice in this file (first on line {first})"),
            );
        } else {
            rule.pos = self.sink.pos(at);
            self.rule_names.insert(n.clone(), rule.pos.0);
            rule.id.rule = n;
        }
    }

    /// The words of `actions`, each at most once: the rule's actions without their
    /// companion keys, and whether it said `strip-attachments` and `zip-attachments`.
    fn action_words(
        &mut self,
        label: &str,
        table_at: usize,
        words: Option<Vec<(String, usize)>>,
    ) -> (RuleActions, bool, bool) {
        let mut acts = RuleActions::default();
        let (mut strip, mut zip) = (false, false);
        match words {
            None => self.sink.error(table_at, format!("{label} has no `actions`: write e.g. actions = [\"encrypt\"]; known actions: {}", ACTIONS.join(", "))),
            Some(list) if list.is_empty() => self.sink.error(table_at, format!("{label}: `actions` is empty; known actions: {}", ACTIONS.join(", "))),
            Some(list) => {
                for (a, at) in list {
                    let seen = match a.as_str() {
                        "reject" => acts.reject.replace(String::new()).is_some(),
                        "sign" => std::mem::replace(&mut acts.sign, true),
                        "encrypt" => acts.encrypt.replace(NoCertFallback::default()).is_some(),
                        "strip-attachments" => std::mem::replace(&mut strip, true),
                        "zip-attachments" => std::mem::replace(&mut zip, true),
                        other => {
                            let hint = suggest(other, ACTIONS)
                                .map(|s| format!(" (did you mean \"{s}\"?)"))
                                .unwrap_or_default();
                            self.sink.error(at, format!("{label}: unknown action \"{other}\"{hint}; known actions: {}", ACTIONS.join(", ")));
                            false
                        }
                    };
                    if seen {
                        self.sink.warning(at, format!("{label}: action \"{a}\" is listed twice"));
                    }
                }
            }
        }
        acts.attachments = match (strip, zip) {
            (true, _) => AttachmentAction::Strip,
            (false, true) => AttachmentAction::Zip,
            (false, false) => AttachmentAction::Keep,
        };
        (acts, strip, zip)
    }

    /// The `actions` list and the keys that only make sense with some action
    /// (`message`, `if_no_certificate`, `encryption`, `password_to`), checked together.
    fn rule_actions(
        &mut self,
        label: &str,
        table_at: usize,
        written: WrittenActions,
    ) -> RuleActions {
        let (mut acts, strip, zip) = self.action_words(label, table_at, written.actions);
        if let Some((m, at)) = written.message {
            if acts.reject.is_none() {
                self.sink.error(
                    at,
                    format!("{label}: `message` is only used with the \"reject\" action"),
                );
            } else if m.trim().is_empty()
                || m.len() > 200
                || !m.chars().all(|c| c.is_ascii_graphic() || c == ' ')
            {
                self.sink.error(at, format!("{label}: `message` must be one line of printable ASCII, at most 200 characters (it becomes the SMTP reply text)"));
            } else {
                acts.reject = Some(m.trim().to_owned());
            }
        }
        if let Some(r) = acts.reject.as_mut() {
            if r.is_empty() {
                *r = "refused by policy".to_owned();
            }
        }
        if let Some((f, at)) = written.fallback {
            match acts.encrypt.as_mut() {
                Some(fallback) => *fallback = f,
                None => self.sink.error(
                    at,
                    format!(
                        "{label}: `if_no_certificate` is only used with the \"encrypt\" action"
                    ),
                ),
            }
        }
        if let Some((kinds, at)) = written.encryption {
            if acts.encrypt.is_none() && !acts.sign {
                self.sink.error(
                    at,
                    format!("{label}: `encryption` is only used with the \"sign\" or \"encrypt\" action"),
                );
            } else {
                acts.encryption = kinds;
            }
        }
        if let Some((p, at)) = written.password_to {
            let zips = zip || acts.encrypt == Some(NoCertFallback::ZipAttachments);
            let looks_like_address =
                p.contains('@') && !p.contains(char::is_whitespace) && !p.contains(['<', '>', ',']);
            if !zips {
                self.sink.error(at, format!("{label}: `password_to` is only used with \"zip-attachments\" (as an action or as if_no_certificate)"));
            } else if !looks_like_address {
                self.sink.error(at, format!("{label}: password_to \"{p}\" is not an address like \"security@example.com\""));
            } else {
                acts.password_to = Some(p);
            }
        }
        if strip && zip {
            self.sink.error(table_at, format!("{label}: \"strip-attachments\" and \"zip-attachments\" contradict each other; choose one"));
        }
        if acts.reject.is_some()
            && (acts.sign || acts.encrypt.is_some() || acts.attachments != AttachmentAction::Keep)
        {
            self.sink.warning(
                table_at,
                format!("{label}: \"reject\" wins, so its other actions never apply"),
            );
        }
        acts
    }

    /// `"Name: regex"` → index into the header entries.
    fn header_pattern(&mut self, what: &str, entry: &str, at: usize) -> Option<usize> {
        let Some((name, pattern)) = entry.split_once(':') else {
            self.sink.error(at, format!("{what}: \"{entry}\" must be \"Field-Name: regex\", e.g. \"X-Mailer: (?i)billing\""));
            return None;
        };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b)) {
            self.sink.error(
                at,
                format!("{what}: \"{name}\" is not a header field name (in \"{entry}\")"),
            );
            return None;
        }
        let pattern = self.regex(what, pattern.trim_start(), at, Bank::Header)?;
        let name = name.to_ascii_lowercase();
        let entries = &mut self.banks.header_entries;
        if let Some(i) = entries.iter().position(|e| e.source == entry) {
            return Some(i);
        }
        entries.push(HeaderEntry {
            source: entry.to_owned(),
            name,
            pattern,
        });
        Some(entries.len() - 1)
    }

    fn body_pattern(&mut self, what: &str, entry: &str, at: usize) -> Option<BodyPattern> {
        if let Some(name) = entry.strip_prefix("builtin:") {
            return match Detector::from_name(name) {
                Some(d) => Some(BodyPattern::Detector(d)),
                None => {
                    let names: Vec<&str> = Detector::ALL.iter().map(|d| d.name()).collect();
                    let hint = suggest(name, &names)
                        .map(|s| format!(" (did you mean \"builtin:{s}\"?)"))
                        .unwrap_or_default();
                    self.sink.error(
                        at,
                        format!(
                            "{what}: unknown detector \"{entry}\"{hint}; known: {}",
                            names
                                .iter()
                                .map(|n| format!("builtin:{n}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                    None
                }
            };
        }
        self.regex(what, entry, at, Bank::Body)
            .map(BodyPattern::Regex)
    }
}

/// A rule's action keys as written, before [`FileCompiler::rule_actions`] checks them
/// together: each with the offset where it was written.
#[derive(Default)]
struct WrittenActions {
    /// `actions`.
    actions: Option<Vec<(String, usize)>>,
    /// `message` (only with `reject`).
    message: Option<(String, usize)>,
    /// `if_no_certificate` (only with `encrypt`).
    fallback: Option<(NoCertFallback, usize)>,
    /// `password_to` (only when zipping).
    password_to: Option<(String, usize)>,
    /// `encryption` (only with `sign` or `encrypt`).
    encryption: Option<(Vec<CryptoKind>, usize)>,
}

/// Which bank a regex belongs to.
#[derive(Debug, Clone, Copy)]
enum Bank {
    Body,
    Subject,
    Header,
}

/// The closest candidate within a small edit distance (also catching `-` vs `_`).
fn suggest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let w = norm(word);
    candidates
        .iter()
        .map(|c| (levenshtein(&w, &norm(c)), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("attachment-name", RULE_KEYS),
            Some("attachment_name")
        );
        assert_eq!(suggest("encrpyt", ACTIONS), Some("encrypt"));
        assert_eq!(
            suggest("strip_attachments", ACTIONS),
            Some("strip-attachments")
        );
        assert_eq!(suggest("action", RULE_KEYS), Some("actions"));
        assert_eq!(suggest("zzzzzz", RULE_KEYS), None);
    }
}
