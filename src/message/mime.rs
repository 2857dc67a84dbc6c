//! A byte-exact MIME tree over one message, so transforms can rewrite some parts and
//! copy every other byte unchanged.
//!
//! Its one job is to find entity boundaries; it never changes or decodes anything. The
//! tree borrows the message: each [`Entity`] is a slice of the input, and the pieces of a
//! multipart (preamble, delimiter lines, parts, closing delimiter and epilogue) concatenate
//! back to exactly the multipart's body. Input is expected with CRLF line ends
//! ([`canonical_crlf`] makes it so). Malformed structure degrades to a leaf, nesting is cut
//! at [`MAX_DEPTH`], and nothing here may panic on any input.

use std::borrow::Cow;

use mail_parser::{MessageParser, MimeHeaders};

/// Deeper nesting than this is treated as an opaque leaf.
pub const MAX_DEPTH: usize = 32;

/// One MIME entity: header block plus body, borrowed from the message.
#[derive(Debug)]
pub struct Entity<'a> {
    /// The whole entity, header and body. Invariant: `raw == header ++ body`.
    pub raw: &'a [u8],
    /// The header fields including the empty line that ends them (may be just `CRLF`,
    /// or empty when the entity has no empty line at all).
    pub header: &'a [u8],
    /// Everything after the empty line.
    pub body: &'a [u8],
    /// The content headers, parsed.
    pub info: PartInfo,
    /// What the body holds.
    pub kind: Kind<'a>,
}

/// The body of an [`Entity`].
#[derive(Debug)]
pub enum Kind<'a> {
    /// Anything that is not structurally parsed further.
    Leaf,
    /// A multipart whose body is `preamble ++ (delimiter ++ part)* ++ tail`.
    Multipart {
        preamble: &'a [u8],
        /// Each part with the delimiter line before it (`CRLF--boundary CRLF`).
        parts: Vec<(&'a [u8], Entity<'a>)>,
        /// The closing delimiter and epilogue (empty when the closing delimiter is missing).
        tail: &'a [u8],
    },
    /// A `message/rfc822` (or `message/global`) body in 7bit/8bit/binary encoding.
    Message(Box<Entity<'a>>),
}

/// Content headers of one entity, lower-cased where case does not matter.
#[derive(Debug, Default, Clone)]
pub struct PartInfo {
    /// `type/subtype`, lower case; `text/plain` when absent.
    pub content_type: String,
    /// The multipart boundary, exactly as given.
    pub boundary: Option<String>,
    /// `attachment`, `inline` or absent, lower case.
    pub disposition: Option<String>,
    /// `filename` of Content-Disposition or `name` of Content-Type, decoded.
    pub file_name: Option<String>,
    /// Content-Transfer-Encoding, lower case; `7bit` when absent.
    pub transfer_encoding: String,
    /// The `charset` parameter of Content-Type, as given.
    pub charset: Option<String>,
}

impl PartInfo {
    /// `in_digest`: the entity is a part of a `multipart/digest`, where the default
    /// type is `message/rfc822` instead of `text/plain` (RFC 2046 §5.1.5).
    fn from_header(header: &[u8], in_digest: bool) -> PartInfo {
        let info = PartInfo::defaults(in_digest);
        if header.is_empty() {
            return info;
        }
        PartInfo::from_parsed(
            MessageParser::default().parse_headers(header).as_ref(),
            info,
        )
    }

    /// What an entity without content headers is (`in_digest`: see [`Self::from_header`]).
    fn defaults(in_digest: bool) -> PartInfo {
        let default_type = if in_digest {
            "message/rfc822"
        } else {
            "text/plain"
        };
        PartInfo {
            content_type: default_type.into(),
            transfer_encoding: "7bit".into(),
            ..PartInfo::default()
        }
    }

    /// The content headers from mail-parser's reading of a header block (`None`: it
    /// found no structure), over `info` (the defaults).
    pub(crate) fn from_parsed(
        parsed: Option<&mail_parser::Message<'_>>,
        mut info: PartInfo,
    ) -> PartInfo {
        let Some(parsed) = parsed else {
            return info;
        };
        if parsed.parts.is_empty() {
            return info;
        }
        if let Some(ct) = parsed.content_type() {
            let sub = ct.subtype().unwrap_or("");
            info.content_type = format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase();
            info.boundary = ct.attribute("boundary").map(str::to_string);
            info.charset = ct.attribute("charset").map(str::to_string);
        }
        if let Some(cd) = parsed.content_disposition() {
            info.disposition = Some(cd.ctype().to_ascii_lowercase());
        }
        info.file_name = parsed.attachment_name().map(str::to_string);
        if let Some(cte) = parsed.content_transfer_encoding() {
            info.transfer_encoding = cte.trim().to_ascii_lowercase();
        }
        info
    }

    /// True for `multipart/*`.
    pub fn is_multipart(&self) -> bool {
        self.content_type.starts_with("multipart/")
    }

    /// True for an attached message: `message/rfc822` or `message/global`.
    pub fn is_message(&self) -> bool {
        self.content_type == "message/rfc822" || self.content_type == "message/global"
    }

    /// True for base64 or quoted-printable, the encodings that hide structure.
    pub fn is_encoded(&self) -> bool {
        matches!(
            self.transfer_encoding.as_str(),
            "base64" | "quoted-printable"
        )
    }
}

/// Parses `raw` as an entity (a whole message at depth 0).
pub fn parse(raw: &[u8]) -> Entity<'_> {
    parse_at(raw, 0, false)
}

/// [`parse`] for a message whose top-level header block was already read by
/// mail-parser ([`crate::message::Headers::parsed`]): `parsed` is that reading of
/// `raw[..header_end(raw)]`, so the block is not parsed a second time.
pub fn parse_with_header<'a>(
    raw: &'a [u8],
    parsed: Option<&mail_parser::Message<'_>>,
) -> Entity<'a> {
    let header = &raw[..header_end(raw)];
    let info = if header.is_empty() {
        PartInfo::defaults(false)
    } else {
        PartInfo::from_parsed(parsed, PartInfo::defaults(false))
    };
    entity_at(raw, header.len(), info, 0)
}

/// How many levels of base64 or quoted-printable attached messages are decoded and
/// looked into, as mail-parser does (its `MAX_NESTED_ENCODED`).
pub const ENCODED_LEVELS: usize = 3;

/// Most RFC 2231 continuation segments (`name*0=`, `name*1=`...) one `Content-Type` or
/// `Content-Disposition` field may have. Real file names need a handful; mail-parser
/// merges them in quadratic time, so 100,000 of them would hold a thread for minutes.
pub const MAX_CONTINUATIONS: usize = 100;

/// Why a message is refused before anything parses it: its structure is beyond what
/// sealgate can inspect, or beyond what its parsers handle safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hazard {
    /// Multiparts and attached messages nest deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A content field has more than [`MAX_CONTINUATIONS`] RFC 2231 continuations.
    TooManyContinuations,
    /// A part has two `Content-Type`, `Content-Disposition` or
    /// `Content-Transfer-Encoding` fields: parsers and mail clients disagree on which
    /// one counts (mail-parser takes the last, others the first), so an attachment
    /// could look like text to the policy and like a program to the recipient.
    DuplicateContentField,
    /// A header block that MIME readers split differently: it begins with a white-space
    /// line or a continuation line, holds a white-space-only line or a line that is not a
    /// header field, or names a `Content-*` field with white space before the colon.
    /// Python's email package, for one, skips or ends the header block there while
    /// mail-parser reads on, so a declared attachment could look like plain text here.
    AmbiguousHeader,
    /// A line that starts with a multipart's closing delimiter but goes on with more
    /// than white space (`--b--x`): mail-parser closes the multipart there, Python's
    /// email package reads on, so what follows would be judged by one and shown by the other.
    AmbiguousBoundary,
    /// A multipart whose boundary is missing or never starts a line: readers that
    /// unfold or unquote the parameter differently find parts in it, sealgate none.
    MissingBoundary,
}

impl Hazard {
    /// True for hazards of structure that readers disagree on (refused as a media
    /// error, `5.6.0`) rather than of size or depth.
    pub fn is_ambiguous(self) -> bool {
        matches!(
            self,
            Hazard::DuplicateContentField | Hazard::AmbiguousHeader
        )
    }
}

impl std::fmt::Display for Hazard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hazard::TooDeep => write!(
                f,
                "MIME parts are nested more than {MAX_DEPTH} levels deep, so rules could not \
                 inspect all of the message"
            ),
            Hazard::TooManyContinuations => write!(
                f,
                "a Content-Type or Content-Disposition field is split into more than \
                 {MAX_CONTINUATIONS} RFC 2231 continuations"
            ),
            Hazard::DuplicateContentField => write!(
                f,
                "a MIME part has two Content-Type, Content-Disposition or \
                 Content-Transfer-Encoding fields, so mail programs disagree on what it is"
            ),
            Hazard::AmbiguousHeader => write!(
                f,
                "a header block begins with a white-space or continuation line, holds a \
                 line that is not a header field, or has white space before the colon of a \
                 Content field, so mail programs disagree on where its fields end"
            ),
            Hazard::MissingBoundary => write!(
                f,
                "a multipart has no boundary, or its boundary never starts a line, so \
                 mail programs disagree on its parts"
            ),
            Hazard::AmbiguousBoundary => write!(
                f,
                "a closing MIME boundary is followed by more than white space on its line, \
                 or a boundary line stands inside a part, so mail programs disagree on \
                 where the multipart ends"
            ),
        }
    }
}

/// Checks `raw` before any MIME parser sees it. A message is refused whole (like Postfix
/// past `mime_nesting_limit`) when
/// - its multiparts and attached messages (including attached messages in base64 or
///   quoted-printable, which mail-parser decodes) nest deeper than [`MAX_DEPTH`]: rules
///   and attachment actions could not see all of it, and mail-parser's recursive copy
///   and drop of a deep tree would overflow a thread's stack;
/// - a `Content-Type` or `Content-Disposition` field, in any part, has more than
///   [`MAX_CONTINUATIONS`] RFC 2231 continuations.
///
/// Walks each tree without recursion; decoding recurses at most [`ENCODED_LEVELS`] deep.
pub fn hazard(raw: &[u8]) -> Option<Hazard> {
    hazard_from(raw, 0, ENCODED_LEVELS, false)
}

/// [`hazard`] for a message that already has CRLF line ends (as the pipeline's has once
/// it entered): it is not checked for them again.
pub fn hazard_crlf(raw: &[u8]) -> Option<Hazard> {
    hazard_from(raw, 0, ENCODED_LEVELS, true)
}

fn hazard_from(raw: &[u8], depth0: usize, encoded_left: usize, crlf: bool) -> Option<Hazard> {
    if continuations_exceed_limit(raw) {
        return Some(Hazard::TooManyContinuations);
    }
    let canon = if crlf {
        Cow::Borrowed(raw)
    } else {
        canonical_crlf(raw)
    };
    let root = parse_at(&canon, depth0, false);
    let mut stack = vec![(&root, depth0)];
    // Every boundary of the tree, and every leaf body, for the check after the walk.
    let mut boundaries: Vec<&str> = Vec::new();
    let mut leaf_bodies: Vec<&[u8]> = Vec::new();
    while let Some((e, depth)) = stack.pop() {
        if has_duplicate_content_field(e.header) {
            return Some(Hazard::DuplicateContentField);
        }
        // A submission's own first line may be body (no header at all): that is read
        // one way by everyone, as text.
        // (Only without any empty line: ingest then separates it as body. With one
        // later on, a reader ends the header at that first line and shows the rest.)
        let top = depth0 == 0 && std::ptr::eq(e, &root) && !e.header.ends_with(b"\r\n\r\n");
        if ambiguous_header(e.header, top) || spaced_unquoted_parameter(e.header) {
            return Some(Hazard::AmbiguousHeader);
        }
        match &e.kind {
            Kind::Multipart { parts, .. } => {
                if let Some(b) = e.info.boundary.as_deref() {
                    if junk_after_closing_delimiter(e.body, b) {
                        return Some(Hazard::AmbiguousBoundary);
                    }
                    boundaries.push(b);
                }
                stack.extend(parts.iter().map(|(_, p)| (p, depth + 1)));
            }
            Kind::Message(inner) => stack.push((inner, depth + 1)),
            Kind::Leaf if depth >= MAX_DEPTH => {
                let nests = (e.info.is_multipart()
                    && e.info.boundary.as_deref().is_some_and(|b| !b.is_empty()))
                    || e.info.is_message();
                if nests {
                    return Some(Hazard::TooDeep);
                }
            }
            Kind::Leaf if e.info.is_multipart() => return Some(Hazard::MissingBoundary),
            Kind::Leaf if e.info.is_message() && e.info.is_encoded() => {
                // One more encoded level than mail-parser decodes: it would be seen by
                // nobody here, but a mail client may well open it.
                if encoded_left == 0 {
                    return Some(Hazard::TooDeep);
                }
                let decoded = decode_body(e.body, &e.info.transfer_encoding);
                if let Some(h) = hazard_from(&decoded, depth + 1, encoded_left - 1, false) {
                    return Some(h);
                }
            }
            Kind::Leaf => leaf_bodies.push(e.body),
        }
    }
    // A delimiter line of any multipart of the message inside a leaf (an inner boundary
    // after an outer one closed its multipart): some readers still split there.
    if !boundaries.is_empty()
        && leaf_bodies
            .iter()
            .any(|body| boundaries.iter().any(|b| holds_delimiter_line(body, b)))
    {
        return Some(Hazard::AmbiguousBoundary);
    }
    None
}

/// True when a line of `body` is a delimiter or closing delimiter of `boundary`.
fn holds_delimiter_line(body: &[u8], boundary: &str) -> bool {
    let delim = [b"--", boundary.as_bytes()].concat();
    memchr::memmem::find_iter(body, &delim).any(|at| {
        if at != 0 && !body[..at].ends_with(b"\r\n") {
            return false;
        }
        let rest = &body[at + delim.len()..];
        let line = &rest[..memchr::memmem::find(rest, b"\r\n").unwrap_or(rest.len())];
        let line = line.strip_prefix(b"--").unwrap_or(line);
        line.iter().all(|&c| c == b' ' || c == b'\t')
    })
}

/// True when `header` has two `Content-Type`, `Content-Disposition` or
/// `Content-Transfer-Encoding` fields that say different things (the same field twice
/// is harmless and occurs in real mail).
fn has_duplicate_content_field(header: &[u8]) -> bool {
    const NAMES: [&str; 3] = [
        "content-type",
        "content-disposition",
        "content-transfer-encoding",
    ];
    let mut seen: [Option<String>; 3] = [None, None, None];
    for f in fields(header) {
        let Some(i) = NAMES
            .iter()
            .position(|n| f.name.trim().eq_ignore_ascii_case(n))
        else {
            continue;
        };
        let value = f.value().to_ascii_lowercase();
        match &seen[i] {
            Some(first) if *first != value => return true,
            Some(_) => {}
            None => seen[i] = Some(value),
        }
    }
    false
}

/// True when a Content-Type or Content-Disposition field has a `name`, `filename` or
/// `boundary` parameter whose unquoted value holds white space (`filename=tool .exe`):
/// Python's email package reads `tool`, mail-parser and Node's mailparser `tool .exe`.
///
/// Also true for a folded Content-Transfer-Encoding field (Python's email package does
/// not decode `Content-Transfer-Encoding:` + CRLF + ` base64`, mail-parser does) and
/// for a Content-Type without `type/subtype`.
fn spaced_unquoted_parameter(header: &[u8]) -> bool {
    let folded_encoding = fields(header).iter().any(|f| {
        f.is("content-transfer-encoding")
            && f.raw
                .strip_suffix(b"\r\n")
                .unwrap_or(f.raw)
                .windows(2)
                .any(|w| w == b"\r\n")
    });
    // A Content-Type without `type/subtype`: text/plain here, an attachment of no
    // type to mailparser.
    let typeless = fields(header).iter().any(|f| {
        f.is("content-type") && {
            let v = f.value();
            let t = v.split(';').next().unwrap_or_default().trim();
            !t.split_once('/')
                .is_some_and(|(a, b)| !a.trim().is_empty() && !b.trim().is_empty())
        }
    });
    if folded_encoding || typeless {
        return true;
    }
    fields(header)
        .iter()
        .filter(|f| f.is("content-type") || f.is("content-disposition"))
        .any(|f| {
            let value = f.value();
            // Split at `;` outside quoted strings.
            let mut params = Vec::new();
            let (mut start, mut quoted, mut escaped) = (0, false, false);
            for (i, c) in value.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if quoted => escaped = true,
                    '"' => quoted = !quoted,
                    ';' if !quoted => {
                        params.push(&value[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            params.push(&value[start..]);
            params.iter().skip(1).any(|p| {
                let Some((key, v)) = p.split_once('=') else {
                    return false;
                };
                let key = key.trim().to_ascii_lowercase();
                let key = key.split('*').next().unwrap_or_default();
                let v = v.trim();
                matches!(key, "name" | "filename" | "boundary")
                    && !v.starts_with('"')
                    && v.contains([' ', '\t'])
            })
        })
}

/// True when a line of `body` is `--boundary--` followed by more than white space.
fn junk_after_closing_delimiter(body: &[u8], boundary: &str) -> bool {
    let close = [b"--", boundary.as_bytes(), b"--"].concat();
    memchr::memmem::find_iter(body, &close).any(|at| {
        if at != 0 && !body[..at].ends_with(b"\r\n") {
            return false;
        }
        let rest = &body[at + close.len()..];
        let line = &rest[..memchr::memmem::find(rest, b"\r\n").unwrap_or(rest.len())];
        line.iter().any(|&c| c != b' ' && c != b'\t')
    })
}

/// True when MIME readers could split `header` (an entity's header block, as in
/// [`Entity::header`]) into fields differently: see [`Hazard::AmbiguousHeader`].
/// `top`: the header of the message itself, which may start with a line that is no field
/// (a body-only submission).
fn ambiguous_header(header: &[u8], top: bool) -> bool {
    if header == b"\r\n" {
        return false;
    }
    // The lines of the block without the empty line that ends it and the last CRLF.
    let block = header
        .strip_suffix(b"\r\n\r\n")
        .or_else(|| header.strip_suffix(b"\r\n"))
        .unwrap_or(header);
    if block.is_empty() {
        return false;
    }
    let mut spaced_seen = false;
    for (i, line) in block.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match line.first() {
            Some(b' ' | b'\t') => {
                if i == 0 || line.iter().all(|&b| b == b' ' || b == b'\t') {
                    return true;
                }
            }
            None => return true,
            Some(_) => {
                let Some(colon) = line.iter().position(|&b| b == b':') else {
                    if top && i == 0 {
                        return false;
                    }
                    return true;
                };
                let name = &line[..colon];
                // White space may only stand between a name and its colon (obsolete
                // syntax); `if a == b: x` is no field to anyone.
                let core_end = name
                    .iter()
                    .rposition(|&b| b != b' ' && b != b'\t')
                    .map_or(0, |p| p + 1);
                if core_end == 0 || name[..core_end].iter().any(|&b| b == b' ' || b == b'\t') {
                    if top && i == 0 {
                        return false;
                    }
                    return true;
                }
                let spaced = name.iter().any(|&b| b == b' ' || b == b'\t');
                if spaced {
                    spaced_seen = true;
                }
                let content = name.len() >= 8 && name[..8].eq_ignore_ascii_case(b"content-");
                let mime_version =
                    name.len() >= 12 && name[..12].eq_ignore_ascii_case(b"mime-version");
                // Python's email package ends the header at a field with white space
                // before its colon: a Content field after one is unseen there.
                if (spaced || spaced_seen) && (content || mime_version) {
                    return true;
                }
                if name
                    .iter()
                    .any(|&b| b < 0x21 && b != b' ' && b != b'\t' || b == 0x7f)
                {
                    return true;
                }
            }
        }
    }
    false
}

/// True when one `Content-*` header field (with its folded lines), anywhere in `raw`,
/// holds more than [`MAX_CONTINUATIONS`] `*<digit>` continuation marks. A byte scan: it
/// runs before the header parsers that would take quadratic time over them.
fn continuations_exceed_limit(raw: &[u8]) -> bool {
    let mut in_content_field = false;
    let mut marks = 0usize;
    let starts = std::iter::once(0).chain(memchr::memchr_iter(b'\n', raw).map(|i| i + 1));
    for start in starts {
        let rest = &raw[start..];
        match rest.first() {
            Some(b' ' | b'\t') => {}
            _ => {
                in_content_field = rest.len() >= 8 && rest[..8].eq_ignore_ascii_case(b"content-");
                marks = 0;
            }
        }
        if !in_content_field {
            continue;
        }
        let line = &rest[..memchr::memchr(b'\n', rest).unwrap_or(rest.len())];
        for star in memchr::memchr_iter(b'*', line) {
            if line.get(star + 1).is_some_and(u8::is_ascii_digit) {
                marks += 1;
            }
        }
        if marks > MAX_CONTINUATIONS {
            return true;
        }
    }
    false
}

fn parse_at(raw: &[u8], depth: usize, in_digest: bool) -> Entity<'_> {
    let split = header_end(raw);
    let info = PartInfo::from_header(&raw[..split], in_digest);
    entity_at(raw, split, info, depth)
}

/// The entity of `raw` whose header ends at `split`, with its content headers `info`.
fn entity_at(raw: &[u8], split: usize, info: PartInfo, depth: usize) -> Entity<'_> {
    let (header, body) = raw.split_at(split);
    let kind = if depth >= MAX_DEPTH {
        Kind::Leaf
    } else if info.is_multipart() {
        let digest = info.content_type == "multipart/digest";
        match info.boundary.as_deref() {
            Some(b) if !b.is_empty() => {
                split_multipart(body, b, depth, digest).unwrap_or(Kind::Leaf)
            }
            _ => Kind::Leaf,
        }
    } else if info.is_message() && !info.is_encoded() && !body.is_empty() {
        Kind::Message(Box::new(parse_at(body, depth + 1, false)))
    } else {
        Kind::Leaf
    };
    Entity {
        raw,
        header,
        body,
        info,
        kind,
    }
}

/// Offset of the body: just after the first empty line. An entity starting with an
/// empty line has an empty header block of `CRLF`; one without any empty line is all header.
pub fn header_end(raw: &[u8]) -> usize {
    if raw.starts_with(b"\r\n") {
        return 2;
    }
    match find(raw, b"\r\n\r\n") {
        Some(p) => p + 4,
        None => raw.len(),
    }
}

/// True when a line of `text` (CRLF or bare LF ended) has more than 998 octets.
pub fn has_long_line(text: &[u8]) -> bool {
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', text).chain(std::iter::once(text.len())) {
        let line = text.get(start..end).unwrap_or_default();
        if line.strip_suffix(b"\r").unwrap_or(line).len() > 998 {
            return true;
        }
        start = end + 1;
    }
    false
}

/// Splits a multipart body at its delimiter lines; `None` when no delimiter is found.
fn split_multipart<'a>(
    body: &'a [u8],
    boundary: &str,
    depth: usize,
    digest: bool,
) -> Option<Kind<'a>> {
    let delim = [b"--", boundary.as_bytes()].concat();
    let marks = delimiter_marks(body, &delim);
    let first = marks.first()?;
    if first.2 {
        return None;
    }
    let preamble = &body[..first.0];
    let mut parts = Vec::new();
    let mut tail: &[u8] = &[];
    for (i, &(start, content, closing)) in marks.iter().enumerate() {
        if closing {
            tail = &body[start..];
            break;
        }
        let end = marks.get(i + 1).map_or(body.len(), |m| m.0).max(content);
        let part_raw = body.get(content..end).unwrap_or(&[]);
        parts.push((&body[start..content], parse_at(part_raw, depth + 1, digest)));
    }
    Some(Kind::Multipart {
        preamble,
        parts,
        tail,
    })
}

/// The delimiter lines of a multipart body, in order, up to and including the closing
/// one: (start of the delimiter including the CRLF before it, start of the content after
/// its line, whether it is the closing delimiter).
///
/// Delimiter lines are found with a SIMD substring search rather than line by line; a
/// match counts only at the start of a line (the body's start or after CRLF). A match
/// cannot straddle a line start, as a boundary holds no CR or LF.
fn delimiter_marks(body: &[u8], delim: &[u8]) -> Vec<(usize, usize, bool)> {
    let mut marks = Vec::new();
    for line_start in memchr::memmem::find_iter(body, delim) {
        if line_start != 0 && !body[..line_start].ends_with(b"\r\n") {
            continue;
        }
        let after = line_start + delim.len();
        let line_end = memchr::memmem::find(&body[after..], b"\r\n").map(|p| after + p);
        let rest = &body[after..line_end.unwrap_or(body.len())];
        let closing = rest.starts_with(b"--");
        if closing || rest.iter().all(|c| *c == b' ' || *c == b'\t') {
            let start = line_start.saturating_sub(2);
            let content = line_end.map_or(body.len(), |e| e + 2);
            marks.push((start, content, closing));
            if closing {
                break;
            }
        }
    }
    marks
}

/// First position of `needle` in `hay`.
///
/// Candidates for the first byte are looked for 64 bytes at a time with `<[u8]>::contains`
/// (word-at-a-time in `core`), which is several times faster than a byte loop on large
/// bodies where the first byte is rare.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    if hay.len() < needle.len() {
        return None;
    }
    let last_start = hay.len() - needle.len();
    let mut block = 0;
    while block <= last_start {
        let end = (block + 64).min(last_start + 1);
        if hay[block..end].contains(&first) {
            for at in block..end {
                if hay[at] == first && &hay[at..at + needle.len()] == needle {
                    return Some(at);
                }
            }
        }
        block = end;
    }
    None
}

/// The message with every line ending as CRLF (bare LF and bare CR become CRLF).
/// Borrows when the input already is canonical.
pub fn canonical_crlf(msg: &[u8]) -> Cow<'_, [u8]> {
    if is_canonical_crlf(msg) {
        return Cow::Borrowed(msg);
    }
    let mut out = Vec::with_capacity(msg.len() + msg.len() / 32);
    let mut i = 0;
    while i < msg.len() {
        match msg[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if msg.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            c => out.push(c),
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// True when every CR is followed by LF and every LF follows a CR, i.e. for each pair
/// of neighbouring bytes "first is CR" equals "second is LF", and the message neither
/// starts with LF nor ends with CR. Branch-free over fixed blocks so that the compiler
/// vectorises it: this runs on every message.
fn is_canonical_crlf(msg: &[u8]) -> bool {
    if msg.first() == Some(&b'\n') || msg.last() == Some(&b'\r') {
        return false;
    }
    let Some(pairs) = msg.len().checked_sub(1) else {
        return true;
    };
    let (a, b) = (&msg[..pairs], &msg[1..]);
    let mut at = 0;
    while at < pairs {
        let end = (at + 4096).min(pairs);
        let bad = a[at..end].iter().zip(&b[at..end]).fold(0u8, |acc, (x, y)| {
            acc | (u8::from(*x == b'\r') ^ u8::from(*y == b'\n'))
        });
        if bad != 0 {
            return false;
        }
        at = end;
    }
    true
}

/// One header field, raw (with its folded continuation lines and final CRLF).
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    /// The field name as written.
    pub name: &'a str,
    /// Name, colon, value and the final CRLF, exactly as in the message.
    pub raw: &'a [u8],
}

impl Field<'_> {
    /// The unfolded value after the colon, trimmed.
    pub fn value(&self) -> String {
        let colon = self.raw.iter().position(|c| *c == b':').unwrap_or(0);
        let v = self.raw.get(colon + 1..).unwrap_or(&[]);
        let s = String::from_utf8_lossy(v);
        s.replace("\r\n", "").trim().to_string()
    }

    /// True for `Content-*` fields, which describe the entity rather than the message.
    pub fn is_content(&self) -> bool {
        self.name.len() >= 8 && self.name[..8].eq_ignore_ascii_case("content-")
    }

    /// True when the name is `name`, ignoring case.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// True when `line` starts a header field: a name of printable ASCII (no space, no
/// colon; RFC 5322 §2.2), optional white space (the obsolete syntax), then a colon.
pub fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = memchr::memchr(b':', line) else {
        return false;
    };
    let name = &line[..colon];
    let name = &name[..name.len()
        - name
            .iter()
            .rev()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count()];
    !name.is_empty() && name.iter().all(|b| (33..=126).contains(b))
}

/// Splits a header block (as in [`Entity::header`]) into fields. A line that is neither
/// a field nor a continuation (a folded line that lost its leading white space, such as
/// `b=...` of a DKIM-Signature) belongs to the field before it, so that every transform
/// that copies fields keeps it; only such lines before the first field come back as a
/// field with an empty name.
pub fn fields(header: &[u8]) -> Vec<Field<'_>> {
    let mut out: Vec<Field<'_>> = Vec::new();
    let mut pos = 0;
    let mut field_start: Option<usize> = None;
    while pos < header.len() {
        let end = find(&header[pos..], b"\r\n").map_or(header.len(), |p| pos + p + 2);
        let line = &header[pos..end];
        if line == b"\r\n" {
            // the empty line that ends the block
            if let Some(s) = field_start.take() {
                out.push(make_field(&header[s..pos]));
            }
            break;
        }
        let continuation = line.first().is_some_and(|c| *c == b' ' || *c == b'\t')
            || (field_start.is_some() && !is_field_line(line));
        if !continuation {
            if let Some(s) = field_start.take() {
                out.push(make_field(&header[s..pos]));
            }
            field_start = Some(pos);
        } else if field_start.is_none() {
            field_start = Some(pos);
        }
        pos = end;
    }
    if let Some(s) = field_start {
        let end = pos.min(header.len());
        out.push(make_field(&header[s..end]));
    }
    out
}

/// `raw` without its top-level header fields called one of `names` (any case, with
/// their continuation lines); `None` when it has none, so the usual case copies nothing.
pub fn without_fields(raw: &[u8], names: &[&str]) -> Option<Vec<u8>> {
    let header = raw.get(..header_end(raw)).unwrap_or(raw);
    let all = fields(header);
    if !all.iter().any(|f| names.iter().any(|n| f.is(n))) {
        return None;
    }
    // The fields are consecutive slices from the start of the header; what follows
    // them (the empty line, the body) is copied as it is.
    let consumed: usize = all.iter().map(|f| f.raw.len()).sum();
    let mut out = Vec::with_capacity(raw.len());
    for f in all.iter().filter(|f| !names.iter().any(|n| f.is(n))) {
        out.extend_from_slice(f.raw);
    }
    out.extend_from_slice(raw.get(consumed..).unwrap_or_default());
    Some(out)
}

fn make_field(raw: &[u8]) -> Field<'_> {
    let name = raw
        .iter()
        .position(|c| *c == b':')
        .and_then(|p| std::str::from_utf8(&raw[..p]).ok())
        .map(str::trim)
        .unwrap_or("");
    Field { name, raw }
}

/// Decodes a body by its Content-Transfer-Encoding (base64 and quoted-printable,
/// leniently; anything else unchanged).
pub fn decode_body<'a>(body: &'a [u8], transfer_encoding: &str) -> Cow<'a, [u8]> {
    match transfer_encoding {
        "base64" => Cow::Owned(decode_base64_lenient(body)),
        "quoted-printable" => Cow::Owned(decode_qp(body)),
        _ => Cow::Borrowed(body),
    }
}

fn decode_base64_lenient(body: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let clean: Vec<u8> = body
        .iter()
        .copied()
        .filter(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        .collect();
    // Drop a dangling sextet that cannot form a byte.
    let usable = if clean.len() % 4 == 1 {
        clean.len() - 1
    } else {
        clean.len()
    };
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(&clean[..usable])
        .or_else(|_| {
            base64::engine::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_allow_trailing_bits(true)
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            )
            .decode(&clean[..usable])
        })
        .unwrap_or_default()
}

fn decode_qp(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        if c == b'=' {
            // A soft line break, also with white space after the `=` (RFC 2045 §6.7:
            // trailing white space is deleted when decoding).
            let ws = body[i + 1..]
                .iter()
                .take_while(|b| **b == b' ' || **b == b'\t')
                .count();
            if body.get(i + 1 + ws..i + 3 + ws) == Some(b"\r\n") {
                i += 3 + ws;
                continue;
            }
            // ... and at the end of the body (the line break before the next delimiter
            // belongs to the delimiter).
            if i + 1 + ws == body.len() {
                break;
            }
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (
                body.get(i + 1).and_then(|b| hex(*b)),
                body.get(i + 2).and_then(|b| hex(*b)),
            ) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
            out.push(c);
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Base64 with CRLF every 76 characters, ending in CRLF. Written in one pass, so a
/// large body is held once (not once as a string and again with line breaks).
pub fn encode_base64_lines(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    append_base64_lines(data, &mut out);
    out
}

/// Length of [`encode_base64_lines`] output for `n` input bytes.
pub fn base64_lines_len(n: usize) -> usize {
    let full = n / 57;
    let rest = n % 57;
    full * 78
        + if rest > 0 {
            rest.div_ceil(3) * 4 + 2
        } else {
            0
        }
}

/// [`encode_base64_lines`] appended to `out`, which grows at most once: the caller can
/// put the output where it finally belongs instead of copying it there afterwards.
pub fn append_base64_lines(data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + base64_lines_len(data.len()), 0);
    let dst = &mut out[start..];
    let full = data.len() / 57;
    let (body, tail) = data.split_at(57 * full);
    let (dst_body, dst_tail) = dst.split_at_mut(78 * full);
    encode_full_lines(body, dst_body);
    if !tail.is_empty() {
        let mut line = [0u8; 78];
        let n = encode_line(tail, &mut line);
        dst_tail.copy_from_slice(&line[..n]);
    }
}

/// Full 57-byte lines of `src` as base64 lines into `dst` (exactly 78 bytes per line).
fn encode_full_lines(src: &[u8], dst: &mut [u8]) {
    debug_assert_eq!(src.len() / 57 * 78, dst.len());
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { avx2::full_lines(src, dst) };
        return;
    }
    let mut line = [0u8; 78];
    for (s, d) in src.chunks_exact(57).zip(dst.chunks_exact_mut(78)) {
        encode_line(s, &mut line);
        d.copy_from_slice(&line);
    }
}

/// `lead` followed by [`encode_base64_lines`] of `data`, built in `data`'s own buffer:
/// a large body (an EnvelopedData) is not held once as DER and again as base64.
///
/// Lines are encoded from the last to the first. Line `k` reads input bytes
/// `57k..57k+57` and writes output bytes from `lead.len() + 78k` on; every line written
/// before it (`j > k`) starts at `lead.len() + 78(k+1)` or later, which is past the end of
/// line `k`'s input, so no input is overwritten before it is read (each line is encoded
/// into a local buffer first, since its own output may overlap its input). `lead` goes
/// in last.
pub fn base64_lines_behind(lead: &[u8], mut data: Vec<u8>) -> Vec<u8> {
    let n = data.len();
    let start = lead.len();
    data.resize(start + base64_lines_len(n), 0);
    let full = n / 57;
    if full < n.div_ceil(57) {
        let mut line = [0u8; 78];
        let len = encode_line(&data[57 * full..n], &mut line);
        let dst = start + 78 * full;
        data[dst..dst + len].copy_from_slice(&line[..len]);
    }
    #[cfg(target_arch = "x86_64")]
    let simd = std::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    let simd = false;
    if simd {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe {
            avx2::full_lines_behind(&mut data, full, start)
        };
    } else {
        let mut line = [0u8; 78];
        for k in (0..full).rev() {
            encode_line(&data[57 * k..57 * k + 57], &mut line);
            let dst = start + 78 * k;
            data[dst..dst + 78].copy_from_slice(&line);
        }
    }
    data[..start].copy_from_slice(lead);
    data
}

/// Strict decoding of base64 written as CRLF-terminated lines, as
/// [`encode_base64_lines`] writes it; `None` on anything else (a stray character, a bare
/// CR or LF, padding inside the text, a missing final CRLF).
pub fn decode_base64_lines(text: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut rest = text;
    while !rest.is_empty() {
        let end = memchr::memchr2(b'\r', b'\n', rest)?;
        if rest.get(end..end + 2) != Some(b"\r\n") {
            return None;
        }
        base64::engine::general_purpose::STANDARD
            .decode_vec(&rest[..end], &mut out)
            .ok()?;
        rest = &rest[end + 2..];
    }
    Some(out)
}

/// Base64 of whole 57-byte lines with AVX2 (W. Muła and D. Lemire, "Faster Base64
/// Encoding and Decoding Using AVX2 Instructions", 2018): 24 input bytes become 32
/// characters per step, three (overlapping) steps per line. Every load reads inside the
/// line's 57 input bytes; the scalar [`encode_line`] is the reference (tests compare).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Per 128-bit lane: for each 3-byte group `s0 s1 s2` starting at byte 0 of the
    /// lane, the bytes `s1 s0 s2 s1` (so each 16-bit half holds one 12-bit window).
    const GROUPS: [i8; 16] = [1, 0, 2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10];
    /// The same for groups starting at byte 4 of the lane.
    const GROUPS_AT_4: [i8; 16] = [5, 4, 6, 5, 8, 7, 9, 8, 11, 10, 12, 11, 14, 13, 15, 14];

    #[inline]
    #[target_feature(enable = "avx2")]
    fn mask(lo: [i8; 16], hi: [i8; 16]) -> __m256i {
        _mm256_setr_epi8(
            lo[0], lo[1], lo[2], lo[3], lo[4], lo[5], lo[6], lo[7], lo[8], lo[9], lo[10], lo[11],
            lo[12], lo[13], lo[14], lo[15], hi[0], hi[1], hi[2], hi[3], hi[4], hi[5], hi[6], hi[7],
            hi[8], hi[9], hi[10], hi[11], hi[12], hi[13], hi[14], hi[15],
        )
    }

    /// 24 bytes (12 per lane, placed by `shuffle`) as 32 base64 characters.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn encode24(input: __m256i, shuffle: __m256i) -> __m256i {
        let v = _mm256_shuffle_epi8(input, shuffle);
        // Sextets a and c of each group, then b and d, each moved to the low bits of
        // its own byte.
        let t0 = _mm256_and_si256(v, _mm256_set1_epi32(0x0fc0_fc00));
        let t1 = _mm256_mulhi_epu16(t0, _mm256_set1_epi32(0x0400_0040));
        let t2 = _mm256_and_si256(v, _mm256_set1_epi32(0x003f_03f0));
        let t3 = _mm256_mullo_epi16(t2, _mm256_set1_epi32(0x0100_0010));
        let idx = _mm256_or_si256(t1, t3);
        // Sextet to ASCII: 0..=25 -> 'A'.., 26..=51 -> 'a'.., 52..=61 -> '0'.., 62 '+',
        // 63 '/', as an offset picked by a 16-entry table.
        let mut r = _mm256_subs_epu8(idx, _mm256_set1_epi8(51));
        let less = _mm256_cmpgt_epi8(_mm256_set1_epi8(26), idx);
        r = _mm256_or_si256(r, _mm256_and_si256(less, _mm256_set1_epi8(13)));
        let o = [
            (b'a' as i8).wrapping_sub(26),
            (b'0' as i8).wrapping_sub(52),
            (b'+' as i8).wrapping_sub(62),
            (b'/' as i8).wrapping_sub(63),
            b'A' as i8,
        ];
        let half = [
            o[0], o[1], o[1], o[1], o[1], o[1], o[1], o[1], o[1], o[1], o[1], o[2], o[3], o[4], 0,
            0,
        ];
        let offsets = _mm256_shuffle_epi8(mask(half, half), r);
        _mm256_add_epi8(offsets, idx)
    }

    /// Loads 16 bytes from `src[at..at + 16]` into each lane (`lo` low, `hi` high).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn load2(src: &[u8; 57], lo: usize, hi: usize) -> __m256i {
        let (l, h) = (&src[lo..lo + 16], &src[hi..hi + 16]);
        // SAFETY: `l` and `h` are 16-byte slices (bounds checked above); unaligned loads.
        unsafe {
            _mm256_set_m128i(
                _mm_loadu_si128(h.as_ptr().cast()),
                _mm_loadu_si128(l.as_ptr().cast()),
            )
        }
    }

    /// One 57-byte line as 76 base64 characters and CRLF.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn line(src: &[u8; 57], out: &mut [u8; 78]) {
        let groups = mask(GROUPS, GROUPS);
        // Bytes 0..24, 24..48, and 33..57 (the last overlaps the second by 15 bytes,
        // which encode to the same 20 characters both times).
        let a = encode24(load2(src, 0, 12), groups);
        let b = encode24(load2(src, 24, 36), groups);
        let c = encode24(load2(src, 33, 41), mask(GROUPS, GROUPS_AT_4));
        let (o0, o1, o2) = (&mut out[0..32], 32, 44);
        // SAFETY: each store writes 32 bytes at offset 0, 32 or 44 of the 78-byte `out`.
        unsafe {
            _mm256_storeu_si256(o0.as_mut_ptr().cast(), a);
            _mm256_storeu_si256(out.as_mut_ptr().add(o1).cast(), b);
            _mm256_storeu_si256(out.as_mut_ptr().add(o2).cast(), c);
        }
        out[76] = b'\r';
        out[77] = b'\n';
    }

    /// Whole lines of `src` (a multiple of 57 bytes) into `dst` (78 bytes per line).
    #[target_feature(enable = "avx2")]
    pub fn full_lines(src: &[u8], dst: &mut [u8]) {
        for (s, d) in src.chunks_exact(57).zip(dst.chunks_exact_mut(78)) {
            if let (Ok(s), Ok(d)) = (s.try_into(), d.try_into()) {
                line(s, d);
            }
        }
    }

    /// [`super::base64_lines_behind`]'s loop over the first `lines` whole lines of
    /// `data`, last to first, output from `start` on. A line whose output does not
    /// overlap its own input (all but the first few) is written in place; the others go
    /// through a local buffer.
    #[target_feature(enable = "avx2")]
    pub fn full_lines_behind(data: &mut [u8], lines: usize, start: usize) {
        let mut buf = [0u8; 78];
        for k in (0..lines).rev() {
            let (src, dst) = (57 * k, start + 78 * k);
            if dst >= src + 57 {
                let (input, output) = data.split_at_mut(dst);
                if let (Ok(s), Ok(d)) = (
                    <&[u8; 57]>::try_from(&input[src..src + 57]),
                    <&mut [u8; 78]>::try_from(&mut output[..78]),
                ) {
                    line(s, d);
                }
            } else {
                if let Ok(s) = <&[u8; 57]>::try_from(&data[src..src + 57]) {
                    line(s, &mut buf);
                }
                data[dst..dst + 78].copy_from_slice(&buf);
            }
        }
    }
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Every 12-bit value as its two base64 characters: one lookup per 1.5 input bytes.
static BASE64_PAIRS: [[u8; 2]; 4096] = {
    let mut t = [[0u8; 2]; 4096];
    let mut i = 0;
    while i < 4096 {
        t[i] = [BASE64_ALPHABET[i >> 6], BASE64_ALPHABET[i & 63]];
        i += 1;
    }
    t
};

/// Encodes at most 57 bytes as one base64 line with CRLF into `out`; returns its length.
fn encode_line(src: &[u8], out: &mut [u8; 78]) -> usize {
    debug_assert!(src.len() <= 57);
    let groups = src.len() / 3;
    for g in 0..groups.min(19) {
        let i = 3 * g;
        let v =
            (usize::from(src[i]) << 16) | (usize::from(src[i + 1]) << 8) | usize::from(src[i + 2]);
        let o = 4 * g;
        out[o..o + 2].copy_from_slice(&BASE64_PAIRS[v >> 12]);
        out[o + 2..o + 4].copy_from_slice(&BASE64_PAIRS[v & 0xFFF]);
    }
    let mut o = 4 * groups;
    match src.len() % 3 {
        1 => {
            let v = usize::from(src[3 * groups]) << 4;
            out[o..o + 2].copy_from_slice(&BASE64_PAIRS[v]);
            out[o + 2] = b'=';
            out[o + 3] = b'=';
            o += 4;
        }
        2 => {
            let v = (usize::from(src[3 * groups]) << 10) | (usize::from(src[3 * groups + 1]) << 2);
            out[o..o + 2].copy_from_slice(&BASE64_PAIRS[v >> 6]);
            out[o + 2] = BASE64_ALPHABET[v & 63];
            out[o + 3] = b'=';
            o += 4;
        }
        _ => {}
    }
    out[o] = b'\r';
    out[o + 1] = b'\n';
    o + 2
}

/// A fresh random boundary that does not occur in `content`.
pub fn fresh_boundary(prefix: &str, content: &[u8]) -> String {
    use rand::RngCore;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    loop {
        // Unpredictable enough that no sender can plant it (a thread-local CSPRNG, no
        // system call per message); checked against the content anyway.
        let mut bytes = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut bytes);
        let mut b = String::with_capacity(prefix.len() + 1 + 2 * bytes.len());
        b.push_str(prefix);
        b.push('-');
        for x in bytes {
            b.push(char::from(HEX[usize::from(x >> 4)]));
            b.push(char::from(HEX[usize::from(x & 15)]));
        }
        if memchr::memmem::find(content, b.as_bytes()).is_none() {
            return b;
        }
    }
}

/// What a rewrite does with one entity.
#[derive(Debug)]
pub enum Edit {
    /// Keep it (and look inside it, for multiparts and messages).
    Keep,
    /// Put these bytes (a whole entity: header, empty line, body) in its place.
    Replace(Vec<u8>),
    /// Drop it, with the delimiter line before it.
    Remove,
}

/// Rebuilds `e`, asking `decide` about every entity top-down (it also gets the boundary
/// of the enclosing multipart). Unchanged subtrees are borrowed, so what is not edited
/// stays byte-identical. `None` means the entity itself was removed, or was a multipart
/// whose parts were all removed.
pub fn rewrite<'a>(
    e: &Entity<'a>,
    decide: &mut dyn FnMut(&Entity<'a>, Option<&str>) -> Edit,
) -> Option<Cow<'a, [u8]>> {
    rewrite_in(e, None, decide)
}

fn rewrite_in<'a>(
    e: &Entity<'a>,
    parent_boundary: Option<&str>,
    decide: &mut dyn FnMut(&Entity<'a>, Option<&str>) -> Edit,
) -> Option<Cow<'a, [u8]>> {
    match decide(e, parent_boundary) {
        Edit::Replace(v) => return Some(Cow::Owned(v)),
        Edit::Remove => return None,
        Edit::Keep => {}
    }
    match &e.kind {
        Kind::Leaf => Some(Cow::Borrowed(e.raw)),
        Kind::Message(inner) => match rewrite_in(inner, None, decide)? {
            Cow::Borrowed(_) => Some(Cow::Borrowed(e.raw)),
            Cow::Owned(v) => {
                let mut out = e.header.to_vec();
                out.extend_from_slice(&v);
                Some(Cow::Owned(out))
            }
        },
        Kind::Multipart {
            preamble,
            parts,
            tail,
        } => {
            let boundary = e.info.boundary.as_deref();
            let mut changed = false;
            let mut kept: Vec<(&[u8], Cow<'a, [u8]>)> = Vec::with_capacity(parts.len());
            for (delim, part) in parts {
                match rewrite_in(part, boundary, decide) {
                    Some(Cow::Borrowed(b)) => kept.push((delim, Cow::Borrowed(b))),
                    Some(owned) => {
                        changed = true;
                        kept.push((delim, owned));
                    }
                    None => changed = true,
                }
            }
            if !changed {
                return Some(Cow::Borrowed(e.raw));
            }
            if kept.is_empty() {
                return None;
            }
            let mut out = Vec::with_capacity(e.raw.len());
            out.extend_from_slice(e.header);
            out.extend_from_slice(preamble);
            for (i, (delim, part)) in kept.iter().enumerate() {
                if i == 0 && preamble.is_empty() && delim.starts_with(b"\r\n") {
                    // The first delimiter may not begin the body with an empty line
                    // that was not there before.
                    out.extend_from_slice(&delim[2..]);
                } else {
                    out.extend_from_slice(delim);
                }
                out.extend_from_slice(part);
            }
            out.extend_from_slice(tail);
            Some(Cow::Owned(out))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `levels` attached messages, one inside the other.
    fn nested(levels: usize) -> Vec<u8> {
        format!(
            "Subject: top\r\n{}Content-Type: text/plain\r\n\r\nhello\r\n",
            "Content-Type: message/rfc822\r\n\r\n".repeat(levels)
        )
        .into_bytes()
    }

    /// A digest whose one member has no Content-Type (so is a message) and holds `inner`.
    fn in_digest(inner: &[u8]) -> Vec<u8> {
        let mut m = b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n".to_vec();
        m.extend_from_slice(inner);
        m.extend_from_slice(b"\r\n--d--\r\n");
        m
    }

    #[test]
    fn nesting_limit_counts_messages_multiparts_digests_and_encoded_parts() {
        // Top level is depth 0: MAX_DEPTH attached messages put the innermost text at
        // depth MAX_DEPTH, which is still seen; one more is not.
        assert_eq!(hazard(&nested(MAX_DEPTH)), None);
        assert_eq!(hazard(&nested(MAX_DEPTH + 1)), Some(Hazard::TooDeep));
        assert_eq!(hazard(&nested(100_000)), Some(Hazard::TooDeep));
        // LF-only input (explain reads files) counts the same.
        let lf = String::from_utf8(nested(MAX_DEPTH + 1))
            .unwrap()
            .replace("\r\n", "\n");
        assert_eq!(hazard(lf.as_bytes()), Some(Hazard::TooDeep));

        // A digest member without Content-Type is a message/rfc822 (RFC 2046 5.1.5).
        let digest = in_digest(&nested(MAX_DEPTH - 2));
        assert!(
            matches!(parse(&digest).kind, Kind::Multipart { ref parts, .. }
            if matches!(parts[0].1.kind, Kind::Message(_)))
        );
        assert_eq!(hazard(&digest), None);
        assert_eq!(
            hazard(&in_digest(&nested(MAX_DEPTH))),
            Some(Hazard::TooDeep)
        );

        // Inside base64 or quoted-printable: decoded and counted.
        let b64 = |inner: &[u8]| {
            let mut m =
                b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                    .to_vec();
            m.extend(encode_base64_lines(inner));
            m
        };
        assert_eq!(hazard(&b64(&nested(MAX_DEPTH - 1))), None);
        assert_eq!(hazard(&b64(&nested(MAX_DEPTH))), Some(Hazard::TooDeep));
        assert_eq!(
            hazard(&b64(&b64(&nested(MAX_DEPTH - 1)))),
            Some(Hazard::TooDeep)
        );
        let qp = [
            b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
                .as_slice(),
            &nested(MAX_DEPTH),
        ]
        .concat();
        assert_eq!(hazard(&qp), Some(Hazard::TooDeep));
    }

    /// The line-by-line scan `delimiter_marks` replaced, kept as its specification.
    fn delimiter_marks_by_line(body: &[u8], delim: &[u8]) -> Vec<(usize, usize, bool)> {
        let mut marks = Vec::new();
        let mut line_start = 0usize;
        while line_start <= body.len() {
            let line_end = find(&body[line_start..], b"\r\n").map(|p| line_start + p);
            let line = &body[line_start..line_end.unwrap_or(body.len())];
            if let Some(rest) = line.strip_prefix(delim) {
                let closing = rest.starts_with(b"--");
                if closing || rest.iter().all(|c| *c == b' ' || *c == b'\t') {
                    let start = line_start.saturating_sub(2);
                    marks.push((start, line_end.map_or(body.len(), |e| e + 2), closing));
                    if closing {
                        break;
                    }
                }
            }
            match line_end {
                Some(e) => line_start = e + 2,
                None => break,
            }
        }
        marks
    }

    #[test]
    fn delimiter_search_matches_the_line_by_line_scan() {
        let pieces: [&[u8]; 9] = [
            b"--b", b"\r\n", b"--b--", b" ", b"x", b"\r", b"\n", b"-", b"b",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut body = Vec::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            for k in 0..(seed % 24) {
                body.extend_from_slice(pieces[((seed >> (k * 2 + 8)) % 9) as usize]);
            }
            for delim in [b"--b".as_slice(), b"---", b"--b-"] {
                assert_eq!(
                    delimiter_marks(&body, delim),
                    delimiter_marks_by_line(&body, delim),
                    "{:?} with {:?}",
                    String::from_utf8_lossy(&body),
                    String::from_utf8_lossy(delim)
                );
            }
        }
    }

    #[test]
    fn continuation_limit_counts_per_content_field() {
        let field = |n: usize| {
            let params: Vec<String> = (0..n).map(|i| format!("name*{i}=\"p{i}\"")).collect();
            format!(
                "Subject: x\r\nContent-Type: text/plain;\r\n {}\r\n\r\nbody\r\n",
                params.join(";\r\n ")
            )
        };
        assert_eq!(hazard(field(MAX_CONTINUATIONS).as_bytes()), None);
        assert_eq!(
            hazard(field(MAX_CONTINUATIONS + 1).as_bytes()),
            Some(Hazard::TooManyContinuations)
        );
        // The same marks outside a Content-* field, or spread over fields, are fine.
        let body = format!("Subject: x\r\n\r\n{}\r\n", "a*1=b ".repeat(500));
        assert_eq!(hazard(body.as_bytes()), None);
        let spread = format!(
            "Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n{}--b--\r\n",
            "--b\r\nContent-Disposition: attachment; f*0=a; f*1=b\r\n\r\nx\r\n".repeat(200)
        );
        assert_eq!(hazard(spread.as_bytes()), None);
        // Inside a base64 attached message too.
        let mut enc =
            b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
        enc.extend(encode_base64_lines(field(1000).as_bytes()));
        assert_eq!(hazard(&enc), Some(Hazard::TooManyContinuations));
    }

    /// Every message of `tests/fixtures/corpus` (rfc, malformed, thirdparty): its
    /// directory, path and bytes.
    pub(crate) fn corpus() -> Vec<(&'static str, std::path::PathBuf, Vec<u8>)> {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/corpus");
        let mut out = Vec::new();
        for dir in ["rfc", "malformed", "thirdparty"] {
            for e in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "eml") {
                    let raw = std::fs::read(&p).unwrap();
                    out.push((dir, p, raw));
                }
            }
        }
        out
    }

    #[test]
    fn mime_limits_pass_every_corpus_message() {
        // Real mail passes; of Dovecot's deliberately malformed messages, those whose
        // parts have two different Content-Type fields or header blocks that readers
        // split differently are refused (mail programs disagree about them), and
        // nothing else.
        let mut seen = 0;
        let mut refused = Vec::new();
        for (dir, p, raw) in corpus() {
            seen += 1;
            match hazard(&raw) {
                None => {}
                Some(Hazard::DuplicateContentField) if dir == "malformed" => {
                    refused.push(p.file_name().unwrap().to_string_lossy().into_owned())
                }
                // Header blocks readers split differently: Dovecot's mangled
                // headers, an attached message that is no message, and one real
                // forwarded message whose Received fields lost their folding
                // white space (Python's email ends its header there, so the
                // rest would be body to a reader and header to sealgate).
                Some(
                    Hazard::AmbiguousHeader | Hazard::AmbiguousBoundary | Hazard::MissingBoundary,
                ) if dir == "malformed" || p.ends_with("thirdparty/015.eml") => {
                    refused.push(p.file_name().unwrap().to_string_lossy().into_owned())
                }
                Some(h) => panic!("{}: {h}", p.display()),
            }
        }
        assert!(seen >= 50, "corpus missing: {seen}");
        assert!(refused.len() <= 14, "{refused:?}");
    }

    fn concat_multipart(e: &Entity<'_>) -> Vec<u8> {
        match &e.kind {
            Kind::Multipart {
                preamble,
                parts,
                tail,
            } => {
                let mut v = e.header.to_vec();
                v.extend_from_slice(preamble);
                for (d, p) in parts {
                    v.extend_from_slice(d);
                    v.extend_from_slice(&concat_multipart(p));
                }
                v.extend_from_slice(tail);
                v
            }
            _ => e.raw.to_vec(),
        }
    }

    #[test]
    fn multipart_pieces_concatenate_to_the_original() {
        let msg = b"From: a@b\r\nContent-Type: multipart/mixed; boundary=\"xx\"\r\n\r\npre\r\n--xx\r\nContent-Type: text/plain\r\n\r\nhello\r\n--xx \r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--xx--\r\nepilogue\r\n";
        let e = parse(msg);
        let Kind::Multipart { parts, .. } = &e.kind else {
            panic!("not multipart")
        };
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].1.body, b"hello");
        assert_eq!(parts[1].1.info.file_name.as_deref(), Some("a.pdf"));
        assert_eq!(
            decode_body(parts[1].1.body, &parts[1].1.info.transfer_encoding).as_ref(),
            &[0, 1, 2]
        );
        assert_eq!(concat_multipart(&e), msg.to_vec());
    }

    #[test]
    fn crlf_canonicalisation() {
        assert!(matches!(canonical_crlf(b"a\r\nb\r\n"), Cow::Borrowed(_)));
        assert_eq!(canonical_crlf(b"a\nb\rc\r\n").as_ref(), b"a\r\nb\r\nc\r\n");
        for odd in [
            &b"\n"[..],
            b"\r",
            b"\n\r",
            b"a\r\r\n",
            b"a\r\n\n",
            b"\r\na\r",
        ] {
            assert!(matches!(canonical_crlf(odd), Cow::Owned(_)), "{odd:?}");
        }
    }

    #[test]
    fn base64_lines_have_the_announced_length() {
        use base64::Engine;
        for n in [0usize, 1, 2, 3, 56, 57, 58, 114, 1000] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
            let out = encode_base64_lines(&data);
            assert_eq!(out.len(), base64_lines_len(n), "n = {n}");
            let mut want = String::new();
            for c in data.chunks(57) {
                want.push_str(&base64::engine::general_purpose::STANDARD.encode(c));
                want.push_str("\r\n");
            }
            assert_eq!(out, want.as_bytes());
            let lead = b"Header: x\r\n\r\n";
            let behind = base64_lines_behind(lead, data.clone());
            assert_eq!(behind, [&lead[..], want.as_bytes()].concat(), "n = {n}");
            assert_eq!(base64_lines_behind(b"", data), want.as_bytes());
        }
    }

    #[test]
    fn base64_lines_match_the_base64_crate_on_random_data() {
        use base64::Engine;
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        for n in (0..700).chain([57 * 100, 57 * 100 + 1, 102_437]) {
            let data: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            let mut want = Vec::new();
            for c in data.chunks(57) {
                want.extend_from_slice(
                    base64::engine::general_purpose::STANDARD
                        .encode(c)
                        .as_bytes(),
                );
                want.extend_from_slice(b"\r\n");
            }
            assert_eq!(encode_base64_lines(&data), want, "n = {n}");
            let mut appended = b"x".to_vec();
            append_base64_lines(&data, &mut appended);
            assert_eq!(appended[1..], want[..], "n = {n}");
            for lead in [&b""[..], b"H: 1\r\n\r\n"] {
                let behind = base64_lines_behind(lead, data.clone());
                assert_eq!(behind, [lead, &want[..]].concat(), "n = {n}");
            }
            let mut scalar = Vec::new();
            let mut line = [0u8; 78];
            for c in data.chunks(57) {
                let k = encode_line(c, &mut line);
                scalar.extend_from_slice(&line[..k]);
            }
            assert_eq!(scalar, want, "n = {n}");
        }
    }

    #[test]
    fn base64_lines_decode_strictly() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 31 + 7) as u8).collect();
        let text = encode_base64_lines(&data);
        assert_eq!(decode_base64_lines(&text), Some(data.clone()));
        assert_eq!(decode_base64_lines(b""), Some(Vec::new()));
        let mut bad = text.clone();
        bad[10] = b'*';
        assert_eq!(decode_base64_lines(&bad), None);
        assert_eq!(decode_base64_lines(&text[..text.len() - 1]), None);
        let mut lf = text.clone();
        lf.remove(76);
        assert_eq!(decode_base64_lines(&lf), None);
        let mut pad = text.clone();
        pad[74] = b'=';
        pad[75] = b'=';
        assert_eq!(decode_base64_lines(&pad), None);
    }

    #[test]
    fn find_matches_a_naive_search() {
        let hay = b"--a--b-----sealgate-x\r\n--sealgate-y";
        for needle in [&b"--sealgate-y"[..], b"-x\r", b"--", b"zz", b"y", b""] {
            let naive = if needle.is_empty() {
                None
            } else {
                hay.windows(needle.len()).position(|w| w == needle)
            };
            assert_eq!(find(hay, needle), naive);
        }
        let long = [vec![b'a'; 200], b"-needle".to_vec()].concat();
        assert_eq!(find(&long, b"-needle"), Some(200));
    }

    #[test]
    fn fields_keep_folding() {
        let h = b"Subject: a\r\n b\r\nContent-Type: text/plain\r\n\r\n";
        let f = fields(h);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].raw, b"Subject: a\r\n b\r\n");
        assert_eq!(f[0].value(), "a b");
        assert!(f[1].is_content());
    }

    #[test]
    fn lines_that_lost_their_folding_stay_with_their_field() {
        let h = b"Received: from a\r\nby b with ESMTP; Mon, 30 Nov 2026 12:00:00 +0000\r\nDKIM-Signature: v=1;\r\nb=abc\r\nX-A: 1\r\n\r\n";
        let f = fields(h);
        let names: Vec<&str> = f.iter().map(|f| f.name).collect();
        assert_eq!(names, ["Received", "DKIM-Signature", "X-A"]);
        assert_eq!(f[1].raw, b"DKIM-Signature: v=1;\r\nb=abc\r\n");
        assert_eq!(f.iter().map(|f| f.raw.len()).sum::<usize>(), h.len() - 2);
        assert!(is_field_line(b"Subject : x") && is_field_line(b"h=from:to"));
        assert!(!is_field_line(b"for <x@y>; Mon, 30 Nov 2026 12:00") && !is_field_line(b": x"));
    }
}
