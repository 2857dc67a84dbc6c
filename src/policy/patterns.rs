//! Regex patterns of the policy set, grouped into banks that are searched all at once.
//!
//! Every `body`, `subject` and `header` regex of every rule goes into one [`PatternBank`]
//! per condition kind; a bank compiles into a single multi-pattern regex (regex-automata's
//! meta engine, linear time) and one search of a text answers "which of these patterns
//! occur?" for all rules. Literal prefilters are disabled: they made compiling hundreds of
//! case-insensitive patterns cost ~100 ms per reload and buy little on short mail texts.
//! A pattern's position for `explain` is found with a single-pattern `regex::Regex`,
//! compiled only when explain asks.
//! Invariant: after [`PatternBank::build`] succeeded, `matching` never fails or panics.

use regex_automata::{meta, util::syntax, Input, MatchKind, PatternSet};
use std::collections::HashMap;
use std::sync::OnceLock;

/// Compiled-size limit per bank (the regex crate's default per pattern is 10 MiB).
const SIZE_LIMIT: usize = 64 << 20;

/// Where a pattern was first written, for errors found when the bank is built.
#[derive(Debug, Clone)]
pub(crate) struct PatternOrigin {
    pub(crate) file: String,
    pub(crate) line: usize,
    pub(crate) col: usize,
    /// `rule "x": body`, for the message.
    pub(crate) what: String,
}

/// How a bank searches.
#[derive(Debug)]
enum Engine {
    /// Nothing built yet, or no patterns.
    Empty,
    /// All patterns in one regex.
    Set(meta::Regex),
    /// One regex per pattern (when the combined one would be too large).
    Each(Vec<meta::Regex>),
}

/// A deduplicated list of patterns searched together.
#[derive(Debug)]
pub(crate) struct PatternBank {
    /// The patterns as written.
    pub(crate) sources: Vec<String>,
    origins: Vec<PatternOrigin>,
    index: HashMap<String, usize>,
    engine: Engine,
    /// Single-pattern regexes for explain, compiled on first use.
    singles: Vec<OnceLock<Option<regex::Regex>>>,
    /// Compiled-size limit for the bank's automaton.
    size_limit: usize,
}

impl Default for PatternBank {
    fn default() -> Self {
        PatternBank {
            sources: Vec::new(),
            origins: Vec::new(),
            index: HashMap::new(),
            engine: Engine::Empty,
            singles: Vec::new(),
            size_limit: SIZE_LIMIT,
        }
    }
}

/// Checks the syntax of one pattern; the error is the one line that says what is wrong.
pub(crate) fn check_syntax(pattern: &str) -> Result<(), String> {
    syntax::parse(pattern).map(|_| ()).map_err(|e| {
        let s = e.to_string();
        s.lines()
            .find_map(|l| l.trim().strip_prefix("error:"))
            .map(|l| l.trim().to_owned())
            .unwrap_or_else(|| s.lines().last().unwrap_or("").trim().to_owned())
    })
}

/// True when `pattern` matches every text, the empty one included (`""`, `.*`, `a?`):
/// it can match nothing at all and asserts nothing (no anchors or word boundaries).
pub(crate) fn matches_everything(pattern: &str) -> bool {
    syntax::parse(pattern).is_ok_and(|hir| {
        let p = hir.properties();
        p.minimum_len() == Some(0) && p.look_set().is_empty()
    })
}

fn config(size_limit: usize) -> meta::Config {
    meta::Config::new()
        .match_kind(MatchKind::All)
        .auto_prefilter(false)
        .nfa_size_limit(Some(size_limit))
}

impl PatternBank {
    /// Adds a pattern whose syntax was already checked; returns its index.
    pub(crate) fn add(&mut self, pattern: &str, origin: PatternOrigin) -> usize {
        if let Some(&i) = self.index.get(pattern) {
            return i;
        }
        let i = self.sources.len();
        self.sources.push(pattern.to_owned());
        self.origins.push(origin);
        self.index.insert(pattern.to_owned(), i);
        i
    }

    /// Compiles the bank; on failure, returns each pattern that cannot be compiled with why.
    pub(crate) fn build(&mut self) -> Result<(), Vec<(PatternOrigin, String)>> {
        self.singles = (0..self.sources.len()).map(|_| OnceLock::new()).collect();
        if self.sources.is_empty() {
            self.engine = Engine::Empty;
            return Ok(());
        }
        if let Ok(set) = meta::Regex::builder()
            .configure(config(self.size_limit))
            .build_many(&self.sources)
        {
            self.engine = Engine::Set(set);
            return Ok(());
        }
        let mut each = Vec::new();
        let mut errors = Vec::new();
        for (src, origin) in self.sources.iter().zip(&self.origins) {
            match meta::Regex::builder()
                .configure(config(self.size_limit))
                .build(src)
            {
                Ok(r) => each.push(r),
                Err(e) => errors.push((origin.clone(), format!("invalid regex \"{src}\": {e}"))),
            }
        }
        if errors.is_empty() {
            self.engine = Engine::Each(each);
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Sets `hits[i]` for every pattern `i` that occurs in `text`.
    pub(crate) fn matching(&self, text: &str, hits: &mut [bool]) {
        match &self.engine {
            Engine::Empty => {}
            Engine::Set(set) => {
                // Most texts match no pattern: a plain search that stops at the first match
                // is several times cheaper than the overlapping one, which always runs to
                // the end of the text, so that is only paid when something matches.
                if !set.is_match(Input::new(text)) {
                    return;
                }
                let mut found = PatternSet::new(set.pattern_len());
                set.which_overlapping_matches(&Input::new(text), &mut found);
                for p in found.iter() {
                    if let Some(h) = hits.get_mut(p.as_usize()) {
                        *h = true;
                    }
                }
            }
            Engine::Each(all) => {
                for (re, h) in all.iter().zip(hits.iter_mut()) {
                    if !*h && re.is_match(text) {
                        *h = true;
                    }
                }
            }
        }
    }

    /// Where pattern `i` first matches in `text` (for explain).
    pub(crate) fn find(&self, i: usize, text: &str) -> Option<std::ops::Range<usize>> {
        let re = self
            .singles
            .get(i)?
            .get_or_init(|| regex::Regex::new(self.sources.get(i)?).ok())
            .as_ref()?;
        re.find(text).map(|m| m.range())
    }

    pub(crate) fn len(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> PatternOrigin {
        PatternOrigin {
            file: "f".into(),
            line: 1,
            col: 1,
            what: "w".into(),
        }
    }

    #[test]
    fn bank_reports_every_pattern_that_occurs() {
        let mut b = PatternBank::default();
        let a = b.add("(?i)confidential", origin());
        let c = b.add("ref-[0-9]{3}", origin());
        let e = b.add("", origin());
        assert_eq!(b.add("(?i)confidential", origin()), a);
        b.build().unwrap();
        let mut hits = vec![false; b.len()];
        b.matching("This is CONFIDENTIAL.", &mut hits);
        assert!(hits[a] && !hits[c] && hits[e]);
        assert_eq!(b.find(a, "x Confidential"), Some(2..14));
    }

    #[test]
    fn syntax_errors_are_one_line() {
        assert_eq!(check_syntax("(unclosed").unwrap_err(), "unclosed group");
        assert!(check_syntax("(?<=x)y").is_err());
        assert!(check_syntax("\\bok\\b").is_ok());
    }

    #[test]
    fn too_large_pattern_is_reported() {
        let mut b = PatternBank {
            size_limit: 1 << 20,
            ..PatternBank::default()
        };
        b.add("\\w{100}{100}", origin());
        assert!(b.build().is_err());
    }
}
