//! The operator's commands, one module each: `serve` ([`serve`]), `check`, `explain`,
//! `doctor`, `dkim-keygen` ([`keygen`]), the `queue` commands ([`queue`]), `sendmail`,
//! and `demo` with its capture server ([`capture`]) and throwaway PKI ([`pki`]). `src/main.rs` and `src/cli.rs` only map
//! arguments and exit codes to these.

pub mod capture;
pub mod check;
pub mod demo;
pub mod doctor;
pub mod explain;
pub mod keygen;
pub mod pki;
pub mod queue;
pub mod sendmail;
pub mod serve;
