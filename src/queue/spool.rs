//! The durable queue: what was accepted stays here until the upstream has it.
//!
//! Layout (states are directories, as in Postfix):
//! ```text
//! <dir>/tmp/       entries being written; anything left here after a crash was never acknowledged
//! <dir>/queue/     ID.msg  = header line, envelope JSON line, message bytes (immutable)
//!                  ID.state = delivery progress (attempts, next try, recipients done), rewritten atomically
//! <dir>/corrupt/   entries that could not be read, moved aside with a .why file, never deleted silently
//! ```
//! Invariant: [`Spool::store`] returns only after every file and the queue directory are
//! fsynced, so a `250` sent after it survives a crash or power loss.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

const MAGIC: &[u8] = b"SEALGATE-SPOOL 1\n";

/// Spool failures; all are temporary for the SMTP client (`451 4.3.0`).
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("spool entry {id}: {why}")]
    Corrupt { id: String, why: String },
    #[error("no spool entry {0}")]
    NotFound(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Why a message is in the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// A message from a local application (possibly transformed).
    #[default]
    Message,
    /// A delivery status notification we generated; never bounced itself.
    Dsn,
    /// The separate message carrying a zip password.
    Password,
}

/// The envelope and provenance of one outgoing copy. Immutable once stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Envelope {
    /// Queue id of this copy.
    pub id: String,
    /// Reverse-path; empty for the null sender.
    pub from: String,
    /// Recipients of this copy.
    pub rcpts: Vec<String>,
    /// Unix seconds when accepted.
    pub created: u64,
    /// The local client (`[[client]]` name or `local`).
    #[serde(default)]
    pub client: String,
    /// The Message-ID header, for the audit log and `queue list`.
    #[serde(default)]
    pub message_id: Option<String>,
    /// Policy version that decided this copy.
    #[serde(default)]
    pub policy_version: Option<String>,
    /// What kind of entry this is.
    #[serde(default)]
    pub kind: EntryKind,
    /// Message carries 8-bit data (use BODY=8BITMIME upstream).
    #[serde(default)]
    pub body_8bit: bool,
    /// Addresses need SMTPUTF8 upstream.
    #[serde(default)]
    pub smtputf8: bool,
}

impl Envelope {
    /// How the audit records name this entry.
    pub fn audit_entry(&self) -> crate::audit::Entry {
        crate::audit::Entry {
            queue_id: self.id.clone(),
            message_id: self.message_id.clone(),
            from: self.from.clone(),
            policy_version: self.policy_version.clone(),
        }
    }
}

/// What the first spool line holds: the envelope plus the length of the message that
/// follows it, so that a truncated or extended file is recognised as damaged.
#[derive(Serialize, Deserialize)]
struct Header {
    #[serde(flatten)]
    envelope: Envelope,
    /// Length of the message bytes after the header line (absent in older spool files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_len: Option<u64>,
}

/// Delivery progress of one entry.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct DeliveryState {
    /// Attempts made so far.
    pub attempts: u32,
    /// Unix seconds of the next attempt (0 = now).
    pub next_attempt: u64,
    /// Recipients already delivered or bounced; never tried again.
    pub done: Vec<String>,
    /// Last upstream reply or error, for `queue list`.
    pub last_error: Option<String>,
    /// Held entries are not delivered until `queue retry`.
    #[serde(default)]
    pub held: bool,
}

/// One entry as found in the spool.
#[derive(Debug, Clone)]
pub struct SpoolEntry {
    pub envelope: Envelope,
    pub state: DeliveryState,
    /// Size of the message in bytes.
    pub size: u64,
}

impl SpoolEntry {
    /// Recipients still to deliver.
    pub fn pending(&self) -> Vec<String> {
        self.envelope
            .rcpts
            .iter()
            .filter(|r| !self.state.done.contains(r))
            .cloned()
            .collect()
    }
}

/// Readable entries, and quarantined ones as `(id, why)`.
pub type ScanResult = (Vec<SpoolEntry>, Vec<(String, String)>);

/// Handle on the spool directory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

static ID_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new queue id: time-ordered, unique within the process, unpredictable enough across processes.
pub fn new_id() -> String {
    let micros = crate::clock::unix_now_micros();
    let n = ID_COUNTER.fetch_add(1, Ordering::Relaxed) & 0xfff;
    let r: u16 = rand::random();
    format!("{micros:013X}{n:03X}{r:04X}")
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn fsync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err(dir))
}

/// The server's pid file in a spool directory, locked (`flock`) for as long as it runs,
/// so that `queue retry` signals only a live server and never whatever process later
/// got the pid of a crashed one.
pub const PIDFILE: &str = "sealgate.pid";

/// Writes our pid to `<dir>/sealgate.pid` and holds an exclusive lock on it for as long
/// as the returned file is open. Fails with `WouldBlock` when another live server holds
/// it, with other errors when the file cannot be opened; a pid that cannot be written
/// (a full disk) is logged, and the lock is still held.
pub fn claim_pidfile(dir: &Path) -> io::Result<File> {
    use std::os::unix::io::AsRawFd;
    let path = dir.join(PIDFILE);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)?;
    // SAFETY: flock(2) on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            let mut other = String::new();
            let _ = f.read_to_string(&mut other);
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "another sealgate serve (pid {}) is already using this spool",
                    other.trim()
                ),
            ));
        }
        return Err(e);
    }
    // The lock is what keeps a second server out: it stays held even when the pid
    // cannot be written (a full disk), which only costs `queue retry` its signal.
    if let Err(e) = f
        .set_len(0)
        .and_then(|()| f.write_all(format!("{}\n", std::process::id()).as_bytes()))
    {
        tracing::error!(
            "cannot write {}: {e}; `sealgate queue retry` will not reach this server",
            path.display()
        );
    }
    Ok(f)
}

/// The pid of the live server that holds `<dir>/sealgate.pid`, if any. A pid file left
/// behind by a server that died is not locked, and its pid is not returned.
pub fn running_server(dir: &Path) -> Option<i32> {
    use std::os::unix::io::AsRawFd;
    let mut f = File::open(dir.join(PIDFILE)).ok()?;
    // SAFETY: flock(2) on a file descriptor we own; closing it releases the lock.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
        return None;
    }
    let mut s = String::new();
    f.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

impl Spool {
    /// Opens (and creates, mode 0700) the spool at `dir`.
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        for sub in ["", "tmp", "queue", "corrupt"] {
            let p = dir.join(sub);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&p)
                .map_err(io_err(&p))?;
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
        })
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn queue_dir(&self) -> PathBuf {
        self.dir.join("queue")
    }

    fn msg_path(&self, id: &str) -> PathBuf {
        self.queue_dir().join(format!("{id}.msg"))
    }

    fn state_path(&self, id: &str) -> PathBuf {
        self.queue_dir().join(format!("{id}.state"))
    }

    /// Writes all entries durably: each file fsynced, renamed into `queue/`, then the
    /// directory fsynced. Returns only when a crash can no longer lose them.
    pub fn store(&self, entries: &[(Envelope, &[u8])]) -> Result<(), SpoolError> {
        let tmp_dir = self.dir.join("tmp");
        let mut written = Vec::with_capacity(entries.len());
        for (env, message) in entries {
            if !valid_id(&env.id) {
                return Err(SpoolError::Corrupt {
                    id: env.id.clone(),
                    why: "invalid id".into(),
                });
            }
            let tmp = tmp_dir.join(format!("{}.msg", env.id));
            let result = (|| -> io::Result<()> {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                let header = serde_json::to_vec(&Header {
                    envelope: env.clone(),
                    body_len: Some(message.len() as u64),
                })
                .map_err(io::Error::other)?;
                let mut head = Vec::with_capacity(MAGIC.len() + header.len() + 1);
                head.extend_from_slice(MAGIC);
                head.extend_from_slice(&header);
                head.push(b'\n');
                f.write_all(&head)?;
                f.write_all(message)?;
                f.sync_all()
            })();
            if let Err(e) = result {
                let _ = fs::remove_file(&tmp);
                for (t, _) in &written {
                    let _ = fs::remove_file(t);
                }
                return Err(SpoolError::Io {
                    path: tmp,
                    source: e,
                });
            }
            written.push((tmp, self.msg_path(&env.id)));
        }
        for (i, (tmp, dest)) in written.iter().enumerate() {
            if let Err(e) = fs::rename(tmp, dest) {
                // All or nothing: the client will be told 451 and send again.
                for (t, d) in &written[..i] {
                    let _ = fs::remove_file(d);
                    let _ = fs::remove_file(t);
                }
                for (t, _) in &written[i..] {
                    let _ = fs::remove_file(t);
                }
                return Err(io_err(dest)(e));
            }
        }
        fsync_dir(&self.queue_dir())
    }

    /// Reads an entry's envelope, state and size (not the message).
    pub fn entry(&self, id: &str) -> Result<SpoolEntry, SpoolError> {
        if !valid_id(id) {
            return Err(SpoolError::NotFound(id.to_string()));
        }
        let path = self.msg_path(id);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SpoolError::NotFound(id.to_string()))
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let size = f.metadata().map_err(io_err(&path))?.len();
        // Read the header line only, however long it is (a long Message-ID or many
        // recipients), never the message.
        // Two lines: the magic line, then the envelope.
        let mut head = Vec::with_capacity(4096);
        let mut r = io::BufReader::new(&mut f);
        for _ in 0..2 {
            r.read_until(b'\n', &mut head).map_err(io_err(&path))?;
        }
        let (envelope, body_offset) = parse_header(id, &head, size)?;
        let state = self.read_state(id)?;
        Ok(SpoolEntry {
            envelope,
            state,
            size: size.saturating_sub(body_offset as u64),
        })
    }

    /// Reads an entry and its message with one read of the file.
    pub fn load(&self, id: &str) -> Result<(SpoolEntry, Vec<u8>), SpoolError> {
        if !valid_id(id) {
            return Err(SpoolError::NotFound(id.to_string()));
        }
        let path = self.msg_path(id);
        let mut data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SpoolError::NotFound(id.to_string()))
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let (envelope, off) = parse_header(id, &data, data.len() as u64)?;
        data.drain(..off);
        let state = self.read_state(id)?;
        let entry = SpoolEntry {
            envelope,
            state,
            size: data.len() as u64,
        };
        Ok((entry, data))
    }

    /// Reads the message bytes of an entry.
    pub fn message(&self, id: &str) -> Result<Vec<u8>, SpoolError> {
        self.load(id).map(|(_, m)| m)
    }

    fn read_state(&self, id: &str) -> Result<DeliveryState, SpoolError> {
        let path = self.state_path(id);
        match fs::read(&path) {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(state) => Ok(state),
                Err(e) => {
                    // The state only records progress: a damaged one is set aside (for
                    // whoever investigates) and the message is delivered afresh. A
                    // recipient already served may get it twice; nothing is lost.
                    let aside = self.dir.join("corrupt").join(format!("{id}.state-damaged"));
                    let _ = fs::rename(&path, &aside);
                    tracing::warn!(
                        "spool entry {id}: state file damaged ({e}), moved to {}; delivering to all recipients again",
                        aside.display()
                    );
                    Ok(DeliveryState::default())
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(DeliveryState::default()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Atomically replaces an entry's delivery state (write, fsync, rename, fsync dir).
    pub fn set_state(&self, id: &str, state: &DeliveryState) -> Result<(), SpoolError> {
        // Unique per writer: the server and `queue retry` may update the same entry.
        let n = ID_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("{id}.state.{}.{n}", std::process::id()));
        let dest = self.state_path(id);
        let bytes = serde_json::to_vec(state).map_err(|e| SpoolError::Corrupt {
            id: id.to_string(),
            why: e.to_string(),
        })?;
        (|| -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()
        })()
        .map_err(|e| {
            // Do not leave one empty file per failed attempt behind (a full disk).
            let _ = fs::remove_file(&tmp);
            io_err(&tmp)(e)
        })?;
        if let Err(e) = fs::rename(&tmp, &dest) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&dest)(e));
        }
        fsync_dir(&self.queue_dir())
    }

    /// Removes a finished entry.
    pub fn remove(&self, id: &str) -> Result<(), SpoolError> {
        if !valid_id(id) {
            return Err(SpoolError::NotFound(id.to_string()));
        }
        let msg = self.msg_path(id);
        match fs::remove_file(&msg) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SpoolError::NotFound(id.to_string()))
            }
            Err(e) => return Err(io_err(&msg)(e)),
        }
        let _ = fs::remove_file(self.state_path(id));
        // No directory fsync: if a crash undoes this unlink, the entry is delivered again
        // (at least once, as SMTP promises); nothing can be lost.
        Ok(())
    }

    /// The queued entries of message `id`: the entry itself, or, when `id` is the one
    /// the client was told (`250 queued as ID`), its copies `ID-1`, `ID-2`, `ID-p1`...
    pub fn ids_of(&self, id: &str) -> Vec<String> {
        if !valid_id(id) {
            return Vec::new();
        }
        if self.msg_path(id).exists() {
            return vec![id.to_string()];
        }
        let prefix = format!("{id}-");
        let mut ids: Vec<String> = fs::read_dir(self.queue_dir())
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_str()?.to_string();
                        let copy = name.strip_suffix(".msg")?;
                        copy.starts_with(&prefix).then(|| copy.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// Deletes a quarantined entry (its message, state and `.why` in `corrupt/`): only
    /// ever on an operator's explicit `queue delete ID`. `NotFound` when there is none.
    pub fn remove_corrupt(&self, id: &str) -> Result<(), SpoolError> {
        if !valid_id(id) {
            return Err(SpoolError::NotFound(id.to_string()));
        }
        let mut found = false;
        for ext in ["msg", "state", "why"] {
            let p = self.dir.join("corrupt").join(format!("{id}.{ext}"));
            match fs::remove_file(&p) {
                Ok(()) => found = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&p)(e)),
            }
        }
        if found {
            Ok(())
        } else {
            Err(SpoolError::NotFound(id.to_string()))
        }
    }

    /// Moves an unreadable entry to `corrupt/` with a `.why` file; never deletes it.
    pub fn quarantine(&self, id: &str, why: &str) -> Result<(), SpoolError> {
        let corrupt = self.dir.join("corrupt");
        for ext in ["msg", "state"] {
            let src = self.queue_dir().join(format!("{id}.{ext}"));
            if src.exists() {
                let dest = corrupt.join(format!("{id}.{ext}"));
                fs::rename(&src, &dest).map_err(io_err(&dest))?;
            }
        }
        let why_path = corrupt.join(format!("{id}.why"));
        fs::write(&why_path, format!("{why}\n")).map_err(io_err(&why_path))?;
        fsync_dir(&corrupt)?;
        fsync_dir(&self.queue_dir())
    }

    /// Removes leftovers in `tmp/`: entries a crashed server never acknowledged.
    /// Only the server calls this, at startup, before it accepts anything: while it runs,
    /// `tmp/` holds the messages it is writing right now.
    pub fn remove_unacknowledged(&self) {
        let tmp = self.dir.join("tmp");
        if let Ok(rd) = fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// All readable entries, oldest first. Unreadable ones are quarantined and returned
    /// in the second list as `(id, why)`. Never touches `tmp/`, so `queue list` and
    /// `queue retry` are safe next to a running server.
    pub fn scan(&self) -> Result<ScanResult, SpoolError> {
        let qdir = self.queue_dir();
        let mut ids: Vec<String> = Vec::new();
        let mut orphans = Vec::new();
        for e in fs::read_dir(&qdir).map_err(io_err(&qdir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".msg") {
                ids.push(id.to_string());
            } else if let Some(id) = name.strip_suffix(".state") {
                orphans.push(id.to_string());
            }
        }
        ids.sort();
        for o in orphans {
            if !ids.contains(&o) {
                let _ = fs::remove_file(self.state_path(&o));
            }
        }
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for id in ids {
            match self.entry(&id) {
                Ok(e) => good.push(e),
                Err(SpoolError::Corrupt { why, .. }) => {
                    self.quarantine(&id, &why)?;
                    bad.push((id, why));
                }
                Err(SpoolError::NotFound(_)) => {}
                Err(e) => {
                    // One unreadable entry (a directory named *.msg, EACCES, EIO) must not
                    // stop the whole queue: move it aside and report it like a damaged one.
                    let why = format!("unreadable: {e}");
                    match self.quarantine(&id, &why) {
                        Ok(()) => bad.push((id, why)),
                        Err(q) => tracing::error!(
                            "spool entry {id} is unreadable ({e}) and could not be moved to corrupt/: {q}"
                        ),
                    }
                }
            }
        }
        Ok((good, bad))
    }

    /// Ids of quarantined entries.
    pub fn corrupt_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.dir.join("corrupt"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .strip_suffix(".why")
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// Parses the header at the start of `data`; `file_len` is the whole file's length.
fn parse_header(id: &str, data: &[u8], file_len: u64) -> Result<(Envelope, usize), SpoolError> {
    let corrupt = |why: &str| SpoolError::Corrupt {
        id: id.to_string(),
        why: why.to_string(),
    };
    let rest = data
        .strip_prefix(MAGIC)
        .ok_or_else(|| corrupt("missing spool header (not a sealgate spool file)"))?;
    let nl = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt("truncated envelope"))?;
    let Header {
        envelope: env,
        body_len,
    } = serde_json::from_slice(&rest[..nl])
        .map_err(|e| corrupt(&format!("envelope is not valid: {e}")))?;
    let off = MAGIC.len() + nl + 1;
    if let Some(want) = body_len {
        let have = file_len.saturating_sub(off as u64);
        if have != want {
            return Err(corrupt(&format!(
                "message is {have} bytes, the header says {want} (truncated or damaged)"
            )));
        }
    }
    if env.id != id {
        return Err(corrupt("envelope id does not match file name"));
    }
    if env.rcpts.is_empty() {
        return Err(corrupt("envelope has no recipients"));
    }
    Ok((env, off))
}

/// A message envelope for unit tests: from `from` to `rcpts`, created now.
#[cfg(test)]
pub(crate) fn test_envelope(from: &str, rcpts: &[&str]) -> Envelope {
    Envelope {
        id: new_id(),
        from: from.into(),
        rcpts: rcpts.iter().map(|r| r.to_string()).collect(),
        created: crate::clock::unix_now(),
        client: "local".into(),
        message_id: Some("<m1@sender.example>".into()),
        policy_version: None,
        kind: EntryKind::Message,
        body_8bit: false,
        smtputf8: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_pidfile_names_no_running_server() {
        let dir = tempfile::tempdir().unwrap();
        // A server that died left its pid behind (here: a pid that is surely ours, so
        // signalling it would hit a live, unrelated process).
        fs::write(
            dir.path().join(PIDFILE),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        assert_eq!(running_server(dir.path()), None);
        let held = claim_pidfile(dir.path()).unwrap();
        assert_eq!(running_server(dir.path()), Some(std::process::id() as i32));
        let second = claim_pidfile(dir.path()).unwrap_err().to_string();
        assert!(second.contains("already using this spool"), "{second}");
        drop(held);
        assert_eq!(running_server(dir.path()), None);
    }

    fn env(id: &str) -> Envelope {
        Envelope {
            id: id.into(),
            from: "a@example.com".into(),
            rcpts: vec!["b@example.com".into()],
            created: 1,
            client: "local".into(),
            message_id: None,
            policy_version: None,
            kind: EntryKind::Message,
            body_8bit: false,
            smtputf8: false,
        }
    }

    #[test]
    fn store_read_update_remove() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        let id = new_id();
        s.store(&[(env(&id), b"Subject: x\r\n\r\nhi\r\n")]).unwrap();
        let (entries, bad) = s.scan().unwrap();
        assert_eq!(entries.len(), 1);
        assert!(bad.is_empty());
        assert_eq!(s.message(&id).unwrap(), b"Subject: x\r\n\r\nhi\r\n");
        let st = DeliveryState {
            attempts: 2,
            ..Default::default()
        };
        s.set_state(&id, &st).unwrap();
        assert_eq!(s.entry(&id).unwrap().state.attempts, 2);
        s.remove(&id).unwrap();
        assert!(s.scan().unwrap().0.is_empty());
    }

    #[test]
    fn damaged_entry_is_quarantined_not_dropped() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        fs::write(d.path().join("queue/BROKEN.msg"), b"garbage").unwrap();
        let (good, bad) = s.scan().unwrap();
        assert!(good.is_empty());
        assert_eq!(bad[0].0, "BROKEN");
        assert!(d.path().join("corrupt/BROKEN.msg").exists());
        assert_eq!(s.corrupt_ids(), vec!["BROKEN".to_string()]);
        // The id a client was told finds the copies stored under it.
        for copy in ["M1-1", "M1-2", "M1-p2", "M10-1"] {
            s.store(&[(env(copy), b"Subject: x\r\n\r\nhi\r\n")])
                .unwrap();
        }
        assert_eq!(s.ids_of("M1"), ["M1-1", "M1-2", "M1-p2"]);
        assert_eq!(s.ids_of("M1-2"), ["M1-2"]);
        assert!(s.ids_of("M2").is_empty());
        assert!(s.ids_of("../M1").is_empty());
        // Only an explicit delete removes it, with its reason.
        s.remove_corrupt("BROKEN").unwrap();
        assert!(s.corrupt_ids().is_empty());
        assert!(!d.path().join("corrupt/BROKEN.why").exists());
        assert!(matches!(
            s.remove_corrupt("BROKEN"),
            Err(SpoolError::NotFound(_))
        ));
        assert!(matches!(
            s.remove_corrupt("../queue/x"),
            Err(SpoolError::NotFound(_))
        ));
    }

    #[test]
    fn truncated_message_is_quarantined_not_sent() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        let id = new_id();
        s.store(&[(env(&id), b"Subject: x\r\n\r\nline one\r\nline two\r\n")])
            .unwrap();
        let path = d.path().join(format!("queue/{id}.msg"));
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        assert!(matches!(s.load(&id), Err(SpoolError::Corrupt { .. })));
        let (good, bad) = s.scan().unwrap();
        assert!(good.is_empty());
        assert_eq!(bad.len(), 1);
        assert!(bad[0].1.contains("truncated"), "{}", bad[0].1);
        assert!(d.path().join(format!("corrupt/{id}.msg")).exists());
    }

    #[test]
    fn a_long_envelope_is_read_whole() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        let id = new_id();
        let mut e = env(&id);
        e.message_id = Some(format!("<{}@example.com>", "a".repeat(70_000)));
        s.store(&[(e, b"Subject: x\r\n\r\nhi\r\n")]).unwrap();
        let (good, bad) = s.scan().unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(good.len(), 1);
        assert_eq!(good[0].size, 18);
    }

    #[test]
    fn one_unreadable_entry_does_not_stop_the_scan() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        let id = new_id();
        s.store(&[(env(&id), b"Subject: x\r\n\r\nhi\r\n")]).unwrap();
        fs::create_dir(d.path().join("queue/STRAY.msg")).unwrap();
        let (good, bad) = s.scan().unwrap();
        assert_eq!(good.len(), 1);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, "STRAY");
        assert!(d.path().join("corrupt/STRAY.why").exists());
    }

    #[test]
    fn spool_files_without_a_length_still_read() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&serde_json::to_vec(&env("OLD")).unwrap());
        data.extend_from_slice(b"\nSubject: x\r\n\r\nhi\r\n");
        fs::write(d.path().join("queue/OLD.msg"), data).unwrap();
        assert_eq!(s.message("OLD").unwrap(), b"Subject: x\r\n\r\nhi\r\n");
    }

    #[test]
    fn a_damaged_state_is_set_aside_and_the_message_kept() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        let id = new_id();
        s.store(&[(env(&id), b"Subject: x\r\n\r\nhi\r\n")]).unwrap();
        fs::write(d.path().join(format!("queue/{id}.state")), b"{garbage").unwrap();
        let (good, bad) = s.scan().unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(good.len(), 1);
        assert_eq!(good[0].state, DeliveryState::default());
        assert!(d
            .path()
            .join(format!("corrupt/{id}.state-damaged"))
            .exists());
        assert!(
            s.corrupt_ids().is_empty(),
            "the message itself is not damaged"
        );
    }

    #[test]
    fn ids_are_unique_and_ordered() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert!(valid_id(&a));
    }
}
