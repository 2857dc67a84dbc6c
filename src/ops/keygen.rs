//! `sealgate dkim-keygen`: a new DKIM key pair and the DNS record to publish. Kept in the
//! library so tests can call it; `src/cli.rs` only maps arguments to it.

use std::path::PathBuf;
use std::process::ExitCode;

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
