//! Attachment protection: strip attachments, or move them into one AES-256 zip.
//!
//! Its one job is to rewrite the attachment parts of a canonical (CRLF) message and
//! leave every other part byte-identical.
//! - strip: each attachment becomes a short `text/plain` notice naming its file name,
//!   type, size and SHA-256;
//! - zip: all attachments go into one WinZip AES-256 archive (AE-2 below 20 bytes, AE-1
//!   above, as WinZip recommends) that takes the place
//!   of the first attachment, preceded by a notice; the random password (24 characters
//!   from the OS CSPRNG) is returned separately, for a message of its own.
//!
//! Invariants: the password never appears in the rewritten message or in the notes;
//! notes name files, sizes and hashes only; no input makes this module panic.

use std::borrow::Cow;
use std::io::Write;

use sha2::{Digest, Sha256};

use crate::message::attachment::Roles;
use crate::message::mime::{self, Edit, Entity, Kind};

/// Why attachments could not be protected.
#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    #[error("cannot build the zip archive: {0}")]
    Zip(String),
}

/// One attachment found in a message (what the audit log and `explain` show).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentSummary {
    /// The file name as the sender gave it (decoded), or a made-up one.
    pub name: String,
    /// `type/subtype`.
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: usize,
    /// SHA-256 of the decoded content, lower-case hex.
    pub sha256: String,
}

impl std::fmt::Display for AttachmentSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "\"{}\" ({}, {} bytes, SHA-256 {})",
            self.name, self.content_type, self.size, self.sha256
        )
    }
}

/// The result of stripping.
#[derive(Debug)]
pub struct Stripped {
    /// The rewritten message.
    pub message: Vec<u8>,
    /// What was removed.
    pub removed: Vec<AttachmentSummary>,
}

/// The result of zipping.
#[derive(Debug)]
pub struct Zipped {
    /// The rewritten message (unchanged when there were no attachments).
    pub message: Vec<u8>,
    /// What went into the archive.
    pub zipped: Vec<AttachmentSummary>,
    /// The archive password; `None` when there was nothing to zip. Never log it.
    pub password: Option<String>,
}

/// File name of the archive in the message.
pub const ZIP_NAME: &str = "attachments.zip";

/// Lists the attachments of a message, in order, without changing anything.
pub fn list(message: &[u8]) -> Vec<AttachmentSummary> {
    let tree = mime::parse(message);
    let roles = Roles::of(&tree);
    let mut out = Vec::new();
    let _ = mime::rewrite(&tree, &mut |e: &Entity<'_>, _| {
        if roles.is_attachment(e) {
            out.push(summarize(e, out.len() + 1));
            Edit::Replace(Vec::new())
        } else {
            Edit::Keep
        }
    });
    out
}

fn summarize(e: &Entity<'_>, n: usize) -> AttachmentSummary {
    let content = content_of(e);
    AttachmentSummary {
        name: e
            .info
            .file_name
            .as_deref()
            .map(printable_name)
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| default_name(e, n)),
        content_type: e.info.content_type.clone(),
        size: content.len(),
        sha256: crate::hex::lower(&Sha256::digest(&content)),
    }
}

/// The decoded content of an attachment (a forwarded message as its raw bytes).
fn content_of<'a>(e: &Entity<'a>) -> Cow<'a, [u8]> {
    mime::decode_body(e.body, &e.info.transfer_encoding)
}

/// A sender's file name as it may appear in a notice, the audit log and the zip:
/// without control characters (a decoded name can hold CR LF, which would end the
/// notice's text and start a new MIME part) or bidirectional overrides (which can show
/// `evil\u{202e}fdp.exe` as `evilexe.pdf`), and at most 255 characters.
fn printable_name(name: &str) -> String {
    let chars: Vec<char> = name
        .chars()
        .filter(|&c| {
            !c.is_control()
                && !matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect();
    if chars.len() <= 255 {
        return chars.into_iter().collect();
    }
    // Cut the middle, not the extension: "<long>.pdf" stays a PDF in the zip.
    let ext = chars
        .iter()
        .rposition(|&c| c == '.')
        .filter(|&p| p > 0 && chars.len() - p <= 17)
        .map_or(0, |p| chars.len() - p);
    let mut out: String = chars[..255 - ext].iter().collect();
    out.extend(&chars[chars.len() - ext..]);
    out
}

fn default_name(e: &Entity<'_>, n: usize) -> String {
    let ext = match e.info.content_type.as_str() {
        "message/rfc822" | "message/global" => "eml",
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        "text/html" => "html",
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "application/zip" => "zip",
        _ => "bin",
    };
    format!("attachment-{n}.{ext}")
}

/// Strips every attachment, each replaced by a notice part.
pub fn strip(message: &[u8]) -> Stripped {
    strip_tree(&mime::parse(message))
}

/// [`strip`] on a message's MIME tree, parsed once by the caller.
pub fn strip_tree(tree: &Entity<'_>) -> Stripped {
    let message = tree.raw;
    let roles = Roles::of(tree);
    let mut removed = Vec::new();
    let out = mime::rewrite(tree, &mut |e: &Entity<'_>, parent: Option<&str>| {
        if !roles.is_attachment(e) {
            return Edit::Keep;
        }
        let s = summarize(e, removed.len() + 1);
        let notice = text_part(&format!(
            "The attachment {s} was removed by the mail gateway's policy.\r\n"
        ));
        removed.push(s);
        Edit::Replace(keep_other_fields(e, &notice, parent.is_none()))
    });
    Stripped {
        message: out.map_or_else(|| message.to_vec(), Cow::into_owned),
        removed,
    }
}

/// Moves every attachment into one AES-256 zip. `password_to` is named in the notice.
pub fn zip(message: &[u8], password_to: &str) -> Result<Zipped, AttachmentError> {
    zip_tree(&mime::parse(message), password_to)
}

/// [`zip()`] on a message's MIME tree, parsed once by the caller.
pub fn zip_tree(tree: &Entity<'_>, password_to: &str) -> Result<Zipped, AttachmentError> {
    let message = tree.raw;
    let roles = Roles::of(tree);
    // First pass: collect the attachments.
    let mut found: Vec<(AttachmentSummary, Vec<u8>)> = Vec::new();
    let _ = mime::rewrite(tree, &mut |e: &Entity<'_>, _| {
        if roles.is_attachment(e) {
            let s = summarize(e, found.len() + 1);
            found.push((s, content_of(e).into_owned()));
            Edit::Replace(Vec::new())
        } else {
            Edit::Keep
        }
    });
    if found.is_empty() {
        return Ok(Zipped {
            message: message.to_vec(),
            zipped: Vec::new(),
            password: None,
        });
    }
    let password = new_password();
    let archive = build_zip(&found, &password)?;
    let names: Vec<String> = found
        .iter()
        .map(|(s, _)| format!("\"{}\"", s.name))
        .collect();
    let notice = text_part(&format!(
        "The attachments of this message ({}) are in the encrypted archive {ZIP_NAME} \
         (AES-256).\r\nThe password arrives in a separate message to {password_to}.\r\n\
         Open the archive with 7-Zip, WinZip, PeaZip or Keka; Info-ZIP unzip and the \
         zip folders built into some systems cannot open AES-encrypted archives.\r\n",
        names.join(", ")
    ));
    let zip_part = {
        let mut v = format!(
            "Content-Type: application/zip; name=\"{ZIP_NAME}\"\r\n\
             Content-Disposition: attachment; filename=\"{ZIP_NAME}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n"
        )
        .into_bytes();
        v.extend_from_slice(&mime::encode_base64_lines(&archive));
        v
    };
    // Where notice and archive go: in a top-level multipart/mixed they must be parts of
    // it, or a client showing one alternative (text or HTML) of a nested
    // multipart/alternative or /related never shows them. So: in place of the first
    // attachment that is a part of the top level, or else after its last part. In any
    // other structure, in place of the first attachment.
    let root_boundary = match (&tree.kind, tree.info.content_type.as_str()) {
        (Kind::Multipart { .. }, "multipart/mixed") => tree.info.boundary.clone(),
        _ => None,
    };
    let mut placed = false;
    let out = mime::rewrite(tree, &mut |e: &Entity<'_>, parent: Option<&str>| {
        if !roles.is_attachment(e) {
            return Edit::Keep;
        }
        let nested = root_boundary.is_some() && parent != root_boundary.as_deref();
        if placed || nested {
            return Edit::Remove;
        }
        placed = true;
        match parent {
            Some(b) => {
                let mut v = notice.clone();
                v.extend_from_slice(format!("\r\n--{b}\r\n").as_bytes());
                v.extend_from_slice(&zip_part);
                Edit::Replace(v)
            }
            None => {
                // The attachment is the whole message (or a forwarded message's body):
                // it becomes a multipart/mixed of notice and archive.
                let inner = [notice.as_slice(), zip_part.as_slice()].concat();
                let b = mime::fresh_boundary("----sealgate-zip", &inner);
                let mut v =
                    format!("Content-Type: multipart/mixed; boundary=\"{b}\"\r\n\r\n--{b}\r\n")
                        .into_bytes();
                v.extend_from_slice(&notice);
                v.extend_from_slice(format!("\r\n--{b}\r\n").as_bytes());
                v.extend_from_slice(&zip_part);
                v.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
                Edit::Replace(keep_other_fields(e, &v, true))
            }
        }
    });
    let mut message = out.map_or_else(|| message.to_vec(), Cow::into_owned);
    if let (false, Some(b)) = (placed, &root_boundary) {
        // Every attachment was nested: notice and archive become the top level's last parts.
        let close = format!("\r\n--{b}--");
        let at = memchr::memmem::rfind(&message, close.as_bytes()).unwrap_or(message.len());
        let mut parts = format!("\r\n--{b}\r\n").into_bytes();
        parts.extend_from_slice(&notice);
        parts.extend_from_slice(format!("\r\n--{b}\r\n").as_bytes());
        parts.extend_from_slice(&zip_part);
        if at == message.len() {
            parts.extend_from_slice(format!("{close}\r\n").as_bytes());
        }
        message.splice(at..at, parts);
    }
    Ok(Zipped {
        message,
        zipped: found.into_iter().map(|(s, _)| s).collect(),
        password: Some(password),
    })
}

/// A new entity made of `e`'s non-`Content-*` header fields and `replacement` (whose own
/// header supplies the content fields). For a message (`keep`), this keeps From, To,
/// Subject, ...; a part of a multipart gets `replacement` alone.
fn keep_other_fields(e: &Entity<'_>, replacement: &[u8], keep: bool) -> Vec<u8> {
    if !keep {
        return replacement.to_vec();
    }
    let mut out = Vec::with_capacity(e.header.len() + replacement.len());
    for f in mime::fields(e.header) {
        if !f.is_content() && !f.name.is_empty() {
            out.extend_from_slice(f.raw);
        }
    }
    out.extend_from_slice(replacement);
    out
}

/// A `text/plain` UTF-8 entity (7-bit safe: base64 when the text is not ASCII or has a
/// line longer than SMTP allows: a notice listing many long file names is one line).
fn text_part(text: &str) -> Vec<u8> {
    let mut v =
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Disposition: inline\r\n".to_vec();
    if text.is_ascii() && !mime::has_long_line(text.as_bytes()) {
        v.extend_from_slice(b"Content-Transfer-Encoding: 7bit\r\n\r\n");
        v.extend_from_slice(text.as_bytes());
    } else {
        v.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n\r\n");
        v.extend_from_slice(&mime::encode_base64_lines(text.as_bytes()));
    }
    v
}

/// 24 characters from an alphabet without look-alikes (0/O, 1/l/I): about 140 bits.
pub fn new_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rngs::OsRng;
    (0..24)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// Longest zip entry name in UTF-8 bytes: file systems allow 255 bytes (ext4, APFS) or
/// 255 UTF-16 units (NTFS; never more units than UTF-8 bytes); room is left for " (k)".
const MAX_ENTRY_BYTES: usize = 240;

/// A file name safe inside a zip: no directories, no control characters, not empty,
/// at most [`MAX_ENTRY_BYTES`] bytes (the extension kept when it is cut).
fn zip_entry_name(name: &str, n: usize) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = base
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .trim_start_matches('.')
        .to_string();
    if clean.is_empty() {
        return format!("attachment-{n}.bin");
    }
    if clean.len() <= MAX_ENTRY_BYTES {
        return clean;
    }
    let (stem, ext) = match clean.rsplit_once('.') {
        Some((a, b)) if !a.is_empty() && b.len() <= 16 => (a, format!(".{b}")),
        _ => (clean.as_str(), String::new()),
    };
    let mut cut = MAX_ENTRY_BYTES - ext.len();
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{ext}", &stem[..cut])
}

/// The zip entry names for attachments named `names`: safe ([`zip_entry_name`]) and
/// unique ignoring case (a case-insensitive file system would merge them), later ones
/// numbered "a (2).txt", "a (3).txt"... Linear in the number of names, however many share
/// one.
fn entry_names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    use std::collections::{HashMap, HashSet};
    let mut used: HashSet<String> = HashSet::new();
    let mut next_k: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, raw) in names.enumerate() {
        let mut name = zip_entry_name(raw, i + 1);
        if used.contains(&name.to_lowercase()) {
            let (stem, ext) = match name.rsplit_once('.') {
                Some((a, b)) if !a.is_empty() => (a.to_string(), format!(".{b}")),
                _ => (name.clone(), String::new()),
            };
            let k = next_k.entry(name.to_lowercase()).or_insert(2);
            while used.contains(&format!("{stem} ({k}){ext}").to_lowercase()) {
                *k += 1;
            }
            name = format!("{stem} ({k}){ext}");
            *k += 1;
        }
        used.insert(name.to_lowercase());
        out.push(name);
    }
    out
}

fn build_zip(
    files: &[(AttachmentSummary, Vec<u8>)],
    password: &str,
) -> Result<Vec<u8>, AttachmentError> {
    use zip::write::SimpleFileOptions;
    let zerr = |e: zip::result::ZipError| AttachmentError::Zip(e.to_string());
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(files.iter().any(|(_, c)| c.len() as u64 >= u32::MAX as u64))
        .with_aes_encryption(zip::AesMode::Aes256, password);
    for (name, (_, content)) in entry_names(files.iter().map(|(s, _)| s.name.as_str()))
        .into_iter()
        .zip(files)
    {
        w.start_file(name, opts).map_err(zerr)?;
        w.write_all(content)
            .map_err(|e| AttachmentError::Zip(e.to_string()))?;
    }
    let cursor = w.finish().map_err(zerr)?;
    Ok(cursor.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &str = "From: a@example.com\r\nTo: b@example.org\r\nSubject: report\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nHallo Grüße\r\n--b1\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\nContent-Disposition: attachment; filename=\"r.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"../x.exe\"\r\n\r\nMZ\r\n--b1--\r\n";

    #[test]
    fn strip_replaces_each_attachment_and_keeps_the_body() {
        let s = strip(MSG.as_bytes());
        assert_eq!(s.removed.len(), 2);
        assert_eq!(s.removed[0].name, "r.pdf");
        assert_eq!(s.removed[0].size, 9);
        let out = String::from_utf8(s.message).unwrap();
        assert!(out.contains("--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nHallo Grüße\r\n--b1\r\n"));
        assert!(!out.contains("JVBERi0xLjQK"));
        assert!(out.contains(&s.removed[0].sha256));
        assert!(out.contains("\"../x.exe\" (application/octet-stream, 2 bytes"));
    }

    #[test]
    fn zip_puts_attachments_into_one_archive() {
        let z = zip(MSG.as_bytes(), "a@example.com").unwrap();
        let pw = z.password.clone().unwrap();
        assert!(pw.len() >= 20);
        let out = String::from_utf8(z.message.clone()).unwrap();
        assert!(!out.contains(&pw));
        assert_eq!(out.matches("attachments.zip\"").count(), 2);
        assert!(!out.contains("x.exe\"\r\n\r\nMZ"));
        let tree = mime::parse(&z.message);
        let Kind::Multipart { parts, .. } = &tree.kind else {
            panic!()
        };
        assert_eq!(parts.len(), 3);
        let archive = mime::decode_body(parts[2].1.body, "base64").into_owned();
        let mut za = zip::ZipArchive::new(std::io::Cursor::new(archive)).unwrap();
        let mut names: Vec<String> = za.file_names().map(|n| n.unwrap().to_string()).collect();
        names.sort();
        assert_eq!(names, ["r.pdf", "x.exe"]);
        let mut f = za.by_name_decrypt("x.exe", pw.as_bytes()).unwrap();
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut v).unwrap();
        assert_eq!(v, b"MZ");
    }

    fn att_msg(names: &[String]) -> Vec<u8> {
        let mut m = String::from("From: a@b\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n");
        for (i, n) in names.iter().enumerate() {
            m.push_str(&format!("--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename*=utf-8''{n}\r\n\r\nx{i}\r\n"));
        }
        m.push_str("--b--\r\n");
        m.into_bytes()
    }

    fn zipped_names(z: &Zipped) -> Vec<String> {
        let tree = mime::parse(&z.message);
        let Kind::Multipart { parts, .. } = &tree.kind else {
            panic!()
        };
        let zip = parts
            .iter()
            .find(|(_, p)| p.info.file_name.as_deref() == Some(ZIP_NAME))
            .unwrap();
        let archive = mime::decode_body(zip.1.body, "base64").into_owned();
        let za = zip::ZipArchive::new(std::io::Cursor::new(archive)).unwrap();
        za.file_names().map(|n| n.unwrap().to_string()).collect()
    }

    #[test]
    fn many_attachments_with_one_name_are_numbered_in_linear_time() {
        // Was cubic: 2,000 attachments called a.txt (a 200 KB message) took 200 s.
        let got = entry_names(std::iter::repeat_n("a.txt", 5_000));
        assert_eq!(got[0], "a.txt");
        assert_eq!(got[4_999], "a (5000).txt");
        let set: std::collections::HashSet<_> = got.iter().map(|n| n.to_lowercase()).collect();
        assert_eq!(set.len(), 5_000);
        assert_eq!(
            entry_names(["a.txt", "a (2).txt", "A.TXT", "a.txt"].into_iter()),
            ["a.txt", "a (2).txt", "A (3).TXT", "a (4).txt"]
        );
    }

    #[test]
    fn long_and_non_ascii_names_fit_file_systems_and_keep_their_extension() {
        let names = vec![
            format!("{}.pdf", "%F0%9F%98%80".repeat(300)),
            format!("{}.txt", "%E4%B8%AD".repeat(200)),
            format!("{}.docx", "L".repeat(1200)),
            "%C3%84.txt".to_string(),
            "%C3%A4.txt".to_string(),
        ];
        let z = zip(&att_msg(&names), "a@b").unwrap();
        let got = zipped_names(&z);
        for n in &got {
            assert!(n.len() <= 255, "{} bytes", n.len());
        }
        assert!(
            got[0].ends_with(".pdf") && got[1].ends_with(".txt") && got[2].ends_with(".docx"),
            "{got:?}"
        );
        assert_eq!(got[3..], ["Ä.txt", "ä (2).txt"]);
    }

    /// The content types of the top-level parts of `m`.
    fn top_level_types(m: &[u8]) -> Vec<String> {
        let tree = mime::parse(m);
        let Kind::Multipart { parts, .. } = &tree.kind else {
            return vec![tree.info.content_type.clone()];
        };
        parts
            .iter()
            .map(|(_, p)| p.info.content_type.clone())
            .collect()
    }

    const HTML_WITH_IMAGE: &str = "--a\r\nContent-Type: text/plain\r\n\r\nsee the logo\r\n--a\r\nContent-Type: multipart/related; boundary=\"r\"\r\n\r\n--r\r\nContent-Type: text/html\r\n\r\n<img src=\"cid:logo\">\r\n--r\r\nContent-Type: image/png\r\nContent-ID: <logo>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--r--\r\n--a--\r\n";

    #[test]
    fn notice_and_archive_are_parts_of_the_top_level_mixed() {
        // An inline image comes first, nested in alternative > related; the PDF is a
        // top-level part: notice and zip take the PDF's place, not the image's.
        let with_pdf = format!("From: a@b\r\nContent-Type: multipart/mixed; boundary=\"m\"\r\n\r\n--m\r\nContent-Type: multipart/alternative; boundary=\"a\"\r\n\r\n{HTML_WITH_IMAGE}--m\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--m--\r\n");
        let z = zip(with_pdf.as_bytes(), "pw@b").unwrap();
        assert_eq!(z.zipped.len(), 2);
        assert_eq!(
            top_level_types(&z.message),
            ["multipart/alternative", "text/plain", "application/zip"]
        );
        // Only nested attachments: notice and zip are appended to the top level.
        let nested_only = format!("From: a@b\r\nContent-Type: multipart/mixed; boundary=\"m\"\r\n\r\n--m\r\nContent-Type: multipart/alternative; boundary=\"a\"\r\n\r\n{HTML_WITH_IMAGE}--m--\r\n");
        let z = zip(nested_only.as_bytes(), "pw@b").unwrap();
        assert_eq!(z.zipped.len(), 1);
        assert_eq!(
            top_level_types(&z.message),
            ["multipart/alternative", "text/plain", "application/zip"]
        );
        assert!(String::from_utf8_lossy(&z.message).ends_with("--m--\r\n"));
    }

    #[test]
    fn notice_lines_stay_within_the_smtp_limit() {
        let names: Vec<String> = (0..20)
            .map(|i| format!("{}-{i}.txt", "L".repeat(200)))
            .collect();
        let z = zip(&att_msg(&names), "a@b").unwrap();
        for line in z.message.split(|c| *c == b'\n') {
            assert!(line.len() <= 1000, "line of {} octets", line.len());
        }
    }

    #[test]
    fn message_without_attachments_is_untouched() {
        let m = b"From: a@b\r\nSubject: x\r\n\r\nhello\r\n";
        assert_eq!(strip(m).message, m);
        let z = zip(m, "a@b").unwrap();
        assert_eq!(z.message, m);
        assert!(z.password.is_none());
    }

    #[test]
    fn single_part_attachment_message_keeps_its_headers() {
        let m = b"From: a@b\r\nSubject: x\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n";
        let s = String::from_utf8(strip(m).message).unwrap();
        assert!(
            s.starts_with("From: a@b\r\nSubject: x\r\nContent-Type: text/plain"),
            "{s}"
        );
        let z = zip(m, "a@b").unwrap();
        let s = String::from_utf8(z.message).unwrap();
        assert!(
            s.starts_with("From: a@b\r\nSubject: x\r\nContent-Type: multipart/mixed"),
            "{s}"
        );
    }
}
