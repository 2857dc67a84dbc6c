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
    /// One or more recipients refused at RCPT: the message was not sent to anyone.
    #[error("{}", recipients_text(.0))]
    Recipients(Vec<(String, String)>),
}

fn recipients_text(refused: &[(String, String)]) -> String {
    refused
        .iter()
        .map(|(r, reply)| format!("<{r}>: {}", reply.replace('\n', " / ")))
        .collect::<Vec<_>>()
        .join("\n")
}

impl SubmitError {
    /// True when the server said 4xx or the connection failed: try again later.
    pub fn is_temporary(&self) -> bool {
        match self {
            SubmitError::Refused(r) => r.starts_with('4'),
            SubmitError::Recipients(v) => v.iter().all(|(_, r)| r.starts_with('4')),
            _ => true,
        }
    }
}

struct Client {
    r: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr, auth: Option<(&str, &str)>) -> Result<Client, SubmitError> {
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
        Ok(c)
    }
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
        // Every caller passes checked addresses; this is the last line of defence
        // against a line break turning one command into two.
        if line.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(SubmitError::Refused(format!(
                "refusing to send a command with a line break or NUL: {line:?}"
            )));
        }
        self.r
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())?;
        let (code, text) = self.reply()?;
        if code != want {
            return Err(SubmitError::Refused(text));
        }
        Ok(text)
    }
    /// MAIL FROM and every RCPT TO; returns the refused recipients with their replies.
    fn envelope(
        &mut self,
        from: &str,
        rcpts: &[String],
        eight_bit: bool,
    ) -> Result<Vec<(String, String)>, SubmitError> {
        let utf8 = if !from.is_ascii() || rcpts.iter().any(|r| !r.is_ascii()) {
            " SMTPUTF8"
        } else {
            ""
        };
        let eight = if eight_bit { " BODY=8BITMIME" } else { "" };
        self.cmd(&format!("MAIL FROM:<{from}>{eight}{utf8}"), 250)?;
        let mut refused = Vec::new();
        for r in rcpts {
            match self.cmd(&format!("RCPT TO:<{r}>"), 250) {
                Ok(_) => {}
                Err(SubmitError::Refused(t)) => refused.push((r.clone(), t)),
                Err(e) => return Err(e),
            }
        }
        Ok(refused)
    }
}

/// Submits `message` (CRLF line endings) and returns the final `250` reply text.
/// All or nothing: when the server refuses any recipient at RCPT, the transaction is
/// abandoned and `Err(Recipients)` lists every refusal, so a caller that retries on
/// failure never sends a duplicate to the recipients that were accepted.
pub fn submit(
    addr: SocketAddr,
    from: &str,
    rcpts: &[String],
    message: &[u8],
    auth: Option<(&str, &str)>,
) -> Result<String, SubmitError> {
    let mut c = Client::connect(addr, auth)?;
    let refused = c.envelope(from, rcpts, message.iter().any(|&b| b >= 0x80))?;
    if !refused.is_empty() {
        let _ = c.cmd("RSET", 250);
        let _ = c.cmd("QUIT", 221);
        return Err(SubmitError::Recipients(refused));
    }
    c.cmd("DATA", 354)?;
    let stuffed = crate::queue::upstream::dot_stuff(message);
    c.r.get_mut().write_all(&stuffed)?;
    let (code, text) = c.reply()?;
    let _ = c.cmd("QUIT", 221);
    if code != 250 {
        return Err(SubmitError::Refused(text));
    }
    Ok(text)
}

/// Each recipient with `Ok` or the server's refusal.
pub type Verdicts = Vec<(String, Result<(), String>)>;

/// `sendmail -bv`: MAIL FROM and RCPT TO for each recipient, then RSET; nothing is
/// sent. Returns each recipient with `Ok` or the server's refusal.
pub fn verify(
    addr: SocketAddr,
    from: &str,
    rcpts: &[String],
    auth: Option<(&str, &str)>,
) -> Result<Verdicts, SubmitError> {
    let mut c = Client::connect(addr, auth)?;
    let refused = c.envelope(from, rcpts, false)?;
    let _ = c.cmd("RSET", 250);
    let _ = c.cmd("QUIT", 221);
    Ok(rcpts
        .iter()
        .map(|r| {
            let why = refused.iter().find(|(x, _)| x == r).map(|(_, t)| t.clone());
            (r.clone(), why.map_or(Ok(()), Err))
        })
        .collect())
}

/// `sendmail -bs`: copies stdin to the listener and its replies to stdout until either
/// side closes. The session is the listener's own, so every rule of SMTP applies.
pub fn proxy(addr: SocketAddr) -> Result<(), SubmitError> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|source| SubmitError::Connect { addr, source })?;
    let mut to_server = s.try_clone()?;
    let mut from_server = s;
    let upload = std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to_server);
        let _ = to_server.shutdown(std::net::Shutdown::Write);
    });
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = std::io::Read::read(&mut from_server, &mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
    // The server closed (after QUIT, or a timeout): the uploader may still wait on
    // stdin; the process exits without it.
    drop(upload);
    Ok(())
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
