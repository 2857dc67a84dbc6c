//! `sealgate serve`: wires the runtime, spool, relay, listeners, metrics and signals.
//!
//! Startup delivers whatever the spool already holds. SIGHUP reloads the configuration
//! (a broken one keeps the running set and logs why); SIGUSR1 makes every queued entry
//! due now (`sealgate queue retry`) and collects the maildrop ([`crate::smtp::maildrop`]);
//! SIGTERM/SIGINT stop accepting, drain sessions and exit.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::audit::{Audit, Event};
use crate::metrics::Metrics;
use crate::queue::relay::{Relay, RelaySettings};
use crate::queue::spool::Spool;
use crate::queue::upstream::UpstreamSettings;
use crate::runtime::{Runtime, Shared};
use crate::smtp::ingest::Ingest;

/// Relay settings from a runtime (reads the upstream password).
pub fn relay_settings(rt: &Runtime) -> anyhow::Result<RelaySettings> {
    let cfg = &rt.config;
    let password = cfg.upstream_password().context("upstream password")?;
    let upstream = UpstreamSettings::new(&cfg.upstream, password, &cfg.server.hostname)
        .context("upstream TLS settings")?;
    Ok(RelaySettings {
        upstream,
        give_up_after: cfg.upstream.give_up_after,
        retry_base: cfg.upstream.retry_base,
        retry_max: cfg.upstream.max_retry_interval,
        hostname: cfg.server.hostname.clone(),
    })
}

/// A running server, for `demo` and tests that start it in-process.
pub struct Running {
    /// Addresses actually bound (useful when the config says port 0).
    pub addrs: Vec<std::net::SocketAddr>,
    /// Send `true` to stop.
    pub shutdown: watch::Sender<bool>,
    /// Completes when the server has stopped.
    pub done: tokio::task::JoinHandle<()>,
}

/// Starts the server for `config_path`; returns once it is listening.
pub async fn start(config_path: &Path) -> anyhow::Result<Running> {
    let rt = Runtime::load(config_path)?;
    let spool = Spool::open(&rt.config.spool.dir).context("opening the spool")?;
    // The lock comes first: a second server on this spool must stop before it touches
    // anything (emptying tmp/ under a running server would lose messages in flight).
    let pidfile = spool.dir().join(crate::queue::spool::PIDFILE);
    let pid_lock = match crate::queue::spool::claim_pidfile(spool.dir()) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            return Err(e).with_context(|| format!("{}", pidfile.display()));
        }
        // A full spool disk must not keep the server from starting: delivering the
        // queue is what frees the space. Without the pid file `queue retry` cannot
        // signal this server (it finds no lock and says so).
        Err(e) => {
            tracing::error!(
                "cannot write {}: {e}; `sealgate queue retry` will not reach this server",
                pidfile.display()
            );
            None
        }
    };
    // Before anything is accepted: what a crashed predecessor left in tmp/ was never acknowledged.
    spool.remove_unacknowledged();
    let audit = Arc::new(
        Audit::open(rt.config.audit.path.as_deref()).with_context(|| {
            format!(
                "opening the audit log {}",
                rt.config
                    .audit
                    .path
                    .as_deref()
                    .unwrap_or(Path::new("-"))
                    .display()
            )
        })?,
    );
    let metrics = Arc::new(Metrics::default());
    let relay = Relay::new(
        spool.clone(),
        relay_settings(&rt)?,
        audit.clone(),
        metrics.clone(),
    );
    let queued = relay.rescan(false).context("reading the spool")?;
    if queued > 0 {
        tracing::info!("{queued} spooled entries to deliver");
    }
    let listeners = crate::smtp::listener::bind(&rt.config.server.listen).await?;
    let addrs: Vec<_> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    if let Some(m) = &rt.config.metrics {
        let l = tokio::net::TcpListener::bind(m.listen)
            .await
            .with_context(|| format!("metrics listen {}", m.listen))?;
        tokio::spawn(crate::metrics::serve(l, metrics.clone()));
    }
    let workers = rt.config.upstream.connections;
    let drain = rt.config.server.data_timeout;
    audit.record(&Event::Started {
        listen: addrs.iter().map(|a| a.to_string()).collect(),
        config: config_path.display().to_string(),
        queued,
    });
    let shared = Shared::new(rt);
    relay.route_bounces_with(shared.clone());
    let (tx, rx) = watch::channel(false);
    let relay_tasks = relay.start(workers, rx.clone());
    let ingest = Arc::new(Ingest {
        spool,
        relay: relay.clone(),
        audit: audit.clone(),
        metrics,
    });
    if shared.get().config.sendmail.maildrop {
        crate::smtp::maildrop::start(
            ingest.spool.dir(),
            shared.clone(),
            ingest.clone(),
            rx.clone(),
        );
    }
    tokio::spawn(signals(
        config_path.to_path_buf(),
        shared.clone(),
        relay.clone(),
        audit.clone(),
        tx.clone(),
    ));
    tokio::spawn(watch_policies(
        config_path.to_path_buf(),
        shared.clone(),
        relay.clone(),
        audit.clone(),
        rx.clone(),
    ));
    let done = tokio::spawn(async move {
        crate::smtp::listener::serve(listeners, shared, ingest, rx, drain).await;
        for t in relay_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
        let _ = std::fs::remove_file(&pidfile);
        drop(pid_lock);
        audit.record(&Event::Stopped);
    });
    Ok(Running {
        addrs,
        shutdown: tx,
        done,
    })
}

/// Reloads the configuration at `path`; on success swaps it in.
pub fn reload(path: &Path, shared: &Shared, relay: &Relay, audit: &Audit) -> anyhow::Result<()> {
    let rt = Runtime::load(path)?;
    let settings = relay_settings(&rt)?;
    relay.set_settings(settings);
    let version = rt.policy.version().to_string();
    shared.set(rt);
    audit.record(&Event::Reloaded {
        config: path.display().to_string(),
        policy_version: version,
    });
    Ok(())
}

/// A fingerprint of the policy directory: names, sizes and modification times.
fn policy_fingerprint(dir: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let m = e.metadata().ok()?;
                    Some((
                        e.file_name().to_string_lossy().into_owned(),
                        m.len(),
                        m.modified().ok()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The policy directory's files and their contents, in name order.
fn policy_contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let bytes = std::fs::read(e.path()).ok()?;
                    Some((e.file_name().to_string_lossy().into_owned(), bytes))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// How long the policy directory must be unchanged before a reload.
const POLICY_QUIET: Duration = Duration::from_secs(1);
/// How often the watcher looks while waiting for quiet.
const POLICY_POLL: Duration = Duration::from_millis(200);

/// Reloads when the policy directory changes: only once it has been quiet for
/// [`POLICY_QUIET`] (no name, size or modification time changed) and two reads of
/// every file, [`POLICY_POLL`] apart, agree; an editor writing a file in place in
/// several steps would otherwise put a half-written allow or deny list in force. A
/// change that leaves the policy version (a hash of names and contents) as it runs
/// now reloads nothing and writes no audit record. Editors should still save
/// atomically (write a new file, rename it over the old).
async fn watch_policies(
    path: PathBuf,
    shared: Shared,
    relay: Arc<Relay>,
    audit: Arc<Audit>,
    mut shutdown: watch::Receiver<bool>,
) {
    let dir = shared.get().config.policy.dir.clone();
    // Nothing seen yet: the first look compares the directory with the running policy
    // (by version), so an edit made between the start-up load and this task is not missed.
    let mut last = Vec::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
        let now = policy_fingerprint(&dir);
        if now == last {
            continue;
        }
        // Debounce on the last change: quiet for POLICY_QUIET.
        let mut settled = now;
        let mut quiet_since = tokio::time::Instant::now();
        while quiet_since.elapsed() < POLICY_QUIET {
            tokio::select! {
                _ = tokio::time::sleep(POLICY_POLL) => {}
                _ = shutdown.changed() => return,
            }
            let again = policy_fingerprint(&dir);
            if again != settled {
                settled = again;
                quiet_since = tokio::time::Instant::now();
            }
        }
        // A writer within one timestamp tick and size: the contents must agree too.
        let first = policy_contents(&dir);
        tokio::time::sleep(POLICY_POLL).await;
        if policy_contents(&dir) != first || policy_fingerprint(&dir) != settled {
            continue;
        }
        last = settled;
        match crate::policy::PolicySet::load(&dir) {
            Ok(p) if p.version() == shared.get().policy.version() => continue,
            _ => {}
        }
        match reload(&path, &shared, &relay, &audit) {
            Ok(()) => tracing::info!(
                "policy directory changed: reloaded (policy version {})",
                shared.get().policy.version()
            ),
            Err(e) => {
                tracing::error!("policy directory changed but the new set is broken; keeping the running one: {e:#}");
                audit.record(&Event::ReloadFailed {
                    error: format!("{e:#}"),
                });
            }
        }
    }
}

/// SIGHUP: reopen the audit log, then reload; a broken new set keeps the running one.
fn on_hangup(path: &Path, shared: &Shared, relay: &Relay, audit: &Audit) {
    if let Err(e) = audit.reopen() {
        tracing::error!("cannot reopen the audit log: {e}; still writing to the old file");
    }
    match reload(path, shared, relay, audit) {
        Ok(()) => tracing::info!("configuration reloaded from {}", path.display()),
        Err(e) => {
            tracing::error!("reload failed, keeping the running configuration: {e:#}");
            audit.record(&Event::ReloadFailed {
                error: format!("{e:#}"),
            });
        }
    }
}

async fn signals(
    path: PathBuf,
    shared: Shared,
    relay: Arc<Relay>,
    audit: Arc<Audit>,
    shutdown: watch::Sender<bool>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hup), Ok(mut term), Ok(mut int), Ok(mut usr1)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => on_hangup(&path, &shared, &relay, &audit),
            _ = usr1.recv() => {
                match relay.rescan(true) {
                    Ok(n) => tracing::info!("queue flush: {n} entries due now"),
                    Err(e) => tracing::error!("queue flush failed: {e}"),
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("stopping: no new sessions; finishing the ones in progress");
    let _ = shutdown.send(true);
}
