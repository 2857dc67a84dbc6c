//! Compiled rules and how one rule is tested against an envelope, a recipient and a message.
//!
//! A [`Rule`] holds its conditions already compiled (globs, regexes, detector choices).
//! Testing is split by what a condition depends on, so that the policy set can test each
//! part once: envelope conditions (`from`, `client`) once per message, `to` once per
//! recipient, content conditions once per message through a shared [`Scan`].
//! Invariant: a condition that is absent always holds; a list condition holds when any
//! of its entries matches; a rule matches when all its present conditions hold.

use super::content::MessageView;
use super::detectors::{Detector, Hit};
use super::explain::Evidence;
use super::patterns::PatternBank;
use crate::glob::Glob;
use crate::policy::verdict::{NoCertFallback, RuleRef};
use std::cell::OnceCell;

/// A `body` condition entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyPattern {
    /// Index into [`Banks::body`].
    Regex(usize),
    /// A built-in detector.
    Detector(Detector),
}

/// Every regex of the policy set, one bank per condition kind.
#[derive(Debug, Default)]
pub(crate) struct Banks {
    /// `body` regexes.
    pub(crate) body: PatternBank,
    /// `subject` regexes.
    pub(crate) subject: PatternBank,
    /// `header` regexes (the part after `Name:`).
    pub(crate) header: PatternBank,
    /// For each `header` entry: lower-case field name and index into `header`.
    pub(crate) header_entries: Vec<HeaderEntry>,
}

/// One `header` entry: `"Name: regex"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeaderEntry {
    /// As written.
    pub(crate) source: String,
    /// Field name, lower case.
    pub(crate) name: String,
    /// Index into [`Banks::header`].
    pub(crate) pattern: usize,
}

/// What one rule does to attachments (its `password_to` is kept beside it, in
/// [`RuleActions`], because the `zip-attachments` fallback uses it too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum AttachmentAction {
    /// Neither `strip-attachments` nor `zip-attachments`.
    #[default]
    Keep,
    /// `strip-attachments`.
    Strip,
    /// `zip-attachments`.
    Zip,
}

/// A rule's actions as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RuleActions {
    /// `Some(reason)` when the rule rejects.
    pub(crate) reject: Option<String>,
    /// `sign`.
    pub(crate) sign: bool,
    /// `Some` when the rule says `encrypt`: what happens without a certificate
    /// (`if_no_certificate`, default [`NoCertFallback::Reject`]).
    pub(crate) encrypt: Option<NoCertFallback>,
    /// `strip-attachments` or `zip-attachments` (a rule may not say both).
    pub(crate) attachments: AttachmentAction,
    /// Only when the rule zips (as an action or as `if_no_certificate`): where the
    /// password goes.
    pub(crate) password_to: Option<String>,
    /// The rule's own `encryption` order (`smime`, `openpgp`); empty means `[policy]`'s.
    pub(crate) encryption: Vec<crate::policy::verdict::CryptoKind>,
}

impl RuleActions {
    /// The action names as written in policy files.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.reject.is_some() {
            v.push("reject".to_owned());
        }
        if self.sign {
            v.push("sign".into());
        }
        if self.encrypt.is_some() {
            v.push("encrypt".into());
        }
        match self.attachments {
            AttachmentAction::Keep => {}
            AttachmentAction::Strip => v.push("strip-attachments".into()),
            AttachmentAction::Zip => v.push("zip-attachments".into()),
        }
        v
    }
}

/// One `[[rule]]`, compiled.
#[derive(Debug)]
pub(crate) struct Rule {
    /// File and name, for replies, explain and the audit log.
    pub(crate) id: RuleRef,
    /// Line and column of the `[[rule]]`'s name (or table) for warnings.
    pub(crate) pos: (usize, usize),
    pub(crate) from: Option<Vec<Glob>>,
    pub(crate) to: Option<Vec<Glob>>,
    pub(crate) client: Option<Vec<String>>,
    /// Line and column of each `client` entry, for [`super::PolicySet::check_clients`].
    pub(crate) client_pos: Vec<(usize, usize)>,
    /// Indexes into [`Banks::subject`].
    pub(crate) subject: Option<Vec<usize>>,
    /// Indexes into [`Banks::header_entries`].
    pub(crate) header: Option<Vec<usize>>,
    pub(crate) body: Option<Vec<BodyPattern>>,
    pub(crate) attachment_name: Option<Vec<Glob>>,
    pub(crate) attachment_type: Option<Vec<Glob>>,
    /// Bytes, and the size as written.
    pub(crate) size_over: Option<(u64, String)>,
    pub(crate) actions: RuleActions,
}

/// The conditions of a rule in a comparable form, for the "shadowed by reject" warning.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ConditionKey(pub(crate) &'static str, pub(crate) Vec<String>);

impl Rule {
    /// True when no condition looks at the message content: the rule decides at RCPT time.
    pub(crate) fn is_content_free(&self) -> bool {
        self.subject.is_none()
            && self.header.is_none()
            && self.body.is_none()
            && self.attachment_name.is_none()
            && self.attachment_type.is_none()
            && self.size_over.is_none()
    }

    /// Every present condition with its entries sorted, for comparisons between rules.
    pub(crate) fn condition_keys(&self, banks: &Banks) -> Vec<ConditionKey> {
        fn globs(k: &'static str, g: &Option<Vec<Glob>>) -> Option<ConditionKey> {
            g.as_ref().map(|g| {
                let mut v: Vec<String> = g.iter().map(|g| g.as_str().to_lowercase()).collect();
                v.sort();
                ConditionKey(k, v)
            })
        }
        let mut out: Vec<ConditionKey> = [
            globs("from", &self.from),
            globs("to", &self.to),
            globs("attachment_name", &self.attachment_name),
            globs("attachment_type", &self.attachment_type),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut push = |k: &'static str, mut v: Vec<String>| {
            v.sort();
            out.push(ConditionKey(k, v));
        };
        if let Some(c) = &self.client {
            push("client", c.clone());
        }
        if let Some(s) = &self.subject {
            let src = |i: &usize| banks.subject.sources.get(*i).cloned().unwrap_or_default();
            push("subject", s.iter().map(src).collect());
        }
        if let Some(h) = &self.header {
            let src = |i: &usize| {
                banks
                    .header_entries
                    .get(*i)
                    .map(|e| e.source.clone())
                    .unwrap_or_default()
            };
            push("header", h.iter().map(src).collect());
        }
        if let Some(b) = &self.body {
            push("body", b.iter().map(|p| p.source(banks)).collect());
        }
        if let Some((n, _)) = &self.size_over {
            push("size_over", vec![n.to_string()]);
        }
        out
    }

    /// `from` and `client`: the parts that depend only on the envelope.
    /// `from` is the envelope sender, already lower-cased.
    pub(crate) fn envelope_matches(
        &self,
        client: &str,
        from: &str,
        evidence: &mut Vec<Evidence>,
    ) -> bool {
        if let Some(globs) = &self.from {
            match globs.iter().find(|g| g.matches_lowered(from)) {
                Some(g) => evidence.push(Evidence::new("from", g.as_str(), from, None)),
                None => return false,
            }
        }
        if let Some(clients) = &self.client {
            match clients.iter().find(|c| c.as_str() == client) {
                Some(c) => evidence.push(Evidence::new("client", c, client, None)),
                None => return false,
            }
        }
        true
    }

    /// The `to` glob that matches the (lower-cased) recipient; `Ok(None)` when the rule has no `to`.
    pub(crate) fn to_matches(&self, rcpt: &str) -> Result<Option<&Glob>, ()> {
        match &self.to {
            None => Ok(None),
            Some(globs) => globs
                .iter()
                .find(|g| g.matches_lowered(rcpt))
                .map(Some)
                .ok_or(()),
        }
    }

    /// All content conditions; on success `evidence` says what matched.
    pub(crate) fn content_matches(&self, scan: &Scan<'_>, evidence: &mut Vec<Evidence>) -> bool {
        let view = scan.view;
        if let Some((limit, written)) = &self.size_over {
            if (view.size as u64) <= *limit {
                return false;
            }
            evidence.push(Evidence::new(
                "size_over",
                written,
                &format!("{} bytes", view.size),
                None,
            ));
        }
        if let Some(attachment_globs) = &self.attachment_name {
            let found = view.attachments.iter().find_map(|a| {
                let name = a.name.as_deref()?;
                let lowered = a.name_lower.as_deref()?;
                attachment_globs
                    .iter()
                    .find(|g| g.matches_lowered(lowered))
                    .map(|g| (g, name))
            });
            match found {
                Some((g, name)) => {
                    evidence.push(Evidence::new("attachment_name", g.as_str(), name, None))
                }
                None => return false,
            }
        }
        if let Some(type_globs) = &self.attachment_type {
            let found = view.attachments.iter().find_map(|a| {
                type_globs
                    .iter()
                    .find(|g| g.matches_lowered(&a.content_type))
                    .map(|g| (g, a))
            });
            match found {
                Some((g, a)) => evidence.push(Evidence::new(
                    "attachment_type",
                    g.as_str(),
                    &a.content_type,
                    a.name.as_ref().map(|n| format!("attachment \"{n}\"")),
                )),
                None => return false,
            }
        }
        if let Some(subject) = &self.subject {
            let hits = scan.subject_hits();
            match subject
                .iter()
                .find(|i| hits.get(**i).copied().unwrap_or(false))
            {
                Some(&i) => {
                    let range = scan.banks.subject.find(i, &view.subject);
                    let src = scan.banks.subject.sources.get(i).map(String::as_str);
                    evidence.push(Evidence::new(
                        "subject",
                        src.unwrap_or(""),
                        &snippet(&view.subject, range),
                        None,
                    ));
                }
                None => return false,
            }
        }
        if let Some(headers) = &self.header {
            let hits = scan.header_hits();
            match headers
                .iter()
                .find(|i| hits.get(**i).copied().unwrap_or(false))
            {
                Some(&i) => {
                    let (pattern, matched) = scan.header_evidence(i);
                    evidence.push(Evidence::new("header", &pattern, &matched, None));
                }
                None => return false,
            }
        }
        if let Some(body) = &self.body {
            let found = body.iter().find(|p| scan.body_matches(**p));
            match found {
                Some(p) => {
                    if scan.explain {
                        let (matched, location) = scan.body_evidence(*p);
                        evidence.push(Evidence::new(
                            "body",
                            &p.source(scan.banks),
                            &matched,
                            location,
                        ));
                    } else {
                        evidence.push(Evidence::new("body", "", "", None));
                    }
                }
                None => return false,
            }
        }
        true
    }
}

impl BodyPattern {
    /// As written in the policy file.
    pub(crate) fn source(&self, banks: &Banks) -> String {
        match self {
            BodyPattern::Regex(i) => banks.body.sources.get(*i).cloned().unwrap_or_default(),
            BodyPattern::Detector(d) => format!("builtin:{}", d.name()),
        }
    }
}

/// Up to 60 characters around a match, on one line; the whole text when no range is given.
fn snippet(text: &str, range: Option<std::ops::Range<usize>>) -> String {
    let part = range.and_then(|r| text.get(r)).unwrap_or(text);
    let mut s: String = part
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(60)
        .collect();
    if part.chars().count() > 60 {
        s.push('…');
    }
    s
}

/// Per-message memo of pattern searches: each bank runs once over its texts, detectors at
/// most once each, and only when a rule needs them.
pub(crate) struct Scan<'a> {
    pub(crate) view: &'a MessageView,
    pub(crate) banks: &'a Banks,
    /// True for `explain`: gather the matched text for evidence.
    pub(crate) explain: bool,
    body_hits: OnceCell<Vec<bool>>,
    subject_hits: OnceCell<Vec<bool>>,
    /// Per header entry (not per pattern): does a field of that name match?
    header_hits: OnceCell<Vec<bool>>,
    detector_hits: [OnceCell<Option<(usize, Hit)>>; Detector::ALL.len()],
    /// Per text: which detectors have a candidate in it (one combined pass per text).
    detector_candidates: OnceCell<Vec<[bool; Detector::ALL.len()]>>,
}

impl<'a> Scan<'a> {
    pub(crate) fn new(view: &'a MessageView, banks: &'a Banks, explain: bool) -> Self {
        Scan {
            view,
            banks,
            explain,
            body_hits: OnceCell::new(),
            subject_hits: OnceCell::new(),
            header_hits: OnceCell::new(),
            detector_hits: Default::default(),
            detector_candidates: OnceCell::new(),
        }
    }

    fn body_hits(&self) -> &[bool] {
        self.body_hits.get_or_init(|| {
            let mut hits = vec![false; self.banks.body.len()];
            for (_, text) in &self.view.texts {
                self.banks.body.matching(text, &mut hits);
                if hits.iter().all(|h| *h) {
                    break;
                }
            }
            hits
        })
    }

    fn subject_hits(&self) -> &[bool] {
        self.subject_hits.get_or_init(|| {
            let mut hits = vec![false; self.banks.subject.len()];
            self.banks.subject.matching(&self.view.subject, &mut hits);
            hits
        })
    }

    fn header_hits(&self) -> &[bool] {
        self.header_hits.get_or_init(|| {
            let entries = &self.banks.header_entries;
            let mut out = vec![false; entries.len()];
            let mut hits = vec![false; self.banks.header.len()];
            for (name, values) in &self.view.headers {
                if !entries.iter().any(|e| e.name == *name) {
                    continue;
                }
                for v in values {
                    hits.iter_mut().for_each(|h| *h = false);
                    self.banks.header.matching(v, &mut hits);
                    for (e, o) in entries.iter().zip(out.iter_mut()) {
                        if e.name == *name && hits.get(e.pattern).copied().unwrap_or(false) {
                            *o = true;
                        }
                    }
                }
            }
            out
        })
    }

    /// The entry as written and the matching part of the first matching value.
    fn header_evidence(&self, entry: usize) -> (String, String) {
        let Some(e) = self.banks.header_entries.get(entry) else {
            return (String::new(), String::new());
        };
        for (name, values) in &self.view.headers {
            if *name != e.name {
                continue;
            }
            for v in values {
                if let Some(r) = self.banks.header.find(e.pattern, v) {
                    return (e.source.clone(), snippet(v, Some(r)));
                }
            }
        }
        (e.source.clone(), String::new())
    }

    fn detector(&self, d: Detector) -> Option<&(usize, Hit)> {
        let slot = Detector::ALL.iter().position(|x| *x == d)?;
        self.detector_hits
            .get(slot)?
            .get_or_init(|| {
                let candidates = self.detector_candidates.get_or_init(|| {
                    self.view
                        .texts
                        .iter()
                        .map(|(_, t)| super::detectors::candidates(t))
                        .collect()
                });
                self.view
                    .texts
                    .iter()
                    .zip(candidates)
                    .enumerate()
                    .filter(|(_, (_, c))| c.get(slot).copied().unwrap_or(true))
                    .find_map(|(i, ((_, t), _))| d.find(t).map(|h| (i, h)))
            })
            .as_ref()
    }

    fn body_matches(&self, p: BodyPattern) -> bool {
        match p {
            BodyPattern::Regex(i) => self.body_hits().get(i).copied().unwrap_or(false),
            BodyPattern::Detector(d) => self.detector(d).is_some(),
        }
    }

    /// The matched text (redacted for detectors) and where it was found.
    fn body_evidence(&self, p: BodyPattern) -> (String, Option<String>) {
        match p {
            BodyPattern::Regex(i) => {
                for (src, t) in &self.view.texts {
                    if let Some(r) = self.banks.body.find(i, t) {
                        return (snippet(t, Some(r)), Some(src.0.clone()));
                    }
                }
                (String::new(), None)
            }
            BodyPattern::Detector(d) => match self.detector(d) {
                Some((i, hit)) => (
                    hit.redacted.clone(),
                    self.view.texts.get(*i).map(|(s, _)| s.0.clone()),
                ),
                None => (String::new(), None),
            },
        }
    }
}
