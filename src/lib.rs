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

// Leaves: used by everyone, depending on nothing else in the crate. Every module uses only
// modules of lower layers (the order is LAYERS in tests/layering.rs, which checks it).
pub mod address;
pub mod backoff;
pub mod clock;
pub mod escape;
pub mod glob;
pub mod hex;
pub mod secret;
pub mod units;
pub mod validity;

// Configuration and what a reload swaps; the audit log and metrics every step writes to.
pub mod audit;
pub mod config;
pub mod metrics;
pub mod runtime;

// The flow of a message, in order.
pub mod message;
pub mod pipeline;
pub mod policy;
pub mod queue;
pub mod smtp;
pub mod transform;

// The operator's commands.
pub mod ops;
