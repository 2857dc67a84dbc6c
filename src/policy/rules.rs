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
use super::glob::Glob;
use crate::verdict::{NoCertFallback, RuleRef};
use regex::{Regex, RegexSet};
use std::cell::OnceCell;

/// A `header` condition entry: `"Name: regex"`.
#[derive(Debug)]
pub(crate) struct HeaderPattern {
    /// The entry as written.
    pub(crate) source: String,
    /// The field name, lower case.
    pub(crate) name: String,
    /// Applied to each value of each field with that name.
    pub(crate) regex: Regex,
}

/// A `body` condition entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyPattern {
    /// Index into [`BodyMatcher::regexes`].
    Regex(usize),
    /// A built-in detector.
    Detector(Detector),
}

/// Every body regex of the policy set, compiled once, and as one [`RegexSet`] when the
/// set fits the regex size limits, so that a text is scanned once for all of them.
#[derive(Debug, Default)]
pub(crate) struct BodyMatcher {
    /// The patterns as written (deduplicated).
    pub(crate) sources: Vec<String>,
    /// One compiled regex per source, for explain and for the fallback without a set.
    pub(crate) regexes: Vec<Regex>,
    /// All sources at once; `None` if it could not be built (then each regex runs alone).
    pub(crate) set: Option<RegexSet>,
}

impl BodyMatcher {
    /// Builds the set after all regexes are known.
    pub(crate) fn finish(&mut self) {
        self.set = if self.sources.is_empty() {
            None
        } else {
            RegexSet::new(&self.sources).ok()
        };
    }
}

/// A rule's actions as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RuleActions {
    /// `Some(reason)` when the rule rejects.
    pub(crate) reject: Option<String>,
    pub(crate) sign: bool,
    pub(crate) encrypt: bool,
    /// Only with `encrypt`: `None` means the default ([`NoCertFallback::Reject`]).
    pub(crate) if_no_certificate: Option<NoCertFallback>,
    pub(crate) strip_attachments: bool,
    pub(crate) zip_attachments: bool,
    pub(crate) password_to: Option<String>,
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
        if self.encrypt {
            v.push("encrypt".into());
        }
        if self.strip_attachments {
            v.push("strip-attachments".into());
        }
        if self.zip_attachments {
            v.push("zip-attachments".into());
        }
        v
    }

    /// What happens without a certificate, when this rule encrypts.
    pub(crate) fn fallback(&self) -> Option<NoCertFallback> {
        self.encrypt
            .then(|| self.if_no_certificate.unwrap_or_default())
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
    pub(crate) subject: Option<Vec<Regex>>,
    pub(crate) header: Option<Vec<HeaderPattern>>,
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
    pub(crate) fn condition_keys(&self, body: &BodyMatcher) -> Vec<ConditionKey> {
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
            push("subject", s.iter().map(|r| r.as_str().to_owned()).collect());
        }
        if let Some(h) = &self.header {
            push("header", h.iter().map(|h| h.source.clone()).collect());
        }
        if let Some(b) = &self.body {
            push("body", b.iter().map(|p| p.source(body)).collect());
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
                let lowered = name.to_lowercase();
                attachment_globs
                    .iter()
                    .find(|g| g.matches_lowered(&lowered))
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
            match subject.iter().find(|r| r.is_match(&view.subject)) {
                Some(r) => evidence.push(Evidence::new(
                    "subject",
                    r.as_str(),
                    &snippet(&view.subject, r.find(&view.subject).map(|m| m.range())),
                    None,
                )),
                None => return false,
            }
        }
        if let Some(headers) = &self.header {
            let found = headers.iter().find_map(|hp| {
                view.headers
                    .iter()
                    .filter(|(name, _)| *name == hp.name)
                    .flat_map(|(_, values)| values)
                    .find_map(|v| hp.regex.find(v).map(|m| (hp, v, m.range())))
            });
            match found {
                Some((hp, v, range)) => evidence.push(Evidence::new(
                    "header",
                    &hp.source,
                    &snippet(v, Some(range)),
                    None,
                )),
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
                            &p.source(scan.body),
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
    pub(crate) fn source(&self, body: &BodyMatcher) -> String {
        match self {
            BodyPattern::Regex(i) => body.sources.get(*i).cloned().unwrap_or_default(),
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

/// Per-message memo of body scans: regexes run once (as a set), detectors at most once each.
pub(crate) struct Scan<'a> {
    pub(crate) view: &'a MessageView,
    pub(crate) body: &'a BodyMatcher,
    /// True for `explain`: gather the matched text for evidence.
    pub(crate) explain: bool,
    regex_hits: OnceCell<Vec<bool>>,
    detector_hits: [OnceCell<Option<(usize, Hit)>>; Detector::ALL.len()],
}

impl<'a> Scan<'a> {
    pub(crate) fn new(view: &'a MessageView, body: &'a BodyMatcher, explain: bool) -> Self {
        Scan {
            view,
            body,
            explain,
            regex_hits: OnceCell::new(),
            detector_hits: Default::default(),
        }
    }

    fn regex_hits(&self) -> &[bool] {
        self.regex_hits.get_or_init(|| {
            let n = self.body.regexes.len();
            let mut hits = vec![false; n];
            match &self.body.set {
                Some(set) => {
                    for (_, text) in &self.view.texts {
                        for i in set.matches(text).iter() {
                            if let Some(h) = hits.get_mut(i) {
                                *h = true;
                            }
                        }
                        if hits.iter().all(|h| *h) {
                            break;
                        }
                    }
                }
                None => {
                    for (i, re) in self.body.regexes.iter().enumerate() {
                        hits[i] = self.view.texts.iter().any(|(_, t)| re.is_match(t));
                    }
                }
            }
            hits
        })
    }

    fn detector(&self, d: Detector) -> Option<&(usize, Hit)> {
        let slot = Detector::ALL.iter().position(|x| *x == d)?;
        self.detector_hits
            .get(slot)?
            .get_or_init(|| {
                self.view
                    .texts
                    .iter()
                    .enumerate()
                    .find_map(|(i, (_, t))| d.find(t).map(|h| (i, h)))
            })
            .as_ref()
    }

    fn body_matches(&self, p: BodyPattern) -> bool {
        match p {
            BodyPattern::Regex(i) => self.regex_hits().get(i).copied().unwrap_or(false),
            BodyPattern::Detector(d) => self.detector(d).is_some(),
        }
    }

    /// The matched text (redacted for detectors) and where it was found.
    fn body_evidence(&self, p: BodyPattern) -> (String, Option<String>) {
        match p {
            BodyPattern::Regex(i) => {
                let Some(re) = self.body.regexes.get(i) else {
                    return (String::new(), None);
                };
                for (src, t) in &self.view.texts {
                    if let Some(m) = re.find(t) {
                        return (snippet(t, Some(m.range())), Some(src.0.clone()));
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
