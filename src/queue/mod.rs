//! What happens after `250 queued`: the durable spool ([`spool`]), the relay workers
//! ([`relay`]) and their upstream client ([`upstream`]), delivery status notifications
//! ([`dsn`]), and the maildrop that holds `sendmail` submissions while `serve` is down
//! ([`maildrop`]).

pub mod dsn;
pub mod maildrop;
pub mod relay;
pub mod spool;
pub mod upstream;
