//! A tiny case-insensitive glob: `*` matches any run of characters (also none), `?` exactly one.
//!
//! Used for addresses (`*@bank.example`), attachment names (`*.exe`) and MIME types
//! (`image/*`). Everything else is literal. `[...]` and `{...}` are refused at load time
//! rather than silently taken literally, because shell users would expect them to work.
//! Invariant: matching never panics and runs in O(pattern × input) at worst.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Star,
    One,
    Lit(char),
}

/// A validated, lower-cased glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    /// The pattern as written, for explain and diagnostics.
    source: String,
    tokens: Vec<Token>,
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Glob {
    /// Checks and compiles `pattern`; the error says what is wrong in words.
    pub(crate) fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("empty pattern (write \"*\" to match anything)".into());
        }
        if pattern.trim() != pattern {
            return Err(format!(
                "pattern \"{pattern}\" has leading or trailing spaces"
            ));
        }
        if let Some(c) = pattern.chars().find(|c| matches!(c, '[' | ']' | '{' | '}')) {
            return Err(format!(
                "pattern \"{pattern}\" contains '{c}': only * and ? are wildcards, and matching is already case-insensitive"
            ));
        }
        if pattern.chars().any(char::is_control) {
            return Err(format!("pattern {pattern:?} contains a control character"));
        }
        let mut tokens = Vec::new();
        for c in pattern.chars() {
            match c {
                // Consecutive stars mean the same as one.
                '*' if tokens.last() == Some(&Token::Star) => {}
                '*' => tokens.push(Token::Star),
                '?' => tokens.push(Token::One),
                c => tokens.extend(c.to_lowercase().map(Token::Lit)),
            }
        }
        Ok(Glob {
            source: pattern.to_owned(),
            tokens,
        })
    }

    /// The pattern as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.source
    }

    /// Matches `input`, which the caller has already lower-cased (`str::to_lowercase`).
    pub(crate) fn matches_lowered(&self, input: &str) -> bool {
        let toks = &self.tokens;
        let (mut p, mut i) = (0usize, 0usize);
        // Where to resume after the last star: (token after the star, input position).
        let mut resume: Option<(usize, usize)> = None;
        loop {
            if let Some(tok) = toks.get(p) {
                let rest = input.get(i..).unwrap_or("");
                match tok {
                    Token::Star => {
                        resume = Some((p + 1, i));
                        p += 1;
                        continue;
                    }
                    Token::One => {
                        if let Some(c) = rest.chars().next() {
                            i += c.len_utf8();
                            p += 1;
                            continue;
                        }
                    }
                    Token::Lit(c) => {
                        if rest.starts_with(*c) {
                            i += c.len_utf8();
                            p += 1;
                            continue;
                        }
                    }
                }
            } else if i >= input.len() {
                return true;
            }
            // Mismatch: let the last star swallow one more character, or fail.
            match resume {
                Some((sp, si)) => match input.get(si..).and_then(|r| r.chars().next()) {
                    Some(c) => {
                        let ni = si + c.len_utf8();
                        resume = Some((sp, ni));
                        p = sp;
                        i = ni;
                    }
                    None => return false,
                },
                None => return false,
            }
        }
    }

    /// Matches `input` case-insensitively.
    #[cfg(test)]
    pub(crate) fn matches(&self, input: &str) -> bool {
        self.matches_lowered(&input.to_lowercase())
    }
}

/// Case-insensitive `*`/`?` match without compiling a [`Glob`], for the
/// config's sender globs (`allowed_senders`, `[[smime.signer]] senders`).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Glob::new(p).unwrap().matches(s)
    }

    #[test]
    fn star_and_question_mark() {
        assert!(m("*@bank.example", "Alice@BANK.example"));
        assert!(!m("*@bank.example", "alice@bank.example.evil"));
        assert!(m("*.exe", "setup.EXE"));
        assert!(!m("*.exe", "setup.exe.txt"));
        assert!(m("image/*", "image/png"));
        assert!(!m("image/*", "application/png"));
        assert!(m("a?c", "abc"));
        assert!(m("a?c", "aéc"));
        assert!(!m("a?c", "ac"));
        assert!(m("*", ""));
        assert!(m("**a**b", "xxaxxb"));
        assert!(m("*a*b*c*", "aXbXc"));
        assert!(!m("*a*b*c*", "aXcXb"));
        assert!(m("payroll@example.com", "PAYROLL@example.com"));
    }

    #[test]
    fn refuses_brackets_braces_and_empty() {
        assert!(Glob::new("").is_err());
        assert!(Glob::new("*.[eE]xe").is_err());
        assert!(Glob::new("*.{exe,scr}").is_err());
        assert!(Glob::new(" *.exe").is_err());
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let g = Glob::new("*a*a*a*a*a*a*a*a*b").unwrap();
        let s = "a".repeat(5000);
        assert!(!g.matches(&s));
    }
}
