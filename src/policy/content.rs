//! What content conditions look at: one parse of the message, reduced to plain strings.
//!
//! The message is split by sealgate's own MIME tree ([`mime::parse`], the one the
//! transforms rewrite, so rules judge exactly the parts that strip, zip and encrypt act
//! on; an attachment is what [`attachment::Roles::is_attachment`] says) and decoded
//! (transfer encodings leniently, charsets with mail-parser's decoders, headers with
//! mail-parser) into a [`MessageView`]: the top-level subject and headers, every text the
//! `body` condition sees (every `text/*` part, HTML converted to text, other parts whose
//! content is text whatever their declared type, the same inside
//! attached messages, with their subjects, and every attachment file name), and the
//! name and type of every attachment (nested ones included). Rules only look at this view.
//! Invariant: building a view never panics, whatever the bytes; a message beyond the
//! MIME limits ([`mime::hazard`]) is not looked into and is refused.

use crate::message::attachment;
use crate::message::mime::{self, Entity, Hazard, Kind, ENCODED_LEVELS};
use crate::message::Message;
use mail_parser::decoders::charsets::map::charset_decoder;

/// Nesting depth of attached messages that is still looked into: the same limit as the
/// MIME tree of the transforms. A deeper message sets [`MessageView::hazard`] and is
/// refused, so nothing can hide below the limit.
const MAX_DEPTH: usize = crate::message::mime::MAX_DEPTH;

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
        let canon = mime::canonical_crlf(raw);
        view.read(&Message::new(&canon));
        view
    }

    /// The view of a message the pipeline already read ([`Message`]) and found within the
    /// MIME limits: its header index and MIME tree are used as they are, not parsed
    /// again. With `parse` false only the size is filled in.
    pub(crate) fn of_message(message: &Message<'_>, parse: bool) -> MessageView {
        let mut view = MessageView {
            size: message.bytes().len(),
            ..MessageView::default()
        };
        if parse {
            view.read(message);
        }
        view
    }

    /// Fills in subject, headers, texts and attachments from `message`.
    fn read(&mut self, message: &Message<'_>) {
        self.parsed = true;
        let headers = message.headers();
        if let Some(top) = headers.parsed() {
            self.subject = top.subject().unwrap_or_default().to_owned();
            self.headers = top_headers(top);
        }
        // A top-level field with white space before its colon (`Subject :`) ends the
        // header for some readers (Python's email): they show it and what follows as
        // body, so the body rules see that text too.
        let top_fields = headers.fields();
        if let Some(at) = top_fields.iter().position(|f| {
            f.raw
                .iter()
                .take_while(|&&b| b != b':')
                .any(|&b| b == b' ' || b == b'\t')
        }) {
            let text: Vec<u8> = top_fields[at..]
                .iter()
                .flat_map(|f| f.raw.iter().copied())
                .collect();
            self.texts.push((
                TextSource("header fields (read as body by some readers)".into()),
                normalize(String::from_utf8_lossy(&text).into_owned()),
            ));
        }
        self.walk_tree(message.tree(), 0, "", ENCODED_LEVELS);
    }

    /// Collects texts and attachments from the MIME tree of `raw` (sealgate's own, the
    /// one the transforms rewrite, so that rules judge exactly the parts that strip, zip
    /// and encrypt act on). Iterative over the tree; recursion only into attached
    /// messages in base64 or quoted-printable, at most `encoded_left` levels.
    fn walk(&mut self, raw: &[u8], depth0: usize, prefix0: &str, encoded_left: usize) {
        self.walk_tree(&mime::parse(raw), depth0, prefix0, encoded_left);
    }

    /// [`MessageView::walk`] over a tree already parsed.
    fn walk_tree(&mut self, root: &Entity<'_>, depth0: usize, prefix0: &str, encoded_left: usize) {
        let roles = attachment::Roles::of(root);
        // Pushed in reverse so that parts come out in document order.
        let mut stack: Vec<(&Entity<'_>, usize, String)> = vec![(root, depth0, prefix0.into())];
        while let Some((e, depth, prefix)) = stack.pop() {
            let info = &e.info;
            let is_attachment = roles.is_attachment(e);
            let name = info.file_name.clone().filter(|n| !n.is_empty());
            let label = |what: &str| match &name {
                Some(n) => format!("{prefix}{what} \"{n}\""),
                None => format!("{prefix}{what}"),
            };
            match &e.kind {
                Kind::Multipart { parts, .. } => {
                    stack.extend(
                        parts
                            .iter()
                            .rev()
                            .map(|(_, p)| (p, depth + 1, prefix.clone())),
                    );
                    continue;
                }
                Kind::Message(inner) => {
                    self.attached_message_subject(inner.header, &prefix);
                    stack.push((inner, depth + 1, format!("{prefix}attached message > ")));
                }
                Kind::Leaf if info.is_message() && info.is_encoded() => {
                    // Not allowed by RFC 2046, but mail-parser and clients decode it.
                    if encoded_left > 0 && depth < MAX_DEPTH {
                        let decoded = mime::decode_body(e.body, &info.transfer_encoding);
                        let inner = mime::parse(&decoded);
                        self.attached_message_subject(inner.header, &prefix);
                        let inner_prefix = format!("{prefix}attached message > ");
                        self.walk(&decoded, depth + 1, &inner_prefix, encoded_left - 1);
                    }
                }
                Kind::Leaf if info.content_type.starts_with("text/") => {
                    let bytes = mime::decode_body(e.body, &info.transfer_encoding);
                    let text = decode_charset(&bytes, info.charset.as_deref());
                    let (what, text) = if info.content_type == "text/html" {
                        let what = if is_attachment {
                            "html attachment (as text)"
                        } else {
                            "html part (as text)"
                        };
                        let shown = super::html::html_to_text(&text);
                        // What a converter hides, a browser may still show: the whole
                        // text goes in too when it says more than the converted one.
                        let all = normalize(super::html::html_all_text(&text));
                        if !same_words(&shown, &all) {
                            self.texts
                                .push((TextSource(label("html part (all text)")), all));
                        }
                        (what, shown)
                    } else {
                        let what = if is_attachment {
                            "text attachment"
                        } else {
                            "text part"
                        };
                        (what, text)
                    };
                    self.texts.push((TextSource(label(what)), normalize(text)));
                    if info.transfer_encoding == "base64" && !is_base64_text(e.body) {
                        // Not base64: readers that refuse to decode it show it as it is.
                        let raw = decode_charset(e.body, info.charset.as_deref());
                        self.texts.push((
                            TextSource(label("undecodable base64 (as sent)")),
                            normalize(raw),
                        ));
                    }
                }
                Kind::Leaf
                    if !info.content_type.starts_with("text/")
                        && encoded_left > 0
                        && depth < MAX_DEPTH
                        && opens_as_message(info, e.body) =>
                {
                    // A forwarded message sent as application/octet-stream (`fwd.eml`):
                    // mail programs open it as the message it is, so it is read as one.
                    let decoded = mime::decode_body(e.body, &info.transfer_encoding);
                    let canon = mime::canonical_crlf(&decoded).into_owned();
                    // Opened here, so held to the same limits as the message itself.
                    if let Some(h) = mime::hazard(&canon) {
                        self.hazard.get_or_insert(h);
                    }
                    let inner = mime::parse(&canon);
                    self.attached_message_subject(inner.header, &prefix);
                    let inner_prefix = format!("{prefix}attached message > ");
                    self.walk(&canon, depth + 1, &inner_prefix, encoded_left - 1);
                }
                Kind::Leaf if sniffed_as_text(info, e.body) => {
                    // Declared as something else (a CSV export sent as
                    // application/octet-stream, JSON, XML): judged as the text it is.
                    let bytes = mime::decode_body(e.body, &info.transfer_encoding);
                    let text = decode_charset(&bytes, info.charset.as_deref());
                    self.texts.push((
                        TextSource(label("attachment (text content)")),
                        normalize(text),
                    ));
                }
                Kind::Leaf => {}
            }
            if is_attachment {
                if let Some(n) = &name {
                    self.texts
                        .push((TextSource(format!("{prefix}attachment name")), n.clone()));
                }
                // Windows drops trailing dots and spaces when it saves a file: `x.exe.`
                // and `x.exe ` are `x.exe` to the recipient, so to the rules too.
                let name_lower = name
                    .as_deref()
                    .map(|n| n.trim_end_matches(['.', ' ']).to_lowercase());
                self.attachments.push(AttachmentInfo {
                    name: name.clone(),
                    name_lower,
                    content_type: info.content_type.clone(),
                });
                // The files inside a zip archive, by the names they unpack as (what
                // mail filters check `*.exe` against too). An encrypted zip lists its
                // names in the clear.
                if matches!(e.kind, Kind::Leaf) {
                    let content = mime::decode_body(e.body, &info.transfer_encoding);
                    let archive = name.as_deref().unwrap_or("archive");
                    for member in zip_member_names(&content) {
                        let base = member.rsplit(['/', '\\']).next().unwrap_or_default();
                        let lower = base.trim_end_matches(['.', ' ']).to_lowercase();
                        if lower.is_empty() {
                            continue;
                        }
                        self.attachments.push(AttachmentInfo {
                            name: Some(format!("{archive} > {member}")),
                            name_lower: Some(lower),
                            content_type: info.content_type.clone(),
                        });
                    }
                }
            }
        }
    }

    /// The subject of an attached message, as a text `body` rules see.
    fn attached_message_subject(&mut self, header: &[u8], prefix: &str) {
        let subject = mail_parser::MessageParser::default()
            .parse_headers(header)
            .and_then(|m| m.subject().map(str::to_owned));
        if let Some(subject) = subject {
            self.texts.push((
                TextSource(format!("{prefix}attached message subject")),
                subject,
            ));
        }
    }
}

/// What content rules and attachment actions see of a message, for tools and tests
/// (`examples/mime_view.rs`, the differential test against other MIME readers).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Seen {
    /// Why the message is refused before any rule sees it (the MIME limits), if it is.
    pub refused: Option<String>,
    /// Every text `body` conditions search, folded as they see it.
    pub texts: Vec<String>,
    /// Every leaf part, in document order (inside attached messages too).
    pub leaves: Vec<SeenLeaf>,
}

/// One leaf part as sealgate reads it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeenLeaf {
    /// `type/subtype`, lower case.
    pub content_type: String,
    /// True when strip/zip act on it and `attachment_*` conditions see it.
    pub attachment: bool,
    /// Its file name, decoded.
    pub name: Option<String>,
    /// SHA-256 of its decoded content, lower-case hex.
    pub sha256: String,
    /// SHA-256 of its decoded content without trailing CR and LF (readers differ on
    /// whether the line break before a delimiter, or at the end of an unclosed
    /// multipart, belongs to the part).
    pub sha256_trimmed: String,
}

/// [`Seen`] for `raw`.
pub fn seen(raw: &[u8]) -> Seen {
    let view = MessageView::new(raw);
    if let Some(h) = view.hazard {
        return Seen {
            refused: Some(h.to_string()),
            texts: Vec::new(),
            leaves: Vec::new(),
        };
    }
    let canon = mime::canonical_crlf(raw);
    let mut leaves = Vec::new();
    seen_leaves(&canon, ENCODED_LEVELS, &mut leaves);
    Seen {
        refused: None,
        texts: view.texts.into_iter().map(|(_, t)| t).collect(),
        leaves,
    }
}

fn seen_leaves(raw: &[u8], encoded_left: usize, out: &mut Vec<SeenLeaf>) {
    use sha2::{Digest, Sha256};
    let root = mime::parse(raw);
    let roles = attachment::Roles::of(&root);
    let mut stack = vec![&root];
    while let Some(e) = stack.pop() {
        match &e.kind {
            Kind::Multipart { parts, .. } => stack.extend(parts.iter().rev().map(|(_, p)| p)),
            Kind::Message(inner) if !roles.is_attachment(e) => stack.push(inner),
            // An attached message that strip and zip move whole: listed as one leaf,
            // and looked into.
            Kind::Message(_) | Kind::Leaf => {
                if let Kind::Message(inner) = &e.kind {
                    stack.push(inner);
                }
                let content = mime::decode_body(e.body, &e.info.transfer_encoding);
                let hex = |b: &[u8]| crate::hex::lower(&Sha256::digest(b));
                let end = content
                    .iter()
                    .rposition(|c| *c != b'\r' && *c != b'\n')
                    .map_or(0, |p| p + 1);
                out.push(SeenLeaf {
                    sha256_trimmed: hex(&content[..end]),
                    content_type: e.info.content_type.clone(),
                    attachment: roles.is_attachment(e),
                    name: e.info.file_name.clone(),
                    sha256: hex(&content),
                });
                if e.info.is_message() && e.info.is_encoded() && encoded_left > 0 {
                    seen_leaves(&content, encoded_left - 1, out);
                }
            }
        }
    }
}

/// True when a leaf that is not declared `message/rfc822` or `message/global` (an
/// octet-stream `fwd.eml`, a `message/partial` ...) decodes to a message: its first lines are
/// header fields up to an empty line, among them From, Subject, Date, MIME-Version or
/// Content-Type. Only a prefix is decoded for the test.
fn opens_as_message(info: &mime::PartInfo, body: &[u8]) -> bool {
    let family = info.content_type.split('/').next().unwrap_or_default();
    if info.is_message() || matches!(family, "multipart" | "image" | "audio" | "video") {
        return false;
    }
    // message/partial, message/news ... are messages to readers (Python's email parses
    // every message/* as one); reports are text.
    if family == "message" {
        return !matches!(
            info.content_type.as_str(),
            "message/delivery-status"
                | "message/disposition-notification"
                | "message/global-delivery-status"
                | "message/global-disposition-notification"
        );
    }
    let encoded = match info.transfer_encoding.as_str() {
        "base64" => 8192,
        "quoted-printable" => 3 * 8192,
        _ => 8192,
    };
    let prefix = body.get(..encoded).unwrap_or(body);
    let decoded = mime::decode_body(prefix, &info.transfer_encoding);
    let canon = mime::canonical_crlf(&decoded);
    let Some(end) = mime::find(&canon, b"\r\n\r\n") else {
        return false;
    };
    let fields = mime::fields(&canon[..end + 4]);
    !fields.is_empty()
        && fields.iter().all(|f| {
            !f.name.is_empty() && f.name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        })
        && fields.iter().any(|f| {
            ["from", "subject", "date", "mime-version", "content-type"]
                .iter()
                .any(|n| f.is(n))
        })
}

/// Most member names read from one zip archive.
const MAX_ZIP_MEMBERS: usize = 1000;

/// The member names in a zip archive's central directory (empty when `data` is no zip).
/// Read by hand, every offset checked: no allocation beyond the names, no panic.
fn zip_member_names(data: &[u8]) -> Vec<String> {
    let u16_at = |at: usize| -> Option<usize> {
        data.get(at..at + 2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let u32_at = |at: usize| -> Option<usize> {
        data.get(at..at + 4)
            .and_then(|b| usize::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok())
    };
    if !data.starts_with(b"PK\x03\x04") || data.len() < 22 {
        return Vec::new();
    }
    // The end-of-central-directory record: in the last 22 + 65,535 octets.
    let tail_start = data.len().saturating_sub(22 + 65_535);
    let Some(eocd) =
        memchr::memmem::rfind(&data[tail_start..], b"PK\x05\x06").map(|p| tail_start + p)
    else {
        return Vec::new();
    };
    let (Some(count), Some(mut at)) = (u16_at(eocd + 10), u32_at(eocd + 16)) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for _ in 0..count.min(MAX_ZIP_MEMBERS) {
        if data.get(at..at + 4) != Some(b"PK\x01\x02") {
            break;
        }
        let (Some(n), Some(x), Some(c)) = (u16_at(at + 28), u16_at(at + 30), u16_at(at + 32))
        else {
            break;
        };
        let Some(name) = data.get(at + 46..at + 46 + n) else {
            break;
        };
        names.push(String::from_utf8_lossy(name).into_owned());
        at += 46 + n + x + c;
    }
    names
}

/// How many decoded octets [`sniffed_as_text`] looks at: git's test for binary files.
const SNIFF_OCTETS: usize = 8000;

/// True for a leaf that is not `text/*` (nor a message, image, audio or video) but
/// whose content is text: no NUL among its first [`SNIFF_OCTETS`] decoded octets, as git
/// decides. Only a prefix is decoded for the test, so a large binary attachment costs
/// next to nothing.
fn sniffed_as_text(info: &mime::PartInfo, body: &[u8]) -> bool {
    let family = info.content_type.split('/').next().unwrap_or_default();
    // message/partial, message/external-body ...: readers may show them as text.
    if info.is_message() || matches!(family, "text" | "multipart" | "image" | "audio" | "video") {
        return false;
    }
    // Most binary formats have a NUL within their first kilobyte: that prefix is tried
    // first, the whole SNIFF_OCTETS only when it passes.
    [1024, SNIFF_OCTETS].into_iter().all(|wanted| {
        // Enough encoded octets for `wanted` decoded ones: base64 needs 4/3 of them plus
        // line breaks, quoted-printable at most 3 each.
        let encoded = match info.transfer_encoding.as_str() {
            "base64" => wanted * 3 / 2,
            "quoted-printable" => wanted * 3,
            _ => wanted,
        };
        let prefix = body.get(..encoded).unwrap_or(body);
        let decoded = mime::decode_body(prefix, &info.transfer_encoding);
        let head = decoded.get(..wanted).unwrap_or(&decoded);
        !head.is_empty() && (!head.contains(&0) || utf16_bom(head).is_some())
    })
}

/// Folds what renders as a space or a digit but would break a pattern, by Unicode
/// property rather than by list: every white-space character becomes a space, every
/// Default_Ignorable_Code_Point (zero-width characters, soft hyphen, U+2063, U+034F,
/// U+180E, variation selectors ...) goes, and every decimal digit (`Nd`: full-width,
/// mathematical, Bengali, Thai, Myanmar, Mongolian, Tibetan, N'Ko ...) becomes the ASCII
/// digit of its value. A card number written `4111\u{a0}1111\u{200b}1111 1111` is one to
/// the reader, so it is one to the detectors and patterns too.
fn normalize(text: String) -> String {
    if text.is_ascii() {
        return text;
    }
    text.chars()
        .filter_map(|c| {
            if c.is_ascii() {
                Some(c)
            } else if c.is_whitespace() {
                Some(' ')
            } else if is_default_ignorable(c) {
                None
            } else if let Some(d) = digit_value(c) {
                char::from_digit(d, 10)
            } else {
                Some(c)
            }
        })
        .collect()
}

/// The code point ranges of a Unicode property class (`\p{...}`), from regex-syntax's
/// tables: the Unicode version the `regex` crate matches with.
fn property_ranges(class: &str) -> Vec<(u32, u32)> {
    use regex_syntax::hir::{Class, HirKind};
    match regex_syntax::Parser::new()
        .parse(class)
        .map(|h| h.into_kind())
    {
        Ok(HirKind::Class(Class::Unicode(c))) => c
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        _ => Vec::new(),
    }
}

static DECIMAL_DIGITS: std::sync::LazyLock<Vec<(u32, u32)>> =
    std::sync::LazyLock::new(|| property_ranges(r"\p{Nd}"));
static DEFAULT_IGNORABLE: std::sync::LazyLock<Vec<(u32, u32)>> =
    std::sync::LazyLock::new(|| property_ranges(r"\p{Default_Ignorable_Code_Point}"));

/// The range of sorted, disjoint `ranges` that holds `c`.
fn range_of(ranges: &[(u32, u32)], c: char) -> Option<(u32, u32)> {
    let c = c as u32;
    let i = ranges.partition_point(|&(_, end)| end < c);
    ranges.get(i).copied().filter(|&(start, _)| start <= c)
}

/// True for a Default_Ignorable_Code_Point: invisible when rendered.
pub fn is_default_ignorable(c: char) -> bool {
    range_of(&DEFAULT_IGNORABLE, c).is_some()
}

/// The value of a decimal digit (`Nd`) of any script. Unicode encodes each script's
/// digits as one run of ten code points, zero first, so within a merged range of runs
/// the value is the distance from its start modulo ten.
fn digit_value(c: char) -> Option<u32> {
    range_of(&DECIMAL_DIGITS, c).map(|(start, _)| (c as u32 - start) % 10)
}

/// True when `a` and `b` have the same words (`split_whitespace` compared), in one
/// pass over the bytes when both are ASCII (the usual case), char by char otherwise.
fn same_words(a: &str, b: &str) -> bool {
    if !(a.is_ascii() && b.is_ascii()) {
        return a.split_whitespace().eq(b.split_whitespace());
    }
    // What `char::is_whitespace` says of ASCII: also vertical tab, unlike
    // `u8::is_ascii_whitespace`.
    let space = |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r');
    let word = |s: &[u8]| -> usize { s.iter().position(space).unwrap_or(s.len()) };
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        x = x
            .get(x.iter().position(|c| !space(c)).unwrap_or(x.len())..)
            .unwrap_or_default();
        y = y
            .get(y.iter().position(|c| !space(c)).unwrap_or(y.len())..)
            .unwrap_or_default();
        if x.is_empty() || y.is_empty() {
            return x.is_empty() && y.is_empty();
        }
        let (wx, wy) = (word(x), word(y));
        if x.get(..wx) != y.get(..wy) {
            return false;
        }
        x = x.get(wx..).unwrap_or_default();
        y = y.get(wy..).unwrap_or_default();
    }
}

/// Text in `charset` as a string: mail-parser's decoders (the WHATWG set and more);
/// UTF-8, lossily, when the charset is absent or unknown. Valid UTF-8 labelled UTF-8 or
/// US-ASCII (the usual case) is taken as it is: `from_utf8_lossy` checks byte by byte,
/// `from_utf8` a word at a time.
fn decode_charset(bytes: &[u8], charset: Option<&str>) -> String {
    let label = charset.map(|c| c.trim().to_ascii_lowercase());
    // A byte-order mark says UTF-16 when no charset (or a generic one) says otherwise:
    // text editors and spreadsheet exports write it, and readers honour it.
    if matches!(
        label.as_deref(),
        None | Some("utf-8" | "utf8" | "us-ascii" | "utf-16" | "utf16")
    ) {
        if let Some(big_endian) = utf16_bom(bytes) {
            let units = bytes[2..].chunks_exact(2).map(|p| {
                if big_endian {
                    u16::from_be_bytes([p[0], p[1]])
                } else {
                    u16::from_le_bytes([p[0], p[1]])
                }
            });
            return char::decode_utf16(units)
                .map(|c| c.unwrap_or('\u{fffd}'))
                .collect();
        }
    }
    if matches!(label.as_deref(), None | Some("utf-8" | "utf8" | "us-ascii")) {
        if let Ok(s) = std::str::from_utf8(bytes) {
            return s.to_owned();
        }
    }
    match label.and_then(|c| charset_decoder(c.as_bytes())) {
        Some(decode) => decode(bytes),
        None => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// True when `body` holds only base64 characters, white space and final padding.
fn is_base64_text(body: &[u8]) -> bool {
    let mut padding = false;
    body.iter().all(|&c| match c {
        b'=' => {
            padding = true;
            true
        }
        b' ' | b'\t' | b'\r' | b'\n' => true,
        c if c.is_ascii_alphanumeric() || c == b'+' || c == b'/' => !padding,
        _ => false,
    })
}

/// `Some(true)` for a UTF-16 big-endian byte-order mark at the start of `bytes`,
/// `Some(false)` for little-endian.
fn utf16_bom(bytes: &[u8]) -> Option<bool> {
    match bytes.get(..2) {
        Some([0xfe, 0xff]) => Some(true),
        Some([0xff, 0xfe]) => Some(false),
        _ => None,
    }
}

/// The top-level header fields with raw (unfolded) and decoded values.
fn top_headers(msg: &mail_parser::Message<'_>) -> Vec<(String, Vec<String>)> {
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

    const MSG: &[u8] = b"From: a@example.com\r\nTo: b@bank.example\r\nSubject: =?utf-8?q?Gehalt_M=C3=A4rz?=\r\nX-Mailer: Billing\r\n 3000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<p>Card 4111 1111=20\r\n1111 1111</p>\r\n--XX\r\nContent-Type: application/x-msdownload; name=\"setup.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: text/plain\r\n\r\nsecret inner text\r\n--XX--\r\n";

    #[test]
    fn look_alike_spaces_and_digits_are_folded() {
        assert_eq!(
            normalize("4111\u{a0}1111\u{200b}1111\u{202f}1111".into()),
            "4111 11111111 1111"
        );
        assert_eq!(normalize("\u{ff14}\u{ff11}\u{ff11}\u{ff11}".into()), "4111");
        assert_eq!(normalize("\u{664}\u{6f1}\u{967}x".into()), "411x");
        assert_eq!(normalize("Grüße".into()), "Grüße");
        // Digits of every script by their value; invisible characters dropped.
        for (zero, script) in [
            (0x09e6, "Bengali"),
            (0x0e50, "Thai"),
            (0x1040, "Myanmar"),
            (0x1810, "Mongolian"),
            (0x0f20, "Tibetan"),
            (0x07c0, "N'Ko"),
            (0x1d7ce, "mathematical bold"),
            (0x1d7f6, "mathematical monospace"),
            (0xff10, "full-width"),
        ] {
            let digits: String = [4, 1, 1, 1]
                .iter()
                .map(|d| char::from_u32(zero + d).unwrap())
                .collect();
            assert_eq!(normalize(digits), "4111", "{script}");
        }
        assert_eq!(
            normalize("4\u{2063}1\u{34f}1\u{180e}1\u{fe0f}1\u{ad}".into()),
            "41111"
        );
        let card = "Card: 4111\u{a0}1111\u{200b}1111\u{a0}1111\r\n";
        let msg = format!("Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{card}");
        let v = MessageView::new(msg.as_bytes());
        assert!(v
            .texts
            .iter()
            .any(|(_, t)| t.contains("4111 11111111 1111")));
    }

    #[test]
    fn zip_member_names_are_read_even_when_encrypted_and_never_panic() {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .with_aes_encryption(zip::AesMode::Aes256, "secret password");
        for n in ["docs/a.pdf", "bin/tool.exe"] {
            w.start_file(n, opts).unwrap();
            w.write_all(b"MZ").unwrap();
        }
        let archive = w.finish().unwrap().into_inner();
        assert_eq!(zip_member_names(&archive), ["docs/a.pdf", "bin/tool.exe"]);
        // Cut or damaged anywhere: no panic, at most the names that are whole.
        for cut in 0..archive.len() {
            let _ = zip_member_names(&archive[..cut]);
            let mut bad = archive.clone();
            bad[cut] ^= 0xff;
            let _ = zip_member_names(&bad);
        }
        assert!(zip_member_names(b"not a zip").is_empty());
    }

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
        // An inline forwarded message is looked into, not counted as an attachment:
        // the same judgement `strip-attachments` makes (`attachment::Roles::is_attachment`).
        assert!(!v
            .attachments
            .iter()
            .any(|a| a.content_type == "message/rfc822"));
    }

    fn with_attachment(content_type: &str, content: &[u8]) -> Vec<u8> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(content);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!("Subject: export\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--B\r\nContent-Type: {content_type}\r\nContent-Disposition: attachment; filename=\"export.dat\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--B--\r\n", lines.join("\r\n")).into_bytes()
    }

    fn texts_of(msg: &[u8]) -> Vec<(String, String)> {
        MessageView::new(msg)
            .texts
            .into_iter()
            .map(|(s, t)| (s.0, t))
            .collect()
    }

    #[test]
    fn attachments_whose_content_is_text_are_judged_as_text() {
        // A CSV export declared as octet-stream, the card number far past the sniffed prefix.
        let mut csv = "id;name;card\r\n".repeat(1000).into_bytes();
        csv.extend_from_slice(b"7;Doe;4111 1111 1111 1111\r\n");
        let texts = texts_of(&with_attachment("application/octet-stream", &csv));
        let hit = texts
            .iter()
            .find(|(_, t)| t.contains("4111 1111 1111 1111"))
            .expect("the CSV is judged");
        assert_eq!(hit.0, "attachment (text content) \"export.dat\"");
        // Binary content (a NUL early on) is not.
        let mut bin = b"PK\x03\x04\x00\x00".to_vec();
        bin.extend_from_slice(b"4111 1111 1111 1111");
        let texts = texts_of(&with_attachment("application/zip", &bin));
        assert!(!texts.iter().any(|(_, t)| t.contains("4111")), "{texts:?}");
        // Nor are images, whatever their bytes.
        let texts = texts_of(&with_attachment(
            "image/svg+xml",
            b"<svg>4111 1111 1111 1111</svg>",
        ));
        assert!(!texts.iter().any(|(_, t)| t.contains("4111")), "{texts:?}");
    }

    #[test]
    fn same_words_agrees_with_split_whitespace() {
        let samples = [
            "",
            " ",
            "a",
            "a b",
            " a  b ",
            "a\tb",
            "a\x0bb",
            "a\x0cb",
            "ab",
            "a b c",
            "a bc",
            "ab c",
            "\r\na\r\n",
            "a\u{a0}b",
            "a\u{3000}b",
            "x y ",
            "xy",
            "x",
            "y",
        ];
        for a in samples {
            for b in samples {
                assert_eq!(
                    same_words(a, b),
                    a.split_whitespace().eq(b.split_whitespace()),
                    "{a:?} vs {b:?}"
                );
            }
        }
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
