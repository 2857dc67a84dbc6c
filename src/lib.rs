//! sealgate: a local SMTP submission proxy that enforces the security team's policy.
//!
//! ```text
//! app --SMTP--> smtp::listener + smtp::session --(MAIL/RCPT: smtp::ingest asks policy)--> DATA
//!    --> pipeline::decide (one path, shared by `serve` and `explain`):
//!          pipeline::receipt --> transform::seven_bit --> pipeline::trace
//!          --> message::Message (bytes + header index + MIME tree, read once)
//!          --> pipeline::header_from --> policy (verdict per recipient) --> transform plan
//!          --> per copy: attachments -> sign -> encrypt (S/MIME or OpenPGP) -> DKIM
//!    --> queue::spool (fsync, then 250) --> queue::relay --> queue::upstream --TLS only--> upstream
//!                                           '--> retry with backoff / queue::dsn bounce to sender
//! every step --> audit (one typed Event per record) + metrics + tracing
//! ```
//!
//! The modules follow that picture: [`smtp`] (the way in), [`pipeline`] (the one decision
//! path at end of DATA, [`pipeline::decide`], called by `serve` and by `explain`),
//! [`message`] (a message read once), [`policy`], [`transform`], [`queue`] (after `250`),
//! and [`ops`] (the operator's commands). Each module owns one step; see its top comment.
//! Every module uses only modules of lower layers, in the order below (checked by
//! `tests/layering.rs`).

// Leaves: used by everyone, depending on nothing else in the crate.
pub mod address;
pub mod backoff;
pub mod clock;
pub mod escape;
pub mod glob;
pub mod hex;
pub mod secret;
pub mod units;
pub mod validity;

// Reading a message.
pub mod message;

// Deciding: the policy reads the message and names its verdict.
pub mod policy;

// Carrying out the verdict: attachments, S/MIME, OpenPGP, DKIM.
pub mod transform;

// The configuration file, and what a reload swaps as one unit.
pub mod config;
pub mod runtime;

// What every step from the session on writes to.
pub mod audit;
pub mod metrics;

// The way in (its reply and session types sit below queue and pipeline).
pub mod smtp;

// After `250`: spool, relay, upstream, DSN.
pub mod queue;

// The one decision path at end of DATA.
pub mod pipeline;

// The operator's commands.
pub mod ops;
