//! The sendmail-compatible entry point: its rules (the command line in sendmail's
//! syntax, parsed by hand; the checks on `-f` and recipient arguments; `-t` recipient
//! extraction; the envelope sender when no `-f` is given; the `[sendmail]`
//! section itself is [`crate::config::SendmailConfig`]) and its job ([`run`]: from the command line, environment and
//! stdin to a submitted message and a sysexits code). `src/cli.rs` only prints.
//!
//! Submission itself goes through [`crate::smtp::submit`] to the local listener (or, while
//! `serve` is down, through [`crate::smtp::maildrop`]), so a message from `sendmail` meets
//! exactly the same policy as one sent over SMTP.

use crate::address::address_problem;
use crate::config::SendmailConfig;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::Config;
use crate::smtp::submit::{self, SubmitError};

/// sendmail exit codes (sysexits.h), as sendmail and Postfix's sendmail use them.
pub mod exit {
    /// Command line usage error (unknown option, `-bt`, a CR or LF in an address).
    pub const USAGE: u8 = 64;
    /// The input could not be read.
    pub const DATAERR: u8 = 65;
    /// A recipient was refused for good.
    pub const NOUSER: u8 = 67;
    /// The message was refused (policy, size).
    pub const UNAVAILABLE: u8 = 69;
    /// Temporary failure: try again later (`serve` down and no maildrop, a 4xx).
    pub const TEMPFAIL: u8 = 75;
    /// The configuration is missing, unreadable or invalid.
    pub const CONFIG: u8 = 78;
}

/// What the invocation asks for (`-b` modes, `-I`, `-q`, `--help`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `-bm` (the default): read a message and submit it.
    Deliver,
    /// `-bs`: an SMTP session on stdin/stdout, proxied to the listener.
    SmtpSession,
    /// `-bp` (`mailq`): the queue list.
    PrintQueue,
    /// `-bv`: verify recipients (RCPT checks) without sending.
    Verify,
    /// `-bi` / `-I` (`newaliases`): nothing to do.
    Newaliases,
    /// `-q` alone: deliver the queue now.
    FlushQueue,
    /// `-qXX` (a queue-runner interval or selector): nothing to do.
    QueueIgnored(String),
    /// `-h` without a hop count, `--help`.
    Help,
}

/// A parsed sendmail command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub mode: Mode,
    /// `-f`/`-r`: the envelope sender (`""` for the null sender `<>`).
    pub from: Option<String>,
    /// `-t`: recipients from the header.
    pub extract: bool,
    /// `-i`/`-oi`: a line with a single dot does not end the message.
    pub ignore_dots: bool,
    /// Recipient arguments, checked.
    pub recipients: Vec<String>,
    /// Options accepted but without effect here (for `SEALGATE_LOG=debug`).
    pub ignored: Vec<String>,
}

/// A command line sendmail cannot act on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsageError {
    #[error("unknown option -{0} (see sealgate sendmail --help)")]
    UnknownOption(char),
    #[error("option -{0} needs an argument")]
    MissingArgument(char),
    #[error("{0}")]
    Unsupported(String),
    #[error("{what} {value:?} refused: {why}")]
    BadAddress {
        what: &'static str,
        value: String,
        why: &'static str,
    },
}

/// The usage text for `-h`/`--help`.
pub const USAGE: &str = "\
usage: sendmail [options] [recipient ...]     (sealgate's sendmail-compatible entry point)
  -t            recipients from To, Cc, Bcc (Resent-* when present), added to any given
  -i, -oi       a line with a single dot does not end the message
  -f ADDR, -r ADDR   envelope sender (default: [sendmail] sender, or USER@hostname)
  -bm           read a message and submit it (default)
  -bs           SMTP session on stdin/stdout, proxied to sealgate's listener
  -bp           list the queue (as `sealgate queue list`)
  -bv           verify recipients without sending
  -bi, -I       newaliases: nothing to do
  -q            deliver the queue now; -qINTERVAL is ignored
  -h N          hop count (ignored); -h alone or --help prints this
  ignored as Postfix's sendmail ignores them: -c -G -U -m -n -v -x -Am -Ac -B TYPE
  -C FILE -e X -F NAME -L LABEL -M XVAL -N DSN -O OPT=VAL -o X -p PROTO -R RET -V ENVID
  -X FILE
The configuration comes from SEALGATE_CONFIG (default /etc/sealgate/sealgate.toml);
AUTH from SEALGATE_USER and SEALGATE_PASSWORD.
Exit: 0 sent or kept in the maildrop, 64 usage, 65 unreadable input, 67 recipient
refused, 69 message refused, 75 try again later, 78 configuration unusable.
";

/// Options that take an argument, attached (`-fADDR`) or as the next word (`-f ADDR`).
const WITH_ARGUMENT: &[u8] = b"ABCFLMNORVXbefopr";
/// Options without an argument that change nothing here.
const IGNORED_FLAGS: &[u8] = b"cGUmnvx";

/// Parses sendmail's command line.
///
/// Written by hand rather than with clap: sendmail's syntax is getopt(3) with
/// clustered flags (`-ti`, `-oi` where `i` is `-o`'s argument), attached or separate
/// option arguments (`-fADDR`, `-f ADDR`), an option whose argument is optional and
/// only ever attached (`-q`, `-q30m`), and `-h` meaning hop count when a number follows
/// but help otherwise; clap cannot express these without swallowing recipients.
/// As with POSIX getopt, the first argument that is not an option (or `--`) ends the
/// options: everything after it is a recipient.
pub fn parse_args(args: &[String]) -> Result<Invocation, UsageError> {
    let mut inv = Invocation {
        mode: Mode::Deliver,
        from: None,
        extract: false,
        ignore_dots: false,
        recipients: Vec::new(),
        ignored: Vec::new(),
    };
    let mut i = 0;
    let mut operands: &[String] = &[];
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            operands = &args[i..];
            break;
        }
        if a == "--help" {
            inv.mode = Mode::Help;
            continue;
        }
        if a.starts_with("--") {
            return Err(UsageError::Unsupported(format!(
                "unknown option {a} (see sealgate sendmail --help)"
            )));
        }
        if !a.starts_with('-') || a == "-" {
            operands = &args[i - 1..];
            break;
        }
        let body = a.as_bytes();
        let mut j = 1;
        while j < body.len() {
            let c = body[j];
            j += 1;
            // Everything after the option letter in this word, as text (options are ASCII).
            let attached = a.get(j..).unwrap_or("");
            if WITH_ARGUMENT.contains(&c) {
                let value = if !attached.is_empty() {
                    attached.to_string()
                } else if i < args.len() {
                    i += 1;
                    args[i - 1].clone()
                } else {
                    return Err(UsageError::MissingArgument(c as char));
                };
                option_with_argument(&mut inv, c, value)?;
                break;
            }
            match c {
                b't' => inv.extract = true,
                b'i' => inv.ignore_dots = true,
                b'I' => inv.mode = Mode::Newaliases,
                b'q' => {
                    inv.mode = if attached.is_empty() {
                        Mode::FlushQueue
                    } else {
                        Mode::QueueIgnored(attached.to_string())
                    };
                    break;
                }
                b'h' => {
                    // `-h N` / `-hN` is sendmail's hop count; `-h` alone is help.
                    if !attached.is_empty() {
                        if !attached.bytes().all(|b| b.is_ascii_digit()) {
                            return Err(UsageError::Unsupported(format!(
                                "-h takes a hop count, not {attached:?}"
                            )));
                        }
                        inv.ignored.push(format!("-h{attached}"));
                    } else if args
                        .get(i)
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                    {
                        inv.ignored.push(format!("-h {}", args[i]));
                        i += 1;
                    } else {
                        inv.mode = Mode::Help;
                    }
                    break;
                }
                c if IGNORED_FLAGS.contains(&c) => inv.ignored.push(format!("-{}", c as char)),
                c => return Err(UsageError::UnknownOption(c as char)),
            }
        }
    }
    for r in operands {
        inv.recipients.push(checked_address("recipient", r)?);
    }
    Ok(inv)
}

fn option_with_argument(inv: &mut Invocation, c: u8, value: String) -> Result<(), UsageError> {
    match c {
        b'f' | b'r' => inv.from = Some(checked_sender(&value)?),
        b'b' => {
            inv.mode = match value.as_str() {
                "m" => Mode::Deliver,
                "s" => Mode::SmtpSession,
                "p" => Mode::PrintQueue,
                "v" => Mode::Verify,
                "i" => Mode::Newaliases,
                "t" => {
                    return Err(UsageError::Unsupported(
                        "-bt (address test mode) is not supported: sealgate rewrites no \
                         addresses; use `sealgate explain` to see what the policy decides"
                            .into(),
                    ))
                }
                "d" | "D" => {
                    return Err(UsageError::Unsupported(
                        "-bd (daemon mode) is not supported: run `sealgate serve`".into(),
                    ))
                }
                other => {
                    return Err(UsageError::Unsupported(format!(
                        "-b{other} is not supported (see sealgate sendmail --help)"
                    )))
                }
            }
        }
        // `-oi` is the only `-o` option with an effect; `-oem`, `-o7`, `-om` ... are not.
        b'o' if value == "i" => inv.ignore_dots = true,
        _ => inv.ignored.push(format!("-{}{value}", c as char)),
    }
    Ok(())
}

/// An address argument as it goes into the envelope: `Name <addr>` and `<addr>` give
/// `addr`; line breaks, NUL, other control characters and stray angle brackets are
/// refused (PHP's mail() passes user input to `-f`).
pub fn checked_address(what: &'static str, value: &str) -> Result<String, UsageError> {
    let bad = |why| UsageError::BadAddress {
        what,
        value: value.to_string(),
        why,
    };
    let trimmed = value.trim_matches(|c| c == ' ' || c == '\t');
    // Refuse control characters anywhere first, so `Name <a>\r\n...` cannot pass.
    if let Some(why) = address_problem(&trimmed.replace(['<', '>'], "")) {
        return Err(bad(why));
    }
    let inner = match (trimmed.find('<'), trimmed.ends_with('>')) {
        (Some(open), true) => &trimmed[open + 1..trimmed.len() - 1],
        _ => trimmed,
    };
    if let Some(why) = address_problem(inner) {
        return Err(bad(why));
    }
    if inner.contains(' ') && !inner.contains('"') {
        return Err(bad("it contains a space"));
    }
    if what == "recipient" && inner.is_empty() {
        return Err(bad("it is empty"));
    }
    Ok(inner.to_string())
}

/// `-f` value: as [`checked_address`]; `<>` or empty is the null sender.
pub fn checked_sender(value: &str) -> Result<String, UsageError> {
    checked_address("sender (-f)", value)
}

/// Recipients from the header, as sendmail `-t` takes them: every To, Cc and Bcc field
/// (every instance, each parsed as an address list by mail-parser as a mail reader
/// would), or, when the message has Resent- fields, every Resent-To, Resent-Cc and
/// Resent-Bcc instead (RFC 5322 §3.6.6; Postfix's cleanup does the same). Returns them
/// in order without duplicates, and the message without Bcc and Resent-Bcc fields.
pub fn recipients_from_headers(message: &[u8]) -> Result<(Vec<String>, Vec<u8>), UsageError> {
    use mail_parser::HeaderName;
    let mut rcpts: Vec<String> = Vec::new();
    if let Some(m) = mail_parser::MessageParser::new().parse_headers(message) {
        let resent = m.headers().iter().any(|h| {
            matches!(
                h.name,
                HeaderName::ResentTo
                    | HeaderName::ResentCc
                    | HeaderName::ResentBcc
                    | HeaderName::ResentFrom
                    | HeaderName::ResentSender
                    | HeaderName::ResentDate
                    | HeaderName::ResentMessageId
            )
        });
        for h in m.headers() {
            let wanted = if resent {
                matches!(
                    h.name,
                    HeaderName::ResentTo | HeaderName::ResentCc | HeaderName::ResentBcc
                )
            } else {
                matches!(h.name, HeaderName::To | HeaderName::Cc | HeaderName::Bcc)
            };
            let Some(list) = h.value.as_address().filter(|_| wanted) else {
                continue;
            };
            let mut found: Vec<String> = list
                .iter()
                .filter_map(|a| a.address().map(str::to_string))
                .collect();
            if found.iter().any(|a| glued(a)) {
                // A field folded without commas between its addresses: mail-parser
                // glues `a@x.test\r\n b@x.test` into one address with two `@`. Read
                // the field as a lenient mail reader does: every `<...>` and every bare
                // word with an `@` is an address.
                let raw = message
                    .get(h.offset_start as usize..h.offset_end as usize)
                    .unwrap_or_default();
                found = lenient_addresses(&String::from_utf8_lossy(raw));
            }
            for addr in found {
                let addr = checked_address("header recipient", &addr)?;
                if !addr.is_empty() && !rcpts.iter().any(|r| r.eq_ignore_ascii_case(&addr)) {
                    rcpts.push(addr);
                }
            }
        }
    }
    let without_bcc = crate::message::mime::without_fields(message, &["bcc", "resent-bcc"]);
    Ok((rcpts, without_bcc.unwrap_or_else(|| message.to_vec())))
}

/// True for an address with more than one `@` outside a quoted local part.
fn glued(addr: &str) -> bool {
    let bare = match addr.rfind('"') {
        Some(i) => &addr[i..],
        None => addr,
    };
    bare.matches('@').count() > 1
}

/// Addresses in a header field value read leniently: comments and quoted strings
/// skipped, every `<...>` and every bare word containing `@` taken as one address.
fn lenient_addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut chars = value.chars().peekable();
    let flush = |word: &mut String, out: &mut Vec<String>| {
        let w = word.trim_matches(|c: char| c == ';' || c == ':');
        if w.contains('@') {
            out.push(w.to_string());
        }
        word.clear();
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                // A quoted display name; its text is not an address.
                let mut escaped = false;
                for q in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if q == '\\' {
                        escaped = true;
                    } else if q == '"' {
                        break;
                    }
                }
            }
            '(' => {
                let mut depth = 1;
                for q in chars.by_ref() {
                    match q {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
            '<' => {
                word.clear();
                let inner: String = chars.by_ref().take_while(|&q| q != '>').collect();
                let inner = inner.trim();
                if !inner.is_empty() {
                    out.push(inner.to_string());
                }
            }
            c if c.is_whitespace() || c == ',' => flush(&mut word, &mut out),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out);
    out
}

/// A bare local part (`root`, as cron passes it) gets `@hostname`, as Postfix's
/// sendmail appends `@$myorigin`; the null sender and full addresses stay as they are.
pub fn qualify(addr: &str, hostname: &str) -> String {
    if addr.is_empty() || addr.contains('@') {
        addr.to_string()
    } else {
        format!("{addr}@{hostname}")
    }
}

/// The address of the message's only From field when it names exactly one address.
pub fn header_from_address(message: &[u8]) -> Option<String> {
    let fields = crate::transform::header_from_fields(message);
    match fields.as_slice() {
        [one] if one.len() == 1 => Some(one[0].clone()),
        _ => None,
    }
}

/// How the envelope sender was chosen, for the caller's diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderSource {
    Argument,
    HeaderFrom,
    Configured,
    UserAtHost,
}

/// The envelope sender without `-f`: the header From address when
/// `sender_from_header` is set and `allowed` (the AUTH client's `allowed_senders`
/// check) lets the caller use it, else `[sendmail] sender`, else `user@hostname`.
pub fn default_sender(
    cfg: &SendmailConfig,
    message: &[u8],
    allowed: &dyn Fn(&str) -> bool,
    user: &str,
    hostname: &str,
) -> (String, SenderSource) {
    if cfg.sender_from_header {
        if let Some(a) = header_from_address(message)
            .filter(|a| address_problem(a).is_none())
            .filter(|a| allowed(a))
        {
            return (a, SenderSource::HeaderFrom);
        }
    }
    if let Some(s) = &cfg.sender {
        return (s.clone(), SenderSource::Configured);
    }
    (format!("{user}@{hostname}"), SenderSource::UserAtHost)
}

// ---------------------------------------------------------------------------------
// The job: from the command line to a submitted (or maildropped) message.
// ---------------------------------------------------------------------------------

/// What the process gives sendmail besides its arguments and stdin; read once by the
/// binary ([`Environment::from_process`]) so that tests can give their own.
#[derive(Debug, Clone)]
pub struct Environment {
    /// The configuration file: `SEALGATE_CONFIG`, else `/etc/sealgate/sealgate.toml`.
    /// Never a default beyond that: without a readable configuration sendmail does not
    /// know where sealgate listens, and whatever else listens there must not get the
    /// message or the AUTH password.
    pub config: PathBuf,
    /// `SEALGATE_USER` and `SEALGATE_PASSWORD`, when both are set.
    pub auth: Option<(String, String)>,
    /// The caller's login name (`USER`, else `LOGNAME`, else `root`), for the default
    /// envelope sender.
    pub user: String,
}

impl Environment {
    /// The environment of this process.
    pub fn from_process() -> Environment {
        let var = |k: &str| std::env::var(k);
        Environment {
            config: PathBuf::from(
                std::env::var_os("SEALGATE_CONFIG")
                    .unwrap_or_else(|| "/etc/sealgate/sealgate.toml".into()),
            ),
            auth: match (var("SEALGATE_USER"), var("SEALGATE_PASSWORD")) {
                (Ok(u), Ok(p)) => Some((u, p)),
                _ => None,
            },
            user: var("USER")
                .or_else(|_| var("LOGNAME"))
                .unwrap_or_else(|_| "root".into()),
        }
    }
}

/// How a sendmail run ended without error (exit [`Done::exit_code`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// The listener accepted the message (or the `-bs` session ended).
    Sent,
    /// `-h`/`--help`: the caller prints [`USAGE`].
    Help,
    /// Nothing to do (`newaliases`, `-qINTERVAL`); the note says why.
    Nothing(String),
    /// `serve` is down (`down` says how); the message is kept in the maildrop at `path`.
    Maildropped { down: String, path: PathBuf },
    /// `-bv`: each recipient and the listener's refusal, if any.
    Verified(Vec<(String, Result<(), String>)>),
    /// `-bp` (`flush` false) or `-q` (`flush` true): the queue command on `config`
    /// ([`crate::ops::queue`]), with its own output and exit codes.
    Queue { config: PathBuf, flush: bool },
}

impl Done {
    /// 0, except [`exit::NOUSER`] when `-bv` found a recipient undeliverable.
    pub fn exit_code(&self) -> u8 {
        match self {
            Done::Verified(results) if results.iter().any(|(_, r)| r.is_err()) => exit::NOUSER,
            _ => 0,
        }
    }
}

/// Why a sendmail run failed; [`SendmailError::exit_code`] is its sysexits code.
#[derive(Debug, thiserror::Error)]
pub enum SendmailError {
    #[error("{0}")]
    Usage(#[from] UsageError),
    #[error("-bv: no recipients to verify")]
    NothingToVerify,
    #[error("no recipients (give them as arguments or use -t)")]
    NoRecipients,
    #[error(
        "{0}; nothing was sent (the configuration must be readable by the user running \
         sendmail; set SEALGATE_CONFIG to use another file)"
    )]
    Config(#[from] crate::config::ConfigError),
    #[error("{}: [server] listen is empty", .0.display())]
    NoListener(PathBuf),
    #[error("reading the message: {0}")]
    Read(std::io::Error),
    /// `-t` could not read the recipient fields.
    #[error("{0}; nothing was sent")]
    Extract(UsageError),
    #[error(
        "the message is larger than the limit of {0} bytes (max_message_size); nothing was sent"
    )]
    TooBig(u64),
    /// The `-bs` session failed.
    #[error("{0}")]
    Session(SubmitError),
    /// `-bv` could not ask the listener.
    #[error("{0}")]
    Verify(SubmitError),
    #[error("{0}; nothing was sent ([sendmail] maildrop = false); try again later")]
    DownNoMaildrop(String),
    #[error(
        "{0}; nothing was sent: a message that must AUTH (SEALGATE_USER, require_auth) is \
         not kept in the maildrop, whose collector cannot check a password later; try \
         again later"
    )]
    DownMustAuth(String),
    #[error("{down}; and the maildrop cannot take it: {why}; nothing was sent, try again later")]
    MaildropFailed { down: String, why: String },
    /// Recipients refused at RCPT: nothing was sent to anyone. One line per recipient,
    /// then the count.
    #[error(
        "{}\n{} of {total} recipients refused; nothing was sent to anyone",
        .refused.iter().map(|(r, why)| format!("<{r}>: {}", why.replace('\n', " / "))).collect::<Vec<_>>().join("\n"),
        .refused.len()
    )]
    Refused {
        refused: Vec<(String, String)>,
        total: usize,
    },
    /// The connection broke: after DATA the message may have been accepted.
    #[error("{0}; the message may not have been accepted, try again later")]
    Broken(SubmitError),
    #[error("{0}; nothing was sent")]
    Submit(SubmitError),
}

impl SendmailError {
    /// The sysexits code sendmail and Postfix's sendmail use for this failure.
    pub fn exit_code(&self) -> u8 {
        let temporary = |e: &SubmitError| {
            if e.is_temporary() {
                exit::TEMPFAIL
            } else {
                exit::UNAVAILABLE
            }
        };
        match self {
            SendmailError::Usage(_)
            | SendmailError::NothingToVerify
            | SendmailError::NoRecipients => exit::USAGE,
            SendmailError::Config(_) | SendmailError::NoListener(_) => exit::CONFIG,
            SendmailError::Read(_) | SendmailError::Extract(_) => exit::DATAERR,
            SendmailError::TooBig(_) => exit::UNAVAILABLE,
            SendmailError::Session(_)
            | SendmailError::DownNoMaildrop(_)
            | SendmailError::DownMustAuth(_)
            | SendmailError::MaildropFailed { .. }
            | SendmailError::Broken(_) => exit::TEMPFAIL,
            SendmailError::Verify(e) | SendmailError::Submit(e) => temporary(e),
            SendmailError::Refused { refused, .. } => {
                if refused.iter().any(|(_, w)| w.contains("4.5.3")) {
                    exit::UNAVAILABLE
                } else if refused.iter().all(|(_, w)| w.starts_with('4')) {
                    exit::TEMPFAIL
                } else {
                    exit::NOUSER
                }
            }
        }
    }
}

/// Runs sendmail: the command line `args`, the `env`ironment, the message on `stdin`.
/// Phases: the command line, the modes that need no configuration, the configuration,
/// then the mode's job ([`verify`] or [`deliver`]).
pub fn run(
    args: &[String],
    env: &Environment,
    stdin: &mut dyn std::io::Read,
) -> Result<Done, SendmailError> {
    let inv = parse_args(args)?;
    if !inv.ignored.is_empty() {
        tracing::debug!("sendmail: ignored options: {}", inv.ignored.join(" "));
    }
    match &inv.mode {
        Mode::Help => return Ok(Done::Help),
        Mode::Newaliases => {
            return Ok(Done::Nothing(
                "newaliases: sealgate has no alias database; nothing to do".into(),
            ))
        }
        Mode::QueueIgnored(what) => {
            return Ok(Done::Nothing(format!(
                "-q{what} ignored: `sealgate serve` runs the queue itself"
            )))
        }
        _ => {}
    }
    let cfg = crate::config::Config::load(&env.config)?;
    let Some(addr) = cfg.server.listen.first().copied() else {
        return Err(SendmailError::NoListener(env.config.clone()));
    };
    let auth = env.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
    let queue = |flush| Done::Queue {
        config: env.config.clone(),
        flush,
    };
    match inv.mode {
        Mode::PrintQueue => Ok(queue(false)),
        Mode::FlushQueue => Ok(queue(true)),
        Mode::SmtpSession => submit::proxy(addr)
            .map(|()| Done::Sent)
            .map_err(SendmailError::Session),
        Mode::Verify => verify(&inv, &cfg, addr, auth, &env.user),
        _ => deliver(inv, &cfg, addr, auth, &env.user, stdin),
    }
}

/// `-bv`: asks the listener about each recipient (RCPT) without sending.
fn verify(
    inv: &Invocation,
    cfg: &Config,
    addr: SocketAddr,
    auth: Option<(&str, &str)>,
    user: &str,
) -> Result<Done, SendmailError> {
    let host = &cfg.server.hostname;
    let rcpts: Vec<String> = inv.recipients.iter().map(|r| qualify(r, host)).collect();
    let from = match &inv.from {
        Some(f) => qualify(f, host),
        None => cfg
            .sendmail
            .sender
            .clone()
            .unwrap_or_else(|| format!("{user}@{host}")),
    };
    if rcpts.is_empty() {
        return Err(SendmailError::NothingToVerify);
    }
    submit::verify(addr, &from, &rcpts, auth)
        .map(Done::Verified)
        .map_err(SendmailError::Verify)
}

/// `-bm` (the default): reads the message, settles its recipients and sender, and
/// submits it to the listener, or to the maildrop while `serve` is down.
fn deliver(
    inv: Invocation,
    cfg: &Config,
    addr: SocketAddr,
    auth: Option<(&str, &str)>,
    user: &str,
    stdin: &mut dyn std::io::Read,
) -> Result<Done, SendmailError> {
    let message = read_message(stdin, cfg.server.max_message_size, inv.ignore_dots)?;
    let (rcpts, message) = recipients(inv.recipients, inv.extract, message)?;
    let host = &cfg.server.hostname;
    let rcpts: Vec<String> = rcpts.iter().map(|r| qualify(r, host)).collect();
    let from = match inv.from {
        Some(f) => qualify(&f, host),
        None => envelope_sender(cfg, auth, &message, user),
    };
    submit_or_keep(cfg, addr, auth, &from, &rcpts, &message)
}

/// Reads the message from `stdin`: at most what the listener would take (LF line ends
/// may double in size when they become CRLF, so up to twice `max_size` is read and the
/// limit checked after conversion), up to a line with a single dot unless
/// `ignore_dots`, with CRLF line ends.
pub fn read_message(
    stdin: &mut dyn std::io::Read,
    max_size: u64,
    ignore_dots: bool,
) -> Result<Vec<u8>, SendmailError> {
    use std::io::Read as _;
    let mut input = Vec::new();
    let cap = max_size.saturating_mul(2).saturating_add(1);
    stdin
        .take(cap)
        .read_to_end(&mut input)
        .map_err(SendmailError::Read)?;
    if input.len() as u64 == cap {
        return Err(SendmailError::TooBig(max_size));
    }
    if !ignore_dots {
        input.truncate(dot_line(&input));
    }
    let message = submit::to_crlf(&input);
    if message.len() as u64 > max_size {
        return Err(SendmailError::TooBig(max_size));
    }
    Ok(message)
}

/// Where traditional sendmail ends the input: at the first line holding a single `.`
/// (LF or CRLF), else at its end.
pub fn dot_line(input: &[u8]) -> usize {
    let mut start = 0;
    for line in input.split_inclusive(|&b| b == b'\n') {
        let t = line.strip_suffix(b"\n").unwrap_or(line);
        let t = t.strip_suffix(b"\r").unwrap_or(t);
        if t == b"." {
            return start;
        }
        start += line.len();
    }
    input.len()
}

/// The recipients: those given, plus with `-t` those of the header (as Postfix does),
/// whose Bcc fields are then removed from the message. At least one is needed.
fn recipients(
    mut rcpts: Vec<String>,
    extract: bool,
    mut message: Vec<u8>,
) -> Result<(Vec<String>, Vec<u8>), SendmailError> {
    if extract {
        let (extracted, stripped) =
            recipients_from_headers(&message).map_err(SendmailError::Extract)?;
        for r in extracted {
            if !rcpts.iter().any(|x| x.eq_ignore_ascii_case(&r)) {
                rcpts.push(r);
            }
        }
        message = stripped;
    }
    if rcpts.is_empty() {
        return Err(SendmailError::NoRecipients);
    }
    Ok((rcpts, message))
}

/// The envelope sender without `-f` ([`default_sender`]): the client sealgate AUTHs as
/// decides by its `allowed_senders` whether the header From may be used (the server
/// checks again).
fn envelope_sender(cfg: &Config, auth: Option<(&str, &str)>, message: &[u8], user: &str) -> String {
    let client = auth.and_then(|(u, _)| cfg.clients.iter().find(|c| c.username == u));
    let allowed = |a: &str| {
        client.is_none_or(|c| {
            c.allowed_senders.is_empty()
                || c.allowed_senders
                    .iter()
                    .any(|g| crate::glob::glob_match(g, a))
        })
    };
    let (from, source) =
        default_sender(&cfg.sendmail, message, &allowed, user, &cfg.server.hostname);
    if cfg.sendmail.sender_from_header && source != SenderSource::HeaderFrom {
        tracing::debug!(
            "sendmail: the header From is not a single address this client may use; envelope sender {from}"
        );
    }
    from
}

/// Submits to the listener; while it is down, keeps the message in the maildrop when
/// `[sendmail] maildrop` allows and no AUTH is needed.
fn submit_or_keep(
    cfg: &Config,
    addr: SocketAddr,
    auth: Option<(&str, &str)>,
    from: &str,
    rcpts: &[String],
    message: &[u8],
) -> Result<Done, SendmailError> {
    match submit::submit(addr, from, rcpts, message, auth) {
        Ok(_) => Ok(Done::Sent),
        Err(SubmitError::Connect { addr, source }) => {
            let down = format!("sealgate is not reachable at {addr} ({source})");
            if !cfg.sendmail.maildrop {
                return Err(SendmailError::DownNoMaildrop(down));
            }
            if auth.is_some() || cfg.server.require_auth {
                return Err(SendmailError::DownMustAuth(down));
            }
            match crate::smtp::maildrop::write(&cfg.spool.dir, from, rcpts, message) {
                Ok(path) => Ok(Done::Maildropped { down, path }),
                Err(e) => Err(SendmailError::MaildropFailed {
                    down,
                    why: e.to_string(),
                }),
            }
        }
        Err(SubmitError::Recipients(refused)) => Err(SendmailError::Refused {
            refused,
            total: rcpts.len(),
        }),
        Err(e @ SubmitError::Io(_)) => Err(SendmailError::Broken(e)),
        Err(e) => Err(SendmailError::Submit(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    fn parse(s: &[&str]) -> Result<Invocation, UsageError> {
        parse_args(&args(s))
    }

    #[test]
    fn extracts_and_hides_bcc() {
        let m = b"To: a@x.test, B <b@y.test>\r\nBcc: c@z.test,\r\n d@z.test\r\nSubject: s\r\n\r\nBcc: not a header\r\n";
        let (r, out) = recipients_from_headers(m).unwrap();
        assert_eq!(r, vec!["a@x.test", "b@y.test", "c@z.test", "d@z.test"]);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "To: a@x.test, B <b@y.test>\r\nSubject: s\r\n\r\nBcc: not a header\r\n"
        );
    }

    #[test]
    fn every_field_instance_counts() {
        let m = b"To: first@x.test\r\nTo: second@x.test\r\nCc: c1@x.test\r\nCc: c2@x.test\r\nBcc: b1@x.test\r\nBcc: b2@x.test\r\n\r\nbody\r\n";
        let (r, out) = recipients_from_headers(m).unwrap();
        assert_eq!(
            r,
            vec![
                "first@x.test",
                "second@x.test",
                "c1@x.test",
                "c2@x.test",
                "b1@x.test",
                "b2@x.test"
            ]
        );
        assert!(!String::from_utf8(out).unwrap().contains("b1@"));
    }

    #[test]
    fn fields_folded_without_commas_give_each_address() {
        let m = b"To: first@x.test\r\n second@x.test\r\nCc: A <a@x.test>\r\n \"B, Jr\" <b@x.test> (note c@x)\r\nTo: plain@x.test, Name <n@x.test>\r\n\r\nb\r\n";
        let (r, _) = recipients_from_headers(m).unwrap();
        assert_eq!(
            r,
            vec![
                "first@x.test",
                "second@x.test",
                "a@x.test",
                "b@x.test",
                "plain@x.test",
                "n@x.test"
            ]
        );
    }

    #[test]
    fn resent_fields_replace_the_originals() {
        let m = b"To: orig@x.test\r\nResent-To: new@x.test\r\nResent-Bcc: hid@x.test\r\n\r\nb\r\n";
        let (r, out) = recipients_from_headers(m).unwrap();
        assert_eq!(r, vec!["new@x.test", "hid@x.test"]);
        assert!(!String::from_utf8(out).unwrap().contains("hid@"));
    }

    #[test]
    fn clustered_and_attached_options() {
        let inv = parse(&["-ti", "-fapp@x.test", "extra@x.test"]).unwrap();
        assert!(inv.extract && inv.ignore_dots);
        assert_eq!(inv.from.as_deref(), Some("app@x.test"));
        assert_eq!(inv.recipients, vec!["extra@x.test"]);
        let inv = parse(&["-it", "-oi", "-r", "a@x.test"]).unwrap();
        assert!(inv.extract && inv.ignore_dots);
        assert_eq!(inv.from.as_deref(), Some("a@x.test"));
        // cron: -FCronDaemon -i -B8BITMIME -oem root
        let inv = parse(&["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root@x.test"]).unwrap();
        assert_eq!(inv.recipients, vec!["root@x.test"]);
        assert!(inv.ignore_dots);
        // mutt: -oem -oi -- rcpt
        let inv = parse(&["-oem", "-oi", "--", "a@x.test", "b@x.test"]).unwrap();
        assert_eq!(inv.recipients.len(), 2);
    }

    #[test]
    fn harmless_options_take_their_arguments() {
        let inv = parse(&[
            "-U",
            "-G",
            "-h",
            "17",
            "-Am",
            "-Ac",
            "-C",
            "/etc/x.cf",
            "-O",
            "a=b",
            "-N",
            "never",
            "-R",
            "hdrs",
            "-V",
            "env1",
            "-X",
            "/tmp/log",
            "-B",
            "8BITMIME",
            "-F",
            "Full Name",
            "-c",
            "-v",
            "-L",
            "lbl",
            "-e",
            "m",
            "-p",
            "smtp",
            "-o",
            "x",
            "r@x.test",
        ])
        .unwrap();
        assert_eq!(inv.mode, Mode::Deliver);
        assert_eq!(inv.recipients, vec!["r@x.test"]);
        // `-c` takes no argument: the word after it is a recipient.
        let inv = parse(&["-c", "r@x.test"]).unwrap();
        assert_eq!(inv.recipients, vec!["r@x.test"]);
    }

    #[test]
    fn queue_options_never_swallow_a_recipient() {
        let inv = parse(&["-q", "r@x.test"]).unwrap();
        assert_eq!(inv.mode, Mode::FlushQueue);
        assert_eq!(inv.recipients, vec!["r@x.test"]);
        let inv = parse(&["-q30m", "r@x.test"]).unwrap();
        assert_eq!(inv.mode, Mode::QueueIgnored("30m".into()));
        assert_eq!(inv.recipients, vec!["r@x.test"]);
    }

    #[test]
    fn help_and_hop_count() {
        assert_eq!(parse(&["-h"]).unwrap().mode, Mode::Help);
        assert_eq!(parse(&["--help"]).unwrap().mode, Mode::Help);
        assert_eq!(parse(&["-h", "r@x.test"]).unwrap().mode, Mode::Help);
        let inv = parse(&["-h", "5", "r@x.test"]).unwrap();
        assert_eq!(inv.mode, Mode::Deliver);
        assert_eq!(inv.recipients, vec!["r@x.test"]);
        assert_eq!(parse(&["-h12", "r@x.test"]).unwrap().mode, Mode::Deliver);
    }

    #[test]
    fn modes() {
        assert_eq!(parse(&["-bs"]).unwrap().mode, Mode::SmtpSession);
        assert_eq!(parse(&["-bp"]).unwrap().mode, Mode::PrintQueue);
        assert_eq!(parse(&["-bv", "a@x"]).unwrap().mode, Mode::Verify);
        assert_eq!(parse(&["-bi"]).unwrap().mode, Mode::Newaliases);
        assert_eq!(parse(&["-I"]).unwrap().mode, Mode::Newaliases);
        assert_eq!(parse(&["-b", "m"]).unwrap().mode, Mode::Deliver);
        assert!(parse(&["-bt"]).unwrap_err().to_string().contains("-bt"));
        assert!(parse(&["-bd"]).is_err());
        assert_eq!(
            parse(&["-d0.1"]).unwrap_err(),
            UsageError::UnknownOption('d')
        );
        assert_eq!(
            parse(&["-f"]).unwrap_err(),
            UsageError::MissingArgument('f')
        );
    }

    #[test]
    fn line_breaks_in_addresses_are_refused() {
        for bad in [
            "a@b.example>\r\nRCPT TO:<x@y>",
            "a@b.example\nDATA",
            "a@b\rx",
            "a\0@b",
            "a@b> SIZE=1",
            "Name <a@b>\r\nX",
            "a b@c",
        ] {
            assert!(parse(&["-f", bad, "r@x"]).is_err(), "{bad:?}");
            assert!(parse(&["-i", bad]).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse(&["-f", "<>", "r@x"]).unwrap().from.as_deref(),
            Some("")
        );
        assert_eq!(
            parse(&["-f", "App <app@x.test>", "Bob <b@x.test>"]).unwrap(),
            Invocation {
                mode: Mode::Deliver,
                from: Some("app@x.test".into()),
                extract: false,
                ignore_dots: false,
                recipients: vec!["b@x.test".into()],
                ignored: vec![],
            }
        );
    }

    #[test]
    fn bare_local_parts_are_qualified() {
        assert_eq!(qualify("root", "gw.test"), "root@gw.test");
        assert_eq!(qualify("a@b", "gw.test"), "a@b");
        assert_eq!(qualify("", "gw.test"), "");
    }

    #[test]
    fn sender_choice() {
        let msg = b"From: App <billing@example.com>\r\nTo: x@y\r\n\r\nb\r\n";
        let mut cfg = SendmailConfig::default();
        let any = |_: &str| true;
        let none = |_: &str| false;
        assert_eq!(
            default_sender(&cfg, msg, &any, "www", "gw").0,
            "www@gw".to_string()
        );
        cfg.sender = Some("bounces@example.com".into());
        assert_eq!(
            default_sender(&cfg, msg, &any, "www", "gw"),
            ("bounces@example.com".into(), SenderSource::Configured)
        );
        cfg.sender_from_header = true;
        assert_eq!(
            default_sender(&cfg, msg, &any, "www", "gw"),
            ("billing@example.com".into(), SenderSource::HeaderFrom)
        );
        assert_eq!(
            default_sender(&cfg, msg, &none, "www", "gw").1,
            SenderSource::Configured
        );
    }

    /// A configuration in `dir` whose listener address has nobody listening (a port
    /// the OS just handed out and that was closed again), with the maildrop ready.
    fn down_config(dir: &std::path::Path, extra: &str) -> Environment {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        std::fs::create_dir_all(dir.join("spool/maildrop")).expect("maildrop dir");
        let config = dir.join("sealgate.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = [\"127.0.0.1:{port}\"]\nhostname = \"host.example\"\n\
                 [spool]\ndir = \"spool\"\n[upstream]\nhost = \"smtp.example.net\"\n\
                 tls = \"starttls\"\n{extra}"
            ),
        )
        .expect("config");
        Environment {
            config,
            auth: None,
            user: "cron".into(),
        }
    }

    fn run_with(args_: &[&str], env: &Environment, stdin: &[u8]) -> Result<Done, SendmailError> {
        run(&args(args_), env, &mut &stdin[..])
    }

    #[test]
    fn modes_without_a_message_need_no_configuration() {
        let env = Environment {
            config: "/nonexistent/sealgate.toml".into(),
            auth: None,
            user: "u".into(),
        };
        assert_eq!(run_with(&["--help"], &env, b"").expect("help"), Done::Help);
        assert!(matches!(
            run_with(&["-bi"], &env, b""),
            Ok(Done::Nothing(_))
        ));
        assert!(matches!(
            run_with(&["-q30m"], &env, b""),
            Ok(Done::Nothing(_))
        ));
        let e = run_with(&["a@x.example"], &env, b"x").expect_err("no config");
        assert!(matches!(e, SendmailError::Config(_)), "{e}");
        assert_eq!(e.exit_code(), exit::CONFIG);
        let e = run_with(&["-Z"], &env, b"").expect_err("usage");
        assert_eq!(e.exit_code(), exit::USAGE);
    }

    #[test]
    fn a_message_while_serve_is_down_goes_to_the_maildrop_up_to_the_dot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = down_config(dir.path(), "");
        let done =
            run_with(&["root"], &env, b"Subject: s\n\nbody\n.\nafter the dot\n").expect("kept");
        let Done::Maildropped { down, path } = &done else {
            panic!("{done:?}");
        };
        assert!(
            down.starts_with("sealgate is not reachable at 127.0.0.1:"),
            "{down}"
        );
        assert_eq!(done.exit_code(), 0);
        let kept = std::fs::read(path).expect("maildrop file");
        let kept = String::from_utf8_lossy(&kept);
        assert!(kept.contains("root@host.example"), "qualified: {kept}");
        assert!(kept.contains("cron@host.example"), "default sender: {kept}");
        assert!(
            kept.contains("body\r\n") && !kept.contains("after the dot"),
            "{kept}"
        );
    }

    #[test]
    fn the_maildrop_takes_nothing_that_must_auth_or_when_turned_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut env = down_config(dir.path(), "");
        env.auth = Some(("app".into(), "secret".into()));
        let e = run_with(&["a@x.example"], &env, b"s\n").expect_err("must auth");
        assert!(matches!(e, SendmailError::DownMustAuth(_)), "{e}");
        assert_eq!(e.exit_code(), exit::TEMPFAIL);

        let dir = tempfile::tempdir().expect("tempdir");
        let env = down_config(dir.path(), "[sendmail]\nmaildrop = false\n");
        let e = run_with(&["a@x.example"], &env, b"s\n").expect_err("no maildrop");
        assert!(matches!(e, SendmailError::DownNoMaildrop(_)), "{e}");
        assert_eq!(e.exit_code(), exit::TEMPFAIL);
        assert_eq!(
            std::fs::read_dir(dir.path().join("spool/maildrop"))
                .expect("dir")
                .count(),
            0
        );
    }

    #[test]
    fn without_recipients_or_within_the_size_limit_nothing_is_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = down_config(dir.path(), "");
        let e = run_with(&["-t"], &env, b"Subject: none\n\nbody\n").expect_err("no rcpt");
        assert!(matches!(e, SendmailError::NoRecipients), "{e}");
        assert_eq!(e.exit_code(), exit::USAGE);
        let e = run_with(&["-bv"], &env, b"").expect_err("nothing to verify");
        assert_eq!(e.exit_code(), exit::USAGE);

        // LF line ends grow by CRLF conversion: the limit applies after it.
        assert_eq!(
            read_message(&mut &b"a\nb\n"[..], 6, true).expect("fits"),
            b"a\r\nb\r\n"
        );
        let e = read_message(&mut &b"a\nb\nc\n"[..], 6, true).expect_err("too big");
        assert!(matches!(e, SendmailError::TooBig(6)), "{e}");
        assert_eq!(e.exit_code(), exit::UNAVAILABLE);
        assert_eq!(dot_line(b"a\r\n.\r\nb"), 3);
        assert_eq!(dot_line(b"a\n..\nb"), 6, "\"..\" is not the end");
    }

    #[test]
    fn refused_recipients_choose_the_exit_code_and_print_one_line_each() {
        let refused = |whys: &[&str]| SendmailError::Refused {
            refused: whys
                .iter()
                .enumerate()
                .map(|(n, w)| (format!("r{n}@x.example"), w.to_string()))
                .collect(),
            total: 3,
        };
        let e = refused(&["550 5.1.1 no\nsuch user", "451 4.3.0 later"]);
        assert_eq!(e.exit_code(), exit::NOUSER);
        assert_eq!(
            e.to_string(),
            "<r0@x.example>: 550 5.1.1 no / such user\n<r1@x.example>: 451 4.3.0 later\n\
             2 of 3 recipients refused; nothing was sent to anyone"
        );
        assert_eq!(refused(&["451 4.3.0 later"]).exit_code(), exit::TEMPFAIL);
        assert_eq!(
            refused(&["452 4.5.3 too many"]).exit_code(),
            exit::UNAVAILABLE
        );
    }
}
