//! The `sealgate` command line as clap sees it, and its mapping onto [`crate::cli`]'s
//! commands; sendmail's own command line when invoked as `sendmail`, `mailq` or
//! `newaliases`. Binary-only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cli;

#[derive(Parser)]
#[command(
    name = "sealgate",
    version,
    about = "Local SMTP submission proxy: policy, S/MIME, attachment protection, DKIM, verified-TLS relay"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy in the foreground (SIGHUP reloads, SIGTERM drains and stops).
    Serve {
        #[arg(short, long, default_value = "sealgate.toml")]
        config: PathBuf,
    },
    /// Validate configuration, policy files, keys and certificates.
    Check {
        #[arg(short, long, default_value = "sealgate.toml")]
        config: PathBuf,
    },
    /// Dry run: which rules match each recipient and what would be sent.
    Explain {
        #[arg(short, long, default_value = "sealgate.toml")]
        config: PathBuf,
        /// Envelope sender.
        #[arg(long)]
        from: String,
        /// Envelope recipients.
        #[arg(long, required = true, num_args = 1..)]
        to: Vec<String>,
        /// The message file (.eml); it may also come last, after the --to addresses.
        message: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Store the transformed outgoing copies in DIR instead of sending.
        #[arg(long)]
        write: Option<PathBuf>,
        /// Client name the policy sees (default: local).
        #[arg(long, default_value = "local")]
        client: String,
    },
    /// Inspect and manage the spool.
    Queue {
        #[arg(short, long, default_value = "sealgate.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        action: QueueAction,
    },
    /// sendmail-compatible entry point: message on stdin.
    #[command(disable_help_flag = true)]
    Sendmail {
        /// sendmail's options and recipients, parsed by hand as sendmail's getopt
        /// syntax needs (see `sealgate sendmail --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Write a new DKIM key and print the DNS TXT record.
    DkimKeygen {
        #[arg(long)]
        domain: String,
        #[arg(long)]
        selector: String,
        #[arg(long, default_value = "rsa")]
        algorithm: String,
        #[arg(long, default_value_t = 2048)]
        bits: u32,
        /// Where to write the key (default: DOMAIN.SELECTOR.key).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check DNS (SPF, DKIM, DMARC, MTA-STS, TLS-RPT), the upstream's TLS and expiries.
    Doctor {
        #[arg(short, long, default_value = "sealgate.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
        /// Resolver to ask instead of the system's (e.g. 127.0.0.1:5353).
        #[arg(long)]
        dns: Option<std::net::SocketAddr>,
    },
    /// The whole pipeline on one machine, with demo keys and a capture upstream.
    Demo {
        #[arg(long, default_value = "sealgate-demo")]
        dir: PathBuf,
        /// Port for the proxy.
        #[arg(long, default_value_t = 2525)]
        port: u16,
        /// Send the samples and exit instead of serving until Ctrl-C.
        #[arg(long)]
        once: bool,
    },
    /// Print an argon2id hash of a password read from stdin, for [[client]] password_hash.
    HashPassword,
    /// A TLS-only capture SMTP server (demo upstream, test peer).
    #[command(hide = true)]
    Capture {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        implicit: bool,
        #[arg(long)]
        no_starttls: bool,
        #[arg(long)]
        rcpt_reply: Option<String>,
        #[arg(long)]
        data_reply: Option<String>,
    },
}

#[derive(Subcommand)]
enum QueueAction {
    /// One line per entry.
    List,
    /// Envelope, state and headers of one entry.
    Show { id: String },
    /// Make entries due now (all, or one).
    Retry { id: Option<String> },
    /// Remove an entry for good.
    Delete { id: String },
}

/// sendmail's command line when the binary is installed as `sendmail` (as
/// `/usr/sbin/sendmail`), `mailq` (`-bp`) or `newaliases` (`-bi`), as sendmail is;
/// `None` under any other name.
pub fn sendmail_by_name() -> Option<Vec<String>> {
    let argv0 = std::env::args().next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mode = match name.as_str() {
        "sendmail" => None,
        "mailq" => Some("-bp"),
        "newaliases" => Some("-bi"),
        _ => return None,
    };
    Some(
        mode.map(String::from)
            .into_iter()
            .chain(std::env::args().skip(1))
            .collect(),
    )
}

impl Cli {
    /// Runs the command the arguments name.
    pub fn run(self) -> ExitCode {
        if matches!(
            self.command,
            Command::Check { .. }
                | Command::Explain { .. }
                | Command::Queue { .. }
                | Command::DkimKeygen { .. }
                | Command::HashPassword
        ) {
            // Report tools end quietly when their reader does (`sealgate explain --json | head`)
            // instead of panicking in println!. Not for the commands that talk to the network.
            // SAFETY: setting a signal disposition before any other thread exists.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        }
        match self.command {
            Command::Serve { config } => cli::serve(&config),
            Command::Check { config } => cli::check(&config),
            Command::Explain {
                config,
                from,
                to,
                message,
                json,
                write,
                client,
            } => {
                // `--to A B MSG.eml`, as documented: `--to` takes every value up to the
                // next option, so the message file is then its last value.
                let (to, message) = match message {
                    Some(m) => (to, m),
                    None if to.len() >= 2 => {
                        let mut to = to;
                        let m = PathBuf::from(to.pop().unwrap_or_default());
                        (to, m)
                    }
                    None => {
                        eprintln!("sealgate explain: no message file: sealgate explain --from A --to B... MSG.eml");
                        return ExitCode::from(2);
                    }
                };
                cli::explain(
                    &config,
                    &from,
                    &to,
                    &message,
                    json,
                    write.as_deref(),
                    &client,
                )
            }
            Command::Queue { config, action } => match action {
                QueueAction::List => cli::queue_list(&config),
                QueueAction::Show { id } => cli::queue_show(&config, &id),
                QueueAction::Retry { id } => cli::queue_retry(&config, id.as_deref()),
                QueueAction::Delete { id } => cli::queue_delete(&config, &id),
            },
            Command::Sendmail { args } => cli::sendmail(args),
            Command::DkimKeygen {
                domain,
                selector,
                algorithm,
                bits,
                out,
            } => cli::dkim_keygen(&domain, &selector, &algorithm, bits, out),
            Command::Doctor { config, json, dns } => cli::doctor(&config, json, dns),
            Command::Demo { dir, port, once } => cli::demo(&dir, port, once),
            Command::HashPassword => cli::hash_password(),
            Command::Capture {
                listen,
                cert,
                key,
                dir,
                implicit,
                no_starttls,
                rcpt_reply,
                data_reply,
            } => cli::capture(
                listen,
                &cert,
                &key,
                &dir,
                implicit,
                !no_starttls,
                rcpt_reply,
                data_reply,
            ),
        }
    }
}
