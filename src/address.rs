//! One canonical spelling per envelope address, computed once at MAIL/RCPT before any
//! policy, certificate, key or DKIM lookup, and the one that is relayed upstream.
//!
//! An upstream MTA reads more into an address than its plain `local@domain` form: Postfix
//! as Debian ships it turns `user%other.example@ours` (percent hack) and
//! `other.example!user@ours` (bang path) into `user@other.example`, dequotes
//! `"user@other.example"@ours` and then routes on the inner `@`, drops RFC 822 comments
//! (`ceo(x)@ours` is `ceo@ours`) and delivers `ceo+tag@ours` to `ceo@ours`
//! (`recipient_delimiter`). So the canonical form is:
//! - domain: lower case, A-label (IDNA/UTS-46 via the `idna` crate), no trailing dot; an
//!   address literal (`[192.0.2.1]`) is kept lower-cased;
//! - local part: as written, quotes removed where they are unnecessary (`"ceo"` is `ceo`),
//!   kept (with minimal escapes) where the content needs them (`"john smith"`);
//! - refused: comments and parentheses, a second unquoted `@`, source routes
//!   (`<@a,@b:user@c>`) and any local part that is not a dot-atom or a quoted string;
//!   the routing characters `%`, `!` and a quoted `@` unless the operator sets
//!   `[server] allow_routing_characters = true`.
//!
//! [`subaddress_base`] gives the address a delimiter-aware upstream delivers to
//! (`ceo+tag@x` → `ceo@x`), so the allow/deny lists can judge both.
//! Invariant: [`canonical`] is idempotent: the canonical form of a canonical form is itself.

use std::fmt;

/// Why an address was refused before any policy saw it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// `<@a,@b:user@c>`: RFC 5321 §4.1.2 source routes.
    #[error("source routes are not accepted (RFC 5321 §4.1.2)")]
    SourceRoute,
    /// `%`, `!` or `@` in the local part: an upstream may relay on it.
    #[error("the local part holds the routing character '{0}', which the upstream may use to deliver elsewhere (sealgate.toml [server] allow_routing_characters)")]
    RoutingCharacter(char),
    /// RFC 822 comments are not part of an envelope address.
    #[error("comments and parentheses are not allowed in an address (RFC 5321 §4.1.2)")]
    Comment,
    /// A second `@` outside quotes.
    #[error("more than one '@' outside quotes (RFC 5321 §4.1.2)")]
    SecondAt,
    /// The local part is neither a dot-atom nor a quoted string.
    #[error("the local part is not a dot-atom or a quoted string (RFC 5321 §4.1.2)")]
    LocalPart,
    /// The domain is not a host name (or address literal) IDNA can map.
    #[error("the domain is not a valid host name (RFC 5321 §4.1.2, IDNA)")]
    Domain,
    /// `local@domain` is needed.
    #[error("address must be local-part@domain")]
    NoDomain,
}

/// How strictly addresses are read; from `[server]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressRules {
    /// Accept `%`, `!` and a quoted `@` in local parts (the upstream may re-route them).
    pub allow_routing_characters: bool,
}

/// A mailbox in its canonical spelling: `local@domain` (the local part possibly quoted).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CanonicalAddress(String);

impl CanonicalAddress {
    /// The canonical spelling.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the value, giving the spelling.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for CanonicalAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// RFC 5322 atext, plus any non-ASCII character (RFC 6532).
fn atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn is_dot_atom(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(|a| !a.is_empty() && a.chars().all(atext))
}

/// Splits `local@domain` where the local part may be a quoted string; returns the local
/// part's content (unescaped), whether it was quoted, and the domain.
fn split(path: &str) -> Result<(String, bool, &str), AddressError> {
    if let Some(rest) = path.strip_prefix('"') {
        let mut content = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, n)) => content.push(n),
                    None => return Err(AddressError::LocalPart),
                },
                '"' => {
                    let after = rest.get(i + 1..).unwrap_or("");
                    let Some(domain) = after.strip_prefix('@') else {
                        return Err(AddressError::LocalPart);
                    };
                    return Ok((content, true, domain));
                }
                c if c.is_control() => return Err(AddressError::LocalPart),
                c => content.push(c),
            }
        }
        return Err(AddressError::LocalPart);
    }
    let Some((local, domain)) = path.split_once('@') else {
        return Err(AddressError::NoDomain);
    };
    Ok((local.to_owned(), false, domain))
}

/// Why an address given on a command line or in the config (`sendmail -f`, `[sendmail]
/// sender`) cannot go into an SMTP command, if it cannot.
pub fn address_problem(s: &str) -> Option<&'static str> {
    if s.chars().any(|c| c == '\r' || c == '\n') {
        Some("it contains a line break (CR or LF), which would inject SMTP commands")
    } else if s.contains('\0') {
        Some("it contains a NUL byte")
    } else if s.chars().any(|c| c.is_control()) {
        Some("it contains a control character")
    } else if s.contains('<') || s.contains('>') {
        Some("angle brackets are allowed only around the whole address")
    } else if s.len() > 998 {
        Some("it is longer than an SMTP command line allows")
    } else {
        None
    }
}

/// A domain as DNS, `d=` and the key and certificate lookups spell it: trimmed, no
/// trailing dot, lower case, internationalized labels as A-labels (`EXÄMPLE.com.` →
/// `xn--exmple-cua.com`), so that a domain written either way meets itself. Left
/// lower-cased as it is when IDNA cannot convert it. Unlike [`canonical`] it refuses
/// nothing: it is for domains the operator wrote (config, DNS names), not for input.
pub fn normalize_domain(domain: &str) -> String {
    let d = domain.trim().trim_end_matches('.');
    if d.is_ascii() {
        return d.to_ascii_lowercase();
    }
    idna::domain_to_ascii(d).unwrap_or_else(|_| d.to_lowercase())
}

/// The canonical domain: lower-case A-label, or a lower-cased address literal.
fn canonical_domain(domain: &str) -> Result<String, AddressError> {
    if domain.contains('@') {
        return Err(AddressError::SecondAt);
    }
    if domain.contains(['(', ')']) {
        return Err(AddressError::Comment);
    }
    if domain.starts_with('[') {
        let ok = domain.ends_with(']')
            && domain.len() > 2
            && domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "[]:.-".contains(c));
        return if ok {
            Ok(domain.to_ascii_lowercase())
        } else {
            Err(AddressError::Domain)
        };
    }
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    let ascii = idna::domain_to_ascii(domain).map_err(|_| AddressError::Domain)?;
    let valid = !ascii.is_empty()
        && ascii.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if valid {
        Ok(ascii)
    } else {
        Err(AddressError::Domain)
    }
}

/// The local part as it is written canonically: bare when a dot-atom, else quoted.
fn spell_local(content: &str) -> String {
    if is_dot_atom(content) {
        return content.to_owned();
    }
    let mut s = String::with_capacity(content.len() + 2);
    s.push('"');
    for c in content.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// The canonical form of a path as it appears between `<` and `>` (without them).
/// `postmaster` alone (RFC 5321 §4.5.1) is returned as `postmaster`.
pub fn canonical(path: &str, rules: AddressRules) -> Result<CanonicalAddress, AddressError> {
    if path.starts_with('@') {
        return Err(AddressError::SourceRoute);
    }
    if path.eq_ignore_ascii_case("postmaster") {
        return Ok(CanonicalAddress("postmaster".into()));
    }
    let (content, quoted, domain) = split(path)?;
    if !quoted {
        if content.contains(['(', ')']) {
            return Err(AddressError::Comment);
        }
        if !is_dot_atom(&content) {
            return Err(AddressError::LocalPart);
        }
    }
    if content.is_empty() {
        return Err(AddressError::LocalPart);
    }
    if !rules.allow_routing_characters {
        if let Some(c) = content.chars().find(|c| matches!(c, '%' | '!' | '@')) {
            return Err(AddressError::RoutingCharacter(c));
        }
        if content.contains(['(', ')']) {
            // A quoted "(x)" is no comment, but a dequoting upstream reads it as one.
            return Err(AddressError::Comment);
        }
    }
    if domain.is_empty() {
        return Err(AddressError::NoDomain);
    }
    let domain = canonical_domain(domain)?;
    Ok(CanonicalAddress(format!(
        "{}@{domain}",
        spell_local(&content)
    )))
}

/// The address a delimiter-aware upstream delivers `addr` to: the local part cut at the
/// first delimiter that is not its first character (as Postfix's `recipient_delimiter`),
/// re-spelled canonically. `None` when there is no such delimiter or `addr` does not parse.
/// Works on any spelling `canonical` accepts (case is kept).
pub fn subaddress_base(addr: &str, delimiters: &[char]) -> Option<String> {
    if delimiters.is_empty() {
        return None;
    }
    let (content, _, domain) = split(addr).ok()?;
    let cut = content
        .char_indices()
        .skip(1)
        .find(|(_, c)| delimiters.contains(c))
        .map(|(i, _)| i)?;
    let base = content.get(..cut)?;
    Some(format!("{}@{domain}", spell_local(base)))
}

/// Where an upstream may route `addr` when routing characters are allowed: each step
/// reads the local part as Postfix does for a local domain (a quoted `@` first, then the
/// rightmost `%` with `allow_percent_hack`, then the first `!` with `swap_bangpath`:
/// `site!user` is `user@site`), up to 8 steps. Lower-cased; empty for a plain address.
/// The policy judges every one of them, so allowing the characters cannot widen the lists.
pub fn routed_forms(addr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok((mut content, _, _)) = split(addr) else {
        return out;
    };
    for _ in 0..8 {
        let next = if let Some((l, d)) = content.rsplit_once('@') {
            (l.to_owned(), d.to_owned())
        } else if let Some((l, d)) = content.rsplit_once('%') {
            (l.to_owned(), d.to_owned())
        } else if let Some((site, user)) = content.split_once('!') {
            (user.to_owned(), site.to_owned())
        } else {
            break;
        };
        let (local, domain) = next;
        let domain = domain.trim_end_matches('.').to_lowercase();
        let domain = idna::domain_to_ascii(&domain).unwrap_or(domain);
        out.push(format!("{}@{domain}", spell_local(&local)).to_lowercase());
        content = local;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: AddressRules = AddressRules {
        allow_routing_characters: false,
    };
    const LAX: AddressRules = AddressRules {
        allow_routing_characters: true,
    };

    fn c(p: &str) -> Result<String, AddressError> {
        canonical(p, STRICT).map(CanonicalAddress::into_string)
    }

    #[test]
    fn domains_normalize_to_lower_case_a_labels() {
        assert_eq!(normalize_domain(" Example.COM. "), "example.com");
        assert_eq!(normalize_domain("EXÄMPLE.com"), "xn--exmple-cua.com");
        assert_eq!(
            normalize_domain("xn--exmple-cua.com."),
            "xn--exmple-cua.com"
        );
    }

    #[test]
    fn domain_is_a_lower_case_a_label_and_the_local_part_is_kept() {
        assert_eq!(c("CEO@Example.COM.").unwrap(), "CEO@example.com");
        assert_eq!(
            c("bob@bücher.example").unwrap(),
            "bob@xn--bcher-kva.example"
        );
        assert_eq!(c("bob@[192.0.2.1]").unwrap(), "bob@[192.0.2.1]");
        assert_eq!(c("PostMaster").unwrap(), "postmaster");
    }

    #[test]
    fn unnecessary_quotes_go_necessary_ones_stay() {
        assert_eq!(c("\"ceo\"@example.com").unwrap(), "ceo@example.com");
        assert_eq!(c("\"c\\eo\"@example.com").unwrap(), "ceo@example.com");
        assert_eq!(
            c("\"john smith\"@example.com").unwrap(),
            "\"john smith\"@example.com"
        );
        assert_eq!(
            c("\"a\\\"b\"@example.com").unwrap(),
            "\"a\\\"b\"@example.com"
        );
    }

    #[test]
    fn routing_spellings_are_refused_by_default() {
        use AddressError::*;
        for (p, want) in [
            ("user%other.example@example.com", RoutingCharacter('%')),
            ("other.example!user@example.com", RoutingCharacter('!')),
            ("\"user@other.example\"@example.com", RoutingCharacter('@')),
            ("\"user%other\"@example.com", RoutingCharacter('%')),
            ("user@other.example@example.com", SecondAt),
            ("ceo(x)@example.com", Comment),
            ("(x)ceo@example.com", Comment),
            ("ceo@example.com(x)", Comment),
            ("\"ceo(x)\"@example.com", Comment),
            ("@a,@b:user@example.com", SourceRoute),
            ("@a:user@example.com", SourceRoute),
            ("ceo.@example.com", LocalPart),
            ("a..b@example.com", LocalPart),
            ("\"unterminated@example.com", LocalPart),
            ("\"x\"y@example.com", LocalPart),
            ("ceo@", NoDomain),
            ("ceo", NoDomain),
            ("ceo@exa mple.com", Domain),
        ] {
            assert_eq!(c(p), Err(want.clone()), "{p}");
        }
    }

    #[test]
    fn the_setting_allows_routing_characters_but_never_comments_or_routes() {
        let lax = |p: &str| canonical(p, LAX).map(CanonicalAddress::into_string);
        assert_eq!(
            lax("user%other.example@Example.com").unwrap(),
            "user%other.example@example.com"
        );
        assert_eq!(
            lax("\"user@other.example\"@example.com").unwrap(),
            "\"user@other.example\"@example.com"
        );
        assert_eq!(lax("ceo(x)@example.com"), Err(AddressError::Comment));
        assert_eq!(lax("a@b@example.com"), Err(AddressError::SecondAt));
        assert_eq!(lax("@a:u@example.com"), Err(AddressError::SourceRoute));
    }

    #[test]
    fn canonical_is_idempotent() {
        for p in [
            "CEO@Example.COM.",
            "\"john smith\"@x.example",
            "\"a\\\"b\"@x.example",
            "bob@bücher.example",
            "\"ceo\"@x.example",
        ] {
            let once = c(p).unwrap();
            assert_eq!(c(&once).unwrap(), once, "{p}");
        }
    }

    #[test]
    fn routed_forms_follow_the_percent_hack_bang_paths_and_quoted_at() {
        assert!(routed_forms("ceo@example.com").is_empty());
        assert_eq!(
            routed_forms("user%Other.Example@example.com"),
            ["user@other.example"]
        );
        assert_eq!(routed_forms("site!user@example.com"), ["user@site"]);
        assert_eq!(routed_forms("\"u%a@b\"@example.com"), ["u%a@b", "u@a"]);
        assert_eq!(routed_forms("a!b!user@x"), ["b!user@a", "user@b"]);
    }

    #[test]
    fn subaddress_base_cuts_at_the_first_delimiter_not_at_the_start() {
        assert_eq!(
            subaddress_base("ceo+x+y@example.com", &['+']).as_deref(),
            Some("ceo@example.com")
        );
        assert_eq!(
            subaddress_base("ceo-x@example.com", &['+', '-']).as_deref(),
            Some("ceo@example.com")
        );
        assert_eq!(subaddress_base("ceo-x@example.com", &['+']), None);
        assert_eq!(subaddress_base("+ceo@example.com", &['+']), None);
        assert_eq!(subaddress_base("ceo@example.com", &['+']), None);
        assert_eq!(subaddress_base("ceo+x@example.com", &[]), None);
        assert_eq!(
            subaddress_base("\"ceo+a b\"@example.com", &['+']).as_deref(),
            Some("ceo@example.com")
        );
    }
}
