//! The `[recipients]` allow and deny lists: which addresses sealgate relays to at all.
//!
//! Entries are `*` (every recipient), a domain (`example.com`: exactly that domain),
//! `*.domain` (every subdomain, not the domain itself), `*@domain` (same as `domain`) or an
//! address (`alice@partner.org`). Comparison is case-insensitive for the whole address:
//! mail servers treat local parts case-insensitively in practice, and a deny entry must
//! not be bypassed by writing `CEO@example.com`.
//! Addresses arrive in their canonical spelling (`crate::address`); with a
//! `recipient_delimiter`, an address entry also covers the entry's subaddresses: a deny
//! of `ceo@example.com` covers `ceo+x@example.com`, as the upstream delivers both to one
//! mailbox, and an allow of `alice@example.com` covers `alice+news@example.com`.
//! Invariant: a lookup costs a few hash probes (one per label of the recipient's domain),
//! never a scan of the list; deny is always consulted and wins over allow.

use std::collections::{HashMap, HashSet};

/// Where one list entry came from, for explain and replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntrySource {
    /// Index into the policy set's file names.
    pub(crate) file: usize,
    /// The entry as written.
    pub(crate) entry: String,
}

/// One list (allow or deny) as hash maps keyed by the normalised entry.
#[derive(Debug, Default)]
pub(crate) struct AddressList {
    everyone: Option<EntrySource>,
    addresses: HashMap<String, EntrySource>,
    /// Domains that have at least one address entry (for warnings, without a scan).
    address_domains: HashSet<String>,
    domains: HashMap<String, EntrySource>,
    subdomains_of: HashMap<String, EntrySource>,
}

/// A parsed entry, normalised to lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    Everyone,
    Address(String),
    Domain(String),
    SubdomainsOf(String),
}

fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c == '-' || c.is_alphanumeric() || c == '_')
        })
}

/// Parses one entry as written in `allow` / `deny`; the error explains the accepted forms.
pub(crate) fn parse_entry(raw: &str) -> Result<Entry, String> {
    const FORMS: &str = "expected \"*\", a domain (\"example.com\"), \"*.example.com\" for its subdomains, or an address (\"alice@example.com\")";
    let s = raw.trim();
    if s != raw || s.is_empty() {
        return Err(format!("entry {raw:?} is empty or has spaces; {FORMS}"));
    }
    let s = s.to_lowercase();
    if s == "*" {
        return Ok(Entry::Everyone);
    }
    if let Some((local, domain)) = s.rsplit_once('@') {
        let domain = domain.trim_end_matches('.');
        if !valid_domain(domain) {
            return Err(format!(
                "entry \"{raw}\": \"{domain}\" is not a domain; {FORMS}"
            ));
        }
        if local == "*" {
            return Ok(Entry::Domain(domain.to_owned()));
        }
        if local.is_empty()
            || local.contains(['*', '?', '<', '>', ' ', ',', ';', '"'])
            || local.chars().any(char::is_control)
        {
            return Err(format!(
                "entry \"{raw}\": wildcards and brackets are not allowed in the local part; {FORMS}"
            ));
        }
        return Ok(Entry::Address(format!("{local}@{domain}")));
    }
    if let Some(parent) = s.strip_prefix("*.") {
        let parent = parent.trim_end_matches('.');
        if valid_domain(parent) {
            return Ok(Entry::SubdomainsOf(parent.to_owned()));
        }
        return Err(format!(
            "entry \"{raw}\": \"{parent}\" is not a domain; {FORMS}"
        ));
    }
    let domain = s.trim_end_matches('.');
    if valid_domain(domain) {
        return Ok(Entry::Domain(domain.to_owned()));
    }
    Err(format!("entry \"{raw}\" is not valid; {FORMS}"))
}

/// A recipient address split and lower-cased: strips `<...>` and a trailing dot on the domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NormalAddress {
    /// `local@domain`, lower case (or just the input lower-cased when it has no `@`).
    pub(crate) full: String,
    /// Byte offset of the domain in `full`, or `full.len()` when there is no `@`.
    domain_start: usize,
    /// `full` without its subaddress (`ceo+x@d` → `ceo@d`), when a delimiter cuts it.
    pub(crate) base: Option<String>,
    /// Where the upstream may route it (`u%d@x` → `u@d`), when routing characters are
    /// allowed; each is judged too.
    pub(crate) routed: Vec<String>,
}

impl NormalAddress {
    /// As [`NormalAddress::new`], with the subaddress cut at the first of `delimiters`.
    pub(crate) fn with_delimiters(raw: &str, delimiters: &[char]) -> NormalAddress {
        let mut a = NormalAddress::new(raw);
        a.base = crate::address::subaddress_base(&a.full, delimiters);
        a
    }

    pub(crate) fn new(raw: &str) -> NormalAddress {
        let s = raw.trim();
        let s = s.strip_prefix('<').unwrap_or(s);
        let s = s.strip_suffix('>').unwrap_or(s);
        let lower = s.to_lowercase();
        match lower.rsplit_once('@') {
            Some((local, domain)) => {
                let domain = domain.trim_end_matches('.');
                NormalAddress {
                    full: format!("{local}@{domain}"),
                    domain_start: local.len() + 1,
                    base: None,
                    routed: Vec::new(),
                }
            }
            None => NormalAddress {
                domain_start: lower.len(),
                full: lower,
                base: None,
                routed: Vec::new(),
            },
        }
    }

    pub(crate) fn domain(&self) -> &str {
        self.full.get(self.domain_start..).unwrap_or("")
    }
}

impl AddressList {
    /// Adds an entry; returns the earlier source when the same entry was already present.
    pub(crate) fn insert(&mut self, entry: Entry, src: EntrySource) -> Option<EntrySource> {
        match entry {
            Entry::Everyone => self.everyone.replace(src),
            Entry::Address(a) => {
                if let Some((_, d)) = a.rsplit_once('@') {
                    self.address_domains.insert(d.to_owned());
                }
                self.addresses.insert(a, src)
            }
            Entry::Domain(d) => self.domains.insert(d, src),
            Entry::SubdomainsOf(d) => self.subdomains_of.insert(d, src),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.everyone.is_none()
            && self.addresses.is_empty()
            && self.domains.is_empty()
            && self.subdomains_of.is_empty()
    }

    /// The most specific entry that covers `addr`: address (as written, then without its
    /// subaddress), then domain, then the nearest `*.parent`, then `*`.
    pub(crate) fn lookup(&self, addr: &NormalAddress) -> Option<&EntrySource> {
        if let Some(s) = self.addresses.get(&addr.full) {
            return Some(s);
        }
        if let Some(s) = addr.base.as_ref().and_then(|b| self.addresses.get(b)) {
            return Some(s);
        }
        let domain = addr.domain();
        if !domain.is_empty() {
            if let Some(s) = self.domains.get(domain) {
                return Some(s);
            }
            let mut rest = domain;
            while let Some((_, parent)) = rest.split_once('.') {
                if let Some(s) = self.subdomains_of.get(parent) {
                    return Some(s);
                }
                rest = parent;
            }
        }
        self.everyone.as_ref()
    }

    /// True when some entry could approve an address in `domain` (used for warnings).
    pub(crate) fn covers_some_address_in(&self, domain: &str) -> bool {
        let probe = NormalAddress::new(&format!("probe@{domain}"));
        self.lookup(&probe).is_some() || self.address_domains.contains(probe.domain())
    }

    /// True when every address in `domain` is covered (used for warnings about deny).
    pub(crate) fn covers_whole_domain(&self, domain: &str) -> bool {
        let probe = NormalAddress::new(&format!("probe@{domain}"));
        // An address entry covers one address only; ask with the address map left out.
        !self.addresses.contains_key(&probe.full) && self.lookup(&probe).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AddressList {
        let mut l = AddressList::default();
        for e in entries {
            l.insert(
                parse_entry(e).unwrap(),
                EntrySource {
                    file: 0,
                    entry: (*e).into(),
                },
            );
        }
        l
    }

    fn hit(l: &AddressList, a: &str) -> Option<String> {
        l.lookup(&NormalAddress::new(a)).map(|s| s.entry.clone())
    }

    #[test]
    fn domain_subdomain_address_and_star() {
        let l = list(&["example.com", "*.example.net", "Alice@Partner.org"]);
        assert_eq!(hit(&l, "bob@EXAMPLE.com").as_deref(), Some("example.com"));
        assert_eq!(
            hit(&l, "<bob@example.com.>").as_deref(),
            Some("example.com")
        );
        assert_eq!(hit(&l, "bob@sub.example.com"), None);
        assert_eq!(
            hit(&l, "bob@a.b.example.net").as_deref(),
            Some("*.example.net")
        );
        assert_eq!(hit(&l, "bob@example.net"), None);
        assert_eq!(
            hit(&l, "alice@partner.ORG").as_deref(),
            Some("Alice@Partner.org")
        );
        assert_eq!(hit(&l, "bob@partner.org"), None);
        assert_eq!(hit(&l, "postmaster"), None);
        let all = list(&["*"]);
        assert_eq!(hit(&all, "x@anything.example").as_deref(), Some("*"));
    }

    #[test]
    fn an_address_entry_covers_its_subaddresses() {
        let l = list(&["ceo@example.com", "alice+news@example.com"]);
        let hit = |a: &str, d: &[char]| {
            l.lookup(&NormalAddress::with_delimiters(a, d))
                .map(|s| s.entry.clone())
        };
        assert_eq!(
            hit("CEO+x@example.com", &['+']).as_deref(),
            Some("ceo@example.com")
        );
        assert_eq!(
            hit("ceo-x@example.com", &['+', '-']).as_deref(),
            Some("ceo@example.com")
        );
        assert_eq!(hit("ceo-x@example.com", &['+']), None);
        assert_eq!(hit("ceo+x@example.com", &[]), None);
        assert_eq!(hit("ceox@example.com", &['+']), None);
        // An entry with a subaddress covers that one only.
        assert_eq!(
            hit("alice+news@example.com", &['+']).as_deref(),
            Some("alice+news@example.com")
        );
        assert_eq!(hit("alice@example.com", &['+']), None);
        assert_eq!(hit("alice+other@example.com", &['+']), None);
    }

    #[test]
    fn star_at_domain_is_the_domain() {
        assert_eq!(
            parse_entry("*@Bank.Example").unwrap(),
            Entry::Domain("bank.example".into())
        );
    }

    #[test]
    fn refuses_malformed_entries() {
        for bad in [
            "",
            " example.com",
            "exa mple.com",
            "a*@example.com",
            "*.",
            "user@",
            "a..b",
            "-a.com",
        ] {
            assert!(parse_entry(bad).is_err(), "{bad:?}");
        }
    }
}
