//! The maildrop: where `sealgate sendmail` keeps a message while `serve` is down, and
//! the collector in `serve` that submits what it finds there.
//!
//! Layout, as Postfix's postdrop: `<spool>/maildrop/` has mode 3733 (setgid, sticky,
//! writable and searchable by all, listable by nobody but its owner), and the spool
//! directory is made searchable (0711) so callers can reach it. A caller writes
//! `.tmp-NAME` (0640: its own uid, the directory's group through the setgid bit, so the
//! collector can read it and other callers cannot), fsyncs it and renames it to
//! `NAME.mail`; the sticky bit keeps callers from removing or replacing each other's
//! files, and the random NAME cannot be guessed.
//!
//! A file is `MAGIC`, one JSON line (sender, recipients), then the message (CRLF).
//! Nothing in it is trusted: the collector runs it through a real [`Session`] (EHLO,
//! MAIL, RCPT, DATA) with the policy hooks of the listener, as the unauthenticated
//! client `local`, identified in the Received field and the audit log by the file
//! owner's uid, then through [`Ingest::accept`] as SMTP does. The file is removed once
//! the message is spooled (fsynced) or refused for good (audited and logged); a
//! temporary refusal leaves it for the next pass. Passes run at start, on SIGUSR1 and
//! every [`INTERVAL`].

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::audit::{Event, Peer, Stage};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::runtime::{Runtime, Shared};
use crate::smtp::ingest::{Ingest, SessionInfo};
use crate::smtp::reply::Reply;
use crate::smtp::session::{DataOutcome, Hooks, Session, SessionLimits, Step};

/// The maildrop's name under the spool directory.
pub const DIR: &str = "maildrop";
/// The first line of every maildrop file.
const MAGIC: &[u8] = b"SEALGATE-MAILDROP 1\n";
/// How often the collector looks without being signalled.
pub const INTERVAL: Duration = Duration::from_secs(30);
/// Mode of the maildrop directory: setgid, sticky, rwx-wx-wx.
const DIR_MODE: u32 = 0o3733;
/// A `.tmp-` file older than this was left by a sendmail that died while writing.
const STALE_TMP: Duration = Duration::from_secs(24 * 3600);

/// Why a message could not be kept in the maildrop.
#[derive(Debug, thiserror::Error)]
pub enum MaildropError {
    #[error("{path}: cannot write a message there: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the envelope: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The envelope line of a maildrop file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DropEnvelope {
    from: String,
    rcpts: Vec<String>,
}

/// The maildrop directory of a spool.
pub fn dir(spool_dir: &Path) -> PathBuf {
    spool_dir.join(DIR)
}

/// Writes a message to the maildrop of `spool_dir` (sendmail's side): temp file,
/// fsync, rename. Returns the file's path.
pub fn write(
    spool_dir: &Path,
    from: &str,
    rcpts: &[String],
    message: &[u8],
) -> Result<PathBuf, MaildropError> {
    let dir = dir(spool_dir);
    let name = format!(
        "{}{:016x}",
        crate::queue::spool::new_id(),
        rand::random::<u64>()
    );
    let tmp = dir.join(format!(".tmp-{name}"));
    let done = dir.join(format!("{name}.mail"));
    let envelope = serde_json::to_vec(&DropEnvelope {
        from: from.to_string(),
        rcpts: rcpts.to_vec(),
    })?;
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MaildropError::Write { path, source }
    };
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        // Group-readable for the collector (the directory's group, by its setgid bit);
        // set explicitly because the caller's umask may have removed it.
        f.set_permissions(fs::Permissions::from_mode(0o640))?;
        f.write_all(MAGIC)?;
        f.write_all(&envelope)?;
        f.write_all(b"\n")?;
        f.write_all(message)?;
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(werr(&dir)(e));
    }
    if let Err(e) = fs::rename(&tmp, &done) {
        let _ = fs::remove_file(&tmp);
        return Err(werr(&dir)(e));
    }
    // The directory is not readable by callers (that is the point), so it usually
    // cannot be opened for fsync; the file's own data is on disk already.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(done)
}

/// Creates the maildrop (mode 3733) and makes the spool directory searchable (0711)
/// so that callers can reach it. Called by `serve` at start.
pub fn prepare(spool_dir: &Path) -> std::io::Result<PathBuf> {
    let dir = dir(spool_dir);
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = fs::symlink_metadata(&dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if meta.mode() & 0o7777 != DIR_MODE {
        fs::set_permissions(&dir, fs::Permissions::from_mode(DIR_MODE))?;
    }
    let spool_mode = fs::metadata(spool_dir)?.mode() & 0o7777;
    if spool_mode & 0o011 != 0o011 {
        fs::set_permissions(spool_dir, fs::Permissions::from_mode(spool_mode | 0o011))?;
    }
    Ok(dir)
}

/// Starts the collector of `serve`: prepares the maildrop now (so it exists once
/// `serve` listens), then a task makes a pass at once, on SIGUSR1 and every [`INTERVAL`].
pub fn start(
    spool_dir: &Path,
    shared: Shared,
    ingest: Arc<Ingest>,
    shutdown: watch::Receiver<bool>,
) {
    match prepare(spool_dir) {
        Ok(dir) => {
            tokio::spawn(collect(dir, shared, ingest, shutdown));
        }
        Err(e) => tracing::error!(
            "maildrop {}: {e}; messages that sendmail keeps there while serve is down \
             are not collected",
            dir(spool_dir).display()
        ),
    }
}

async fn collect(
    dir: PathBuf,
    shared: Shared,
    ingest: Arc<Ingest>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut usr1 =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).ok();
    loop {
        let n = collect_once(&dir, &shared, &ingest).await;
        if n > 0 {
            tracing::info!("maildrop: {n} messages collected");
        }
        let signalled = async {
            match usr1.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = signalled => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// One pass over the maildrop; returns how many files were spooled or refused.
pub async fn collect_once(dir: &Path, shared: &Shared, ingest: &Arc<Ingest>) -> usize {
    let Ok(rd) = fs::read_dir(dir) else {
        return 0;
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    let mut done = 0;
    for name in names {
        let path = dir.join(&name);
        if name.starts_with(".tmp-") {
            let stale = fs::symlink_metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TMP);
            if stale {
                let _ = fs::remove_file(&path);
            }
            continue;
        }
        if !well_formed(&name) {
            // Not sendmail's: whatever a caller put here is not kept (its name is
            // escaped in the log: it may hold control characters).
            tracing::warn!("maildrop: removing {name:?}: not a maildrop file name");
            let _ = fs::remove_file(&path);
            continue;
        }
        let rt = shared.get();
        match take(&path, &name, &rt, ingest).await {
            Outcome::Spooled | Outcome::Refused => {
                if let Err(e) = fs::remove_file(&path) {
                    tracing::error!("maildrop: cannot remove {}: {e}", path.display());
                }
                done += 1;
            }
            Outcome::Later => {}
        }
    }
    done
}

enum Outcome {
    Spooled,
    Refused,
    Later,
}

/// Reads one maildrop file: a regular file with one link, opened without following
/// symlinks, no larger than a message may be plus its envelope.
fn read_file(path: &Path, max: u64) -> Result<(u32, Duration, Vec<u8>), String> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot open: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.nlink() != 1 {
        return Err("a hard link (a maildrop file has exactly one name)".into());
    }
    // The envelope may name up to max_recipients addresses of up to 1,000 bytes.
    let limit = max.saturating_mul(2).saturating_add(4 << 20);
    if meta.len() > limit {
        return Err(format!("{} bytes, more than a message may be", meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    let age = meta
        .modified()
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default();
    Ok((meta.uid(), age, bytes))
}

fn parse(bytes: &[u8]) -> Result<(DropEnvelope, &[u8]), String> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or("not a sealgate maildrop file")?;
    let nl = memchr::memchr(b'\n', rest).ok_or("no envelope line")?;
    let env: DropEnvelope =
        serde_json::from_slice(&rest[..nl]).map_err(|e| format!("bad envelope: {e}"))?;
    Ok((env, &rest[nl + 1..]))
}

/// The listener's policy hooks. Refusals are audited once, by [`take`], with the
/// stage and the file owner's uid.
struct DropHooks<'a> {
    rt: &'a Runtime,
    ingest: &'a Ingest,
}

impl Hooks for DropHooks<'_> {
    fn authenticate(&self, _: &str, _: &str) -> Option<String> {
        None
    }
    fn check_sender(&self, client: &str, sender: &str) -> Result<(), Reply> {
        crate::smtp::ingest::check_sender(self.rt, client, sender)
    }
    fn check_recipient(&self, client: &str, sender: &str, rcpt: &str) -> Result<(), Reply> {
        crate::smtp::ingest::check_recipient(self.rt, client, sender, rcpt).inspect_err(|_| {
            self.ingest
                .metrics
                .recipients_rejected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
    }
}

/// A maildrop file name as sendmail makes them: letters and digits, then `.mail`.
fn well_formed(name: &str) -> bool {
    name.strip_suffix(".mail").is_some_and(|stem| {
        !stem.is_empty() && stem.len() <= 64 && stem.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// Submits one maildrop file through a session and the ingest pipeline.
async fn take(path: &Path, name: &str, rt: &Arc<Runtime>, ingest: &Arc<Ingest>) -> Outcome {
    let cfg = &rt.config.server;
    // One audit record per refusal: `accept` records its own (`rejected` at DATA).
    // A refused message with a valid envelope is bounced to its sender.
    let refuse =
        |uid: Option<u32>, stage: Stage, why: String, dropped: Option<(&DropEnvelope, &[u8])>| {
            let env = dropped.map(|(e, _)| e);
            tracing::error!("maildrop: {name} (uid {uid:?}) refused at {stage}: {why}");
            if stage != Stage::Data {
                ingest.audit.record(&Event::RefusedMaildrop {
                    stage,
                    peer: Peer::Maildrop,
                    file: name.to_string(),
                    uid,
                    client: "local".into(),
                    from: env.map(|e| e.from.clone()),
                    rcpts: env.map(|e| e.rcpts.clone()),
                    reply: why.clone(),
                    policy_version: rt.policy.version().to_string(),
                });
            }
            if let Some((env, message)) = dropped {
                bounce(rt, ingest, env, message, &why, uid);
            }
            Outcome::Refused
        };
    let (uid, age, bytes) = match read_file(path, cfg.max_message_size) {
        Ok(x) => x,
        Err(why) => return refuse(None, Stage::Maildrop, why, None),
    };
    let (env, message) = match parse(&bytes) {
        Ok(x) => x,
        Err(why) => return refuse(Some(uid), Stage::Maildrop, why, None),
    };
    let limits = SessionLimits {
        hostname: cfg.hostname.clone(),
        max_message_size: cfg.max_message_size,
        max_recipients: cfg.max_recipients,
        require_auth: cfg.require_auth,
        tls_available: false,
        auth_available: false,
        peer_is_loopback: true,
        address_rules: cfg.address_rules(),
    };
    let hooks = DropHooks { rt, ingest };
    let helo = format!("maildrop uid {uid}");
    let mut session = Session::new(limits);
    // A refusal at MAIL or RCPT is final: the policy does not change its mind on retry,
    // and a message over max_recipients never fits.
    let mut say = |line: String, want: u16| -> Result<Step, String> {
        if line.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(format!("line break in {line:?}"));
        }
        match session.command(line.as_bytes(), &hooks) {
            Step::Reply(r) | Step::Close(r) if r.code() != want => Err(r.to_string()),
            step => Ok(step),
        }
    };
    let eight = if message.iter().any(|&b| b >= 0x80) {
        " BODY=8BITMIME"
    } else {
        ""
    };
    let utf8 = if !env.from.is_ascii() || env.rcpts.iter().any(|r| !r.is_ascii()) {
        " SMTPUTF8"
    } else {
        ""
    };
    let mut commands = vec![
        (Stage::Ehlo, format!("EHLO {helo}"), 250),
        (
            Stage::Mail,
            format!("MAIL FROM:<{}>{eight}{utf8}", env.from),
            250,
        ),
    ];
    commands.extend(
        env.rcpts
            .iter()
            .map(|r| (Stage::Rcpt, format!("RCPT TO:<{r}>"), 250)),
    );
    commands.push((Stage::DataCommand, "DATA".to_string(), 354));
    if env.rcpts.is_empty() {
        return refuse(
            Some(uid),
            Stage::Rcpt,
            "no recipients".into(),
            Some((&env, message)),
        );
    }
    for (stage, line, want) in commands {
        if let Err(why) = say(line, want) {
            // DATA refused before any content (`data-command`): not `accept`'s
            // refusal, so audit it here.
            return refuse(Some(uid), stage, why, Some((&env, message)));
        }
    }
    let normalize = cfg.bare_line_endings == crate::config::BareLineEndings::Normalize;
    let mut rx = session.data_receiver(normalize);
    rx.feed(&crate::queue::upstream::dot_stuff(message));
    let tx = session.take_transaction();
    let data = match rx.finish() {
        DataOutcome::Message(m) => m,
        DataOutcome::TooBig => {
            let r = crate::smtp::reply::named::too_big(cfg.max_message_size);
            return refuse(
                Some(uid),
                Stage::Message,
                r.to_string(),
                Some((&env, message)),
            );
        }
        DataOutcome::BareLineEnding => {
            let r = crate::smtp::reply::named::bare_line_ending();
            return refuse(
                Some(uid),
                Stage::Message,
                r.to_string(),
                Some((&env, message)),
            );
        }
    };
    let info = SessionInfo {
        client: session.client().to_string(),
        helo,
        peer: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: false,
    };
    let reply = ingest.accept(rt, &info, tx, data).await;
    if reply.code() == 250 {
        tracing::info!("maildrop: {name} (uid {uid}) {reply}");
        Outcome::Spooled
    } else if reply.is_permanent() {
        // `accept` audited the refusal (`rejected`); the log says where it came from.
        refuse(
            Some(uid),
            Stage::Data,
            reply.to_string(),
            Some((&env, message)),
        )
    } else if age > rt.config.upstream.give_up_after {
        // Deferred for as long as a queued message is retried: refused for good.
        refuse(
            Some(uid),
            Stage::Expired,
            reply.to_string(),
            Some((&env, message)),
        )
    } else {
        tracing::warn!("maildrop: {name} (uid {uid}) deferred: {reply}; trying again later");
        Outcome::Later
    }
}

/// Tells the sender of a refused maildrop message, as Postfix bounces what its pickup
/// refuses: a DSN with the original's headers only, from the null sender, when the
/// sender passes the recipient policy like any recipient; otherwise none (audited).
fn bounce(
    rt: &Runtime,
    ingest: &Ingest,
    env: &DropEnvelope,
    message: &[u8],
    reply: &str,
    uid: Option<u32>,
) {
    use crate::queue::spool::{EntryKind, Envelope};
    if env.from.is_empty() || env.rcpts.is_empty() {
        return;
    }
    // A bounce is mail: it goes where the recipient policy lets it (dsn::route).
    let (to, rerouted) = match crate::queue::dsn::route(rt, "local", &env.from) {
        crate::queue::dsn::Route::Sender(to) => (to, None),
        crate::queue::dsn::Route::Postmaster { address, why } => (address, Some(why)),
        crate::queue::dsn::Route::Nowhere { why } => {
            ingest.audit.record(&Event::BounceSuppressed {
                peer: Peer::Maildrop,
                uid,
                to: env.from.clone(),
                reason: why,
            });
            return;
        }
    };
    if let Some(why) = &rerouted {
        ingest.audit.record(&Event::BounceRerouted {
            peer: Peer::Maildrop,
            uid,
            from: env.from.clone(),
            to: to.clone(),
            reason: why.clone(),
        });
    }
    let hostname = &rt.config.server.hostname;
    let id = crate::queue::spool::new_id();
    let now = crate::clock::unix_now();
    let code: u16 = reply.get(..3).and_then(|c| c.parse().ok()).unwrap_or(550);
    let enhanced = reply.split_whitespace().nth(1).filter(|t| {
        t.split('.').count() == 3 && t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    });
    // Refused for good: a transient code (452 over max_recipients) is reported as failed.
    let mut status = crate::queue::dsn::status_for(code, enhanced);
    if status.starts_with('4') {
        status.replace_range(..1, "5");
    }
    let original = Envelope {
        id: id.clone(),
        from: env.from.clone(),
        rcpts: env.rcpts.clone(),
        created: now,
        client: "local".into(),
        message_id: None,
        policy_version: Some(rt.policy.version().to_string()),
        kind: EntryKind::Message,
        body_8bit: false,
        smtputf8: false,
    };
    let failures: Vec<crate::queue::dsn::Failure> = env
        .rcpts
        .iter()
        .map(|r| crate::queue::dsn::Failure {
            rcpt: r.clone(),
            status: status.clone(),
            diagnostic: reply.to_string(),
        })
        .collect();
    let bytes = crate::queue::dsn::build(
        hostname,
        "none (refused by sealgate's policy when collected from the maildrop)",
        &original,
        message,
        &failures,
        &to,
    );
    let dsn_id = format!("{id}-dsn");
    let dsn_env = Envelope {
        id: dsn_id.clone(),
        from: String::new(),
        rcpts: vec![to.clone()],
        created: now,
        client: "sealgate".into(),
        message_id: Some(format!("<{id}.dsn@{hostname}>")),
        policy_version: None,
        kind: EntryKind::Dsn,
        body_8bit: bytes.iter().any(|&b| b >= 0x80),
        smtputf8: !to.is_ascii(),
    };
    match ingest.spool.store(&[(dsn_env, &bytes)]) {
        Ok(()) => {
            ingest.audit.record(&Event::BouncedMaildrop {
                queue_id: dsn_id.clone(),
                peer: Peer::Maildrop,
                uid,
                to: env.from.clone(),
                rcpts: env.rcpts.clone(),
                reply: reply.to_string(),
            });
            ingest.relay.schedule_now(&[dsn_id]);
        }
        Err(e) => tracing::error!("maildrop: cannot spool the DSN to {}: {e}", env.from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_parse() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join(DIR)).unwrap();
        let p = write(
            d.path(),
            "a@x.test",
            &["b@y.test".into()],
            b"Subject: s\r\n\r\nb\r\n",
        )
        .unwrap();
        assert!(p.to_string_lossy().ends_with(".mail"));
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        let (_, _, bytes) = read_file(&p, 1000).unwrap();
        let (env, msg) = parse(&bytes).unwrap();
        assert_eq!(env.from, "a@x.test");
        assert_eq!(env.rcpts, vec!["b@y.test"]);
        assert_eq!(msg, b"Subject: s\r\n\r\nb\r\n");
        // Hard links and symlinks are not taken.
        let link = d.path().join(DIR).join("l.mail");
        fs::hard_link(&p, &link).unwrap();
        assert!(read_file(&link, 1000).unwrap_err().contains("hard link"));
        let sym = d.path().join(DIR).join("s.mail");
        std::os::unix::fs::symlink(d.path().join("x"), &sym).unwrap();
        assert!(read_file(&sym, 1000).is_err());
        assert!(parse(b"From: x\r\n").is_err());
    }

    #[test]
    fn only_sendmails_names_are_taken() {
        assert!(well_formed("0005F1A2B3C4D0001ABCD0123456789abcdef.mail"));
        for bad in [
            "x.mail.tmp",
            ".tmp-x",
            "a b.mail",
            "../x.mail",
            ".mail",
            "x\u{1b}[2J.mail",
        ] {
            assert!(!well_formed(bad), "{bad:?}");
        }
    }

    #[test]
    fn prepare_sets_modes() {
        let d = tempfile::tempdir().unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let m = prepare(d.path()).unwrap();
        assert_eq!(fs::metadata(&m).unwrap().mode() & 0o7777, DIR_MODE);
        assert_eq!(fs::metadata(d.path()).unwrap().mode() & 0o777, 0o711);
    }
}
