//! S/MIME sign + encrypt cost against its cryptographic floor (issue 4):
//!
//! - sealgate `apply` (sign + encrypt) of a 100 KiB message to one RSA-2048 recipient,
//!   median of many runs;
//! - the floor, measured by `openssl speed` in the same run: one RSA-2048 private-key
//!   operation (sign), one public-key operation per recipient (verify), and AES-256-CBC
//!   over the message; the same floor is also measured in-process for comparison;
//! - the ratio (target: at most 1.5);
//! - peak RSS while a 25 MiB message is signed and encrypted (target: below 4x its size).
//!
//! Run: `cargo bench --bench smime` (no criterion: a plain `main`, harness = false).

#[path = "../tests/smime_support/mod.rs"]
mod smime_support;

use std::time::{Duration, Instant};

use sealgate::transform::{apply, Plan};
use sealgate::verdict::Actions;
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

/// Resident set size now, from /proc/self/statm (pages of 4 KiB).
fn current_rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<i64>().ok())
        })
        .map_or(0, |pages| pages * 4)
}

fn peak_rss_kib() -> i64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u.ru_maxrss
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let pki = pki();
    let smime = pki.load(&pki.config());
    let plan = Plan {
        actions: Actions {
            sign: true,
            encrypt: true,
            ..Actions::default()
        },
        recipients: vec!["alice@bank.example".into()],
        notes: Vec::new(),
    };
    let msg = message(100 * 1024);
    let ours = time(200, || {
        apply(&plan, "payroll@example.com", &msg, Some(&smime)).unwrap();
    });

    let only = |sign: bool, encrypt: bool| Plan {
        actions: Actions {
            sign,
            encrypt,
            ..Actions::default()
        },
        ..plan.clone()
    };
    let (sign_plan, enc_plan) = (only(true, false), only(false, true));
    let sign_only = time(200, || {
        apply(&sign_plan, "payroll@example.com", &msg, Some(&smime)).unwrap();
    });
    let enc_only = time(200, || {
        apply(&enc_plan, "payroll@example.com", &msg, Some(&smime)).unwrap();
    });
    let sha = time(200, || {
        openssl::sha::sha256(&msg);
    });
    println!(
        "parts: sign only {:.3} ms, encrypt only {:.3} ms, one SHA-256 over the message {:.3} ms",
        sign_only.as_secs_f64() * 1e3,
        enc_only.as_secs_f64() * 1e3,
        sha.as_secs_f64() * 1e3
    );

    // The floor, in-process with the same library.
    let key = &pki.signer_rsa.key;
    let pubkey = pki.alice.cert.public_key().unwrap();
    let rsa_sign = time(200, || {
        let mut s =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), key).unwrap();
        s.update(b"x").unwrap();
        s.sign_to_vec().unwrap();
    });
    let rsa_pub = time(200, || {
        let rsa = pubkey.rsa().unwrap();
        let mut out = vec![0u8; rsa.size() as usize];
        rsa.public_encrypt(&[7u8; 32], &mut out, openssl::rsa::Padding::PKCS1)
            .unwrap();
    });
    let aes = time(200, || {
        openssl::symm::encrypt(
            openssl::symm::Cipher::aes_256_cbc(),
            &[1u8; 32],
            Some(&[2u8; 16]),
            &msg,
        )
        .unwrap();
    });
    let floor_in_process = rsa_sign + rsa_pub + aes;

    println!(
        "sign+encrypt 100 KiB, 1 RSA-2048 recipient (median of 200): {:.3} ms",
        ours.as_secs_f64() * 1e3
    );
    println!(
        "in-process floor: RSA sign {:.3} ms + RSA public {:.3} ms + AES-256-CBC {:.3} ms = {:.3} ms -> ratio {:.2}",
        rsa_sign.as_secs_f64() * 1e3,
        rsa_pub.as_secs_f64() * 1e3,
        aes.as_secs_f64() * 1e3,
        floor_in_process.as_secs_f64() * 1e3,
        ours.as_secs_f64() / floor_in_process.as_secs_f64()
    );
    match (openssl_speed_rsa(), openssl_speed_aes()) {
        (Some((sign, verify)), Some(aes_bps)) => {
            let aes_s = msg.len() as f64 / aes_bps;
            let floor = sign + verify + aes_s;
            println!(
                "openssl speed floor: rsa2048 sign {:.3} ms + verify {:.3} ms + aes-256-cbc over 100 KiB {:.3} ms = {:.3} ms",
                sign * 1e3,
                verify * 1e3,
                aes_s * 1e3,
                floor * 1e3
            );
            let ratio = ours.as_secs_f64() / floor;
            println!("RATIO (ours / openssl speed floor): {ratio:.2} (target <= 1.5)");
        }
        _ => println!("openssl speed output not understood; see the in-process ratio"),
    }

    // Peak memory for a 25 MiB message.
    let big = message(25 * 1024 * 1024);
    let before = current_rss_kib();
    let t = Instant::now();
    let out = apply(&plan, "payroll@example.com", &big, Some(&smime)).unwrap();
    let took = t.elapsed();
    let after = peak_rss_kib();
    drop(out);
    let size_kib = (big.len() / 1024) as i64;
    println!(
        "25 MiB sign+encrypt: {:.2} s; process peak RSS {} MiB, RSS just before (message already in memory) {} MiB; \
         growth during apply {:.2}x the message, peak incl. the message itself {:.2}x (target < 4x)",
        took.as_secs_f64(),
        after / 1024,
        before / 1024,
        (after - before) as f64 / size_kib as f64,
        (after - before + size_kib) as f64 / size_kib as f64
    );
}
