//! The queue commands: `sealgate queue list | show | retry | delete`, and sendmail's
//! `-bp` (`mailq`) and `-q`. Each reads or changes the spool and gives back the report
//! as text; `src/cli.rs` prints it and maps [`QueueError`] to an exit code.
//!
//! The commands look at a spool; they never create one (a mistyped `dir` would otherwise
//! report an empty queue). Everything in a report that came from clients or the upstream
//! (addresses, replies, headers) is escaped for the terminal.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::audit::Audit;
use crate::config::{Config, ConfigError};
use crate::escape::{for_terminal, lines_for_terminal};
use crate::queue::spool::{self, Spool, SpoolEntry, SpoolError};

/// Why a queue command failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The configuration cannot be read or is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// `[spool] dir` holds no spool (yet).
    #[error(
        "{}: no spool here (not created until `sealgate serve` starts; check [spool] dir in {})",
        .dir.display(), .config.display()
    )]
    NoSpool { dir: PathBuf, config: PathBuf },
    /// The spool exists but cannot be opened.
    #[error("{0}")]
    Open(SpoolError),
    /// No entry has this id (nor was a message queued under it).
    #[error("no spool entry {0} (sealgate queue list shows what is queued)")]
    NoEntry(String),
    /// Reading or changing an entry failed.
    #[error("{0}")]
    Spool(#[from] SpoolError),
}

impl QueueError {
    /// True when the command could not start (configuration, no spool): a usage or
    /// configuration error rather than a problem found in the queue.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            QueueError::Config(_) | QueueError::NoSpool { .. } | QueueError::Open(_)
        )
    }
}

/// Opens the spool that the configuration at `config` names, without creating it.
pub fn open(config: &Path) -> Result<(Spool, Config), QueueError> {
    let cfg = Config::load(config)?;
    if !cfg.spool.dir.join("queue").is_dir() {
        return Err(QueueError::NoSpool {
            dir: cfg.spool.dir.clone(),
            config: config.to_path_buf(),
        });
    }
    let spool = Spool::open(&cfg.spool.dir).map_err(QueueError::Open)?;
    Ok((spool, cfg))
}

/// The entries `id` names: itself, or the copies of the message the client was told
/// `queued as id`.
pub fn entries_named(spool: &Spool, id: &str) -> Result<Vec<String>, QueueError> {
    let ids = spool.ids_of(id);
    if ids.is_empty() {
        return Err(QueueError::NoEntry(id.to_string()));
    }
    Ok(ids)
}

/// "1 entry", "2 entries".
fn entries(n: usize) -> String {
    format!("{n} entr{}", if n == 1 { "y" } else { "ies" })
}

/// `queue list`: one line per entry, then the damaged ones and the count.
pub fn list(spool: &Spool) -> Result<String, QueueError> {
    let (entries_found, bad) = spool.scan()?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:>9} {:>4} {:<20} {:<32} status",
        "id", "size", "try", "age", "from -> pending"
    );
    let now = crate::clock::unix_now();
    for e in &entries_found {
        list_line(&mut out, e, now);
    }
    for (id, why) in bad {
        let _ = writeln!(
            out,
            "{id}: damaged, moved to corrupt/: {}",
            for_terminal(&why)
        );
    }
    let corrupt = spool.corrupt_ids();
    if !corrupt.is_empty() {
        let _ = writeln!(
            out,
            "{} damaged entr{} in {}/corrupt: {}",
            corrupt.len(),
            if corrupt.len() == 1 { "y" } else { "ies" },
            spool.dir().display(),
            corrupt.join(", ")
        );
    }
    let _ = writeln!(out, "{} queued", entries(entries_found.len()));
    Ok(out)
}

/// One entry's line in `queue list`.
fn list_line(out: &mut String, e: &SpoolEntry, now: u64) {
    let age = now.saturating_sub(e.envelope.created);
    let status = if e.state.held {
        "held".to_string()
    } else if let Some(err) = &e.state.last_error {
        format!("deferred: {err}")
    } else {
        "queued".to_string()
    };
    // Addresses and the upstream's reply are others' text: escaped for the terminal.
    let _ = writeln!(
        out,
        "{:<28} {:>9} {:>4} {:<20} <{}> -> {}  {}",
        e.envelope.id,
        e.size,
        e.state.attempts,
        format!("{}s", age),
        for_terminal(&e.envelope.from),
        for_terminal(&e.pending().join(", ")),
        for_terminal(&status)
    );
}

/// `queue show ID`: envelope, state and headers of each entry `id` names, each on its
/// own (one unreadable entry does not hide the others).
pub fn show(spool: &Spool, id: &str) -> Result<Vec<Result<String, QueueError>>, QueueError> {
    Ok(entries_named(spool, id)?
        .iter()
        .map(|id| show_entry(spool, id))
        .collect())
}

fn show_entry(spool: &Spool, id: &str) -> Result<String, QueueError> {
    let (e, m) = spool.load(id)?;
    let optional = |v: Option<&str>| v.map(|m| format!(" {}", for_terminal(m)));
    let mut out = String::new();
    // Everything but the id and the numbers came from clients or the upstream.
    let _ = writeln!(out, "id:        {}", e.envelope.id);
    let _ = writeln!(out, "from:      <{}>", for_terminal(&e.envelope.from));
    let _ = writeln!(
        out,
        "to:        {}",
        for_terminal(&e.envelope.rcpts.join(", "))
    );
    let _ = writeln!(out, "pending:   {}", for_terminal(&e.pending().join(", ")));
    let _ = writeln!(out, "client:    {}", for_terminal(&e.envelope.client));
    let _ = writeln!(out, "kind:      {:?}", e.envelope.kind);
    let _ = writeln!(
        out,
        "message-id:{}",
        optional(e.envelope.message_id.as_deref()).unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "policy:    {}",
        for_terminal(e.envelope.policy_version.as_deref().unwrap_or("-"))
    );
    let _ = writeln!(out, "attempts:  {}", e.state.attempts);
    let _ = writeln!(
        out,
        "last error:{}",
        optional(e.state.last_error.as_deref()).unwrap_or_default()
    );
    let _ = writeln!(out, "size:      {} bytes", e.size);
    let _ = writeln!(out, "--- headers ---");
    out.push_str(&lines_for_terminal(&String::from_utf8_lossy(
        crate::queue::dsn::original_headers(&m),
    )));
    Ok(out)
}

/// What `queue retry` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retried {
    /// How many entries are due now.
    pub count: usize,
    /// Whether a running server was told (SIGUSR1) to deliver them at once.
    pub told: bool,
}

impl std::fmt::Display for Retried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.told {
            write!(
                f,
                "{} due now; the running server was told",
                entries(self.count)
            )
        } else {
            write!(
                f,
                "{} due now; no running server found (they go out when it starts)",
                entries(self.count)
            )
        }
    }
}

/// `queue retry [ID]` and sendmail's `-q`: makes the entries `id` names (or all) due now
/// and released from hold, and tells a running server.
pub fn retry(spool: &Spool, id: Option<&str>) -> Result<Retried, QueueError> {
    let ids: Vec<String> = match id {
        Some(i) => entries_named(spool, i)?,
        None => spool.scan()?.0.into_iter().map(|e| e.envelope.id).collect(),
    };
    for i in &ids {
        let mut st = spool.entry(i)?.state;
        st.next_attempt = 0;
        st.held = false;
        spool.set_state(i, &st)?;
    }
    Ok(Retried {
        count: ids.len(),
        told: signal_server(spool, libc::SIGUSR1),
    })
}

/// Sends `sig` to the server running on `spool`; false when there is none.
fn signal_server(spool: &Spool, sig: i32) -> bool {
    // Only a pid file that a live server holds locked names a server: a stale one may
    // name an unrelated process that got the pid later.
    let Some(pid) = spool::running_server(spool.dir()) else {
        return false;
    };
    // SAFETY: kill(2) with the pid of the server that holds the spool's pid-file lock.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// `queue delete ID`: removes the entries `id` names for good, or the damaged entry of
/// that id in `corrupt/`; each removal is audited. One line (or error) per entry.
pub fn delete(spool: &Spool, audit: Option<&Audit>, id: &str) -> Vec<Result<String, QueueError>> {
    let mut ids = spool.ids_of(id);
    if ids.is_empty() {
        // A damaged entry (listed by `queue list` as moved to corrupt/) is deleted too.
        ids.push(id.to_string());
    }
    ids.iter()
        .map(|id| {
            let what = match spool.remove(id) {
                Err(SpoolError::NotFound(_)) => spool
                    .remove_corrupt(id)
                    .map(|()| format!("{id}: deleted from corrupt/")),
                other => other.map(|()| format!("{id}: deleted")),
            }?;
            if let Some(a) = audit {
                a.record(&crate::audit::Event::Deleted {
                    queue_id: id.clone(),
                    by: "sealgate queue delete",
                });
            }
            Ok(what)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spool in a temp dir with one entry; its id.
    fn spool_with_one() -> (tempfile::TempDir, Spool, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("spool");
        let env = spool::test_envelope("app@sender.example", &["a@x.example", "b@x.example"]);
        let id = env.id.clone();
        let msg = b"From: app@sender.example\r\nSubject: hi \x1b[2J\r\n\r\nbody\r\n";
        spool.store(&[(env, msg.as_slice())]).expect("store");
        (dir, spool, id)
    }

    #[test]
    fn open_refuses_a_missing_spool_as_a_usage_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("sealgate.toml");
        let e = open(&config).expect_err("no config");
        assert!(e.is_usage() && matches!(e, QueueError::Config(_)), "{e}");
        assert!(!QueueError::NoEntry("x".into()).is_usage());
    }

    #[test]
    fn list_shows_each_entry_its_pending_recipients_and_the_count() {
        let (_dir, spool, id) = spool_with_one();
        let text = list(&spool).expect("list");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("id ") && lines[0].ends_with(" status"),
            "{text}"
        );
        assert!(lines[1].starts_with(&id), "{text}");
        assert!(
            lines[1].contains("<app@sender.example> -> a@x.example, b@x.example  queued"),
            "{text}"
        );
        assert_eq!(lines.last(), Some(&"1 entry queued"));

        let mut st = spool.entry(&id).expect("entry").state;
        st.held = true;
        spool.set_state(&id, &st).expect("hold");
        assert!(list(&spool).expect("list").contains("  held\n"));
    }

    #[test]
    fn show_gives_envelope_state_and_escaped_headers() {
        let (_dir, spool, id) = spool_with_one();
        let shown = show(&spool, &id).expect("show");
        assert_eq!(shown.len(), 1);
        let text = shown[0].as_ref().expect("entry");
        assert!(text.starts_with(&format!("id:        {id}\n")), "{text}");
        assert!(
            text.contains("pending:   a@x.example, b@x.example\n"),
            "{text}"
        );
        assert!(text.contains("message-id: <m1@sender.example>\n"), "{text}");
        assert!(text.contains("last error:\n"), "{text}");
        assert!(
            text.contains("--- headers ---\nFrom: app@sender.example"),
            "{text}"
        );
        assert!(
            !text.contains('\x1b'),
            "a header cannot drive the terminal: {text}"
        );
        let e = show(&spool, "NOSUCHID").expect_err("unknown id");
        assert!(matches!(e, QueueError::NoEntry(_)) && !e.is_usage());
    }

    #[test]
    fn retry_makes_held_and_deferred_entries_due_now() {
        let (_dir, spool, id) = spool_with_one();
        let mut st = spool.entry(&id).expect("entry").state;
        st.held = true;
        st.next_attempt = crate::clock::unix_now() + 3600;
        spool.set_state(&id, &st).expect("defer");
        let r = retry(&spool, None).expect("retry");
        assert_eq!(
            r,
            Retried {
                count: 1,
                told: false
            }
        );
        assert_eq!(
            r.to_string(),
            "1 entry due now; no running server found (they go out when it starts)"
        );
        let st = spool.entry(&id).expect("entry").state;
        assert!(!st.held && st.next_attempt == 0);
        assert!(matches!(
            retry(&spool, Some("NOSUCHID")),
            Err(QueueError::NoEntry(_))
        ));
    }

    #[test]
    fn delete_removes_the_entry_and_reports_each_removal() {
        let (_dir, spool, id) = spool_with_one();
        let out = delete(&spool, None, &id);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ref().expect("deleted"), &format!("{id}: deleted"));
        assert!(spool.scan().expect("scan").0.is_empty());
        // Gone now: a second delete is an error, not a silent success.
        let again = delete(&spool, None, &id);
        assert!(
            matches!(again.as_slice(), [Err(QueueError::Spool(_))]),
            "{again:?}"
        );
    }
}
