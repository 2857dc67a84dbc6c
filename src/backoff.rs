//! The pause a listener takes after a failed `accept`, shared by the SMTP listener and
//! the metrics endpoint so neither spins on the CPU when out of file descriptors.
//!
//! A leaf: depends on nothing else in the crate (std, tokio and tracing only).

use std::time::Duration;

/// The pause after a failed `accept` (EMFILE, ENFILE, ENOBUFS): 100 ms, doubling up to
/// 1 s while failures repeat, back to nothing after a success. A listener out of
/// descriptors is woken again at once by the connection still waiting; without the
/// pause its loop spins on the CPU.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    /// The next pause; zero until the first failure.
    next: Duration,
}

impl AcceptBackoff {
    /// First pause after a failure.
    const FIRST: Duration = Duration::from_millis(100);
    /// Longest pause.
    const MAX: Duration = Duration::from_secs(1);

    /// Logs the failure (once per streak, so a full descriptor table does not flood the
    /// log) and sleeps.
    pub async fn wait(&mut self, listener: &str, e: &std::io::Error) {
        if self.next.is_zero() {
            tracing::warn!("{listener} listener: accept failed: {e}; backing off");
            self.next = Self::FIRST;
        }
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Self::MAX);
    }

    /// An accept succeeded: the next failure starts over at 100 ms.
    pub fn reset(&mut self) {
        self.next = Duration::ZERO;
    }
}
