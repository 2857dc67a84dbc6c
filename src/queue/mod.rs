//! What happens after `250 queued`: the durable spool ([`spool`]), the relay workers
//! ([`relay`]) and their upstream client ([`upstream`]) with its typed replies
//! ([`reply`]), and delivery status notifications ([`dsn`]).

pub mod dsn;
pub mod relay;
pub mod reply;
pub mod spool;
pub mod upstream;
