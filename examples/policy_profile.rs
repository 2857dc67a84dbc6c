//! Runs `judge_message` on the policy benchmark's set (500 rules, 10,000 allow entries) and
//! 100 KiB message N times (default 200), for `valgrind --tool=callgrind` or `perf record`:
//!
//! ```text
//! cargo build --release --example policy_profile
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     target/release/examples/policy_profile 200
//! callgrind_annotate --inclusive=yes /tmp/cg.out | head -60
//! ```
//!
//! `POLICY_PROFILE=stages` instead prints p50/p99 of the stages the engine pays for
//! (mail-parser alone, mail-parser + HTML to text, the whole judge_message);
//! `POLICY_PROFILE=dump` prints judge_message's verdicts and explain (text and JSON) for
//! the benchmark message and for each `*.eml` given after N, to compare before/after a change.

#[path = "../benches/policy_data/mod.rs"]
mod policy_data;

use sealgate::policy::{Envelope, PolicySet};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn percentiles(mut runs: Vec<Duration>) -> String {
    runs.sort();
    let at = |p: f64| runs[((runs.len() as f64 - 1.0) * p).round() as usize];
    format!("p50 {:?} p99 {:?}", at(0.5), at(0.99))
}

fn time(n: usize, mut f: impl FnMut()) -> String {
    let runs = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    percentiles(runs)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    let set = PolicySet::from_sources(&policy_data::policy_files()).expect("benchmark policy");
    let msg = policy_data::message();
    let rcpts = vec!["a@bank.example".to_owned(), "b@partner7.example".to_owned()];
    let env = Envelope {
        client: "local",
        from: "payroll@example.com",
    };
    match std::env::var("POLICY_PROFILE").as_deref() {
        Ok("dump") => {
            let mut inputs = vec![("bench".to_owned(), msg)];
            for path in args.iter().skip(2) {
                inputs.push((path.clone(), std::fs::read(path).expect("readable .eml")));
            }
            for (name, m) in inputs {
                println!("=== {name}");
                println!("{:#?}", set.judge_message(&env, &rcpts, &m));
                let e = set.explain(&env, &rcpts, &m);
                println!("{e}");
                println!("{}", serde_json::to_string_pretty(&e).expect("json"));
            }
        }
        Ok("stages") => {
            let parser = mail_parser::MessageParser::default();
            println!(
                "mail-parser parse:          {}",
                time(n, || {
                    black_box(parser.parse(black_box(&msg[..])));
                })
            );
            println!(
                "parse + html_to_text:       {}",
                time(n, || {
                    if let Some(m) = parser.parse(black_box(&msg[..])) {
                        for p in &m.parts {
                            if let mail_parser::PartType::Html(h) = &p.body {
                                black_box(mail_parser::decoders::html::html_to_text(h));
                            }
                        }
                    }
                })
            );
            println!(
                "judge_message:              {}",
                time(n, || {
                    black_box(set.judge_message(&env, &rcpts, black_box(&msg)));
                })
            );
        }
        _ => {
            for _ in 0..n {
                black_box(set.judge_message(&env, &rcpts, black_box(&msg)));
            }
        }
    }
}
