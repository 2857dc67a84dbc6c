//! Shaping the MIME entity that a signature or encryption will cover, for S/MIME and
//! OpenPGP alike: RFC 9788 header protection and 7-bit transfer encoding before a
//! detached signature.
//!
//! Its one job: rewrite the payload entity before the cryptographic step. It never signs,
//! encrypts or touches the outer header; what it returns decodes to the same content
//! (transfer encodings change, decoded bytes do not), and a part that needs no change
//! stays byte for byte.

use crate::message::mime::{self, Entity, Kind};

/// RFC 9788: copies the message's own header fields into the cryptographic payload's
/// header (`content`), marks its Content-Type with `hp="cipher"` (encrypted) or
/// `hp="clear"` (signed only), and records the outer values in `HP-Outer` fields.
pub(crate) fn protect_headers(
    content: &[u8],
    fields: &[mime::Field<'_>],
    encrypting: bool,
) -> Vec<u8> {
    const PROTECTED: [&str; 10] = [
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "reply-to",
        "in-reply-to",
        "references",
        "followup-to",
    ];
    let mut out = Vec::with_capacity(content.len() + 512);
    let hp = if encrypting { "cipher" } else { "clear" };
    for f in mime::fields(content) {
        if f.is("content-type") {
            let raw = f.raw.strip_suffix(b"\r\n").unwrap_or(f.raw);
            out.extend_from_slice(raw);
            out.extend_from_slice(format!(";\r\n hp=\"{hp}\"\r\n").as_bytes());
        } else {
            out.extend_from_slice(f.raw);
        }
    }
    for f in fields {
        if PROTECTED.iter().any(|p| f.is(p)) {
            out.extend_from_slice(f.raw);
        }
    }
    if encrypting {
        for f in fields {
            if PROTECTED.iter().any(|p| f.is(p)) {
                let value = if f.is("subject") {
                    "...".to_string()
                } else {
                    f.value()
                };
                out.extend_from_slice(format!("HP-Outer: {}: {value}\r\n", f.name).as_bytes());
            }
        }
    }
    out
}

/// Re-encodes leaf parts that carry 8-bit data, or lines longer than RFC 5322's 998
/// octets, in 7bit/8bit/binary transfer encoding as base64, so that a detached signature
/// survives relays that downgrade 8BITMIME or fold long lines (RFC 8551 §3.1.3 asks for
/// exactly this before signing). Parts already 7-bit with short lines stay byte-identical.
pub fn to_7bit(entity: Vec<u8>) -> Vec<u8> {
    if entity.iter().all(|c| *c < 0x80) && !mime::has_long_line(&entity) {
        return entity;
    }
    let tree = mime::parse(&entity);
    let rewritten = mime::rewrite(&tree, &mut |e: &Entity<'_>, _parent: Option<&str>| {
        let needs = matches!(e.kind, Kind::Leaf)
            && matches!(
                e.info.transfer_encoding.as_str(),
                "7bit" | "8bit" | "binary"
            )
            && (e.body.iter().any(|c| *c >= 0x80) || mime::has_long_line(e.body));
        if !needs {
            return mime::Edit::Keep;
        }
        let mut out = Vec::with_capacity(e.raw.len() * 4 / 3 + 64);
        for f in mime::fields(e.header) {
            if !f.is("content-transfer-encoding") {
                out.extend_from_slice(f.raw);
            }
        }
        out.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n\r\n");
        out.extend_from_slice(&mime::encode_base64_lines(e.body));
        mime::Edit::Replace(out)
    });
    let changed = match rewritten {
        Some(std::borrow::Cow::Owned(v)) => Some(v),
        _ => None,
    };
    drop(tree);
    changed.unwrap_or(entity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_7bit_reencodes_only_8bit_leaves() {
        let e = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b--\r\n";
        let out = to_7bit(e.as_bytes().to_vec());
        assert!(out.iter().all(|c| *c < 0x80));
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("Content-Transfer-Encoding: base64\r\n\r\nR3LDvMOfZQ==\r\n"));
        assert!(s.contains("Content-Type: text/plain\r\n\r\nplain\r\n--b--"));
    }

    #[test]
    fn to_7bit_reencodes_leaves_with_lines_over_998_octets() {
        let long = "x".repeat(999);
        let ok = "y".repeat(998);
        let e = format!("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/csv\r\n\r\n{long}\r\n--b\r\nContent-Type: text/plain\r\n\r\n{ok}\r\n--b--\r\n");
        let out = String::from_utf8(to_7bit(e.clone().into_bytes())).unwrap();
        assert!(!mime::has_long_line(out.as_bytes()));
        assert!(
            out.contains("Content-Type: text/csv\r\nContent-Transfer-Encoding: base64\r\n\r\neHh4")
        );
        assert!(out.contains(&format!("Content-Type: text/plain\r\n\r\n{ok}\r\n--b--")));
        // 998 octets is within the limit: nothing changes.
        let fine = format!("Content-Type: text/plain\r\n\r\n{ok}\r\n");
        assert_eq!(to_7bit(fine.clone().into_bytes()), fine.into_bytes());
    }
}
