//! A small TLS-only SMTP server that writes each message it receives to a folder.
//!
//! It is the upstream of `sealgate demo`, and the fault-injecting peer of the tests
//! (`sealgate capture`): it can omit STARTTLS, refuse recipients with 4xx/5xx, or
//! refuse DATA. It is not a mail server for real use: no limits beyond the basics.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// How the capture server behaves.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Folder for `<n>.eml` and `<n>.json` (envelope) files.
    pub dir: PathBuf,
    /// TLS from the first byte (true) or STARTTLS (false).
    pub implicit: bool,
    /// Advertise STARTTLS (only meaningful when not implicit). `false` simulates a downgrade.
    pub offer_starttls: bool,
    /// Reply to every RCPT, e.g. `"450 4.2.0 mailbox busy"`; `None` accepts.
    pub rcpt_reply: Option<String>,
    /// Reply at end of DATA; `None` accepts with 250.
    pub data_reply: Option<String>,
}

/// Runs the capture server on `listener` with `acceptor` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    opts: CaptureOptions,
) {
    let opts = Arc::new(opts);
    let counter = Arc::new(AtomicU64::new(0));
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        let _ = sock.set_nodelay(true);
        let (acceptor, opts, counter) = (acceptor.clone(), opts.clone(), counter.clone());
        tokio::spawn(async move {
            if opts.implicit {
                if let Ok(tls) = acceptor.accept(sock).await {
                    let _ = session(BufReader::new(tls), &opts, &counter, true).await;
                }
            } else {
                let mut plain = BufReader::new(sock);
                if let Ok(true) = plaintext_phase(&mut plain, &opts).await {
                    if let Ok(tls) = acceptor.accept(plain.into_inner()).await {
                        let _ = session(BufReader::new(tls), &opts, &counter, false).await;
                    }
                }
            }
        });
    }
}

/// Sends one reply in one write (two small writes would meet Nagle + delayed ACK: 40 ms).
async fn write<S: AsyncWrite + Unpin>(s: &mut S, text: &str) -> std::io::Result<()> {
    let mut line = Vec::with_capacity(text.len() + 2);
    line.extend_from_slice(text.as_bytes());
    line.extend_from_slice(b"\r\n");
    s.write_all(&line).await?;
    s.flush().await
}

/// Until STARTTLS: true when the client asked for it. Mail in plaintext is refused.
async fn plaintext_phase<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    opts: &CaptureOptions,
) -> std::io::Result<bool> {
    write(s.get_mut(), "220 capture.test ESMTP").await?;
    loop {
        let mut line = String::new();
        if s.read_line(&mut line).await? == 0 {
            return Ok(false);
        }
        let up = line.trim().to_ascii_uppercase();
        if up.starts_with("EHLO") {
            if opts.offer_starttls {
                write(
                    s.get_mut(),
                    "250-capture.test\r\n250-PIPELINING\r\n250 STARTTLS",
                )
                .await?;
            } else {
                write(s.get_mut(), "250-capture.test\r\n250 PIPELINING").await?;
            }
        } else if up == "STARTTLS" && opts.offer_starttls {
            write(s.get_mut(), "220 2.0.0 go ahead").await?;
            return Ok(true);
        } else if up == "QUIT" {
            write(s.get_mut(), "221 2.0.0 bye").await?;
            return Ok(false);
        } else if up.starts_with("MAIL") {
            // A client that sends mail in plaintext: record it so tests can see the leak.
            std::fs::write(opts.dir.join("PLAINTEXT-LEAK"), line.as_bytes())?;
            write(s.get_mut(), "530 5.7.0 must issue STARTTLS first").await?;
        } else {
            write(s.get_mut(), "500 5.5.1 unknown").await?;
        }
    }
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: BufReader<S>,
    opts: &CaptureOptions,
    counter: &AtomicU64,
    greet: bool,
) -> std::io::Result<()> {
    if greet {
        write(s.get_mut(), "220 capture.test ESMTP").await?;
    }
    let mut from = String::new();
    let mut rcpts: Vec<String> = Vec::new();
    loop {
        let mut line = String::new();
        if s.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let trimmed = line.trim_end().to_string();
        let up = trimmed.to_ascii_uppercase();
        if up.starts_with("EHLO") || up.starts_with("HELO") {
            write(s.get_mut(), "250-capture.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-SIZE 104857600\r\n250 AUTH PLAIN LOGIN").await?;
        } else if up.starts_with("AUTH PLAIN ") {
            // A capture sink: any well-formed PLAIN response is accepted.
            use base64::Engine;
            let ok = base64::engine::general_purpose::STANDARD
                .decode(trimmed[11..].trim())
                .is_ok_and(|d| d.split(|&b| b == 0).count() == 3);
            let reply = if ok {
                "235 2.7.0 ok"
            } else {
                "535 5.7.8 bad credentials"
            };
            write(s.get_mut(), reply).await?;
        } else if up.starts_with("MAIL FROM:") {
            from = addr(&trimmed[10..]);
            rcpts.clear();
            write(s.get_mut(), "250 2.1.0 ok").await?;
        } else if up.starts_with("RCPT TO:") {
            match &opts.rcpt_reply {
                Some(r) => write(s.get_mut(), r).await?,
                None => {
                    rcpts.push(addr(&trimmed[8..]));
                    write(s.get_mut(), "250 2.1.5 ok").await?;
                }
            }
        } else if up == "DATA" {
            if rcpts.is_empty() {
                write(s.get_mut(), "554 5.5.1 no valid recipients").await?;
                continue;
            }
            write(s.get_mut(), "354 go").await?;
            let mut data = Vec::new();
            loop {
                let mut l = Vec::new();
                if s.read_until(b'\n', &mut l).await? == 0 {
                    return Ok(());
                }
                if l == b".\r\n" {
                    break;
                }
                if l.starts_with(b".") {
                    l.remove(0);
                }
                data.extend_from_slice(&l);
            }
            match &opts.data_reply {
                Some(r) => write(s.get_mut(), r).await?,
                None => {
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    let stamp = format!("{:06}-{}", n, std::process::id());
                    let env = serde_json::json!({"from": from, "rcpts": rcpts});
                    std::fs::write(opts.dir.join(format!("{stamp}.json")), env.to_string())?;
                    let tmp = opts.dir.join(format!(".{stamp}.eml"));
                    std::fs::write(&tmp, &data)?;
                    std::fs::rename(&tmp, opts.dir.join(format!("{stamp}.eml")))?;
                    write(s.get_mut(), &format!("250 2.0.0 captured as {stamp}")).await?;
                }
            }
            rcpts.clear();
        } else if up == "RSET" {
            rcpts.clear();
            write(s.get_mut(), "250 2.0.0 ok").await?;
        } else if up == "NOOP" {
            write(s.get_mut(), "250 2.0.0 ok").await?;
        } else if up == "QUIT" {
            write(s.get_mut(), "221 2.0.0 bye").await?;
            return Ok(());
        } else {
            write(s.get_mut(), "500 5.5.1 unknown command").await?;
        }
    }
}

fn addr(s: &str) -> String {
    let s = s.trim();
    let start = s.find('<').map(|i| i + 1).unwrap_or(0);
    let end = s[start..].find('>').map(|i| i + start).unwrap_or(s.len());
    s[start..end].to_string()
}
