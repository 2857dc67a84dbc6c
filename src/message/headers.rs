//! The top-level header block of one message, indexed once: the fields as written (name
//! and raw bytes, folding kept; [`mime::fields`]) for presence checks and raw values, and
//! one mail-parser reading of the block, made when first asked, for decoded values (From,
//! To, Cc addresses, Message-ID, Subject, every field's decoded text).
//!
//! Invariant: the block is `message[..header_end(message)]` ([`mime::header_end`], the one
//! definition of where a header block ends), so every step that reads a header reads the
//! same fields; nothing here parses the block more than once.

use std::cell::OnceCell;
use std::collections::HashSet;

use mail_parser::{HeaderName, HeaderValue, MessageParser};

use super::mime::{self, Field};

/// The header block of a message with its fields, borrowed from the message.
pub struct Headers<'a> {
    /// The header fields and the empty line that ends them (`message[..header_end]`).
    block: &'a [u8],
    /// The fields in order, each with its continuation lines and final CRLF.
    fields: Vec<Field<'a>>,
    /// mail-parser's reading of `block`, made on first use; `None` inside when it found
    /// no structure at all.
    parsed: OnceCell<Option<mail_parser::Message<'a>>>,
}

impl std::fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Headers")
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

impl<'a> Headers<'a> {
    /// Indexes the header block of `message` (CRLF line ends).
    pub fn of(message: &'a [u8]) -> Headers<'a> {
        let block = message.get(..mime::header_end(message)).unwrap_or(message);
        Headers {
            block,
            fields: mime::fields(block),
            parsed: OnceCell::new(),
        }
    }

    /// The header block, with the empty line that ends it when there is one.
    pub fn block(&self) -> &'a [u8] {
        self.block
    }

    /// Every field, in order.
    pub fn fields(&self) -> &[Field<'a>] {
        &self.fields
    }

    /// The fields called `name` (any case), in order.
    pub fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s Field<'a>> + 's {
        self.fields.iter().filter(move |f| f.is(name))
    }

    /// True when a field called `name` (any case) is present.
    pub fn has(&self, name: &str) -> bool {
        self.all(name).next().is_some()
    }

    /// The unfolded, trimmed value of the first field called `name`.
    pub fn value(&self, name: &str) -> Option<String> {
        self.all(name).next().map(Field::value)
    }

    /// mail-parser's reading of the block (decoded values), made once.
    pub fn parsed(&self) -> Option<&mail_parser::Message<'a>> {
        self.parsed
            .get_or_init(|| MessageParser::default().parse_headers(self.block))
            .as_ref()
    }

    /// The addresses of each `From` field, field by field (mail-parser's `from()` gives
    /// only the last field, and a second one must neither slip past a sender check nor
    /// escape DKIM alignment); an empty list for a field that holds no address.
    pub fn from_fields(&self) -> Vec<Vec<String>> {
        let Some(m) = self.parsed() else {
            return Vec::new();
        };
        m.root_part()
            .headers()
            .iter()
            .filter(|h| h.name == HeaderName::From)
            .map(|h| match &h.value {
                HeaderValue::Address(a) => a
                    .iter()
                    .filter_map(|x| x.address().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// [`Headers::from_fields`] of a message that may not have CRLF line ends: only
    /// its header block is checked for them, and the message copied only when that
    /// block lacks them.
    pub fn from_fields_of(raw: &[u8]) -> Vec<Vec<String>> {
        let headers = Headers::of(raw);
        match mime::canonical_crlf(headers.block()) {
            std::borrow::Cow::Borrowed(_) => headers.from_fields(),
            std::borrow::Cow::Owned(_) => Headers::of(&mime::canonical_crlf(raw)).from_fields(),
        }
    }

    /// The addresses in the To and Cc fields, lower case.
    pub fn recipients(&self) -> HashSet<String> {
        let mut named = HashSet::new();
        let Some(m) = self.parsed() else {
            return named;
        };
        for list in [m.to(), m.cc()].into_iter().flatten() {
            for a in list.iter() {
                if let Some(addr) = a.address() {
                    named.insert(addr.to_ascii_lowercase());
                }
            }
        }
        named
    }

    /// The Message-ID in angle brackets, when a field holds one mail-parser can read.
    pub fn message_id(&self) -> Option<String> {
        self.parsed()?.message_id().map(|s| format!("<{s}>"))
    }

    /// The Subject, decoded.
    pub fn subject(&self) -> Option<&str> {
        self.parsed()?.subject()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_by_name_with_their_unfolded_values() {
        let m = b"Received: x\r\nFROM : a@x.test, b@y.test\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n folded\r\nMessage-ID: <k@l>\r\nTo: C@x.test\r\nCc: d@x.test\r\nFrom: e@z.test\r\n\r\nFrom: body@x.test\r\n";
        let h = Headers::of(m);
        assert_eq!(h.fields().len(), 7);
        assert!(h.block().ends_with(b"\r\n\r\n"));
        assert!(h.has("subject") && h.has("Message-Id") && !h.has("Date"));
        assert_eq!(
            h.value("subject").as_deref(),
            Some("=?utf-8?q?Gr=C3=BC=C3=9Fe?= folded")
        );
        assert_eq!(h.subject(), Some("Grüße folded"));
        assert_eq!(h.message_id().as_deref(), Some("<k@l>"));
        assert_eq!(
            h.from_fields(),
            vec![
                vec!["a@x.test".to_string(), "b@y.test".to_string()],
                vec!["e@z.test".to_string()]
            ]
        );
        let mut r: Vec<String> = h.recipients().into_iter().collect();
        r.sort();
        assert_eq!(r, ["c@x.test", "d@x.test"]);
    }

    #[test]
    fn a_message_without_header_or_empty_line_has_consistent_blocks() {
        let h = Headers::of(b"\r\nbody\r\n");
        assert_eq!(h.block(), b"\r\n");
        assert!(h.fields().is_empty() && h.from_fields().is_empty());
        assert_eq!(h.message_id(), None);
        let h = Headers::of(b"Subject: only\r\n");
        assert_eq!(h.block(), b"Subject: only\r\n");
        assert_eq!(h.value("Subject").as_deref(), Some("only"));
        let h = Headers::of(b"");
        assert!(h.fields().is_empty() && h.recipients().is_empty());
    }

    #[test]
    fn from_fields_are_read_whatever_the_line_ends() {
        let want = vec![vec!["a@x.test".to_string()], vec!["b@y.test".to_string()]];
        for m in [
            &b"From: a@x.test\r\nFrom: b@y.test\r\n\r\nbody\n"[..],
            b"From: a@x.test\nFrom: b@y.test\n\nbody\n",
            b"From: a@x.test\nFrom: b@y.test\n\nbody\r\n\r\nmore",
        ] {
            assert_eq!(Headers::from_fields_of(m), want, "{m:?}");
        }
    }
}
