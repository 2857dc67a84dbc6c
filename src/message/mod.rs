//! Reading a message: the MIME tree and header fields ([`mime`]), one reader for every
//! step after DATA (policy, transforms, DKIM), and which of its parts are attachments
//! ([`attachment`]).

pub mod attachment;
pub mod mime;
