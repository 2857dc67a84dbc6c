//! Receipt-time conversion of a message into what every RFC-conforming upstream takes:
//! lines of at most 998 octets (RFC 5322 §2.1.1) and, unless the client asked for
//! SMTPUTF8, 7-bit data, so that the upstream never needs 8BITMIME. It runs once, before
//! policy, transforms and DKIM, so a message answered `250` cannot bounce later for a
//! line length or 8-bit data that sealgate could have converted; what cannot be
//! converted is refused at DATA with the field or part named.
//!
//! - A leaf part with a line over 998 octets, or 8-bit data, is re-encoded:
//!   quoted-printable for `text/*`, base64 otherwise (base64 and quoted-printable parts
//!   are decoded and encoded again). The decoded content is unchanged.
//! - A header line over 998 octets is folded at white space (unfolding gives the same
//!   field back); one without white space to fold at is refused.
//! - 8-bit header data (only without SMTPUTF8): unstructured fields (Subject, Comments,
//!   Content-Description, Keywords, Organization, Thread-Topic, User-Agent, `X-*`) are
//!   RFC 2047-encoded as UTF-8; display names in address fields likewise; `name` and
//!   `filename` parameters of Content-Type and Content-Disposition become RFC 2231
//!   `name*=utf-8''...`. Anything else 8-bit (an address, a Message-ID, bytes that are
//!   not UTF-8) is refused, naming the field.
//! - `multipart/signed` and `multipart/encrypted` bodies are left byte for byte: the
//!   application's own signature covers them.
//!
//! The multipart structure is kept: only the parts that need it change, everything else
//! is copied as it was.

use std::borrow::Cow;

use crate::message::mime::{self, Entity, Kind};

/// Longest line RFC 5322 allows, without its CRLF.
pub const MAX_LINE: usize = 998;

/// Why a message cannot be made acceptable to a strict upstream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SevenBitError {
    /// A header line over 998 octets without white space to fold at.
    #[error(
        "header field {field} has a line over {MAX_LINE} octets and no white space to fold \
         it at (RFC 5322 2.1.1)"
    )]
    UnfoldableHeader { field: String },
    /// 8-bit header data that has no 7-bit form.
    #[error(
        "header field {field} holds 8-bit data ({why}); send the message with SMTPUTF8 or \
         encode the field as RFC 2047 says"
    )]
    EightBitHeader { field: String, why: &'static str },
    /// A part whose type allows no transfer encoding but needs one.
    #[error(
        "a {content_type} part without a usable boundary has lines over {MAX_LINE} octets \
         or 8-bit data, and such a part may not be re-encoded"
    )]
    UnconvertiblePart { content_type: String },
}

impl SevenBitError {
    /// The enhanced status code of the refusal: 5.6.0 (other media error, RFC 3463).
    pub fn enhanced(&self) -> (u16, u16) {
        (6, 0)
    }
}

/// The result of [`prepare`].
#[derive(Debug, Default)]
pub struct Prepared {
    /// The converted message; `None` when nothing had to change.
    pub message: Option<Vec<u8>>,
    /// Audit-safe notes on what was converted (field names, content types; no content).
    pub notes: Vec<String>,
}

/// Converts a CRLF message as the module says. `smtputf8`: the client asked for SMTPUTF8,
/// so 8-bit data stays (the upstream must then offer SMTPUTF8 anyway).
pub fn prepare(message: &[u8], smtputf8: bool) -> Result<Prepared, SevenBitError> {
    if !mime::has_long_line(message) && (smtputf8 || message.is_ascii()) {
        return Ok(Prepared::default());
    }
    let tree = mime::parse(message);
    let mut ctx = Ctx {
        smtputf8,
        notes: Vec::new(),
    };
    let out = ctx.entity(&tree, true)?;
    Ok(Prepared {
        message: out,
        notes: ctx.notes,
    })
}

struct Ctx {
    smtputf8: bool,
    notes: Vec<String>,
}

impl Ctx {
    /// The entity converted, or `None` when it stays as it is.
    /// `message_header`: its header is a message's (top level or an attached message).
    fn entity(&mut self, e: &Entity<'_>, top: bool) -> Result<Option<Vec<u8>>, SevenBitError> {
        let fixed_header = self.header(e.header)?;
        let header: &[u8] = fixed_header.as_deref().unwrap_or(e.header);
        let body: Option<Vec<u8>> = match &e.kind {
            Kind::Leaf => {
                if let Some((cte, body)) = self.leaf_body(e)? {
                    let mut out = with_transfer_encoding(header, cte, top, e);
                    out.extend_from_slice(&body);
                    return Ok(Some(out));
                }
                None
            }
            Kind::Message(inner) => self.entity(inner, false)?,
            Kind::Multipart {
                preamble,
                parts,
                tail,
            } => {
                if matches!(
                    e.info.content_type.as_str(),
                    "multipart/signed" | "multipart/encrypted"
                ) {
                    if mime::has_long_line(e.body) || (!self.smtputf8 && !e.body.is_ascii()) {
                        self.notes.push(format!(
                            "{} part left as signed although it has long lines or 8-bit data",
                            e.info.content_type
                        ));
                    }
                    None
                } else {
                    let mut changed = false;
                    let mut out = Vec::with_capacity(e.body.len() + 64);
                    let pre = self.filler(preamble);
                    changed |= pre.is_some();
                    out.extend_from_slice(pre.as_deref().unwrap_or(preamble));
                    for (delim, part) in parts {
                        out.extend_from_slice(delim);
                        match self.entity(part, false)? {
                            Some(v) => {
                                changed = true;
                                out.extend_from_slice(&v);
                            }
                            None => out.extend_from_slice(part.raw),
                        }
                    }
                    let t = self.filler(tail);
                    changed |= t.is_some();
                    out.extend_from_slice(t.as_deref().unwrap_or(tail));
                    changed.then_some(out)
                }
            }
        };
        if fixed_header.is_none() && body.is_none() {
            return Ok(None);
        }
        let mut out = header.to_vec();
        out.extend_from_slice(body.as_deref().unwrap_or(e.body));
        Ok(Some(out))
    }

    /// A preamble or epilogue (text MIME readers ignore): long lines broken, 8-bit
    /// octets replaced by `?` without SMTPUTF8.
    fn filler(&mut self, text: &[u8]) -> Option<Vec<u8>> {
        let long = mime::has_long_line(text);
        let eight = !self.smtputf8 && !text.is_ascii();
        if !long && !eight {
            return None;
        }
        self.notes
            .push("multipart preamble or epilogue: long lines broken, 8-bit octets as '?'".into());
        let mut out = Vec::with_capacity(text.len() + 16);
        let mut run = 0usize;
        for &b in text {
            if b == b'\n' {
                run = 0;
            } else if b != b'\r' {
                if run == MAX_LINE {
                    out.extend_from_slice(b"\r\n");
                    run = 0;
                }
                run += 1;
            }
            out.push(if eight && b >= 0x80 { b'?' } else { b });
        }
        Some(out)
    }

    /// The leaf's body re-encoded, with the new transfer encoding; `None` when it is fine.
    fn leaf_body(
        &mut self,
        e: &Entity<'_>,
    ) -> Result<Option<(&'static str, Vec<u8>)>, SevenBitError> {
        let long = mime::has_long_line(e.body);
        let eight = !self.smtputf8 && !e.body.is_ascii();
        if !long && !eight {
            return Ok(None);
        }
        let info = &e.info;
        let cte = info.transfer_encoding.as_str();
        // Real mail also says "8 bit", "7-bit" or "8bits": the same identity encoding.
        let squashed: String = cte.chars().filter(char::is_ascii_alphanumeric).collect();
        let identity = matches!(squashed.as_str(), "7bit" | "7bits" | "8bit" | "8bits");
        if !identity
            && !matches!(
                cte,
                "7bit" | "8bit" | "binary" | "base64" | "quoted-printable"
            )
        {
            // An encoding we do not know (x-uuencode...): its content cannot be decoded
            // to be encoded again, so it is passed on as it is.
            self.notes.push(format!(
                "{} part in transfer encoding {cte} left as it is",
                info.content_type
            ));
            return Ok(None);
        }
        if info.is_multipart() || (info.is_message() && !info.is_encoded()) {
            return Err(SevenBitError::UnconvertiblePart {
                content_type: info.content_type.clone(),
            });
        }
        let decoded = mime::decode_body(e.body, cte);
        let (target, body) = if cte == "base64" {
            ("base64", mime::encode_base64_lines(&decoded))
        } else if cte == "quoted-printable" || info.content_type.starts_with("text/") {
            ("quoted-printable", encode_qp(&decoded))
        } else {
            ("base64", mime::encode_base64_lines(&decoded))
        };
        let why = match (long, eight) {
            (true, true) => "lines over 998 octets and 8-bit data",
            (true, false) => "lines over 998 octets",
            _ => "8-bit data",
        };
        self.notes.push(format!(
            "{} part re-encoded as {target} ({why})",
            info.content_type
        ));
        Ok(Some((target, body)))
    }

    /// The header block with long lines folded and 8-bit fields encoded; `None` when
    /// nothing changes.
    fn header(&mut self, header: &[u8]) -> Result<Option<Vec<u8>>, SevenBitError> {
        let eight = !self.smtputf8 && !header.is_ascii();
        if !eight && !mime::has_long_line(header) {
            return Ok(None);
        }
        let fields = mime::fields(header);
        let consumed: usize = fields.iter().map(|f| f.raw.len()).sum();
        let mut out = Vec::with_capacity(header.len() + 64);
        for f in &fields {
            let display = if f.name.is_empty() {
                "(a line that is not a header field)".to_string()
            } else {
                f.name.to_string()
            };
            let mut raw: Cow<'_, [u8]> = Cow::Borrowed(f.raw);
            if eight && !f.raw.is_ascii() {
                raw = Cow::Owned(encode_field(f, &display)?);
                self.notes
                    .push(format!("header field {display} encoded to 7 bits"));
            }
            if mime::has_long_line(&raw) {
                raw = Cow::Owned(fold(&raw).ok_or_else(|| SevenBitError::UnfoldableHeader {
                    field: display.clone(),
                })?);
                self.notes.push(format!("header field {display} folded"));
            }
            out.extend_from_slice(&raw);
        }
        out.extend_from_slice(header.get(consumed..).unwrap_or_default());
        Ok(Some(out))
    }
}

/// `header` without its Content-Transfer-Encoding fields, with `cte` instead; at the top
/// level also MIME-Version (needed for the encoding to count) and, for UTF-8 text
/// without any Content-Type, `text/plain; charset=utf-8`.
fn with_transfer_encoding(header: &[u8], cte: &str, top: bool, e: &Entity<'_>) -> Vec<u8> {
    let fields = mime::fields(header);
    let consumed: usize = fields.iter().map(|f| f.raw.len()).sum();
    let mut out = Vec::with_capacity(header.len() + 96);
    for f in fields.iter().filter(|f| !f.is("content-transfer-encoding")) {
        out.extend_from_slice(f.raw);
    }
    if top && !fields.iter().any(|f| f.is("mime-version")) {
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    }
    if !fields.iter().any(|f| f.is("content-type"))
        && e.info.content_type == "text/plain"
        && !e.body.is_ascii()
        && std::str::from_utf8(e.body).is_ok()
    {
        out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
    }
    out.extend_from_slice(format!("Content-Transfer-Encoding: {cte}\r\n").as_bytes());
    let rest = header.get(consumed..).unwrap_or_default();
    if rest.is_empty() {
        // The entity had no empty line: its body is empty, so none is needed; keep it so.
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(rest);
    }
    out
}

/// Quoted-printable (RFC 2045 §6.7) of CRLF text: each CRLF stays a line break, lines
/// are at most 76 characters with soft breaks, `=`, controls, 8-bit octets and white
/// space before a line break are encoded.
pub fn encode_qp(data: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 16);
    let mut rest = data;
    loop {
        let (line, crlf) = match memchr::memmem::find(rest, b"\r\n") {
            Some(p) => (&rest[..p], true),
            None => (rest, false),
        };
        let mut len = 0usize;
        for (i, &b) in line.iter().enumerate() {
            let last = i + 1 == line.len();
            let encode = b == b'='
                || b >= 0x7f
                || (b < 0x20 && b != b'\t')
                || (last && (b == b' ' || b == b'\t'));
            let width = if encode { 3 } else { 1 };
            // A soft break leaves room for its '='; the line's last piece may use it.
            if len + width > 75 && !(last && len + width <= 76) {
                out.extend_from_slice(b"=\r\n");
                len = 0;
            }
            if encode {
                out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            } else {
                out.push(b);
            }
            len += width;
        }
        if !crlf {
            break;
        }
        out.extend_from_slice(b"\r\n");
        rest = &rest[line.len() + 2..];
        if rest.is_empty() {
            break;
        }
    }
    out
}

/// A field with every line over 998 octets folded before white space; `None` when a
/// line has no white space to fold at.
fn fold(raw: &[u8]) -> Option<Vec<u8>> {
    let wsp = |b: &u8| *b == b' ' || *b == b'\t';
    let mut out = Vec::with_capacity(raw.len() + 16);
    let mut rest = raw;
    while !rest.is_empty() {
        let (mut line, sep): (&[u8], &[u8]) = match memchr::memmem::find(rest, b"\r\n") {
            Some(p) => (&rest[..p], b"\r\n"),
            None => (rest, b""),
        };
        rest = &rest[line.len() + sep.len()..];
        while line.len() > MAX_LINE {
            let lead = line.iter().take_while(|b| wsp(b)).count();
            // The last white space within the limit that has text before it on this
            // line and text after it (a folded line may not be only white space).
            let at = (lead + 1..=MAX_LINE)
                .rev()
                .find(|&p| wsp(&line[p]) && line[p..].iter().any(|b| !wsp(b)))?;
            out.extend_from_slice(&line[..at]);
            out.extend_from_slice(b"\r\n");
            line = &line[at..];
        }
        out.extend_from_slice(line);
        out.extend_from_slice(sep);
    }
    Some(out)
}

/// Fields whose value is free text (RFC 5322 `unstructured`, or a phrase list).
const UNSTRUCTURED: [&str; 8] = [
    "subject",
    "comments",
    "content-description",
    "keywords",
    "organization",
    "thread-topic",
    "user-agent",
    "summary",
];

/// Fields whose value is an address list.
const ADDRESS_FIELDS: [&str; 13] = [
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "sender",
    "resent-from",
    "resent-to",
    "resent-cc",
    "resent-sender",
    "disposition-notification-to",
    "return-receipt-to",
    "mail-followup-to",
];

/// One 8-bit field in 7 bits, or why it cannot be.
fn encode_field(f: &mime::Field<'_>, display: &str) -> Result<Vec<u8>, SevenBitError> {
    let err = |why| SevenBitError::EightBitHeader {
        field: display.to_string(),
        why,
    };
    if f.name.is_empty() {
        return Err(err("not a header field"));
    }
    let colon = memchr::memchr(b':', f.raw).ok_or_else(|| err("not a header field"))?;
    let value_raw = f.raw.get(colon + 1..).unwrap_or_default();
    let value_raw = value_raw.strip_suffix(b"\r\n").unwrap_or(value_raw);
    // Unfolded: the line breaks go, the white space after them stays.
    let unfolded: Vec<u8> = {
        let mut v = Vec::with_capacity(value_raw.len());
        let mut rest = value_raw;
        while let Some(p) = memchr::memmem::find(rest, b"\r\n") {
            v.extend_from_slice(&rest[..p]);
            rest = &rest[p + 2..];
        }
        v.extend_from_slice(rest);
        v
    };
    let value =
        std::str::from_utf8(&unfolded).map_err(|_| err("not UTF-8, so of unknown charset"))?;
    let name = f.name.to_ascii_lowercase();
    let new_value = if UNSTRUCTURED.contains(&name.as_str()) || name.starts_with("x-") {
        encode_span(value)
    } else if ADDRESS_FIELDS.contains(&name.as_str()) {
        encode_display_names(value).map_err(err)?
    } else if name == "content-type" || name == "content-disposition" {
        encode_parameters(value).map_err(err)?
    } else {
        return Err(err("a structured field with no 7-bit form for it"));
    };
    let mut out = Vec::with_capacity(f.name.len() + new_value.len() + 4);
    out.extend_from_slice(&f.raw[..colon + 1]);
    if !new_value.starts_with([' ', '\t']) {
        out.push(b' ');
    }
    out.extend_from_slice(new_value.as_bytes());
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

/// `text` as RFC 2047 B encoded-words in UTF-8, each of whole characters and at most 75
/// characters long, folded onto lines of their own.
fn encoded_words(text: &str) -> String {
    use base64::Engine;
    let mut out = String::with_capacity(text.len() * 2);
    let mut chunk_start = 0;
    let mut chunk_len = 0;
    let flush = |out: &mut String, piece: &str| {
        if piece.is_empty() {
            return;
        }
        if !out.is_empty() {
            out.push_str("\r\n ");
        }
        out.push_str("=?UTF-8?B?");
        out.push_str(&base64::engine::general_purpose::STANDARD.encode(piece));
        out.push_str("?=");
    };
    for (i, c) in text.char_indices() {
        // 45 octets are 60 base64 characters: 72 with the markers.
        if chunk_len + c.len_utf8() > 45 {
            flush(&mut out, &text[chunk_start..i]);
            chunk_start = i;
            chunk_len = 0;
        }
        chunk_len += c.len_utf8();
    }
    flush(&mut out, &text[chunk_start..]);
    out
}

/// Unstructured text with the words from the first to the last non-ASCII one encoded;
/// the ASCII text around them stays readable.
fn encode_span(value: &str) -> String {
    let wsp = |c: char| c == ' ' || c == '\t';
    let Some(first) = value.find(|c: char| !c.is_ascii()) else {
        return value.to_string();
    };
    let last = value
        .char_indices()
        .rev()
        .find(|(_, c)| !c.is_ascii())
        .map_or(first, |(i, c)| i + c.len_utf8());
    let start = value[..first].rfind(wsp).map_or(0, |i| i + 1);
    let end = value[last..].find(wsp).map_or(value.len(), |i| last + i);
    let mut out = String::with_capacity(value.len() * 2);
    out.push_str(&value[..start]);
    if start > 0 && !value[..start].ends_with(wsp) {
        out.push(' ');
    }
    out.push_str(&encoded_words(&value[start..end]));
    out.push_str(&value[end..]);
    out
}

/// Where the bytes of a structured field value stand (RFC 5322 quoted strings, nested
/// comments and quoted-pairs), fed one byte at a time.
#[derive(Default)]
struct Scan {
    quoted: bool,
    comment: usize,
    escaped: bool,
}

impl Scan {
    /// Takes the next byte; true when it stands outside quoted strings and comments
    /// (and is neither escaped nor a quote or parenthesis that opens or closes one).
    fn top(&mut self, c: u8) -> bool {
        if self.escaped {
            self.escaped = false;
            return false;
        }
        match c {
            b'\\' if self.quoted || self.comment > 0 => {
                self.escaped = true;
                false
            }
            b'"' if self.comment == 0 => {
                self.quoted = !self.quoted;
                false
            }
            b'(' if !self.quoted => {
                self.comment += 1;
                false
            }
            b')' if !self.quoted && self.comment > 0 => {
                self.comment -= 1;
                false
            }
            _ => !self.quoted && self.comment == 0,
        }
    }
}

/// Byte ranges of the items of `value` separated by `sep` outside quoted strings,
/// comments and angle brackets.
fn split_top_level(value: &str, sep: u8) -> Vec<(usize, usize)> {
    let mut items = Vec::new();
    let (mut scan, mut angle, mut start) = (Scan::default(), false, 0);
    for (i, &c) in value.as_bytes().iter().enumerate() {
        if !scan.top(c) {
            continue;
        }
        match c {
            b'<' => angle = true,
            b'>' => angle = false,
            _ if c == sep && !angle => {
                items.push((start, i));
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push((start, value.len()));
    items
}

/// Where the `<` of `name <address>` is: the first one outside quoted strings and
/// comments.
fn angle_start(item: &str) -> Option<usize> {
    let mut scan = Scan::default();
    item.as_bytes()
        .iter()
        .position(|&c| scan.top(c) && c == b'<')
}

/// An address list whose non-ASCII display names are encoded; an address, group name or
/// comment that is not ASCII cannot be.
fn encode_display_names(value: &str) -> Result<String, &'static str> {
    let mut out = String::with_capacity(value.len() * 2);
    let mut at = 0;
    for (s, e) in split_top_level(value, b',') {
        let item = &value[s..e];
        if item.is_ascii() {
            continue;
        }
        let lead = item.len() - item.trim_start().len();
        let item_t = item.trim();
        let Some(lt) = angle_start(item_t) else {
            // `addr@example.com (Jörg Müller)`: the old style, a name in a comment.
            out.push_str(&value[at..s + lead]);
            out.push_str(&encode_comments(item_t)?);
            at = s + lead + item_t.len();
            continue;
        };
        let (name, addr) = item_t.split_at(lt);
        let addr = encode_comments(addr)?;
        let name = name.trim();
        if name.contains([':', ';']) && !name.starts_with('"') {
            return Err("a non-ASCII group name");
        }
        let text = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
            Some(q) => {
                let mut t = String::with_capacity(q.len());
                let mut esc = false;
                for c in q.chars() {
                    if !esc && c == '\\' {
                        esc = true;
                    } else {
                        t.push(c);
                        esc = false;
                    }
                }
                t
            }
            None => name.to_string(),
        };
        out.push_str(&value[at..s + lead]);
        out.push_str(&encoded_words(&text));
        out.push(' ');
        out.push_str(&addr);
        at = s + lead + item_t.len();
    }
    out.push_str(&value[at..]);
    Ok(out)
}

/// `text` with the contents of its non-ASCII comments (top level) encoded; non-ASCII
/// outside a comment (in an address) cannot be.
fn encode_comments(text: &str) -> Result<String, &'static str> {
    if text.is_ascii() {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len() * 2);
    let (mut depth, mut quoted, mut escaped, mut start) = (0usize, false, false, 0usize);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && (quoted || depth > 0) {
            escaped = true;
        } else if c == '"' && depth == 0 {
            quoted = !quoted;
        } else if c == '(' && !quoted {
            if depth == 0 {
                out.push_str(&text[start..=i]);
                start = i + 1;
            }
            depth += 1;
        } else if c == ')' && !quoted && depth > 0 {
            depth -= 1;
            if depth == 0 {
                let inner = &text[start..i];
                if inner.is_ascii() {
                    out.push_str(inner);
                } else {
                    out.push_str(&encoded_words(inner));
                }
                start = i;
            }
        } else if depth == 0 && !c.is_ascii() {
            return Err("a non-ASCII address needs SMTPUTF8");
        }
    }
    if depth > 0 {
        return Err("an unclosed comment");
    }
    out.push_str(&text[start..]);
    Ok(out)
}

/// Content-Type/Content-Disposition with non-ASCII parameter values as RFC 2231
/// `key*=utf-8''...`.
fn encode_parameters(value: &str) -> Result<String, &'static str> {
    let items = split_top_level(value, b';');
    let mut out = String::with_capacity(value.len() * 3);
    for (n, &(s, e)) in items.iter().enumerate() {
        if n > 0 {
            out.push(';');
        }
        let item = &value[s..e];
        if item.is_ascii() {
            out.push_str(item);
            continue;
        }
        if n == 0 {
            return Err("a non-ASCII media type");
        }
        let (key, val) = item.split_once('=').ok_or("a non-ASCII parameter")?;
        let key = key.trim();
        if key.contains('*') || !key.is_ascii() {
            return Err("a non-ASCII extended parameter");
        }
        let val = val.trim();
        let val = val
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .map_or_else(
                || val.to_string(),
                |v| v.replace("\\\"", "\"").replace("\\\\", "\\"),
            );
        out.push_str("\r\n ");
        out.push_str(key);
        out.push_str("*=utf-8''");
        for b in val.bytes() {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded_leaves(m: &[u8]) -> Vec<(String, Vec<u8>)> {
        fn walk(e: &Entity<'_>, out: &mut Vec<(String, Vec<u8>)>) {
            match &e.kind {
                Kind::Leaf => out.push((
                    e.info.content_type.clone(),
                    mime::decode_body(e.body, &e.info.transfer_encoding).into_owned(),
                )),
                Kind::Message(inner) => walk(inner, out),
                Kind::Multipart { parts, .. } => parts.iter().for_each(|(_, p)| walk(p, out)),
            }
        }
        let mut out = Vec::new();
        walk(&mime::parse(m), &mut out);
        out
    }

    fn seven_bit_short(m: &[u8]) -> bool {
        m.is_ascii() && !mime::has_long_line(m)
    }

    #[test]
    fn clean_messages_are_not_touched() {
        let m = b"From: a@b\r\nSubject: x\r\n\r\nhello\r\n";
        let p = prepare(m, false).unwrap();
        assert!(p.message.is_none() && p.notes.is_empty());
        let utf8 = "From: a@b\r\nSubject: Grüße\r\n\r\nGrüße\r\n".as_bytes();
        assert!(prepare(utf8, true).unwrap().message.is_none());
    }

    #[test]
    fn long_lines_and_8bit_bodies_are_reencoded_with_content_kept() {
        let html = format!("<html><body>{}</body></html>", "<p>Grüße</p>".repeat(600));
        let bin: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 256) as u8).collect();
        let one_line_b64 = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(b"x".repeat(2000))
        };
        let mut m = format!(
            "From: a@b\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\npre\r\n\
             --b\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{html}\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\nshort = fine   \r\n\
             --b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{one_line_b64}\r\n\
             --b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        )
        .into_bytes();
        m.extend_from_slice(&bin);
        m.extend_from_slice(b"\r\n--b--\r\n");
        let before = decoded_leaves(&m);
        let p = prepare(&m, false).unwrap();
        let out = p.message.expect("converted");
        assert!(seven_bit_short(&out), "{}", String::from_utf8_lossy(&out));
        assert_eq!(decoded_leaves(&out), before);
        // The untouched part stays byte for byte.
        assert!(
            memchr::memmem::find(&out, b"Content-Type: text/plain\r\n\r\nshort = fine   \r\n")
                .is_some()
        );
        assert_eq!(p.notes.len(), 3, "{:?}", p.notes);
    }

    #[test]
    fn a_single_part_message_gets_mime_headers() {
        let m = format!(
            "From: a@b\r\nSubject: s\r\n\r\n{}\r\nzweite Zeile: ä\r\n",
            "a".repeat(5000)
        );
        let out = prepare(m.as_bytes(), false).unwrap().message.unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("From: a@b\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"), "{text}");
        assert!(seven_bit_short(&out));
        let body = &out[mime::header_end(&out)..];
        let sent = &m.as_bytes()[mime::header_end(m.as_bytes())..];
        assert_eq!(mime::decode_body(body, "quoted-printable").as_ref(), sent);
    }

    #[test]
    fn qp_round_trips() {
        let mut seed = 7u64;
        for n in 0..400 {
            let mut data = Vec::new();
            for _ in 0..(n * 13 % 3000) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let b = (seed >> 33) as u8;
                // CRLF line ends only, as at receipt.
                match b % 17 {
                    0 => data.extend_from_slice(b"\r\n"),
                    1 => data.push(b' '),
                    2 => data.push(b'='),
                    _ if b == b'\r' || b == b'\n' => data.push(b'x'),
                    _ => data.push(b),
                }
            }
            let enc = encode_qp(&data);
            assert!(seven_bit_short(&enc));
            assert!(enc.split(|&b| b == b'\n').all(|l| l.len() <= 77), "{n}");
            assert_eq!(
                mime::decode_body(&enc, "quoted-printable").as_ref(),
                &data[..],
                "{n}"
            );
        }
    }

    #[test]
    fn long_header_lines_are_folded_or_refused() {
        let words = "word ".repeat(400);
        let m = format!("From: a@b\r\nX-Long: {words}\r\nSubject: s\r\n\r\nbody\r\n");
        let out = prepare(m.as_bytes(), false).unwrap().message.unwrap();
        assert!(!mime::has_long_line(&out));
        // Unfolding gives the same field back.
        let unfolded = String::from_utf8(out).unwrap().replace("\r\n ", " ");
        assert_eq!(unfolded, m);
        let m = format!("From: a@b\r\nX-Token: {}\r\n\r\nbody\r\n", "t".repeat(1200));
        assert_eq!(
            prepare(m.as_bytes(), false).unwrap_err(),
            SevenBitError::UnfoldableHeader {
                field: "X-Token".into()
            }
        );
    }

    #[test]
    fn eight_bit_header_fields_are_encoded_or_refused() {
        let m = "From: Jörg Müller <j@example.com>, \"Ä, B\" <ab@example.com>, plain@example.com\r\nSubject: Re: Grüße aus Köln\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Disposition: inline; filename=\"Grüße.txt\"\r\n\r\nhi\r\n";
        let out = prepare(m.as_bytes(), false).unwrap().message.unwrap();
        assert!(seven_bit_short(&out), "{}", String::from_utf8_lossy(&out));
        let parsed = mail_parser::MessageParser::new().parse(&out).unwrap();
        assert_eq!(parsed.subject(), Some("Re: Grüße aus Köln"));
        let from: Vec<(Option<&str>, Option<&str>)> = parsed
            .from()
            .unwrap()
            .iter()
            .map(|a| (a.name(), a.address()))
            .collect();
        assert_eq!(
            from,
            [
                (Some("Jörg Müller"), Some("j@example.com")),
                (Some("Ä, B"), Some("ab@example.com")),
                (None, Some("plain@example.com"))
            ]
        );
        use mail_parser::MimeHeaders;
        assert_eq!(parsed.root_part().attachment_name(), Some("Grüße.txt"));
        // With SMTPUTF8 nothing changes.
        assert!(prepare(m.as_bytes(), true).unwrap().message.is_none());
        for (bad, field) in [
            ("From: jörg@example.com\r\n\r\nx\r\n", "From"),
            ("From: a@b\r\nMessage-ID: <ä@b>\r\n\r\nx\r\n", "Message-ID"),
        ] {
            match prepare(bad.as_bytes(), false) {
                Err(SevenBitError::EightBitHeader { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let latin1 = b"From: a@b\r\nSubject: Gr\xfc\xdfe\r\n\r\nx\r\n";
        assert!(matches!(
            prepare(latin1, false),
            Err(SevenBitError::EightBitHeader { .. })
        ));
    }

    #[test]
    fn names_in_comments_are_encoded() {
        // The old style with the name in a comment.
        let m =
            "From: app@example.com (Jörg Müller)\r\nTo: Anna <a@example.com> (Büro)\r\n\r\nx\r\n";
        let out = prepare(m.as_bytes(), false).unwrap().message.unwrap();
        assert!(seven_bit_short(&out), "{}", String::from_utf8_lossy(&out));
        let parsed = mail_parser::MessageParser::new().parse(&out).unwrap();
        let from = parsed.from().unwrap().first().unwrap();
        assert_eq!(from.address(), Some("app@example.com"));
        assert_eq!(
            parsed.to().unwrap().first().unwrap().address(),
            Some("a@example.com")
        );
        let raw = String::from_utf8(out).unwrap();
        assert!(raw.contains("From: app@example.com (=?UTF-8?B?"), "{raw}");
    }

    #[test]
    fn signed_multiparts_are_left_alone() {
        let m = format!("From: a@b\r\nContent-Type: multipart/signed; boundary=s; protocol=\"application/pkcs7-signature\"\r\n\r\n--s\r\nContent-Type: text/plain\r\n\r\n{}\r\n--s--\r\n", "x".repeat(1200));
        let p = prepare(m.as_bytes(), false).unwrap();
        assert!(p.message.is_none());
        assert_eq!(p.notes.len(), 1);
    }
}
