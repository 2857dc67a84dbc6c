//! The audit log: one JSON line per state change of a message (received, rejected,
//! relayed, deferred, bounced, quarantined, deleted) and per start, stop and
//! configuration reload.
//!
//! The whole record schema is [`Event`]: every record written is one of its variants,
//! so what a record can hold is decided here, in types. Records are appended with
//! `O_APPEND`, one `write` each, so concurrent writers never interleave lines.
//! Invariant: a record is one line of plain text: control characters, line separators
//! and bidirectional controls inside values are written as JSON escapes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

use crate::policy::verdict::{Actions, RuleRef};

/// One audit record, without its `ts`. Serialized with its name as `event` and its
/// fields as the record's keys (sorted, as every record always was).
///
/// Invariant: no variant has a field that can carry a message body, a password or key
/// material: fields are envelope addresses, queue ids, Message-IDs, rule references,
/// replies (ours or the upstream's), counts, TLS parameters and audit-safe notes
/// (attachment names and SHA-256, certificates used). There is no free-form JSON value
/// and no byte buffer here; a new fact needs a typed field, reviewed as such.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// `serve` is up.
    Started {
        /// The addresses listened on.
        listen: Vec<String>,
        /// The configuration file.
        config: String,
        /// Spool entries found at start.
        queued: usize,
    },
    /// `serve` stopped after draining.
    Stopped,
    /// A reload (SIGHUP or a changed file) took effect.
    Reloaded {
        /// The configuration file.
        config: String,
        /// The policy version now in force.
        policy_version: String,
    },
    /// A reload failed; the running configuration stays.
    ReloadFailed {
        /// Why, as the configuration loader said it.
        error: String,
    },
    /// A message was accepted at end of DATA and spooled (`250`).
    Received {
        /// The message; `queue_id` is the base id of its copies.
        #[serde(flatten)]
        entry: Entry,
        /// Who submitted it.
        #[serde(flatten)]
        origin: Origin,
        /// The session was under STARTTLS.
        tls: bool,
        /// The envelope recipients as accepted.
        rcpts: Vec<String>,
        /// One fact per spooled copy.
        copies: Vec<Copy>,
        /// The repairs made to the message at receipt.
        repairs: Vec<String>,
    },
    /// A refused AUTH.
    #[serde(rename = "rejected")]
    RefusedAuth {
        /// Always [`Stage::Auth`].
        stage: Stage,
        /// The user name tried (never the password).
        username: String,
        /// Where the session came from.
        peer: Peer,
    },
    /// A MAIL, RCPT or DATA command refused by the session itself (bad parameter, SIZE
    /// over the limit, too many recipients, out of sequence).
    #[serde(rename = "rejected")]
    RefusedCommand {
        /// The command's verb.
        stage: Stage,
        /// The command line, cut at 300 characters (MAIL, RCPT or DATA: no secret).
        command: String,
        /// Who sent it.
        #[serde(flatten)]
        origin: Origin,
        /// Our reply.
        reply: String,
    },
    /// A MAIL or RCPT address refused by the listener's address rules.
    #[serde(rename = "rejected")]
    RefusedAddress {
        /// [`Stage::Mail`] or [`Stage::Rcpt`].
        stage: Stage,
        /// The address as given.
        address: String,
        /// Who sent it.
        #[serde(flatten)]
        origin: Origin,
        /// Our reply.
        reply: String,
    },
    /// A sender the client may not use (MAIL).
    #[serde(rename = "rejected")]
    RefusedSender {
        /// Always [`Stage::Mail`].
        stage: Stage,
        /// The reverse-path.
        from: String,
        /// Who sent it.
        #[serde(flatten)]
        origin: Origin,
        /// Our reply.
        reply: String,
    },
    /// A recipient the policy refuses (RCPT).
    #[serde(rename = "rejected")]
    RefusedRecipient {
        /// Always [`Stage::Rcpt`].
        stage: Stage,
        /// The sender and the one refused recipient.
        #[serde(flatten)]
        envelope: Envelope,
        /// Who sent it.
        #[serde(flatten)]
        origin: Origin,
        /// Our reply.
        reply: String,
        /// The policy version that decided.
        policy_version: String,
    },
    /// A message refused at end of DATA (5xx).
    #[serde(rename = "rejected")]
    RefusedData {
        /// Always [`Stage::Data`].
        stage: Stage,
        /// The transaction's envelope.
        #[serde(flatten)]
        envelope: Envelope,
        /// Who sent it.
        #[serde(flatten)]
        origin: Origin,
        /// Our reply.
        reply: String,
        /// What decided.
        rules: Cause,
    },
    /// A message deferred at end of DATA (4xx): nothing was queued.
    DeferredAtReceipt {
        /// Always [`Stage::Data`].
        stage: Stage,
        /// The transaction's envelope.
        #[serde(flatten)]
        envelope: Envelope,
        /// Who sent it.
        #[serde(flatten)]
        origin: Origin,
        /// Our reply.
        reply: String,
        /// What failed.
        why: Cause,
    },
    /// A maildrop file refused when collected (the refusals at end of DATA are
    /// [`Event::RefusedData`]).
    #[serde(rename = "rejected")]
    RefusedMaildrop {
        /// Where it was refused.
        stage: Stage,
        /// Always [`Peer::Maildrop`].
        peer: Peer,
        /// The maildrop file name.
        file: String,
        /// The file owner's uid, once the file was opened.
        uid: Option<u32>,
        /// Always `local`.
        client: String,
        /// The envelope sender, once the envelope was read.
        from: Option<String>,
        /// The envelope recipients, once the envelope was read.
        rcpts: Option<Vec<String>>,
        /// Why, as an SMTP reply or a short reason.
        reply: String,
        /// The policy version in force.
        policy_version: String,
    },
    /// The bounce of a refused maildrop message went nowhere (the recipient policy
    /// allows neither its sender nor the postmaster).
    BounceSuppressed {
        /// Always [`Peer::Maildrop`].
        peer: Peer,
        /// The file owner's uid.
        uid: Option<u32>,
        /// The sender that would have been told.
        to: String,
        /// Why.
        reason: String,
    },
    /// The bounce of a refused maildrop message goes to the postmaster.
    BounceRerouted {
        /// Always [`Peer::Maildrop`].
        peer: Peer,
        /// The file owner's uid.
        uid: Option<u32>,
        /// The sender that is not told.
        from: String,
        /// Where the bounce goes instead.
        to: String,
        /// Why.
        reason: String,
    },
    /// A DSN was queued for a refused maildrop message.
    #[serde(rename = "bounced")]
    BouncedMaildrop {
        /// The DSN's queue id.
        queue_id: String,
        /// Always [`Peer::Maildrop`].
        peer: Peer,
        /// The file owner's uid.
        uid: Option<u32>,
        /// Where the DSN goes.
        to: String,
        /// The recipients reported.
        rcpts: Vec<String>,
        /// Why the message was refused.
        reply: String,
    },
    /// Recipients of a spooled message were delivered.
    Relayed {
        /// The spool entry.
        #[serde(flatten)]
        entry: Entry,
        /// The recipients delivered by this attempt.
        rcpts: Vec<String>,
        /// The upstream host.
        upstream: String,
        /// The upstream's last `250`.
        reply: String,
        /// The TLS version of the upstream session (empty without TLS).
        tls_version: String,
        /// The cipher suite (empty without TLS).
        cipher: String,
        /// Attempts so far, this one included.
        attempts: u32,
    },
    /// Recipients of a spooled message failed temporarily and will be retried.
    Deferred {
        /// The spool entry.
        #[serde(flatten)]
        entry: Entry,
        /// The recipients deferred.
        rcpts: Vec<String>,
        /// The first deferred recipient's reason.
        reason: Option<String>,
        /// Attempts so far, this one included.
        attempts: u32,
        /// When the next attempt is due.
        retry_in_seconds: u64,
        /// The TLS version; `None` when no TLS session was up.
        tls_version: Option<String>,
        /// The cipher suite; `None` when no TLS session was up.
        cipher: Option<String>,
    },
    /// Recipients of a spooled message failed for good.
    Bounced {
        /// The spool entry.
        #[serde(flatten)]
        entry: Entry,
        /// The failed recipients.
        rcpts: Vec<String>,
        /// Per recipient, what the upstream said or why we gave up.
        reasons: Vec<String>,
        /// The DSN's queue id; `None` when no DSN is sent.
        dsn: Option<String>,
        /// Where the DSN goes.
        dsn_to: Option<String>,
        /// Why no DSN is sent, or why it goes to the postmaster.
        note: Option<String>,
    },
    /// A damaged spool entry was moved to `corrupt/`.
    Quarantined {
        /// The entry.
        queue_id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A spool entry was deleted by an operator.
    Deleted {
        /// The entry.
        queue_id: String,
        /// The command that deleted it.
        by: &'static str,
    },
}

/// Where a refusal happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// AUTH.
    Auth,
    /// A maildrop session's EHLO.
    Ehlo,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA, or the end of DATA.
    Data,
    /// A maildrop file's DATA command (before any content).
    DataCommand,
    /// A maildrop file that could not be read or parsed.
    Maildrop,
    /// A maildrop message refused by the session before DATA.
    Message,
    /// A maildrop message deferred for longer than `give_up_after`.
    Expired,
}

impl Stage {
    /// The stage as records and logs name it.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Auth => "auth",
            Stage::Ehlo => "ehlo",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::DataCommand => "data-command",
            Stage::Maildrop => "maildrop",
            Stage::Message => "message",
            Stage::Expired => "expired",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Stage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Where a session came from: `127.0.0.1:40000`, or `maildrop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A network client.
    Net(SocketAddr),
    /// A file from the maildrop directory.
    Maildrop,
}

impl Serialize for Peer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Peer::Net(a) => s.collect_str(a),
            Peer::Maildrop => s.serialize_str("maildrop"),
        }
    }
}

/// Who submitted: the `client` and `peer` of a record.
#[derive(Debug, Clone, Serialize)]
pub struct Origin {
    /// `[[client]]` name, `local`, or empty before AUTH.
    pub client: String,
    /// Where the session came from.
    pub peer: Peer,
}

/// A transaction's envelope: the `from` and `rcpts` of a record.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope {
    /// The reverse-path; empty for the null sender.
    pub from: String,
    /// The forward-paths.
    pub rcpts: Vec<String>,
}

/// A spooled message as the queue records name it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// The spool id.
    pub queue_id: String,
    /// The Message-ID, if the message has one.
    pub message_id: Option<String>,
    /// The envelope sender.
    pub from: String,
    /// The policy version that decided it (none for a DSN).
    pub policy_version: Option<String>,
}

/// One spooled copy of a received message (`copies` of [`Event::Received`]).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Copy {
    /// A copy of the message for some of its recipients.
    Message {
        /// Its spool id.
        queue_id: String,
        /// The recipients it goes to.
        rcpts: Vec<String>,
        /// What was done to it.
        actions: Actions,
        /// Per recipient, the names of the rules that matched.
        rules: Vec<Vec<String>>,
        /// Audit-safe notes of the plan and the transforms.
        notes: Vec<String>,
        /// Its size in bytes, DKIM-signed.
        size: usize,
    },
    /// The password message of a zip.
    Password {
        /// Its spool id.
        queue_id: String,
        /// Where the password goes.
        rcpts: Vec<String>,
        /// Always [`CopyKind::Password`].
        kind: CopyKind,
    },
}

/// What an extra copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyKind {
    /// The password of a zip.
    Password,
}

/// Why a message was refused or deferred at end of DATA (`rules` and `why`).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Cause {
    /// A limit the listener enforces while receiving (`max_message_size`,
    /// `bare_line_endings`).
    Limit {
        /// Always [`Stage::Data`].
        stage: Stage,
        /// The limit's configuration key.
        detail: &'static str,
    },
    /// The decision path refused or failed.
    Decided {
        /// What decided.
        detail: Detail,
        /// The policy version in force.
        policy_version: String,
    },
    /// The spool write failed.
    Spool {
        /// The error.
        spool: String,
    },
    /// The processing task failed.
    Task {
        /// The error.
        task: String,
    },
}

/// What in the decision path refused a message (`detail` of [`Cause::Decided`]).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Detail {
    /// The reply names the check (the header From check): `null`.
    InReply,
    /// A receipt check, e.g. `header block`.
    Check {
        /// The check.
        check: &'static str,
    },
    /// A built-in limit (the MIME limits).
    Limit {
        /// The limit's name.
        rule: String,
        /// Its pseudo file.
        file: String,
    },
    /// A policy rule refused the message for a recipient.
    Rule {
        /// The recipient.
        rcpt: String,
        /// The rule's name.
        rule: String,
        /// Its policy file.
        file: String,
    },
    /// Planning refused a recipient (no certificate, ...).
    Unplanned {
        /// The recipient.
        rcpt: String,
        /// Why.
        refused: String,
    },
    /// The 7-bit conversion refused the message.
    SevenBit {
        /// Why.
        seven_bit: String,
    },
    /// A transform failed.
    Transform {
        /// The error.
        transform: String,
    },
    /// DKIM signing failed.
    Dkim {
        /// The error.
        dkim: String,
    },
}

impl Detail {
    /// A built-in limit's record fields.
    pub fn limit(by: &RuleRef) -> Detail {
        Detail::Limit {
            rule: by.rule.clone(),
            file: by.file.clone(),
        }
    }
}

/// Where audit records go.
#[derive(Debug)]
pub struct Audit {
    /// The JSON-lines file; `None` sends records to the tracing log only.
    file: Option<Mutex<File>>,
    /// Where `file` lives, so SIGHUP can reopen it after logrotate moved it.
    path: Option<std::path::PathBuf>,
    /// The last write failed and may have left a partial line (a full disk): the next
    /// record starts on a new line so that it does not merge with the fragment.
    broken: std::sync::atomic::AtomicBool,
}

fn open_append(p: &Path) -> std::io::Result<File> {
    if let Some(parent) = p.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)?;
        }
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(p)
}

impl Audit {
    /// Opens (creating, mode 0640) the audit file, or logs only when `path` is `None`.
    pub fn open(path: Option<&Path>) -> std::io::Result<Audit> {
        let file = match path {
            Some(p) => Some(Mutex::new(open_append(p)?)),
            None => None,
        };
        Ok(Audit {
            file,
            path: path.map(Path::to_path_buf),
            broken: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Reopens the file at the same path (after logrotate moved the old one away).
    pub fn reopen(&self) -> std::io::Result<()> {
        if let (Some(f), Some(p)) = (&self.file, &self.path) {
            let new = open_append(p)?;
            *f.lock().unwrap_or_else(|e| e.into_inner()) = new;
        }
        Ok(())
    }

    /// Appends one record `{"ts":..., "event": ..., ...fields}`.
    pub fn record(&self, event: &Event) {
        // A map of string keys to plain values: serializing it cannot fail.
        let mut obj = match serde_json::to_value(event) {
            Ok(Value::Object(m)) => m,
            Ok(_) | Err(_) => {
                tracing::error!("audit record not serializable: {event:?}");
                return;
            }
        };
        obj.insert("ts".into(), Value::String(crate::clock::rfc3339_now()));
        let mut line = json_for_logs(&Value::Object(obj).to_string()).into_owned();
        if self.file.is_some() {
            tracing::debug!(target: "audit", "{line}");
        } else {
            tracing::info!(target: "audit", "{line}");
        }
        line.push('\n');
        if let Some(f) = &self.file {
            // A poisoned lock only means another writer panicked mid-record; keep auditing.
            use std::sync::atomic::Ordering;
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            if self.broken.load(Ordering::Relaxed) {
                line.insert(0, '\n');
            }
            match f.write_all(line.as_bytes()) {
                Ok(()) => self.broken.store(false, Ordering::Relaxed),
                Err(e) => {
                    self.broken.store(true, Ordering::Relaxed);
                    tracing::error!("audit log write failed: {e}");
                }
            }
        }
    }
}

/// A serialized JSON record with DEL, the C1 controls, the line and paragraph separators
/// and the bidirectional controls written as `\uXXXX` (serde_json escapes only C0): the
/// record decodes to the same values, and a log viewer or terminal showing the raw line
/// neither breaks it nor reorders it. Those characters occur only inside JSON strings,
/// where the escape means the same character.
pub fn json_for_logs(line: &str) -> std::borrow::Cow<'_, str> {
    if !crate::escape::has_hazard(line) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if crate::escape::is_hazard(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_follows_logrotate() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.jsonl");
        let a = Audit::open(Some(&p)).unwrap();
        a.record(&Event::Stopped);
        std::fs::rename(&p, d.path().join("a.jsonl.1")).unwrap();
        a.reopen().unwrap();
        a.record(&quarantined("two"));
        assert!(std::fs::read_to_string(&p).unwrap().contains("\"two\""));
        assert!(!std::fs::read_to_string(d.path().join("a.jsonl.1"))
            .unwrap()
            .contains("\"two\""));
    }

    #[test]
    fn separators_and_bidi_controls_are_escaped_in_records() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.jsonl");
        let a = Audit::open(Some(&p)).unwrap();
        let from = "a\u{2028}b\u{202e}c\u{85}d\u{7f}e\u{1b}@x.example";
        a.record(&Event::RefusedSender {
            stage: Stage::Mail,
            from: from.into(),
            origin: origin(),
            reply: "550 5.7.1 no".into(),
        });
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(!crate::escape::has_hazard(text.trim_end()), "{text:?}");
        assert!(
            text.contains("\\u2028") && text.contains("\\u202e"),
            "{text}"
        );
        let v: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["from"], from);
    }

    #[test]
    fn records_are_json_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.jsonl");
        let a = Audit::open(Some(&p)).unwrap();
        a.record(&quarantined("X"));
        a.record(&Event::Deleted {
            queue_id: "X".into(),
            by: "test",
        });
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["event"], "deleted");
        assert_eq!(lines[0]["queue_id"], "X");
    }

    fn quarantined(id: &str) -> Event {
        Event::Quarantined {
            queue_id: id.into(),
            reason: "bad".into(),
        }
    }

    fn origin() -> Origin {
        Origin {
            client: "billing".into(),
            peer: Peer::Net("127.0.0.1:4000".parse().unwrap()),
        }
    }

    fn entry() -> Entry {
        Entry {
            queue_id: "Q1".into(),
            message_id: Some("<m@x>".into()),
            from: "a@x.test".into(),
            policy_version: None,
        }
    }

    /// The record as written, without its timestamp.
    fn written(e: &Event) -> Value {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.jsonl");
        Audit::open(Some(&p)).unwrap().record(e);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let mut v: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert!(v["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
        v.as_object_mut().unwrap().remove("ts");
        v
    }

    #[test]
    fn typed_records_keep_the_schema_of_the_json_records() {
        use serde_json::json;
        let actions = Actions::sign();
        let cases = vec![
            (
                Event::Received {
                    entry: Entry {
                        policy_version: Some("v1".into()),
                        ..entry()
                    },
                    origin: origin(),
                    tls: true,
                    rcpts: vec!["b@y.test".into()],
                    copies: vec![
                        Copy::Message {
                            queue_id: "Q1-1".into(),
                            rcpts: vec!["b@y.test".into()],
                            actions: actions.clone(),
                            rules: vec![vec!["sign-all".into()]],
                            notes: vec![],
                            size: 42,
                        },
                        Copy::Password {
                            queue_id: "Q1-p1".into(),
                            rcpts: vec!["a@x.test".into()],
                            kind: CopyKind::Password,
                        },
                    ],
                    repairs: vec!["bare LF".into()],
                },
                json!({"event": "received", "queue_id": "Q1", "message_id": "<m@x>", "from": "a@x.test",
                       "client": "billing", "peer": "127.0.0.1:4000", "tls": true,
                       "rcpts": ["b@y.test"], "policy_version": "v1",
                       "copies": [{"queue_id": "Q1-1", "rcpts": ["b@y.test"], "actions": actions,
                                   "rules": [["sign-all"]], "notes": [], "size": 42},
                                  {"queue_id": "Q1-p1", "rcpts": ["a@x.test"], "kind": "password"}],
                       "repairs": ["bare LF"]}),
            ),
            (
                Event::RefusedData {
                    stage: Stage::Data,
                    envelope: Envelope {
                        from: "a@x.test".into(),
                        rcpts: vec!["b@y.test".into()],
                    },
                    origin: origin(),
                    reply: "550 5.7.1 no".into(),
                    rules: Cause::Decided {
                        detail: Detail::Rule {
                            rcpt: "b@y.test".into(),
                            rule: "r".into(),
                            file: "policies/f.toml".into(),
                        },
                        policy_version: "v1".into(),
                    },
                },
                json!({"event": "rejected", "stage": "data", "from": "a@x.test", "rcpts": ["b@y.test"],
                       "client": "billing", "peer": "127.0.0.1:4000", "reply": "550 5.7.1 no",
                       "rules": {"detail": {"rcpt": "b@y.test", "rule": "r", "file": "policies/f.toml"},
                                 "policy_version": "v1"}}),
            ),
            (
                Event::DeferredAtReceipt {
                    stage: Stage::Data,
                    envelope: Envelope {
                        from: String::new(),
                        rcpts: vec![],
                    },
                    origin: origin(),
                    reply: "451 4.3.0 x".into(),
                    why: Cause::Decided {
                        detail: Detail::InReply,
                        policy_version: "v1".into(),
                    },
                },
                json!({"event": "deferred-at-receipt", "stage": "data", "from": "", "rcpts": [],
                       "client": "billing", "peer": "127.0.0.1:4000", "reply": "451 4.3.0 x",
                       "why": {"detail": null, "policy_version": "v1"}}),
            ),
            (
                Event::RefusedData {
                    stage: Stage::Data,
                    envelope: Envelope {
                        from: "a@x.test".into(),
                        rcpts: vec![],
                    },
                    origin: origin(),
                    reply: "552".into(),
                    rules: Cause::Limit {
                        stage: Stage::Data,
                        detail: "max_message_size",
                    },
                },
                json!({"event": "rejected", "stage": "data", "from": "a@x.test", "rcpts": [],
                       "client": "billing", "peer": "127.0.0.1:4000", "reply": "552",
                       "rules": {"stage": "data", "detail": "max_message_size"}}),
            ),
            (
                Event::RefusedMaildrop {
                    stage: Stage::DataCommand,
                    peer: Peer::Maildrop,
                    file: "a.mail".into(),
                    uid: None,
                    client: "local".into(),
                    from: None,
                    rcpts: None,
                    reply: "bad".into(),
                    policy_version: "v1".into(),
                },
                json!({"event": "rejected", "stage": "data-command", "peer": "maildrop", "file": "a.mail",
                       "uid": null, "client": "local", "from": null, "rcpts": null, "reply": "bad",
                       "policy_version": "v1"}),
            ),
            (
                Event::Deferred {
                    entry: entry(),
                    rcpts: vec!["b@y.test".into()],
                    reason: Some("421".into()),
                    attempts: 2,
                    retry_in_seconds: 60,
                    tls_version: None,
                    cipher: None,
                },
                json!({"event": "deferred", "queue_id": "Q1", "message_id": "<m@x>", "from": "a@x.test",
                       "policy_version": null, "rcpts": ["b@y.test"], "reason": "421", "attempts": 2,
                       "retry_in_seconds": 60, "tls_version": null, "cipher": null}),
            ),
            (
                Event::Started {
                    listen: vec!["127.0.0.1:25".into()],
                    config: "c.toml".into(),
                    queued: 0,
                },
                json!({"event": "started", "listen": ["127.0.0.1:25"], "config": "c.toml", "queued": 0}),
            ),
            (Event::Stopped, json!({"event": "stopped"})),
        ];
        for (event, old) in cases {
            assert_eq!(written(&event), old, "{event:?}");
            // Same keys in the same (sorted) order: the same line as before.
            assert_eq!(
                serde_json::to_string(&written(&event)).unwrap(),
                old.to_string()
            );
        }
    }
}
