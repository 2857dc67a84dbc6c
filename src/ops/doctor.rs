//! `sealgate doctor`: checks what lies outside sealgate but decides whether its mail is
//! trusted — DNS (DKIM, SPF, DMARC, MTA-STS, TLS-RPT), the upstream's TLS, and the
//! expiry and age of certificates and keys — and says what to fix.
//!
//! Its one job is to observe and report. It never changes a file, a key or a DNS record,
//! never sends mail (the upstream probe stops after the TLS handshake), and never prints
//! key material: only public keys, as they belong in DNS.
//!
//! Every check yields [`Finding`]s with a [`Verdict`]; a check that cannot be made (DNS
//! timeout, unreadable key) is a `Fail`, because the operator cannot rely on it.
//! Every network step is bounded by a timeout.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::TokioResolver;
use mail_auth::common::parse::TxtRecordParser;
use serde::Serialize;

use crate::address::normalize_domain;
use crate::escape::for_terminal;
use crate::transform::dkim::{dkim_duration, inspect_key, Algorithm, DkimConfig, KeyInfo};
use crate::validity::{self, Validity};

/// How long one DNS query may take, per attempt.
const DNS_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the whole upstream probe (connect, greeting, STARTTLS, handshake) may take.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(15);
/// Certificates expiring within [`crate::validity::WARN_DAYS`] are a warning (as in
/// `sealgate check`), and within this many days a failure: there is hardly time left to act.
const EXPIRY_FAIL_DAYS: i64 = 7;

/// Everything doctor looks at, gathered by the CLI from `sealgate.toml`.
#[derive(Debug, Clone, Default)]
pub struct DoctorInput {
    /// Sender domains to check (e.g. from `allowed_senders` and `[[smime.signer]]`); the
    /// `[[dkim]]` domains are added automatically.
    pub domains: Vec<String>,
    pub dkim: Vec<DkimConfig>,
    /// Directory that relative paths in the configuration are resolved against.
    pub base: PathBuf,
    pub upstream: Option<UpstreamProbe>,
    /// S/MIME certificates (PEM) whose expiry is checked.
    pub certificates: Vec<PathBuf>,
    /// Resolver to ask instead of the system's (`--dns 127.0.0.1:5353`), over UDP and TCP.
    pub dns: Option<SocketAddr>,
}

/// Where the upstream is and how sealgate reaches it.
#[derive(Debug, Clone)]
pub struct UpstreamProbe {
    pub host: String,
    pub port: u16,
    /// `true`: TLS from the first byte (port 465); `false`: STARTTLS after EHLO.
    pub implicit_tls: bool,
    /// Trust only this CA bundle; system roots when `None`.
    pub ca_file: Option<PathBuf>,
}

/// How serious a finding is. `Fail` makes `sealgate doctor` exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        }
    }
}

/// One observation, phrased so that a person can act on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Which check: `dkim`, `dkim-key`, `spf`, `dmarc`, `mta-sts`, `tls-rpt`, `upstream-tls`, `certificate`.
    pub check: String,
    /// What was checked: a DNS name, `host:port`, or a file.
    pub subject: String,
    pub verdict: Verdict,
    /// What was found and, for WARN and FAIL, what to do (`fix: ...`).
    pub detail: String,
}

impl Finding {
    fn new(
        check: &str,
        subject: impl Into<String>,
        verdict: Verdict,
        detail: impl Into<String>,
    ) -> Self {
        Finding {
            check: check.to_string(),
            subject: subject.into(),
            verdict,
            detail: detail.into(),
        }
    }
}

/// True when any finding is a failure (the CLI then exits 1).
pub fn has_failures(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.verdict == Verdict::Fail)
}

/// One line per finding: `FAIL dkim s2026._domainkey.example.com: published key does not match ...`.
pub fn render_text(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        // Subjects and details quote DNS records and upstream replies: others' text.
        out.push_str(&format!(
            "{:<4} {} {}: {}\n",
            f.verdict.label(),
            f.check,
            for_terminal(&f.subject),
            for_terminal(&f.detail)
        ));
    }
    out
}

/// Runs every check; findings are grouped by domain, then upstream, then certificates.
pub async fn run(input: &DoctorInput) -> Vec<Finding> {
    let mut findings = Vec::new();
    let dns = match Dns::new(input.dns) {
        Ok(dns) => Some(dns),
        Err(err) => {
            findings.push(Finding::new(
                "dns",
                input
                    .dns
                    .map_or("system resolver".to_string(), |a| a.to_string()),
                Verdict::Fail,
                format!(
                    "cannot set up the DNS resolver: {err} (fix: check /etc/resolv.conf or --dns)"
                ),
            ));
            None
        }
    };

    let mut domains = BTreeSet::new();
    for d in input
        .domains
        .iter()
        .chain(input.dkim.iter().map(|e| &e.domain))
    {
        domains.insert(normalize_domain(d));
    }
    for domain in &domains {
        let entries: Vec<&DkimConfig> = input
            .dkim
            .iter()
            .filter(|e| normalize_domain(&e.domain) == *domain)
            .collect();
        if entries.is_empty() {
            findings.push(Finding::new(
                "dkim",
                domain.clone(),
                Verdict::Warn,
                format!("no [[dkim]] key for this domain: its mail leaves unsigned and DMARC relies on SPF alone (fix: sealgate dkim-keygen --domain {domain} --selector s1, then add a [[dkim]] entry)"),
            ));
        }
        for entry in entries {
            check_dkim_entry(dns.as_ref(), entry, &input.base, &mut findings).await;
        }
        if let Some(dns) = &dns {
            // Independent lookups run together, so a dead resolver costs one timeout.
            let (spf, dmarc, mta_sts, tls_rpt) = tokio::join!(
                check_spf(dns, domain),
                check_dmarc(dns, domain),
                check_mta_sts(dns, domain),
                check_tls_rpt(dns, domain)
            );
            findings.extend([spf, dmarc, mta_sts, tls_rpt]);
        }
    }

    if let Some(upstream) = &input.upstream {
        findings.push(check_upstream(upstream, &input.base).await);
    }
    for cert in &input.certificates {
        let path = resolve(&input.base, cert);
        findings.push(check_certificate_file(&path));
    }
    findings
}

fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

// ---------------------------------------------------------------------------------------
// DNS

/// A TXT lookup's outcome: the records (each one's strings joined), none, or an error.
enum TxtAnswer {
    Records(Vec<String>),
    Missing,
    Error(String),
}

struct Dns {
    resolver: TokioResolver,
}

impl Dns {
    fn new(server: Option<SocketAddr>) -> Result<Dns, String> {
        let mut opts = ResolverOpts::default();
        opts.timeout = DNS_TIMEOUT;
        opts.attempts = 2;
        let builder = match server {
            Some(addr) => {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for conn in &mut ns.connections {
                    conn.port = addr.port();
                }
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio().map_err(|e| e.to_string())?,
        };
        let resolver = builder
            .with_options(opts)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Dns { resolver })
    }

    async fn txt(&self, name: &str) -> TxtAnswer {
        let fqdn = match Name::from_ascii(format!("{name}.")) {
            Ok(n) => n,
            Err(e) => return TxtAnswer::Error(format!("{name} is not a valid DNS name: {e}")),
        };
        match self.resolver.txt_lookup(fqdn).await {
            Ok(lookup) => {
                let records: Vec<String> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::TXT(txt) => Some(
                            txt.txt_data
                                .iter()
                                .map(|s| String::from_utf8_lossy(s).into_owned())
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .collect();
                if records.is_empty() {
                    TxtAnswer::Missing
                } else {
                    TxtAnswer::Records(records)
                }
            }
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => TxtAnswer::Missing,
            Err(e) => TxtAnswer::Error(e.to_string()),
        }
    }

    /// The records at `name` whose text starts with `prefix` (case-insensitive), e.g. `v=spf1`.
    async fn tagged(&self, name: &str, prefix: &str) -> Result<Vec<String>, String> {
        match self.txt(name).await {
            TxtAnswer::Records(all) => Ok(all
                .into_iter()
                .filter(|r| starts_with_version(r, prefix))
                .collect()),
            TxtAnswer::Missing => Ok(Vec::new()),
            TxtAnswer::Error(e) => Err(e),
        }
    }
}

/// `v=spf1 ...` / `v=DMARC1; ...`: the tag, then a separator or the end.
fn starts_with_version(record: &str, prefix: &str) -> bool {
    let r = record.trim_start();
    r.len() >= prefix.len()
        && r.is_char_boundary(prefix.len())
        && r[..prefix.len()].eq_ignore_ascii_case(prefix)
        && r[prefix.len()..]
            .chars()
            .next()
            .is_none_or(|c| c == ' ' || c == ';' || c == '\t')
}

fn dns_error(check: &str, name: &str, err: String) -> Finding {
    Finding::new(
        check,
        name,
        Verdict::Fail,
        format!("DNS lookup failed: {err} (fix: check the resolver, or retry)"),
    )
}

/// A FAIL for a record holding control characters (an escape sequence, a bidi
/// override): no receiver parses such a record as intended, and it was made to fool a
/// reader. `None` when every record is plain text.
fn hostile_record(check: &str, name: &str, records: &[String]) -> Option<Finding> {
    let bad = records.iter().find(|r| crate::escape::has_hazard(r))?;
    Some(Finding::new(
        check,
        name,
        Verdict::Fail,
        format!(
            "TXT record contains control characters (fix: republish it as plain text): {}",
            for_terminal(bad)
        ),
    ))
}

// ---------------------------------------------------------------------------------------
// DKIM

/// Tag-value list of a DKIM key record (RFC 6376 §3.6.1); whitespace inside values
/// dropped. Tag names are case-sensitive (§3.2): `P=` is not `p=`, as verifiers read it.
fn dkim_tags(record: &str) -> Vec<(String, String)> {
    record
        .split(';')
        .filter_map(|part| {
            let (k, v) = part.split_once('=')?;
            let v: String = v.chars().filter(|c| !c.is_whitespace()).collect();
            Some((k.trim().to_string(), v))
        })
        .collect()
}

/// What in a key record makes verifiers ignore it or refuse our signatures, if anything:
/// `v=` that is not first or not `DKIM1`, `h=` without sha256 (we sign rsa-sha256 and
/// ed25519-sha256), `s=` without `email` or `*` (RFC 6376 §3.6.1).
fn dkim_record_problem(tags: &[(String, String)]) -> Option<String> {
    if let Some(v) = tag(tags, "v") {
        if v != "DKIM1" {
            return Some(format!(
                "v={v}: only v=DKIM1 is defined, verifiers ignore the record"
            ));
        }
        if tags.first().is_some_and(|(k, _)| k != "v") {
            return Some("v=DKIM1 must be the first tag, verifiers ignore the record".into());
        }
    }
    if let Some(h) = tag(tags, "h") {
        if !h.split(':').any(|a| a.eq_ignore_ascii_case("sha256")) {
            return Some(format!(
                "h={h} excludes sha256, the hash sealgate signs with"
            ));
        }
    }
    if let Some(st) = tag(tags, "s") {
        if !st
            .split(':')
            .any(|t| t == "*" || t.eq_ignore_ascii_case("email"))
        {
            return Some(format!(
                "s={st} does not include email (or *): the key is not for mail"
            ));
        }
    }
    None
}

fn tag<'a>(tags: &'a [(String, String)], name: &str) -> Option<&'a str> {
    tags.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Whether a published `p=` carries the same public key as the configured private key.
/// RSA keys are compared as keys, so a record holding a bare PKCS#1 RSAPublicKey matches too.
fn same_public_key(info: &KeyInfo, published: &[u8]) -> bool {
    if published == info.public_key.as_slice() {
        return true;
    }
    if info.algorithm != Algorithm::Rsa {
        return false;
    }
    let ours = match openssl::pkey::PKey::public_key_from_der(&info.public_key) {
        Ok(k) => k,
        Err(_) => return false,
    };
    let theirs = openssl::pkey::PKey::public_key_from_der(published)
        .ok()
        .or_else(|| {
            openssl::rsa::Rsa::public_key_from_der_pkcs1(published)
                .ok()
                .and_then(|r| openssl::pkey::PKey::from_rsa(r).ok())
        });
    theirs.is_some_and(|t| ours.public_eq(&t))
}

async fn check_dkim_entry(
    dns: Option<&Dns>,
    entry: &DkimConfig,
    base: &Path,
    out: &mut Vec<Finding>,
) {
    let name = format!(
        "{}._domainkey.{}",
        entry.selector,
        normalize_domain(&entry.domain)
    );
    let info = match inspect_key(entry, base) {
        Ok(info) => info,
        Err(err) => {
            out.push(Finding::new("dkim", name, Verdict::Fail, format!("cannot use the configured key: {err} (fix: correct the key file or this [[dkim]] entry)")));
            return;
        }
    };
    let key_file = info.path.display().to_string();
    out.push(key_age_finding(entry, &info));
    let Some(dns) = dns else { return };
    let fix = format!("fix: publish {}", info.txt_record());
    let records = match dns.txt(&name).await {
        TxtAnswer::Records(r) => r,
        TxtAnswer::Missing => {
            out.push(Finding::new("dkim", name, Verdict::Fail, format!("no DKIM record published for {key_file}; receivers cannot verify these signatures ({fix})")));
            return;
        }
        TxtAnswer::Error(e) => {
            out.push(dns_error("dkim", &name, e));
            return;
        }
    };
    if let Some(f) = hostile_record("dkim", &name, &records) {
        out.push(f);
        return;
    }
    let keys: Vec<Vec<(String, String)>> = records
        .iter()
        .map(|r| dkim_tags(r))
        .filter(|t| tag(t, "p").is_some())
        .collect();
    if keys.is_empty() {
        out.push(Finding::new(
            "dkim",
            name,
            Verdict::Fail,
            format!("TXT record present but it is not a DKIM key record (no p=) ({fix})"),
        ));
        return;
    }
    if keys.len() > 1 {
        out.push(Finding::new("dkim", name.clone(), Verdict::Fail, format!("{} DKIM key records at one name; verifiers pick one at random (fix: keep only: {})", keys.len(), info.txt_value())));
    }
    let tags = &keys[0];
    let p = tag(tags, "p").unwrap_or_default();
    if p.is_empty() {
        out.push(Finding::new("dkim", name, Verdict::Fail, format!("the published key is revoked (empty p=) but {key_file} still signs with it ({fix}, or remove the [[dkim]] entry)")));
        return;
    }
    if let Some(problem) = dkim_record_problem(tags) {
        out.push(Finding::new(
            "dkim",
            name,
            Verdict::Fail,
            format!("{problem} ({fix})"),
        ));
        return;
    }
    let k = tag(tags, "k").unwrap_or("rsa").to_ascii_lowercase();
    if k != info.algorithm.dns_name() {
        out.push(Finding::new(
            "dkim",
            name,
            Verdict::Fail,
            format!(
                "published key type k={k} but {key_file} is {} ({fix})",
                info.algorithm
            ),
        ));
        return;
    }
    let published = match base64::engine::general_purpose::STANDARD.decode(p) {
        Ok(b) => b,
        Err(_) => {
            out.push(Finding::new(
                "dkim",
                name,
                Verdict::Fail,
                format!("published p= is not valid base64 ({fix})"),
            ));
            return;
        }
    };
    if !same_public_key(&info, &published) {
        out.push(Finding::new(
            "dkim",
            name,
            Verdict::Fail,
            format!("published key does not match {key_file} ({fix})"),
        ));
        return;
    }
    if tag(tags, "t").is_some_and(|t| t.split(':').any(|f| f.eq_ignore_ascii_case("y"))) {
        out.push(Finding::new("dkim", name, Verdict::Warn, format!("published key matches {key_file}, but t=y (testing) tells receivers to ignore failures (fix: drop t=y once mail verifies)")));
        return;
    }
    out.push(Finding::new(
        "dkim",
        name,
        Verdict::Ok,
        format!(
            "published key matches {key_file} ({} {} bits)",
            info.algorithm, info.bits
        ),
    ));
}

fn key_age_finding(entry: &DkimConfig, info: &KeyInfo) -> Finding {
    let subject = info.path.display().to_string();
    let Some(age) = info.age() else {
        return Finding::new(
            "dkim-key",
            subject,
            Verdict::Ok,
            format!("{} {} bits; age unknown", info.algorithm, info.bits),
        );
    };
    let days = age.as_secs() / 86_400;
    let max = entry
        .max_key_age
        .as_deref()
        .and_then(|m| dkim_duration(m).ok());
    match max {
        Some(max) if age > max => Finding::new(
            "dkim-key",
            subject,
            Verdict::Warn,
            format!(
                "key is {days} days old, older than max_key_age {} (fix: sealgate dkim-keygen --domain {} --selector NEW, publish it, then switch the [[dkim]] entry)",
                entry.max_key_age.as_deref().unwrap_or_default(),
                info.domain
            ),
        ),
        _ => Finding::new("dkim-key", subject, Verdict::Ok, format!("{} {} bits, {days} days old", info.algorithm, info.bits)),
    }
}

// ---------------------------------------------------------------------------------------
// SPF, DMARC, MTA-STS, TLS-RPT

async fn check_spf(dns: &Dns, domain: &str) -> Finding {
    use mail_auth::spf::{Mechanism, Qualifier, Spf};
    let records = match dns.tagged(domain, "v=spf1").await {
        Ok(r) => r,
        Err(e) => return dns_error("spf", domain, e),
    };
    if let Some(f) = hostile_record("spf", domain, &records) {
        return f;
    }
    let finding = match records.as_slice() {
        [] => Finding::new("spf", domain, Verdict::Fail, format!("no SPF record (fix: publish {domain}. IN TXT \"v=spf1 include:<your provider> -all\")")),
        [_, _, ..] => Finding::new("spf", domain, Verdict::Fail, format!("{} SPF records; RFC 7208 allows exactly one, receivers treat this as permerror (fix: merge them into one)", records.len())),
        [record] => match Spf::parse(record.as_bytes()) {
            Err(e) => Finding::new("spf", domain, Verdict::Fail, format!("SPF record does not parse ({e}) (fix: correct the record, see RFC 7208): {record}")),
            Ok(spf) => {
                let all = spf.directives.iter().find(|d| matches!(d.mechanism, Mechanism::All)).map(|d| d.qualifier.clone());
                match (all, spf.redirect.is_some()) {
                    (Some(Qualifier::Pass), _) => Finding::new("spf", domain, Verdict::Fail, format!("\"+all\" lets anyone send as {domain} (fix: end the record with -all or ~all): {record}")),
                    (Some(Qualifier::Fail), _) => Finding::new("spf", domain, Verdict::Ok, record.clone()),
                    (Some(Qualifier::SoftFail), _) => Finding::new("spf", domain, Verdict::Ok, format!("{record} (~all: softfail for others)")),
                    (_, true) => Finding::new("spf", domain, Verdict::Ok, format!("{record} (redirect)")),
                    (Some(Qualifier::Neutral), false) | (None, false) => Finding::new("spf", domain, Verdict::Warn, format!("SPF ends neutral, so it protects nothing (fix: end the record with -all or ~all): {record}")),
                }
            }
        },
    };
    finding
}

async fn check_dmarc(dns: &Dns, domain: &str) -> Finding {
    use mail_auth::dmarc::{Dmarc, Policy};
    let subject = format!("_dmarc.{domain}");
    // RFC 7489 §6.6.3: without a record at the domain, the organisational domain's counts
    // (its sp=). Walk up the parents as an approximation of the public-suffix lookup.
    let mut name = domain.to_string();
    let mut inherited = false;
    let records = loop {
        match dns.tagged(&format!("_dmarc.{name}"), "v=DMARC1").await {
            Err(e) => return dns_error("dmarc", &subject, e),
            Ok(r) if !r.is_empty() => break r,
            Ok(_) => match name.split_once('.') {
                Some((_, parent)) if parent.contains('.') => {
                    name = parent.to_string();
                    inherited = true;
                }
                _ => {
                    return Finding::new("dmarc", subject, Verdict::Fail, format!("no DMARC record; receivers apply no policy to forged mail from {domain} (fix: publish _dmarc.{domain}. IN TXT \"v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@{domain}\")"));
                }
            },
        }
    };
    if let Some(f) = hostile_record("dmarc", &subject, &records) {
        return f;
    }
    if records.len() > 1 {
        return Finding::new(
            "dmarc",
            subject,
            Verdict::Fail,
            format!(
                "{} DMARC records at _dmarc.{name}; receivers ignore them all (fix: keep one)",
                records.len()
            ),
        );
    }
    let record = &records[0];
    let dmarc = match Dmarc::parse(record.as_bytes()) {
        Ok(d) => d,
        Err(e) => return Finding::new("dmarc", subject, Verdict::Fail, format!("DMARC record does not parse ({e}) (fix: correct the record, see RFC 7489): {record}")),
    };
    let policy = if inherited && dmarc.sp != Policy::Unspecified {
        dmarc.sp
    } else {
        dmarc.p
    };
    let from = if inherited {
        format!(" (inherited from _dmarc.{name})")
    } else {
        String::new()
    };
    let finding = match policy {
        Policy::Reject => Finding::new("dmarc", subject, Verdict::Ok, format!("policy reject{from}: {record}")),
        Policy::Quarantine => Finding::new("dmarc", subject, Verdict::Ok, format!("policy quarantine{from}: {record}")),
        Policy::None => Finding::new("dmarc", subject, Verdict::Warn, format!("policy none{from}: monitoring only, forged mail is still delivered (fix: move to p=quarantine once reports show sealgate's mail passing)")),
        Policy::Unspecified => Finding::new("dmarc", subject, Verdict::Fail, format!("DMARC record has no p= policy{from} (fix: add p=quarantine): {record}")),
    };
    finding
}

async fn check_mta_sts(dns: &Dns, domain: &str) -> Finding {
    use mail_auth::mta_sts::MtaSts;
    let subject = format!("_mta-sts.{domain}");
    let answer = dns.tagged(&subject, "v=STSv1").await;
    if let Some(f) = answer
        .as_ref()
        .ok()
        .and_then(|r| hostile_record("mta-sts", &subject, r))
    {
        return f;
    }
    let finding = match answer {
        Err(e) => dns_error("mta-sts", &subject, e),
        Ok(r) if r.is_empty() => Finding::new("mta-sts", subject, Verdict::Warn, format!("no MTA-STS record: mail to {domain} can be downgraded to plaintext by an attacker (fix: publish a policy at https://mta-sts.{domain}/.well-known/mta-sts.txt and _mta-sts.{domain}. IN TXT \"v=STSv1; id=20260101\")")),
        Ok(r) if r.len() > 1 => Finding::new("mta-sts", subject, Verdict::Fail, format!("{} MTA-STS records; senders ignore MTA-STS (fix: keep one)", r.len())),
        Ok(r) => match MtaSts::parse(r[0].as_bytes()) {
            Ok(sts) => Finding::new("mta-sts", subject, Verdict::Ok, format!("id={} (the policy file itself is not fetched)", sts.id)),
            Err(e) => Finding::new("mta-sts", subject, Verdict::Fail, format!("MTA-STS record does not parse ({e}) (fix: publish \"v=STSv1; id=<policy version>\"): {}", r[0])),
        },
    };
    finding
}

async fn check_tls_rpt(dns: &Dns, domain: &str) -> Finding {
    use mail_auth::mta_sts::TlsRpt;
    let subject = format!("_smtp._tls.{domain}");
    let answer = dns.tagged(&subject, "v=TLSRPTv1").await;
    if let Some(f) = answer
        .as_ref()
        .ok()
        .and_then(|r| hostile_record("tls-rpt", &subject, r))
    {
        return f;
    }
    let finding = match answer {
        Err(e) => dns_error("tls-rpt", &subject, e),
        Ok(r) if r.is_empty() => Finding::new("tls-rpt", subject, Verdict::Warn, format!("no TLS-RPT record: you will not hear about TLS failures delivering to {domain} (fix: publish _smtp._tls.{domain}. IN TXT \"v=TLSRPTv1; rua=mailto:tls-reports@{domain}\")")),
        Ok(r) if r.len() > 1 => Finding::new("tls-rpt", subject, Verdict::Fail, format!("{} TLS-RPT records; reporters ignore them (fix: keep one)", r.len())),
        Ok(r) => match TlsRpt::parse(r[0].as_bytes()) {
            Ok(rpt) if !rpt.rua.is_empty() => Finding::new("tls-rpt", subject, Verdict::Ok, r[0].clone()),
            Ok(_) => Finding::new("tls-rpt", subject, Verdict::Fail, format!("TLS-RPT record names no report address (fix: add rua=mailto:...): {}", r[0])),
            Err(e) => Finding::new("tls-rpt", subject, Verdict::Fail, format!("TLS-RPT record does not parse ({e}) (fix: publish \"v=TLSRPTv1; rua=mailto:tls-reports@{domain}\"): {}", r[0])),
        },
    };
    finding
}

// ---------------------------------------------------------------------------------------
// Upstream TLS

async fn check_upstream(probe: &UpstreamProbe, base: &Path) -> Finding {
    let subject = format!("{}:{}", probe.host, probe.port);
    match tokio::time::timeout(UPSTREAM_TIMEOUT, probe_upstream(probe, base)).await {
        Ok(Ok(f)) => f,
        Ok(Err(mut detail)) => {
            if !detail.contains("fix:") {
                detail.push_str(" (fix: check the upstream's SMTP service and the [upstream] settings)");
            }
            Finding::new("upstream-tls", subject, Verdict::Fail, detail)
        }
        Err(_) => Finding::new("upstream-tls", subject, Verdict::Fail, format!("no answer within {}s (fix: check upstream.host and upstream.port, and the firewall)", UPSTREAM_TIMEOUT.as_secs())),
    }
}

/// Connects exactly as the relay does (`upstream::Connection`: same TLS verification, same
/// STARTTLS rules), then reports the negotiated version and the leaf's expiry.
async fn probe_upstream(probe: &UpstreamProbe, base: &Path) -> Result<Finding, String> {
    use crate::queue::upstream::{client_tls_config, Connection, UpstreamError, UpstreamSettings};
    let subject = format!("{}:{}", probe.host, probe.port);
    let ca = probe.ca_file.as_ref().map(|p| resolve(base, p));
    let trust = match &ca {
        Some(p) => format!("ca_file {}", p.display()),
        None => "system roots".to_string(),
    };
    let tls = client_tls_config(ca.as_deref(), crate::config::MinTlsVersion::Tls12)
        .map_err(|e| format!("{e} (fix: install ca-certificates or set upstream.ca_file)"))?;
    let server_name = rustls_pki_types::ServerName::try_from(probe.host.clone())
        .map_err(|e| format!("{} is not a valid TLS server name: {e}", probe.host))?;
    let settings = UpstreamSettings {
        host: probe.host.clone(),
        port: probe.port,
        mode: if probe.implicit_tls {
            crate::config::UpstreamTls::Implicit
        } else {
            crate::config::UpstreamTls::Starttls
        },
        server_name,
        tls,
        credentials: None,
        helo: "sealgate-doctor.invalid".into(),
        timeout: UPSTREAM_TIMEOUT,
    };
    let conn = Connection::open(&settings).await.map_err(|e| match e {
        UpstreamError::NoStarttls(_) => "upstream does not offer STARTTLS; sealgate will not relay in plaintext (fix: enable STARTTLS upstream, or set tls = \"implicit\" with its TLS port, usually 465)".to_string(),
        UpstreamError::Tls { why, .. } => format!("TLS handshake failed: {why} (trusting {trust}; fix: set upstream.ca_file to the CA that issued the upstream's certificate, or correct upstream.host)"),
        UpstreamError::Connect { source, .. } => format!("cannot connect: {source} (fix: check upstream.host and upstream.port)"),
        other => other.to_string(),
    })?;
    let version = match conn.tls_version.as_str() {
        "TLSv1_3" => "TLS 1.3".to_string(),
        "TLSv1_2" => "TLS 1.2".to_string(),
        other => other.to_string(),
    };
    let suite = conn.cipher.clone();
    let chain = conn.peer_certificates();
    conn.quit().await;
    let Some(leaf) = chain.first() else {
        return Err("no certificate presented".into());
    };
    let (validity, leaf_subject) = match openssl::x509::X509::from_der(leaf.as_ref()) {
        Ok(x) => (validity::of(&x, validity::WARN_DAYS), describe_subject(&x)),
        Err(e) => return Err(format!("cannot read the leaf certificate: {e}")),
    };
    let verdict = validity_verdict(&validity);
    let mut detail = format!(
        "{version} {suite}, chain of {} verified against {trust}, leaf {leaf_subject} {validity}",
        chain.len()
    );
    if verdict != Verdict::Ok {
        detail.push_str(" (fix: ask the upstream's operator to renew its certificate)");
    }
    Ok(Finding::new("upstream-tls", subject, verdict, detail))
}

// ---------------------------------------------------------------------------------------
// Certificates

/// Fail when unusable or within [`EXPIRY_FAIL_DAYS`] of expiring, warn within
/// [`validity::WARN_DAYS`].
fn validity_verdict(v: &Validity) -> Verdict {
    match v {
        Validity::Valid { .. } => Verdict::Ok,
        Validity::ExpiresSoon { days, .. } if *days >= EXPIRY_FAIL_DAYS => Verdict::Warn,
        _ => Verdict::Fail,
    }
}

fn describe_subject(cert: &openssl::x509::X509) -> String {
    let mut parts = Vec::new();
    for nid in [
        openssl::nid::Nid::COMMONNAME,
        openssl::nid::Nid::PKCS9_EMAILADDRESS,
    ] {
        for entry in cert.subject_name().entries_by_nid(nid) {
            if let Ok(s) = entry.data().to_string() {
                parts.push(s);
            }
        }
    }
    if let Some(sans) = cert.subject_alt_names() {
        for san in sans.iter() {
            if let Some(email) = san.email() {
                if !parts.iter().any(|p| p.as_str() == email) {
                    parts.push(email.to_string());
                }
            }
        }
    }
    if parts.is_empty() {
        "(no name)".into()
    } else {
        format!("\"{}\"", parts.join(", "))
    }
}

/// Expiry of the first certificate in a PEM file (an S/MIME certificate).
pub fn check_certificate_file(path: &Path) -> Finding {
    let subject = path.display().to_string();
    let pem = match std::fs::read(path) {
        Ok(p) => p,
        Err(e) => {
            return Finding::new(
                "certificate",
                subject,
                Verdict::Fail,
                format!("cannot read: {e} (fix: correct the path in sealgate.toml)"),
            )
        }
    };
    let cert = match openssl::x509::X509::stack_from_pem(&pem)
        .ok()
        .and_then(|v| v.into_iter().next())
    {
        Some(c) => c,
        None => {
            return Finding::new(
                "certificate",
                subject,
                Verdict::Fail,
                "no PEM certificate in this file (fix: put the certificate here in PEM form)",
            )
        }
    };
    let validity = validity::of(&cert, validity::WARN_DAYS);
    let name = describe_subject(&cert);
    let verdict = validity_verdict(&validity);
    let fix = match validity {
        Validity::Valid { .. } => "",
        Validity::ExpiresSoon { .. } => " (fix: renew it now and replace the file)",
        Validity::Expired { .. } => " (fix: renew it and replace the file)",
        Validity::NotYetValid { .. } | Validity::ClockUnavailable => {
            " (fix: check this machine's clock, or the certificate's dates)"
        }
    };
    let detail = format!("certificate {name} {validity}{fix}");
    Finding::new("certificate", subject, verdict, detail)
}

/// `sealgate doctor` as the command line runs it: what to probe, taken from the
/// configuration, then the findings printed (text or JSON) and the exit code.
pub fn command(
    cfg: &crate::config::Config,
    json: bool,
    dns: Option<SocketAddr>,
) -> std::process::ExitCode {
    let mut domains: Vec<String> = cfg
        .clients
        .iter()
        .flat_map(|c| c.allowed_senders.iter())
        .chain(
            cfg.smime
                .iter()
                .flat_map(|s| s.signer.iter().flat_map(|sg| sg.senders.iter())),
        )
        .filter_map(|g| {
            g.rsplit_once('@')
                .map(|(_, d)| d.trim_start_matches("*.").to_ascii_lowercase())
        })
        .filter(|d| !d.contains('*') && !d.is_empty())
        .collect();
    domains.sort();
    domains.dedup();
    let base = cfg.base_dir();
    let mut certificates: Vec<PathBuf> = Vec::new();
    if let Some(s) = &cfg.smime {
        for sg in &s.signer {
            certificates.push(if sg.cert.is_relative() {
                base.join(&sg.cert)
            } else {
                sg.cert.clone()
            });
        }
        let dir = if s.recipient_certs.is_relative() {
            base.join(&s.recipient_certs)
        } else {
            s.recipient_certs.clone()
        };
        if let Ok(rd) = std::fs::read_dir(&dir) {
            let mut files: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            certificates.extend(files);
        }
    }
    let input = DoctorInput {
        domains,
        dkim: cfg.dkim.clone(),
        base,
        upstream: Some(UpstreamProbe {
            host: cfg.upstream.host.clone(),
            port: cfg.upstream.effective_port(),
            implicit_tls: cfg.upstream.tls == crate::config::UpstreamTls::Implicit,
            ca_file: cfg.upstream.ca_file.clone(),
        }),
        certificates,
        dns,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sealgate: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let findings = rt.block_on(run(&input));
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&findings).unwrap_or_default()
        );
    } else {
        print!("{}", render_text(&findings));
    }
    if has_failures(&findings) {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefix_needs_a_separator() {
        assert!(starts_with_version("v=spf1 -all", "v=spf1"));
        assert!(starts_with_version("V=SPF1", "v=spf1"));
        assert!(!starts_with_version("v=spf10 -all", "v=spf1"));
        assert!(starts_with_version("v=DMARC1;p=none", "v=DMARC1"));
        assert!(!starts_with_version("v=\u{e9}", "v=spf1"));
    }

    #[test]
    fn dkim_tags_ignore_folding_whitespace() {
        let t = dkim_tags("v=DKIM1; k=rsa; p=MIIB IjAN\tBgkq");
        assert_eq!(tag(&t, "p"), Some("MIIBIjANBgkq"));
        assert_eq!(tag(&t, "k"), Some("rsa"));
    }

    #[test]
    fn key_records_that_verifiers_ignore_are_named() {
        let problem = |r: &str| dkim_record_problem(&dkim_tags(r));
        for good in [
            "v=DKIM1; k=rsa; p=AB",
            "k=rsa; p=AB",
            "v=DKIM1; h=sha1:sha256; s=email; p=AB",
            "v=DKIM1; s=*; p=AB",
        ] {
            assert_eq!(problem(good), None, "{good}");
        }
        for (bad, says) in [
            ("v=DKIM2; p=AB", "v=DKIM2"),
            ("k=rsa; v=DKIM1; p=AB", "first tag"),
            ("v=DKIM1; h=sha1; p=AB", "h=sha1"),
            ("v=DKIM1; s=other; p=AB", "s=other"),
        ] {
            let p = problem(bad).unwrap_or_default();
            assert!(p.contains(says), "{bad}: {p}");
        }
        // Tag names are case-sensitive: `P=` is no key.
        assert_eq!(tag(&dkim_tags("K=RSA; P=AB"), "p"), None);
    }

    #[test]
    fn render_text_one_line_per_finding() {
        let f = vec![
            Finding::new(
                "dkim",
                "s._domainkey.example.com",
                Verdict::Fail,
                "published key does not match k.key (fix: publish x)",
            ),
            Finding::new("spf", "example.com", Verdict::Ok, "v=spf1 -all"),
        ];
        assert_eq!(
            render_text(&f),
            "FAIL dkim s._domainkey.example.com: published key does not match k.key (fix: publish x)\nOK   spf example.com: v=spf1 -all\n"
        );
        assert!(has_failures(&f));
        assert_eq!(serde_json::to_value(&f[0]).unwrap()["verdict"], "fail");
    }
}
