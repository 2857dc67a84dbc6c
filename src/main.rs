//! The `sealgate` command line: parses arguments ([`args`]) and hands off to the
//! commands ([`cli`]), which call the library.
//! Exit codes: 0 success, 1 the job found problems, 2 usage or configuration error;
//! `sendmail` uses sendmail's (sysexits.h).

use std::process::ExitCode;

use clap::Parser;

mod args;
mod cli;

fn main() -> ExitCode {
    cli::init_logging();
    match args::sendmail_by_name() {
        Some(sendmail_args) => cli::sendmail(sendmail_args),
        None => args::Cli::parse().run(),
    }
}
