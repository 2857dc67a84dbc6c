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
        matches!(self, UpstreamError::Refused(r) if r.code / 100 == 5)
    }
}

/// A reply from the upstream, kept verbatim for DSNs and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    pub code: u16,
    /// All lines joined with " / ", without the codes.
    pub text: String,
}

impl std::fmt::Display for ServerReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

impl ServerReply {
    /// The enhanced status code at the start of the text, if any (e.g. `5.1.1`).
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.text.split_whitespace().next()?;
        let parts: Vec<&str> = first.split('.').collect();
        (parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
        .then_some(first)
    }
}

/// What happened to one recipient in one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptOutcome {
    Delivered(ServerReply),
    Transient(String),
    Permanent(ServerReply),
}

/// Everything the relay needs to reach the upstream; rebuilt on reload.
#[derive(Clone)]
pub struct UpstreamSettings {
    pub host: String,
    pub port: u16,
    pub mode: UpstreamTls,
    pub server_name: rustls_pki_types::ServerName<'static>,
    pub tls: Arc<rustls::ClientConfig>,
    /// AUTH credentials; the password never leaves this struct except inside TLS.
    pub credentials: Option<(String, String)>,
    /// Our EHLO name.
    pub helo: String,
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
            return Ok((ServerReply { code, text }, lines));
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
    stream: BufReader<TlsStream<TcpStream>>,
    caps: Caps,
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

impl Connection {
    /// Connects, secures and (if configured) authenticates.
    pub async fn open(s: &UpstreamSettings) -> Result<Connection, UpstreamError> {
        let addr = format!("{}:{}", s.host, s.port);
        let tcp = tokio::time::timeout(s.timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| UpstreamError::Timeout(s.timeout))?
            .map_err(|source| UpstreamError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let connector = TlsConnector::from(s.tls.clone());
        let tls_err = |e: std::io::Error| UpstreamError::Tls {
            host: s.host.clone(),
            why: e.to_string(),
        };
        let tls = match s.mode {
            UpstreamTls::Implicit => {
                tokio::time::timeout(s.timeout, connector.connect(s.server_name.clone(), tcp))
                    .await
                    .map_err(|_| UpstreamError::Timeout(s.timeout))?
                    .map_err(tls_err)?
            }
            UpstreamTls::Starttls => {
                let mut plain = BufReader::new(tcp);
                let (greet, _) = read_reply(&mut plain, s.timeout).await?;
                if greet.code != 220 {
                    return Err(UpstreamError::RefusedBeforeTls(greet));
                }
                let (r, lines) =
                    command(&mut plain, &format!("EHLO {}", s.helo), s.timeout).await?;
                if r.code != 250 {
                    return Err(UpstreamError::RefusedBeforeTls(r));
                }
                if !parse_caps(&lines).starttls {
                    let _ = send_line(plain.get_mut(), "QUIT", s.timeout).await;
                    return Err(UpstreamError::NoStarttls(s.host.clone()));
                }
                let (r, _) = command(&mut plain, "STARTTLS", s.timeout).await?;
                if r.code != 220 {
                    return Err(UpstreamError::Tls {
                        host: s.host.clone(),
                        why: format!("STARTTLS refused: {r}"),
                    });
                }
                if !plain.buffer().is_empty() {
                    return Err(UpstreamError::Injection);
                }
                let tcp = plain.into_inner();
                tokio::time::timeout(s.timeout, connector.connect(s.server_name.clone(), tcp))
                    .await
                    .map_err(|_| UpstreamError::Timeout(s.timeout))?
                    .map_err(tls_err)?
            }
        };
        let (tls_version, cipher) = {
            let (_, conn) = tls.get_ref();
            (
                conn.protocol_version()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default(),
                conn.negotiated_cipher_suite()
                    .map(|c| format!("{:?}", c.suite()))
                    .unwrap_or_default(),
            )
        };
        let mut stream = BufReader::new(tls);
        if s.mode == UpstreamTls::Implicit {
            let (greet, _) = read_reply(&mut stream, s.timeout).await?;
            if greet.code != 220 {
                return Err(UpstreamError::Refused(greet));
            }
        }
        let (r, lines) = command(&mut stream, &format!("EHLO {}", s.helo), s.timeout).await?;
        if r.code != 250 {
            return Err(UpstreamError::Refused(r));
        }
        let caps = parse_caps(&lines);
        let mut conn = Connection {
            stream,
            caps,
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

    async fn authenticate(&mut self, user: &str, pass: &str) -> Result<(), UpstreamError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let t = self.timeout;
        if self.caps.auth_plain {
            let token = b64.encode(format!("\0{user}\0{pass}"));
            let (r, _) = command(&mut self.stream, &format!("AUTH PLAIN {token}"), t).await?;
            if r.code != 235 {
                return Err(UpstreamError::AuthFailed(r));
            }
        } else if self.caps.auth_login {
            let (r, _) = command(&mut self.stream, "AUTH LOGIN", t).await?;
            if r.code != 334 {
                return Err(UpstreamError::AuthFailed(r));
            }
            let (r, _) = command(&mut self.stream, &b64.encode(user), t).await?;
            if r.code != 334 {
                return Err(UpstreamError::AuthFailed(r));
            }
            let (r, _) = command(&mut self.stream, &b64.encode(pass), t).await?;
            if r.code != 235 {
                return Err(UpstreamError::AuthFailed(r));
            }
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
        let t = self.timeout;
        self.data_sent = false;
        let mut mail = format!("MAIL FROM:<{from}>");
        if self.caps.size.is_some() {
            mail.push_str(&format!(" SIZE={}", message.len()));
        }
        if body_8bit && self.caps.eightbit {
            mail.push_str(" BODY=8BITMIME");
        }
        let refuse_all = |code: u16, text: String| {
            rcpts
                .iter()
                .map(|r| {
                    let reply = ServerReply {
                        code,
                        text: text.clone(),
                    };
                    (r.clone(), RcptOutcome::Permanent(reply))
                })
                .collect()
        };
        if body_8bit && !self.caps.eightbit {
            // RFC 6152: 8-bit data only to a server that announces 8BITMIME. Converting
            // here would break the DKIM signature made at receipt.
            return Ok(refuse_all(
                554,
                "5.6.3 upstream does not announce 8BITMIME and the message has 8-bit \
                 content; send it 7-bit (base64 or quoted-printable) or use an upstream \
                 with 8BITMIME"
                    .into(),
            ));
        }
        if smtputf8 {
            if !self.caps.smtputf8 {
                let why = "upstream does not support SMTPUTF8, needed for a non-ASCII address";
                return Ok(refuse_all(553, format!("5.6.7 {why}")));
            }
            mail.push_str(" SMTPUTF8");
        }
        let mut results: Vec<(String, RcptOutcome)> = Vec::with_capacity(rcpts.len());
        let data_reply;
        if self.caps.pipelining {
            let mut batch = String::with_capacity(64 * (rcpts.len() + 2));
            batch.push_str(&mail);
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
            for r in rcpts {
                let (rr, _) = read_reply(&mut self.stream, t).await?;
                results.push((r.clone(), classify(rr)));
            }
            let (dr, _) = read_reply(&mut self.stream, t).await?;
            if mail_reply.code / 100 != 2 {
                if dr.code == 354 {
                    // Should not happen (RFC 2920 §3.1); end the empty data safely.
                    self.finish_data(b"").await?;
                }
                return Ok(all(rcpts, &mail_reply));
            }
            data_reply = dr;
        } else {
            let (mail_reply, _) = command(&mut self.stream, &mail, t).await?;
            if mail_reply.code / 100 != 2 {
                return Ok(all(rcpts, &mail_reply));
            }
            for r in rcpts {
                let (rr, _) = command(&mut self.stream, &format!("RCPT TO:<{r}>"), t).await?;
                results.push((r.clone(), classify(rr)));
            }
            if !results
                .iter()
                .any(|(_, o)| matches!(o, RcptOutcome::Delivered(_)))
            {
                self.reset().await;
                return Ok(results);
            }
            let (dr, _) = command(&mut self.stream, "DATA", t).await?;
            data_reply = dr;
        }
        let any_ok = results
            .iter()
            .any(|(_, o)| matches!(o, RcptOutcome::Delivered(_)));
        if data_reply.code != 354 {
            // DATA refused although recipients were accepted: applies to those
            // recipients. Only 354 lets the text go, so any other reply, even a 2xx,
            // delivered nothing; a 2xx or 3xx here also means the dialogue is out of step.
            let outcome = if data_reply.code / 100 == 5 {
                RcptOutcome::Permanent(data_reply.clone())
            } else {
                RcptOutcome::Transient(format!("unexpected reply to DATA: {data_reply}"))
            };
            for (_, o) in results.iter_mut() {
                if matches!(o, RcptOutcome::Delivered(_)) {
                    *o = outcome.clone();
                }
            }
            if data_reply.code / 100 != 4 && data_reply.code / 100 != 5 {
                self.broken = true;
            } else {
                self.reset().await;
            }
            return Ok(results);
        }
        if !any_ok {
            self.finish_data(b"").await?;
            self.reset().await;
            return Ok(results);
        }
        self.data_sent = true;
        let final_reply = self.finish_data(message).await?;
        for (_, o) in results.iter_mut() {
            if matches!(o, RcptOutcome::Delivered(_)) {
                *o = classify(final_reply.clone());
            }
        }
        self.last_used = Instant::now();
        Ok(results)
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
            Ok((r, _)) if r.code == 250 => {}
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

    /// Sends QUIT and closes; errors are irrelevant at this point.
    pub async fn quit(mut self) {
        let _ = command(&mut self.stream, "QUIT", Duration::from_secs(5)).await;
        let _ = self.stream.get_mut().shutdown().await;
    }

    /// Checks the connection is still alive before reuse (RSET, expecting 250).
    pub async fn still_usable(&mut self) -> bool {
        !self.broken
            && matches!(command(&mut self.stream, "RSET", self.timeout).await, Ok((r, _)) if r.code == 250)
    }
}

fn classify(r: ServerReply) -> RcptOutcome {
    match r.code / 100 {
        2 => RcptOutcome::Delivered(r),
        5 => RcptOutcome::Permanent(r),
        _ => RcptOutcome::Transient(r.to_string()),
    }
}

fn all(rcpts: &[String], r: &ServerReply) -> Vec<(String, RcptOutcome)> {
    rcpts
        .iter()
        .map(|x| (x.clone(), classify(r.clone())))
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
        assert_eq!(r.code, 550);
        assert!(
            r.text.chars().count() <= MAX_REPLY_TEXT + 6,
            "{}",
            r.text.len()
        );
        assert!(r.text.ends_with("[...]"));
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
        let r = |code| ServerReply {
            code,
            text: String::new(),
        };
        assert!(UpstreamError::Refused(r(554)).is_permanent());
        assert!(!UpstreamError::Refused(r(999)).is_permanent());
        assert!(!UpstreamError::Refused(r(421)).is_permanent());
        assert!(!UpstreamError::RefusedBeforeTls(r(554)).is_permanent());
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
        let r = ServerReply {
            code: 550,
            text: "5.1.1 no such user".into(),
        };
        assert_eq!(r.enhanced(), Some("5.1.1"));
    }
}
