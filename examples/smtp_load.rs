//! SMTP load generator for the end-to-end benchmark (`bench/core.sh`).
//!
//! Drives N messages of a given size from C concurrent clients into a plain-SMTP
//! listener (sealgate or Postfix), one message at a time per client and no pipelining,
//! the way legacy applications submit. Each client reuses one connection for all its
//! messages, or with `--fresh-connections` opens a new one per message (EHLO ... QUIT).
//!
//! Per message it records the submission latency: `MAIL FROM` sent -> final `250` after
//! DATA. With `--sink-dir` it then waits until that folder holds one `*.eml` per
//! accepted message and reports end-to-end throughput: first submission -> sink complete.
//!
//! Prints one JSON object on stdout. Blocking std threads: the generator itself should
//! cost little CPU next to the server under test.
//!
//! usage: cargo run --release --example smtp_load -- --addr 127.0.0.1:2525 -n 4000 \
//!            -c 8 --size 4096 [--fresh-connections] [--sink-dir DIR] [--sink-timeout 300]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    addr: SocketAddr,
    n: usize,
    clients: usize,
    size: usize,
    fresh: bool,
    sink_dir: Option<PathBuf>,
    sink_timeout: Duration,
    from: String,
    rcpt: String,
    label: String,
}

fn usage() -> ! {
    eprintln!(
        "usage: smtp_load --addr HOST:PORT [-n N] [-c CLIENTS] [--size BYTES] [--fresh-connections] \
         [--sink-dir DIR] [--sink-timeout SECS] [--from ADDR] [--rcpt ADDR] [--label TEXT]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        addr: "127.0.0.1:2525".parse().unwrap(),
        n: 4000,
        clients: 8,
        size: 4096,
        fresh: false,
        sink_dir: None,
        sink_timeout: Duration::from_secs(300),
        from: "bench@example.com".into(),
        rcpt: "sink@example.net".into(),
        label: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--addr" => a.addr = v().parse().unwrap_or_else(|_| usage()),
            "-n" => a.n = v().parse().unwrap_or_else(|_| usage()),
            "-c" | "--clients" => a.clients = v().parse().unwrap_or_else(|_| usage()),
            "--size" => a.size = v().parse().unwrap_or_else(|_| usage()),
            "--fresh-connections" => a.fresh = true,
            "--sink-dir" => a.sink_dir = Some(PathBuf::from(v())),
            "--sink-timeout" => {
                a.sink_timeout = Duration::from_secs(v().parse().unwrap_or_else(|_| usage()))
            }
            "--from" => a.from = v(),
            "--rcpt" => a.rcpt = v(),
            "--label" => a.label = v(),
            _ => usage(),
        }
    }
    if a.clients == 0 {
        usage()
    }
    a
}

/// A message of exactly `size` bytes (CRLF lines, dot-safe, ends with CRLF).
fn message(args: &Args, seq: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Bench <{from}>\r\nTo: <{rcpt}>\r\nSubject: sealgate bench {seq}\r\n\
         Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <bench-{seq}-{pid}@example.com>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
        from = args.from,
        rcpt = args.rcpt,
        pid = std::process::id()
    )
    .into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog while the bench counts messages 0123";
    while m.len() + line.len() + 2 <= args.size {
        m.extend_from_slice(line);
        m.extend_from_slice(b"\r\n");
    }
    while m.len() + 2 < args.size {
        m.push(b'x');
    }
    m.extend_from_slice(b"\r\n");
    m
}

struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        let mut c = Conn {
            r: BufReader::new(s.try_clone()?),
            w: s,
        };
        c.expect(2)?;
        c.cmd("EHLO bench.example.com", 2)?;
        Ok(c)
    }

    /// Reads one (multi-line) reply; returns its code.
    fn reply(&mut self) -> std::io::Result<u16> {
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            if line.len() < 4 {
                return Err(std::io::Error::other(format!("short reply {line:?}")));
            }
            if line.as_bytes()[3] != b'-' {
                return line[..3]
                    .parse()
                    .map_err(|_| std::io::Error::other(format!("bad reply {line:?}")));
            }
        }
    }

    fn expect(&mut self, class: u16) -> std::io::Result<()> {
        let code = self.reply()?;
        if code / 100 != class {
            return Err(std::io::Error::other(format!(
                "reply {code}, wanted {class}xx"
            )));
        }
        Ok(())
    }

    fn cmd(&mut self, line: &str, class: u16) -> std::io::Result<()> {
        self.w.write_all(format!("{line}\r\n").as_bytes())?;
        self.expect(class)
    }

    /// One transaction; returns the latency MAIL FROM -> final 250.
    fn send(&mut self, from: &str, rcpt: &str, body: &[u8]) -> std::io::Result<Duration> {
        let t = Instant::now();
        self.cmd(&format!("MAIL FROM:<{from}>"), 2)?;
        self.cmd(&format!("RCPT TO:<{rcpt}>"), 2)?;
        self.cmd("DATA", 3)?;
        let mut data = Vec::with_capacity(body.len() + 5);
        data.extend_from_slice(body);
        data.extend_from_slice(b".\r\n");
        self.w.write_all(&data)?;
        self.expect(2)?;
        Ok(t.elapsed())
    }

    fn quit(mut self) {
        let _ = self.cmd("QUIT", 2);
    }
}

fn count_eml(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.ends_with(".eml") && !n.starts_with('.')
                })
                .count()
        })
        .unwrap_or(0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

fn main() {
    let args = Arc::new(parse_args());
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..args.n).map(|i| message(&args, i)).collect());
    let before = args.sink_dir.as_deref().map(count_eml).unwrap_or(0);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let start = Instant::now();
    let handles: Vec<_> = (0..args.clients)
        .map(|_| {
            let (args, bodies, next, errors) =
                (args.clone(), bodies.clone(), next.clone(), errors.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut conn: Option<Conn> = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= args.n {
                        break;
                    }
                    if conn.is_none() {
                        match Conn::open(args.addr) {
                            Ok(c) => conn = Some(c),
                            Err(e) => {
                                errors.lock().unwrap().push(format!("connect: {e}"));
                                continue;
                            }
                        }
                    }
                    let c = conn.as_mut().unwrap();
                    match c.send(&args.from, &args.rcpt, &bodies[i]) {
                        Ok(d) => lat.push(d.as_secs_f64() * 1000.0),
                        Err(e) => {
                            errors.lock().unwrap().push(format!("message {i}: {e}"));
                            conn = None;
                            continue;
                        }
                    }
                    if args.fresh {
                        if let Some(c) = conn.take() {
                            c.quit();
                        }
                    }
                }
                if let Some(c) = conn.take() {
                    c.quit();
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<f64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let submit = start.elapsed();
    let accepted = lat.len();
    let mut sink_complete = None;
    let mut in_sink = None;
    if let Some(dir) = &args.sink_dir {
        let deadline = Instant::now() + args.sink_timeout;
        loop {
            let have = count_eml(dir).saturating_sub(before);
            if have >= accepted {
                sink_complete = Some(start.elapsed());
                in_sink = Some(have);
                break;
            }
            if Instant::now() > deadline {
                in_sink = Some(have);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mean = if lat.is_empty() {
        f64::NAN
    } else {
        lat.iter().sum::<f64>() / lat.len() as f64
    };
    let errors = errors.lock().unwrap();
    let e2e = sink_complete.map(|d| d.as_secs_f64());
    let out = serde_json::json!({
        "label": args.label,
        "addr": args.addr.to_string(),
        "n": args.n,
        "clients": args.clients,
        "size": args.size,
        "fresh_connections": args.fresh,
        "accepted": accepted,
        "errors": errors.len(),
        "first_errors": errors.iter().take(5).collect::<Vec<_>>(),
        "submit_seconds": submit.as_secs_f64(),
        "accept_msgs_per_s": accepted as f64 / submit.as_secs_f64(),
        "in_sink": in_sink,
        "e2e_seconds": e2e,
        "msgs_per_s": e2e.map(|s| accepted as f64 / s),
        "latency_ms": {
            "p50": pct(&lat, 50.0), "p90": pct(&lat, 90.0), "p99": pct(&lat, 99.0),
            "max": lat.last().copied().unwrap_or(f64::NAN), "mean": mean,
        },
    });
    println!("{out}");
    if !errors.is_empty() || (args.sink_dir.is_some() && sink_complete.is_none()) {
        std::process::exit(1);
    }
}
