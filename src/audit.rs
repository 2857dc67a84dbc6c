//! The audit log: one JSON line per state change of a message (received, rejected,
//! relayed, deferred, bounced, quarantined) and per configuration reload.
//!
//! It must never contain a message body, a password or key material: callers pass
//! envelope facts, rule names, replies and hashes only. Records are appended with
//! `O_APPEND`, one `write` each, so concurrent writers never interleave lines.
//! Invariant: a record is one line of plain text: control characters, line separators
//! and bidirectional controls inside values are written as JSON escapes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use serde_json::{Map, Value};

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

    /// Appends one record `{"ts":..., "event": event, ...fields}`.
    pub fn record(&self, event: &str, fields: Value) {
        let mut obj = Map::new();
        obj.insert("ts".into(), Value::String(crate::clock::rfc3339_now()));
        obj.insert("event".into(), Value::String(event.to_string()));
        if let Value::Object(m) = fields {
            obj.extend(m);
        }
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
        a.record("one", serde_json::json!({}));
        std::fs::rename(&p, d.path().join("a.jsonl.1")).unwrap();
        a.reopen().unwrap();
        a.record("two", serde_json::json!({}));
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
        a.record("received", serde_json::json!({"from": from}));
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
        a.record("received", serde_json::json!({"queue_id": "X"}));
        a.record("relayed", serde_json::json!({"queue_id": "X"}));
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["event"], "relayed");
    }
}
