//! A minimal blocking SMTP client for submitting to our own loopback listener: used by
//! `sealgate sendmail` and `sealgate demo`. It never leaves the host, so it speaks plain
//! SMTP (optionally AUTH PLAIN) and nothing else.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use base64::Engine;

/// A submission failure with the server's reply when there was one.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("cannot connect to sealgate at {addr}: {source} (is `sealgate serve` running?)")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to sealgate: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Refused(String),
}

impl SubmitError {
    /// True when the server said 4xx or the connection failed: try again later.
    pub fn is_temporary(&self) -> bool {
        match self {
            SubmitError::Refused(r) => r.starts_with('4'),
            _ => true,
        }
    }
}

struct Client {
    r: BufReader<TcpStream>,
}

impl Client {
    fn reply(&mut self) -> Result<(u16, String), SubmitError> {
        let mut text = Vec::new();
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line)? == 0 {
                return Err(SubmitError::Refused("connection closed by server".into()));
            }
            let line = line.trim_end().to_string();
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            let last = line.as_bytes().get(3) != Some(&b'-');
            text.push(line);
            if last {
                return Ok((code, text.join("\n")));
            }
        }
    }
    fn cmd(&mut self, line: &str, want: u16) -> Result<String, SubmitError> {
        self.r
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())?;
        let (code, text) = self.reply()?;
        if code != want {
            return Err(SubmitError::Refused(text));
        }
        Ok(text)
    }
}

/// Submits `message` (CRLF line endings) and returns the final `250` reply text.
/// Recipients refused at RCPT are reported in `Err` unless others were accepted, in which
/// case the refusals come back in the second tuple element.
pub fn submit(
    addr: SocketAddr,
    from: &str,
    rcpts: &[String],
    message: &[u8],
    auth: Option<(&str, &str)>,
) -> Result<(String, Vec<String>), SubmitError> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|source| SubmitError::Connect { addr, source })?;
    s.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut c = Client {
        r: BufReader::new(s),
    };
    let (code, text) = c.reply()?;
    if code != 220 {
        return Err(SubmitError::Refused(text));
    }
    c.cmd("EHLO localhost", 250)?;
    if let Some((u, p)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{u}\0{p}"));
        c.cmd(&format!("AUTH PLAIN {token}"), 235)?;
    }
    let utf8 = if !from.is_ascii() || rcpts.iter().any(|r| !r.is_ascii()) {
        " SMTPUTF8"
    } else {
        ""
    };
    let eight = if message.iter().any(|&b| b >= 0x80) {
        " BODY=8BITMIME"
    } else {
        ""
    };
    c.cmd(&format!("MAIL FROM:<{from}>{eight}{utf8}"), 250)?;
    let mut refused = Vec::new();
    for r in rcpts {
        if let Err(SubmitError::Refused(t)) = c.cmd(&format!("RCPT TO:<{r}>"), 250) {
            refused.push(t);
        }
    }
    if refused.len() == rcpts.len() {
        let _ = c.cmd("QUIT", 221);
        return Err(SubmitError::Refused(refused.join("\n")));
    }
    c.cmd("DATA", 354)?;
    let stuffed = crate::upstream::dot_stuff(message);
    c.r.get_mut().write_all(&stuffed)?;
    let (code, text) = c.reply()?;
    let _ = c.cmd("QUIT", 221);
    if code != 250 {
        return Err(SubmitError::Refused(text));
    }
    Ok((text, refused))
}

/// Turns LF or CRLF input into CRLF (sendmail input is usually LF-terminated).
pub fn to_crlf(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 40);
    let mut prev = 0u8;
    for &b in input {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}
