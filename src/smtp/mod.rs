//! The SMTP server side: the accept loop and I/O driver ([`listener`]), the sans-IO
//! session state machine ([`session`]), every reply we send ([`reply`]), the decisions a
//! session asks for and the end of DATA into the spool ([`ingest`]), and the small
//! loopback client that `sendmail` and `demo` submit with ([`submit`]); and the other way
//! in, the maildrop that holds `sendmail` submissions while `serve` is down and feeds
//! them through a [`session::Session`] and [`ingest`] as the listener does ([`maildrop`]).

pub mod ingest;
pub mod listener;
pub mod maildrop;
pub mod reply;
pub mod session;
pub mod submit;
