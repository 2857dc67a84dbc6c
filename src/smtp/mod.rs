//! The SMTP server side: the accept loop and I/O driver ([`listener`]), the sans-IO
//! session state machine ([`session`]), every reply we send ([`reply`]), the decisions a
//! session asks for and the end of DATA into the spool ([`ingest`]), and the small
//! loopback client that `sendmail` and `demo` submit with ([`submit`]).

pub mod ingest;
pub mod listener;
pub mod reply;
pub mod session;
pub mod submit;
