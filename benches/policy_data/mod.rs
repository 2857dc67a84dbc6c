//! The benchmark's inputs, shared by `benches/policy.rs` and `examples/policy_profile.rs`
//! (so that profiles measure exactly what the benchmark measures).

use std::fmt::Write as _;

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
pub fn policy_files() -> Vec<(String, String)> {
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
pub fn message() -> Vec<u8> {
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
