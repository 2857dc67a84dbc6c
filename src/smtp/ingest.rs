//! From an accepted DATA to spooled outgoing copies: the decisions a session asks for
//! (credentials, sender, recipient), the receipt steps the shared decision path
//! ([`crate::pipeline`]) is built from (limits, header repair, trace headers, header
//! From check), and the durable spool write and audit after it.
//!
//! Invariants: `250` is returned only after every outgoing copy is fsynced; a message
//! is accepted for all its recipients or refused whole; a transform or self-check
//! failure answers `451 4.7.0` and stores nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::audit::{Audit, Cause, Event, Stage};
use crate::clock::rfc5322_date;
use crate::glob::glob_match;
use crate::message::mime;
use crate::metrics::Metrics;
use crate::pipeline::Refusal;
use crate::queue::relay::Relay;
use crate::queue::spool::{self, Envelope, Spool};
use crate::runtime::Runtime;
use crate::smtp::reply::{named, Reply};
use crate::smtp::session::Transaction;

/// Facts about the session a message arrived in.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// `[[client]]` name or `local`.
    pub client: String,
    /// EHLO/HELO name.
    pub helo: String,
    /// Peer address.
    pub peer: SocketAddr,
    /// The session was under STARTTLS.
    pub tls: bool,
}

impl SessionInfo {
    /// Who submitted, as the audit records show it.
    pub fn origin(&self) -> crate::audit::Origin {
        crate::audit::Origin {
            client: self.client.clone(),
            peer: crate::audit::Peer::Net(self.peer),
        }
    }
}

/// The shared end of every session: spool, relay, audit, metrics.
pub struct Ingest {
    /// Where accepted copies are written and fsynced before `250` is sent.
    pub spool: Spool,
    /// Told about the new entries so they are delivered now, not at the next scan.
    pub relay: Arc<Relay>,
    /// Where each acceptance, refusal and deferral at receipt is recorded.
    pub audit: Arc<Audit>,
    /// Counters for accepted and refused messages and failed transforms.
    pub metrics: Arc<Metrics>,
}

/// Verifies AUTH credentials against the `[[client]]` argon2 hashes.
/// An unknown user name costs one argon2 verification too (against another client's
/// hash, whose result is ignored), so the answer's timing does not tell which names exist.
pub fn authenticate(rt: &Runtime, username: &str, password: &str) -> Option<String> {
    use argon2::PasswordVerifier;
    let client = rt.config.clients.iter().find(|c| c.username == username);
    let hash_text = client.or(rt.config.clients.first())?.password_hash.as_str();
    let hash = argon2::PasswordHash::new(hash_text).ok()?;
    let verified = argon2::Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_ok();
    client.filter(|_| verified).map(|c| c.name.clone())
}

fn allowed_senders<'a>(rt: &'a Runtime, client: &str) -> Option<&'a [String]> {
    rt.config
        .clients
        .iter()
        .find(|c| c.name == client)
        .map(|c| c.allowed_senders.as_slice())
        .filter(|s| !s.is_empty())
}

/// May `client` use `sender`? Clients with `allowed_senders` are held to them; and a
/// sender whose bounces could go nowhere (not an approved recipient, no `[server]
/// postmaster`) is refused now rather than found out when a DSN is due.
pub fn check_sender(rt: &Runtime, client: &str, sender: &str) -> Result<(), Reply> {
    match allowed_senders(rt, client) {
        Some(globs) if !globs.iter().any(|g| glob_match(g, sender)) => {
            return Err(named::sender_not_allowed(sender, client))
        }
        _ => {}
    }
    if sender.is_empty() {
        return Ok(());
    }
    match crate::queue::dsn::route(rt, client, sender) {
        crate::queue::dsn::Route::Nowhere { why } => Err(Reply::new(
            crate::smtp::reply::Class::Permanent,
            50,
            (7, 1),
            format!("<{sender}>: sender not approved as a bounce recipient: {why}"),
        )),
        _ => Ok(()),
    }
}

/// RCPT-time policy for one recipient: allow/deny lists and content-free rules.
pub fn check_recipient(rt: &Runtime, client: &str, sender: &str, rcpt: &str) -> Result<(), Reply> {
    let env = crate::policy::Envelope {
        client,
        from: sender,
    };
    let keys = rt.keys();
    let has_cert = |a: &str| keys.has_key(a);
    rt.policy
        .judge_rcpt(&env, rcpt, &has_cert)
        .map_err(|r| named::policy_reject(format!("<{rcpt}>: {} ({})", r.reason, r.by)))
}

/// A client with `allowed_senders` may only use them in the header From too, in every
/// From field; a field without an address is refused for such a client.
/// For every client, a From field that readers could read as another address is
/// refused first ([`crate::transform::header_from_problem`]).
pub(crate) fn check_header_from(rt: &Runtime, client: &str, message: &[u8]) -> Result<(), Reply> {
    if let Some(why) = crate::transform::header_from_problem(message) {
        return Err(Reply::new(
            crate::smtp::reply::Class::Permanent,
            50,
            (6, 0),
            format!("{why} (built-in header From check)"),
        ));
    }
    let Some(globs) = allowed_senders(rt, client) else {
        return Ok(());
    };
    let refuse = |why: String| {
        Err(Reply::new(
            crate::smtp::reply::Class::Permanent,
            50,
            (7, 1),
            why,
        ))
    };
    for field in crate::transform::header_from_fields(message) {
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

/// Refuses a message beyond the MIME limits before any parser sees it (the policy
/// would refuse it too, but the trace headers and the From check parse first).
pub(crate) fn refuse_hazard(message: &[u8]) -> Result<(), Refusal> {
    match crate::message::mime::hazard(message) {
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
    match crate::message::mime::hazard(message) {
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

/// The header block's end (index of the blank line's CRLF), if any.
fn header_end(message: &[u8]) -> Option<usize> {
    if message.starts_with(b"\r\n") {
        return Some(0);
    }
    message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 2)
}

fn has_header(headers: &[u8], name: &str) -> bool {
    headers.split(|&b| b == b'\n').any(|l| {
        l.len() > name.len()
            && l[..name.len()].eq_ignore_ascii_case(name.as_bytes())
            && l[name.len()] == b':'
    })
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
///   for the null sender); Date and Message-ID are added by [`add_trace_headers`].
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
                     (ingest.rs, header block)",
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

/// Adds `Received`, and `Date`/`Message-ID` when missing (RFC 6409 §8.2, §8.3).
/// Returns the new message and its Message-ID.
pub fn add_trace_headers(
    message: &[u8],
    info: &SessionInfo,
    hostname: &str,
    id: &str,
    rcpts: &[String],
) -> (Vec<u8>, Option<String>) {
    let now = crate::clock::unix_now() as i64;
    let headers = match header_end(message) {
        Some(e) => &message[..e],
        None => message,
    };
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
    let parsed_id = mail_parser::MessageParser::new()
        .parse_headers(message)
        .and_then(|m| m.message_id().map(|s| format!("<{s}>")));
    let mut message_id = parsed_id;
    let mut extra = String::new();
    if !has_header(headers, "Date") {
        extra.push_str(&format!("Date: {}\r\n", rfc5322_date(now)));
    }
    if !has_header(headers, "Message-ID") {
        let mid = format!("<{id}@{hostname}>");
        extra.push_str(&format!("Message-ID: {mid}\r\n"));
        message_id = Some(mid);
    }
    let mut out = Vec::with_capacity(message.len() + top.len() + extra.len());
    top.push_str(&extra);
    out.extend_from_slice(top.as_bytes());
    if header_end(message).is_none() && !message.is_empty() && !has_colon_first_line(message) {
        // No header block at all: the message is body only; separate it.
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(message);
    (out, message_id)
}

fn has_colon_first_line(message: &[u8]) -> bool {
    let first = message.split(|&b| b == b'\n').next().unwrap_or(b"");
    first
        .iter()
        .position(|&b| b == b':')
        .is_some_and(|i| i > 0 && first[..i].iter().all(|&b| b.is_ascii_graphic()))
}

fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(255)
        .collect()
}

impl Ingest {
    /// End of DATA: decide, transform, spool, reply.
    pub async fn accept(
        &self,
        rt: &Arc<Runtime>,
        info: &SessionInfo,
        tx: Transaction,
        message: Vec<u8>,
    ) -> Reply {
        let id = spool::new_id();
        // Everything CPU- or disk-bound happens in one blocking task: trace headers,
        // policy, transforms, DKIM and the durable write.
        let outcome = {
            let (rt, info, tx, id, spool) = (
                rt.clone(),
                info.clone(),
                tx.clone(),
                id.clone(),
                self.spool.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let decided = crate::pipeline::decide(&rt, &info, &tx, &id, message)?;
                let refs: Vec<(Envelope, &[u8])> = decided
                    .copies
                    .iter()
                    .map(|(e, m)| (e.clone(), m.as_slice()))
                    .collect();
                let stored = spool.store(&refs);
                Ok::<_, Refusal>((decided, stored))
            })
            .await
        };
        let decided = match outcome {
            Ok(Ok((d, Ok(())))) => d,
            Ok(Ok((_, Err(e)))) => {
                tracing::error!("spool write failed: {e}");
                let reply = named::local_error("cannot write to the spool");
                self.deferred(
                    info,
                    &tx,
                    &reply,
                    Cause::Spool {
                        spool: e.to_string(),
                    },
                );
                return reply;
            }
            Ok(Err((reply, why))) => {
                let why = Cause::Decided {
                    detail: why,
                    policy_version: rt.policy.version().to_string(),
                };
                if reply.is_permanent() {
                    self.rejected(info, &tx, &reply, why);
                } else {
                    self.metrics
                        .transform_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.deferred(info, &tx, &reply, why);
                }
                return reply;
            }
            Err(e) => {
                tracing::error!("message processing task failed: {e}");
                let reply = named::local_error("message processing failed");
                self.deferred(
                    info,
                    &tx,
                    &reply,
                    Cause::Task {
                        task: e.to_string(),
                    },
                );
                return reply;
            }
        };
        let ids: Vec<String> = decided.copies.iter().map(|(e, _)| e.id.clone()).collect();
        self.metrics
            .messages_accepted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some((e, _)) = decided.copies.first() {
            self.audit.record(&Event::Received {
                entry: crate::audit::Entry {
                    queue_id: id.clone(),
                    message_id: e.message_id.clone(),
                    from: e.from.clone(),
                    policy_version: Some(rt.policy.version().to_string()),
                },
                origin: info.origin(),
                tls: info.tls,
                rcpts: tx.rcpts,
                copies: decided.audit,
                repairs: decided.repairs,
            });
        }
        self.relay.schedule_now(&ids);
        named::queued(&id)
    }

    /// Records a temporary refusal (4xx) at end of DATA.
    fn deferred(&self, info: &SessionInfo, tx: &Transaction, reply: &Reply, why: Cause) {
        self.audit.record(&Event::DeferredAtReceipt {
            stage: Stage::Data,
            envelope: tx.audit_envelope(),
            origin: info.origin(),
            reply: reply.to_string(),
            why,
        });
    }

    /// Records a refusal at end of DATA.
    pub fn rejected(&self, info: &SessionInfo, tx: &Transaction, reply: &Reply, rules: Cause) {
        self.metrics
            .messages_rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.audit.record(&Event::RefusedData {
            stage: Stage::Data,
            envelope: tx.audit_envelope(),
            origin: info.origin(),
            reply: reply.to_string(),
            rules,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*@example.com", "Billing@Example.com"));
        assert!(!glob_match("*@example.com", "a@example.com.evil"));
        assert!(glob_match("a?c@x", "abc@x"));
    }

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

    #[test]
    fn trace_headers_added_once() {
        let info = SessionInfo {
            client: "local".into(),
            helo: "app".into(),
            peer: "127.0.0.1:1000".parse().unwrap(),
            tls: false,
        };
        let (m, mid) = add_trace_headers(
            b"Subject: x\r\n\r\nbody\r\n",
            &info,
            "gw",
            "ID1",
            &["a@b".into()],
        );
        let text = String::from_utf8(m).unwrap();
        assert!(text.starts_with("Received: from app (localhost [127.0.0.1])"));
        assert!(text.contains("Message-ID: <ID1@gw>\r\n"));
        assert_eq!(mid.as_deref(), Some("<ID1@gw>"));
        assert!(text.ends_with("Subject: x\r\n\r\nbody\r\n"));
        let (m2, mid2) = add_trace_headers(
            b"Message-ID: <k@l>\r\nDate: x\r\n\r\nb",
            &info,
            "gw",
            "ID2",
            &[],
        );
        assert_eq!(mid2.as_deref(), Some("<k@l>"));
        assert_eq!(
            String::from_utf8(m2).unwrap().matches("Message-ID").count(),
            1
        );
    }
}
