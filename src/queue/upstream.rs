//! The SMTP client that talks to the upstream: TLS always, verified always.
//!
//! Two modes, both man-in-the-middle safe because the chain and the host name are
//! verified against `ca_file` or the system roots:
//! - `starttls`: plain TCP, EHLO, STARTTLS. If the server does not offer STARTTLS, or
//!   sends anything after its `220` before the handshake, nothing is sent and the error
//!   is temporary (the message stays queued).
//! - `implicit`: TLS from the first byte.
//!
//! There is no plaintext mode, not even a dangerous one. AUTH is only ever sent inside TLS.
//! The password is held in memory and written only inside the TLS stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::{MinTlsVersion, UpstreamConfig, UpstreamTls};
use crate::queue::reply::local;

/// Why talking to the upstream failed. Every variant knows whether retrying can help.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("upstream {0} does not offer STARTTLS; nothing was sent (plaintext is never used)")]
    NoStarttls(String),
    #[error("TLS with upstream {host} failed: {why}; nothing was sent")]
    Tls { host: String, why: String },
    #[error(
        "upstream sent data before the TLS handshake (STARTTLS injection?); connection dropped"
    )]
    Injection,
    #[error("timeout after {0:?} waiting for the upstream")]
    Timeout(Duration),
    #[error("upstream connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    #[error("upstream refused: {0}")]
    Refused(ServerReply),
    #[error(
        "upstream answered {0} before TLS was established; such a reply could come from \
         anyone on the path, so the message is retried"
    )]
    RefusedBeforeTls(ServerReply),
    #[error("upstream AUTH failed: {0}")]
    AuthFailed(ServerReply),
    #[error("TLS settings: {0}")]
    Settings(String),
}

impl UpstreamError {
    /// True when a 5xx reply, received inside TLS, makes retrying pointless for the
    /// whole message. Nothing said before TLS is trusted that far.
    pub fn is_permanent(&self) -> bool {
        matches!(self, UpstreamError::Refused(r) if r.is_permanent())
    }

    /// True when the message stays queued and is tried again: everything that is not
    /// [`UpstreamError::is_permanent`].
    pub fn is_transient(&self) -> bool {
        !self.is_permanent()
    }

    /// The upstream's reply this error reports, if it is one.
    pub fn reply(&self) -> Option<&ServerReply> {
        match self {
            UpstreamError::Refused(r)
            | UpstreamError::RefusedBeforeTls(r)
            | UpstreamError::AuthFailed(r) => Some(r),
            _ => None,
        }
    }

    /// What this failure means for every recipient of the message: a permanent refusal
    /// is [`RcptOutcome::Permanent`] with its reply; anything else is retried, with this
    /// error as the reason.
    pub fn outcome(&self) -> RcptOutcome {
        match self {
            UpstreamError::Refused(r) if r.is_permanent() => RcptOutcome::Permanent(r.clone()),
            _ => RcptOutcome::Transient(self.to_string()),
        }
    }
}

pub use crate::queue::reply::{RcptOutcome, ServerReply};

/// Everything the relay needs to reach the upstream; rebuilt on reload.
#[derive(Clone)]
pub struct UpstreamSettings {
    /// The upstream's host name (or address) to connect to.
    pub host: String,
    /// Its port (587 for `starttls`, 465 for `implicit` unless configured).
    pub port: u16,
    /// `starttls` or `implicit` TLS.
    pub mode: UpstreamTls,
    /// The name the certificate must carry (`upstream.host` unless `tls_server_name` is set).
    pub server_name: rustls_pki_types::ServerName<'static>,
    /// Trust roots and minimum TLS version.
    pub tls: Arc<rustls::ClientConfig>,
    /// AUTH credentials; the password never leaves this struct except inside TLS.
    pub credentials: Option<(String, String)>,
    /// Our EHLO name.
    pub helo: String,
    /// How long to wait for each reply (and the connection, and the handshake).
    pub timeout: Duration,
}

impl std::fmt::Debug for UpstreamSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("mode", &self.mode)
            .field("auth", &self.credentials.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// Builds the rustls client configuration: ring provider, minimum version, roots from
/// `ca_file` or the system store.
pub fn client_tls_config(
    ca_file: Option<&std::path::Path>,
    min: MinTlsVersion,
) -> Result<Arc<rustls::ClientConfig>, UpstreamError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            use rustls_pki_types::pem::PemObject;
            let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| UpstreamError::Settings(format!("{}: {e}", path.display())))?
                .collect::<Result<_, _>>()
                .map_err(|e| UpstreamError::Settings(format!("{}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(UpstreamError::Settings(format!(
                    "{}: no PEM certificates found",
                    path.display()
                )));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| UpstreamError::Settings(format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for c in native.certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(UpstreamError::Settings(
                    "no system CA certificates found; set upstream.ca_file".into(),
                ));
            }
        }
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min {
        MinTlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinTlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .map_err(|e| UpstreamError::Settings(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(cfg))
}

impl UpstreamSettings {
    /// Settings from the configuration and an already-read password.
    pub fn new(
        cfg: &UpstreamConfig,
        password: Option<String>,
        helo: &str,
    ) -> Result<UpstreamSettings, UpstreamError> {
        let server_name = rustls_pki_types::ServerName::try_from(cfg.server_name().to_string())
            .map_err(|e| UpstreamError::Settings(format!("upstream host name: {e}")))?;
        Ok(UpstreamSettings {
            host: cfg.host.clone(),
            port: cfg.effective_port(),
            mode: cfg.tls,
            server_name,
            tls: client_tls_config(cfg.ca_file.as_deref(), cfg.min_tls_version)?,
            credentials: match (&cfg.username, password) {
                (Some(u), Some(p)) => Some((u.clone(), p)),
                _ => None,
            },
            helo: helo.to_string(),
            timeout: cfg.timeout,
        })
    }
}

/// Capabilities from EHLO.
#[derive(Debug, Default, Clone)]
struct Caps {
    starttls: bool,
    pipelining: bool,
    eightbit: bool,
    smtputf8: bool,
    auth_plain: bool,
    auth_login: bool,
    size: Option<u64>,
}

fn parse_caps(reply_lines: &[String]) -> Caps {
    let mut c = Caps::default();
    for l in reply_lines.iter().skip(1) {
        let up = l.to_ascii_uppercase();
        let mut words = up.split_whitespace();
        match words.next() {
            Some("STARTTLS") => c.starttls = true,
            Some("PIPELINING") => c.pipelining = true,
            Some("8BITMIME") => c.eightbit = true,
            Some("SMTPUTF8") => c.smtputf8 = true,
            Some("SIZE") => c.size = words.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0),
            Some("AUTH") => {
                for w in words {
                    match w {
                        "PLAIN" => c.auth_plain = true,
                        "LOGIN" => c.auth_login = true,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    c
}

/// Longest reply line and most reply lines we accept from the upstream.
const MAX_REPLY_LINE: usize = 4096;
const MAX_REPLY_LINES: usize = 128;

/// Most characters of reply text kept: it goes into DSNs and the audit log, where a
/// hostile server's 128 lines of 12 KiB would otherwise be copied per recipient.
const MAX_REPLY_TEXT: usize = 1000;

/// How long to wait for the reply to the final `.` (RFC 5321 4.5.3.2.6: 10 minutes):
/// the upstream may be scanning the message. Giving up earlier and resending would
/// deliver it twice.
const DATA_DONE_TIMEOUT: Duration = Duration::from_secs(600);

async fn read_reply<S: AsyncRead + Unpin>(
    r: &mut BufReader<S>,
    timeout: Duration,
) -> Result<(ServerReply, Vec<String>), UpstreamError> {
    let mut lines = Vec::new();
    // One deadline for the whole reply: a server trickling continuation lines must not
    // hold a relay worker for 128 × `timeout`.
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut buf = Vec::new();
        let n = tokio::time::timeout_at(deadline, read_line_bounded(r, &mut buf))
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))??;
        if n == 0 {
            return Err(UpstreamError::Protocol(
                "connection closed by upstream".into(),
            ));
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\r', '\n']);
        if line.len() < 3 || !line.as_bytes()[..3].iter().all(|b| b.is_ascii_digit()) {
            return Err(UpstreamError::Protocol(format!(
                "malformed reply line {line:?}"
            )));
        }
        let code: u16 = line[..3].parse().unwrap_or(0);
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line.get(4..).unwrap_or("").to_string());
        if last {
            let mut text = lines.join(" / ");
            if text.chars().count() > MAX_REPLY_TEXT {
                text = text.chars().take(MAX_REPLY_TEXT).collect::<String>() + " [...]";
            }
            return Ok((ServerReply::parse(code, text), lines));
        }
        if lines.len() >= MAX_REPLY_LINES {
            return Err(UpstreamError::Protocol("reply has too many lines".into()));
        }
    }
}

async fn read_line_bounded<S: AsyncRead + Unpin>(
    r: &mut BufReader<S>,
    out: &mut Vec<u8>,
) -> std::io::Result<usize> {
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(out.len());
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        out.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            return Ok(out.len());
        }
        if out.len() > MAX_REPLY_LINE {
            return Err(std::io::Error::other("reply line too long"));
        }
    }
}

/// A TLS-protected, EHLO'd (and authenticated) upstream connection, reusable for
/// several messages.
pub struct Connection {
    /// The TLS stream, buffered for reading replies.
    stream: BufReader<TlsStream<TcpStream>>,
    /// What the upstream announced in its EHLO reply inside TLS.
    caps: Caps,
    /// How long to wait for each reply.
    timeout: Duration,
    /// Negotiated TLS version, e.g. `TLSv1_3`, for the audit log.
    pub tls_version: String,
    /// Negotiated cipher suite, for the audit log.
    pub cipher: String,
    /// When the last transaction finished; idle connections are closed.
    pub last_used: Instant,
    /// The SMTP dialogue may be out of step (an RSET failed, or a reply made no sense):
    /// the connection must not be used for another message.
    pub broken: bool,
    /// The message text of the last [`Connection::send`] went out: if no reply follows,
    /// the upstream may have it, so it must not be resent at once.
    pub data_sent: bool,
}

async fn with_timeout<T>(
    d: Duration,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, UpstreamError> {
    Ok(tokio::time::timeout(d, f)
        .await
        .map_err(|_| UpstreamError::Timeout(d))??)
}

async fn send_line<S: AsyncWrite + Unpin>(
    w: &mut S,
    line: &str,
    timeout: Duration,
) -> Result<(), UpstreamError> {
    with_timeout(timeout, async {
        w.write_all(line.as_bytes()).await?;
        w.write_all(b"\r\n").await?;
        w.flush().await
    })
    .await
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    line: &str,
    timeout: Duration,
) -> Result<(ServerReply, Vec<String>), UpstreamError> {
    send_line(s.get_mut(), line, timeout).await?;
    read_reply(s, timeout).await
}

/// Phase 1: the TCP connection.
async fn connect_tcp(s: &UpstreamSettings) -> Result<TcpStream, UpstreamError> {
    let addr = format!("{}:{}", s.host, s.port);
    let tcp = tokio::time::timeout(s.timeout, TcpStream::connect(&addr))
        .await
        .map_err(|_| UpstreamError::Timeout(s.timeout))?
        .map_err(|source| UpstreamError::Connect { addr, source })?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Phase 2 (`starttls` mode): greeting, EHLO and STARTTLS in plaintext. Nothing but
/// these three commands is sent, and any reply is only a reason to retry (anyone on the
/// path could have written it). Returns the TCP stream ready for the handshake.
async fn starttls(s: &UpstreamSettings, tcp: TcpStream) -> Result<TcpStream, UpstreamError> {
    let mut plain = BufReader::new(tcp);
    let caps = greet_and_ehlo(&mut plain, s, true, UpstreamError::RefusedBeforeTls).await?;
    if !parse_caps(&caps).starttls {
        let _ = send_line(plain.get_mut(), "QUIT", s.timeout).await;
        return Err(UpstreamError::NoStarttls(s.host.clone()));
    }
    let (r, _) = command(&mut plain, "STARTTLS", s.timeout).await?;
    if r.code() != 220 {
        return Err(UpstreamError::Tls {
            host: s.host.clone(),
            why: format!("STARTTLS refused: {r}"),
        });
    }
    if !plain.buffer().is_empty() {
        return Err(UpstreamError::Injection);
    }
    Ok(plain.into_inner())
}

/// Phase 3: the TLS handshake, verifying the chain and the host name.
async fn handshake(
    s: &UpstreamSettings,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, UpstreamError> {
    let connector = TlsConnector::from(s.tls.clone());
    tokio::time::timeout(s.timeout, connector.connect(s.server_name.clone(), tcp))
        .await
        .map_err(|_| UpstreamError::Timeout(s.timeout))?
        .map_err(|e| UpstreamError::Tls {
            host: s.host.clone(),
            why: e.to_string(),
        })
}

/// Sends `line` (or, with `None`, only reads the greeting) and expects the reply `code`;
/// another reply becomes the error `refused` makes of it. Gives the reply's lines.
async fn expect<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    line: Option<&str>,
    code: u16,
    timeout: Duration,
    refused: fn(ServerReply) -> UpstreamError,
) -> Result<Vec<String>, UpstreamError> {
    let (r, lines) = match line {
        Some(line) => command(s, line, timeout).await?,
        None => read_reply(s, timeout).await?,
    };
    if r.code() != code {
        return Err(refused(r));
    }
    Ok(lines)
}

/// Reads the greeting (when `greeting`) expecting 220, then sends EHLO expecting 250;
/// gives the EHLO reply's lines (the capabilities). Any other reply becomes `refused`.
async fn greet_and_ehlo<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    s: &UpstreamSettings,
    greeting: bool,
    refused: fn(ServerReply) -> UpstreamError,
) -> Result<Vec<String>, UpstreamError> {
    if greeting {
        expect(stream, None, 220, s.timeout, refused).await?;
    }
    let ehlo = format!("EHLO {}", s.helo);
    expect(stream, Some(&ehlo), 250, s.timeout, refused).await
}

/// The negotiated TLS version and cipher suite, for the audit log.
fn session_names(tls: &TlsStream<TcpStream>) -> (String, String) {
    let (_, conn) = tls.get_ref();
    (
        conn.protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default(),
        conn.negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_default(),
    )
}

/// Where a transaction stands after the envelope phase.
enum AfterEnvelope {
    /// Nothing more to send: each recipient's outcome is final for this attempt.
    Done(Vec<(String, RcptOutcome)>),
    /// The recipients' outcomes so far and the reply to DATA.
    Data(Vec<(String, RcptOutcome)>, ServerReply),
}

impl Connection {
    /// Connects, secures and (if configured) authenticates: phases 1 to 5 (TCP,
    /// plaintext STARTTLS, handshake, greeting and EHLO inside TLS, AUTH).
    pub async fn open(s: &UpstreamSettings) -> Result<Connection, UpstreamError> {
        let tcp = connect_tcp(s).await?;
        let tls = match s.mode {
            UpstreamTls::Implicit => handshake(s, tcp).await?,
            UpstreamTls::Starttls => handshake(s, starttls(s, tcp).await?).await?,
        };
        let (tls_version, cipher) = session_names(&tls);
        let mut stream = BufReader::new(tls);
        // In `starttls` mode the greeting came before TLS.
        let implicit = s.mode == UpstreamTls::Implicit;
        let lines = greet_and_ehlo(&mut stream, s, implicit, UpstreamError::Refused).await?;
        let mut conn = Connection {
            stream,
            caps: parse_caps(&lines),
            timeout: s.timeout,
            tls_version,
            cipher,
            last_used: Instant::now(),
            broken: false,
            data_sent: false,
        };
        if let Some((user, pass)) = &s.credentials {
            conn.authenticate(user, pass).await?;
        }
        Ok(conn)
    }

    /// Phase 5: AUTH PLAIN, else AUTH LOGIN, inside TLS.
    async fn authenticate(&mut self, user: &str, pass: &str) -> Result<(), UpstreamError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let (t, failed) = (self.timeout, UpstreamError::AuthFailed);
        let s = &mut self.stream;
        if self.caps.auth_plain {
            let token = b64.encode(format!("\0{user}\0{pass}"));
            expect(s, Some(&format!("AUTH PLAIN {token}")), 235, t, failed).await?;
        } else if self.caps.auth_login {
            expect(s, Some("AUTH LOGIN"), 334, t, failed).await?;
            expect(s, Some(&b64.encode(user)), 334, t, failed).await?;
            expect(s, Some(&b64.encode(pass)), 235, t, failed).await?;
        } else {
            return Err(UpstreamError::Protocol(
                "upstream offers neither AUTH PLAIN nor AUTH LOGIN (inside TLS)".into(),
            ));
        }
        Ok(())
    }

    /// Sends one message to `rcpts`. `Ok` gives each recipient's outcome; `Err` means the
    /// connection is unusable and every recipient's fate is the error's.
    pub async fn send(
        &mut self,
        from: &str,
        rcpts: &[String],
        message: &[u8],
        body_8bit: bool,
        smtputf8: bool,
    ) -> Result<Vec<(String, RcptOutcome)>, UpstreamError> {
        self.data_sent = false;
        let mail = match self.mail_command(from, message.len(), body_8bit, smtputf8) {
            Ok(mail) => mail,
            Err(refusal) => return Ok(all(rcpts, &refusal)),
        };
        let after = if self.caps.pipelining {
            self.envelope_pipelined(&mail, rcpts).await?
        } else {
            self.envelope_stepwise(&mail, rcpts).await?
        };
        match after {
            AfterEnvelope::Done(results) => Ok(results),
            AfterEnvelope::Data(mut results, data_reply) => {
                self.data(&mut results, data_reply, message).await?;
                Ok(results)
            }
        }
    }

    /// The MAIL FROM command with the parameters the upstream announced, or the reply
    /// that refuses the message because the upstream lacks an extension it needs.
    fn mail_command(
        &self,
        from: &str,
        size: usize,
        body_8bit: bool,
        smtputf8: bool,
    ) -> Result<String, ServerReply> {
        let mut mail = format!("MAIL FROM:<{from}>");
        if self.caps.size.is_some() {
            mail.push_str(&format!(" SIZE={size}"));
        }
        if body_8bit {
            // RFC 6152: 8-bit data only to a server that announces 8BITMIME. Converting
            // here would break the DKIM signature made at receipt.
            if !self.caps.eightbit {
                return Err(local::no_8bitmime());
            }
            mail.push_str(" BODY=8BITMIME");
        }
        if smtputf8 {
            if !self.caps.smtputf8 {
                return Err(local::no_smtputf8());
            }
            mail.push_str(" SMTPUTF8");
        }
        Ok(mail)
    }

    /// Phase 6 with PIPELINING (RFC 2920): MAIL, every RCPT and DATA in one write, then
    /// their replies in order.
    async fn envelope_pipelined(
        &mut self,
        mail: &str,
        rcpts: &[String],
    ) -> Result<AfterEnvelope, UpstreamError> {
        let t = self.timeout;
        let mut batch = String::with_capacity(64 * (rcpts.len() + 2));
        batch.push_str(mail);
        batch.push_str("\r\n");
        for r in rcpts {
            batch.push_str(&format!("RCPT TO:<{r}>\r\n"));
        }
        batch.push_str("DATA\r\n");
        with_timeout(t, async {
            self.stream.get_mut().write_all(batch.as_bytes()).await?;
            self.stream.get_mut().flush().await
        })
        .await?;
        let (mail_reply, _) = read_reply(&mut self.stream, t).await?;
        let mut results = Vec::with_capacity(rcpts.len());
        for r in rcpts {
            let (rr, _) = read_reply(&mut self.stream, t).await?;
            results.push((r.clone(), RcptOutcome::of(rr)));
        }
        let (data_reply, _) = read_reply(&mut self.stream, t).await?;
        if mail_reply.code() / 100 != 2 {
            if data_reply.code() == 354 {
                // Should not happen (RFC 2920 §3.1); end the empty data safely.
                self.finish_data(b"").await?;
            }
            return Ok(AfterEnvelope::Done(all(rcpts, &mail_reply)));
        }
        Ok(AfterEnvelope::Data(results, data_reply))
    }

    /// Phase 6 without PIPELINING: MAIL, each RCPT, and DATA only when a recipient was
    /// accepted.
    async fn envelope_stepwise(
        &mut self,
        mail: &str,
        rcpts: &[String],
    ) -> Result<AfterEnvelope, UpstreamError> {
        let t = self.timeout;
        let (mail_reply, _) = command(&mut self.stream, mail, t).await?;
        if mail_reply.code() / 100 != 2 {
            return Ok(AfterEnvelope::Done(all(rcpts, &mail_reply)));
        }
        let mut results = Vec::with_capacity(rcpts.len());
        for r in rcpts {
            let (rr, _) = command(&mut self.stream, &format!("RCPT TO:<{r}>"), t).await?;
            results.push((r.clone(), RcptOutcome::of(rr)));
        }
        if !results.iter().any(|(_, o)| o.is_delivered()) {
            self.reset().await;
            return Ok(AfterEnvelope::Done(results));
        }
        let (data_reply, _) = command(&mut self.stream, "DATA", t).await?;
        Ok(AfterEnvelope::Data(results, data_reply))
    }

    /// Phase 7: the message text after `354`, whose final reply applies to every
    /// recipient accepted at RCPT.
    async fn data(
        &mut self,
        results: &mut [(String, RcptOutcome)],
        data_reply: ServerReply,
        message: &[u8],
    ) -> Result<(), UpstreamError> {
        if data_reply.code() != 354 {
            self.data_refused(results, data_reply).await;
            return Ok(());
        }
        if !results.iter().any(|(_, o)| o.is_delivered()) {
            self.finish_data(b"").await?;
            self.reset().await;
            return Ok(());
        }
        self.data_sent = true;
        let final_reply = self.finish_data(message).await?;
        for (_, o) in results.iter_mut() {
            if o.is_delivered() {
                *o = RcptOutcome::of(final_reply.clone());
            }
        }
        self.last_used = Instant::now();
        Ok(())
    }

    /// DATA refused although recipients were accepted: the refusal applies to those
    /// recipients. Only 354 lets the text go, so any other reply, even a 2xx, delivered
    /// nothing; a 2xx or 3xx here also means the dialogue is out of step.
    async fn data_refused(&mut self, results: &mut [(String, RcptOutcome)], reply: ServerReply) {
        let outcome = if reply.is_permanent() {
            RcptOutcome::Permanent(reply.clone())
        } else {
            RcptOutcome::Transient(format!("unexpected reply to DATA: {reply}"))
        };
        for (_, o) in results.iter_mut() {
            if o.is_delivered() {
                *o = outcome.clone();
            }
        }
        if matches!(reply.code() / 100, 4 | 5) {
            self.reset().await;
        } else {
            self.broken = true;
        }
    }

    async fn finish_data(&mut self, message: &[u8]) -> Result<ServerReply, UpstreamError> {
        let t = self
            .timeout
            .max(Duration::from_secs(message.len() as u64 / 100_000 + 1));
        let stuffed = dot_stuff(message);
        with_timeout(t, async {
            self.stream.get_mut().write_all(&stuffed).await?;
            self.stream.get_mut().flush().await
        })
        .await?;
        let (r, _) = read_reply(&mut self.stream, t.max(DATA_DONE_TIMEOUT)).await?;
        Ok(r)
    }

    /// RSET after a transaction that sent nothing; a failure leaves the dialogue out of
    /// step, so the connection is marked [`Connection::broken`].
    async fn reset(&mut self) {
        match command(&mut self.stream, "RSET", self.timeout).await {
            Ok((r, _)) if r.code() == 250 => {}
            _ => self.broken = true,
        }
    }

    /// The certificate chain the upstream presented (already verified), leaf first.
    pub fn peer_certificates(&self) -> Vec<rustls_pki_types::CertificateDer<'static>> {
        self.stream
            .get_ref()
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
            .unwrap_or_default()
    }

    /// Phase 8: sends QUIT and closes; errors are irrelevant at this point.
    pub async fn quit(mut self) {
        let _ = command(&mut self.stream, "QUIT", Duration::from_secs(5)).await;
        let _ = self.stream.get_mut().shutdown().await;
    }

    /// Checks the connection is still alive before reuse (RSET, expecting 250).
    pub async fn still_usable(&mut self) -> bool {
        !self.broken
            && matches!(command(&mut self.stream, "RSET", self.timeout).await, Ok((r, _)) if r.code() == 250)
    }
}

/// The same outcome of one reply for every recipient.
fn all(rcpts: &[String], r: &ServerReply) -> Vec<(String, RcptOutcome)> {
    rcpts
        .iter()
        .map(|x| (x.clone(), RcptOutcome::of(r.clone())))
        .collect()
}

/// Dot-stuffs a CRLF message and appends the terminator; a message not ending in CRLF gets one.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 5);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !message.is_empty() && !message.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_from(bytes: &[u8]) -> Result<(ServerReply, Vec<String>), UpstreamError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(read_reply(
            &mut BufReader::new(bytes),
            Duration::from_secs(5),
        ))
    }

    #[test]
    fn reply_text_is_bounded_for_dsns_and_the_audit_log() {
        let mut wire = Vec::new();
        for _ in 0..100 {
            wire.extend_from_slice(b"550-5.1.1 ");
            wire.extend_from_slice(&[b'Y'; 4000]);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"550 5.1.1 end\r\n");
        let (r, _) = reply_from(&wire).unwrap();
        assert_eq!(r.code(), 550);
        assert!(
            r.text().chars().count() <= MAX_REPLY_TEXT + 6,
            "{}",
            r.text().len()
        );
        assert!(r.text().ends_with("[...]"));
        // At most MAX_REPLY_LINES lines.
        let many = "250-x\r\n".repeat(MAX_REPLY_LINES) + "250 end\r\n";
        assert!(reply_from(many.as_bytes()).is_err());
        let fits = "250-x\r\n".repeat(MAX_REPLY_LINES - 1) + "250 end\r\n";
        assert!(reply_from(fits.as_bytes()).is_ok());
    }

    #[test]
    fn a_trickled_reply_must_arrive_within_one_timeout() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, mut server) = tokio::io::duplex(1024);
            tokio::spawn(async move {
                for _ in 0..20 {
                    if server.write_all(b"250-slow\r\n").await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let _ = server.write_all(b"250 done\r\n").await;
            });
            // Each line comes well within the timeout; the reply as a whole does not.
            let r = read_reply(&mut BufReader::new(client), Duration::from_millis(500)).await;
            assert!(matches!(r, Err(UpstreamError::Timeout(_))), "{r:?}");
        });
    }

    #[test]
    fn only_5xx_inside_tls_is_permanent() {
        let r = |code| ServerReply::parse(code, "");
        assert!(UpstreamError::Refused(r(554)).is_permanent());
        assert!(!UpstreamError::Refused(r(999)).is_permanent());
        assert!(!UpstreamError::Refused(r(421)).is_permanent());
        assert!(!UpstreamError::RefusedBeforeTls(r(554)).is_permanent());
        assert!(UpstreamError::RefusedBeforeTls(r(554)).is_transient());
        assert!(UpstreamError::Timeout(Duration::from_secs(1)).is_transient());
    }

    /// A refusal whose enhanced code disagrees with its basic code is decided by the
    /// basic code (see `queue/reply.rs`): `421 5.7.0` stays queued, `550 4.2.2` bounces
    /// with the status `5.0.0`, not the `4.2.2` it claims.
    #[test]
    fn a_mismatched_refusal_is_decided_by_its_basic_code() {
        let e = UpstreamError::Refused(ServerReply::parse(421, "5.7.0 go away"));
        assert!(e.is_transient() && !e.is_permanent());
        assert_eq!(e.reply().map(|r| r.status()), Some("4.0.0".into()));
        assert_eq!(
            e.outcome(),
            RcptOutcome::Transient("upstream refused: 421 5.7.0 go away".into())
        );
        let e = UpstreamError::Refused(ServerReply::parse(550, "4.2.2 mailbox full"));
        assert!(e.is_permanent() && !e.is_transient());
        match e.outcome() {
            RcptOutcome::Permanent(r) => {
                assert_eq!(r.status(), "5.0.0");
                assert_eq!(r.to_string(), "550 4.2.2 mailbox full");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dot_stuffing() {
        assert_eq!(dot_stuff(b"a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(dot_stuff(b".x"), b"..x\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }

    #[test]
    fn caps_and_enhanced_codes() {
        let c = parse_caps(&[
            "mx".into(),
            "STARTTLS".into(),
            "AUTH LOGIN PLAIN".into(),
            "SIZE 100".into(),
            "PIPELINING".into(),
        ]);
        assert!(c.starttls && c.auth_plain && c.auth_login && c.pipelining);
        assert_eq!(c.size, Some(100));
        let (r, _) = reply_from(b"550-5.1.1 no such\r\n550 5.1.1 user\r\n").unwrap();
        assert_eq!(r.enhanced(), Some("5.1.1"));
        assert_eq!(r.text(), "5.1.1 no such / 5.1.1 user");
    }
}
