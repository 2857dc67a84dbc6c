//! The receipt steps at end of DATA, before anything is judged: the MIME limits gate
//! ([`refuse_limits`], [`refuse_hazard`]), Bcc removal ([`without_blind_copies`]) and the
//! header repair ([`complete_header`]). Each takes the bytes as the client sent them (or
//! as the step before left them) and returns the bytes the next step reads.
//!
//! Invariant: a message beyond the limits is refused before any parser that could be
//! hurt by it sees it; the repairs only add or remove whole lines of the header block.

use crate::message::mime;
use crate::pipeline::Refusal;
use crate::smtp::reply::{named, Reply};

/// Refuses a message beyond the MIME limits before any parser sees it (the policy
/// would refuse it too, but the trace headers and the From check parse first).
pub(crate) fn refuse_hazard(message: &[u8]) -> Result<(), Refusal> {
    match mime::hazard_crlf(message) {
        Some(h) => Err(hazard_refusal(h)),
        None => Ok(()),
    }
}

/// The first check of a submission, before the header repair: refuses what is too deep
/// or too costly for any parser, and says whether the structure is read two ways. That
/// verdict waits for the repair ([`complete_header`]): a header block that lost its
/// folding, or text without a header, is ambiguous as sent and has one reading once
/// repaired, and the repaired message is what is judged and relayed.
pub(crate) fn refuse_limits(message: &[u8]) -> Result<bool, Refusal> {
    match mime::hazard_crlf(message) {
        Some(h) if h.is_ambiguous() => Ok(true),
        Some(h) => Err(hazard_refusal(h)),
        None => Ok(false),
    }
}

fn hazard_refusal(h: crate::message::mime::Hazard) -> Refusal {
    let by = crate::policy::verdict::RuleRef::built_in(crate::policy::MIME_LIMITS);
    let text = format!("message refused: {h} ({by})");
    // Structure that readers disagree on is a media error (5.6.0), not a policy one.
    let reply = if h.is_ambiguous() {
        Reply::new(crate::smtp::reply::Class::Permanent, 50, (6, 0), text)
    } else {
        named::policy_reject(text)
    };
    (reply, crate::audit::Detail::limit(&by))
}

/// Lines of a CRLF message from `from` on, lazily: (start, end without the CRLF, start
/// of the next line).
fn lines(message: &[u8], from: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    let mut start = from;
    std::iter::from_fn(move || {
        if start >= message.len() {
            return None;
        }
        let (end, next) = match memchr::memmem::find(&message[start..], b"\r\n") {
            Some(p) => (start + p, start + p + 2),
            None => (message.len(), message.len()),
        };
        let line = (start, end, next);
        start = next;
        Some(line)
    })
}

/// Fields whose presence after an empty first line shows a header block that was cut
/// off by a stray line end, rather than a body that happens to hold a colon.
const MESSAGE_FIELDS: [&str; 7] = [
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
];

fn is_continuation(line: &[u8]) -> bool {
    matches!(line.first(), Some(b' ' | b'\t'))
}

/// Makes the header block what the application meant, or refuses the message (README,
/// "What legacy applications may send"):
/// - the first line is a header field: the header block runs to the first empty line.
///   Inside it, a line that is neither a field nor a continuation is a folded line that
///   lost its leading white space: it is kept, made a continuation again (one space put
///   before it). Without any empty line in the message, such a line that no field
///   follows starts the body instead, and an empty line is put before it (Postfix);
/// - the first line is not a header field (`echo hello | sendmail`): the whole message is
///   body, and an empty line is put before it (Postfix's cleanup does the same);
/// - the first line is empty and the lines after it form a header block naming From, To,
///   Subject, Date, Message-ID, MIME-Version or Content-Type: refused (`550 5.6.0`),
///   since relaying it would send those fields as body text and no From;
/// - a message without From gets `From: <envelope sender>` (`MAILER-DAEMON@hostname`
///   for the null sender); Date and Message-ID are added by [`super::trace::add_trace_headers`].
///
/// Returns the message and what was changed, for the audit log.
pub fn complete_header(
    message: Vec<u8>,
    sender: &str,
    hostname: &str,
) -> Result<(Vec<u8>, Vec<String>), Reply> {
    let mut notes = Vec::new();
    // An mbox "From " line before a header (`sendmail < saved-mail`) is an envelope
    // marker, not content: Postfix's sendmail drops it, and so do we.
    let mut message = message;
    if message.starts_with(b"From ") {
        let next = lines(&message, 0).next().map_or(message.len(), |l| l.2);
        let second = lines(&message, next).next();
        if second.is_some_and(|(s, e, _)| mime::is_field_line(&message[s..e])) {
            notes.push("mbox \"From \" line before the header removed".to_string());
            message.drain(..next);
        }
    }
    let message = message;
    let text = |(s, e, _): (usize, usize, usize)| message.get(s..e).unwrap_or_default();
    // Byte offsets where a space (a continuation restored) or an empty line (the end
    // of the header block) goes in; and where the header block ends.
    let mut spaces_at: Vec<usize> = Vec::new();
    let mut empty_line_at: Option<usize> = None;
    let header_end: usize;
    match lines(&message, 0).next() {
        None => {
            empty_line_at = Some(0);
            header_end = 0;
            notes.push("empty message: header fields added".to_string());
        }
        Some(first) if text(first).is_empty() => {
            header_end = 0;
            let mut block = lines(&message, first.2)
                .map(text)
                .take_while(|l| !l.is_empty())
                .peekable();
            let mut looks_like_header = block.peek().is_some_and(|l| mime::is_field_line(l));
            let mut names_a_message_field = false;
            for l in block {
                if is_continuation(l) {
                    continue;
                }
                if !mime::is_field_line(l) {
                    looks_like_header = false;
                    break;
                }
                names_a_message_field |= MESSAGE_FIELDS.iter().any(|n| {
                    l.len() > n.len()
                        && l[..n.len()].eq_ignore_ascii_case(n.as_bytes())
                        && matches!(l[n.len()], b':' | b' ' | b'\t')
                });
            }
            if looks_like_header && names_a_message_field {
                return Err(Reply::new(
                    crate::smtp::reply::Class::Permanent,
                    50,
                    (6, 0),
                    "message refused: it starts with an empty line and header fields follow it, \
                     so its header block is empty (a doubled line end, such as CR CR LF, before \
                     the header?); relaying it would lose From and the other fields \
                     (pipeline/receipt.rs, header block)",
                ));
            }
        }
        Some(first) if !mime::is_field_line(text(first)) => {
            empty_line_at = Some(0);
            header_end = 0;
            notes.push("no header block: the text became the body of a new header".to_string());
        }
        Some(_) => {
            let block: Vec<(usize, usize, usize)> = lines(&message, 0)
                .take_while(|&l| !text(l).is_empty())
                .collect();
            let terminated = block.last().map_or(0, |l| l.2) < message.len();
            let last_field = block
                .iter()
                .rposition(|&l| mime::is_field_line(text(l)))
                .unwrap_or(0);
            let mut end = block.last().map_or(0, |l| l.2);
            for (i, &l) in block.iter().enumerate().skip(1) {
                let t = text(l);
                if is_continuation(t) || mime::is_field_line(t) {
                    continue;
                }
                if terminated || i < last_field {
                    spaces_at.push(l.0);
                } else {
                    empty_line_at = Some(l.0);
                    end = l.0;
                    notes.push(format!(
                        "header block without an empty line: body starts at line {}",
                        i + 1
                    ));
                    break;
                }
            }
            header_end = end;
            if !spaces_at.is_empty() {
                notes.push(format!(
                    "{} header line(s) without leading white space kept as continuations",
                    spaces_at.len()
                ));
            }
        }
    }
    let has_from = lines(&message[..header_end], 0).map(text).any(|l| {
        l.len() > 4
            && l[..4].eq_ignore_ascii_case(b"from")
            && l[4..].iter().find(|b| !matches!(b, b' ' | b'\t')) == Some(&b':')
    });
    if has_from && spaces_at.is_empty() && empty_line_at.is_none() {
        return Ok((message, notes));
    }
    let mut out = Vec::with_capacity(message.len() + spaces_at.len() + 128);
    if !has_from {
        let from = if sender.is_empty() {
            format!("MAILER-DAEMON@{hostname}")
        } else {
            sender.to_string()
        };
        out.extend_from_slice(format!("From: {from}\r\n").as_bytes());
        notes.push(format!(
            "From: {from} added (the message had no From field)"
        ));
    }
    let mut copied = 0;
    for at in spaces_at {
        out.extend_from_slice(message.get(copied..at).unwrap_or_default());
        out.push(b' ');
        copied = at;
    }
    if let Some(at) = empty_line_at {
        out.extend_from_slice(message.get(copied..at).unwrap_or_default());
        out.extend_from_slice(b"\r\n");
        copied = at;
    }
    out.extend_from_slice(message.get(copied..).unwrap_or_default());
    Ok((out, notes))
}

/// Removes `Bcc` and `Resent-Bcc` fields, as Postfix's cleanup does: the envelope
/// already carries the blind recipients, and a field that travelled would show them to
/// every recipient (an application that writes one and then sends by SMTP is common).
pub fn without_blind_copies(message: Vec<u8>) -> Vec<u8> {
    crate::message::mime::without_fields(&message, &["bcc", "resent-bcc"]).unwrap_or(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blind_copy_fields_do_not_travel() {
        let m = b"From: a@x.test\r\nBcc: hidden@y.test,\r\n other@y.test\r\nTo: b@x.test\r\nRESENT-BCC: r@y.test\r\nSubject: s\r\n\r\nBcc: body text stays\r\n";
        assert_eq!(
            without_blind_copies(m.to_vec()),
            b"From: a@x.test\r\nTo: b@x.test\r\nSubject: s\r\n\r\nBcc: body text stays\r\n"
        );
        let plain = b"From: a@x.test\r\nSubject: Bcc: no\r\n\r\nbody\r\n".to_vec();
        assert_eq!(without_blind_copies(plain.clone()), plain);
        // A body-only message and an empty one pass unchanged.
        assert_eq!(without_blind_copies(b"\r\nbody".to_vec()), b"\r\nbody");
        assert_eq!(without_blind_copies(Vec::new()), b"");
    }

    fn completed(m: &[u8], sender: &str) -> String {
        let (out, _) = complete_header(m.to_vec(), sender, "gw.test").unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn headerless_text_becomes_the_body_of_a_new_header() {
        // echo hello | sendmail: Postfix's rule.
        assert_eq!(
            completed(b"hello\r\nworld\r\n", "cron@x.test"),
            "From: cron@x.test\r\n\r\nhello\r\nworld\r\n"
        );
        // A first line that is not a field, even when a later one looks like one.
        assert_eq!(
            completed(b"Backup failed\r\nError: disk full\r\n", ""),
            "From: MAILER-DAEMON@gw.test\r\n\r\nBackup failed\r\nError: disk full\r\n"
        );
        assert_eq!(completed(b"", "a@x.test"), "From: a@x.test\r\n\r\n");
        assert_eq!(
            completed(b"  indented\r\n", "a@x.test"),
            "From: a@x.test\r\n\r\n  indented\r\n"
        );
        // Starting with an empty line: an empty header block, the rest is body.
        assert_eq!(
            completed(b"\r\nNote: x\r\n", "a@x.test"),
            "From: a@x.test\r\n\r\nNote: x\r\n"
        );
    }

    #[test]
    fn an_empty_line_before_the_header_fields_is_refused() {
        for m in [
            &b"\r\nFrom: a@x.test\r\nSubject: s\r\n\r\nbody\r\n"[..],
            b"\r\nContent-Type: multipart/mixed; boundary=b\r\nMime-Version: 1.0\r\n\r\n--b\r\n",
        ] {
            let r = complete_header(m.to_vec(), "a@x.test", "gw").unwrap_err();
            assert!(r.to_string().starts_with("550 5.6.0"), "{r}");
        }
    }

    #[test]
    fn folded_lines_that_lost_their_white_space_are_kept_as_continuations() {
        let m = b"Received: from a\r\nby b; Mon, 30 Nov 2026 12:00:00 +0000\r\nDKIM-Signature: v=1;\r\nh=from:to;\r\nb=abc\r\nFrom: a@x.test\r\n\r\nbody\r\n";
        let (out, notes) = complete_header(m.to_vec(), "a@x.test", "gw").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Received: from a\r\n by b; Mon, 30 Nov 2026 12:00:00 +0000\r\nDKIM-Signature: v=1;\r\nh=from:to;\r\n b=abc\r\nFrom: a@x.test\r\n\r\nbody\r\n"
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        // No empty line at all: a trailing non-field line starts the body (Postfix).
        assert_eq!(
            completed(
                b"From: a@x.test\r\nSubject: s\r\nhello\r\nworld\r\n",
                "a@x.test"
            ),
            "From: a@x.test\r\nSubject: s\r\n\r\nhello\r\nworld\r\n"
        );
        // A complete message is returned as it was.
        let ok = b"From: a@x.test\r\nSubject: s\r\n\r\nbody\r\n".to_vec();
        assert_eq!(
            complete_header(ok.clone(), "b@x.test", "gw").unwrap(),
            (ok, vec![])
        );
        // An mbox separator before the header is dropped.
        let (out, notes) = complete_header(
            b"From app@x.test Mon Nov 30 12:00:00 2026\r\nFrom: a@x.test\r\n\r\nb\r\n".to_vec(),
            "a@x.test",
            "gw",
        )
        .unwrap();
        assert_eq!(out, b"From: a@x.test\r\n\r\nb\r\n");
        assert_eq!(notes.len(), 1);
        // From is added when only "From " or "From-X:" is there.
        assert!(
            completed(b"Subject: s\r\nFrom-X: y\r\n\r\nb\r\n", "a@x.test")
                .starts_with("From: a@x.test\r\n")
        );
    }

    #[test]
    fn restored_continuations_are_held_to_the_mime_limits() {
        // 1,000 RFC 2231 continuations that lost their leading white space: before the
        // repair no Content-Type field holds them, after it one does.
        let mut m = b"From: a@x.test\r\nContent-Type: text/plain;\r\n".to_vec();
        for i in 0..1000 {
            m.extend_from_slice(format!("name*{i}=\"p\";\r\n").as_bytes());
        }
        m.extend_from_slice(b"\r\nbody\r\n");
        // As sent, the lines are read two ways (not a limits refusal: that waits).
        assert!(matches!(refuse_limits(&m), Ok(true)));
        let (repaired, notes) = complete_header(m, "a@x.test", "gw").unwrap();
        assert_eq!(notes.len(), 1);
        assert!(refuse_hazard(&repaired).is_err());
    }
}
