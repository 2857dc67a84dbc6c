//! Relay workers: take due spool entries, deliver them upstream, and record the outcome.
//!
//! Per recipient: 2xx is done; 4xx, a connection or TLS failure defers with exponential
//! backoff (`retry_base` doubling up to `max_retry_interval`); 5xx, or still failing after
//! `give_up_after`, produces a DSN to the envelope sender (never for the null sender).
//! An entry leaves the spool only when every recipient is done. Upstream connections are
//! kept open and reused across messages by the same worker.
//!
//! Invariant: a reload takes effect on open connections. Each connection carries the
//! generation of the settings it was opened under; [`Relay::set_settings`] bumps the
//! generation before the reload is acknowledged, and a worker closes a connection of an
//! older generation before it would begin another transaction on it (and when idle, as
//! soon as the reload wakes it). A transaction already begun finishes; none begins
//! under TLS trust or a minimum version that the reload replaced.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::audit::{Audit, Event};
use crate::metrics::Metrics;
use crate::queue::dsn::{self, Failure};
use crate::queue::spool::{EntryKind, Envelope, Spool, SpoolEntry, SpoolError};
use crate::queue::upstream::{Connection, RcptOutcome, UpstreamError, UpstreamSettings};

/// Retry and reporting settings that come with the upstream; replaced on reload.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Where and how to reach the upstream.
    pub upstream: UpstreamSettings,
    /// A recipient still failing this long after receipt bounces (`5.4.7`).
    pub give_up_after: Duration,
    /// The first retry interval, doubled per attempt.
    pub retry_base: Duration,
    /// The longest retry interval (`max_retry_interval`).
    pub retry_max: Duration,
    /// Our host name for DSNs.
    pub hostname: String,
}

/// Which entries are due when. `active` entries are being delivered by a worker.
#[derive(Debug, Default)]
struct Schedule {
    by_time: BTreeSet<(u64, String)>,
    when: HashMap<String, u64>,
    active: HashSet<String>,
}

/// How long an upstream connection may sit idle before we close it.
const IDLE_CLOSE: Duration = Duration::from_secs(30);
/// Reused connections idle longer than this are probed with RSET first.
const PROBE_AFTER: Duration = Duration::from_secs(5);

/// An upstream connection held by one worker between messages.
struct Pooled {
    conn: Connection,
    /// The settings generation it was opened under (see [`Relay::set_settings`]).
    generation: u64,
}

/// The relay: schedule plus workers.
pub struct Relay {
    /// The durable queue the relay delivers from and marks entries done in.
    spool: Spool,
    /// Where each delivery, deferral and bounce is recorded for the operator.
    audit: Arc<Audit>,
    /// Counters for relayed, deferred and bounced entries and the queue size.
    metrics: Arc<Metrics>,
    /// Replaced atomically on reload, with its generation (counted from 0 by reloads);
    /// each delivery attempt uses one snapshot.
    settings: RwLock<(u64, Arc<RelaySettings>)>,
    /// Which entries are due when and which a worker holds, so that no entry is
    /// delivered twice at once and retries follow their backoff.
    schedule: Mutex<Schedule>,
    /// Wakes the workers when an entry becomes due early (new mail, `queue retry`,
    /// reload) instead of waiting for the next timer.
    wake: Notify,
    /// The running configuration, whose recipient policy decides where a DSN may go
    /// ([`dsn::route`]); unset only in unit tests, where DSNs go to the sender.
    bounce_policy: std::sync::OnceLock<crate::runtime::Shared>,
}

impl Relay {
    /// A relay over `spool`.
    pub fn new(
        spool: Spool,
        settings: RelaySettings,
        audit: Arc<Audit>,
        metrics: Arc<Metrics>,
    ) -> Arc<Relay> {
        Arc::new(Relay {
            spool,
            audit,
            metrics,
            settings: RwLock::new((0, Arc::new(settings))),
            schedule: Mutex::new(Schedule::default()),
            wake: Notify::new(),
            bounce_policy: std::sync::OnceLock::new(),
        })
    }

    /// Routes DSNs by the recipient policy of `shared` (the server calls this once).
    pub fn route_bounces_with(&self, shared: crate::runtime::Shared) {
        let _ = self.bounce_policy.set(shared);
    }

    /// Swaps in new settings (reload) under a new generation: a transaction in progress
    /// finishes on its connection, which is then closed; idle workers are woken to close
    /// theirs at once.
    pub fn set_settings(&self, s: RelaySettings) {
        {
            let mut cur = self.settings.write().unwrap_or_else(|e| e.into_inner());
            *cur = (cur.0 + 1, Arc::new(s));
        }
        self.wake.notify_waiters();
    }

    /// The current settings and their generation.
    fn current(&self) -> (u64, Arc<RelaySettings>) {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn generation(&self) -> u64 {
        self.settings.read().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Closes `conn` when it was opened under settings a reload has since replaced.
    async fn close_if_outdated(&self, conn: &mut Option<Pooled>) {
        if conn
            .as_ref()
            .is_some_and(|p| p.generation != self.generation())
        {
            if let Some(p) = conn.take() {
                tracing::info!(
                    "closing an upstream connection opened before the reload ({})",
                    p.conn.tls_version
                );
                p.conn.quit().await;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Schedules `id` for delivery at `at_ms` (unix milliseconds); earlier wins.
    pub fn schedule(&self, id: &str, at_ms: u64) {
        {
            let mut s = self.lock();
            if let Some(&old) = s.when.get(id) {
                if old <= at_ms {
                    return;
                }
                s.by_time.remove(&(old, id.to_string()));
            }
            s.by_time.insert((at_ms, id.to_string()));
            s.when.insert(id.to_string(), at_ms);
            self.metrics.queue_size.store(
                s.when.len() as u64 + s.active.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        self.wake.notify_one();
    }

    /// Schedules freshly stored entries for immediate delivery.
    pub fn schedule_now(&self, ids: &[String]) {
        let now = crate::clock::unix_now_ms();
        for id in ids {
            self.schedule(id, now);
        }
    }

    /// Reads the whole spool and schedules every entry (startup, `queue retry`).
    /// `force` makes every entry due now. Damaged entries are quarantined and audited.
    pub fn rescan(&self, force: bool) -> Result<usize, SpoolError> {
        let (entries, bad) = self.spool.scan()?;
        for (id, why) in bad {
            tracing::error!("spool entry {id} is damaged and was moved to corrupt/: {why}");
            self.audit.record(&Event::Quarantined {
                queue_id: id.clone(),
                reason: why.clone(),
            });
        }
        let n = entries.len();
        for e in entries {
            if e.state.held && !force {
                continue;
            }
            let at = if force {
                0
            } else {
                e.state.next_attempt * 1000
            };
            self.schedule(&e.envelope.id, at);
        }
        Ok(n)
    }

    fn take_due(&self) -> Result<String, Option<u64>> {
        let mut s = self.lock();
        let now = crate::clock::unix_now_ms();
        let first = s.by_time.iter().next().cloned();
        match first {
            Some((t, id)) if t <= now => {
                if s.active.contains(&id) {
                    // Being delivered right now: try again shortly.
                    s.by_time.remove(&(t, id.clone()));
                    s.by_time.insert((now + 1000, id.clone()));
                    s.when.insert(id, now + 1000);
                    return Err(Some(1000));
                }
                s.by_time.remove(&(t, id.clone()));
                s.when.remove(&id);
                s.active.insert(id.clone());
                Ok(id)
            }
            Some((t, _)) => Err(Some(t - now)),
            None => Err(None),
        }
    }

    fn finished(&self, id: &str) {
        let mut s = self.lock();
        s.active.remove(id);
        self.metrics.queue_size.store(
            s.when.len() as u64 + s.active.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Starts `workers` delivery tasks; they stop when `shutdown` turns true.
    pub fn start(
        self: &Arc<Self>,
        workers: usize,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..workers)
            .map(|_| {
                let me = self.clone();
                let sd = shutdown.clone();
                tokio::spawn(async move { me.worker(sd).await })
            })
            .collect()
    }

    async fn worker(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut conn: Option<Pooled> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            self.close_if_outdated(&mut conn).await;
            match self.take_due() {
                Ok(id) => {
                    self.deliver(&id, &mut conn).await;
                    self.finished(&id);
                }
                Err(next) => {
                    let wait = next
                        .map(Duration::from_millis)
                        .unwrap_or(IDLE_CLOSE)
                        .min(IDLE_CLOSE);
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => {}
                    }
                    self.close_if_outdated(&mut conn).await;
                    if let Some(c) = &conn {
                        if c.conn.last_used.elapsed() >= IDLE_CLOSE {
                            if let Some(c) = conn.take() {
                                c.conn.quit().await;
                            }
                        }
                    }
                }
            }
        }
        if let Some(c) = conn.take() {
            c.conn.quit().await;
        }
    }

    async fn connect(&self, s: &RelaySettings) -> Result<Connection, UpstreamError> {
        self.metrics
            .upstream_connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let r = Connection::open(&s.upstream).await;
        if matches!(
            r,
            Err(UpstreamError::Tls { .. }
                | UpstreamError::NoStarttls(_)
                | UpstreamError::Injection)
        ) {
            self.metrics
                .upstream_tls_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    /// One delivery attempt of one entry.
    /// Reads an entry and its message for delivery (blocking file I/O); `None` when there
    /// is nothing to do now (gone, held, damaged and quarantined, or unreadable: retried).
    fn load_for_delivery(&self, id: &str) -> Option<(SpoolEntry, Vec<u8>)> {
        let (entry, message) = match self.spool.load(id) {
            Ok(x) => x,
            Err(SpoolError::NotFound(_)) => return None,
            Err(SpoolError::Corrupt { why, .. }) => {
                tracing::error!("spool entry {id} is damaged: {why}; moved to corrupt/");
                let _ = self.spool.quarantine(id, &why);
                self.audit.record(&Event::Quarantined {
                    queue_id: id.to_string(),
                    reason: why.clone(),
                });
                return None;
            }
            Err(e) => {
                tracing::error!("cannot read spool entry {id}: {e}; retrying in a minute");
                self.schedule(id, crate::clock::unix_now_ms() + 60_000);
                return None;
            }
        };
        if entry.state.held {
            return None;
        }
        if entry.pending().is_empty() {
            let _ = self.spool.remove(id);
            return None;
        }
        Some((entry, message))
    }

    /// One delivery attempt of one entry. Spool file I/O runs on blocking threads so that
    /// SMTP sessions on the async workers never wait for the disk.
    async fn deliver(self: &Arc<Self>, id: &str, conn: &mut Option<Pooled>) {
        let (me, owned_id) = (self.clone(), id.to_string());
        let Ok(Some((entry, message))) =
            tokio::task::spawn_blocking(move || me.load_for_delivery(&owned_id)).await
        else {
            return;
        };
        let pending = entry.pending();
        let (mut generation, mut settings);
        let env = &entry.envelope;
        let mut attempt = 0;
        // The TLS session the last attempt ran over, kept for the audit record even when
        // the attempt failed and its connection was dropped.
        let mut used_tls: Option<(String, String)> = None;
        let result = loop {
            attempt += 1;
            self.close_if_outdated(conn).await;
            (generation, settings) = self.current();
            let reused = conn.is_some();
            if let Some(c) = conn.as_mut() {
                let stale = c.conn.last_used.elapsed() >= IDLE_CLOSE
                    || (c.conn.last_used.elapsed() >= PROBE_AFTER && !c.conn.still_usable().await);
                if stale {
                    conn.take();
                }
            }
            if conn.is_none() {
                match self.connect(&settings).await {
                    Ok(c) => {
                        *conn = Some(Pooled {
                            conn: c,
                            generation,
                        })
                    }
                    Err(e) => break Err(e),
                }
            }
            // A reload while this connection was being opened or probed: it carries no
            // transaction; reconnect under the new settings.
            if self.generation() != generation {
                continue;
            }
            let Some(Pooled { conn: c, .. }) = conn.as_mut() else {
                continue;
            };
            used_tls = Some((c.tls_version.clone(), c.cipher.clone()));
            match c
                .send(&env.from, &pending, &message, env.body_8bit, env.smtputf8)
                .await
            {
                Ok(r) => {
                    if c.broken {
                        conn.take();
                    }
                    break Ok(r);
                }
                Err(e) => {
                    let text_went_out = c.data_sent;
                    conn.take();
                    // A reused connection may have been closed by the server meanwhile;
                    // but once the text went out the upstream may have it, and an
                    // immediate resend could deliver it twice: that waits for the backoff.
                    if reused && attempt == 1 && !e.is_permanent() && !text_went_out {
                        continue;
                    }
                    break Err(e);
                }
            }
        };
        let (tls_version, cipher) = used_tls.unwrap_or_default();
        let outcomes: Vec<(String, RcptOutcome)> = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("delivery of {id} failed: {e}");
                let outcome = e.outcome();
                pending
                    .iter()
                    .map(|r| (r.clone(), outcome.clone()))
                    .collect()
            }
        };
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            me.record_outcomes(&entry, &message, outcomes, &settings, &tls_version, &cipher)
        })
        .await;
    }

    fn record_outcomes(
        &self,
        entry: &SpoolEntry,
        message: &[u8],
        outcomes: Vec<(String, RcptOutcome)>,
        settings: &RelaySettings,
        tls_version: &str,
        cipher: &str,
    ) {
        let env = &entry.envelope;
        let mut state = entry.state.clone();
        state.attempts += 1;
        let mut delivered = Vec::new();
        let mut failures = Vec::new();
        let mut deferred = Vec::new();
        let mut last_reply = String::new();
        for (rcpt, o) in outcomes {
            match o {
                RcptOutcome::Delivered(r) => {
                    last_reply = r.to_string();
                    delivered.push(rcpt.clone());
                    state.done.push(rcpt);
                }
                RcptOutcome::Permanent(r) => {
                    failures.push(Failure {
                        rcpt: rcpt.clone(),
                        status: r.status(),
                        diagnostic: r.to_string(),
                    });
                    state.done.push(rcpt);
                }
                RcptOutcome::Transient(why) => deferred.push((rcpt, why)),
            }
        }
        if !delivered.is_empty() {
            self.metrics
                .relayed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.audit.record(&Event::Relayed {
                entry: env.audit_entry(),
                rcpts: delivered,
                upstream: settings.upstream.host.clone(),
                reply: last_reply,
                tls_version: tls_version.to_string(),
                cipher: cipher.to_string(),
                attempts: state.attempts,
            });
        }
        let age = Duration::from_secs(crate::clock::unix_now().saturating_sub(env.created));
        if !deferred.is_empty() && age >= settings.give_up_after {
            for (rcpt, why) in deferred.drain(..) {
                failures.push(Failure {
                    rcpt: rcpt.clone(),
                    status: "5.4.7".into(),
                    diagnostic: format!(
                        "gave up after {} (give_up_after); last error: {why}",
                        humanize(settings.give_up_after)
                    ),
                });
                state.done.push(rcpt);
            }
        }
        if !failures.is_empty() {
            if let Err(why) = self.bounce(env, message, &failures, settings) {
                // Without its DSN a failure must not count as done: the recipients stay
                // in the queue and the bounce is tried again with the next attempt.
                for f in failures {
                    state.done.retain(|d| *d != f.rcpt);
                    deferred.push((f.rcpt, format!("{}; DSN not written: {why}", f.diagnostic)));
                }
            }
        }
        if deferred.is_empty() {
            if let Err(e) = self.spool.remove(&env.id) {
                tracing::error!("cannot remove delivered entry {}: {e}", env.id);
            }
            return;
        }
        let backoff = backoff(settings.retry_base, settings.retry_max, state.attempts);
        state.next_attempt = crate::clock::unix_now() + backoff.as_secs().max(1);
        state.last_error = deferred.first().map(|(_, w)| w.clone());
        // Persist the state before the audit record: whoever reads "deferred" in the
        // audit log and then asks `queue list` must see the same reason.
        if let Err(e) = self.spool.set_state(&env.id, &state) {
            tracing::error!("cannot record delivery state of {}: {e}", env.id);
        }
        self.metrics
            .deferred
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.audit.record(&Event::Deferred {
            entry: env.audit_entry(),
            rcpts: deferred.iter().map(|(r, _)| r.clone()).collect(),
            reason: state.last_error.clone(),
            attempts: state.attempts,
            retry_in_seconds: backoff.as_secs().max(1),
            // None when no TLS session was up (the connection itself failed).
            tls_version: Some(tls_version.to_string()).filter(|v| !v.is_empty()),
            cipher: Some(cipher.to_string()).filter(|v| !v.is_empty()),
        });
        self.schedule(
            &env.id,
            crate::clock::unix_now_ms() + backoff.as_millis() as u64,
        );
    }

    /// Queues a DSN for `failures` (none for a null sender or a DSN) and audits it;
    /// `Err` when the DSN could not be written to the spool.
    fn bounce(
        &self,
        env: &Envelope,
        message: &[u8],
        failures: &[Failure],
        settings: &RelaySettings,
    ) -> Result<(), String> {
        let count_bounced = || {
            self.metrics
                .bounced
                .fetch_add(failures.len() as u64, std::sync::atomic::Ordering::Relaxed)
        };
        let bounced = |dsn: Option<String>, dsn_to: Option<String>, note: Option<String>| {
            self.audit.record(&Event::Bounced {
                entry: env.audit_entry(),
                rcpts: failures.iter().map(|f| f.rcpt.clone()).collect(),
                reasons: failures.iter().map(|f| f.diagnostic.clone()).collect(),
                dsn,
                dsn_to,
                note,
            })
        };
        if env.from.is_empty() || env.kind == EntryKind::Dsn {
            bounced(None, None, Some("null sender: no DSN is sent".into()));
            count_bounced();
            return Ok(());
        }
        // A bounce is mail: its recipient passes the recipient policy like any other.
        let route = match self.bounce_policy.get() {
            Some(shared) => dsn::route(&shared.get(), &env.client, &env.from),
            None => dsn::Route::Sender(env.from.clone()),
        };
        let (dsn_to, route_note) = match route {
            dsn::Route::Sender(to) => (to, None),
            dsn::Route::Postmaster { address, why } => (address, Some(why)),
            dsn::Route::Nowhere { why } => {
                bounced(None, None, Some(format!("no DSN is sent: {why}")));
                count_bounced();
                return Ok(());
            }
        };
        let bytes = dsn::build(
            &settings.hostname,
            &settings.upstream.host,
            env,
            message,
            failures,
            &dsn_to,
        );
        let dsn_env = Envelope {
            id: dsn_id(&env.id, failures),
            from: String::new(),
            rcpts: vec![dsn_to.clone()],
            created: crate::clock::unix_now(),
            client: "sealgate".into(),
            message_id: Some(format!("<{}.dsn@{}>", env.id, settings.hostname)),
            policy_version: None,
            kind: EntryKind::Dsn,
            body_8bit: bytes.iter().any(|&b| b >= 0x80),
            smtputf8: env.smtputf8,
        };
        let dsn_id = dsn_env.id.clone();
        // A crash after the DSN was spooled but before the failed recipients were
        // recorded as done repeats this bounce on restart; the DSN is already queued
        // under the same id and must not go out twice.
        if self.spool.entry(&dsn_id).is_ok() {
            tracing::info!("DSN {dsn_id} for {} is already queued", env.id);
        } else if let Err(e) = self.spool.store(&[(dsn_env, &bytes)]) {
            tracing::error!("cannot spool DSN for {}: {e}", env.id);
            return Err(e.to_string());
        }
        // Counted once the bounce is final: a DSN that could not be written leaves the
        // recipients queued, and they are counted when their bounce succeeds.
        count_bounced();
        self.schedule_now(std::slice::from_ref(&dsn_id));
        bounced(
            Some(dsn_id),
            Some(dsn_to),
            route_note.map(|why| format!("DSN sent to the postmaster: {why}")),
        );
        Ok(())
    }
}

/// The queue id of the DSN that reports `failures` of entry `id`: the same failures of
/// the same entry always give the same id (so a repeated bounce finds its DSN queued),
/// different recipients a different one. At most 20 + 5 + 16 characters, within the
/// spool's 64.
fn dsn_id(id: &str, failures: &[Failure]) -> String {
    use sha2::{Digest, Sha256};
    let mut rcpts: Vec<&str> = failures.iter().map(|f| f.rcpt.as_str()).collect();
    rcpts.sort_unstable();
    let mut h = Sha256::new();
    for r in rcpts {
        h.update(r.as_bytes());
        h.update(b"\n");
    }
    let digest = h.finalize();
    let tag = crate::hex::lower(&digest[..digest.len().min(8)]);
    format!("{id}-dsn-{tag}")
}

/// `base * 2^(attempts-1)`, at most `max`.
pub fn backoff(base: Duration, max: Duration, attempts: u32) -> Duration {
    let shift = attempts.saturating_sub(1).min(20);
    base.saturating_mul(1u32 << shift).min(max)
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s > 0 && s.is_multiple_of(86400) {
        format!("{}d", s / 86400)
    } else if s > 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_secs(60);
        let m = Duration::from_secs(3600);
        assert_eq!(backoff(b, m, 1), Duration::from_secs(60));
        assert_eq!(backoff(b, m, 3), Duration::from_secs(240));
        assert_eq!(backoff(b, m, 30), m);
    }

    fn failure(rcpt: &str) -> Failure {
        Failure {
            rcpt: rcpt.into(),
            status: "5.1.1".into(),
            diagnostic: "550 5.1.1 no such user".into(),
        }
    }

    #[test]
    fn dsn_ids_follow_the_failed_recipients() {
        let a = dsn_id("ID1", &[failure("a@x.example"), failure("b@x.example")]);
        assert_eq!(
            a,
            dsn_id("ID1", &[failure("b@x.example"), failure("a@x.example")])
        );
        assert_ne!(a, dsn_id("ID1", &[failure("a@x.example")]));
        assert_ne!(
            a,
            dsn_id("ID2", &[failure("a@x.example"), failure("b@x.example")])
        );
        assert!(a.starts_with("ID1-dsn-") && a.len() == "ID1-dsn-".len() + 16);
    }

    /// A crash between spooling a DSN and recording the failure repeats the bounce at
    /// the next start: the sender still gets one DSN.
    #[test]
    fn a_repeated_bounce_queues_one_dsn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("spool");
        let tls = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        );
        let settings = RelaySettings {
            upstream: UpstreamSettings {
                host: "upstream.test".into(),
                port: 25,
                mode: crate::config::UpstreamTls::Starttls,
                server_name: rustls_pki_types::ServerName::try_from("upstream.test").expect("name"),
                tls,
                credentials: None,
                helo: "sealgate.test".into(),
                timeout: Duration::from_secs(5),
            },
            give_up_after: Duration::from_secs(3600),
            retry_base: Duration::from_secs(60),
            retry_max: Duration::from_secs(3600),
            hostname: "sealgate.test".into(),
        };
        let relay = Relay::new(
            spool.clone(),
            settings.clone(),
            Arc::new(Audit::open(None).expect("audit")),
            Arc::new(Metrics::default()),
        );
        let env = crate::queue::spool::test_envelope(
            "app@sender.example",
            &["a@x.example", "b@x.example"],
        );
        let message = b"From: app@sender.example\r\nSubject: s\r\n\r\nbody\r\n";
        let failures = [failure("a@x.example")];
        relay
            .bounce(&env, message, &failures, &settings)
            .expect("first bounce");
        relay
            .bounce(&env, message, &failures, &settings)
            .expect("repeated bounce");
        assert_eq!(spool.scan().expect("scan").0.len(), 1, "one DSN, not two");
        // Another recipient failing later is another DSN.
        relay
            .bounce(&env, message, &[failure("b@x.example")], &settings)
            .expect("second failure");
        assert_eq!(spool.scan().expect("scan").0.len(), 2);
        assert_eq!(relay.metrics.bounced.load(Ordering::Relaxed), 3);

        // A DSN that cannot be written: an error, and nothing counted as bounced.
        std::fs::remove_dir_all(dir.path().join("queue")).expect("rm queue");
        std::fs::write(dir.path().join("queue"), b"not a directory").expect("block queue");
        assert!(relay
            .bounce(&env, message, &[failure("c@x.example")], &settings)
            .is_err());
        assert_eq!(relay.metrics.bounced.load(Ordering::Relaxed), 3);
    }
}
