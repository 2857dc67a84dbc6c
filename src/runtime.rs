//! Everything loaded from the configuration that a reload swaps as one unit: the config,
//! the policy set, the S/MIME store, the DKIM keys and the STARTTLS certificate.
//!
//! A session takes one `Arc<Runtime>` snapshot when it starts and finishes under it;
//! a reload that fails leaves the running snapshot in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::config::Config;
use crate::policy::PolicySet;
use crate::transform::dkim::DkimSigner;
use crate::transform::smime::Smime;

/// One consistent, fully loaded configuration.
pub struct Runtime {
    /// The parsed configuration file.
    pub config: Config,
    /// TLS acceptor for STARTTLS towards local clients, when configured.
    pub tls_acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// The policy files, compiled.
    pub policy: PolicySet,
    /// S/MIME certificates and signers; `None` without `[smime]`.
    pub smime: Option<Smime>,
    /// DKIM keys (possibly none).
    pub dkim: DkimSigner,
}

/// A problem that stops a configuration from being used, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("{0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("[smime]: {0}")]
    Smime(#[from] crate::transform::smime::SmimeError),
    #[error("[[dkim]]: {0}")]
    Dkim(#[from] crate::transform::dkim::DkimError),
}

impl Runtime {
    /// Loads the configuration at `path` and everything it refers to.
    pub fn load(path: &Path) -> Result<Runtime, LoadError> {
        let config = Config::load(path)?;
        Runtime::from_config(config)
    }

    /// Loads what `config` refers to.
    pub fn from_config(config: Config) -> Result<Runtime, LoadError> {
        let tls_acceptor = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(cert), Some(key)) => Some(server_tls(cert, key)?),
            _ => None,
        };
        let base = config.base_dir();
        let mut policy = PolicySet::load(&config.policy.dir)?;
        policy.set_address_reading(
            config.server.address_rules(),
            &config.server.recipient_delimiter.chars(),
        );
        let known: Vec<&str> = config.clients.iter().map(|c| c.name.as_str()).collect();
        let unknown: Vec<_> = policy
            .check_clients(&known)
            .into_iter()
            .filter(|d| d.severity == crate::policy::Severity::Error)
            .collect();
        if !unknown.is_empty() {
            return Err(LoadError::Policy(crate::policy::PolicyError {
                diagnostics: unknown,
            }));
        }
        let smime = match &config.smime {
            Some(c) => Some(Smime::load(c, &base)?),
            None => None,
        };
        let dkim = DkimSigner::load(&config.dkim, &base)?;
        Ok(Runtime {
            config,
            tls_acceptor,
            policy,
            smime,
            dkim,
        })
    }
}

/// Builds a rustls server configuration from PEM files (key must be mode 0600).
pub fn server_tls(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, LoadError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let file_err = |path: &Path, why: String| LoadError::File {
        path: path.to_path_buf(),
        why,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err(cert, "no PEM certificate found".into()));
    }
    let key_bytes =
        crate::secret::read_secret_file(key).map_err(|e| file_err(key, e.to_string()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_bytes)
        .map_err(|e| file_err(key, format!("not a PEM private key: {e}")))?;
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| file_err(cert, e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)
    .map_err(|e| file_err(cert, e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// The current runtime, swappable by reload.
#[derive(Clone)]
pub struct Shared(Arc<RwLock<Arc<Runtime>>>);

impl Shared {
    /// Wraps the first runtime.
    pub fn new(rt: Runtime) -> Shared {
        Shared(Arc::new(RwLock::new(Arc::new(rt))))
    }
    /// The snapshot to use now.
    pub fn get(&self) -> Arc<Runtime> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Replaces the snapshot.
    pub fn set(&self, rt: Runtime) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rt);
    }
}
