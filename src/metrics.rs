//! Counters and a Prometheus text endpoint (`[metrics] listen`, loopback only).
//!
//! Counters are plain atomics incremented on the hot path; the endpoint renders them on
//! request. It serves `GET /metrics` only and never shows message data.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Every counter sealgate exports.
#[derive(Debug, Default)]
pub struct Metrics {
    pub sessions: AtomicU64,
    pub sessions_active: AtomicU64,
    pub messages_accepted: AtomicU64,
    pub messages_rejected: AtomicU64,
    pub recipients_rejected: AtomicU64,
    pub relayed: AtomicU64,
    pub deferred: AtomicU64,
    pub bounced: AtomicU64,
    pub upstream_connections: AtomicU64,
    pub upstream_tls_failures: AtomicU64,
    pub queue_size: AtomicU64,
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

/// Serves `/metrics` until the listener task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n =
                match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
            let req = String::from_utf8_lossy(&buf[..n]);
            let resp = if req.starts_with("GET /metrics") {
                let body = m.render();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}
