//! Reading a message: the MIME tree and header fields ([`mime`]), the header index
//! ([`headers`]), which of its parts are attachments ([`attachment`]), and [`Message`],
//! the one reading of a received message that every step after the receipt repairs
//! shares (header From check, policy, planning, transforms, DKIM).

pub mod attachment;
pub mod headers;
pub mod mime;

use std::cell::OnceCell;

pub use headers::Headers;

/// A received message as the pipeline judges and transforms it: its bytes (CRLF line
/// ends), its header index and its MIME tree, each built at most once.
///
/// Invariant: `bytes` has canonical CRLF line ends ([`mime::canonical_crlf`] runs once,
/// where the message enters the pipeline), so no step canonicalises it again.
pub struct Message<'a> {
    /// The whole message, header and body.
    bytes: &'a [u8],
    /// The top-level header block, indexed.
    headers: Headers<'a>,
    /// sealgate's MIME tree over `bytes`, made on first use (a policy without content
    /// rules and a copy relayed unchanged never need it).
    tree: OnceCell<mime::Entity<'a>>,
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("size", &self.bytes.len())
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl<'a> Message<'a> {
    /// Reads `bytes`, which must have CRLF line ends (see [`Message::canonical`] for
    /// bytes that may not). Indexes the header block; the MIME tree waits for its first use.
    pub fn new(bytes: &'a [u8]) -> Message<'a> {
        debug_assert!(
            matches!(mime::canonical_crlf(bytes), std::borrow::Cow::Borrowed(_)),
            "Message::new needs CRLF line ends"
        );
        Message {
            bytes,
            headers: Headers::of(bytes),
            tree: OnceCell::new(),
        }
    }

    /// `raw` with CRLF line ends, borrowed when it already has them: what
    /// [`Message::new`] reads.
    pub fn canonical(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
        mime::canonical_crlf(raw)
    }

    /// The message as received (after the receipt repairs).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The top-level header fields.
    pub fn headers(&self) -> &Headers<'a> {
        &self.headers
    }

    /// Offset of the body ([`mime::header_end`]).
    pub fn header_end(&self) -> usize {
        self.headers.block().len()
    }

    /// The MIME tree of the whole message, parsed on the first call only.
    pub fn tree(&self) -> &mime::Entity<'a> {
        self.tree
            .get_or_init(|| mime::parse_with_header(self.bytes, self.headers.parsed()))
    }

    /// True when `other` starts with this message's header block, byte for byte: it has
    /// the same header fields (its block ends at the same place), so what they say need
    /// not be read again.
    pub fn same_header(&self, other: &[u8]) -> bool {
        other.starts_with(self.headers.block())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_reading_serves_header_and_tree() {
        let m = b"From: a@x.test\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b--\r\n";
        let msg = Message::new(m);
        assert_eq!(msg.header_end(), mime::header_end(m));
        assert!(std::ptr::eq(msg.tree(), msg.tree()));
        assert!(matches!(msg.tree().kind, mime::Kind::Multipart { .. }));
        assert!(msg.same_header(
            b"From: a@x.test\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\nother"
        ));
        assert!(!msg.same_header(b"From: a@x.test\r\n\r\n"));
    }

    #[test]
    fn the_shared_tree_is_the_tree_mime_parse_builds_for_every_corpus_message() {
        // The tree reuses the header index's reading of the top header block; over real
        // and malformed mail it must be the very tree a fresh parse gives.
        let mut seen = 0;
        for (_, p, raw) in mime::tests::corpus() {
            let canon = Message::canonical(&raw);
            let msg = Message::new(&canon);
            let fresh = mime::parse(&canon);
            assert_eq!(
                format!("{:?}", msg.tree()),
                format!("{fresh:?}"),
                "{}",
                p.display()
            );
            seen += 1;
        }
        assert!(seen >= 50, "corpus missing: {seen}");
        for odd in [
            &b""[..],
            b"\r\n",
            b"\r\nbody",
            b"Subject: only",
            b"no header\r\n",
        ] {
            assert_eq!(
                format!("{:?}", Message::new(odd).tree()),
                format!("{:?}", mime::parse(odd))
            );
        }
    }
}
