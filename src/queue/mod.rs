//! What happens after `250 queued`: the durable spool ([`spool`]), the relay workers
//! ([`relay`]) and their upstream client ([`upstream`]), and delivery status
//! notifications ([`dsn`]).

pub mod dsn;
pub mod relay;
pub mod spool;
pub mod upstream;
