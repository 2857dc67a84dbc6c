//! The sendmail-compatible entry point's message handling: `-t` recipient extraction.
//!
//! Submission itself goes through [`crate::submit`] to the local listener, so a message
//! from `sendmail` meets exactly the same policy as one sent over SMTP.

/// Recipients from To, Cc and Bcc; returns them and the message (CRLF line ends)
/// without Bcc headers.
pub fn recipients_from_headers(message: &[u8]) -> (Vec<String>, Vec<u8>) {
    let mut rcpts = Vec::new();
    if let Some(m) = mail_parser::MessageParser::new().parse_headers(message) {
        for list in [m.to(), m.cc(), m.bcc()].into_iter().flatten() {
            for a in list.iter() {
                if let Some(addr) = a.address() {
                    if !rcpts.iter().any(|r: &String| r.eq_ignore_ascii_case(addr)) {
                        rcpts.push(addr.to_string());
                    }
                }
            }
        }
    }
    let without_bcc = crate::transform::mime::without_fields(message, &["bcc"]);
    (rcpts, without_bcc.unwrap_or_else(|| message.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_and_hides_bcc() {
        let m = b"To: a@x.test, B <b@y.test>\r\nBcc: c@z.test,\r\n d@z.test\r\nSubject: s\r\n\r\nBcc: not a header\r\n";
        let (r, out) = recipients_from_headers(m);
        assert_eq!(r, vec!["a@x.test", "b@y.test", "c@z.test", "d@z.test"]);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "To: a@x.test, B <b@y.test>\r\nSubject: s\r\n\r\nBcc: not a header\r\n"
        );
    }
}
