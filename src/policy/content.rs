//! What content conditions look at: one parse of the message, reduced to plain strings.
//!
//! The message is parsed once with mail-parser (transfer encodings and charsets decoded)
//! into a [`MessageView`]: the top-level subject and headers, every text the `body`
//! condition sees (text/plain parts, text/html parts converted to text, text attachments,
//! the same recursively inside attached `message/rfc822` messages together with their
//! subjects, and every attachment file name), and the name and type of every attachment
//! (nested ones included). Rules then only ever look at this view.
//! Invariant: building a view never panics, whatever the bytes; a message mail-parser
//! cannot parse is seen as one text (its bytes, lossily decoded), so detectors still run.

use crate::transform::mime::{self, Hazard};
use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

/// Nesting depth of attached messages that is still looked into: the same limit as the
/// MIME tree of the transforms. A deeper message sets [`MessageView::hazard`] and is
/// refused, so nothing can hide below the limit.
const MAX_DEPTH: usize = crate::transform::mime::MAX_DEPTH;

/// Where a body text came from, for explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TextSource(pub(crate) String);

/// One attachment as content conditions see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttachmentInfo {
    /// File name from Content-Disposition `filename` or Content-Type `name`, decoded.
    pub(crate) name: Option<String>,
    /// `name` in lower case, for the (case-insensitive) `attachment_name` globs; computed
    /// once per message instead of once per rule.
    pub(crate) name_lower: Option<String>,
    /// `type/subtype`, lower case, as the sender declared it.
    pub(crate) content_type: String,
}

/// The parts of a message that rules can test, decoded.
#[derive(Debug, Default)]
pub(crate) struct MessageView {
    /// Size of the message as received, in bytes.
    pub(crate) size: usize,
    /// False when mail-parser found no message structure at all.
    pub(crate) parsed: bool,
    /// Set when the message is beyond sealgate's MIME limits (see [`mime::hazard`]): rules
    /// and transforms could not see all of it, or parsing it is unsafe, so it is refused.
    pub(crate) hazard: Option<Hazard>,
    /// Top-level Subject, decoded; empty when absent.
    pub(crate) subject: String,
    /// Top-level header fields: lower-case name and the values a pattern may match
    /// (the raw value unfolded, and the decoded text when it differs).
    pub(crate) headers: Vec<(String, Vec<String>)>,
    /// Everything `body` searches, with where it came from.
    pub(crate) texts: Vec<(TextSource, String)>,
    /// Every attachment, nested messages included.
    pub(crate) attachments: Vec<AttachmentInfo>,
}

impl MessageView {
    /// Parses `raw` once and extracts everything rules can test (for explain).
    pub(crate) fn new(raw: &[u8]) -> MessageView {
        Self::for_rules(raw, true)
    }

    /// Like [`MessageView::new`]; with `parse` false (no rule looks at subject, headers,
    /// body or attachments) only the size is filled in and the message is not parsed.
    pub(crate) fn for_rules(raw: &[u8], parse: bool) -> MessageView {
        let mut view = MessageView {
            size: raw.len(),
            hazard: mime::hazard(raw),
            ..MessageView::default()
        };
        // A message beyond the MIME limits is refused whole; it is never handed to
        // mail-parser, whose recursive copies of a deep tree could overflow the stack.
        if !parse || view.hazard.is_some() {
            return view;
        }
        match MessageParser::default().parse(raw) {
            Some(msg) if !msg.parts.is_empty() => {
                view.parsed = true;
                // A backstop: should mail-parser find deeper nesting than the
                // structural check did, the message is still refused.
                if message_depth(&msg) > MAX_DEPTH {
                    view.hazard = Some(Hazard::TooDeep);
                }
                view.subject = msg.subject().unwrap_or_default().to_owned();
                view.headers = top_headers(&msg);
                view.walk(&msg, 0, "");
                dismantle(msg);
            }
            _ => {
                view.texts.push((
                    TextSource("unparsed message".into()),
                    String::from_utf8_lossy(raw).into_owned(),
                ));
            }
        }
        view
    }

    fn walk(&mut self, msg: &Message<'_>, depth: usize, prefix: &str) {
        let mut attachment_ids = vec![false; msg.parts.len()];
        for &id in &msg.attachments {
            if let Some(flag) = attachment_ids.get_mut(id as usize) {
                *flag = true;
            }
        }
        for (part, &is_attachment) in msg.parts.iter().zip(&attachment_ids) {
            let name = part.attachment_name().map(str::to_owned);
            let content_type = part
                .content_type()
                .map(|ct| match &ct.c_subtype {
                    Some(sub) => format!("{}/{}", ct.c_type, sub),
                    None => ct.c_type.to_string(),
                })
                .unwrap_or_else(|| match part.body {
                    PartType::Text(_) => "text/plain".into(),
                    PartType::Html(_) => "text/html".into(),
                    PartType::Message(_) => "message/rfc822".into(),
                    PartType::Multipart(_) => "multipart/mixed".into(),
                    _ => "application/octet-stream".into(),
                })
                .to_lowercase();
            let label = |what: &str| match &name {
                Some(n) => format!("{prefix}{what} \"{n}\""),
                None => format!("{prefix}{what}"),
            };
            match &part.body {
                PartType::Text(text) => {
                    let l = label(if is_attachment {
                        "text attachment"
                    } else {
                        "text part"
                    });
                    self.texts.push((TextSource(l), text.to_string()));
                }
                PartType::Html(html) => {
                    let l = label(if is_attachment {
                        "html attachment (as text)"
                    } else {
                        "html part (as text)"
                    });
                    self.texts
                        .push((TextSource(l), super::html::html_to_text(html)));
                }
                PartType::Message(nested) if depth < MAX_DEPTH => {
                    let inner = format!("{prefix}attached message > ");
                    if let Some(subject) = nested.subject() {
                        self.texts.push((
                            TextSource(format!("{prefix}attached message subject")),
                            subject.to_owned(),
                        ));
                    }
                    if !nested.parts.is_empty() {
                        self.walk(nested, depth + 1, &inner);
                    }
                }
                _ => {}
            }
            if is_attachment || (name.is_some() && !matches!(part.body, PartType::Multipart(_))) {
                if let Some(n) = &name {
                    self.texts
                        .push((TextSource(format!("{prefix}attachment name")), n.clone()));
                }
                let name_lower = name.as_deref().map(str::to_lowercase);
                self.attachments.push(AttachmentInfo {
                    name,
                    name_lower,
                    content_type,
                });
            }
        }
    }
}

/// How deep attached messages nest in mail-parser's tree (0: none), without recursion.
fn message_depth(msg: &Message<'_>) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(msg, 0usize)];
    while let Some((m, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        for part in &m.parts {
            if let PartType::Message(inner) = &part.body {
                stack.push((inner, depth + 1));
            }
        }
    }
    deepest
}

/// Drops a parsed message one level at a time. mail-parser's tree owns each attached
/// message inside its parent, so the compiler's drop recurses once per level: a message
/// nested a few thousand levels deep would overflow a worker thread's stack.
fn dismantle(msg: Message<'_>) {
    let mut stack = vec![msg];
    while let Some(mut m) = stack.pop() {
        for part in &mut m.parts {
            if matches!(part.body, PartType::Message(_)) {
                if let PartType::Message(inner) = std::mem::take(&mut part.body) {
                    stack.push(inner);
                }
            }
        }
    }
}

/// The top-level header fields with raw (unfolded) and decoded values.
fn top_headers(msg: &Message<'_>) -> Vec<(String, Vec<String>)> {
    let Some(root) = msg.parts.first() else {
        return Vec::new();
    };
    let raw = msg.raw_message();
    root.headers
        .iter()
        .map(|h| {
            let start = h.offset_start as usize;
            let end = h.offset_end as usize;
            let raw_value = raw
                .get(start..end.max(start))
                .map(|b| unfold(&String::from_utf8_lossy(b)))
                .unwrap_or_default();
            let mut values = vec![raw_value];
            let decoded = match &h.value {
                mail_parser::HeaderValue::Text(t) => Some(t.to_string()),
                mail_parser::HeaderValue::TextList(l) => Some(l.join(", ")),
                _ => None,
            };
            if let Some(d) = decoded {
                if d != values[0] {
                    values.push(d);
                }
            }
            (h.name.as_str().to_lowercase(), values)
        })
        .collect()
}

/// Joins folded header lines and trims: `a\r\n b` → `a b`.
fn unfold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, line) in s.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if i > 0 && !line.is_empty() {
            out.push(' ');
        }
        out.push_str(line.trim_start_matches([' ', '\t']).trim_end());
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_flagged_without_a_deep_stack() {
        // 256 KiB of stack: far less than a worker thread has. mail-parser would build
        // (and drop) a tree 100,000 levels deep from this, recursively.
        let deep = format!(
            "Subject: top\r\n{}Content-Type: text/plain\r\n\r\n4111 1111 1111 1111\r\n",
            "Content-Type: message/rfc822\r\n\r\n".repeat(100_000)
        );
        let flagged = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || MessageView::new(deep.as_bytes()).hazard)
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(flagged, Some(Hazard::TooDeep));
        // Within the limit: looked into all the way down.
        let ok = format!(
            "Subject: top\r\n{}Content-Type: text/plain\r\n\r\nsecret inner text\r\n",
            "Content-Type: message/rfc822\r\n\r\n".repeat(MAX_DEPTH)
        );
        let view = MessageView::new(ok.as_bytes());
        assert_eq!(view.hazard, None);
        assert!(view
            .texts
            .iter()
            .any(|(_, t)| t.contains("secret inner text")));
    }

    #[test]
    fn dismantle_frees_a_deep_tree_without_recursion() {
        let deep = format!(
            "Subject: top\r\n{}Content-Type: text/plain\r\n\r\nx\r\n",
            "Content-Type: message/rfc822\r\n\r\n".repeat(5_000)
        );
        let msg = MessageParser::default().parse(deep.as_bytes()).unwrap();
        assert_eq!(message_depth(&msg), 5_000);
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .stack_size(128 << 10)
                .spawn_scoped(scope, move || dismantle(msg))
                .unwrap()
                .join()
                .unwrap();
        });
    }

    const MSG: &[u8] = b"From: a@example.com\r\nTo: b@bank.example\r\nSubject: =?utf-8?q?Gehalt_M=C3=A4rz?=\r\nX-Mailer: Billing\r\n 3000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<p>Card 4111 1111=20\r\n1111 1111</p>\r\n--XX\r\nContent-Type: application/x-msdownload; name=\"setup.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: text/plain\r\n\r\nsecret inner text\r\n--XX--\r\n";

    #[test]
    fn view_sees_decoded_texts_attachments_and_nested_messages() {
        let v = MessageView::new(MSG);
        assert!(v.parsed);
        assert_eq!(v.subject, "Gehalt März");
        let mailer = v.headers.iter().find(|(n, _)| n == "x-mailer").unwrap();
        assert_eq!(mailer.1[0], "Billing 3000");
        let all: Vec<&str> = v.texts.iter().map(|(_, t)| t.as_str()).collect();
        assert!(
            all.iter().any(|t| t.contains("4111 1111 1111 1111")),
            "{all:?}"
        );
        assert!(all.iter().any(|t| t.contains("secret inner text")));
        assert!(all.contains(&"inner"));
        assert!(all.contains(&"setup.exe"));
        assert!(v
            .attachments
            .iter()
            .any(|a| a.name.as_deref() == Some("setup.exe")
                && a.content_type == "application/x-msdownload"));
        assert!(v
            .attachments
            .iter()
            .any(|a| a.content_type == "message/rfc822"));
    }

    #[test]
    fn unparseable_bytes_become_one_text() {
        let v = MessageView::new(b"\xff\xfe 4111 1111 1111 1111");
        assert_eq!(v.size, 22);
        assert!(!v.texts.is_empty());
        let v = MessageView::new(b"");
        assert_eq!(v.size, 0);
    }
}
