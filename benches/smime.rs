//! S/MIME sign + encrypt cost against its cryptographic floor (issue 4):
//!
//! - sealgate `apply` (sign + encrypt) of a 100 KiB message to one RSA-2048 recipient,
//!   median of many runs;
//! - the floor, measured by `openssl speed` in the same run: one RSA-2048 private-key
//!   operation (sign), one public-key operation per recipient (verify), and AES-256-CBC
//!   over the message; the same floor is also measured in-process for comparison;
//! - the ratio (target: at most 1.5);
//! - peak RSS while a 25 MiB message is signed and encrypted (target: below 4x its size),
//!   from `VmHWM` in /proc/self/status after resetting it (`/proc/self/clear_refs`).
//!
//! Timings are medians of many runs, in several rounds in one process; the ratio
//! reported is the median over the rounds, since this machine is noisy.
//!
//! Run: `cargo bench --bench smime` (no criterion: a plain `main`, harness = false).

#[path = "../tests/smime_support/mod.rs"]
mod smime_support;

use std::time::{Duration, Instant};

use sealgate::policy::verdict::{Actions, Crypto, CryptoKind};
use sealgate::transform::{apply, Plan};
use smime_support::*;

fn message(size: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(size + 80);
    m.extend_from_slice(b"From: payroll@example.com\r\nTo: alice@bank.example\r\nSubject: bench\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n");
    let line = b"0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m.truncate(size - 2);
    m.extend_from_slice(b"\r\n");
    m
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<F: FnMut()>(runs: usize, mut f: F) -> Duration {
    f();
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

/// `openssl speed`: seconds per RSA-2048 sign and verify.
fn openssl_speed_rsa() -> Option<(f64, f64)> {
    let out = run(
        "openssl",
        &["speed", "-seconds", "2", "rsa2048"],
        None,
        false,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("rsa 2048 bits"))?;
    let nums: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches('s').parse().ok())
        .collect();
    // [2048, sign s, verify s, sign/s, verify/s]
    Some((*nums.get(1)?, *nums.get(2)?))
}

/// `openssl speed -evp aes-256-cbc`: bytes per second on 16 KiB blocks.
fn openssl_speed_aes() -> Option<f64> {
    let out = run(
        "openssl",
        &[
            "speed",
            "-seconds",
            "2",
            "-bytes",
            "16384",
            "-evp",
            "aes-256-cbc",
        ],
        None,
        false,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.to_ascii_lowercase().starts_with("aes-256-cbc"))?;
    let k: f64 = line
        .split_whitespace()
        .last()?
        .trim_end_matches('k')
        .parse()
        .ok()?;
    Some(k * 1000.0)
}

/// `VmRSS` or `VmHWM` from /proc/self/status, in KiB.
fn status_kib(field: &str) -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets the peak RSS (`VmHWM`) to the current RSS; false where the kernel refuses.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

const ROUNDS: usize = 5;
const RUNS: usize = 100;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let pki = pki();
    let smime = pki.load(&pki.config());
    let plan = Plan {
        actions: Actions {
            crypto: Crypto::planned(true, Some(CryptoKind::Smime)),
            ..Actions::default()
        },
        recipients: vec!["alice@bank.example".into()],
        notes: Vec::new(),
    };
    let only = |sign: bool, encrypt: bool| Plan {
        actions: Actions {
            crypto: Crypto::planned(sign, encrypt.then_some(CryptoKind::Smime)),
            ..Actions::default()
        },
        ..plan.clone()
    };
    let (sign_plan, enc_plan) = (only(true, false), only(false, true));
    let msg = message(100 * 1024);
    let key = &pki.signer_rsa.key;
    let pubkey = pki.alice.cert.public_key().unwrap();

    // Several rounds in one process: this machine is noisy, so each round measures ours
    // and the floor close together, and the ratio reported is the median of the rounds.
    let mut speed_ratios = Vec::new();
    let mut local_ratios = Vec::new();
    for round in 1..=ROUNDS {
        let ours = time(RUNS, || {
            apply(&plan, "payroll@example.com", &msg, Some(&smime)).unwrap();
        });
        let sign_only = time(RUNS, || {
            apply(&sign_plan, "payroll@example.com", &msg, Some(&smime)).unwrap();
        });
        let enc_only = time(RUNS, || {
            apply(&enc_plan, "payroll@example.com", &msg, Some(&smime)).unwrap();
        });
        let sha = time(RUNS, || {
            openssl::sha::sha256(&msg);
        });
        let b64 = time(RUNS, || {
            sealgate::message::mime::encode_base64_lines(&msg);
        });
        let rsa_sign = time(RUNS, || {
            let mut s =
                openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), key).unwrap();
            s.update(b"x").unwrap();
            s.sign_to_vec().unwrap();
        });
        let rsa_pub = time(RUNS, || {
            let rsa = pubkey.rsa().unwrap();
            let mut out = vec![0u8; rsa.size() as usize];
            rsa.public_encrypt(&[7u8; 32], &mut out, openssl::rsa::Padding::PKCS1)
                .unwrap();
        });
        let aes = time(RUNS, || {
            openssl::symm::encrypt(
                openssl::symm::Cipher::aes_256_cbc(),
                &[1u8; 32],
                Some(&[2u8; 16]),
                &msg,
            )
            .unwrap();
        });
        let local_floor = rsa_sign + rsa_pub + aes;
        let local_ratio = ours.as_secs_f64() / local_floor.as_secs_f64();
        local_ratios.push(local_ratio);
        println!(
            "round {round}: sign+encrypt 100 KiB, 1 RSA-2048 recipient (median of {RUNS}): {:.3} ms \
             [sign only {:.3}, encrypt only {:.3}; SHA-256 {:.3}, base64 {:.3}]",
            ms(ours),
            ms(sign_only),
            ms(enc_only),
            ms(sha),
            ms(b64)
        );
        println!(
            "  in-process floor: RSA sign {:.3} + RSA public {:.3} + AES-256-CBC {:.3} = {:.3} ms -> ratio {local_ratio:.2}",
            ms(rsa_sign),
            ms(rsa_pub),
            ms(aes),
            ms(local_floor)
        );
        match (openssl_speed_rsa(), openssl_speed_aes()) {
            (Some((sign, verify)), Some(aes_bps)) => {
                let aes_s = msg.len() as f64 / aes_bps;
                let floor = sign + verify + aes_s;
                let ratio = ours.as_secs_f64() / floor;
                speed_ratios.push(ratio);
                println!(
                    "  openssl speed floor: rsa2048 sign {:.3} + verify {:.3} + aes-256-cbc over 100 KiB {:.3} = {:.3} ms -> ratio {ratio:.2}",
                    sign * 1e3,
                    verify * 1e3,
                    aes_s * 1e3,
                    floor * 1e3
                );
            }
            _ => println!("  openssl speed output not understood; see the in-process ratio"),
        }
    }
    if !speed_ratios.is_empty() {
        println!(
            "RATIO (ours / openssl speed floor), median of {} rounds: {:.2} (target <= 1.5)",
            speed_ratios.len(),
            median_f64(speed_ratios)
        );
    }
    println!(
        "ratio against the in-process floor, median of {ROUNDS} rounds: {:.2}",
        median_f64(local_ratios)
    );

    // Peak memory for a 25 MiB message: the peak RSS while `apply` runs, less the RSS
    // just before (which already holds the message), plus the message itself.
    let big = message(25 * 1024 * 1024);
    let size_kib = (big.len() / 1024) as i64;
    let exact = reset_peak_rss();
    let before = status_kib("VmRSS:");
    let t = Instant::now();
    let out = apply(&plan, "payroll@example.com", &big, Some(&smime)).unwrap();
    let took = t.elapsed();
    let peak = status_kib("VmHWM:");
    drop(out);
    println!(
        "25 MiB sign+encrypt: {:.2} s; peak RSS {} MiB, RSS before {} MiB (message already in memory){}",
        took.as_secs_f64(),
        peak / 1024,
        before / 1024,
        if exact {
            ""
        } else {
            " [peak could not be reset: includes earlier rounds]"
        }
    );
    println!(
        "PEAK RSS MULTIPLE (message + growth during apply) / message: {:.2}x (target < 4x); growth alone {:.2}x",
        (peak - before + size_kib) as f64 / size_kib as f64,
        (peak - before) as f64 / size_kib as f64
    );
}
