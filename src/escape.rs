//! Text that others chose, made safe to print on an operator's terminal.
//!
//! Upstream replies, client Subjects, envelope addresses and DNS TXT records reach
//! `queue list`, `queue show`, `doctor` and `explain`. A terminal interprets escape
//! sequences (`ESC [ 2 J`, OSC 8 links, title changes), C1 controls (`U+009B` is a CSI on
//! many terminals), line separators and bidirectional overrides (`U+202E` shows
//! `gpj.exe` as `exe.jpg`). Every such character is shown as a visible escape instead.
//! Invariant: the output contains none of the characters [`is_hazard`] names; text
//! without them is returned unchanged and unallocated.

use std::borrow::Cow;

/// A character a terminal (or a log viewer) may act on instead of showing: C0 controls,
/// DEL, C1 controls, the Unicode line and paragraph separators, and the bidirectional
/// embedding, override and isolate controls (U+202A–U+202E, U+2066–U+2069).
pub fn is_hazard(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{2028}' | '\u{2029}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

/// True when `s` holds a character [`is_hazard`] names.
pub fn has_hazard(s: &str) -> bool {
    s.chars().any(is_hazard)
}

fn push_escaped(out: &mut String, c: char) {
    use std::fmt::Write as _;
    let _ = if (c as u32) < 0x80 {
        write!(out, "\\x{:02X}", c as u32)
    } else {
        write!(out, "\\u{{{:X}}}", c as u32)
    };
}

/// `s` with every hazardous character (newlines and tabs included) written as `\xHH`
/// or `\u{HHHH}`: for one field on one line.
pub fn for_terminal(s: &str) -> Cow<'_, str> {
    escape_except(s, |_| false)
}

/// Like [`for_terminal`] for a multi-line text: `\n` and tab stay (a lone CR, ESC and the
/// rest are escaped; a CR right before LF is dropped so CRLF text prints as lines).
pub fn lines_for_terminal(s: &str) -> Cow<'_, str> {
    if !s.contains("\r\n") {
        return escape_except(s, |c| c == '\n' || c == '\t');
    }
    let joined = s.replace("\r\n", "\n");
    Cow::Owned(escape_except(&joined, |c| c == '\n' || c == '\t').into_owned())
}

fn escape_except(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| is_hazard(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_hazard(c) && !keep(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        assert!(matches!(
            for_terminal("250 2.0.0 Ok: queued, Grüße"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn every_hazard_class_is_escaped() {
        let s = "a\u{1b}[2Jb\u{7f}c\u{9b}d\u{2028}e\u{202e}f\u{2067}g\rh\ni\tj";
        let e = for_terminal(s);
        assert_eq!(
            e,
            "a\\x1B[2Jb\\x7Fc\\u{9B}d\\u{2028}e\\u{202E}f\\u{2067}g\\x0Dh\\x0Ai\\x09j"
        );
        assert!(!has_hazard(&e));
    }

    #[test]
    fn lines_keep_newlines_and_tabs_only() {
        let s = "Subject: \u{1b}]0;owned\u{7}\r\n\tfolded\r\nX: a\rb\r\n";
        assert_eq!(
            lines_for_terminal(s),
            "Subject: \\x1B]0;owned\\x07\n\tfolded\nX: a\\x0Db\n"
        );
    }
}
