//! Delivery status notifications (RFC 3464 `multipart/report`) for the envelope sender.
//!
//! A bounce is mail: its recipient passes the recipient policy like any other
//! ([`route`]). A sender the policy would refuse as a recipient gets no DSN; it goes to
//! `[server] postmaster` when one is set, else nowhere (the relay audits which).
//! Only the original's headers travel back (`text/rfc822-headers`, at most
//! [`MAX_RETURNED_HEADERS`] bytes, cut at a field boundary), never its body: the body may
//! be the encrypted or sensitive content the sender should already have.
//! A DSN is sent with the null reverse-path, so it can never cause another DSN.
//! Invariants: every line of a DSN is at most 998 octets (RFC 5322 §2.1.1); its
//! `Status:` is a well-formed `5.x.x`, as `Action: failed` requires.

use crate::clock::rfc5322_date;
use crate::queue::spool::Envelope;
use crate::runtime::Runtime;

/// One recipient that failed for good.
#[derive(Debug, Clone)]
pub struct Failure {
    pub rcpt: String,
    /// RFC 3463 status, e.g. `5.1.1`; anything else is reported as one derived from
    /// the class (see [`failed_status`]).
    pub status: String,
    /// What the upstream said, or why we gave up.
    pub diagnostic: String,
}

/// Most bytes of the original's header block a DSN returns.
pub const MAX_RETURNED_HEADERS: usize = 8 * 1024;
/// Most characters of one diagnostic (an upstream's multi-line reply joined).
const MAX_DIAGNOSTIC: usize = 2000;
/// Lines are folded before this many octets (RFC 5322 §2.1.1's recommended 78).
const FOLD_AT: usize = 78;

/// Where the DSN for a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// To the envelope sender, an approved recipient.
    Sender(String),
    /// To `[server] postmaster`: the sender is not an approved recipient (`why`).
    Postmaster { address: String, why: String },
    /// Nowhere: neither the sender nor a postmaster may receive it (`why`).
    Nowhere { why: String },
}

/// Where a DSN for a message from `sender` (submitted by `client`) may go under the
/// policy of `rt`: the sender when the recipient policy approves it as a recipient of
/// a null-sender message, else the postmaster (judged the same way), else nowhere.
pub fn route(rt: &Runtime, client: &str, sender: &str) -> Route {
    let env = crate::policy::Envelope { client, from: "" };
    let has_cert = |a: &str| rt.smime.as_ref().is_some_and(|s| s.has_certificate(a));
    let judge = |addr: &str| {
        rt.policy
            .judge_rcpt(&env, addr, &has_cert)
            .map_err(|r| format!("<{addr}>: {} ({})", r.reason, r.by))
    };
    let why = match judge(sender) {
        Ok(()) => return Route::Sender(sender.to_string()),
        Err(why) => why,
    };
    match &rt.config.server.postmaster {
        Some(pm) => match judge(pm) {
            Ok(()) => Route::Postmaster {
                address: pm.clone(),
                why,
            },
            Err(pm_why) => Route::Nowhere {
                why: format!("{why}; postmaster {pm_why}"),
            },
        },
        None => Route::Nowhere {
            why: format!("{why}; no [server] postmaster is set"),
        },
    }
}

/// Builds the DSN message for `original` (whose bytes are `message`), addressed to `to`
/// (the original sender, or the postmaster).
pub fn build(
    hostname: &str,
    upstream: &str,
    original: &Envelope,
    message: &[u8],
    failures: &[Failure],
    to: &str,
) -> Vec<u8> {
    let now = crate::clock::unix_now() as i64;
    let boundary = format!("{}/{}", original.id, hostname);
    let headers = returned_headers(message);
    let mut out = String::with_capacity(4096 + headers.len());
    out.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"
    ));
    out.push_str(&format!("To: <{to}>\r\n"));
    out.push_str("Subject: Undelivered Mail Returned to Sender\r\n");
    out.push_str(&format!("Date: {}\r\n", rfc5322_date(now)));
    out.push_str(&format!("Message-ID: <{}.dsn@{hostname}>\r\n", original.id));
    out.push_str("Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n");
    out.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"
    ));
    out.push_str("This is a MIME-encapsulated message.\r\n\r\n");
    out.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ));
    out.push_str(&format!(
        "This is sealgate on {hostname}.\r\n\r\nYour message (queue id {}) could not be delivered to the\r\nrecipients below. The relay upstream was {upstream}.\r\n\r\n",
        original.id
    ));
    if !to.eq_ignore_ascii_case(&original.from) {
        out.push_str(&fold(&format!(
            "This report goes to the postmaster: the sender <{}> is not an approved recipient.",
            original.from
        )));
        out.push_str("\r\n");
    }
    for f in failures {
        out.push_str(&fold(&format!("<{}>: {}", f.rcpt, one_line(&f.diagnostic))));
    }
    out.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
    ));
    out.push_str(&format!("Reporting-MTA: dns; {hostname}\r\n"));
    out.push_str(&format!("X-Sealgate-Queue-ID: {}\r\n", original.id));
    out.push_str(&format!(
        "Arrival-Date: {}\r\n",
        rfc5322_date(original.created as i64)
    ));
    for f in failures {
        out.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {}\r\n",
            f.rcpt,
            failed_status(&f.status)
        ));
        out.push_str(&fold(&format!("Remote-MTA: dns; {upstream}")));
        out.push_str(&fold(&format!(
            "Diagnostic-Code: smtp; {}",
            one_line(&f.diagnostic)
        )));
    }
    // Raw 8-bit header bytes (a UTF-8 Subject written without RFC 2047) go base64, so the
    // DSN stays 7-bit and reaches an upstream without 8BITMIME.
    let eight_bit = headers.iter().any(|&b| b >= 0x80);
    out.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: text/rfc822-headers{}\r\n\r\n",
        if eight_bit {
            "; charset=utf-8\r\nContent-Transfer-Encoding: base64"
        } else {
            ""
        }
    ));
    let mut bytes = out.into_bytes();
    if eight_bit {
        bytes.extend_from_slice(&crate::message::mime::encode_base64_lines(headers));
    } else {
        // A returned field line longer than 998 octets is cut: the copy is for
        // reading, and an over-long line would get the DSN refused.
        for line in headers.split_inclusive(|&b| b == b'\n') {
            let body = line.strip_suffix(b"\r\n").unwrap_or(line);
            let body = body.strip_suffix(b"\n").unwrap_or(body);
            bytes.extend_from_slice(&body[..body.len().min(998)]);
            bytes.extend_from_slice(b"\r\n");
        }
    }
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

/// A diagnostic on one 7-bit line of at most [`MAX_DIAGNOSTIC`] characters: control
/// characters become spaces, anything else outside ASCII (an upstream's reply decoded
/// lossily) a `?`.
fn one_line(s: &str) -> String {
    s.chars()
        .take(MAX_DIAGNOSTIC)
        .map(|c| match c {
            c if c.is_control() => ' ',
            c if !c.is_ascii() => '?',
            c => c,
        })
        .collect()
}

/// One field or paragraph (ASCII, no line breaks) as lines ending in CRLF: broken at
/// spaces before [`FOLD_AT`] octets, continuation lines starting with a space (RFC 5322
/// folding, which RFC 3464 §2.1.2 allows in its fields). A word longer than a line is
/// cut; no line exceeds 998 octets.
fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut line_len = 0;
    for (n, word) in text.split(' ').enumerate() {
        let mut word = word;
        if n > 0 {
            if line_len + 1 + word.len() > FOLD_AT && line_len > 1 {
                out.push_str("\r\n ");
                line_len = 1;
            } else {
                out.push(' ');
                line_len += 1;
            }
        }
        // A single very long word: cut into pieces that fit a line.
        while line_len + word.len() > 990 {
            let mut take = 990 - line_len;
            while !word.is_char_boundary(take) {
                take -= 1;
            }
            out.push_str(&word[..take]);
            out.push_str("\r\n ");
            line_len = 1;
            word = &word[take..];
        }
        out.push_str(word);
        line_len += word.len();
    }
    out.push_str("\r\n");
    out
}

/// The header block of a message (up to, not including, the empty line), at most 64 KiB.
pub fn original_headers(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 2)
        .unwrap_or(message.len().min(64 * 1024));
    &message[..end.min(64 * 1024)]
}

/// The header fields a DSN returns: the header block, cut after the last whole field
/// that ends within [`MAX_RETURNED_HEADERS`] bytes (a field's folded lines stay together).
pub fn returned_headers(message: &[u8]) -> &[u8] {
    let block = original_headers(message);
    if block.len() <= MAX_RETURNED_HEADERS {
        return block;
    }
    let mut end = 0;
    let mut pos = 0;
    for line in block.split_inclusive(|&b| b == b'\n') {
        if pos > MAX_RETURNED_HEADERS {
            break;
        }
        // A new field starts here (not a continuation): everything before is whole.
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            end = pos;
        }
        pos += line.len();
    }
    if pos <= MAX_RETURNED_HEADERS {
        end = pos;
    }
    &block[..end]
}

/// True for an RFC 3463 enhanced status code: class `2`, `4` or `5`, then a subject and
/// a detail of one to three digits each (`5.1.1`, `4.7.0`, `5.999.999`).
pub fn valid_enhanced(code: &str) -> bool {
    let mut parts = code.split('.');
    let digits = |p: Option<&str>| {
        p.is_some_and(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    matches!(parts.next(), Some("2" | "4" | "5"))
        && digits(parts.next())
        && digits(parts.next())
        && parts.next().is_none()
}

/// The status to report for an upstream reply: its own enhanced code when it is
/// well-formed and of the reply's class, else one derived from the reply code.
/// The rule is [`ServerReply::status`](crate::queue::reply::ServerReply::status)'s.
pub fn status_for(code: u16, enhanced: Option<&str>) -> String {
    crate::queue::reply::ServerReply::parse(code, enhanced.unwrap_or_default()).status()
}

/// The `Status:` of an `Action: failed` recipient: `status` when it is a well-formed
/// `5.x.x`; a `4.x.x` (a temporary failure we gave up on) becomes `5.x.x`; anything
/// else `5.0.0`.
pub fn failed_status(status: &str) -> String {
    if !valid_enhanced(status) {
        return "5.0.0".into();
    }
    match status.split_once('.') {
        Some(("5", _)) => status.to_string(),
        Some(("4", rest)) => format!("5.{rest}"),
        _ => "5.0.0".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::spool::EntryKind;

    /// The original message's envelope: app@example.com to x@example.net.
    fn envelope(body_8bit: bool) -> Envelope {
        Envelope {
            id: "ABC".into(),
            from: "app@example.com".into(),
            rcpts: vec!["x@example.net".into()],
            created: 0,
            client: "local".into(),
            message_id: None,
            policy_version: None,
            kind: EntryKind::Message,
            body_8bit,
            smtputf8: false,
        }
    }

    #[test]
    fn dsn_is_a_parseable_multipart_report_without_the_body() {
        let env = envelope(false);
        let msg = b"Subject: payslip\r\nFrom: app@example.com\r\n\r\nSECRET BODY\r\n";
        let dsn = build(
            "gw.test",
            "smtp.test",
            &env,
            msg,
            &[Failure {
                rcpt: "x@example.net".into(),
                status: "5.1.1".into(),
                diagnostic: "550 5.1.1 no such user".into(),
            }],
            "app@example.com",
        );
        let text = String::from_utf8(dsn.clone()).unwrap();
        assert!(!text.contains("SECRET BODY"));
        assert!(text.contains("Status: 5.1.1"));
        let parsed = mail_parser::MessageParser::default().parse(&dsn).unwrap();
        assert_eq!(parsed.parts.len(), 4);
        assert_eq!(
            parsed.subject(),
            Some("Undelivered Mail Returned to Sender")
        );
    }

    #[test]
    fn dsn_is_7bit_even_for_8bit_headers_and_replies() {
        use mail_parser::MimeHeaders;
        let env = envelope(true);
        let msg = "Subject: Gehaltsabrechnung M\u{e4}rz\r\nFrom: app@example.com\r\n\r\nx\r\n";
        let dsn = build(
            "gw.test",
            "smtp.test",
            &env,
            msg.as_bytes(),
            &[Failure {
                rcpt: "x@example.net".into(),
                status: "5.1.1".into(),
                diagnostic: "550 5.1.1 unbekannter Empf\u{e4}nger \u{fffd}".into(),
            }],
            "app@example.com",
        );
        assert!(
            dsn.iter().all(|&b| b < 0x80),
            "{}",
            String::from_utf8_lossy(&dsn)
        );
        let parsed = mail_parser::MessageParser::default().parse(&dsn).unwrap();
        let headers = parsed.parts.iter().find(|p| {
            p.content_type()
                .is_some_and(|c| c.subtype() == Some("rfc822-headers"))
        });
        let text = headers.and_then(|p| p.text_contents()).unwrap_or_default();
        assert!(text.contains("Gehaltsabrechnung M\u{e4}rz"), "{text}");
    }

    #[test]
    fn every_line_fits_998_octets_and_status_agrees_with_failed() {
        let env = envelope(false);
        let long = format!("550 5.1.1 {}", "x ".repeat(600) + &"y".repeat(1500));
        let mut msg = String::new();
        for i in 0..3000 {
            msg.push_str(&format!("X-Filler-{i}: 4111 1111 1111 1111\r\n"));
        }
        msg.push_str(&format!(
            "X-Long: {}\r\n\r\nSECRET BODY\r\n",
            "z".repeat(5000)
        ));
        let failures = [
            Failure {
                rcpt: "a@example.net".into(),
                status: "2.0.0".into(),
                diagnostic: long,
            },
            Failure {
                rcpt: "b@example.net".into(),
                status: "4.1.1".into(),
                diagnostic: "x".into(),
            },
            Failure {
                rcpt: "c@example.net".into(),
                status: "5.999999999999.1".into(),
                diagnostic: "x".into(),
            },
        ];
        let dsn = build(
            "gw.test",
            "smtp.test",
            &env,
            msg.as_bytes(),
            &failures,
            "app@example.com",
        );
        let text = String::from_utf8(dsn.clone()).unwrap();
        for line in text.split("\r\n") {
            assert!(line.len() <= 998, "{} octets: {}", line.len(), &line[..80]);
        }
        let statuses: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("Status: "))
            .collect();
        assert_eq!(statuses, ["5.0.0", "5.1.1", "5.0.0"]);
        assert!(!text.contains("SECRET BODY"));
        let returned = &text[text.find("text/rfc822-headers").unwrap()..];
        assert!(
            returned.len() < MAX_RETURNED_HEADERS + 200,
            "{}",
            returned.len()
        );
        assert!(!returned.contains("X-Long"), "cut at a field boundary");
        let parsed = mail_parser::MessageParser::default().parse(&dsn).unwrap();
        assert_eq!(parsed.parts.len(), 4);
    }

    #[test]
    fn status_codes_are_validated_against_the_reply() {
        assert_eq!(status_for(550, Some("5.1.1")), "5.1.1");
        assert_eq!(status_for(550, Some("2.0.0")), "5.0.0");
        assert_eq!(status_for(550, Some("4.1.1")), "5.0.0");
        assert_eq!(status_for(550, Some("5.999999999999.1")), "5.0.0");
        assert_eq!(status_for(451, None), "4.0.0");
        assert!(valid_enhanced("5.999.999") && !valid_enhanced("5.1") && !valid_enhanced("3.1.1"));
        assert_eq!(failed_status("4.4.7"), "5.4.7");
        assert_eq!(failed_status("2.0.0"), "5.0.0");
    }

    #[test]
    fn returned_headers_keep_folded_fields_whole() {
        let mut msg = String::from("Subject: a\r\n");
        while msg.len() < MAX_RETURNED_HEADERS - 10 {
            msg.push_str("X-A: b\r\n");
        }
        msg.push_str("X-Folded: one\r\n\ttwo two two two two two\r\n\r\nbody");
        let h = returned_headers(msg.as_bytes());
        assert!(h.len() <= MAX_RETURNED_HEADERS);
        assert!(
            h.ends_with(b"X-A: b\r\n"),
            "{}",
            String::from_utf8_lossy(&h[h.len() - 20..])
        );
    }
}
