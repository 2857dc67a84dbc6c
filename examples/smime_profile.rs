//! Runs S/MIME sign + encrypt of a 100 KiB message to one RSA-2048 recipient N times
//! (default 50), for `valgrind --tool=callgrind` or `perf record`:
//!
//! ```text
//! cargo build --release --example smime_profile
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     target/release/examples/smime_profile 50
//! callgrind_annotate --inclusive=yes /tmp/cg.out | head -60
//! ```
//!
//! `SMIME_PROFILE=sign` or `=encrypt` runs only that step; `=quick` prints the median
//! of N `apply` runs against the in-process floor (RSA sign + RSA public + AES-256-CBC)
//! without the slow `openssl speed` runs of the bench; `=micro` times the building
//! blocks (SHA-256 from `sha2` and OpenSSL, base64 lines, AES) alone; `=stages` times
//! OpenSSL's own CMS steps.

#[path = "../tests/smime_support/mod.rs"]
mod smime_support;

use sealgate::policy::verdict::{Actions, Crypto, CryptoKind};
use sealgate::transform::{apply, Plan};

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

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let which = std::env::var("SMIME_PROFILE").unwrap_or_default();
    let pki = smime_support::pki();
    let smime = pki.load(&pki.config());
    let plan = Plan {
        actions: Actions {
            crypto: Crypto::planned(
                which != "encrypt",
                (which != "sign").then_some(CryptoKind::Smime),
            ),
            ..Actions::default()
        },
        recipients: vec!["alice@bank.example".into()],
        notes: Vec::new(),
    };
    let msg = message(100 * 1024);
    if let Some(step) = which.strip_prefix("loop-") {
        loop_step(&pki, &msg, step, runs);
        return;
    }
    if which == "micro" {
        micro(&msg);
        return;
    }
    if which == "quick" {
        let t = med(runs, || {
            apply(&plan, "payroll@example.com", &msg, Some(&smime)).unwrap();
        });
        let key = &pki.signer_rsa.key;
        let rsa = pki.alice.cert.public_key().unwrap().rsa().unwrap();
        let floor = med(runs, || {
            let mut s =
                openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), key).unwrap();
            s.update(b"x").unwrap();
            s.sign_to_vec().unwrap();
        }) + med(runs, || {
            let mut out = vec![0u8; rsa.size() as usize];
            rsa.public_encrypt(&[7u8; 32], &mut out, openssl::rsa::Padding::PKCS1)
                .unwrap();
        }) + med(runs, || {
            openssl::symm::encrypt(
                openssl::symm::Cipher::aes_256_cbc(),
                &[1u8; 32],
                Some(&[2u8; 16]),
                &msg,
            )
            .unwrap();
        });
        println!(
            "apply {t:.4} ms, in-process floor {floor:.4} ms, ratio {:.3}",
            t / floor
        );
        return;
    }
    if which == "stages" {
        stages(&pki, &msg);
        return;
    }
    let mut total = 0usize;
    for _ in 0..runs {
        let out = apply(&plan, "payroll@example.com", &msg, Some(&smime)).unwrap();
        total += out.message.len();
    }
    println!("{runs} runs, {total} bytes out");
}

fn med<F: FnMut()>(n: usize, mut f: F) -> f64 {
    f();
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[n / 2]
}

/// The steps `sign_entity`/`encrypt_entity` go through, each timed alone (median ms).
fn stages(pki: &smime_support::Pki, msg: &[u8]) {
    use openssl::cms::{CMSOptions, CmsContentInfo};
    let n = 300;
    let s = &pki.signer_rsa;
    let mut chain = openssl::stack::Stack::new().unwrap();
    chain.push(pki.ca.clone()).unwrap();
    let flags = CMSOptions::BINARY | CMSOptions::DETACHED;
    let sign = || {
        CmsContentInfo::sign(Some(&s.cert), Some(&s.key), Some(&chain), Some(msg), flags).unwrap()
    };
    let cms = sign();
    let der = cms.to_der().unwrap();
    println!(
        "CMS_sign (detached, chain)    {:.3}",
        med(n, || drop(sign()))
    );
    println!(
        "i2d signed-data               {:.3}",
        med(n, || drop(cms.to_der().unwrap()))
    );
    println!(
        "d2i signed-data               {:.3}",
        med(n, || drop(CmsContentInfo::from_der(&der).unwrap()))
    );
    let vf = CMSOptions::BINARY | CMSOptions::NO_SIGNER_CERT_VERIFY;
    println!(
        "CMS_verify (parsed once)      {:.3}",
        med(n, || {
            let mut c = CmsContentInfo::from_der(&der).unwrap();
            c.verify(None, None, Some(msg), None, vf).unwrap();
        })
    );
    println!(
        "sha256 over message           {:.3}",
        med(n, || {
            std::hint::black_box(openssl::sha::sha256(msg));
        })
    );
    let rsa_sign = || {
        let mut sg =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &s.key).unwrap();
        sg.update(b"x").unwrap();
        sg.sign_to_vec().unwrap()
    };
    println!(
        "RSA-2048 sign                 {:.3}",
        med(n, || drop(rsa_sign()))
    );
    let mut recips = openssl::stack::Stack::new().unwrap();
    recips.push(pki.alice.cert.clone()).unwrap();
    let aes = openssl::symm::Cipher::aes_256_cbc();
    let enc = || CmsContentInfo::encrypt(&recips, msg, aes, CMSOptions::BINARY).unwrap();
    let e = enc();
    let eder = e.to_der().unwrap();
    println!(
        "CMS_encrypt                   {:.3}",
        med(n, || drop(enc()))
    );
    println!(
        "i2d enveloped-data            {:.3}",
        med(n, || drop(e.to_der().unwrap()))
    );
    println!(
        "d2i enveloped-data            {:.3}",
        med(n, || drop(CmsContentInfo::from_der(&eder).unwrap()))
    );
    println!(
        "base64 lines (enveloped)      {:.3}",
        med(n, || drop(sealgate::message::mime::encode_base64_lines(
            &eder
        )))
    );
    println!(
        "canonical_crlf                {:.3}",
        med(n, || drop(sealgate::message::mime::canonical_crlf(msg)))
    );
    println!(
        "fresh_boundary                {:.3}",
        med(n, || drop(sealgate::message::mime::fresh_boundary(
            "----sealgate-signed",
            msg
        )))
    );
}

/// One raw OpenSSL step in a loop, for `perf record`.
fn loop_step(pki: &smime_support::Pki, msg: &[u8], step: &str, runs: usize) {
    use openssl::cms::{CMSOptions, CmsContentInfo};
    let s = &pki.signer_rsa;
    let mut chain = openssl::stack::Stack::new().unwrap();
    chain.push(pki.ca.clone()).unwrap();
    let mut recips = openssl::stack::Stack::new().unwrap();
    recips.push(pki.alice.cert.clone()).unwrap();
    for _ in 0..runs {
        match step {
            "sign" => drop(
                CmsContentInfo::sign(
                    Some(&s.cert),
                    Some(&s.key),
                    Some(&chain),
                    Some(msg),
                    CMSOptions::BINARY | CMSOptions::DETACHED,
                )
                .unwrap(),
            ),
            "encrypt" => drop(
                CmsContentInfo::encrypt(
                    &recips,
                    msg,
                    openssl::symm::Cipher::aes_256_cbc(),
                    CMSOptions::BINARY,
                )
                .unwrap(),
            ),
            _ => panic!("unknown step"),
        }
    }
}

/// The building blocks alone, median ms of 2000 runs each.
fn micro(msg: &[u8]) {
    use sha2::Digest;
    let n = 2000;
    println!(
        "sha2 crate        {:.4}",
        med(n, || {
            std::hint::black_box(sha2::Sha256::digest(msg));
        })
    );
    println!(
        "openssl sha       {:.4}",
        med(n, || {
            std::hint::black_box(openssl::sha::sha256(msg));
        })
    );
    println!(
        "lut base64 lines  {:.4}",
        med(n, || {
            std::hint::black_box(sealgate::message::mime::encode_base64_lines(msg));
        })
    );
    use base64::Engine;
    let mut buf = vec![0u8; msg.len() * 4 / 3 + 8];
    println!(
        "base64 crate slice {:.4}",
        med(n, || {
            std::hint::black_box(
                base64::engine::general_purpose::STANDARD
                    .encode_slice(msg, &mut buf)
                    .unwrap(),
            );
        })
    );
    let v = msg.to_vec();
    println!(
        "memcpy 100k       {:.4}",
        med(n, || {
            std::hint::black_box(v.clone());
        })
    );
    let mut out = vec![0u8; msg.len() + 32];
    println!(
        "aes-cbc crypter   {:.4}",
        med(n, || {
            let mut c = openssl::symm::Crypter::new(
                openssl::symm::Cipher::aes_256_cbc(),
                openssl::symm::Mode::Encrypt,
                &[1u8; 32],
                Some(&[2u8; 16]),
            )
            .unwrap();
            let k = c.update(msg, &mut out).unwrap();
            c.finalize(&mut out[k..]).unwrap();
        })
    );
}
