//! Just enough DER (X.690) to write the CMS structures of this module and read our own
//! back.
//!
//! Its one job: tag-length-value encoding and decoding. It knows nothing of CMS beyond
//! `IssuerAndSerialNumber`; the reader never panics and never allocates, returning `None`
//! on anything malformed (indefinite lengths, multi-byte tags, lengths past the end).
//! Invariant: `header_len(n)` is exactly the number of bytes `header(_, n, _)` writes,
//! so callers can size buffers before writing.

pub const INTEGER: u8 = 0x02;
pub const OCTET_STRING: u8 = 0x04;
pub const NULL: u8 = 0x05;
pub const OID: u8 = 0x06;
pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;
/// `[0]` constructed.
pub const CTX0: u8 = 0xA0;
/// `[0]` primitive (IMPLICIT OCTET STRING).
pub const CTX0_PRIMITIVE: u8 = 0x80;

fn len_octets(len: usize) -> usize {
    (usize::BITS - len.leading_zeros()).div_ceil(8) as usize
}

/// Length of the tag and length octets for content of `len` bytes.
pub fn header_len(len: usize) -> usize {
    if len < 0x80 {
        2
    } else {
        2 + len_octets(len)
    }
}

pub fn header(tag: u8, len: usize, out: &mut Vec<u8>) {
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let n = len_octets(len);
        out.push(0x80 | n as u8);
        for i in (0..n).rev() {
            out.push((len >> (8 * i)) as u8);
        }
    }
}

/// One element whose content is `parts` concatenated.
pub fn tlv(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(header_len(len) + len);
    header(tag, len, &mut out);
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// The current time as the signingTime value: UTCTime until 2049, GeneralizedTime after.
pub fn time_now() -> Vec<u8> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let hms = format!("{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60);
    if year < 2050 {
        let t = format!("{:02}{month:02}{day:02}{hms}", year % 100);
        tlv(0x17, &[t.as_bytes()])
    } else {
        let t = format!("{year:04}{month:02}{day:02}{hms}");
        tlv(0x18, &[t.as_bytes()])
    }
}

/// One element read from DER: its tag, its content, and the whole encoding.
pub struct Tlv<'a> {
    pub tag: u8,
    pub value: &'a [u8],
    pub raw: &'a [u8],
}

/// Reads consecutive elements; `None` on anything malformed (never panics).
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { rest: data }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Tlv<'a>> {
        let d = self.rest;
        let tag = *d.first()?;
        if tag & 0x1F == 0x1F {
            return None; // multi-byte tags do not occur in what we read
        }
        let first = *d.get(1)?;
        let (len, head) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let n = usize::from(first & 0x7F);
            if n == 0 || n > std::mem::size_of::<usize>() {
                return None; // indefinite length is not DER
            }
            let len = d
                .get(2..2 + n)?
                .iter()
                .fold(0usize, |l, b| (l << 8) | usize::from(*b));
            (len, 2 + n)
        };
        let raw = d.get(..head.checked_add(len)?)?;
        self.rest = &d[raw.len()..];
        Some(Tlv {
            tag,
            value: &raw[head..],
            raw,
        })
    }

    /// The next element if it has `tag`.
    pub fn take(&mut self, tag: u8) -> Option<Tlv<'a>> {
        self.next().filter(|t| t.tag == tag)
    }
}

/// IssuerAndSerialNumber of a certificate, copied from its own DER.
pub fn issuer_and_serial(cert_der: &[u8]) -> Option<Vec<u8>> {
    let cert = Reader::new(cert_der).take(SEQUENCE)?;
    let tbs = Reader::new(cert.value).take(SEQUENCE)?;
    let mut tbs = Reader::new(tbs.value);
    let mut serial = tbs.next()?;
    if serial.tag == 0xA0 {
        serial = tbs.next()?; // explicit version
    }
    if serial.tag != INTEGER {
        return None;
    }
    let _signature = tbs.take(SEQUENCE)?;
    let issuer = tbs.take(SEQUENCE)?;
    Some(tlv(SEQUENCE, &[issuer.raw, serial.raw]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_len_is_what_header_writes_and_the_reader_reads_it_back() {
        for len in [
            0usize,
            1,
            0x7F,
            0x80,
            0xFF,
            0x100,
            0xFFFF,
            0x1_0000,
            25 << 20,
        ] {
            let mut out = Vec::new();
            header(OCTET_STRING, len, &mut out);
            assert_eq!(out.len(), header_len(len), "length {len}");
            out.resize(out.len() + len, 0xAB);
            let mut r = Reader::new(&out);
            let t = r.next().unwrap();
            assert_eq!(
                (t.tag, t.value.len(), t.raw.len()),
                (OCTET_STRING, len, out.len())
            );
            assert!(r.is_empty());
        }
    }

    #[test]
    fn reader_refuses_malformed_elements_without_panicking() {
        let bad: [&[u8]; 7] = [
            &[],
            &[OCTET_STRING],
            &[OCTET_STRING, 2, 0], // shorter than its length
            &[OCTET_STRING, 0x80], // indefinite length
            &[0x1F, 1, 0],         // multi-byte tag
            &[OCTET_STRING, 0x89, 1, 1, 1, 1, 1, 1, 1, 1, 1], // length wider than usize
            &[OCTET_STRING, 0x82, 1], // length octets cut short
        ];
        for b in bad {
            assert!(Reader::new(b).next().is_none(), "{b:?}");
        }
    }
}
