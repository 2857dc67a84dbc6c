//! Diagnostics for policy files: `file:line:col: message`, errors and warnings.
//!
//! Every problem found while loading a policy set becomes one [`Diagnostic`] that names
//! the file, the 1-based line and column (in characters) and the offending item, so that
//! `sealgate check` and a failed reload can point the sysadmin straight at it.
//! Invariant: a [`PolicyError`] always holds at least one diagnostic of severity `Error`.

use serde::Serialize;
use std::fmt;

/// How bad a diagnostic is: errors refuse the policy set, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The policy set cannot be used.
    Error,
    /// The policy set works, but probably not as its author meant (a rule that can never match, ...).
    Warning,
}

/// One problem in one policy file, at one place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file as shown to users, e.g. `policies/50-rules.toml`.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub col: usize,
    /// What is wrong, naming the item (`rule "x": body: ...`).
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        write!(
            f,
            "{}:{}:{}: {}{}",
            self.file, self.line, self.col, prefix, self.message
        )
    }
}

/// A policy set that cannot be used; lists every error found (and any warnings), one per line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", render(.diagnostics))]
pub struct PolicyError {
    /// All diagnostics, errors first in file/line order, then warnings.
    pub diagnostics: Vec<Diagnostic>,
}

impl PolicyError {
    /// Only the errors (no warnings).
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }
}

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Turns byte offsets of one file into 1-based line and character column.
#[derive(Debug)]
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    /// Byte offset where each line starts; `line_starts[0] == 0`.
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(
            text.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { text, line_starts }
    }

    /// (line, col), both 1-based; offsets past the end point at the end.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts.get(line).copied().unwrap_or(0);
        // Count characters; a span starting inside a character counts as that character.
        let col = self
            .text
            .get(start..)
            .map(|rest| {
                rest.char_indices()
                    .take_while(|&(i, _)| i < offset - start)
                    .count()
            })
            .unwrap_or(0);
        (line + 1, col + 1)
    }
}

/// Collects diagnostics for one file.
#[derive(Debug)]
pub(crate) struct Sink<'a> {
    pub(crate) file: String,
    index: LineIndex<'a>,
    pub(crate) out: Vec<Diagnostic>,
}

impl<'a> Sink<'a> {
    pub(crate) fn new(file: String, text: &'a str) -> Self {
        Sink {
            file,
            index: LineIndex::new(text),
            out: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, offset: usize, severity: Severity, message: String) {
        let (line, col) = self.index.line_col(offset);
        self.out.push(Diagnostic {
            file: self.file.clone(),
            line,
            col,
            message,
            severity,
        });
    }

    /// (line, col) of a byte offset in this file.
    pub(crate) fn pos(&self, offset: usize) -> (usize, usize) {
        self.index.line_col(offset)
    }

    pub(crate) fn error(&mut self, offset: usize, message: impl Into<String>) {
        self.push(offset, Severity::Error, message.into());
    }

    pub(crate) fn warning(&mut self, offset: usize, message: impl Into<String>) {
        self.push(offset, Severity::Warning, message.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters_from_one() {
        let idx = LineIndex::new("ab\nçd = 1\n");
        assert_eq!(idx.line_col(0), (1, 1));
        assert_eq!(idx.line_col(3), (2, 1));
        // 'd' is after the two-byte 'ç'
        assert_eq!(idx.line_col(5), (2, 2));
        assert_eq!(idx.line_col(999), (3, 1));
    }

    #[test]
    fn display_is_file_line_col_message() {
        let d = Diagnostic {
            file: "policies/a.toml".into(),
            line: 3,
            col: 7,
            message: "unknown action `encrpyt`".into(),
            severity: Severity::Warning,
        };
        assert_eq!(
            d.to_string(),
            "policies/a.toml:3:7: warning: unknown action `encrpyt`"
        );
    }
}
