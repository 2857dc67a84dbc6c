//! Every SMTP reply sealgate sends, as a value that carries its enhanced status code.
//!
//! The class digit of the basic code and of the enhanced code (RFC 3463) come from one
//! [`Class`], so a temporary failure can never be reported with a 5.x.x code, or the
//! other way round: the type makes maddy's mismatch impossible.

use std::fmt;

/// Reply class: the first digit of both the basic and the enhanced status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 2xx / 2.x.x
    Success,
    /// 3xx (no enhanced code: 334 and 354 are intermediate)
    Intermediate,
    /// 4xx / 4.x.x: try again later.
    Transient,
    /// 5xx / 5.x.x: do not retry.
    Permanent,
}

/// One SMTP reply: `<code> <class>.<subject>.<detail> <text>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    class: Class,
    /// Last two digits of the basic code (e.g. 50 for 550).
    code_rest: u16,
    /// Enhanced code subject and detail; `None` for 3xx.
    enhanced: Option<(u16, u16)>,
    /// Human text; may contain several lines separated by '\n'.
    text: String,
}

impl Reply {
    /// A reply of `class` with basic code `<class digit><code_rest>` and enhanced code
    /// `<class digit>.<subject>.<detail>`.
    pub fn new(
        class: Class,
        code_rest: u16,
        enhanced: (u16, u16),
        text: impl Into<String>,
    ) -> Reply {
        Reply {
            class,
            code_rest: code_rest % 100,
            enhanced: if class == Class::Intermediate {
                None
            } else {
                Some(enhanced)
            },
            text: sanitize(text.into()),
        }
    }

    /// A reply without enhanced code: the greeting and the EHLO/HELO response, which
    /// RFC 2034 §3 exempts (clients parse EHLO keywords right after the code).
    pub fn without_enhanced(class: Class, code_rest: u16, text: impl Into<String>) -> Reply {
        Reply {
            class,
            code_rest: code_rest % 100,
            enhanced: None,
            text: sanitize(text.into()),
        }
    }

    /// A 3xx reply (no enhanced code).
    pub fn intermediate(code_rest: u16, text: impl Into<String>) -> Reply {
        Reply::new(Class::Intermediate, code_rest, (0, 0), text)
    }

    /// The three-digit code.
    pub fn code(&self) -> u16 {
        self.class_digit() * 100 + self.code_rest
    }

    /// The class.
    pub fn class(&self) -> Class {
        self.class
    }

    /// The enhanced code as text, e.g. `5.7.1`.
    pub fn enhanced(&self) -> Option<String> {
        self.enhanced
            .map(|(s, d)| format!("{}.{}.{}", self.class_digit(), s, d))
    }

    /// The human text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// True for 4xx.
    pub fn is_transient(&self) -> bool {
        self.class == Class::Transient
    }

    /// True for 5xx.
    pub fn is_permanent(&self) -> bool {
        self.class == Class::Permanent
    }

    fn class_digit(&self) -> u16 {
        match self.class {
            Class::Success => 2,
            Class::Intermediate => 3,
            Class::Transient => 4,
            Class::Permanent => 5,
        }
    }

    /// The reply as it goes on the wire, CRLF-terminated, multi-line if the text has lines.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + 16);
        let lines: Vec<&str> = self.text.split('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            out.extend_from_slice(format!("{}{}", self.code(), sep).as_bytes());
            if let Some(e) = self.enhanced() {
                out.extend_from_slice(e.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.enhanced() {
            Some(e) => write!(
                f,
                "{} {} {}",
                self.code(),
                e,
                self.text.replace('\n', " / ")
            ),
            None => write!(f, "{} {}", self.code(), self.text),
        }
    }
}

/// Removes CR and control characters so a reply text can never inject a line.
fn sanitize(text: String) -> String {
    text.chars()
        .filter(|c| *c == '\n' || !c.is_control())
        .collect()
}

/// The named replies of the session.
pub mod named {
    use super::{Class::*, Reply};

    pub fn ok() -> Reply {
        Reply::new(Success, 50, (0, 0), "OK")
    }
    pub fn sender_ok() -> Reply {
        Reply::new(Success, 50, (1, 0), "sender OK")
    }
    pub fn recipient_ok() -> Reply {
        Reply::new(Success, 50, (1, 5), "recipient OK")
    }
    pub fn queued(id: &str) -> Reply {
        Reply::new(Success, 50, (0, 0), format!("queued as {id}"))
    }
    pub fn bye(host: &str) -> Reply {
        Reply::new(Success, 21, (0, 0), format!("{host} closing connection"))
    }
    pub fn reset() -> Reply {
        Reply::new(Success, 50, (0, 0), "reset")
    }
    pub fn vrfy() -> Reply {
        Reply::new(
            Success,
            52,
            (5, 0),
            "cannot VRFY; send mail and the policy will decide",
        )
    }
    pub fn help() -> Reply {
        Reply::new(
            Success,
            14,
            (0, 0),
            "sealgate: EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS AUTH\nsee https://www.rfc-editor.org/rfc/rfc5321",
        )
    }
    pub fn start_data() -> Reply {
        Reply::intermediate(54, "end data with <CR><LF>.<CR><LF>")
    }
    pub fn ready_tls() -> Reply {
        Reply::new(Success, 20, (0, 0), "ready to start TLS")
    }
    pub fn auth_ok() -> Reply {
        Reply::new(Success, 35, (7, 0), "authentication succeeded")
    }
    pub fn syntax(what: &str) -> Reply {
        Reply::new(Permanent, 1, (5, 4), format!("syntax error: {what}"))
    }
    pub fn unknown_command() -> Reply {
        Reply::new(Permanent, 0, (5, 1), "command not recognized")
    }
    pub fn line_too_long() -> Reply {
        Reply::new(Permanent, 0, (5, 6), "line too long (RFC 5321 §4.5.3.1.4)")
    }
    pub fn bad_sequence(what: &str) -> Reply {
        Reply::new(
            Permanent,
            3,
            (5, 1),
            format!("bad sequence of commands: {what}"),
        )
    }
    pub fn param_not_supported(what: &str) -> Reply {
        Reply::new(
            Permanent,
            55,
            (5, 4),
            format!("parameter not supported: {what}"),
        )
    }
    pub fn too_many_recipients(max: usize) -> Reply {
        Reply::new(
            Transient,
            52,
            (5, 3),
            format!(
                "too many recipients (at most {max} per message); send the rest in another message"
            ),
        )
    }
    pub fn too_big(max: u64) -> Reply {
        Reply::new(
            Permanent,
            52,
            (3, 4),
            format!("message too big: the limit is {max} bytes (max_message_size)"),
        )
    }
    pub fn bare_line_ending() -> Reply {
        Reply::new(
            Permanent,
            50,
            (6, 11),
            "message refused: bare LF or CR in DATA; lines must end in CRLF (RFC 5321 §2.3.8)",
        )
    }
    pub fn auth_required() -> Reply {
        Reply::new(Permanent, 30, (7, 0), "authentication required")
    }
    pub fn auth_failed() -> Reply {
        Reply::new(Permanent, 35, (7, 8), "authentication credentials invalid")
    }
    pub fn auth_needs_tls() -> Reply {
        Reply::new(
            Permanent,
            38,
            (7, 11),
            "encryption required for requested authentication mechanism",
        )
    }
    pub fn auth_mechanism() -> Reply {
        Reply::new(
            Permanent,
            4,
            (5, 4),
            "unrecognized authentication mechanism",
        )
    }
    pub fn already_authenticated() -> Reply {
        Reply::new(Permanent, 3, (5, 1), "already authenticated")
    }
    pub fn tls_not_available() -> Reply {
        Reply::new(Permanent, 2, (5, 1), "STARTTLS not available")
    }
    pub fn sender_not_allowed(sender: &str, client: &str) -> Reply {
        Reply::new(
            Permanent,
            50,
            (7, 1),
            format!("<{sender}>: sender not allowed for client {client} (allowed_senders)"),
        )
    }
    pub fn timeout() -> Reply {
        Reply::new(Transient, 21, (4, 2), "timeout waiting for input; closing")
    }
    pub fn shutting_down() -> Reply {
        Reply::new(Transient, 21, (3, 0), "shutting down; try again shortly")
    }
    pub fn too_many_errors() -> Reply {
        Reply::new(Transient, 21, (7, 0), "too many errors; closing")
    }
    pub fn local_error(what: &str) -> Reply {
        Reply::new(
            Transient,
            51,
            (3, 0),
            format!("local error: {what}; try again later"),
        )
    }
    pub fn transform_failed(what: &str) -> Reply {
        Reply::new(
            Transient,
            51,
            (7, 0),
            format!("message not sent: {what}; try again later"),
        )
    }
    pub fn no_valid_recipients() -> Reply {
        Reply::new(Permanent, 54, (5, 1), "no valid recipients")
    }
    pub fn policy_reject(text: String) -> Reply {
        Reply::new(Permanent, 50, (7, 1), text)
    }
    pub fn smtputf8_required() -> Reply {
        Reply::new(
            Permanent,
            53,
            (6, 7),
            "non-ASCII address requires the SMTPUTF8 parameter",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_digit_is_shared_by_basic_and_enhanced_code() {
        let r = Reply::new(Class::Transient, 51, (7, 0), "x");
        assert_eq!(r.to_wire(), b"451 4.7.0 x\r\n");
        let r = Reply::new(Class::Permanent, 50, (7, 1), "y");
        assert_eq!(r.to_string(), "550 5.7.1 y");
    }

    #[test]
    fn multiline_and_injection_safe() {
        let r = Reply::new(Class::Success, 50, (0, 0), "a\nb\r\n250 evil");
        assert_eq!(
            r.to_wire(),
            b"250-2.0.0 a\r\n250-2.0.0 b\r\n250 2.0.0 250 evil\r\n"
        );
        assert_eq!(
            named::start_data().to_wire(),
            b"354 end data with <CR><LF>.<CR><LF>\r\n"
        );
    }
}
