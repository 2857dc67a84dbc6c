//! `sealgate check`: everything that can be validated without sending mail — the config,
//! policy files, secret files and their permissions, certificates, keys.
//!
//! Errors name the file (and line:col where one exists) and what to do; warnings (an
//! expiring certificate, an old DKIM key, a sender domain without DKIM) do not fail it.

use std::path::Path;

use crate::config::Config;
use crate::validity::Validity;

/// What the check found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Problems: exit 1.
    pub errors: Vec<String>,
    /// Advice: exit 0.
    pub warnings: Vec<String>,
}

fn domain_of(glob: &str) -> Option<String> {
    let d = glob.rsplit_once('@')?.1.trim_start_matches("*.");
    (!d.contains('*') && !d.is_empty()).then(|| crate::address::normalize_domain(d))
}

/// Bounces go only to approved recipients (see `dsn::route`): a postmaster the policy
/// refuses is an error; a client's fixed sender address it refuses, without a
/// postmaster, is refused at MAIL, which is worth a warning before it happens.
fn bounce_recipients(cfg: &Config, p: &crate::policy::PolicySet, r: &mut CheckReport) {
    let cfg_name = cfg.path.display().to_string();
    let judge = |client: &str, addr: &str| {
        let env = crate::policy::Envelope { client, from: "" };
        p.judge_rcpt(&env, addr, &|_: &str| true)
    };
    if let Some(pm) = &cfg.server.postmaster {
        if let Err(why) = judge("local", pm) {
            r.errors.push(format!(
                "{cfg_name}: [server] postmaster <{pm}> is refused by the recipient policy ({}: {}): bounces of unapproved senders would go nowhere",
                why.by, why.reason
            ));
        }
        return;
    }
    for c in &cfg.clients {
        for s in c.allowed_senders.iter().filter(|s| !s.contains(['*', '?'])) {
            if let Err(why) = judge(&c.name, s) {
                r.warnings.push(format!(
                    "{cfg_name}: [[client]] {}: sender <{s}> is not an approved recipient ({}: {}), so MAIL FROM:<{s}> is refused (its bounces could go nowhere); approve it or set [server] postmaster",
                    c.name, why.by, why.reason
                ));
            }
        }
    }
}

/// Runs every check against an already-parsed configuration: policies, secrets, TLS,
/// clients, keys and certificates, then the spool.
pub fn run(cfg: &Config) -> CheckReport {
    let mut r = CheckReport::default();
    check_policies(cfg, &mut r);
    check_upstream_secret(cfg, &mut r);
    check_tls(cfg, &mut r);
    check_client_hashes(cfg, &mut r);
    check_keys(cfg, &mut r);
    check_spool(cfg, &mut r);
    r
}

/// The policy files: their diagnostics, the clients and encryption kinds they name, and
/// whether bounces can reach their recipients.
fn check_policies(cfg: &Config, r: &mut CheckReport) {
    match crate::policy::PolicySet::load(&cfg.policy.dir) {
        Ok(p) => {
            r.warnings
                .extend(p.warnings().iter().map(|d| d.to_string()));
            bounce_recipients(cfg, &p, r);
            let known: Vec<&str> = cfg.clients.iter().map(|c| c.name.as_str()).collect();
            let smime = p.check_smime(cfg.smime.is_some() || cfg.openpgp.is_some());
            for d in p.check_clients(&known).into_iter().chain(smime) {
                match d.severity {
                    crate::policy::Severity::Error => r.errors.push(d.to_string()),
                    crate::policy::Severity::Warning => r.warnings.push(d.to_string()),
                }
            }
        }
        // The diagnostics of a failed load hold its warnings too: keep them warnings.
        Err(e) => {
            for d in &e.diagnostics {
                match d.severity {
                    crate::policy::Severity::Error => r.errors.push(d.to_string()),
                    crate::policy::Severity::Warning => r.warnings.push(d.to_string()),
                }
            }
        }
    }
}

/// The upstream password's file (readable, private) or environment variable.
fn check_upstream_secret(cfg: &Config, r: &mut CheckReport) {
    let cfg_name = cfg.path.display().to_string();
    if let Some(p) = &cfg.upstream.password_file {
        if let Err(e) = crate::secret::check_secret_file(p) {
            r.errors
                .push(format!("{cfg_name}: [upstream] password_file: {e}"));
        }
    }
    if let Some(v) = &cfg.upstream.password_env {
        if std::env::var_os(v).is_none() {
            r.warnings.push(format!("{cfg_name}: [upstream] password_env: {v} is not set in this environment (it must be set for `serve`)"));
        }
    }
}

/// TLS both ways: the upstream client settings and CA, our STARTTLS certificate and
/// key, and listeners beyond loopback without one.
fn check_tls(cfg: &Config, r: &mut CheckReport) {
    let cfg_name = cfg.path.display().to_string();
    if let Err(e) = crate::queue::upstream::client_tls_config(
        cfg.upstream.ca_file.as_deref(),
        cfg.upstream.min_tls_version,
    ) {
        r.errors.push(format!("{cfg_name}: [upstream]: {e}"));
    }
    if let Some(ca) = &cfg.upstream.ca_file {
        check_cert_expiry(ca, r);
    }
    if let (Some(c), Some(k)) = (&cfg.server.tls_cert, &cfg.server.tls_key) {
        match crate::runtime::server_tls(c, k) {
            Ok(_) => check_cert_expiry(c, r),
            Err(e) => r.errors.push(format!("{cfg_name}: [server] STARTTLS: {e}")),
        }
    }
    if cfg.server.tls_cert.is_none() {
        if let Some(a) = cfg.server.listen.iter().find(|a| !a.ip().is_loopback()) {
            r.warnings.push(format!(
                "{cfg_name}: [server] listens on {a} without tls_cert: clients there cannot use STARTTLS, and AUTH is offered to them only inside TLS, so none can authenticate"
            ));
        }
    }
}

/// Each `[[client]]` password hash is a PHC string.
fn check_client_hashes(cfg: &Config, r: &mut CheckReport) {
    let cfg_name = cfg.path.display().to_string();
    for c in &cfg.clients {
        if let Err(e) = argon2::PasswordHash::new(&c.password_hash) {
            r.errors.push(format!(
                "{cfg_name}: [[client]] {}: password_hash is not a valid PHC string: {e}",
                c.name
            ));
        }
    }
}

/// The S/MIME, OpenPGP and DKIM keys and certificates, and a DKIM key for every sender
/// domain the clients and signers use.
fn check_keys(cfg: &Config, r: &mut CheckReport) {
    let cfg_name = cfg.path.display().to_string();
    let base = cfg.base_dir();
    let mut sender_domains: Vec<String> = cfg
        .clients
        .iter()
        .flat_map(|c| c.allowed_senders.iter().filter_map(|s| domain_of(s)))
        .collect();
    if let Some(s) = &cfg.smime {
        sender_domains.extend(
            s.signer
                .iter()
                .flat_map(|sg| sg.senders.iter().filter_map(|x| domain_of(x))),
        );
        match crate::transform::smime::Smime::load(s, &base) {
            Ok(sm) => r.warnings.extend(sm.warnings()),
            Err(e) => r.errors.push(format!("{cfg_name}: [smime]: {e}")),
        }
    }
    if let Some(o) = &cfg.openpgp {
        sender_domains.extend(
            o.signer
                .iter()
                .flat_map(|sg| sg.senders.iter().filter_map(|x| domain_of(x))),
        );
        let hp = cfg.smime.as_ref().is_some_and(|s| s.header_protection);
        match crate::transform::openpgp::OpenPgp::load(o, &base, hp) {
            Ok(p) => r.warnings.extend(p.warnings()),
            Err(e) => r.errors.push(format!("{cfg_name}: [openpgp]: {e}")),
        }
    }
    match crate::transform::dkim::DkimSigner::load(&cfg.dkim, &base) {
        Ok(d) => {
            r.warnings.extend(d.warnings());
            sender_domains.sort();
            sender_domains.dedup();
            for dom in sender_domains {
                if !d.covers(&dom) {
                    r.warnings.push(format!("{cfg_name}: no [[dkim]] key for sender domain {dom}: its mail leaves unsigned and may fail DMARC"));
                }
            }
        }
        Err(e) => r.errors.push(format!("{cfg_name}: [[dkim]]: {e}")),
    }
}

/// The spool: present (or creatable by `serve`), writable, and its damaged entries.
fn check_spool(cfg: &Config, r: &mut CheckReport) {
    let cfg_name = cfg.path.display().to_string();
    if !cfg.spool.dir.exists() {
        // `check` changes nothing: say what `serve` will do instead of creating it.
        let parent_ok = cfg
            .spool
            .dir
            .parent()
            .is_some_and(|p| p.as_os_str().is_empty() || p.is_dir());
        let msg = format!(
            "{cfg_name}: [spool] dir {} does not exist yet; `serve` creates it (mode 0700){}",
            cfg.spool.dir.display(),
            if parent_ok {
                ""
            } else {
                ", but its parent directory is missing too"
            }
        );
        if parent_ok {
            r.warnings.push(msg);
        } else {
            r.errors.push(msg);
        }
        return;
    }
    match crate::queue::spool::Spool::open(&cfg.spool.dir) {
        Ok(s) => {
            let probe = s.dir().join("tmp").join(".check");
            if let Err(e) = std::fs::write(&probe, b"") {
                r.errors.push(format!(
                    "{cfg_name}: [spool] dir {}: not writable: {e}",
                    cfg.spool.dir.display()
                ));
            }
            let _ = std::fs::remove_file(probe);
            let corrupt = s.corrupt_ids();
            if !corrupt.is_empty() {
                r.warnings.push(format!(
                    "{}/corrupt holds {} damaged entr{}: {}",
                    cfg.spool.dir.display(),
                    corrupt.len(),
                    if corrupt.len() == 1 { "y" } else { "ies" },
                    corrupt.join(", ")
                ));
            }
        }
        Err(e) => r.errors.push(format!("{cfg_name}: [spool]: {e}")),
    }
}

fn check_cert_expiry(path: &Path, r: &mut CheckReport) {
    let Ok(pem) = std::fs::read(path) else {
        return;
    };
    let Ok(certs) = openssl::x509::X509::stack_from_pem(&pem) else {
        return;
    };
    for c in certs {
        let v = crate::validity::of(&c, crate::validity::WARN_DAYS);
        match v {
            Validity::Valid { .. } => {}
            Validity::ExpiresSoon { .. } => r
                .warnings
                .push(format!("{}: certificate {v}", path.display())),
            _ => r
                .errors
                .push(format!("{}: certificate {v}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One PEM file holding a certificate in each state: the expired and the not yet
    /// valid ones are errors (the not yet valid one went unreported before), the one
    /// expiring soon a warning, the valid one nothing; all in the `validity` wording.
    #[test]
    fn certificate_files_report_each_validity_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        let pem: Vec<u8> = [(-10, -4), (5, 50), (-10, 10), (-10, 100)]
            .iter()
            .flat_map(|&(from, to)| {
                crate::validity::test_certificate(from, to)
                    .to_pem()
                    .unwrap()
            })
            .collect();
        std::fs::write(&path, pem).unwrap();
        let mut r = CheckReport::default();
        check_cert_expiry(&path, &mut r);
        let p = path.display().to_string();
        assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
        assert!(
            r.errors[0].starts_with(&format!("{p}: certificate expired 3 days ago (")),
            "{:?}",
            r.errors
        );
        assert!(
            r.errors[1].starts_with(&format!("{p}: certificate not valid yet: valid from ")),
            "{:?}",
            r.errors
        );
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(
            r.warnings[0].starts_with(&format!("{p}: certificate expires in 10 days (")),
            "{:?}",
            r.warnings
        );
    }
}
