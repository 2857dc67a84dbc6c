//! What happens after `250 queued`: the durable spool ([`spool`]), the relay workers
//! ([`relay`]) and their upstream client ([`upstream`]) with its typed replies
//! ([`reply`]), delivery status notifications ([`dsn`]), and the maildrop that holds `sendmail` submissions while `serve` is down
//! ([`maildrop`]).

pub mod dsn;
pub mod maildrop;
pub mod relay;
pub mod reply;
pub mod spool;
pub mod upstream;
