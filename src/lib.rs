//! sealgate: a local SMTP submission proxy that enforces the security team's policy.
//!
//! ```text
//! app --SMTP--> listener/session --(RCPT: recipient policy)--> DATA --> parse
//!    --> policy: decide per recipient --> transform (attachments -> sign -> encrypt, S/MIME or OpenPGP -> DKIM)
//!    --> spool (fsync, then 250) --> relay workers --TLS only--> upstream
//!                                    '--> retry with backoff / DSN bounce to sender
//! every step --> audit log (JSON lines) + metrics + tracing
//! ```
//!
//! Each module owns one step of that picture; see its top comment.
//! The end-of-DATA part (parse, policy, transform, DKIM) is one function,
//! [`pipeline::decide`], called by `serve` (then the spool write) and by `explain`.

pub mod address;
pub mod audit;
pub mod capture;
pub mod check;
pub mod cli_support;
pub mod config;
pub mod demo;
pub mod doctor;
pub mod dsn;
pub mod escape;
pub mod explain;
pub mod ingest;
pub mod listener;
pub mod maildrop;
pub mod metrics;
pub mod pipeline;
pub mod pki;
pub mod policy;
pub mod relay;
pub mod reply;
pub mod runtime;
pub mod secret;
pub mod sendmail;
pub mod server;
pub mod session;
pub mod spool;
pub mod submit;
pub mod transform;
pub mod upstream;
pub mod verdict;
