//! Delivery status notifications (RFC 3464 `multipart/report`) for the envelope sender.
//!
//! Only the original's headers travel back (`text/rfc822-headers`), never its body: the
//! body may be the encrypted or sensitive content the sender should already have.
//! A DSN is sent with the null reverse-path, so it can never cause another DSN.

use crate::audit::rfc5322_date;
use crate::spool::Envelope;

/// One recipient that failed for good.
#[derive(Debug, Clone)]
pub struct Failure {
    pub rcpt: String,
    /// RFC 3463 status, e.g. `5.1.1` or `4.4.7` for an expired retry period.
    pub status: String,
    /// What the upstream said, or why we gave up.
    pub diagnostic: String,
}

/// Builds the DSN message for `original` (whose bytes are `message`).
pub fn build(
    hostname: &str,
    upstream: &str,
    original: &Envelope,
    message: &[u8],
    failures: &[Failure],
) -> Vec<u8> {
    let now = crate::spool::now() as i64;
    let boundary = format!("{}/{}", original.id, hostname);
    let headers = original_headers(message);
    let mut out = String::with_capacity(2048 + headers.len());
    out.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"
    ));
    out.push_str(&format!("To: <{}>\r\n", original.from));
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
    for f in failures {
        out.push_str(&format!("<{}>: {}\r\n", f.rcpt, one_line(&f.diagnostic)));
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
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {}\r\nRemote-MTA: dns; {upstream}\r\nDiagnostic-Code: smtp; {}\r\n",
            f.rcpt,
            f.status,
            one_line(&f.diagnostic)
        ));
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
        bytes.extend_from_slice(&crate::transform::mime::encode_base64_lines(headers));
    } else {
        bytes.extend_from_slice(headers);
        if !headers.ends_with(b"\r\n") {
            bytes.extend_from_slice(b"\r\n");
        }
    }
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

/// A diagnostic on one 7-bit line: control characters become spaces, anything else
/// outside ASCII (an upstream's reply decoded lossily) a `?`.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            c if c.is_control() => ' ',
            c if !c.is_ascii() => '?',
            c => c,
        })
        .collect()
}

/// The header block of a message (up to, not including, the empty line).
pub fn original_headers(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 2)
        .unwrap_or(message.len().min(64 * 1024));
    &message[..end.min(64 * 1024)]
}

/// The status to report for an upstream reply: its own enhanced code, else one by class.
pub fn status_for(code: u16, enhanced: Option<&str>) -> String {
    match enhanced {
        Some(e) => e.to_string(),
        None if code >= 500 => "5.0.0".to_string(),
        None => "4.0.0".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::EntryKind;

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
}
