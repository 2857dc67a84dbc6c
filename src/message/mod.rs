//! Reading a message: the MIME tree and header fields ([`mime`]), one reader for every
//! step after DATA (policy, transforms, DKIM).

pub mod mime;
