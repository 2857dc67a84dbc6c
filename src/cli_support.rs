//! CLI jobs that need library types: `dkim-keygen` and `doctor`. Kept in the library so
//! tests can call them; `src/cli.rs` only maps arguments to these.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{Config, UpstreamTls};
use crate::transform::dkim::{self, Algorithm};

/// `sealgate dkim-keygen`.
pub fn dkim_keygen(
    domain: &str,
    selector: &str,
    algorithm: &str,
    bits: u32,
    out: Option<PathBuf>,
) -> ExitCode {
    let alg = match algorithm.to_ascii_lowercase().as_str() {
        "rsa" => Algorithm::Rsa,
        "ed25519" => Algorithm::Ed25519,
        other => {
            eprintln!("sealgate: unknown --algorithm {other:?}: use rsa or ed25519");
            return ExitCode::from(2);
        }
    };
    let out = out.unwrap_or_else(|| PathBuf::from(format!("{domain}.{selector}.key")));
    match dkim::keygen(domain, selector, alg, bits, &out) {
        Ok(record) => {
            eprintln!("wrote {} (mode 0600); publish this record:", out.display());
            println!("{record}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sealgate: {e}");
            ExitCode::from(1)
        }
    }
}

/// `sealgate doctor`.
pub fn doctor(cfg: &Config, json: bool, dns: Option<SocketAddr>) -> ExitCode {
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
    let input = crate::doctor::DoctorInput {
        domains,
        dkim: cfg.dkim.clone(),
        base,
        upstream: Some(crate::doctor::UpstreamProbe {
            host: cfg.upstream.host.clone(),
            port: cfg.upstream.effective_port(),
            implicit_tls: cfg.upstream.tls == UpstreamTls::Implicit,
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
            return ExitCode::from(2);
        }
    };
    let findings = rt.block_on(crate::doctor::run(&input));
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&findings).unwrap_or_default()
        );
    } else {
        print!("{}", crate::doctor::render_text(&findings));
    }
    if crate::doctor::has_failures(&findings) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
