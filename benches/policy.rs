//! Policy engine benchmark: 500 rules and 10,000 allow entries against a 100 KiB message
//! with attachments. Targets (issue 3): judge_message p99 < 1 ms, loading the set < 50 ms.
//!
//! Run: `cargo bench --bench policy`. Besides criterion's means, the benchmark prints
//! measured p50/p99 of judge_message over 2,000 single runs.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sealgate::policy::{Envelope, PolicySet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

const DETECTORS: [&str; 8] = [
    "credit-card",
    "iban",
    "us-ssn",
    "email-address",
    "private-key",
    "aws-access-key",
    "uk-nino",
    "github-token",
];

/// 10,000 allow entries (domains, subdomain wildcards, addresses), 500 deny, 500 rules of
/// every kind of condition.
fn policy_files() -> Vec<(String, String)> {
    let mut r = String::from("[recipients]\nallow = [\n");
    for i in 0..10_000 {
        match i % 3 {
            0 => writeln!(r, "  \"partner{i}.example\",").unwrap(),
            1 => writeln!(r, "  \"*.division{i}.example.com\",").unwrap(),
            _ => writeln!(r, "  \"person{i}@clients.example.net\",").unwrap(),
        }
    }
    r.push_str("  \"bank.example\",\n]\ndeny = [\n");
    for i in 0..500 {
        writeln!(r, "  \"blocked{i}@partner3.example\",").unwrap();
    }
    r.push_str("]\n");

    let mut rules = String::new();
    for i in 0..500 {
        writeln!(rules, "[[rule]]\nname = \"rule {i}\"").unwrap();
        match i % 10 {
            0 => writeln!(
                rules,
                "from = [\"app{i}@example.com\", \"*@dept{i}.example.com\"]"
            ),
            1 => writeln!(rules, "to = [\"*@partner{i}.example\"]"),
            2 => writeln!(rules, "subject = [\"(?i)invoice {i}\\\\b\"]"),
            3 => writeln!(rules, "header = [\"X-Mailer: (?i)system{i}\"]"),
            4 => writeln!(
                rules,
                "body = [\"(?i)project codename {i}\\\\b\", \"ref-{i}-[0-9]{{6}}\"]"
            ),
            5 => writeln!(
                rules,
                "body = [\"builtin:{}\"]",
                DETECTORS[(i / 10) % DETECTORS.len()]
            ),
            6 => writeln!(
                rules,
                "attachment_name = [\"*.ext{i}\", \"report-{i}-*.pdf\"]"
            ),
            7 => writeln!(rules, "attachment_type = [\"application/x-type{i}\"]"),
            8 => writeln!(rules, "size_over = \"{}MiB\"", 1 + i % 20),
            _ => writeln!(rules, "client = [\"app{i}\"]\nto = [\"*@bank.example\"]"),
        }
        .unwrap();
        let action = ["sign", "encrypt", "zip-attachments", "strip-attachments"][i % 4];
        writeln!(rules, "actions = [\"{action}\"]\n").unwrap();
    }
    vec![
        ("policies/00-recipients.toml".into(), r),
        ("policies/50-rules.toml".into(), rules),
    ]
}

/// About 100 KiB: text and html parts with prose, a card number, and two base64 attachments.
fn message() -> Vec<u8> {
    let mut m = String::from(
        "From: payroll@example.com\r\nTo: a@bank.example, b@partner7.example\r\nSubject: Invoice 42 for November\r\nX-Mailer: PayrollSuite 7.1\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: multipart/alternative; boundary=\"b2\"\r\n\r\n--b2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
    );
    let para = "Dear customer, please find the figures for the period attached. The total is 12,345.67 EUR, due within 30 days. Contact accounting@example.com with questions.\r\n";
    for _ in 0..170 {
        m.push_str(para);
    }
    m.push_str("Card on file: 4111 1111 1111 1111\r\n--b2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body>");
    for _ in 0..170 {
        m.push_str("<p>");
        m.push_str(para);
        m.push_str("</p>");
    }
    m.push_str("</body></html>\r\n--b2--\r\n");
    for (name, ty) in [
        ("report.pdf", "application/pdf"),
        ("data.xlsx", "application/vnd.ms-excel"),
    ] {
        write!(m, "--b1\r\nContent-Type: {ty}; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n").unwrap();
        for i in 0..300 {
            let line: String = (0..76)
                .map(|j| (b'A' + ((i * 7 + j) % 26) as u8) as char)
                .collect();
            m.push_str(&line);
            m.push_str("\r\n");
        }
    }
    m.push_str("--b1--\r\n");
    m.into_bytes()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn bench(c: &mut Criterion) {
    let files = policy_files();
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("policies");
    std::fs::create_dir(&pdir).unwrap();
    for (name, text) in &files {
        std::fs::write(pdir.join(name.trim_start_matches("policies/")), text).unwrap();
    }
    let set = PolicySet::load(&pdir).unwrap();
    assert_eq!(set.rule_count(), 500);
    let msg = message();
    let rcpts = vec!["a@bank.example".to_owned(), "b@partner7.example".to_owned()];
    let env = Envelope {
        client: "local",
        from: "payroll@example.com",
    };

    // Explicit percentiles, as the targets are stated as p99.
    let mut runs = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let t = Instant::now();
        black_box(set.judge_message(&env, &rcpts, black_box(&msg)));
        runs.push(t.elapsed());
    }
    runs.sort();
    let mut loads = Vec::with_capacity(50);
    for _ in 0..50 {
        let t = Instant::now();
        black_box(PolicySet::load(&pdir).unwrap());
        loads.push(t.elapsed());
    }
    loads.sort();
    println!(
        "message {} bytes, 500 rules, 10,000 allow entries, 2 recipients\njudge_message p50 {:?} p99 {:?} max {:?}\nload p50 {:?} p99 {:?} max {:?}",
        msg.len(),
        percentile(&runs, 0.5),
        percentile(&runs, 0.99),
        runs[runs.len() - 1],
        percentile(&loads, 0.5),
        percentile(&loads, 0.99),
        loads[loads.len() - 1],
    );

    c.bench_function("judge_message 500 rules, 100 KiB", |b| {
        b.iter(|| set.judge_message(&env, &rcpts, black_box(&msg)))
    });
    c.bench_function("judge_rcpt 10k allow entries", |b| {
        b.iter(|| set.judge_rcpt(&env, black_box("person9998@clients.example.net"), &|_| true))
    });
    c.bench_function("explain 500 rules, 100 KiB", |b| {
        b.iter(|| set.explain(&env, &rcpts, black_box(&msg)))
    });
    let mut g = c.benchmark_group("load");
    g.sample_size(20);
    g.bench_function("load 500 rules + 10k entries from disk", |b| {
        b.iter(|| PolicySet::load(black_box(&pdir)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
