//! Counters and a Prometheus text endpoint (`[metrics] listen`, loopback only).
//!
//! Counters are plain atomics incremented on the hot path; the endpoint renders them on
//! request. It serves `GET /metrics` only and never shows message data. The endpoint is
//! bounded ([`MAX_SCRAPES`] connections, a 5 s deadline each) so that it can never use
//! up the descriptors the mail service needs.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Every counter sealgate exports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// SMTP sessions accepted since start: the load the applications put on the proxy.
    pub sessions: AtomicU64,
    /// SMTP sessions open now: how close the listener is to `max_connections`.
    pub sessions_active: AtomicU64,
    /// Messages accepted and spooled: the mail that will leave.
    pub messages_accepted: AtomicU64,
    /// Messages refused at end of DATA: a rise shows a policy hitting an application.
    pub messages_rejected: AtomicU64,
    /// Recipients refused at RCPT: applications writing to unapproved addresses.
    pub recipients_rejected: AtomicU64,
    /// Spool entries delivered upstream: the mail that left.
    pub relayed: AtomicU64,
    /// Delivery attempts deferred: an upstream in trouble shows here first.
    pub deferred: AtomicU64,
    /// Recipients that failed for good (a DSN went back): lost mail to look into.
    pub bounced: AtomicU64,
    /// Upstream connections opened: shows whether connections are reused.
    pub upstream_connections: AtomicU64,
    /// Upstream connections refused for TLS reasons: a certificate or TLS setting to fix.
    pub upstream_tls_failures: AtomicU64,
    /// Entries in the spool now: a growing queue means mail is not leaving.
    pub queue_size: AtomicU64,
    /// Messages refused because a transform or its self-check failed: a fault of ours
    /// or of a key or certificate, not of the sender.
    pub transform_failures: AtomicU64,
}

impl Metrics {
    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let c = |name: &str, help: &str, kind: &str, v: &AtomicU64| {
            format!(
                "# HELP sealgate_{name} {help}\n# TYPE sealgate_{name} {kind}\nsealgate_{name} {}\n",
                v.load(Relaxed)
            )
        };
        [
            c(
                "sessions_total",
                "SMTP sessions accepted.",
                "counter",
                &self.sessions,
            ),
            c(
                "sessions_active",
                "SMTP sessions open now.",
                "gauge",
                &self.sessions_active,
            ),
            c(
                "messages_accepted_total",
                "Messages accepted and spooled.",
                "counter",
                &self.messages_accepted,
            ),
            c(
                "messages_rejected_total",
                "Messages refused at end of DATA.",
                "counter",
                &self.messages_rejected,
            ),
            c(
                "recipients_rejected_total",
                "Recipients refused at RCPT.",
                "counter",
                &self.recipients_rejected,
            ),
            c(
                "relayed_total",
                "Spool entries delivered upstream.",
                "counter",
                &self.relayed,
            ),
            c(
                "deferred_total",
                "Delivery attempts deferred.",
                "counter",
                &self.deferred,
            ),
            c(
                "bounced_total",
                "Recipients that failed for good.",
                "counter",
                &self.bounced,
            ),
            c(
                "upstream_connections_total",
                "Upstream TLS connections opened.",
                "counter",
                &self.upstream_connections,
            ),
            c(
                "upstream_tls_failures_total",
                "Upstream connections refused for TLS reasons.",
                "counter",
                &self.upstream_tls_failures,
            ),
            c(
                "queue_entries",
                "Entries in the spool.",
                "gauge",
                &self.queue_size,
            ),
            c(
                "transform_failures_total",
                "Messages refused because a transform or its self-check failed.",
                "counter",
                &self.transform_failures,
            ),
        ]
        .concat()
    }
}

/// Scrapes served at once; a further connection waits in the kernel's accept queue and
/// costs this process no file descriptor (Prometheus scrapes one at a time).
pub const MAX_SCRAPES: usize = 16;
/// How long a scraper has to send its request line, and to take the reply.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `/metrics` until the listener task is dropped.
///
/// Bounded like the SMTP listener: a permit is taken before `accept`, so at most
/// [`MAX_SCRAPES`] connections are open; a connection that does not send its request
/// within [`SCRAPE_TIMEOUT`] is closed; a failing `accept` (out of descriptors) backs off
/// instead of spinning.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    let mut backoff = crate::backoff::AcceptBackoff::default();
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut sock = match listener.accept().await {
            Ok((sock, _)) => {
                backoff.reset();
                sock
            }
            Err(e) => {
                backoff.wait("metrics", &e).await;
                continue;
            }
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(SCRAPE_TIMEOUT, answer(&mut sock, &m)).await;
        });
    }
}

/// Reads one request (its first 1 KiB is enough to see the request line) and answers it.
async fn answer(sock: &mut TcpStream, m: &Metrics) -> std::io::Result<()> {
    let mut buf = [0u8; 1024];
    let n = sock.read(&mut buf).await?;
    let req = String::from_utf8_lossy(&buf[..n]);
    let resp = if req.starts_with("GET /metrics") {
        let body = m.render();
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
    };
    sock.write_all(resp.as_bytes()).await
}
