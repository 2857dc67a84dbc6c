//! The header From check at end of DATA: a From field that readers could read as another
//! address is refused for every client, and a client with `allowed_senders` may only
//! name those senders in every From field. Reads the [`Headers`] of the message as
//! judged, the same index the policy and DKIM read.

use crate::glob::glob_match;
use crate::message::Headers;
use crate::runtime::Runtime;
use crate::smtp::reply::{Class, Reply};

/// The `allowed_senders` globs of `client`, when it has any.
pub(crate) fn allowed_senders<'a>(rt: &'a Runtime, client: &str) -> Option<&'a [String]> {
    rt.config
        .clients
        .iter()
        .find(|c| c.name == client)
        .map(|c| c.allowed_senders.as_slice())
        .filter(|s| !s.is_empty())
}

/// A client with `allowed_senders` may only use them in the header From too, in every
/// From field; a field without an address is refused for such a client.
/// For every client, a From field that readers could read as another address is
/// refused first ([`header_from_problem`]).
pub(crate) fn check_header_from(
    rt: &Runtime,
    client: &str,
    headers: &Headers<'_>,
) -> Result<(), Reply> {
    if let Some(why) = header_from_problem(headers) {
        return Err(Reply::new(
            Class::Permanent,
            50,
            (6, 0),
            format!("{why} (built-in header From check)"),
        ));
    }
    let Some(globs) = allowed_senders(rt, client) else {
        return Ok(());
    };
    let refuse = |why: String| Err(Reply::new(Class::Permanent, 50, (7, 1), why));
    for field in headers.from_fields() {
        if field.is_empty() {
            return refuse(format!(
                "header From without an address: client {client} may only send as its allowed_senders"
            ));
        }
        if let Some(addr) = field
            .iter()
            .find(|a| !globs.iter().any(|g| glob_match(g, a)))
        {
            return refuse(format!(
                "header From <{addr}> not allowed for client {client} (allowed_senders)"
            ));
        }
    }
    Ok(())
}

/// Why the top-level `From` could be read in more than one way, if it could: mail
/// programs show the display name prominently (or only), and Python's email package
/// reads `ceo@example.com <billing@example.com>` as ceo@example.com, so a sender check or
/// a DKIM signature judged on the angle address would vouch for what the reader sees as
/// someone else. Refused, for every client:
/// - a display name that itself looks like an address (an `@` followed by a domain);
/// - group syntax (`ceo@example.com: billing@example.com;`);
/// - white space other than ASCII space and tab, invisible (default-ignorable) or
///   control characters anywhere in the field;
/// - an address whose domain is not written in one form only: ASCII letters, digits,
///   hyphens, or U-labels that IDNA maps back to exactly what is written (full-width or
///   mathematical letters, a soft hyphen or an ideographic dot all map to another name).
pub(crate) fn header_from_problem(headers: &Headers<'_>) -> Option<String> {
    use mail_parser::{Address, HeaderValue};
    let misread = |text: &str| {
        text.chars()
            .find(|&c| {
                (c.is_whitespace() && !c.is_ascii())
                    || (c.is_control() && c != '\t')
                    || crate::policy::is_default_ignorable(c)
            })
            .map(|c| {
                format!(
                    "header From holds the character U+{:04X} (white space other than a \
                     space, invisible or control), which mail programs read differently",
                    c as u32
                )
            })
    };
    for f in headers.all("From") {
        let value = f.value();
        if let Some(why) = misread(&value) {
            return Some(why);
        }
        let one = [b"From: ", value.as_bytes(), b"\r\n\r\n"].concat();
        let Some(parsed) = mail_parser::MessageParser::new().parse_headers(&one) else {
            continue;
        };
        let Some(h) = parsed.root_part().headers().first() else {
            continue;
        };
        match &h.value {
            HeaderValue::Address(Address::Group(_)) => {
                return Some(
                    "header From uses group syntax (name: address;), which mail programs \
                     show as the group's name"
                        .into(),
                )
            }
            HeaderValue::Address(Address::List(list)) => {
                for a in list {
                    let name = a.name.as_deref().unwrap_or_default();
                    // The name as mail programs show it: RFC 2047 words decoded (as the
                    // receipt's 8-bit repair writes a UTF-8 display name).
                    if let Some(why) = misread(name) {
                        return Some(why);
                    }
                    let looks_like_address = name.char_indices().any(|(i, c)| {
                        c == '@'
                            && name[i + 1..]
                                .chars()
                                .next()
                                .is_some_and(char::is_alphanumeric)
                    });
                    if looks_like_address {
                        return Some(format!(
                            "header From has a display name that looks like an address \
                             ({name:?}), which mail programs show instead of the address"
                        ));
                    }
                    if let Some((_, domain)) = a.address.as_deref().and_then(|x| x.rsplit_once('@'))
                    {
                        if crate::transform::dkim::strict_domain(domain).is_none() {
                            return Some(format!(
                                "header From domain {domain:?} is not written in one form \
                                 only (IDNA maps it to another name)"
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    None
}
