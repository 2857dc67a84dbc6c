//! The accept loop and the I/O driver of each SMTP session.
//!
//! A semaphore permit is taken before `accept`, so at most `max_connections` sessions
//! exist. Each session drives the sans-IO [`Session`] over the socket: bounded command
//! lines, per-command and per-DATA-chunk timeouts, STARTTLS with pipelined input
//! discarded, and replies flushed only when the client's pipelined input is used up.
//! Shutdown: listeners stop accepting; idle sessions are told `421` and closed;
//! a session inside DATA finishes its message first.
//!
//! A session's phases, one function each: `handle` (greeting, then the command
//! loop acting on each [`Step`]), `Conn::next_command` (a buffered line, an over-long
//! one discarded, or flush and wait for input under the command deadline and
//! shutdown), `upgrade` (STARTTLS), `Conn::receive_data` (the message under the
//! per-line data deadline) and `end_of_data` (the listener's own refusals, else the
//! ingest pipeline).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::audit::{Cause, Envelope, Event, Origin, Peer, Stage};
use crate::backoff::AcceptBackoff;
use crate::runtime::{Runtime, Shared};
use crate::smtp::ingest::Ingest;
use crate::smtp::reply::{named, Reply};
use crate::smtp::session::{DataOutcome, DataReceiver, Hooks, Session, SessionLimits, Step};

/// Longest command line accepted (RFC 5321 §4.5.3.1.4 says 512; AUTH needs more, RFC 4954 §4).
pub const MAX_COMMAND_LINE: usize = 12 * 1024;

/// A client connection before or after STARTTLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Binds every configured address. Fails with the address that could not be bound.
pub async fn bind(addrs: &[SocketAddr]) -> std::io::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for a in addrs {
        out.push(
            TcpListener::bind(a)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {a}: {e}")))?,
        );
    }
    Ok(out)
}

/// Accepts connections on all listeners until `shutdown`; then waits (at most `drain`)
/// for the sessions to finish.
pub async fn serve(
    listeners: Vec<TcpListener>,
    shared: Shared,
    ingest: Arc<Ingest>,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let max = shared.get().config.server.max_connections;
    let limit = Arc::new(Semaphore::new(max));
    let peers = PeerCounts::default();
    let mut tasks = Vec::new();
    for l in listeners {
        let (shared, ingest, limit, sd) = (
            shared.clone(),
            ingest.clone(),
            limit.clone(),
            shutdown.clone(),
        );
        let peers = peers.clone();
        tasks.push(tokio::spawn(accept_loop(
            l, shared, ingest, limit, sd, max, peers,
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    // Drain: all permits back means every session ended.
    let _ = tokio::time::timeout(drain, limit.acquire_many(max as u32)).await;
}

async fn accept_loop(
    listener: TcpListener,
    shared: Shared,
    ingest: Arc<Ingest>,
    limit: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
    max: usize,
    peers: PeerCounts,
) {
    let mut backoff = AcceptBackoff::default();
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => {
                    backoff.reset();
                    x
                }
                Err(e) => {
                    backoff.wait("SMTP", &e).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = sock.set_nodelay(true);
        let rt = shared.get();
        let per_peer = rt.config.server.max_connections_per_peer;
        let Some(peer_slot) = peers.claim(peer.ip(), per_peer_limit(per_peer, max, peer)) else {
            // Over its share: told so and closed at once; the slot goes back.
            drop(permit);
            tokio::spawn(async move {
                let mut sock = sock;
                let reply = Reply::new(
                    crate::smtp::reply::Class::Transient,
                    21,
                    (7, 0),
                    format!(
                        "too many connections from {} (max_connections_per_peer); try again later",
                        peer.ip()
                    ),
                );
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), sock.write_all(&reply.to_wire()))
                        .await;
            });
            continue;
        };
        let ingest = ingest.clone();
        let sd = shutdown.clone();
        let load = Load {
            slots: limit.clone(),
            max,
        };
        tokio::spawn(async move {
            ingest
                .metrics
                .sessions
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ingest
                .metrics
                .sessions_active
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(e) = handle(sock, peer, rt, ingest.clone(), sd, load).await {
                tracing::debug!("session with {peer} ended: {e}");
            }
            ingest
                .metrics
                .sessions_active
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            drop(peer_slot);
            drop(permit);
        });
    }
}

/// Sessions per client address, shared by all listeners.
#[derive(Clone, Default)]
struct PeerCounts(Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

/// One session's claim on its address's share; released on drop.
struct PeerSlot {
    counts: PeerCounts,
    ip: std::net::IpAddr,
}

impl PeerCounts {
    /// Counts a new session from `ip`, or `None` when it already holds `limit`.
    fn claim(&self, ip: std::net::IpAddr, limit: usize) -> Option<PeerSlot> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut m = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// How many sessions `peer` may hold: the configured `max_connections_per_peer`; else
/// all but one slot for another host, and every slot on loopback (all local
/// applications share its address, so a share would only shut real clients out).
fn per_peer_limit(configured: Option<usize>, max: usize, peer: SocketAddr) -> usize {
    match configured {
        Some(n) => n,
        None if peer.ip().is_loopback() => max,
        None => max.saturating_sub(1).max(1),
    }
}

/// Policy and credential decisions for a session, from its runtime snapshot.
pub struct RuntimeHooks<'a> {
    pub rt: &'a Runtime,
    /// For auditing refusals.
    pub ingest: &'a Ingest,
    /// Peer address, for the audit log.
    pub peer: SocketAddr,
    /// Set when a hook wrote a refusal to the audit log (so the driver does not write
    /// a second record for the same reply).
    pub audited: std::cell::Cell<bool>,
}

impl RuntimeHooks<'_> {
    /// Audits a refused MAIL, RCPT or DATA command that no hook audited (a bad
    /// parameter, SIZE over the limit, too many recipients, a command out of sequence):
    /// every refusal is in the audit log.
    fn audit_refused_command(&self, session: &Session, line: &[u8], step: &Step) {
        let reply = match step {
            Step::Reply(r) | Step::Close(r) => r,
            Step::StartTls(_) | Step::Data(_) => return,
        };
        if reply.code() < 400 || self.audited.get() {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let verb = text.split_ascii_whitespace().next().unwrap_or("");
        let stage = if verb.eq_ignore_ascii_case("mail") {
            Stage::Mail
        } else if verb.eq_ignore_ascii_case("rcpt") {
            Stage::Rcpt
        } else if verb.eq_ignore_ascii_case("data") {
            Stage::Data
        } else {
            return;
        };
        let command: String = text.trim_end().chars().take(300).collect();
        self.ingest.audit.record(&Event::RefusedCommand {
            stage,
            command,
            origin: self.origin(session.client()),
            reply: reply.to_string(),
        });
    }

    /// The `client` and `peer` of this session's records.
    fn origin(&self, client: &str) -> Origin {
        Origin {
            client: client.to_string(),
            peer: Peer::Net(self.peer),
        }
    }
}

impl Hooks for RuntimeHooks<'_> {
    fn address_refused(&self, client: &str, stage: Stage, address: &str, reply: &Reply) {
        if stage == Stage::Rcpt {
            self.ingest
                .metrics
                .recipients_rejected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.ingest.audit.record(&Event::RefusedAddress {
            stage,
            address: address.to_string(),
            origin: self.origin(client),
            reply: reply.to_string(),
        });
    }
    fn authenticate(&self, username: &str, password: &str) -> Option<String> {
        // argon2 takes tens of milliseconds of CPU: tell the runtime this worker blocks,
        // so other sessions' tasks move to another thread meanwhile.
        let client = tokio::task::block_in_place(|| {
            crate::smtp::ingest::authenticate(self.rt, username, password)
        });
        if client.is_none() {
            self.audited.set(true);
            tracing::warn!("AUTH failed for user {username:?} from {}", self.peer);
            self.ingest.audit.record(&Event::RefusedAuth {
                stage: Stage::Auth,
                username: username.to_string(),
                peer: Peer::Net(self.peer),
            });
        }
        client
    }
    fn check_sender(&self, client: &str, sender: &str) -> Result<(), Reply> {
        crate::smtp::ingest::check_sender(self.rt, client, sender).inspect_err(|r| {
            self.audited.set(true);
            self.ingest.audit.record(&Event::RefusedSender {
                stage: Stage::Mail,
                from: sender.to_string(),
                origin: self.origin(client),
                reply: r.to_string(),
            });
        })
    }
    fn check_recipient(&self, client: &str, sender: &str, rcpt: &str) -> Result<(), Reply> {
        crate::smtp::ingest::check_recipient(self.rt, client, sender, rcpt).inspect_err(|r| {
            self.audited.set(true);
            self.ingest
                .metrics
                .recipients_rejected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.ingest.audit.record(&Event::RefusedRecipient {
                stage: Stage::Rcpt,
                envelope: Envelope {
                    from: sender.to_string(),
                    rcpts: vec![rcpt.to_string()],
                },
                origin: self.origin(client),
                reply: r.to_string(),
                policy_version: self.rt.policy.version().to_string(),
            });
        })
    }
}

/// Input buffer with a read position; bytes before `pos` are consumed.
struct Input {
    buf: Vec<u8>,
    pos: usize,
}

impl Input {
    fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }
    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }
    fn clear(&mut self) {
        self.buf.clear();
        self.pos = 0;
    }
    /// Reads more; `Ok(0)` at EOF.
    async fn fill(&mut self, s: &mut Stream) -> std::io::Result<usize> {
        // Read straight into the buffer's spare capacity: no intermediate copy.
        self.buf.reserve(16 * 1024);
        s.read_buf(&mut self.buf).await
    }
}

enum Line {
    Complete(usize),
    TooLong,
}

fn find_line(input: &Input) -> Option<Line> {
    let p = input.pending();
    match p.iter().position(|&b| b == b'\n') {
        Some(i) if i < MAX_COMMAND_LINE => Some(Line::Complete(i + 1)),
        Some(_) => Some(Line::TooLong),
        None if p.len() >= MAX_COMMAND_LINE => Some(Line::TooLong),
        None => None,
    }
}

/// Writes `bytes`, or fails with `TimedOut` when the client does not take them within
/// `limit` (it stopped reading while its socket buffers are full).
async fn send(stream: &mut Stream, bytes: &[u8], limit: Duration) -> std::io::Result<()> {
    tokio::time::timeout(limit, stream.write_all(bytes))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client did not read our replies within command_timeout",
            )
        })?
}

/// How busy the listener is: while fewer than a fifth of the connection slots are free,
/// every wait for a client is cut to [`STRESS_TIMEOUT`] (as Postfix does under stress),
/// so that slow or idle clients cannot keep everyone else out.
struct Load {
    slots: Arc<Semaphore>,
    max: usize,
}

/// The wait for a client while the listener is under stress.
const STRESS_TIMEOUT: Duration = Duration::from_secs(10);

impl Load {
    /// Under stress a client gets one command outside a transaction, not the configured
    /// number (Postfix: `smtpd_junk_command_limit = ${stress?{1}:{100}}`).
    fn junk_limit(&self, configured: u32) -> u32 {
        if self.slots.available_permits() * 5 < self.max {
            1
        } else {
            configured
        }
    }

    fn limit(&self, configured: Duration) -> Duration {
        if self.slots.available_permits() * 5 < self.max {
            configured.min(STRESS_TIMEOUT)
        } else {
            configured
        }
    }
}

/// The limits of a session with `peer`, from the configuration.
fn session_limits(rt: &Runtime, peer: SocketAddr) -> SessionLimits {
    let cfg = &rt.config.server;
    SessionLimits {
        hostname: cfg.hostname.clone(),
        max_message_size: cfg.max_message_size,
        max_recipients: cfg.max_recipients,
        require_auth: cfg.require_auth,
        tls_available: rt.tls_acceptor.is_some(),
        auth_available: !rt.config.clients.is_empty(),
        // An IPv4 client of a dual-stack socket arrives as ::ffff:127.0.0.1.
        peer_is_loopback: peer.ip().to_canonical().is_loopback(),
        address_rules: cfg.address_rules(),
    }
}

/// One session: greeting, then the command loop, each command's step acted on
/// (a reply, closing, the STARTTLS upgrade, receiving a message), until the client
/// quits, times out, breaks the connection, or the server shuts down.
async fn handle(
    sock: TcpStream,
    peer: SocketAddr,
    rt: Arc<Runtime>,
    ingest: Arc<Ingest>,
    mut shutdown: watch::Receiver<bool>,
    load: Load,
) -> std::io::Result<()> {
    let hooks = RuntimeHooks {
        rt: &rt,
        ingest: &ingest,
        peer,
        audited: std::cell::Cell::new(false),
    };
    let mut session = Session::new(session_limits(&rt, peer));
    let mut conn = Conn {
        stream: Stream::Plain(sock),
        input: Input {
            buf: Vec::with_capacity(4096),
            pos: 0,
        },
        out: session.greeting().to_wire(),
        // A client that stops reading our replies would hold its connection slot
        // forever: writes get the same limit as reads (RFC 5321 4.5.3.2 applies to
        // both sides).
        write_limit: rt.config.server.command_timeout,
    };
    let mut reader = CommandReader::default();
    loop {
        let line = match conn
            .next_command(&mut reader, &mut session, &load, &rt, &mut shutdown)
            .await?
        {
            Next::Line(line) => line,
            Next::Again => continue,
            Next::End => return Ok(()),
        };
        session.set_junk_command_limit(load.junk_limit(rt.config.server.junk_command_limit));
        hooks.audited.set(false);
        let step = session.command(&line, &hooks);
        hooks.audit_refused_command(&session, &line, &step);
        match step {
            Step::Reply(r) => conn.queue(&r),
            Step::Close(r) => {
                conn.queue(&r);
                conn.send_all().await?;
                let _ = tokio::time::timeout(conn.write_limit, conn.stream.shutdown()).await;
                return Ok(());
            }
            Step::StartTls(r) => {
                conn.queue(&r);
                conn.flush().await?;
                // Anything pipelined after STARTTLS is discarded (CVE-2011-0411).
                conn.input.clear();
                let Some(acceptor) = rt.tls_acceptor.clone() else {
                    return Ok(());
                };
                let Stream::Plain(tcp) = conn.stream else {
                    return Ok(());
                };
                conn.stream = upgrade(tcp, acceptor).await?;
                session.tls_established();
            }
            Step::Data(r) => {
                conn.queue(&r);
                conn.flush().await?;
                let normalize = rt
                    .config
                    .server
                    .bare_line_endings
                    .normalizes(session.peer_is_loopback(), session.is_authenticated());
                let mut rx = session.data_receiver(normalize);
                if !conn.receive_data(&mut rx, &load, &rt).await? {
                    return Ok(());
                }
                let reply = end_of_data(&mut session, rx, peer, &rt, &ingest).await;
                conn.queue(&reply);
            }
        }
    }
}

/// The STARTTLS handshake, within 30 seconds.
async fn upgrade(tcp: TcpStream, acceptor: tokio_rustls::TlsAcceptor) -> std::io::Result<Stream> {
    let tls = tokio::time::timeout(Duration::from_secs(30), acceptor.accept(tcp))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timeout")
        })??;
    Ok(Stream::Tls(Box::new(tls)))
}

/// End of DATA: the message (or why there is none) goes to the ingest pipeline, and
/// its reply comes back. The listener's own refusals (size, bare line endings) are
/// audited here.
async fn end_of_data(
    session: &mut Session,
    rx: DataReceiver,
    peer: SocketAddr,
    rt: &Arc<Runtime>,
    ingest: &Ingest,
) -> Reply {
    let tx = session.take_transaction();
    let info = crate::smtp::ingest::SessionInfo {
        client: session.client().to_string(),
        helo: session.helo().unwrap_or("").to_string(),
        peer,
        tls: session.is_tls(),
    };
    let refused = |reply: Reply, why: &'static str| {
        // Every refusal is audited, these two included.
        ingest.rejected(
            &info,
            &tx,
            &reply,
            Cause::Limit {
                stage: Stage::Data,
                detail: why,
            },
        );
        reply
    };
    match rx.finish() {
        DataOutcome::TooBig => refused(
            named::too_big(rt.config.server.max_message_size),
            "max_message_size",
        ),
        DataOutcome::BareLineEnding => refused(named::bare_line_ending(), "bare_line_endings"),
        DataOutcome::Message(m) => ingest.accept(rt, &info, tx, m).await,
    }
}

/// What the command reader found.
enum Next {
    /// A complete command line.
    Line(Vec<u8>),
    /// Nothing to act on yet: a discarded over-long line, or more input arrived.
    Again,
    /// The session is over: closed, timed out, or shut down (the client was told).
    End,
}

/// The command reader's state between lines.
#[derive(Default)]
struct CommandReader {
    /// Inside an over-long line, whose rest is discarded up to its end.
    skipping_long_line: bool,
    /// A whole command line must arrive by this deadline, set when we start waiting for
    /// it: a client trickling one byte per read cannot stretch it (Postfix's
    /// smtpd_per_record_deadline).
    line_deadline: Option<tokio::time::Instant>,
}

/// The socket side of a session: the stream, the unread input, and the replies not
/// sent yet (flushed only when the client's pipelined input is used up).
struct Conn {
    /// Plain or TLS.
    stream: Stream,
    /// Bytes read and not yet consumed.
    input: Input,
    /// Replies waiting to be sent.
    out: Vec<u8>,
    /// How long the client has to take each write.
    write_limit: Duration,
}

impl Conn {
    /// Adds a reply to the pending output.
    fn queue(&mut self, r: &Reply) {
        self.out.extend_from_slice(&r.to_wire());
    }

    /// Sends the pending output (the last write of a session: it is not cleared).
    async fn send_all(&mut self) -> std::io::Result<()> {
        send(&mut self.stream, &self.out, self.write_limit).await
    }

    /// Sends `r` alone, the session's last reply (the pending output was flushed).
    async fn say_last(&mut self, r: &Reply) -> std::io::Result<()> {
        send(&mut self.stream, &r.to_wire(), self.write_limit).await
    }

    /// Sends the pending output, if any, and clears it.
    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.send_all().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// The next command line: from the buffered input, else after flushing the
    /// replies and reading more within the command deadline.
    async fn next_command(
        &mut self,
        reader: &mut CommandReader,
        session: &mut Session,
        load: &Load,
        rt: &Runtime,
        shutdown: &mut watch::Receiver<bool>,
    ) -> std::io::Result<Next> {
        match find_line(&self.input) {
            Some(Line::Complete(n)) => {
                reader.line_deadline = None;
                let line = self.input.pending()[..n].to_vec();
                self.input.consume(n);
                if reader.skipping_long_line {
                    reader.skipping_long_line = false;
                    return Ok(Next::Again);
                }
                Ok(Next::Line(line))
            }
            Some(Line::TooLong) => self.too_long(reader, session).await,
            None => {
                self.flush().await?;
                let deadline = *reader.line_deadline.get_or_insert_with(|| {
                    tokio::time::Instant::now() + load.limit(rt.config.server.command_timeout)
                });
                self.wait_for_input(deadline, shutdown).await
            }
        }
    }

    /// An over-long command line: discarded up to its end (across reads), answered
    /// once.
    async fn too_long(
        &mut self,
        reader: &mut CommandReader,
        session: &mut Session,
    ) -> std::io::Result<Next> {
        let p = self.input.pending();
        let n = p
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| i + 1)
            .unwrap_or(p.len());
        let had_end = p.get(n.wrapping_sub(1)) == Some(&b'\n');
        self.input.consume(n);
        if !reader.skipping_long_line {
            match session.line_too_long() {
                Step::Close(r) => {
                    self.queue(&r);
                    self.send_all().await?;
                    return Ok(Next::End);
                }
                Step::Reply(r) | Step::StartTls(r) | Step::Data(r) => self.queue(&r),
            }
        }
        reader.skipping_long_line = !had_end;
        if had_end {
            reader.line_deadline = None;
        }
        Ok(Next::Again)
    }

    /// Reads more command input by `deadline`; at the deadline the client is told
    /// `421` (timeout), and on shutdown `421` (shutting down).
    async fn wait_for_input(
        &mut self,
        deadline: tokio::time::Instant,
        shutdown: &mut watch::Receiver<bool>,
    ) -> std::io::Result<Next> {
        let read = tokio::select! {
            r = tokio::time::timeout_at(deadline, self.input.fill(&mut self.stream)) => r,
            _ = shutdown.changed() => {
                self.say_last(&named::shutting_down()).await?;
                return Ok(Next::End);
            }
        };
        match read {
            Err(_) => {
                self.say_last(&named::timeout()).await?;
                Ok(Next::End)
            }
            Ok(Ok(0)) => Ok(Next::End),
            Ok(Ok(_)) => Ok(Next::Again),
            Ok(Err(e)) => Err(e),
        }
    }

    /// Feeds the message to `rx` until its end: `false` when the session ended first
    /// (timed out, with the client told, or the connection closed).
    async fn receive_data(
        &mut self,
        rx: &mut DataReceiver,
        load: &Load,
        rt: &Runtime,
    ) -> std::io::Result<bool> {
        let used = rx.feed(self.input.pending());
        self.input.consume(used);
        // Per line, as for commands: each line of the message must arrive within
        // `data_timeout` of the previous one; bytes trickled within a line do not
        // stretch it.
        let line_limit = || tokio::time::Instant::now() + load.limit(rt.config.server.data_timeout);
        let mut deadline = line_limit();
        while !rx.is_done() {
            let n = tokio::time::timeout_at(deadline, self.input.fill(&mut self.stream)).await;
            match n {
                Err(_) => {
                    self.say_last(&named::timeout()).await?;
                    return Ok(false);
                }
                Ok(Ok(0)) => return Ok(false),
                Ok(Ok(_)) => {
                    let fresh = self.input.pending();
                    if memchr::memchr(b'\n', fresh).is_some() {
                        deadline = line_limit();
                    }
                    let used = rx.feed(fresh);
                    self.input.consume(used);
                }
                Ok(Err(e)) => return Err(e),
            }
        }
        Ok(true)
    }
}
