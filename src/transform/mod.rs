//! Message transforms, applied in a fixed order: attachments, S/MIME sign, S/MIME encrypt, DKIM.

pub mod attachments;
pub mod dkim;
pub mod smime;
