//! sealgate: a local SMTP submission proxy that enforces the security team's policy.
//!
//! ```text
//! app --SMTP--> listener/session --(RCPT: recipient policy)--> DATA --> parse
//!    --> policy: decide per recipient --> transform (attachments -> S/MIME sign -> S/MIME encrypt -> DKIM)
//!    --> spool (fsync, then 250) --> relay workers --TLS only--> upstream
//!                                    '--> retry with backoff / DSN bounce to sender
//! every step --> audit log (JSON lines) + metrics + tracing
//! ```
//!
//! Each module owns one step of that picture; see its top comment.

pub mod audit;
pub mod config;
pub mod doctor;
pub mod dsn;
pub mod metrics;
pub mod policy;
pub mod relay;
pub mod reply;
pub mod secret;
pub mod session;
pub mod spool;
pub mod transform;
pub mod upstream;
pub mod verdict;
