//! Prints, as JSON, what sealgate's content rules and attachment actions see of one
//! message: the texts `body` conditions search, and every leaf part (type, whether it is
//! an attachment, file name, SHA-256 of the decoded content), or why it is refused.
//! The differential test (tests/differential.rs) compares this with other MIME readers.
//!
//! ```text
//! cargo run --example mime_view -- message.eml
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: mime_view MESSAGE.eml");
        return ExitCode::from(2);
    };
    let raw = match std::fs::read(&path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::from(2);
        }
    };
    match serde_json::to_string_pretty(&sealgate::policy::seen(&raw)) {
        Ok(j) => {
            println!("{j}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
