//! What counts as an attachment: one judgement, made on the MIME tree, shared by the
//! policy (`attachment_name`, `attachment_type` conditions) and the attachment transforms
//! (strip, zip), so that the rule that matched and the transform that acts on it always
//! see the same parts. See [`Roles`] for the RFC 1847 exemptions.

use crate::message::mime::{self, Entity, Kind};

/// The parts of one MIME tree that hold the structure of a well-formed RFC 1847
/// container, and so are not attachments whatever their header says:
/// - in a `multipart/signed` of exactly two parts whose `protocol` is
///   `application/pkcs7-signature`, `application/x-pkcs7-signature` or
///   `application/pgp-signature`: the second part, when it is a leaf of exactly that type
///   and its content is one (DER for PKCS #7, an armoured PGP signature for PGP);
/// - in a `multipart/encrypted` of exactly two parts with `protocol` =
///   `application/pgp-encrypted`: the `application/pgp-encrypted` control part and the
///   `application/octet-stream` part, when it holds an armoured PGP message.
///
/// A part declared with one of these types anywhere else (`tool.exe` labelled
/// `application/pgp-signature`, or a container with three parts or the wrong protocol) is
/// judged like any other part. Parts are told apart by where their bytes are in the
/// message, so a `Roles` answers only for the tree it was made from.
#[derive(Debug, Default)]
pub struct Roles {
    exempt: std::collections::HashSet<(usize, usize)>,
}

const SIGNATURE_TYPES: [&str; 3] = [
    "application/pkcs7-signature",
    "application/x-pkcs7-signature",
    "application/pgp-signature",
];

fn key(e: &Entity<'_>) -> (usize, usize) {
    (e.raw.as_ptr() as usize, e.raw.len())
}

/// The `protocol` parameter of an entity's Content-Type, lower case and trimmed.
fn protocol_of(e: &Entity<'_>) -> Option<String> {
    use mail_parser::MimeHeaders;
    let parsed = mail_parser::MessageParser::default().parse_headers(e.header)?;
    let ct = parsed.content_type()?;
    ct.attribute("protocol")
        .map(|p| p.trim().to_ascii_lowercase())
}

/// True when the decoded content of `e`, leading white space skipped, starts with `what`.
fn content_starts_with(e: &Entity<'_>, what: &[u8]) -> bool {
    let c = mime::decode_body(e.body, &e.info.transfer_encoding);
    let start = c
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(c.len());
    c[start..].starts_with(what)
}

impl Roles {
    /// Finds the exempt parts of `tree` (iteratively; attached messages included).
    pub fn of(tree: &Entity<'_>) -> Roles {
        let mut roles = Roles::default();
        let mut stack = vec![tree];
        while let Some(e) = stack.pop() {
            match &e.kind {
                Kind::Leaf => {}
                Kind::Message(inner) => stack.push(inner),
                Kind::Multipart { parts, .. } => {
                    stack.extend(parts.iter().map(|(_, p)| p));
                    let ct = e.info.content_type.as_str();
                    if parts.len() != 2 || !matches!(ct, "multipart/signed" | "multipart/encrypted")
                    {
                        continue;
                    }
                    let Some(protocol) = protocol_of(e) else {
                        continue;
                    };
                    let (first, second) = (&parts[0].1, &parts[1].1);
                    let leaf = |p: &Entity<'_>| matches!(p.kind, Kind::Leaf);
                    if ct == "multipart/signed" {
                        let well_formed = SIGNATURE_TYPES.contains(&protocol.as_str())
                            && leaf(second)
                            && second.info.content_type == protocol
                            && if protocol == "application/pgp-signature" {
                                content_starts_with(second, b"-----BEGIN PGP SIGNATURE-----")
                            } else {
                                content_starts_with(second, &[0x30])
                            };
                        if well_formed {
                            roles.exempt.insert(key(second));
                        }
                    } else if protocol == "application/pgp-encrypted"
                        && leaf(first)
                        && leaf(second)
                        && first.info.content_type == "application/pgp-encrypted"
                        && second.info.content_type == "application/octet-stream"
                        && content_starts_with(second, b"-----BEGIN PGP MESSAGE-----")
                    {
                        roles.exempt.insert(key(first));
                        roles.exempt.insert(key(second));
                    }
                }
            }
        }
        roles
    }

    /// True when `e` (an entity of the tree this was made from) is an attachment: an
    /// explicit `attachment` disposition, a file name, or a non-text leaf; never a
    /// multipart, an inline forwarded message or an exempt part of an RFC 1847 container.
    pub fn is_attachment(&self, e: &Entity<'_>) -> bool {
        if matches!(e.kind, Kind::Leaf) && self.exempt.contains(&key(e)) {
            return false;
        }
        is_attachment_ignoring_roles(e)
    }
}

/// [`Roles::is_attachment`] without the RFC 1847 exemptions: what a part is by its own
/// header and content.
fn is_attachment_ignoring_roles(e: &Entity<'_>) -> bool {
    let ct = e.info.content_type.as_str();
    match e.kind {
        Kind::Multipart { .. } => false,
        Kind::Message(_) => e.info.disposition.as_deref() == Some("attachment"),
        Kind::Leaf => {
            e.info.disposition.as_deref() == Some("attachment")
                || e.info.file_name.is_some()
                // A forwarded message in base64 or quoted-printable (RFC 2046 forbids
                // it; clients open it anyway) is opaque here: it goes as a whole.
                || (e.info.is_message() && e.info.is_encoded())
                // message/partial, message/external-body, message/news ...: opaque here,
                // so moved as a whole (reports stay: they are text for their reader).
                || (ct.starts_with("message/")
                    && !e.info.is_message()
                    && !matches!(
                        ct,
                        "message/delivery-status"
                            | "message/disposition-notification"
                            | "message/global-delivery-status"
                            | "message/global-disposition-notification"
                    ))
                || !(ct.starts_with("text/")
                    || ct.starts_with("message/")
                    || ct.starts_with("multipart/"))
        }
    }
}
