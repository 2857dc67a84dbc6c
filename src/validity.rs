//! Certificate validity as of now, in one wording for every place that reports it
//! (`sealgate check`, `sealgate doctor`, the certificate store, the S/MIME signer):
//! not yet valid, expired, expiring within a warning window, or valid.
//!
//! The wording: `expired 3 days ago (Nov 28 12:00:00 2026 GMT)`,
//! `expires in 10 days (Dec 11 12:00:00 2026 GMT)`,
//! `not valid yet: valid from Dec  5 12:00:00 2026 GMT, in 4 days`. Day counts are
//! whole days, rounded toward zero, as OpenSSL's `ASN1_TIME_diff` gives them.
//!
//! A leaf: depends on nothing else in the crate (std and the `openssl` crate only).

use std::fmt;

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::x509::X509Ref;

/// Certificates that expire within this many days are worth a warning.
pub const WARN_DAYS: i64 = 30;

/// Where a certificate stands as of now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validity {
    /// notBefore is in the future.
    NotYetValid {
        /// notBefore as OpenSSL prints it.
        not_before: String,
        /// Whole days until it becomes valid.
        days: i64,
    },
    /// notAfter is in the past.
    Expired {
        /// notAfter as OpenSSL prints it.
        not_after: String,
        /// Whole days since it expired.
        days_ago: i64,
    },
    /// Valid now, and expires within the warning window the caller chose.
    ExpiresSoon {
        /// notAfter as OpenSSL prints it.
        not_after: String,
        /// Whole days left.
        days: i64,
    },
    /// Valid now, and for longer than the warning window.
    Valid {
        /// notAfter as OpenSSL prints it.
        not_after: String,
        /// Whole days left.
        days: i64,
    },
    /// OpenSSL could not read the clock: treated as unusable rather than guessed.
    ClockUnavailable,
}

impl Validity {
    /// True when the certificate may be used now (valid, expiring soon or not).
    pub fn is_usable(&self) -> bool {
        matches!(self, Validity::Valid { .. } | Validity::ExpiresSoon { .. })
    }

    /// Whole days until notAfter: negative once expired; `None` when not yet valid or
    /// the clock is unreadable.
    pub fn days_left(&self) -> Option<i64> {
        match self {
            Validity::Valid { days, .. } | Validity::ExpiresSoon { days, .. } => Some(*days),
            Validity::Expired { days_ago, .. } => Some(-days_ago),
            Validity::NotYetValid { .. } | Validity::ClockUnavailable => None,
        }
    }
}

impl fmt::Display for Validity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Validity::NotYetValid { not_before, days } => {
                write!(f, "not valid yet: valid from {not_before}, in {days} days")
            }
            Validity::Expired {
                not_after,
                days_ago,
            } => write!(f, "expired {days_ago} days ago ({not_after})"),
            Validity::ExpiresSoon { not_after, days } | Validity::Valid { not_after, days } => {
                write!(f, "expires in {days} days ({not_after})")
            }
            Validity::ClockUnavailable => {
                write!(f, "validity unknown: the system clock cannot be read")
            }
        }
    }
}

/// Whole days from `now` to `t` (negative when `t` is past), rounded toward zero.
fn days_between(now: &Asn1TimeRef, t: &Asn1TimeRef) -> Option<i64> {
    now.diff(t).ok().map(|d| i64::from(d.days))
}

/// The validity of `cert` as of now; [`Validity::ExpiresSoon`] when fewer than
/// `warn_days` whole days are left.
pub fn of(cert: &X509Ref, warn_days: i64) -> Validity {
    let Ok(now) = Asn1Time::days_from_now(0) else {
        return Validity::ClockUnavailable;
    };
    let (not_before, not_after) = (cert.not_before(), cert.not_after());
    if not_before > now.as_ref() {
        return Validity::NotYetValid {
            not_before: not_before.to_string(),
            days: days_between(&now, not_before).unwrap_or(0),
        };
    }
    let Some(days) = days_between(&now, not_after) else {
        return Validity::ClockUnavailable;
    };
    let not_after_text = not_after.to_string();
    if not_after < now.as_ref() {
        Validity::Expired {
            not_after: not_after_text,
            days_ago: -days,
        }
    } else if days < warn_days {
        Validity::ExpiresSoon {
            not_after: not_after_text,
            days,
        }
    } else {
        Validity::Valid {
            not_after: not_after_text,
            days,
        }
    }
}

/// A self-signed certificate valid from `from` to `to` days relative to now, an hour
/// inside each day so whole-day counts do not straddle a boundary (for tests here and in
/// `sealgate check`).
#[cfg(test)]
pub(crate) fn test_certificate(from: i64, to: i64) -> openssl::x509::X509 {
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::x509::{X509Builder, X509NameBuilder};
    let key = PKey::generate_ed25519().unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "t").unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // An hour inside each day, so the whole-day counts do not straddle a boundary.
    let at = |days: i64| Asn1Time::from_unix(now + days * 86_400 + 3_600).unwrap();
    b.set_not_before(&at(from)).unwrap();
    b.set_not_after(&at(to)).unwrap();
    b.sign(&key, MessageDigest::null()).unwrap();
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_in_the_one_wording() {
        let v = of(&test_certificate(-10, 100), WARN_DAYS);
        assert!(matches!(v, Validity::Valid { days: 100, .. }), "{v:?}");
        assert!(v.is_usable());
        assert!(v.to_string().starts_with("expires in 100 days ("), "{v}");

        let v = of(&test_certificate(-10, 10), WARN_DAYS);
        assert!(matches!(v, Validity::ExpiresSoon { days: 10, .. }), "{v:?}");
        assert!(v.is_usable());
        assert!(v.to_string().starts_with("expires in 10 days ("), "{v}");

        let v = of(&test_certificate(-10, -4), WARN_DAYS);
        assert!(matches!(v, Validity::Expired { days_ago: 3, .. }), "{v:?}");
        assert!(!v.is_usable());
        assert_eq!(v.days_left(), Some(-3));
        assert!(v.to_string().starts_with("expired 3 days ago ("), "{v}");

        let v = of(&test_certificate(5, 50), WARN_DAYS);
        assert!(matches!(v, Validity::NotYetValid { days: 5, .. }), "{v:?}");
        assert!(!v.is_usable());
        assert!(
            v.to_string().starts_with("not valid yet: valid from "),
            "{v}"
        );
    }
}
