//! What the upstream answered, typed: a [`ServerReply`] knows its [`Class`] and its
//! RFC 3463 status, and the two always agree; a [`RcptOutcome`] is what one reply means
//! for one recipient. The client-side twin of [`crate::smtp::reply`].
//!
//! **A mismatched reply** (`421 5.7.0`, `550 4.2.2`: maddy warns that servers send them)
//! is decided by its basic code. RFC 5321 §4.2.1 ties retrying to the first digit of the
//! basic code, and RFC 3463 §2 makes the enhanced class a restatement of it, so a
//! disagreeing enhanced code is the server's mistake: `421 5.7.0` is retried, `550 4.2.2`
//! bounces. Its enhanced code is then not trusted either: the status reported in DSNs is
//! `<class>.0.0` of the basic code (`4.0.0`, `5.0.0`). The reply text itself is kept
//! verbatim for the DSN's diagnostic and the audit log.
//!
//! Replies sealgate makes up itself (an extension the upstream lacks) are built through
//! [`ServerReply::local`] from one [`Class`], like the server's replies, and named in
//! [`local`].

use std::fmt;

pub use crate::smtp::reply::Class;

/// A reply from the upstream (or one sealgate makes up in its place), kept verbatim for
/// DSNs and the audit log, with the status its basic code allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    /// The three-digit basic code as sent.
    code: u16,
    /// All lines joined with " / ", without the codes (an enhanced code stays in the
    /// text, as sent).
    text: String,
    /// The enhanced code's subject and detail when the text starts with a well-formed
    /// enhanced code of the basic code's class; `None` otherwise (see the module docs).
    status: Option<(u16, u16)>,
}

impl ServerReply {
    /// A reply as read from the wire: `code` and the text after it.
    pub fn parse(code: u16, text: impl Into<String>) -> ServerReply {
        let text = text.into();
        let status = enhanced_in(&text)
            .filter(|(class, ..)| Some(*class) == class_digit(code))
            .map(|(_, subject, detail)| (subject, detail));
        ServerReply { code, text, status }
    }

    /// A reply sealgate makes up in place of the upstream's: basic code
    /// `<class digit><code_rest>`, text `<class digit>.<subject>.<detail> <text>`. One
    /// [`Class`] sets both digits, so they cannot disagree.
    pub fn local(class: Class, code_rest: u16, (subject, detail): (u16, u16), text: &str) -> Self {
        let digit = match class {
            Class::Success => 2,
            Class::Intermediate => 3,
            Class::Transient => 4,
            Class::Permanent => 5,
        };
        ServerReply::parse(
            digit * 100 + code_rest % 100,
            format!("{digit}.{subject}.{detail} {text}"),
        )
    }

    /// The basic code as sent.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The text after the code, as sent (lines joined with " / ").
    pub fn text(&self) -> &str {
        &self.text
    }

    /// What the basic code means: 2xx success, 3xx intermediate, 5xx permanent; 4xx and
    /// anything outside the classes (`1xx`, `999`) transient, since only a 5xx may stop
    /// the retries.
    pub fn class(&self) -> Class {
        match self.code / 100 {
            2 => Class::Success,
            3 => Class::Intermediate,
            5 => Class::Permanent,
            _ => Class::Transient,
        }
    }

    /// True for a 5xx: retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        self.class() == Class::Permanent
    }

    /// True for anything but 2xx, 3xx and 5xx: try again later.
    pub fn is_transient(&self) -> bool {
        self.class() == Class::Transient
    }

    /// The enhanced code at the start of the text as sent, if it is well-formed (even
    /// when its class disagrees with the basic code; [`ServerReply::status`] does not).
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.text.split_whitespace().next()?;
        enhanced_in(first).map(|_| first)
    }

    /// The RFC 3463 status this reply reports: its own enhanced code when that agrees
    /// with the basic code, else `<class>.0.0` of the basic code (`4.0.0` for a class
    /// that is neither 2 nor 5).
    pub fn status(&self) -> String {
        let class = match self.class() {
            Class::Success => 2,
            Class::Permanent => 5,
            Class::Transient | Class::Intermediate => 4,
        };
        // `status` is only set when it agrees with the basic code (see `parse`).
        match self.status {
            Some((subject, detail)) => format!("{class}.{subject}.{detail}"),
            None => format!("{class}.0.0"),
        }
    }
}

impl fmt::Display for ServerReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// The class digit of a basic code that has an enhanced form (2, 4, 5).
fn class_digit(code: u16) -> Option<u16> {
    Some(code / 100).filter(|c| matches!(c, 2 | 4 | 5))
}

/// The enhanced code at the start of `text` as (class, subject, detail), when it is
/// well-formed by [`crate::queue::dsn::valid_enhanced`].
fn enhanced_in(text: &str) -> Option<(u16, u16, u16)> {
    let first = text.split_whitespace().next()?;
    if !crate::queue::dsn::valid_enhanced(first) {
        return None;
    }
    let mut parts = first.split('.').map(|p| p.parse::<u16>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// What happened to one recipient in one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptOutcome {
    /// The upstream took the message for this recipient (2xx).
    Delivered(ServerReply),
    /// Try again later; the reason, for the queue and the audit log.
    Transient(String),
    /// Refused for good (5xx inside TLS): the recipient gets a DSN.
    Permanent(ServerReply),
}

impl RcptOutcome {
    /// The outcome a reply means by its basic code (see the module docs for a reply
    /// whose enhanced code disagrees).
    pub fn of(reply: ServerReply) -> RcptOutcome {
        match reply.class() {
            Class::Success => RcptOutcome::Delivered(reply),
            Class::Permanent => RcptOutcome::Permanent(reply),
            Class::Transient | Class::Intermediate => RcptOutcome::Transient(reply.to_string()),
        }
    }

    /// True for [`RcptOutcome::Delivered`].
    pub fn is_delivered(&self) -> bool {
        matches!(self, RcptOutcome::Delivered(_))
    }
}

/// The replies sealgate makes up when it refuses a message itself, before the upstream
/// sees it (file: `src/queue/upstream.rs`, [`crate::queue::upstream::Connection::send`]).
pub mod local {
    use super::{Class::Permanent, ServerReply};

    /// `554 5.6.3`: 8-bit content, and the upstream does not announce 8BITMIME (RFC 6152).
    pub fn no_8bitmime() -> ServerReply {
        ServerReply::local(
            Permanent,
            54,
            (6, 3),
            "upstream does not announce 8BITMIME and the message has 8-bit \
             content; send it 7-bit (base64 or quoted-printable) or use an upstream \
             with 8BITMIME",
        )
    }

    /// `553 5.6.7`: a non-ASCII address, and the upstream does not offer SMTPUTF8
    /// (RFC 6531).
    pub fn no_smtputf8() -> ServerReply {
        ServerReply::local(
            Permanent,
            53,
            (6, 7),
            "upstream does not support SMTPUTF8, needed for a non-ASCII address",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agreeing_reply_reports_its_own_status() {
        let r = ServerReply::parse(550, "5.1.1 no such user");
        assert_eq!(r.class(), Class::Permanent);
        assert_eq!(r.enhanced(), Some("5.1.1"));
        assert_eq!(r.status(), "5.1.1");
        assert_eq!(r.to_string(), "550 5.1.1 no such user");
        assert_eq!(ServerReply::parse(250, "2.0.0 ok").status(), "2.0.0");
        assert_eq!(ServerReply::parse(451, "4.3.0 later").status(), "4.3.0");
        assert_eq!(ServerReply::parse(550, "no such user").status(), "5.0.0");
    }

    /// The basic code decides: `421 5.7.0` is retried and `550 4.2.2` bounces; neither
    /// reports the disagreeing enhanced code as its status, but both keep their text.
    #[test]
    fn a_mismatched_reply_is_decided_by_its_basic_code() {
        let r = ServerReply::parse(421, "5.7.0 too many connections");
        assert!(r.is_transient() && !r.is_permanent());
        assert_eq!(r.status(), "4.0.0");
        assert_eq!(r.enhanced(), Some("5.7.0"), "the text is kept as sent");
        assert_eq!(
            RcptOutcome::of(r.clone()),
            RcptOutcome::Transient("421 5.7.0 too many connections".into())
        );

        let r = ServerReply::parse(550, "4.2.2 mailbox full");
        assert!(r.is_permanent() && !r.is_transient());
        assert_eq!(r.status(), "5.0.0");
        assert_eq!(RcptOutcome::of(r.clone()), RcptOutcome::Permanent(r));

        // Outside the classes: transient, never permanent.
        let r = ServerReply::parse(999, "5.0.0 what");
        assert!(r.is_transient());
        assert_eq!(r.status(), "4.0.0");
        assert!(matches!(RcptOutcome::of(r), RcptOutcome::Transient(_)));
    }

    #[test]
    fn local_replies_agree_by_construction() {
        let r = local::no_8bitmime();
        assert_eq!(r.code(), 554);
        assert_eq!(r.status(), "5.6.3");
        assert!(r
            .to_string()
            .starts_with("554 5.6.3 upstream does not announce 8BITMIME"));
        let r = local::no_smtputf8();
        assert_eq!((r.code(), r.status().as_str()), (553, "5.6.7"));
        let r = ServerReply::local(Class::Transient, 51, (4, 0), "busy");
        assert_eq!(r.to_string(), "451 4.4.0 busy");
        assert_eq!(r.status(), "4.4.0");
    }
}
