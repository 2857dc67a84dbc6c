//! The CLI edge: each subcommand's job, error printing and exit codes. Library errors
//! are wrapped with `anyhow` context here and nowhere else.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sealgate::config::Config;
use sealgate::escape::{for_terminal, lines_for_terminal};
use sealgate::queue::spool::Spool;

/// Exit code 1: the job found problems.
const PROBLEMS: u8 = 1;
/// Exit code 2: usage or configuration error.
const USAGE: u8 = 2;

pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SEALGATE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colour only for a person at a terminal: journald and log files get plain text.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // The message pipeline (MIME parsing, policy, S/MIME) runs on these threads:
        // give them the main thread's stack, so `serve` and `explain` have the same room.
        .thread_stack_size(8 << 20)
        .build()
}

/// An error and its causes on one line, like `{e:#}`, but without repeating a cause
/// whose text the message already contains (many library errors print their source).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("sealgate: {e}");
        ExitCode::from(USAGE)
    })
}

pub fn serve(config: &Path) -> ExitCode {
    let rt = match runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sealgate: cannot start the async runtime: {e}");
            return ExitCode::from(USAGE);
        }
    };
    rt.block_on(async {
        match sealgate::ops::serve::start(config).await {
            Ok(running) => {
                tracing::info!(
                    "sealgate listening on {}",
                    running
                        .addrs
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                match running.done.await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        // A panic must not look like a clean stop to systemd & co.
                        eprintln!("sealgate: the server stopped unexpectedly: {e}");
                        ExitCode::from(PROBLEMS)
                    }
                }
            }
            Err(e) => {
                eprintln!("sealgate: {}", error_chain(&e));
                ExitCode::from(USAGE)
            }
        }
    })
}

pub fn check(config: &Path) -> ExitCode {
    let cfg = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let report = sealgate::ops::check::run(&cfg);
    for w in &report.warnings {
        // Policy diagnostics already say `file:line:col: warning: ...`.
        if w.contains(": warning: ") {
            println!("{w}");
        } else {
            println!("warning: {w}");
        }
    }
    for e in &report.errors {
        println!("{e}");
    }
    if report.errors.is_empty() {
        println!(
            "{}: OK ({} warning{})",
            config.display(),
            report.warnings.len(),
            if report.warnings.len() == 1 { "" } else { "s" }
        );
        ExitCode::SUCCESS
    } else {
        println!("{}: {} problem(s)", config.display(), report.errors.len());
        ExitCode::from(PROBLEMS)
    }
}

#[allow(clippy::too_many_arguments)]
pub fn explain(
    config: &Path,
    from: &str,
    to: &[String],
    message: &Path,
    json: bool,
    write: Option<&Path>,
    client: &str,
) -> ExitCode {
    let cfg = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if client != "local" && !cfg.clients.iter().any(|c| c.name == client) {
        let mut known: Vec<&str> = cfg.clients.iter().map(|c| c.name.as_str()).collect();
        known.push("local");
        eprintln!(
            "sealgate explain: --client {client} is not a [[client]] in {} (known: {})",
            config.display(),
            known.join(", ")
        );
        return ExitCode::from(USAGE);
    }
    let bytes = match std::fs::read(message) {
        Ok(b) => sealgate::smtp::submit::to_crlf(&b),
        Err(e) => {
            eprintln!("sealgate: {}: {e}", message.display());
            return ExitCode::from(USAGE);
        }
    };
    match sealgate::ops::explain::run(&cfg, client, from, to, &bytes, write) {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report.json).unwrap_or_default()
                );
            } else {
                print!("{}", lines_for_terminal(&report.text));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sealgate: {}", error_chain(&e));
            ExitCode::from(USAGE)
        }
    }
}

fn open_spool(config: &Path) -> Result<(Spool, Config), ExitCode> {
    let cfg = load_config(config)?;
    // The queue tools look at a spool; they never create one (a mistyped `dir` would
    // otherwise report an empty queue).
    if !cfg.spool.dir.join("queue").is_dir() {
        eprintln!(
            "sealgate: {}: no spool here (not created until `sealgate serve` starts; check [spool] dir in {})",
            cfg.spool.dir.display(),
            config.display()
        );
        return Err(ExitCode::from(USAGE));
    }
    match Spool::open(&cfg.spool.dir) {
        Ok(s) => Ok((s, cfg)),
        Err(e) => {
            eprintln!("sealgate: {e}");
            Err(ExitCode::from(USAGE))
        }
    }
}

/// The entries `id` names (itself, or the copies of the message the client was told
/// `queued as id`); prints why and returns `Err` when there are none.
fn entries_named(spool: &Spool, id: &str) -> Result<Vec<String>, ExitCode> {
    let ids = spool.ids_of(id);
    if ids.is_empty() {
        eprintln!("sealgate: no spool entry {id} (sealgate queue list shows what is queued)");
        return Err(ExitCode::from(PROBLEMS));
    }
    Ok(ids)
}

pub fn queue_list(config: &Path) -> ExitCode {
    let (spool, _) = match open_spool(config) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let (entries, bad) = match spool.scan() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("sealgate: {e}");
            return ExitCode::from(PROBLEMS);
        }
    };
    println!(
        "{:<28} {:>9} {:>4} {:<20} {:<32} status",
        "id", "size", "try", "age", "from -> pending"
    );
    for e in &entries {
        let age = sealgate::clock::unix_now().saturating_sub(e.envelope.created);
        let status = if e.state.held {
            "held".to_string()
        } else if let Some(err) = &e.state.last_error {
            format!("deferred: {err}")
        } else {
            "queued".to_string()
        };
        // Addresses and the upstream's reply are others' text: escaped for the terminal.
        println!(
            "{:<28} {:>9} {:>4} {:<20} <{}> -> {}  {}",
            e.envelope.id,
            e.size,
            e.state.attempts,
            format!("{}s", age),
            for_terminal(&e.envelope.from),
            for_terminal(&e.pending().join(", ")),
            for_terminal(&status)
        );
    }
    for (id, why) in bad {
        println!("{id}: damaged, moved to corrupt/: {}", for_terminal(&why));
    }
    let corrupt = spool.corrupt_ids();
    if !corrupt.is_empty() {
        println!(
            "{} damaged entr{} in {}/corrupt: {}",
            corrupt.len(),
            if corrupt.len() == 1 { "y" } else { "ies" },
            spool.dir().display(),
            corrupt.join(", ")
        );
    }
    println!(
        "{} entr{} queued",
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" }
    );
    ExitCode::SUCCESS
}

pub fn queue_show(config: &Path, id: &str) -> ExitCode {
    let (spool, _) = match open_spool(config) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let ids = match entries_named(&spool, id) {
        Ok(ids) => ids,
        Err(c) => return c,
    };
    let mut code = ExitCode::SUCCESS;
    for (n, id) in ids.iter().enumerate() {
        if n > 0 {
            println!();
        }
        if let Err(c) = show_entry(&spool, id) {
            code = c;
        }
    }
    code
}

fn show_entry(spool: &Spool, id: &str) -> Result<(), ExitCode> {
    match spool.load(id) {
        Ok((e, m)) => {
            // Everything but the id and the numbers came from clients or the upstream.
            println!("id:        {}", e.envelope.id);
            println!("from:      <{}>", for_terminal(&e.envelope.from));
            println!("to:        {}", for_terminal(&e.envelope.rcpts.join(", ")));
            println!("pending:   {}", for_terminal(&e.pending().join(", ")));
            println!("client:    {}", for_terminal(&e.envelope.client));
            println!("kind:      {:?}", e.envelope.kind);
            println!(
                "message-id:{}",
                e.envelope
                    .message_id
                    .as_deref()
                    .map(|m| format!(" {}", for_terminal(m)))
                    .unwrap_or_default()
            );
            println!(
                "policy:    {}",
                for_terminal(e.envelope.policy_version.as_deref().unwrap_or("-"))
            );
            println!("attempts:  {}", e.state.attempts);
            println!(
                "last error:{}",
                e.state
                    .last_error
                    .as_deref()
                    .map(|m| format!(" {}", for_terminal(m)))
                    .unwrap_or_default()
            );
            println!("size:      {} bytes", e.size);
            println!("--- headers ---");
            print!(
                "{}",
                lines_for_terminal(&String::from_utf8_lossy(
                    sealgate::queue::dsn::original_headers(&m)
                ))
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("sealgate: {e}");
            Err(ExitCode::from(PROBLEMS))
        }
    }
}

fn signal_server(spool: &Spool, sig: i32) -> bool {
    // Only a pid file that a live server holds locked names a server: a stale one may
    // name an unrelated process that got the pid later.
    let Some(pid) = sealgate::queue::spool::running_server(spool.dir()) else {
        return false;
    };
    // SAFETY: kill(2) with the pid of the server that holds the spool's pid-file lock.
    unsafe { libc::kill(pid, sig) == 0 }
}

pub fn queue_retry(config: &Path, id: Option<&str>) -> ExitCode {
    let (spool, _) = match open_spool(config) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let ids: Vec<String> = match id {
        Some(i) => match entries_named(&spool, i) {
            Ok(ids) => ids,
            Err(c) => return c,
        },
        None => match spool.scan() {
            Ok((e, _)) => e.into_iter().map(|e| e.envelope.id).collect(),
            Err(e) => {
                eprintln!("sealgate: {e}");
                return ExitCode::from(PROBLEMS);
            }
        },
    };
    for i in &ids {
        match spool.entry(i) {
            Ok(e) => {
                let mut st = e.state;
                st.next_attempt = 0;
                st.held = false;
                if let Err(e) = spool.set_state(i, &st) {
                    eprintln!("sealgate: {e}");
                    return ExitCode::from(PROBLEMS);
                }
            }
            Err(e) => {
                eprintln!("sealgate: {e}");
                return ExitCode::from(PROBLEMS);
            }
        }
    }
    if signal_server(&spool, libc::SIGUSR1) {
        println!(
            "{} entr{} due now; the running server was told",
            ids.len(),
            if ids.len() == 1 { "y" } else { "ies" }
        );
    } else {
        println!(
            "{} entr{} due now; no running server found (they go out when it starts)",
            ids.len(),
            if ids.len() == 1 { "y" } else { "ies" }
        );
    }
    ExitCode::SUCCESS
}

pub fn queue_delete(config: &Path, id: &str) -> ExitCode {
    let (spool, cfg) = match open_spool(config) {
        Ok(s) => s,
        Err(c) => return c,
    };
    // The audit log records who removed an acknowledged message; an audit log that
    // cannot be opened does not stop the operator.
    let audit = sealgate::audit::Audit::open(cfg.audit.path.as_deref()).ok();
    let mut ids = spool.ids_of(id);
    if ids.is_empty() {
        // A damaged entry (listed by `queue list` as moved to corrupt/) is deleted too.
        ids.push(id.to_string());
    }
    let mut code = ExitCode::SUCCESS;
    for id in &ids {
        let removed = match spool.remove(id) {
            Err(sealgate::queue::spool::SpoolError::NotFound(_)) => spool
                .remove_corrupt(id)
                .map(|()| format!("{id}: deleted from corrupt/")),
            other => other.map(|()| format!("{id}: deleted")),
        };
        match removed {
            Ok(what) => {
                println!("{what}");
                if let Some(a) = &audit {
                    a.record(&sealgate::audit::Event::Deleted {
                        queue_id: id.clone(),
                        by: "sealgate queue delete",
                    });
                }
            }
            Err(e) => {
                eprintln!("sealgate: {e}");
                code = ExitCode::from(PROBLEMS);
            }
        }
    }
    code
}

/// `sealgate sendmail` / `sendmail`: sendmail's command line and exit codes
/// (sysexits.h, see [`sealgate::ops::sendmail::exit`]).
pub fn sendmail(args: Vec<String>) -> ExitCode {
    use sealgate::ops::sendmail::{exit, Mode};
    let inv = match sealgate::ops::sendmail::parse_args(&args) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    if !inv.ignored.is_empty() {
        tracing::debug!("sendmail: ignored options: {}", inv.ignored.join(" "));
    }
    match &inv.mode {
        Mode::Help => {
            print!("{}", sealgate::ops::sendmail::USAGE);
            return ExitCode::SUCCESS;
        }
        Mode::Newaliases => {
            eprintln!("sendmail: newaliases: sealgate has no alias database; nothing to do");
            return ExitCode::SUCCESS;
        }
        Mode::QueueIgnored(what) => {
            eprintln!("sendmail: -q{what} ignored: `sealgate serve` runs the queue itself");
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    // Never a default: without a readable configuration sendmail does not know where
    // sealgate listens, and whatever else listens there must not get the message or
    // the AUTH password.
    let config = PathBuf::from(
        std::env::var_os("SEALGATE_CONFIG").unwrap_or_else(|| "/etc/sealgate/sealgate.toml".into()),
    );
    let cfg = match Config::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "sendmail: {e}; nothing was sent (the configuration must be readable by the \
                 user running sendmail; set SEALGATE_CONFIG to use another file)"
            );
            return ExitCode::from(exit::CONFIG);
        }
    };
    let Some(addr) = cfg.server.listen.first().copied() else {
        eprintln!("sendmail: {}: [server] listen is empty", config.display());
        return ExitCode::from(exit::CONFIG);
    };
    let auth = match (
        std::env::var("SEALGATE_USER"),
        std::env::var("SEALGATE_PASSWORD"),
    ) {
        (Ok(u), Ok(p)) => Some((u, p)),
        _ => None,
    };
    let auth_ref = auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "root".into());
    match inv.mode {
        Mode::PrintQueue => queue_list(&config),
        Mode::FlushQueue => queue_retry(&config, None),
        Mode::SmtpSession => match sealgate::smtp::submit::proxy(addr) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sendmail: {e}");
                ExitCode::from(exit::TEMPFAIL)
            }
        },
        Mode::Verify => {
            let host = &cfg.server.hostname;
            let rcpts: Vec<String> = inv
                .recipients
                .iter()
                .map(|r| sealgate::ops::sendmail::qualify(r, host))
                .collect();
            let from = inv
                .from
                .as_deref()
                .map(|f| sealgate::ops::sendmail::qualify(f, host));
            let from = from.unwrap_or_else(|| {
                cfg.sendmail
                    .sender
                    .clone()
                    .unwrap_or_else(|| format!("{user}@{}", cfg.server.hostname))
            });
            if inv.recipients.is_empty() {
                eprintln!("sendmail: -bv: no recipients to verify");
                return ExitCode::from(exit::USAGE);
            }
            match sealgate::smtp::submit::verify(addr, &from, &rcpts, auth_ref) {
                Ok(results) => {
                    let mut code = ExitCode::SUCCESS;
                    for (r, res) in results {
                        match res {
                            Ok(()) => println!("{r}... deliverable"),
                            Err(why) => {
                                println!("{r}... undeliverable: {}", why.replace('\n', " / "));
                                code = ExitCode::from(exit::NOUSER);
                            }
                        }
                    }
                    code
                }
                Err(e) => {
                    eprintln!("sendmail: {e}");
                    ExitCode::from(if e.is_temporary() {
                        exit::TEMPFAIL
                    } else {
                        exit::UNAVAILABLE
                    })
                }
            }
        }
        _ => sendmail_deliver(inv, &cfg, addr, auth_ref, &user),
    }
}

fn sendmail_deliver(
    inv: sealgate::ops::sendmail::Invocation,
    cfg: &Config,
    addr: SocketAddr,
    auth: Option<(&str, &str)>,
    user: &str,
) -> ExitCode {
    use sealgate::ops::sendmail::{exit, SenderSource};
    use sealgate::smtp::submit::SubmitError;
    let max_size = cfg.server.max_message_size;
    // Never hold more than the listener would take: LF line ends may double in size
    // when they become CRLF, so read up to twice the limit and check after conversion.
    let mut input = Vec::new();
    let cap = max_size.saturating_mul(2).saturating_add(1);
    if let Err(e) = std::io::stdin().take(cap).read_to_end(&mut input) {
        eprintln!("sendmail: reading the message: {e}");
        return ExitCode::from(exit::DATAERR);
    }
    let too_big = || {
        eprintln!(
            "sendmail: the message is larger than the limit of {max_size} bytes \
             (max_message_size); nothing was sent"
        );
        ExitCode::from(exit::UNAVAILABLE)
    };
    if input.len() as u64 == cap {
        return too_big();
    }
    if !inv.ignore_dots {
        // Traditional sendmail: a line with a single "." ends the message.
        let mut end = input.len();
        let mut start = 0;
        for line in input.split_inclusive(|&b| b == b'\n') {
            let t = line.strip_suffix(b"\n").unwrap_or(line);
            let t = t.strip_suffix(b"\r").unwrap_or(t);
            if t == b"." {
                end = start;
                break;
            }
            start += line.len();
        }
        input.truncate(end);
    }
    let mut message = sealgate::smtp::submit::to_crlf(&input);
    drop(input);
    if message.len() as u64 > max_size {
        return too_big();
    }
    let mut rcpts = inv.recipients;
    if inv.extract {
        // Postfix adds the header recipients to those given as arguments.
        match sealgate::ops::sendmail::recipients_from_headers(&message) {
            Ok((extracted, stripped)) => {
                for r in extracted {
                    if !rcpts.iter().any(|x| x.eq_ignore_ascii_case(&r)) {
                        rcpts.push(r);
                    }
                }
                message = stripped;
            }
            Err(e) => {
                eprintln!("sendmail: {e}; nothing was sent");
                return ExitCode::from(exit::DATAERR);
            }
        }
    }
    if rcpts.is_empty() {
        eprintln!("sendmail: no recipients (give them as arguments or use -t)");
        return ExitCode::from(exit::USAGE);
    }
    let host = &cfg.server.hostname;
    let rcpts: Vec<String> = rcpts
        .iter()
        .map(|r| sealgate::ops::sendmail::qualify(r, host))
        .collect();
    let from = match inv.from {
        Some(f) => sealgate::ops::sendmail::qualify(&f, host),
        None => {
            // The client sealgate AUTHs as: its allowed_senders decide whether the
            // header From may be the envelope sender (the server checks again).
            let client = auth.and_then(|(u, _)| cfg.clients.iter().find(|c| c.username == u));
            let allowed = |a: &str| {
                client.is_none_or(|c| {
                    c.allowed_senders.is_empty()
                        || c.allowed_senders
                            .iter()
                            .any(|g| sealgate::glob::glob_match(g, a))
                })
            };
            let (from, source) = sealgate::ops::sendmail::default_sender(
                &cfg.sendmail,
                &message,
                &allowed,
                user,
                &cfg.server.hostname,
            );
            if cfg.sendmail.sender_from_header && source != SenderSource::HeaderFrom {
                tracing::debug!(
                    "sendmail: the header From is not a single address this client may use; envelope sender {from}"
                );
            }
            from
        }
    };
    match sealgate::smtp::submit::submit(addr, &from, &rcpts, &message, auth) {
        Ok(_) => ExitCode::SUCCESS,
        Err(SubmitError::Connect { addr, source }) => {
            let down = format!("sealgate is not reachable at {addr} ({source})");
            if !cfg.sendmail.maildrop {
                eprintln!("sendmail: {down}; nothing was sent ([sendmail] maildrop = false); try again later");
                return ExitCode::from(exit::TEMPFAIL);
            }
            if auth.is_some() || cfg.server.require_auth {
                eprintln!(
                    "sendmail: {down}; nothing was sent: a message that must AUTH \
                     (SEALGATE_USER, require_auth) is not kept in the maildrop, whose \
                     collector cannot check a password later; try again later"
                );
                return ExitCode::from(exit::TEMPFAIL);
            }
            match sealgate::smtp::maildrop::write(&cfg.spool.dir, &from, &rcpts, &message) {
                Ok(path) => {
                    eprintln!(
                        "sendmail: {down}; the message is kept in {} and will be sent when `sealgate serve` runs",
                        path.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sendmail: {down}; and the maildrop cannot take it: {e}; nothing was sent, try again later");
                    ExitCode::from(exit::TEMPFAIL)
                }
            }
        }
        Err(SubmitError::Recipients(refused)) => {
            for (r, why) in &refused {
                eprintln!("sendmail: <{r}>: {}", why.replace('\n', " / "));
            }
            eprintln!(
                "sendmail: {} of {} recipients refused; nothing was sent to anyone",
                refused.len(),
                rcpts.len()
            );
            let too_many = refused.iter().any(|(_, w)| w.contains("4.5.3"));
            ExitCode::from(if too_many {
                exit::UNAVAILABLE
            } else if refused.iter().all(|(_, w)| w.starts_with('4')) {
                exit::TEMPFAIL
            } else {
                exit::NOUSER
            })
        }
        Err(e @ SubmitError::Io(_)) => {
            // The connection broke: after DATA the message may have been accepted.
            eprintln!("sendmail: {e}; the message may not have been accepted, try again later");
            ExitCode::from(exit::TEMPFAIL)
        }
        Err(e) => {
            eprintln!("sendmail: {e}; nothing was sent");
            ExitCode::from(if e.is_temporary() {
                exit::TEMPFAIL
            } else {
                exit::UNAVAILABLE
            })
        }
    }
}

pub fn dkim_keygen(
    domain: &str,
    selector: &str,
    algorithm: &str,
    bits: u32,
    out: Option<PathBuf>,
) -> ExitCode {
    sealgate::ops::keygen::dkim_keygen(domain, selector, algorithm, bits, out)
}

pub fn doctor(config: &Path, json: bool, dns: Option<SocketAddr>) -> ExitCode {
    let cfg = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    sealgate::ops::doctor::command(&cfg, json, dns)
}

pub fn demo(dir: &Path, port: u16, once: bool) -> ExitCode {
    let rt = match runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sealgate: {e}");
            return ExitCode::from(USAGE);
        }
    };
    match rt.block_on(sealgate::ops::demo::run(dir, port, once)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sealgate demo: {}", error_chain(&e));
            ExitCode::from(PROBLEMS)
        }
    }
}

pub fn hash_password() -> ExitCode {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let mut pw = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut pw) {
        eprintln!("sealgate hash-password: cannot read the password from standard input: {e}");
        return ExitCode::from(USAGE);
    }
    let pw = pw.trim_end_matches(['\r', '\n']);
    if pw.is_empty() {
        eprintln!("sealgate hash-password: empty password (type it on standard input)");
        return ExitCode::from(USAGE);
    }
    let salt = SaltString::generate(&mut OsRng);
    match argon2::Argon2::default().hash_password(pw.as_bytes(), &salt) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sealgate: {e}");
            ExitCode::from(PROBLEMS)
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn capture(
    listen: SocketAddr,
    cert: &Path,
    key: &Path,
    dir: &Path,
    implicit: bool,
    offer_starttls: bool,
    rcpt_reply: Option<String>,
    data_reply: Option<String>,
) -> ExitCode {
    let rt = match runtime() {
        Ok(r) => r,
        Err(_) => return ExitCode::from(USAGE),
    };
    rt.block_on(async {
        let acceptor = match sealgate::runtime::server_tls(cert, key) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("capture: {e}");
                return ExitCode::from(USAGE);
            }
        };
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("capture: {}: {e}", dir.display());
            return ExitCode::from(USAGE);
        }
        let l = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("capture: {listen}: {e}");
                return ExitCode::from(USAGE);
            }
        };
        eprintln!(
            "capture listening on {}",
            l.local_addr().map(|a| a.to_string()).unwrap_or_default()
        );
        sealgate::ops::capture::serve(
            l,
            acceptor,
            sealgate::ops::capture::CaptureOptions {
                dir: dir.to_path_buf(),
                implicit,
                offer_starttls,
                rcpt_reply,
                data_reply,
            },
        )
        .await;
        ExitCode::SUCCESS
    })
}
