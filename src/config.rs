//! `sealgate.toml`: the typed configuration, its defaults, and its validation.
//!
//! Unknown keys are errors (`deny_unknown_fields`) reported as `file:line:col: message`.
//! Secrets never live here: an inline upstream password is refused; passwords come from
//! `password_file` or `password_env`, private keys from key files checked by
//! [`crate::secret`]. Relative paths are resolved against the config file's directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A configuration problem, always naming the file and, when known, the position.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{col}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
}

/// The whole of `sealgate.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How local applications reach us.
    #[serde(default)]
    pub server: ServerConfig,
    /// Per-application identities (AUTH) and the senders each may use.
    #[serde(default, rename = "client")]
    pub clients: Vec<ClientConfig>,
    /// Where accepted messages wait for the upstream.
    pub spool: SpoolConfig,
    /// The one upstream every message is relayed to.
    pub upstream: UpstreamConfig,
    /// S/MIME certificates and signers; absent means no S/MIME action can succeed.
    #[serde(default)]
    pub smime: Option<crate::transform::smime::SmimeConfig>,
    /// OpenPGP keyring and signers; absent means no OpenPGP action can succeed.
    #[serde(default)]
    pub openpgp: Option<crate::transform::openpgp::OpenPgpConfig>,
    /// DKIM keys; several for one domain mean several signatures.
    #[serde(default)]
    pub dkim: Vec<crate::transform::dkim::DkimConfig>,
    /// The audit log of every decision.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Where the policy files are.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Prometheus metrics endpoint; absent means none.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// How `sealgate sendmail` submits: envelope sender, maildrop.
    #[serde(default)]
    pub sendmail: SendmailConfig,
    /// The file this was read from (not a key in the file).
    #[serde(skip)]
    pub path: PathBuf,
}

/// `[server]`: the listener facing local applications.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Addresses to listen on; loopback unless `require_auth = true`.
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    /// Our name in the greeting, EHLO replies, Received headers and DSNs.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// Largest message accepted (SIZE); larger ones get `552 5.3.4`.
    #[serde(default = "default_max_size", deserialize_with = "de_size")]
    pub max_message_size: u64,
    /// Require every client to AUTH as a `[[client]]`.
    #[serde(default)]
    pub require_auth: bool,
    /// Certificate offered with STARTTLS to local clients.
    pub tls_cert: Option<PathBuf>,
    /// Key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Concurrent SMTP sessions; more wait in the kernel's accept queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Recipients per message (RFC 5321 §4.5.3.1.8 requires at least 100).
    #[serde(default = "default_max_recipients")]
    pub max_recipients: usize,
    /// Timeout waiting for a command (RFC 5321 §4.5.3.2: at least 5 minutes).
    #[serde(default = "default_command_timeout", deserialize_with = "de_duration")]
    pub command_timeout: Duration,
    /// Timeout waiting for each chunk of DATA (RFC 5321 §4.5.3.2.5: 3 minutes).
    #[serde(default = "default_data_timeout", deserialize_with = "de_duration")]
    pub data_timeout: Duration,
    /// What to do with a bare LF or CR inside DATA: "auto" (default: normalise for
    /// loopback and authenticated clients, refuse for others), "reject" or "normalize".
    #[serde(default)]
    pub bare_line_endings: BareLineEndings,
    /// Accept `%`, `!` and a quoted `@` in local parts (`user%other@ours`), which the
    /// upstream may route to another domain (percent hack, bang path). Default false:
    /// refused at RCPT/MAIL with `550 5.1.3`/`550 5.1.7`.
    #[serde(default)]
    pub allow_routing_characters: bool,
    /// Subaddress delimiters, as the upstream's `recipient_delimiter`: `"+"` (default, as
    /// Debian configures Postfix), `"+-"` or `["+", "-"]` (each character is one), `""`
    /// for none. A list entry for `ceo@x` also covers `ceo+anything@x`.
    #[serde(default)]
    pub recipient_delimiter: RecipientDelimiter,
    /// Where a bounce goes when the envelope sender is not an approved recipient; without
    /// it such a sender is refused at MAIL (`550 5.7.1`) and an older entry's DSN is dropped.
    #[serde(default)]
    pub postmaster: Option<String>,
    /// Commands outside a mail transaction (NOOP, RSET, VRFY, HELP, EHLO ...) a session may
    /// send before it is closed with `421 4.7.0`; 1 while the listener is under stress.
    #[serde(default = "default_junk_command_limit")]
    pub junk_command_limit: u32,
    /// Sessions one client address may hold at once; unset: `max_connections - 1` for
    /// other hosts (a slot stays free for someone else) and no limit on loopback, where
    /// every local application shares 127.0.0.1.
    #[serde(default)]
    pub max_connections_per_peer: Option<usize>,
}

/// `[server] recipient_delimiter`: one string (each character a delimiter) or a list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RecipientDelimiter {
    /// `"+"` or `"+-"`.
    One(String),
    /// `["+", "-"]`.
    Many(Vec<String>),
}

impl Default for RecipientDelimiter {
    fn default() -> Self {
        RecipientDelimiter::One("+".into())
    }
}

impl RecipientDelimiter {
    /// Every delimiter character, in order, without repeats.
    pub fn chars(&self) -> Vec<char> {
        let all: Vec<char> = match self {
            RecipientDelimiter::One(s) => s.chars().collect(),
            RecipientDelimiter::Many(v) => v.iter().flat_map(|s| s.chars()).collect(),
        };
        let mut out = Vec::new();
        for c in all {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }
}

impl ServerConfig {
    /// How the session and the policy read addresses.
    pub fn address_rules(&self) -> crate::address::AddressRules {
        crate::address::AddressRules {
            allow_routing_characters: self.allow_routing_characters,
        }
    }
}

/// Handling of bare LF / bare CR in DATA (SMTP smuggling defence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BareLineEndings {
    /// Normalise for clients on loopback and clients that authenticated; refuse for
    /// anyone else (as Postfix exempts `$mynetworks` from `smtpd_forbid_bare_newline`).
    #[default]
    Auto,
    /// Refuse the message with `550 5.6.11`.
    Reject,
    /// Turn every bare LF and bare CR into CRLF; end-of-data is still only `CRLF.CRLF`.
    Normalize,
}

impl BareLineEndings {
    /// True when a session from this peer normalises (rather than refuses) bare line ends.
    pub fn normalizes(self, peer_is_loopback: bool, authenticated: bool) -> bool {
        match self {
            BareLineEndings::Auto => peer_is_loopback || authenticated,
            BareLineEndings::Reject => false,
            BareLineEndings::Normalize => true,
        }
    }
}

/// `[[client]]`: one local application.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Name used in policies (`client = [...]`) and the audit log.
    pub name: String,
    /// AUTH user name.
    pub username: String,
    /// Argon2 PHC string; never a password.
    pub password_hash: String,
    /// Sender globs this client may use, in MAIL FROM and in the header From.
    #[serde(default)]
    pub allowed_senders: Vec<String>,
}

/// `[spool]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Spool directory; created with mode 0700.
    pub dir: PathBuf,
}

/// How the TLS session to the upstream starts. There is deliberately no plaintext mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamTls {
    /// Plain TCP, then STARTTLS; a server that does not offer it gets nothing.
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
}

/// Lowest TLS version accepted from the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum MinTlsVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// `[upstream]`: where everything is relayed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Host name; also the name its certificate must carry.
    pub host: String,
    /// Port; 587 for starttls, 465 for implicit when absent.
    pub port: Option<u16>,
    /// "starttls" or "implicit".
    pub tls: UpstreamTls,
    /// Trust only this CA bundle instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// "1.2" (default) or "1.3".
    #[serde(default = "default_min_tls")]
    pub min_tls_version: MinTlsVersion,
    /// Name to verify in the certificate when it differs from `host` (e.g. host is an IP).
    pub tls_server_name: Option<String>,
    /// AUTH user; AUTH is used only when set.
    pub username: Option<String>,
    /// File holding the password (mode 0600).
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// Refused: present only to give a clear error.
    pub password: Option<toml::Value>,
    /// How long to keep retrying before a DSN.
    #[serde(default = "default_give_up", deserialize_with = "de_duration")]
    pub give_up_after: Duration,
    /// First retry delay; doubles up to `max_retry_interval`.
    #[serde(default = "default_retry_base", deserialize_with = "de_duration")]
    pub retry_base: Duration,
    /// Longest wait between attempts.
    #[serde(default = "default_retry_max", deserialize_with = "de_duration")]
    pub max_retry_interval: Duration,
    /// Parallel upstream connections (relay workers).
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// Timeout for each upstream command and connect.
    #[serde(default = "default_upstream_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
}

impl UpstreamConfig {
    /// The port actually used.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            UpstreamTls::Starttls => 587,
            UpstreamTls::Implicit => 465,
        })
    }
    /// The name the upstream certificate must match.
    pub fn server_name(&self) -> &str {
        self.tls_server_name.as_deref().unwrap_or(&self.host)
    }
}

/// `[audit]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// JSON-lines file; absent means audit records go to stderr's log only.
    pub path: Option<PathBuf>,
}

/// `[policy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Directory of `*.toml` policy files, read in name order.
    #[serde(default = "default_policy_dir")]
    pub dir: PathBuf,
    /// How `sign`/`encrypt` are carried out: per recipient, the first kind with a usable
    /// key (`["smime", "openpgp"]` when empty); a rule may set its own `encryption`.
    #[serde(default)]
    pub encryption: Vec<crate::policy::verdict::CryptoKind>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            dir: default_policy_dir(),
            encryption: Vec::new(),
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the Prometheus text endpoint; loopback only.
    pub listen: SocketAddr,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            hostname: default_hostname(),
            max_message_size: default_max_size(),
            require_auth: false,
            tls_cert: None,
            tls_key: None,
            max_connections: default_max_connections(),
            max_recipients: default_max_recipients(),
            command_timeout: default_command_timeout(),
            data_timeout: default_data_timeout(),
            bare_line_endings: BareLineEndings::Auto,
            allow_routing_characters: false,
            recipient_delimiter: RecipientDelimiter::default(),
            postmaster: None,
            junk_command_limit: default_junk_command_limit(),
            max_connections_per_peer: None,
        }
    }
}

fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 2525))]
}
fn default_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for buf.len() bytes; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        if let Ok(s) = std::str::from_utf8(&buf[..end]) {
            if valid_hostname(s) {
                return s.to_string();
            }
        }
    }
    "localhost".to_string()
}

/// A name fit for the greeting, Received fields and DSNs, where it goes verbatim.
fn valid_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}
fn default_max_size() -> u64 {
    Config::DEFAULT_MAX_MESSAGE_SIZE
}
fn default_max_connections() -> usize {
    100
}
fn default_junk_command_limit() -> u32 {
    100
}
fn default_max_recipients() -> usize {
    100
}
fn default_command_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_data_timeout() -> Duration {
    Duration::from_secs(180)
}
fn default_min_tls() -> MinTlsVersion {
    MinTlsVersion::Tls12
}
fn default_give_up() -> Duration {
    Duration::from_secs(5 * 86400)
}
fn default_retry_base() -> Duration {
    Duration::from_secs(60)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(3600)
}
fn default_connections() -> usize {
    4
}
fn default_upstream_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_policy_dir() -> PathBuf {
    PathBuf::from("policies")
}

/// `[sendmail]`: how `sealgate sendmail` submits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendmailConfig {
    /// Envelope sender used when the caller gives no `-f`/`-r` (default: `USER@hostname`).
    #[serde(default)]
    pub sender: Option<String>,
    /// Without `-f`: use the header From address as the envelope sender when the client
    /// sendmail authenticates as (SEALGATE_USER) may use it by its `allowed_senders`.
    #[serde(default)]
    pub sender_from_header: bool,
    /// While `serve` is down, keep messages in `<spool>/maildrop/` for it to collect.
    #[serde(default = "yes")]
    pub maildrop: bool,
}

fn yes() -> bool {
    true
}

impl Default for SendmailConfig {
    fn default() -> Self {
        SendmailConfig {
            sender: None,
            sender_from_header: false,
            maildrop: true,
        }
    }
}

/// Checks `[sendmail] sender` at configuration load.
fn validate_sendmail(cfg: &SendmailConfig) -> Result<(), String> {
    if let Some(s) = &cfg.sender {
        if let Some(why) = crate::address::address_problem(s) {
            return Err(format!("[sendmail] sender {s:?}: {why}"));
        }
        if s.contains(' ') {
            return Err(format!("[sendmail] sender {s:?}: it contains a space"));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeOrNumber {
    N(u64),
    S(String),
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match SizeOrNumber::deserialize(d)? {
        SizeOrNumber::N(n) => Ok(n),
        SizeOrNumber::S(s) => crate::units::parse_size(&s).map_err(serde::de::Error::custom),
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    crate::units::parse_duration(&s).map_err(serde::de::Error::custom)
}

/// Byte offset to 1-based line and column.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, col)
}

/// Finds `key` written as a TOML key inside `[section]` and returns its line and column.
fn locate_key(text: &str, section: &str, key: &str) -> (usize, usize) {
    let mut in_section = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with('[') {
            in_section = t.trim_start_matches('[').trim_end_matches(']').trim() == section
                || t.trim_start_matches("[[").trim_end_matches("]]").trim() == section;
            continue;
        }
        if in_section {
            if let Some(rest) = t.strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    return (i + 1, line.len() - t.len() + 1);
                }
            }
        }
    }
    (1, 1)
}

/// A refused setting: its line and column in the text, and why.
type Refused = ((usize, usize), String);

impl Config {
    /// `max_message_size` when the configuration does not set it: 25 MiB.
    pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 25 * 1024 * 1024;
    /// Largest `[server] max_connections` accepted (each session holds a socket).
    pub const MAX_CONNECTIONS: usize = 100_000;
    /// Largest `[upstream] connections` accepted (each is a relay worker).
    pub const MAX_UPSTREAM_CONNECTIONS: usize = 1_000;

    /// Reads and validates `path`. Relative paths inside are resolved against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses configuration text that claims to come from `path`: the TOML read into
    /// the section types, then each phase of checks (the first refusal is reported with
    /// its line and column), then relative paths resolved.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |((line, col), message): Refused| ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            col,
            message,
        };
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            invalid((at, e.message().to_string()))
        })?;
        cfg.path = path.to_path_buf();
        cfg.check_upstream_secret(text).map_err(invalid)?;
        cfg.check_who_may_connect(text).map_err(invalid)?;
        cfg.check_server_limits(text).map_err(invalid)?;
        cfg.check_upstream_connections(text).map_err(invalid)?;
        cfg.check_names(text).map_err(invalid)?;
        cfg.check_timeouts(text).map_err(invalid)?;
        cfg.check_clients(text).map_err(invalid)?;
        cfg.check_sendmail_and_metrics(text).map_err(invalid)?;
        cfg.resolve_paths();
        Ok(cfg)
    }

    /// The upstream password: in a file or the environment (one of them), never inline,
    /// and present when a username is.
    fn check_upstream_secret(&self, text: &str) -> Result<(), Refused> {
        if self.upstream.password.is_some() {
            return Err((locate_key(text, "upstream", "password"), "an inline upstream password is refused: put it in a file (password_file, mode 0600) or an environment variable (password_env)".into()));
        }
        if self.upstream.password_file.is_some() && self.upstream.password_env.is_some() {
            return Err((
                locate_key(text, "upstream", "password_env"),
                "set either password_file or password_env, not both".into(),
            ));
        }
        if self.upstream.username.is_some()
            && self.upstream.password_file.is_none()
            && self.upstream.password_env.is_none()
        {
            return Err((
                locate_key(text, "upstream", "username"),
                "username is set but neither password_file nor password_env".into(),
            ));
        }
        Ok(())
    }

    /// Who may connect: listening beyond loopback needs AUTH, AUTH needs clients, and
    /// STARTTLS needs a certificate with its key.
    fn check_who_may_connect(&self, text: &str) -> Result<(), Refused> {
        if !self.server.require_auth {
            if let Some(addr) = self.server.listen.iter().find(|a| !a.ip().is_loopback()) {
                return Err((locate_key(text, "server", "listen"), format!("listen address {addr} is not loopback: set require_auth = true and define [[client]] entries, or listen on 127.0.0.1")));
            }
        }
        if self.server.require_auth && self.clients.is_empty() {
            return Err((
                locate_key(text, "server", "require_auth"),
                "require_auth = true but no [[client]] is defined".into(),
            ));
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err((
                locate_key(text, "server", "tls_cert"),
                "tls_cert and tls_key go together".into(),
            ));
        }
        Ok(())
    }

    /// `[server]` limits and addresses: connection, recipient, command and size limits,
    /// the recipient delimiter, the postmaster.
    fn check_server_limits(&self, text: &str) -> Result<(), Refused> {
        if self.server.max_recipients == 0 || self.server.max_connections == 0 {
            return Err((
                locate_key(text, "server", "max_recipients"),
                "max_recipients and max_connections must be at least 1".into(),
            ));
        }
        if self.server.max_connections > Config::MAX_CONNECTIONS {
            return Err((
                locate_key(text, "server", "max_connections"),
                format!(
                    "max_connections = {} is more than sealgate supports ({})",
                    self.server.max_connections,
                    Config::MAX_CONNECTIONS
                ),
            ));
        }
        if let Some(bad) = self
            .server
            .recipient_delimiter
            .chars()
            .into_iter()
            .find(|c| {
                c.is_alphanumeric()
                    || c.is_whitespace()
                    || c.is_control()
                    || "@\"\\.<>()[]".contains(*c)
            })
        {
            return Err((locate_key(text, "server", "recipient_delimiter"), format!("recipient_delimiter {bad:?} cannot delimit a subaddress: use characters such as \"+\" or \"-\"")));
        }
        if let Some(pm) = &self.server.postmaster {
            let ok = pm
                .rsplit_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && valid_hostname(d) && d.contains('.'))
                && pm.len() <= 254
                && !pm
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace() || "<>\"".contains(c));
            if !ok {
                return Err((
                    locate_key(text, "server", "postmaster"),
                    format!(
                        "postmaster = {pm:?} is not an address like \"postmaster@example.com\""
                    ),
                ));
            }
        }
        if self.server.max_connections_per_peer == Some(0) {
            return Err((
                locate_key(text, "server", "max_connections_per_peer"),
                "max_connections_per_peer must be at least 1".into(),
            ));
        }
        if self.server.junk_command_limit == 0 {
            return Err((
                locate_key(text, "server", "junk_command_limit"),
                "junk_command_limit must be at least 1".into(),
            ));
        }
        if self.server.max_message_size == 0 {
            return Err((
                locate_key(text, "server", "max_message_size"),
                "max_message_size must be more than 0 bytes, or every message is refused".into(),
            ));
        }
        Ok(())
    }

    /// `[upstream] connections`: at least one relay worker, at most
    /// [`Config::MAX_UPSTREAM_CONNECTIONS`].
    fn check_upstream_connections(&self, text: &str) -> Result<(), Refused> {
        if self.upstream.connections == 0 {
            return Err((
                locate_key(text, "upstream", "connections"),
                "connections must be at least 1".into(),
            ));
        }
        if self.upstream.connections > Config::MAX_UPSTREAM_CONNECTIONS {
            return Err((
                locate_key(text, "upstream", "connections"),
                format!(
                    "connections = {} is more than sealgate supports ({}); each is a relay worker",
                    self.upstream.connections,
                    Config::MAX_UPSTREAM_CONNECTIONS
                ),
            ));
        }
        Ok(())
    }

    /// What goes on the wire: the listen addresses, our host name (greeting, Received,
    /// DSNs), the upstream host and port.
    fn check_names(&self, text: &str) -> Result<(), Refused> {
        if self.server.listen.is_empty() {
            return Err((
                locate_key(text, "server", "listen"),
                "listen is empty: sealgate would accept no mail".into(),
            ));
        }
        // The host name goes into the greeting, Received fields and DSNs verbatim.
        let hostname = &self.server.hostname;
        if !valid_hostname(hostname) {
            return Err((
                locate_key(text, "server", "hostname"),
                format!("hostname {hostname:?} is not a host name (letters, digits, '.', '-')"),
            ));
        }
        let host = &self.upstream.host;
        if host.is_empty() || host.contains(|c: char| c == ':' || c == '/' || c.is_whitespace()) {
            return Err((
                locate_key(text, "upstream", "host"),
                format!("host {host:?} must be a bare host name; the port goes in port = ..."),
            ));
        }
        if self.upstream.port == Some(0) {
            return Err((
                locate_key(text, "upstream", "port"),
                "port 0 is not a port".into(),
            ));
        }
        Ok(())
    }

    /// Timeouts: none may be zero.
    fn check_timeouts(&self, text: &str) -> Result<(), Refused> {
        for (section, key, value) in [
            ("server", "command_timeout", self.server.command_timeout),
            ("server", "data_timeout", self.server.data_timeout),
            ("upstream", "timeout", self.upstream.timeout),
        ] {
            if value.is_zero() {
                return Err((
                    locate_key(text, section, key),
                    format!("{key} must be more than 0s"),
                ));
            }
        }
        Ok(())
    }

    /// `[[client]]` entries: unique names and user names, argon2 PHC hashes, and not the
    /// reserved name `local`.
    fn check_clients(&self, text: &str) -> Result<(), Refused> {
        for (i, client) in self.clients.iter().enumerate() {
            let earlier = self.clients.get(..i).unwrap_or_default();
            for (key, value, same) in [
                (
                    "name",
                    &client.name,
                    earlier.iter().any(|e| e.name == client.name),
                ),
                (
                    "username",
                    &client.username,
                    earlier.iter().any(|e| e.username == client.username),
                ),
            ] {
                if same {
                    return Err((
                        nth_key(text, "client", key, i),
                        format!(
                            "[[client]] {key} {value:?} is already used by an earlier [[client]]"
                        ),
                    ));
                }
            }
            let parsed = argon2::PasswordHash::new(&client.password_hash).ok();
            if !client.password_hash.starts_with("$argon2")
                || !parsed.is_some_and(|h| h.salt.is_some() && h.hash.is_some())
            {
                return Err((nth_key(text, "client", "password_hash", i), format!(
                    "client {:?}: password_hash must be an argon2 PHC string ($argon2id$...), never a password; make one with: sealgate hash-password",
                    client.name
                )));
            }
            if client.name == "local" {
                return Err((
                    nth_key(text, "client", "name", i),
                    "client name \"local\" is reserved for unauthenticated loopback clients".into(),
                ));
            }
        }
        Ok(())
    }

    /// `[sendmail] sender`, and the metrics endpoint (loopback only).
    fn check_sendmail_and_metrics(&self, text: &str) -> Result<(), Refused> {
        if let Err(e) = validate_sendmail(&self.sendmail) {
            return Err((locate_key(text, "sendmail", "sender"), e));
        }
        if let Some(m) = &self.metrics {
            if !m.listen.ip().is_loopback() {
                return Err((
                    locate_key(text, "metrics", "listen"),
                    format!("metrics listen address {} is not loopback", m.listen),
                ));
            }
        }
        Ok(())
    }

    /// Resolves the relative paths against the directory of the config file.
    fn resolve_paths(&mut self) {
        let base = self.base_dir();
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.spool.dir);
        resolve(&mut self.policy.dir);
        if let Some(p) = self.audit.path.as_mut() {
            resolve(p);
        }
        if let Some(p) = self.upstream.ca_file.as_mut() {
            resolve(p);
        }
        if let Some(p) = self.upstream.password_file.as_mut() {
            resolve(p);
        }
        if let Some(p) = self.server.tls_cert.as_mut() {
            resolve(p);
        }
        if let Some(p) = self.server.tls_key.as_mut() {
            resolve(p);
        }
    }

    /// The directory relative paths are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// Reads the upstream password, if AUTH is configured.
    pub fn upstream_password(&self) -> Result<Option<String>, crate::secret::SecretError> {
        if let Some(p) = &self.upstream.password_file {
            return crate::secret::read_password_file(p).map(Some);
        }
        if let Some(v) = &self.upstream.password_env {
            return crate::secret::read_password_env(v).map(Some);
        }
        Ok(None)
    }
}

/// Position of the `n`th occurrence of `key` in `[[section]]` tables.
fn nth_key(text: &str, section: &str, key: &str, n: usize) -> (usize, usize) {
    let mut seen = 0;
    let mut in_section = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with('[') {
            in_section = t.trim_start_matches("[[").trim_end_matches("]]").trim() == section;
            continue;
        }
        if in_section {
            if let Some(rest) = t.strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    if seen == n {
                        return (i + 1, line.len() - t.len() + 1);
                    }
                    seen += 1;
                }
            }
        }
    }
    (1, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "[spool]\ndir = \"spool\"\n[upstream]\nhost = \"smtp.example.net\"\ntls = \"starttls\"\n";

    /// Durations and sizes are read by `units`: a duration needs its unit (a bare number
    /// was read as seconds before), and the error quotes the value and the forms.
    #[test]
    fn durations_need_a_unit_and_sizes_take_both_unit_families() {
        let err = Config::parse(
            &format!("[server]\ncommand_timeout = \"300\"\n{MINIMAL}"),
            Path::new("s.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("s.toml:2:"), "{err}");
        assert!(
            err.contains("\"300\" is not a duration") && err.contains("ms, s, m, h, d, w"),
            "{err}"
        );
        let c = Config::parse(
            &format!(
                "[server]\ncommand_timeout = \"90s\"\nmax_message_size = \"10 MB\"\n{MINIMAL}"
            ),
            Path::new("s.toml"),
        )
        .unwrap();
        assert_eq!(c.server.command_timeout, Duration::from_secs(90));
        assert_eq!(c.server.max_message_size, 10_000_000);
    }

    #[test]
    fn minimal_config_gets_secure_defaults() {
        let c = Config::parse(MINIMAL, Path::new("/etc/sealgate/sealgate.toml")).unwrap();
        assert!(c.server.listen.iter().all(|a| a.ip().is_loopback()));
        assert_eq!(c.upstream.effective_port(), 587);
        assert_eq!(c.spool.dir, PathBuf::from("/etc/sealgate/spool"));
        assert_eq!(c.server.max_message_size, 25 * 1024 * 1024);
        // Bare line ends: normalised for local and authenticated clients, refused for
        // an unauthenticated client from elsewhere.
        let ble = c.server.bare_line_endings;
        assert_eq!(ble, BareLineEndings::Auto);
        assert!(ble.normalizes(true, false) && ble.normalizes(false, true));
        assert!(!ble.normalizes(false, false));
        assert!(!BareLineEndings::Reject.normalizes(true, true));
        assert!(BareLineEndings::Normalize.normalizes(false, false));
    }

    #[test]
    fn address_reading_defaults_and_delimiter_forms() {
        let parse = |server: &str| {
            Config::parse(
                &format!("[server]\n{server}\n{MINIMAL}"),
                Path::new("s.toml"),
            )
        };
        let c = parse("").unwrap();
        assert!(!c.server.allow_routing_characters);
        assert_eq!(c.server.recipient_delimiter.chars(), ['+']);
        let c = parse("recipient_delimiter = \"+-\"\nallow_routing_characters = true").unwrap();
        assert_eq!(c.server.recipient_delimiter.chars(), ['+', '-']);
        assert!(c.server.address_rules().allow_routing_characters);
        let c = parse("recipient_delimiter = [\"+\", \"-\", \"+\"]").unwrap();
        assert_eq!(c.server.recipient_delimiter.chars(), ['+', '-']);
        assert!(parse("recipient_delimiter = \"\"")
            .unwrap()
            .server
            .recipient_delimiter
            .chars()
            .is_empty());
        for bad in ["\"@\"", "\"x\"", "[\"+\", \" \"]"] {
            let err = parse(&format!("recipient_delimiter = {bad}"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("s.toml:2:1:") && err.contains("recipient_delimiter"),
                "{err}"
            );
        }
    }

    #[test]
    fn unknown_key_is_reported_with_line_and_column() {
        let text = format!("{MINIMAL}colour = \"blue\"\n");
        let err = Config::parse(&text, Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml:6:1:"), "{err}");
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn inline_password_is_refused() {
        let text = format!("{MINIMAL}password = \"hunter2\"\n");
        let err = Config::parse(&text, Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml:6:1:"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn non_loopback_listen_needs_auth() {
        let text = format!("[server]\nlisten = [\"0.0.0.0:25\"]\n{MINIMAL}");
        let err = Config::parse(&text, Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("s.toml:2:1:") && err.contains("require_auth"),
            "{err}"
        );
    }

    #[test]
    fn plaintext_upstream_is_not_a_setting() {
        let text = MINIMAL.replace("starttls", "none");
        let err = Config::parse(&text, Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("s.toml:5:"), "{err}");
    }

    #[test]
    fn absurd_limits_are_refused_with_their_position() {
        for (section, key, value) in [
            ("server", "max_connections", "18446744073709551615"),
            ("server", "max_message_size", "0"),
            ("upstream", "connections", "100000000"),
        ] {
            let text = MINIMAL.replace(
                &format!("[{section}]\n"),
                &format!("[{section}]\n{key} = {value}\n"),
            );
            let text = if text.contains(key) {
                text
            } else {
                format!("[{section}]\n{key} = {value}\n{MINIMAL}")
            };
            let err = Config::parse(&text, Path::new("s.toml"))
                .unwrap_err()
                .to_string();
            let line = text.lines().position(|l| l.starts_with(key)).unwrap() + 1;
            assert!(err.starts_with(&format!("s.toml:{line}:1:")), "{err}");
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn unusable_values_are_refused_with_their_position() {
        let cases = [
            ("[server]\nlisten = []\n", "listen is empty"),
            (
                "[server]\nhostname = \"mx\\r\\nX-Evil: 1\"\n",
                "is not a host name",
            ),
            (
                "[server]\ndata_timeout = \"0s\"\n",
                "data_timeout must be more",
            ),
        ];
        for (head, want) in cases {
            let text = format!("{head}{MINIMAL}");
            let err = Config::parse(&text, Path::new("s.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("s.toml:2:1:"), "{err}");
            assert!(err.contains(want), "{err}");
        }
        for (from, to, want) in [
            (
                "smtp.example.net\"",
                "smtp.example.net:587\"",
                "bare host name",
            ),
            ("tls = ", "port = 0\ntls = ", "port 0"),
            ("tls = ", "timeout = \"0s\"\ntls = ", "timeout must be more"),
        ] {
            let err = Config::parse(&MINIMAL.replace(from, to), Path::new("s.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("s.toml:4:1:") || err.starts_with("s.toml:5:1:"),
                "{err}"
            );
            assert!(err.contains(want), "{err}");
        }
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFy";
        let client = |name: &str, user: &str, hash: &str| {
            format!("[[client]]\nname = \"{name}\"\nusername = \"{user}\"\npassword_hash = \"{hash}\"\n")
        };
        for (clients, want) in [
            (
                client("a", "u1", hash) + &client("a", "u2", hash),
                "name \"a\" is already used",
            ),
            (
                client("a", "u1", hash) + &client("b", "u1", hash),
                "username \"u1\" is already used",
            ),
            (client("a", "u1", "$argon2id$garbage"), "argon2 PHC string"),
        ] {
            let err = Config::parse(&format!("{MINIMAL}{clients}"), Path::new("s.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err}");
        }
        // The same clients, well formed, load.
        let ok = format!(
            "{MINIMAL}{}{}",
            client("a", "u1", hash),
            client("b", "u2", hash)
        );
        assert!(Config::parse(&ok, Path::new("s.toml")).is_ok());
    }
}
