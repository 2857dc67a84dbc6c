//! Object identifiers the CMS code writes and compares, as whole DER elements (tag,
//! length, value).
//!
//! Its one job: name the OIDs once. It holds constants only; each is checked against
//! OpenSSL's own encoding of the dotted form in the tests below.

pub const DATA: &[u8] = &[6, 9, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 1, 7, 1];
pub const SIGNED_DATA: &[u8] = &[6, 9, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 1, 7, 2];
pub const ENVELOPED_DATA: &[u8] = &[6, 9, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 1, 7, 3];
pub const CONTENT_TYPE: &[u8] = &[6, 9, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 1, 9, 3];
pub const MESSAGE_DIGEST: &[u8] = &[6, 9, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 1, 9, 4];
pub const SIGNING_TIME: &[u8] = &[6, 9, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 1, 9, 5];
pub const SMIME_CAPABILITIES: &[u8] = &[6, 9, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 1, 9, 15];
pub const RSA_ENCRYPTION: &[u8] = &[6, 9, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 1, 1, 1];
pub const SHA256: &[u8] = &[6, 9, 0x60, 0x86, 0x48, 1, 0x65, 3, 4, 2, 1];
pub const AES256_CBC: &[u8] = &[6, 9, 0x60, 0x86, 0x48, 1, 0x65, 3, 4, 1, 42];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_match_openssl() {
        use openssl::asn1::Asn1Object;
        for (ours, dotted) in [
            (DATA, "1.2.840.113549.1.7.1"),
            (SIGNED_DATA, "1.2.840.113549.1.7.2"),
            (ENVELOPED_DATA, "1.2.840.113549.1.7.3"),
            (CONTENT_TYPE, "1.2.840.113549.1.9.3"),
            (MESSAGE_DIGEST, "1.2.840.113549.1.9.4"),
            (SIGNING_TIME, "1.2.840.113549.1.9.5"),
            (SMIME_CAPABILITIES, "1.2.840.113549.1.9.15"),
            (RSA_ENCRYPTION, "1.2.840.113549.1.1.1"),
            (SHA256, "2.16.840.1.101.3.4.2.1"),
            (AES256_CBC, "2.16.840.1.101.3.4.1.42"),
        ] {
            let o = Asn1Object::from_str(dotted).unwrap();
            assert_eq!(&ours[2..], o.as_slice(), "{dotted}");
            assert_eq!(usize::from(ours[1]), ours.len() - 2);
        }
    }
}
