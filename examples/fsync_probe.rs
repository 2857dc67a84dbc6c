//! What this disk allows for durable acceptance (`bench/core.sh`).
//!
//! W concurrent writers (default 8) each loop: create a file in a shared directory,
//! write 4 KiB, fsync it, fsync the directory, then unlink the file (unlink is not
//! synced). One loop is one "durable write", the minimum a spool that fsyncs file and
//! directory before `250` must do per message. Prints one JSON object.
//!
//! usage: cargo run --release --example fsync_probe -- --dir DIR [--writers 8] [--seconds 3]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let mut dir = std::env::temp_dir().join("sealgate-fsync-probe");
    let mut writers = 8usize;
    let mut seconds = 3.0f64;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| {
            eprintln!("usage: fsync_probe --dir DIR [--writers N] [--seconds S]");
            std::process::exit(2)
        });
        match k.as_str() {
            "--dir" => dir = PathBuf::from(v),
            "--writers" => writers = v.parse().expect("--writers"),
            "--seconds" => seconds = v.parse().expect("--seconds"),
            _ => {
                eprintln!("unknown argument {k}");
                std::process::exit(2)
            }
        }
    }
    std::fs::create_dir_all(&dir).expect("create probe dir");
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let block = vec![b'x'; 4096];
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (dir, stop, done, block) = (dir.clone(), stop.clone(), done.clone(), block.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let p = dir.join(format!("w{w}-{k}.tmp"));
                    let mut f = OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(&p)
                        .unwrap();
                    f.write_all(&block).unwrap();
                    f.sync_all().unwrap();
                    drop(f);
                    File::open(&dir).unwrap().sync_all().unwrap();
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    std::fs::remove_file(&p).unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                    k += 1;
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<f64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let secs = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| lat[((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1];
    let n = done.load(Ordering::Relaxed) as f64;
    println!(
        "{}",
        serde_json::json!({
            "writers": writers,
            "seconds": secs,
            "durable_writes_per_s": n / secs,
            "fsync_calls_per_s": 2.0 * n / secs,
            "latency_ms": {"p50": p(0.5), "p99": p(0.99)},
        })
    );
}
