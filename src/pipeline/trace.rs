//! The trace fields sealgate adds to each message it accepts (RFC 6409 §8.2, §8.3):
//! `Received` always, `Date` and `Message-ID` when the message has none.

use crate::clock::rfc5322_date;
use crate::message::{mime, Headers};
use crate::pipeline::SessionInfo;

/// Adds `Received`, and `Date`/`Message-ID` when the header block has no such field
/// (any case, obsolete white space before the colon included). Returns the new message;
/// its Message-ID is read from it once it is a [`crate::message::Message`].
pub fn add_trace_headers(
    message: &[u8],
    info: &SessionInfo,
    hostname: &str,
    id: &str,
    rcpts: &[String],
) -> Vec<u8> {
    let now = crate::clock::unix_now() as i64;
    let headers = Headers::of(message);
    let mut top =
        format!(
        "Received: from {} ({} [{}])\r\n\tby {hostname} (sealgate) with {} id {id}{};\r\n\t{}\r\n",
        sanitize(&info.helo),
        if info.peer.ip().is_loopback() { "localhost" } else { "unknown" },
        info.peer.ip(),
        match (info.tls, info.client != "local") {
            (true, true) => "ESMTPSA",
            (true, false) => "ESMTPS",
            (false, true) => "ESMTPA",
            (false, false) => "ESMTP",
        },
        if rcpts.len() == 1 { format!("\r\n\tfor <{}>", rcpts[0]) } else { String::new() },
        rfc5322_date(now)
    );
    if !headers.has("Date") {
        top.push_str(&format!("Date: {}\r\n", rfc5322_date(now)));
    }
    if !headers.has("Message-ID") {
        top.push_str(&format!("Message-ID: <{id}@{hostname}>\r\n"));
    }
    let mut out = Vec::with_capacity(message.len() + top.len() + 2);
    out.extend_from_slice(top.as_bytes());
    let no_empty_line = !message.starts_with(b"\r\n") && mime::find(message, b"\r\n\r\n").is_none();
    let first_line = message.split(|&b| b == b'\n').next().unwrap_or_default();
    if no_empty_line && !message.is_empty() && !mime::is_field_line(first_line) {
        // No header block at all: the message is body only; separate it. (Unreachable
        // after the header repair, which gives such text a header of its own.)
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(message);
    out
}

fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(255)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn info() -> SessionInfo {
        SessionInfo {
            client: "local".into(),
            helo: "app".into(),
            peer: "127.0.0.1:1000".parse().unwrap(),
            tls: false,
        }
    }

    #[test]
    fn trace_headers_added_once() {
        let m = add_trace_headers(
            b"Subject: x\r\n\r\nbody\r\n",
            &info(),
            "gw",
            "ID1",
            &["a@b".into()],
        );
        let mid = Message::new(&m).headers().message_id();
        let text = String::from_utf8(m).unwrap();
        assert!(text.starts_with("Received: from app (localhost [127.0.0.1])"));
        assert!(text.contains("Message-ID: <ID1@gw>\r\n"));
        assert_eq!(mid.as_deref(), Some("<ID1@gw>"));
        assert!(text.ends_with("Subject: x\r\n\r\nbody\r\n"));
        let m2 = add_trace_headers(
            b"Message-ID: <k@l>\r\nDate: x\r\n\r\nb",
            &info(),
            "gw",
            "ID2",
            &[],
        );
        assert_eq!(
            Message::new(&m2).headers().message_id().as_deref(),
            Some("<k@l>")
        );
        let text = String::from_utf8(m2).unwrap();
        assert_eq!(text.matches("Message-ID").count(), 1);
        assert_eq!(text.matches("Date").count(), 1);
    }

    #[test]
    fn a_date_field_in_obsolete_syntax_is_not_doubled() {
        // `Date :` (RFC 5322 §4.5.3 obs-orig-date) is a Date field: readers take it as one.
        let m = add_trace_headers(
            b"Date : Mon, 30 Nov 2026 12:00:00 +0000\r\nmessage-id : <a@b>\r\n\r\nb",
            &info(),
            "gw",
            "ID3",
            &[],
        );
        let text = String::from_utf8(m).unwrap();
        assert!(
            !text.contains("\r\nDate: ") && !text.contains("<ID3@gw>"),
            "{text}"
        );
    }

    #[test]
    fn text_without_a_header_is_separated_from_the_trace_fields() {
        let m = add_trace_headers(b"hello world", &info(), "gw", "ID4", &[]);
        assert!(m.ends_with(b"<ID4@gw>\r\n\r\nhello world"));
        let m = add_trace_headers(b"Subject: s", &info(), "gw", "ID5", &[]);
        assert!(m.ends_with(b"<ID5@gw>\r\nSubject: s"));
    }
}
