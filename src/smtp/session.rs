//! The SMTP server session (RFC 5321) as a sans-IO state machine.
//!
//! [`Session::command`] takes one command line and returns a [`Step`]: the reply and what
//! the I/O driver (`listener.rs`) must do next. [`DataReceiver`] turns the raw DATA stream
//! into message bytes. Nothing here reads a socket, so every rule is unit-tested.
//!
//! Invariants:
//! - end-of-data is recognised only as `CRLF . CRLF`; bare LF and bare CR never end a
//!   message or a line, and are either refused or normalised (no SMTP smuggling);
//! - everything a client controls is bounded: recipients, message size (the excess is
//!   counted, never buffered), errors per session;
//! - after STARTTLS the driver discards whatever the client pipelined before the
//!   handshake (CVE-2011-0411).

use base64::Engine;

use crate::audit::Stage;
use crate::smtp::reply::{named, Reply};

/// What a session needs to know about its world. Decisions that need policy or
/// credentials are asked of [`Hooks`].
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// Our host name for the greeting and EHLO.
    pub hostname: String,
    /// Largest message (SIZE).
    pub max_message_size: u64,
    /// Recipients per transaction.
    pub max_recipients: usize,
    /// Clients must AUTH before MAIL.
    pub require_auth: bool,
    /// STARTTLS can be offered.
    pub tls_available: bool,
    /// AUTH can be offered (there are `[[client]]`s).
    pub auth_available: bool,
    /// The peer connected over loopback (plaintext AUTH allowed there).
    pub peer_is_loopback: bool,
    /// How MAIL/RCPT addresses are read into their canonical form (`crate::address`).
    pub address_rules: crate::address::AddressRules,
}

/// Decisions the session delegates: credentials and policy.
pub trait Hooks {
    /// Checks credentials; returns the client's name on success.
    fn authenticate(&self, username: &str, password: &str) -> Option<String>;
    /// May `client` use `sender` in MAIL FROM? `Err` carries the reply.
    fn check_sender(&self, client: &str, sender: &str) -> Result<(), Reply>;
    /// Content-free policy for one recipient. `Err` carries the reply.
    fn check_recipient(&self, client: &str, sender: &str, rcpt: &str) -> Result<(), Reply>;
    /// An address refused for its spelling (`crate::address`) before any policy saw it;
    /// `stage` is [`Stage::Mail`] or [`Stage::Rcpt`]. For the audit log; the reply is already decided.
    fn address_refused(&self, _client: &str, _stage: Stage, _address: &str, _reply: &Reply) {}
}

/// The envelope of one mail transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transaction {
    /// Reverse-path without brackets; empty for the null sender `<>`.
    pub from: String,
    /// Accepted forward-paths without brackets.
    pub rcpts: Vec<String>,
    /// SIZE= declared by the client.
    pub declared_size: Option<u64>,
    /// SMTPUTF8 was requested.
    pub smtputf8: bool,
    /// BODY=8BITMIME was declared.
    pub body_8bit: bool,
}

impl Transaction {
    /// The envelope as the audit records show it.
    pub fn audit_envelope(&self) -> crate::audit::Envelope {
        crate::audit::Envelope {
            from: self.from.clone(),
            rcpts: self.rcpts.clone(),
        }
    }
}

/// What the driver must do after a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send the reply and read the next command.
    Reply(Reply),
    /// Send the reply and close the connection.
    Close(Reply),
    /// Send the reply (220), discard buffered input, then run the TLS handshake.
    StartTls(Reply),
    /// Send the reply (354) and receive the message with a [`DataReceiver`].
    Data(Reply),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Connected; no EHLO/HELO yet.
    Fresh,
    /// Greeted; no transaction.
    Ready,
    /// MAIL accepted.
    HaveMail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum AuthProgress {
    None,
    /// AUTH PLAIN sent without initial response; next line is the response.
    PlainResponse,
    /// AUTH LOGIN: waiting for the user name.
    LoginUser,
    /// AUTH LOGIN: user name known, waiting for the password.
    LoginPassword(String),
}

/// Errors tolerated before the session is closed.
const MAX_ERRORS: u32 = 20;

/// One SMTP session's state.
#[derive(Debug)]
pub struct Session {
    /// What the listener fixed for this connection (host name, size limit, whether
    /// TLS and AUTH may be offered), so the state machine needs no configuration.
    limits: SessionLimits,
    /// Where the dialogue stands, which decides which commands are in order.
    state: State,
    /// The EHLO/HELO argument, kept for the Received field.
    helo: Option<String>,
    /// The session is under TLS: decides whether AUTH is offered and what EHLO lists.
    tls: bool,
    /// The authenticated client name, if any: the policy and the sender checks judge
    /// by it.
    authenticated: Option<String>,
    /// A multi-line AUTH exchange in progress, so the next line is read as its answer
    /// rather than as a command.
    auth: AuthProgress,
    /// The transaction being built (MAIL, RCPT), handed to ingest at end of DATA.
    tx: Transaction,
    /// Commands refused so far: a client that keeps failing is disconnected after
    /// `MAX_ERRORS`, so it cannot probe recipients or credentials without end.
    errors: u32,
    /// Commands outside a transaction (NOOP, RSET, VRFY, EXPN, HELP) since the session
    /// began or its last message: a client that only keeps its slot busy is closed.
    junk: u32,
    /// How many such commands are allowed ([`Session::set_junk_command_limit`]).
    junk_limit: u32,
}

/// Junk commands allowed when the driver sets no limit (Postfix's
/// `smtpd_junk_command_limit`).
pub const DEFAULT_JUNK_COMMAND_LIMIT: u32 = 100;

impl Session {
    /// A new session; the driver sends [`Session::greeting`] first.
    pub fn new(limits: SessionLimits) -> Session {
        Session {
            limits,
            state: State::Fresh,
            helo: None,
            tls: false,
            authenticated: None,
            auth: AuthProgress::None,
            tx: Transaction::default(),
            errors: 0,
            junk: 0,
            junk_limit: DEFAULT_JUNK_COMMAND_LIMIT,
        }
    }

    /// Sets how many commands outside a transaction are allowed; the driver lowers it
    /// while the listener is short of connection slots (as Postfix does under stress).
    pub fn set_junk_command_limit(&mut self, limit: u32) {
        self.junk_limit = limit.max(1);
    }

    /// Counts a command that does not move a transaction forward: past the limit the
    /// session is closed with `421 4.7.0`, which frees its slot for another client.
    fn junk(&mut self, reply: Reply) -> Step {
        self.junk += 1;
        if self.junk > self.junk_limit {
            Step::Close(Reply::new(
                crate::smtp::reply::Class::Transient,
                21,
                (7, 0),
                "too many commands without a transaction (junk_command_limit); closing",
            ))
        } else {
            Step::Reply(reply)
        }
    }

    /// The 220 greeting.
    pub fn greeting(&self) -> Reply {
        Reply::without_enhanced(
            crate::smtp::reply::Class::Success,
            20,
            format!("{} ESMTP sealgate", self.limits.hostname),
        )
    }

    /// The client name policies see: the authenticated `[[client]]` or `local`.
    pub fn client(&self) -> &str {
        self.authenticated.as_deref().unwrap_or("local")
    }

    /// True once the client authenticated as a `[[client]]`.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated.is_some()
    }

    /// The peer connected over loopback.
    pub fn peer_is_loopback(&self) -> bool {
        self.limits.peer_is_loopback
    }

    /// The EHLO/HELO name, if given.
    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// True once STARTTLS completed.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The driver calls this after a successful TLS handshake: the session restarts (RFC 3207 §4.2).
    pub fn tls_established(&mut self) {
        self.tls = true;
        self.state = State::Fresh;
        self.helo = None;
        // RFC 3207 §4.2: discard all knowledge obtained from the client, AUTH included.
        self.authenticated = None;
        self.auth = AuthProgress::None;
        self.tx = Transaction::default();
    }

    /// The transaction; the driver takes it when DATA ends.
    pub fn take_transaction(&mut self) -> Transaction {
        self.state = State::Ready;
        self.junk = 0;
        std::mem::take(&mut self.tx)
    }

    /// A DataReceiver for the current transaction.
    pub fn data_receiver(&self, normalize: bool) -> DataReceiver {
        DataReceiver::new(self.limits.max_message_size, normalize)
    }

    fn error(&mut self, reply: Reply) -> Step {
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            Step::Close(named::too_many_errors())
        } else {
            Step::Reply(reply)
        }
    }

    /// Call when a command line was longer than the driver's limit.
    pub fn line_too_long(&mut self) -> Step {
        self.error(named::line_too_long())
    }

    /// Handles one command line (without its line ending).
    pub fn command(&mut self, line: &[u8], hooks: &dyn Hooks) -> Step {
        let line = strip_eol(line);
        if self.auth != AuthProgress::None {
            return self.auth_continue(line, hooks);
        }
        let Ok(text) = std::str::from_utf8(line) else {
            return self.error(named::syntax("command is not valid UTF-8"));
        };
        let (verb, arg) = match text.find(' ') {
            Some(i) => (&text[..i], text[i + 1..].trim()),
            None => (text, ""),
        };
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => self.ehlo(arg, true),
            "HELO" => self.ehlo(arg, false),
            "MAIL" => self.mail(arg, hooks),
            "RCPT" => self.rcpt(arg, hooks),
            "DATA" => self.data(arg),
            "RSET" => {
                self.tx = Transaction::default();
                if self.state == State::HaveMail {
                    self.state = State::Ready;
                }
                self.junk(named::reset())
            }
            "NOOP" => self.junk(named::ok()),
            "QUIT" => Step::Close(named::bye(&self.limits.hostname)),
            "VRFY" | "EXPN" => self.junk(named::vrfy()),
            "HELP" => self.junk(named::help()),
            "STARTTLS" => self.starttls(arg),
            "AUTH" => self.auth_start(arg, hooks),
            "BDAT" => self.error(Reply::new(
                crate::smtp::reply::Class::Permanent,
                2,
                (5, 1),
                "BDAT not supported (CHUNKING is not advertised); use DATA",
            )),
            _ => self.error(named::unknown_command()),
        }
    }

    fn ehlo(&mut self, arg: &str, extended: bool) -> Step {
        if arg.is_empty() {
            return self.error(named::syntax("EHLO/HELO needs a domain or address literal"));
        }
        self.helo = Some(arg.chars().take(255).collect());
        self.state = State::Ready;
        self.tx = Transaction::default();
        let host = &self.limits.hostname;
        if !extended {
            return Step::Reply(Reply::without_enhanced(
                crate::smtp::reply::Class::Success,
                50,
                host.clone(),
            ));
        }
        let mut lines = vec![
            host.clone(),
            format!("SIZE {}", self.limits.max_message_size),
            "8BITMIME".into(),
            "PIPELINING".into(),
            "ENHANCEDSTATUSCODES".into(),
            "SMTPUTF8".into(),
        ];
        if self.limits.tls_available && !self.tls {
            lines.push("STARTTLS".into());
        }
        if self.limits.auth_available && self.auth_allowed_here() && self.authenticated.is_none() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        lines.push("HELP".into());
        // EHLO replies carry no enhanced code in practice; the first line is the domain.
        let text = lines.join("\n");
        Step::Reply(Reply::without_enhanced(
            crate::smtp::reply::Class::Success,
            50,
            text,
        ))
    }

    fn auth_allowed_here(&self) -> bool {
        self.tls || self.limits.peer_is_loopback
    }

    fn mail(&mut self, arg: &str, hooks: &dyn Hooks) -> Step {
        match self.state {
            State::Fresh => return self.error(named::bad_sequence("send EHLO first")),
            State::HaveMail => return self.error(named::bad_sequence("nested MAIL command")),
            State::Ready => {}
        }
        if self.limits.require_auth && self.authenticated.is_none() {
            return self.error(named::auth_required());
        }
        let Some(rest) = strip_prefix_ci(arg, "FROM:") else {
            return self.error(named::syntax("expected MAIL FROM:<address>"));
        };
        let (path, params) = match parse_path(rest) {
            Ok(p) => p,
            Err(e) => return self.error(named::syntax(e)),
        };
        if path.eq_ignore_ascii_case("postmaster") {
            return self.error(named::syntax("address must be local-part@domain"));
        }
        if !path.is_ascii() && !params_request_smtputf8(params) {
            return self.error(named::smtputf8_required());
        }
        // The one spelling every later step (sender check, signer, DKIM, relay) sees.
        let from = if path.is_empty() {
            String::new()
        } else {
            match crate::address::canonical(path, self.limits.address_rules) {
                Ok(c) => c.into_string(),
                Err(e) => {
                    let r = bad_address(path, e, (1, 7));
                    hooks.address_refused(self.client(), Stage::Mail, path, &r);
                    return self.error(r);
                }
            }
        };
        let mut tx = Transaction {
            from,
            ..Transaction::default()
        };
        for p in params.split_ascii_whitespace() {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match k.to_ascii_uppercase().as_str() {
                "SIZE" => match v.parse::<u64>() {
                    Ok(n) if n > self.limits.max_message_size => {
                        return self.error(named::too_big(self.limits.max_message_size))
                    }
                    Ok(n) => tx.declared_size = Some(n),
                    Err(_) => return self.error(named::syntax("SIZE needs a number")),
                },
                "BODY" => match v.to_ascii_uppercase().as_str() {
                    "8BITMIME" => tx.body_8bit = true,
                    "7BIT" => {}
                    _ => return self.error(named::param_not_supported(p)),
                },
                "SMTPUTF8" => tx.smtputf8 = true,
                // RFC 4954 §5: AUTH=<> or a mailbox; accepted and ignored.
                "AUTH" => {}
                _ => return self.error(named::param_not_supported(p)),
            }
        }
        if let Err(r) = hooks.check_sender(self.client(), &tx.from) {
            return self.error(r);
        }
        self.tx = tx;
        self.state = State::HaveMail;
        Step::Reply(named::sender_ok())
    }

    fn rcpt(&mut self, arg: &str, hooks: &dyn Hooks) -> Step {
        if self.state != State::HaveMail {
            return self.error(named::bad_sequence("send MAIL first"));
        }
        let Some(rest) = strip_prefix_ci(arg, "TO:") else {
            return self.error(named::syntax("expected RCPT TO:<address>"));
        };
        let (path, params) = match parse_path(rest) {
            Ok(p) => p,
            Err(e) => return self.error(named::syntax(e)),
        };
        if path.is_empty() {
            return self.error(named::syntax("empty recipient"));
        }
        if !params.trim().is_empty() {
            // NOTIFY/ORCPT (DSN extension) are not advertised.
            return self.error(named::param_not_supported(params.trim()));
        }
        if !self.tx.smtputf8 && !path.is_ascii() {
            return self.error(named::smtputf8_required());
        }
        // The one spelling the policy, certificates and the relay see.
        let path = match crate::address::canonical(path, self.limits.address_rules) {
            Ok(c) => c.into_string(),
            Err(e) => {
                let r = bad_address(path, e, (1, 3));
                hooks.address_refused(self.client(), Stage::Rcpt, path, &r);
                return self.error(r);
            }
        };
        if self.tx.rcpts.len() >= self.limits.max_recipients {
            return Step::Reply(named::too_many_recipients(self.limits.max_recipients));
        }
        if let Err(r) = hooks.check_recipient(self.client(), &self.tx.from, &path) {
            // Counted like Postfix's hard errors: a client probing thousands of refused
            // recipients (each one an audit record) is cut off after MAX_ERRORS.
            return self.error(r);
        }
        if !self.tx.rcpts.iter().any(|r| r.eq_ignore_ascii_case(&path)) {
            self.tx.rcpts.push(path);
        }
        Step::Reply(named::recipient_ok())
    }

    fn data(&mut self, arg: &str) -> Step {
        if !arg.is_empty() {
            return self.error(named::syntax("DATA takes no argument"));
        }
        if self.state != State::HaveMail {
            return self.error(named::bad_sequence("send MAIL first"));
        }
        if self.tx.rcpts.is_empty() {
            return self.error(named::no_valid_recipients());
        }
        Step::Data(named::start_data())
    }

    fn starttls(&mut self, arg: &str) -> Step {
        if !arg.is_empty() {
            return self.error(named::syntax("STARTTLS takes no argument"));
        }
        if !self.limits.tls_available || self.tls {
            return self.error(named::tls_not_available());
        }
        Step::StartTls(named::ready_tls())
    }

    fn auth_start(&mut self, arg: &str, hooks: &dyn Hooks) -> Step {
        if !self.limits.auth_available {
            return self.error(named::unknown_command());
        }
        if self.authenticated.is_some() {
            return self.error(named::already_authenticated());
        }
        if self.state == State::HaveMail {
            return self.error(named::bad_sequence("AUTH not allowed during a transaction"));
        }
        if self.state == State::Fresh {
            // RFC 4954 4: AUTH is an extension, announced by EHLO.
            return self.error(named::bad_sequence("send EHLO first"));
        }
        if !self.auth_allowed_here() {
            return self.error(named::auth_needs_tls());
        }
        let mut parts = arg.split_ascii_whitespace();
        let mech = parts.next().unwrap_or("").to_ascii_uppercase();
        let initial = parts.next();
        match (mech.as_str(), initial) {
            ("PLAIN", Some(resp)) => self.auth_plain(resp.as_bytes(), hooks),
            ("PLAIN", None) => {
                self.auth = AuthProgress::PlainResponse;
                Step::Reply(Reply::intermediate(34, ""))
            }
            ("LOGIN", None) => {
                self.auth = AuthProgress::LoginUser;
                Step::Reply(Reply::intermediate(34, "VXNlcm5hbWU6"))
            }
            ("LOGIN", Some(user)) => match b64(user.as_bytes()) {
                Some(u) => {
                    self.auth = AuthProgress::LoginPassword(String::from_utf8_lossy(&u).into());
                    Step::Reply(Reply::intermediate(34, "UGFzc3dvcmQ6"))
                }
                None => self.error(named::syntax("invalid base64")),
            },
            _ => self.error(named::auth_mechanism()),
        }
    }

    fn auth_continue(&mut self, line: &[u8], hooks: &dyn Hooks) -> Step {
        let progress = std::mem::replace(&mut self.auth, AuthProgress::None);
        if line == b"*" {
            return self.error(Reply::new(
                crate::smtp::reply::Class::Permanent,
                1,
                (7, 0),
                "authentication cancelled",
            ));
        }
        match progress {
            AuthProgress::None => self.error(named::bad_sequence("no AUTH in progress")),
            AuthProgress::PlainResponse => self.auth_plain(line, hooks),
            AuthProgress::LoginUser => match b64(line) {
                Some(u) => {
                    self.auth = AuthProgress::LoginPassword(String::from_utf8_lossy(&u).into());
                    Step::Reply(Reply::intermediate(34, "UGFzc3dvcmQ6"))
                }
                None => self.error(named::syntax("invalid base64")),
            },
            AuthProgress::LoginPassword(user) => match b64(line) {
                Some(p) => self.auth_finish(&user, &String::from_utf8_lossy(&p), hooks),
                None => self.error(named::syntax("invalid base64")),
            },
        }
    }

    fn auth_plain(&mut self, resp: &[u8], hooks: &dyn Hooks) -> Step {
        let Some(decoded) = b64(resp) else {
            return self.error(named::syntax("invalid base64"));
        };
        let mut fields = decoded.split(|&b| b == 0);
        let (_authz, user, pass) = (fields.next(), fields.next(), fields.next());
        match (user, pass) {
            (Some(u), Some(p)) => {
                let u = String::from_utf8_lossy(u).into_owned();
                let p = String::from_utf8_lossy(p).into_owned();
                self.auth_finish(&u, &p, hooks)
            }
            _ => self.error(named::syntax(
                "AUTH PLAIN response needs authzid NUL user NUL password",
            )),
        }
    }

    fn auth_finish(&mut self, user: &str, pass: &str, hooks: &dyn Hooks) -> Step {
        match hooks.authenticate(user, pass) {
            Some(client) => {
                self.authenticated = Some(client);
                Step::Reply(named::auth_ok())
            }
            None => self.error(named::auth_failed()),
        }
    }
}

fn b64(data: &[u8]) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(data).ok()
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    // `get`: the client's bytes may put a multi-byte character across the cut.
    match (s.get(..prefix.len()), s.get(prefix.len()..)) {
        (Some(head), Some(rest)) if head.eq_ignore_ascii_case(prefix) => Some(rest.trim_start()),
        _ => None,
    }
}

/// `550 5.1.3` (recipient) or `550 5.1.7` (sender): the address has no canonical form.
fn bad_address(path: &str, e: crate::address::AddressError, detail: (u16, u16)) -> Reply {
    Reply::new(
        crate::smtp::reply::Class::Permanent,
        50,
        detail,
        format!("<{path}>: {e}"),
    )
}

/// True when the MAIL parameters hold SMTPUTF8 (checked before the address is read).
fn params_request_smtputf8(params: &str) -> bool {
    params
        .split_ascii_whitespace()
        .any(|p| p.eq_ignore_ascii_case("SMTPUTF8"))
}

/// Splits `<path> params` and checks the path's bytes; its syntax (quotes, source
/// routes, routing characters) is `crate::address::canonical`'s to judge.
fn parse_path(s: &str) -> Result<(&str, &str), &'static str> {
    let s = s.trim_start();
    let Some(rest) = s.strip_prefix('<') else {
        return Err("address must be enclosed in <>");
    };
    let Some(end) = rest.find('>') else {
        return Err("missing closing >");
    };
    let path = &rest[..end];
    let params = &rest[end + 1..];
    if path.len() > 256 {
        return Err("path too long (RFC 5321 §4.5.3.1.3)");
    }
    if path.chars().any(|c| c.is_control() || c == ' ' || c == '<') {
        return Err("invalid character in address");
    }
    Ok((path, params))
}

/// Turns the DATA byte stream into the message: dot-unstuffing, `CRLF.CRLF` detection,
/// bare LF/CR detection or normalisation, and the size limit. Sans-IO: feed it any chunks.
///
/// Normalisation (when asked for):
/// - a bare LF is a line end (CRLF); a run of CRs directly before an LF is one line end
///   (`CR CR LF`, as curl `--crlf` writes it, is CRLF, not an extra empty line); a run of
///   CRs before anything else is one line end per CR (old Mac text);
/// - a line that began after a bare LF can never end the data; its leading dot is
///   unstuffed (as Postfix's `smtpd_forbid_bare_newline = normalize` does, and as clients
///   that stuff after every LF, such as Python's smtplib, expect) unless the message shows
///   that its client does not stuff there: a line after a bare LF that starts with one dot
///   and then anything but a second dot (curl `--upload-file` of an LF file) keeps every
///   such dot.
#[derive(Debug)]
pub struct DataReceiver {
    /// The message so far (never more than `max` bytes).
    message: Vec<u8>,
    max: u64,
    /// Bytes of content seen, stored or not.
    seen: u64,
    state: DataState,
    bare_line_ending: bool,
    normalize: bool,
    done: bool,
    /// Offsets in `message` of the first dot of lines that began after a bare LF with
    /// `..`: removed at the end unless `soft_dots_literal`.
    soft_dots: Vec<usize>,
    /// A line after a bare LF started with a single dot: the client does not dot-stuff
    /// after bare LFs, so no dot there is removed.
    soft_dots_literal: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataState {
    /// After CRLF (or at the start): a '.' here is special.
    LineStart,
    /// A '.' at line start was seen.
    Dot,
    /// ".\r" at line start was seen.
    DotCr,
    /// Inside a line.
    InLine,
    /// This many CRs inside a line were seen, nothing else since.
    Cr(u64),
    /// After a bare LF (normalising): a line start that can never end the data.
    SoftStart,
    /// A '.' after a bare LF was seen (kept provisionally at the recorded offset).
    SoftDot(Option<usize>),
}

/// How the DATA phase ended.
#[derive(Debug, PartialEq, Eq)]
pub enum DataOutcome {
    /// The message, CRLF-normalised.
    Message(Vec<u8>),
    /// Larger than the limit (the excess was discarded).
    TooBig,
    /// Bare LF or CR present and the policy is to refuse.
    BareLineEnding,
}

impl DataReceiver {
    /// A receiver that keeps at most `max` bytes.
    pub fn new(max: u64, normalize: bool) -> DataReceiver {
        DataReceiver {
            message: Vec::with_capacity(8192),
            max,
            seen: 0,
            state: DataState::LineStart,
            bare_line_ending: false,
            normalize,
            done: false,
            soft_dots: Vec::new(),
            soft_dots_literal: false,
        }
    }

    /// True when the bytes emitted so far were all stored.
    fn emit(&mut self, bytes: &[u8]) -> bool {
        self.seen += bytes.len() as u64;
        if self.seen <= self.max {
            self.message.extend_from_slice(bytes);
            true
        } else {
            false
        }
    }

    /// Feeds input; returns how many bytes were consumed. When [`DataReceiver::is_done`]
    /// turns true, the rest of the input (pipelined commands) was not consumed.
    pub fn feed(&mut self, input: &[u8]) -> usize {
        let mut i = 0;
        while i < input.len() {
            if self.done {
                return i;
            }
            if self.state == DataState::InLine {
                // Fast path: ordinary text up to the next CR or LF is copied in bulk.
                let rest = &input[i..];
                let n = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                if n > 0 {
                    self.emit(&rest[..n]);
                    i += n;
                    continue;
                }
            }
            self.byte(input[i]);
            i += 1;
        }
        input.len()
    }

    /// A bare LF: a line end when normalising; the next line can never end the data.
    fn bare_lf(&mut self) {
        self.bare_line_ending = true;
        if self.normalize {
            self.emit(b"\r\n");
            self.state = DataState::SoftStart;
        } else {
            self.emit(b"\n");
            self.state = DataState::InLine;
        }
    }

    /// `n` bare CRs followed by something other than LF: a line end each.
    fn bare_crs(&mut self, n: u64) {
        self.bare_line_ending = true;
        let unit: &[u8] = if self.normalize { b"\r\n" } else { b"\r" };
        for done in 0..n {
            if !self.emit(unit) {
                // Over the limit: the rest is only counted, never stored.
                self.seen += (n - done - 1) * unit.len() as u64;
                break;
            }
        }
        self.state = DataState::InLine;
    }

    fn byte(&mut self, b: u8) {
        use DataState::*;
        match self.state {
            LineStart => {
                if b == b'.' {
                    self.state = Dot;
                } else {
                    self.state = InLine;
                    self.byte(b);
                }
            }
            Dot => {
                if b == b'\r' {
                    self.state = DotCr;
                } else {
                    // Dot-unstuffing: the leading dot is dropped.
                    self.state = InLine;
                    self.byte(b);
                }
            }
            DotCr => {
                if b == b'\n' {
                    self.done = true;
                } else {
                    // ".\r" followed by something else: a bare CR after an unstuffed dot.
                    self.state = Cr(1);
                    self.byte(b);
                }
            }
            SoftStart => {
                if b == b'.' {
                    let at = self.message.len();
                    let stored = self.emit(b".");
                    self.state = SoftDot(stored.then_some(at));
                } else {
                    self.state = InLine;
                    self.byte(b);
                }
            }
            SoftDot(at) => {
                if b == b'.' {
                    // `..` after a bare LF: what a client that stuffs there sends.
                    if let (Some(at), false) = (at, self.soft_dots_literal) {
                        self.soft_dots.push(at);
                    }
                } else {
                    self.soft_dots_literal = true;
                    self.soft_dots = Vec::new();
                }
                self.state = InLine;
                self.byte(b);
            }
            InLine => match b {
                b'\r' => self.state = Cr(1),
                b'\n' => self.bare_lf(),
                _ => {
                    self.emit(&[b]);
                }
            },
            Cr(n) => match b {
                b'\n' => {
                    if n > 1 {
                        // Stray CRs before CRLF: no line of their own.
                        self.bare_line_ending = true;
                    }
                    self.emit(b"\r\n");
                    self.state = LineStart;
                }
                b'\r' => {
                    self.bare_line_ending = true;
                    self.state = Cr(n.saturating_add(1));
                }
                _ => {
                    self.bare_crs(n);
                    self.byte(b);
                }
            },
        }
    }

    /// True once `CRLF.CRLF` was consumed.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Bytes of content seen so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The result, once done.
    pub fn finish(self) -> DataOutcome {
        if self.seen > self.max {
            DataOutcome::TooBig
        } else if self.bare_line_ending && !self.normalize {
            DataOutcome::BareLineEnding
        } else if self.soft_dots.is_empty() || self.soft_dots_literal {
            DataOutcome::Message(self.message)
        } else {
            let mut out = Vec::with_capacity(self.message.len());
            let mut from = 0;
            for &at in &self.soft_dots {
                out.extend_from_slice(self.message.get(from..at).unwrap_or_default());
                from = at + 1;
            }
            out.extend_from_slice(self.message.get(from..).unwrap_or_default());
            DataOutcome::Message(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct AllowAll;
    impl Hooks for AllowAll {
        fn authenticate(&self, u: &str, p: &str) -> Option<String> {
            (u == "billing" && p == "pw").then(|| "billing".to_string())
        }
        fn check_sender(&self, _: &str, s: &str) -> Result<(), Reply> {
            if s == "bad@example.com" {
                Err(named::sender_not_allowed(s, "local"))
            } else {
                Ok(())
            }
        }
        fn check_recipient(&self, _: &str, _: &str, r: &str) -> Result<(), Reply> {
            if r.ends_with("@evil.example") {
                Err(named::policy_reject(format!(
                    "<{r}>: recipient not approved (policies/x.toml)"
                )))
            } else {
                Ok(())
            }
        }
    }

    fn limits() -> SessionLimits {
        SessionLimits {
            hostname: "mx.test".into(),
            max_message_size: 100,
            max_recipients: 2,
            require_auth: false,
            tls_available: false,
            auth_available: true,
            peer_is_loopback: true,
            address_rules: crate::address::AddressRules::default(),
        }
    }

    fn code(step: &Step) -> u16 {
        match step {
            Step::Reply(r) | Step::Close(r) | Step::StartTls(r) | Step::Data(r) => r.code(),
        }
    }

    #[test]
    fn full_transaction() {
        let mut s = Session::new(limits());
        let h = AllowAll;
        assert_eq!(code(&s.command(b"MAIL FROM:<a@b.c>\r\n", &h)), 503);
        assert_eq!(code(&s.command(b"EHLO client\r\n", &h)), 250);
        assert_eq!(
            code(&s.command(b"MAIL FROM:<a@b.c> SIZE=50 BODY=8BITMIME\r\n", &h)),
            250
        );
        assert_eq!(code(&s.command(b"RCPT TO:<x@evil.example>\r\n", &h)), 550);
        assert_eq!(code(&s.command(b"RCPT TO:<x@y.z>\r\n", &h)), 250);
        assert!(matches!(s.command(b"DATA\r\n", &h), Step::Data(_)));
        let tx = s.take_transaction();
        assert_eq!(tx.rcpts, vec!["x@y.z".to_string()]);
        assert!(tx.body_8bit);
    }

    #[test]
    fn multibyte_characters_at_the_command_cut_are_a_syntax_error_not_a_panic() {
        let mut s = Session::new(limits());
        let h = AllowAll;
        s.command(b"EHLO c", &h);
        assert_eq!(
            code(&s.command("MAIL FROM\u{e9}<a@b.c>".as_bytes(), &h)),
            501
        );
        assert_eq!(code(&s.command(b"MAIL FROM:<a@b.c>", &h)), 250);
        assert_eq!(code(&s.command("RCPT TO\u{e9}".as_bytes(), &h)), 501);
        assert_eq!(code(&s.command("RCPT T\u{e9}:<x@y.z>".as_bytes(), &h)), 501);
    }

    #[test]
    fn needlessly_quoted_local_parts_are_unquoted() {
        // Through a session: the policy sees the unquoted spelling (evil.example is refused).
        let mut s = Session::new(limits());
        let h = AllowAll;
        s.command(b"EHLO c", &h);
        s.command(b"MAIL FROM:<\"a\"@b.c>", &h);
        assert_eq!(code(&s.command(b"RCPT TO:<\"x\"@evil.example>", &h)), 550);
        assert_eq!(code(&s.command(b"RCPT TO:<\"x\"@y.z>", &h)), 250);
        let tx = s.take_transaction();
        assert_eq!(tx.from, "a@b.c");
        assert_eq!(tx.rcpts, ["x@y.z"]);
    }

    fn reply_text(step: &Step) -> String {
        match step {
            Step::Reply(r) | Step::Close(r) | Step::StartTls(r) | Step::Data(r) => {
                String::from_utf8_lossy(&r.to_wire()).into_owned()
            }
        }
    }

    #[test]
    fn routing_spellings_are_refused_with_550_5_1_3_before_the_policy() {
        let h = AllowAll;
        let mut s = Session::new(limits());
        s.command(b"EHLO c", &h);
        s.command(b"MAIL FROM:<a@b.c>", &h);
        for (rcpt, why) in [
            ("user%evil.example@y.z", "routing character '%'"),
            ("evil.example!user@y.z", "routing character '!'"),
            ("\"user@evil.example\"@y.z", "routing character '@'"),
            ("user@evil.example@y.z", "more than one '@'"),
            ("ceo(x)@y.z", "comments"),
            ("@a.example,@b.example:user@y.z", "source routes"),
        ] {
            let step = s.command(format!("RCPT TO:<{rcpt}>").as_bytes(), &h);
            let text = reply_text(&step);
            assert!(text.starts_with("550 5.1.3 "), "{rcpt}: {text}");
            assert!(text.contains(why), "{rcpt}: {text}");
            assert!(text.contains(&format!("<{rcpt}>")), "{rcpt}: {text}");
        }
        let step = s.command(b"RCPT TO:<x%y@y.z>", &h);
        assert!(
            reply_text(&step).contains("allow_routing_characters"),
            "the reply names the setting"
        );
        assert!(s.take_transaction().rcpts.is_empty());
    }

    #[test]
    fn sender_with_routing_characters_is_refused_with_550_5_1_7() {
        let h = AllowAll;
        let mut s = Session::new(limits());
        s.command(b"EHLO c", &h);
        let step = s.command(b"MAIL FROM:<billing%evil.example@b.c>", &h);
        assert!(reply_text(&step).starts_with("550 5.1.7 "), "{step:?}");
        assert_eq!(code(&s.command(b"MAIL FROM:<Billing@B.C.>", &h)), 250);
        s.command(b"RCPT TO:<X@Y.Z.>", &h);
        let tx = s.take_transaction();
        assert_eq!(tx.from, "Billing@b.c");
        assert_eq!(tx.rcpts, ["X@y.z"]);
    }

    #[test]
    fn the_setting_lets_routing_characters_through_as_written() {
        let h = AllowAll;
        let mut l = limits();
        l.address_rules.allow_routing_characters = true;
        let mut s = Session::new(l);
        s.command(b"EHLO c", &h);
        s.command(b"MAIL FROM:<a@b.c>", &h);
        assert_eq!(code(&s.command(b"RCPT TO:<u%v@Y.z>", &h)), 250);
        // Comments and source routes stay refused.
        assert_eq!(code(&s.command(b"RCPT TO:<u(c)@y.z>", &h)), 550);
        assert_eq!(code(&s.command(b"RCPT TO:<@a:u@y.z>", &h)), 550);
        assert_eq!(s.take_transaction().rcpts, ["u%v@y.z"]);
    }

    #[test]
    fn auth_needs_ehlo_first() {
        let mut s = Session::new(limits());
        let h = AllowAll;
        let plain = b"AUTH PLAIN AGJpbGxpbmcAcHc=";
        assert_eq!(code(&s.command(plain, &h)), 503);
        s.command(b"EHLO c", &h);
        assert_eq!(code(&s.command(plain, &h)), 235);
    }

    #[test]
    fn refused_recipients_count_as_errors() {
        let mut s = Session::new(limits());
        let h = AllowAll;
        s.command(b"EHLO c", &h);
        s.command(b"MAIL FROM:<a@b.c>", &h);
        let mut closed_after = None;
        for i in 1..=100 {
            if let Step::Close(_) = s.command(format!("RCPT TO:<{i}@evil.example>").as_bytes(), &h)
            {
                closed_after = Some(i);
                break;
            }
        }
        assert_eq!(closed_after, Some(MAX_ERRORS as usize));
    }

    #[test]
    fn greeting_and_ehlo_carry_no_enhanced_code() {
        let mut s = Session::new(limits());
        assert_eq!(s.greeting().to_wire(), b"220 mx.test ESMTP sealgate\r\n");
        let Step::Reply(r) = s.command(b"EHLO c", &AllowAll) else {
            panic!()
        };
        let wire = String::from_utf8(r.to_wire()).unwrap();
        assert!(
            wire.starts_with("250-mx.test\r\n250-SIZE 100\r\n"),
            "{wire}"
        );
    }

    #[test]
    fn null_sender_and_size_are_accepted() {
        let mut s = Session::new(limits());
        let h = AllowAll;
        s.command(b"EHLO c", &h);
        assert_eq!(code(&s.command(b"MAIL FROM:<> SIZE=10", &h)), 250);
        assert_eq!(code(&s.command(b"RSET", &h)), 250);
        assert_eq!(code(&s.command(b"MAIL FROM:<a@b.c> SIZE=1000", &h)), 552);
    }

    #[test]
    fn recipient_limit_is_transient() {
        let mut s = Session::new(limits());
        let h = AllowAll;
        s.command(b"EHLO c", &h);
        s.command(b"MAIL FROM:<a@b.c>", &h);
        s.command(b"RCPT TO:<1@b.c>", &h);
        s.command(b"RCPT TO:<2@b.c>", &h);
        assert_eq!(code(&s.command(b"RCPT TO:<3@b.c>", &h)), 452);
    }

    #[test]
    fn auth_plain_and_login() {
        let h = AllowAll;
        let mut s = Session::new(limits());
        s.command(b"EHLO c", &h);
        assert_eq!(code(&s.command(b"AUTH PLAIN AGJpbGxpbmcAcHc=", &h)), 235);
        assert_eq!(s.client(), "billing");
        let mut s = Session::new(limits());
        s.command(b"EHLO c", &h);
        assert_eq!(code(&s.command(b"AUTH LOGIN", &h)), 334);
        assert_eq!(code(&s.command(b"YmlsbGluZw==", &h)), 334);
        assert_eq!(code(&s.command(b"d3Jvbmc=", &h)), 535);
        assert_eq!(s.client(), "local");
    }

    #[test]
    fn bare_postmaster_is_a_valid_recipient_only() {
        let h = AllowAll;
        let mut s = Session::new(limits());
        s.command(b"EHLO c", &h);
        assert_eq!(code(&s.command(b"MAIL FROM:<postmaster>", &h)), 501);
        assert_eq!(code(&s.command(b"MAIL FROM:<a@b.c>", &h)), 250);
        assert_eq!(code(&s.command(b"RCPT TO:<Postmaster>", &h)), 250);
        assert_eq!(code(&s.command(b"RCPT TO:<nobody>", &h)), 550);
    }

    #[test]
    fn starttls_forgets_earlier_authentication() {
        let h = AllowAll;
        let mut s = Session::new(limits());
        s.command(b"EHLO c", &h);
        assert_eq!(code(&s.command(b"AUTH PLAIN AGJpbGxpbmcAcHc=", &h)), 235);
        s.tls_established();
        assert_eq!(s.client(), "local");
        assert_eq!(code(&s.command(b"MAIL FROM:<a@b.c>", &h)), 503);
    }

    #[test]
    fn sender_check_is_applied() {
        let h = AllowAll;
        let mut s = Session::new(limits());
        s.command(b"EHLO c", &h);
        assert_eq!(code(&s.command(b"MAIL FROM:<bad@example.com>", &h)), 550);
    }

    #[test]
    fn too_many_errors_closes() {
        let h = AllowAll;
        let mut s = Session::new(limits());
        let mut last = Step::Reply(named::ok());
        for _ in 0..MAX_ERRORS {
            last = s.command(b"XYZZY", &h);
        }
        assert!(matches!(last, Step::Close(_)));
    }

    fn receive(input: &[u8], normalize: bool) -> (DataOutcome, usize) {
        let mut d = DataReceiver::new(1000, normalize);
        let used = d.feed(input);
        assert!(
            d.is_done(),
            "not done: {:?}",
            String::from_utf8_lossy(input)
        );
        (d.finish(), used)
    }

    #[test]
    fn data_unstuffs_and_stops_at_crlf_dot_crlf() {
        let (m, used) = receive(b"a\r\n..b\r\n.\r\nQUIT\r\n", false);
        assert_eq!(m, DataOutcome::Message(b"a\r\n.b\r\n".to_vec()));
        assert_eq!(used, 11);
    }

    #[test]
    fn smuggling_variants_never_end_data() {
        for variant in [
            &b"x\n.\nMAIL FROM:<e@v>\r\n"[..],
            b"x\r\n.\nMAIL FROM:<e@v>\r\n",
            b"x\n.\r\nMAIL FROM:<e@v>\r\n",
            b"x\r.\r\nMAIL FROM:<e@v>\r\n",
            b"x\r\n.\rMAIL FROM:<e@v>\r\n",
        ] {
            let mut input = variant.to_vec();
            input.extend_from_slice(b"tail\r\n.\r\n");
            let (m, used) = receive(&input, false);
            assert_eq!(
                m,
                DataOutcome::BareLineEnding,
                "{:?}",
                String::from_utf8_lossy(variant)
            );
            assert_eq!(used, input.len());
            let (m, _) = receive(&input, true);
            let DataOutcome::Message(m) = m else { panic!() };
            // normalised: every line ends in CRLF, no lone CR or LF survives
            for (i, &b) in m.iter().enumerate() {
                if b == b'\n' {
                    assert_eq!(m[i - 1], b'\r');
                }
                if b == b'\r' {
                    assert_eq!(m[i + 1], b'\n');
                }
            }
        }
    }

    #[test]
    fn oversize_is_counted_not_buffered() {
        let mut d = DataReceiver::new(10, false);
        let big = vec![b'a'; 5000];
        d.feed(&big);
        d.feed(b"\r\n.\r\n");
        assert!(d.is_done());
        assert!(d.message.len() <= 10);
        assert_eq!(d.finish(), DataOutcome::TooBig);
    }

    #[test]
    fn bulk_and_bytewise_feeding_agree() {
        let alphabet = [b'a', b'.', b'\r', b'\n', b'b'];
        let mut seed = 0x2545_f491_u64;
        for round in 0..2000 {
            let len = 1 + (round % 60);
            let mut input = Vec::with_capacity(len + 5);
            for _ in 0..len {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                input.push(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            input.extend_from_slice(b"\r\n.\r\n");
            for normalize in [false, true] {
                let mut bulk = DataReceiver::new(40, normalize);
                let used_bulk = bulk.feed(&input);
                let mut slow = DataReceiver::new(40, normalize);
                let mut used_slow = 0;
                while !slow.is_done() && used_slow < input.len() {
                    used_slow += slow.feed(&input[used_slow..used_slow + 1]);
                }
                assert_eq!(
                    used_bulk,
                    used_slow,
                    "{:?}",
                    String::from_utf8_lossy(&input)
                );
                assert_eq!(
                    bulk.finish(),
                    slow.finish(),
                    "{:?}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }

    fn normalized(input: &[u8]) -> Vec<u8> {
        match receive(input, true).0 {
            DataOutcome::Message(m) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stray_cr_before_crlf_makes_no_line() {
        // curl -F --crlf writes CR CR LF: one line end, not an empty line after each.
        assert_eq!(
            normalized(b"From: a@b\r\r\nSubject: s\r\r\n\r\r\nbody\r\n.\r\n"),
            b"From: a@b\r\nSubject: s\r\n\r\nbody\r\n"
        );
        assert_eq!(normalized(b"a\r\r\r\nb\r\n.\r\n"), b"a\r\nb\r\n");
        // Bare CRs before anything else are line ends each (old Mac text).
        assert_eq!(normalized(b"a\r\rb\rc\r\n.\r\n"), b"a\r\n\r\nb\r\nc\r\n");
        let (m, _) = receive(b"a\r\r\nb\r\n.\r\n", false);
        assert_eq!(m, DataOutcome::BareLineEnding);
    }

    #[test]
    fn a_run_of_bare_crs_is_counted_not_stored_beyond_the_limit() {
        let mut d = DataReceiver::new(10, true);
        let mut input = b"a".to_vec();
        input.extend(std::iter::repeat_n(b'\r', 5000));
        input.extend_from_slice(b"b\r\n.\r\n");
        d.feed(&input);
        assert!(d.is_done());
        assert!(d.message.len() <= 10);
        assert_eq!(d.seen(), 1 + 2 * 5000 + 1 + 2);
        assert_eq!(d.finish(), DataOutcome::TooBig);
    }

    #[test]
    fn dots_after_bare_lf_follow_the_client() {
        // Python's smtplib stuffs after every LF: ".x" arrives as "..x".
        assert_eq!(
            normalized(b"a\n..x\n...\n..\nb\n\r\n.\r\n"),
            b"a\r\n.x\r\n..\r\n.\r\nb\r\n\r\n"
        );
        // curl --upload-file does not: a single dot there shows it, and every dot stays.
        assert_eq!(
            normalized(b"a\n..x\n.y\n\r\n.\r\n"),
            b"a\r\n..x\r\n.y\r\n\r\n"
        );
        // Lines after CRLF are unstuffed as always.
        assert_eq!(normalized(b"a\r\n..x\n.y\r\n.\r\n"), b"a\r\n.x\r\n.y\r\n");
        // A dot line after a bare LF never ends the data, and stays visible.
        assert_eq!(
            normalized(b"a\n.\nb\n.\r\nc\r\n.\r\n"),
            b"a\r\n.\r\nb\r\n.\r\nc\r\n"
        );
    }

    #[test]
    fn data_split_across_chunks() {
        let mut d = DataReceiver::new(1000, false);
        for b in b"hello\r\n.\r\n" {
            d.feed(&[*b]);
        }
        assert!(d.is_done());
        assert_eq!(d.finish(), DataOutcome::Message(b"hello\r\n".to_vec()));
    }

    #[test]
    fn junk_commands_past_the_limit_close_the_session() {
        let mut s = Session::new(limits());
        s.set_junk_command_limit(3);
        let h = AllowAll;
        assert!(matches!(s.command(b"EHLO x\r\n", &h), Step::Reply(_)));
        for _ in 0..3 {
            assert!(matches!(s.command(b"NOOP\r\n", &h), Step::Reply(_)));
        }
        match s.command(b"RSET\r\n", &h) {
            Step::Close(r) => assert!(r.to_string().starts_with("421 4.7.0"), "{r}"),
            other => panic!("{other:?}"),
        }
    }
}
