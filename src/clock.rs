//! The wall clock, read in one place: unix time in seconds, milliseconds and
//! microseconds, and the two date formats sealgate writes — RFC 5322 (`Date:`,
//! `Received:`, DSNs) and RFC 3339 (audit records). A clock before 1970 reads as 0.
//!
//! A leaf: depends on nothing else in the crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    since_epoch().as_secs()
}

/// Unix milliseconds now.
pub fn unix_now_ms() -> u64 {
    since_epoch().as_millis() as u64
}

/// Unix microseconds now.
pub fn unix_now_micros() -> u64 {
    since_epoch().as_micros() as u64
}

/// Current time as RFC 3339 UTC with milliseconds.
pub fn rfc3339_now() -> String {
    let now = since_epoch();
    let (y, mo, d, h, mi, s) = civil(now.as_secs() as i64);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        now.subsec_millis()
    )
}

/// Unix seconds to (year, month, day, hour, minute, second), UTC.
pub fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Howard Hinnant's days-from-civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        ((rem % 3600) / 60) as u32,
        (rem % 60) as u32,
    )
}

/// RFC 5322 date for `secs` (UTC), e.g. `Sun, 29 Nov 2026 13:00:00 +0000`.
pub fn rfc5322_date(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]
        [secs.div_euclid(86400).rem_euclid(7) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(mo - 1) as usize];
    format!("{wd}, {d} {mon} {y} {h:02}:{mi:02}:{s:02} +0000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_right() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(
            rfc5322_date(1_795_957_200),
            "Sun, 29 Nov 2026 13:00:00 +0000"
        );
        assert_eq!(rfc5322_date(-1), "Wed, 31 Dec 1969 23:59:59 +0000");
    }

    #[test]
    fn now_agrees_in_every_unit() {
        let (s, ms, us) = (unix_now(), unix_now_ms(), unix_now_micros());
        assert!(s > 1_700_000_000, "{s}");
        assert!(ms / 1000 >= s && ms / 1000 <= s + 1, "{s} {ms}");
        assert!(us / 1000 >= ms, "{ms} {us}");
        let r = rfc3339_now();
        assert_eq!(r.len(), "2026-11-29T13:00:00.000Z".len(), "{r}");
        assert!(r.ends_with('Z'), "{r}");
    }
}
