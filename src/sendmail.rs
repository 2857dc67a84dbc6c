//! The sendmail-compatible entry point's message handling: `-t` recipient extraction.
//!
//! Submission itself goes through [`crate::submit`] to the local listener, so a message
//! from `sendmail` meets exactly the same policy as one sent over SMTP.

/// Recipients from To, Cc and Bcc; returns them and the message without Bcc headers.
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
    (rcpts, remove_header(message, "bcc"))
}

/// Removes every occurrence (with continuation lines) of a header from the header block.
fn remove_header(message: &[u8], name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    let mut in_headers = true;
    let mut skipping = false;
    let mut rest = message;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| i + 1)
            .unwrap_or(rest.len());
        let line = &rest[..end];
        rest = &rest[end..];
        if in_headers {
            if line == b"\r\n" || line == b"\n" {
                in_headers = false;
                out.extend_from_slice(line);
                continue;
            }
            let continuation = line.first().is_some_and(|&b| b == b' ' || b == b'\t');
            if !continuation {
                skipping = line.len() > name.len()
                    && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
                    && line[name.len()] == b':';
            }
            if skipping {
                continue;
            }
        }
        out.extend_from_slice(line);
    }
    out
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
