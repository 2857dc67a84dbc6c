//! The CLI edge: hands each subcommand to its job in the library (`sealgate::ops`),
//! prints the outcome and errors, and gives the exit code. Library errors are wrapped
//! with `anyhow` context here and nowhere else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sealgate::config::Config;
use sealgate::escape::lines_for_terminal;
use sealgate::ops::queue::{self, QueueError};

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

/// Prints a queue command's error and gives its exit code: 2 when the command could not
/// start (configuration, no spool), 1 for a problem in the queue.
fn queue_failed(e: &QueueError) -> ExitCode {
    eprintln!("sealgate: {e}");
    ExitCode::from(if e.is_usage() { USAGE } else { PROBLEMS })
}

pub fn queue_list(config: &Path) -> ExitCode {
    match queue::open(config).and_then(|(spool, _)| queue::list(&spool)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => queue_failed(&e),
    }
}

pub fn queue_show(config: &Path, id: &str) -> ExitCode {
    let shown = match queue::open(config).and_then(|(spool, _)| queue::show(&spool, id)) {
        Ok(shown) => shown,
        Err(e) => return queue_failed(&e),
    };
    let mut code = ExitCode::SUCCESS;
    for (n, entry) in shown.iter().enumerate() {
        if n > 0 {
            println!();
        }
        match entry {
            Ok(text) => print!("{text}"),
            Err(e) => code = queue_failed(e),
        }
    }
    code
}

pub fn queue_retry(config: &Path, id: Option<&str>) -> ExitCode {
    match queue::open(config).and_then(|(spool, _)| queue::retry(&spool, id)) {
        Ok(retried) => {
            println!("{retried}");
            ExitCode::SUCCESS
        }
        Err(e) => queue_failed(&e),
    }
}

pub fn queue_delete(config: &Path, id: &str) -> ExitCode {
    let (spool, cfg) = match queue::open(config) {
        Ok(s) => s,
        Err(e) => return queue_failed(&e),
    };
    // The audit log records who removed an acknowledged message; an audit log that
    // cannot be opened does not stop the operator.
    let audit = sealgate::audit::Audit::open(cfg.audit.path.as_deref()).ok();
    let mut code = ExitCode::SUCCESS;
    for removed in queue::delete(&spool, audit.as_ref(), id) {
        match removed {
            Ok(what) => println!("{what}"),
            Err(e) => code = queue_failed(&e),
        }
    }
    code
}

/// `sealgate sendmail` / `sendmail`: the job is [`sealgate::ops::sendmail::run`]; this
/// prints its outcome, with sendmail's exit codes (sysexits.h).
pub fn sendmail(args: Vec<String>) -> ExitCode {
    use sealgate::ops::sendmail::{self, Done, Environment};
    let env = Environment::from_process();
    let done = match sendmail::run(&args, &env, &mut std::io::stdin()) {
        Ok(done) => done,
        Err(e @ sendmail::SendmailError::Refused { .. }) => {
            // One line per refused recipient, then the count.
            for line in e.to_string().lines() {
                eprintln!("sendmail: {line}");
            }
            return ExitCode::from(e.exit_code());
        }
        Err(e) => {
            eprintln!("sendmail: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    match &done {
        Done::Sent => {}
        Done::Help => print!("{}", sendmail::USAGE),
        Done::Nothing(why) => eprintln!("sendmail: {why}"),
        Done::Maildropped { down, path } => eprintln!(
            "sendmail: {down}; the message is kept in {} and will be sent when `sealgate serve` runs",
            path.display()
        ),
        Done::Verified(results) => {
            for (r, res) in results {
                match res {
                    Ok(()) => println!("{r}... deliverable"),
                    Err(why) => println!("{r}... undeliverable: {}", why.replace('\n', " / ")),
                }
            }
        }
        Done::Queue { config, flush } => {
            return if *flush {
                queue_retry(config, None)
            } else {
                queue_list(config)
            }
        }
    }
    ExitCode::from(done.exit_code())
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
