//! Unit tests of the policy set: loading errors with positions, RCPT and DATA decisions.

use super::*;

fn set(files: &[(&str, &str)]) -> Result<PolicySet, PolicyError> {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(n, t)| (format!("policies/{n}"), (*t).to_owned()))
        .collect();
    PolicySet::from_sources(&files)
}

fn ok(files: &[(&str, &str)]) -> PolicySet {
    match set(files) {
        Ok(s) => s,
        Err(e) => panic!("policy did not load:\n{e}"),
    }
}

fn errors(files: &[(&str, &str)]) -> Vec<String> {
    match set(files) {
        Ok(_) => panic!("policy loaded but should not"),
        Err(e) => e.errors().map(|d| d.to_string()).collect(),
    }
}

const RCPTS: &str = "[recipients]\nallow = [\"example.com\", \"*.example.com\", \"bank.example\"]\ndeny = [\"ceo@example.com\"]\n";
const ENV: Envelope<'static> = Envelope {
    client: "local",
    from: "payroll@example.com",
};

fn msg(subject: &str, body: &str) -> Vec<u8> {
    format!("From: payroll@example.com\r\nTo: a@bank.example\r\nSubject: {subject}\r\nX-Mailer: BillingSystem 4.2\r\n\r\n{body}\r\n").into_bytes()
}

fn verdict(s: &PolicySet, rcpt: &str, m: &[u8]) -> RecipientVerdict {
    s.judge_message(&ENV, &[rcpt.to_owned()], m).remove(0)
}

fn zips(a: &Actions) -> bool {
    matches!(a.attachments, Attachments::Zip { .. })
}

fn accepted(v: &RecipientVerdict) -> &Actions {
    match v {
        RecipientVerdict::Accept { actions, .. } => actions,
        RecipientVerdict::Reject { reason, by } => panic!("rejected: {reason} ({by})"),
    }
}

#[test]
fn policy_set_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<PolicySet>();
}

#[test]
fn missing_recipients_is_an_error_that_says_what_to_write() {
    let e = errors(&[(
        "50-rules.toml",
        "[[rule]]\nname = \"x\"\nactions = [\"sign\"]\n",
    )]);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("policies/50-rules.toml:1:1: no policy file has a [recipients] table"),
        "{e:?}"
    );
    assert!(e[0].contains("allow = [\"*\"]"));
    let e = errors(&[("00.toml", "[recipients]\nallow = []\n")]);
    assert!(
        e[0].starts_with("policies/00.toml:1:2: [recipients] approves no recipient"),
        "{e:?}"
    );
}

#[test]
fn errors_point_at_the_item_and_all_are_collected() {
    let rules = r#"[[rule]]
name = "a"
attachment-name = ["*.exe"]
actions = ["encrpyt"]

[[rule]]
name = "b"
body = ["(unclosed", "builtin:credit-crad"]
subject = ["ok", "[z-a]"]
attachment_name = ["*.[ex]e"]
attachment_type = ["exe"]
size_over = "10 megs"
actions = ["strip-attachments"]

[[rule]]
actions = ["sign"]
"#;
    let e = errors(&[("00.toml", RCPTS), ("50.toml", rules)]);
    let expect = [
        "policies/50.toml:3:1: rule \"a\": unknown key `attachment-name` (did you mean `attachment_name`?)",
        "policies/50.toml:4:12: rule \"a\": unknown action \"encrpyt\" (did you mean \"encrypt\"?)",
        "policies/50.toml:8:9: rule \"b\": body: invalid regex \"(unclosed\": unclosed group",
        "policies/50.toml:8:22: rule \"b\": body: unknown detector \"builtin:credit-crad\" (did you mean \"builtin:credit-card\"?)",
        "policies/50.toml:9:18: rule \"b\": subject: invalid regex \"[z-a]\"",
        "policies/50.toml:10:20: rule \"b\": attachment_name: pattern \"*.[ex]e\" contains '['",
        "policies/50.toml:11:20: rule \"b\": attachment_type: \"exe\" is not a MIME type pattern",
        "policies/50.toml:12:13: rule \"b\": size_over: \"10 megs\": unknown unit \"megs\"",
        "policies/50.toml:15:1: [[rule]] without `name`",
    ];
    for want in expect {
        assert!(
            e.iter().any(|got| got.starts_with(want)),
            "missing {want:?} in\n{}",
            e.join("\n")
        );
    }
    assert_eq!(e.len(), expect.len(), "{}", e.join("\n"));
}

#[test]
fn errors_in_several_files_are_all_reported() {
    let e = errors(&[
        (
            "00.toml",
            "[recipients]\nallow = [\"exa mple.com\"]\nallwo = []\n",
        ),
        (
            "10.toml",
            "[[rule]]\nname = \"x\"\nactions = [\"sign\"]\nfoo = 1\n",
        ),
        ("20.toml", "[[rule]\nname = 1\n"),
    ]);
    assert!(
        e.iter()
            .any(|l| l
                .starts_with("policies/00.toml:2:10: [recipients] allow: entry \"exa mple.com\"")),
        "{e:?}"
    );
    assert!(
        e.iter().any(|l| l.starts_with(
            "policies/00.toml:3:1: [recipients]: unknown key `allwo` (did you mean `allow`?)"
        )),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|l| l.starts_with("policies/10.toml:4:1: rule \"x\": unknown key `foo`")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|l| l.starts_with("policies/20.toml:1:") && l.contains("TOML syntax error")),
        "{e:?}"
    );
}

#[test]
fn action_options_must_fit_their_action() {
    let rules = r#"[[rule]]
name = "m"
message = "no"
if_no_certificate = "zip-attachments"
password_to = "sec@example.com"
actions = ["sign"]

[[rule]]
name = "both"
actions = ["strip-attachments", "zip-attachments"]

[[rule]]
name = "crlf"
actions = ["reject"]
message = "bad\r\n250 ok"

[[rule]]
name = "crlf"
actions = ["sign"]
"#;
    let e = errors(&[("00.toml", RCPTS), ("50.toml", rules)]);
    let joined = e.join("\n");
    assert!(
        joined.contains(
            "50.toml:3:11: rule \"m\": `message` is only used with the \"reject\" action"
        ),
        "{joined}"
    );
    assert!(joined.contains("50.toml:4:21: rule \"m\": `if_no_certificate` is only used with the \"encrypt\" action"), "{joined}");
    assert!(
        joined.contains(
            "50.toml:5:15: rule \"m\": `password_to` is only used with \"zip-attachments\""
        ),
        "{joined}"
    );
    assert!(
        joined.contains("rule \"both\": \"strip-attachments\" and \"zip-attachments\" contradict"),
        "{joined}"
    );
    assert!(
        joined.contains(
            "50.toml:15:11: rule \"crlf\": `message` must be one line of printable ASCII"
        ),
        "{joined}"
    );
    assert!(
        joined.contains(
            "50.toml:18:8: rule name \"crlf\" is used twice in this file (first on line 13)"
        ),
        "{joined}"
    );
}

#[test]
fn warnings_for_rules_that_never_match_or_are_shadowed() {
    let rules = r#"[[rule]]
name = "no mail to the competitor"
to = ["*@competitor.example"]
actions = ["encrypt"]

[[rule]]
name = "empty"
from = []
actions = ["sign"]

[[rule]]
name = "block exe"
attachment_name = ["*.exe"]
actions = ["reject"]
message = "executables are not allowed"

[[rule]]
name = "zip exe"
attachment_name = ["*.exe"]
from = ["*@example.com"]
actions = ["zip-attachments"]
"#;
    let s = ok(&[("00.toml", RCPTS), ("50.toml", rules)]);
    let w: Vec<String> = s.warnings().iter().map(|d| d.to_string()).collect();
    let joined = w.join("\n");
    assert!(joined.contains("policies/50.toml:2:8: warning: rule \"no mail to the competitor\": `to` entry \"*@competitor.example\" can never match"), "{joined}");
    assert!(
        joined.contains("policies/50.toml:8:1: warning: rule \"empty\": `from` is an empty list"),
        "{joined}"
    );
    assert!(joined.contains("policies/50.toml:18:8: warning: rule \"zip exe\" never has an effect: rule \"block exe\" in policies/50.toml rejects"), "{joined}");
    assert_eq!(w.len(), 3, "{joined}");
}

#[test]
fn patterns_that_match_every_message_are_warned_about() {
    let rules = r#"
[[rule]]
name = "oops"
body = ["", "(?i)secret"]
subject = [".*"]
actions = ["encrypt"]

[[rule]]
name = "fine"
subject = ["^$", "\\bx*\\b"]
actions = ["sign"]
"#;
    let s = ok(&[("00.toml", RCPTS), ("50.toml", rules)]);
    let w: Vec<String> = s.warnings().iter().map(|d| d.to_string()).collect();
    let joined = w.join(
        "
",
    );
    assert!(
        joined.contains(r#"policies/50.toml:4:9: warning: rule "oops": body: pattern "" matches an empty text, so it matches every message"#),
        "{joined}"
    );
    assert!(
        joined.contains(r#"subject: pattern ".*" matches"#),
        "{joined}"
    );
    assert_eq!(w.len(), 2, "{joined}");
}

#[test]
fn recipients_allow_deny_and_rcpt_time_rules() {
    let rules = r#"[[rule]]
name = "no mail from the test account"
from = ["test@example.com"]
actions = ["reject"]
message = "the test account may not send"

[[rule]]
name = "bank needs encryption"
to = ["*@bank.example"]
actions = ["sign", "encrypt"]

[[rule]]
name = "content rule waits for DATA"
body = ["secret"]
actions = ["reject"]
"#;
    let s = ok(&[("00-recipients.toml", RCPTS), ("50-rules.toml", rules)]);
    let yes = |_: &str| true;
    let no = |_: &str| false;
    assert_eq!(s.judge_rcpt(&ENV, "<bob@Example.COM>", &no), Ok(()));
    assert_eq!(s.judge_rcpt(&ENV, "bob@eu.example.com", &no), Ok(()));
    let r = s.judge_rcpt(&ENV, "x@evil.example", &yes).unwrap_err();
    assert_eq!(r.reason, "recipient not approved");
    assert_eq!(r.by.to_string(), "policies/00-recipients.toml");
    let r = s.judge_rcpt(&ENV, "CEO@example.com", &yes).unwrap_err();
    assert_eq!(r.reason, "recipient denied by \"ceo@example.com\"");
    let test = Envelope {
        client: "local",
        from: "<test@example.com>",
    };
    let r = s.judge_rcpt(&test, "bob@example.com", &yes).unwrap_err();
    assert_eq!(r.reason, "the test account may not send");
    assert_eq!(
        r.by.to_string(),
        "rule \"no mail from the test account\" in policies/50-rules.toml"
    );
    assert_eq!(s.judge_rcpt(&ENV, "a@bank.example", &yes), Ok(()));
    let r = s.judge_rcpt(&ENV, "a@bank.example", &no).unwrap_err();
    assert!(r.reason.contains("no S/MIME certificate"), "{}", r.reason);
    assert_eq!(r.by.rule, "bank needs encryption");
}

#[test]
fn every_matching_rule_contributes_and_reject_wins() {
    let rules = r#"[[rule]]
name = "sign all"
actions = ["sign"]

[[rule]]
name = "cards"
body = ["builtin:credit-card"]
actions = ["encrypt"]
if_no_certificate = "zip-attachments"
password_to = "security@example.com"

[[rule]]
name = "bank"
to = ["*@bank.example"]
actions = ["encrypt"]
if_no_certificate = "strip-attachments"

[[rule]]
name = "stop word"
subject = ["(?i)do not send"]
actions = ["reject"]
"#;
    let s = ok(&[("00.toml", RCPTS), ("50.toml", rules)]);
    let m = msg("Card", "number 4111 1111 1111 1111");
    let v = s.judge_message(
        &ENV,
        &[
            "a@bank.example".into(),
            "b@example.com".into(),
            "x@other.example".into(),
        ],
        &m,
    );
    let a = accepted(&v[0]);
    assert!(a.signs() && a.encrypts());
    assert_eq!(
        a.if_no_certificate(),
        Some(NoCertFallback::StripAttachments)
    );
    // The strip fallback wins, so no zip password goes anywhere (the old flags kept
    // `password_to` here although nothing could be zipped).
    assert_eq!(a.password_to(), None);
    if let RecipientVerdict::Accept { rules, .. } = &v[0] {
        let names: Vec<&str> = rules.iter().map(|r| r.rule.as_str()).collect();
        assert_eq!(names, ["sign all", "cards", "bank"]);
    }
    let b = accepted(&v[1]);
    assert_eq!(b.if_no_certificate(), Some(NoCertFallback::ZipAttachments));
    assert_eq!(b.password_to(), Some("security@example.com"));
    assert!(
        matches!(&v[2], RecipientVerdict::Reject { reason, .. } if reason == "recipient not approved")
    );

    let m = msg("Please do NOT send", "hello");
    match verdict(&s, "b@example.com", &m) {
        RecipientVerdict::Reject { reason, by } => {
            assert_eq!(reason, "refused by policy");
            assert_eq!(by.rule, "stop word");
        }
        other => panic!("{other:?}"),
    }
    // No conditions: a rule matches every message.
    let a = accepted(&verdict(&s, "b@example.com", &msg("hi", "plain"))).clone();
    assert!(a.signs() && !a.encrypts());
}

#[test]
fn strip_wins_over_zip() {
    let rules = "[[rule]]\nname = \"z\"\nactions = [\"zip-attachments\"]\n[[rule]]\nname = \"s\"\nattachment_name = [\"*.exe\"]\nactions = [\"strip-attachments\"]\n";
    let s = ok(&[("00.toml", RCPTS), ("50.toml", rules)]);
    let m = b"Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"Setup.EXE\"\r\n\r\nMZ\r\n--b--\r\n";
    let a = accepted(&verdict(&s, "b@example.com", m)).clone();
    assert_eq!(a.attachments, Attachments::Strip);
    let a = accepted(&verdict(&s, "b@example.com", &msg("x", "y"))).clone();
    assert_eq!(a.attachments, Attachments::Zip { password_to: None });
}

#[test]
fn header_client_and_size_conditions() {
    let rules = r#"[[rule]]
name = "billing app"
client = ["billing"]
header = ["X-Mailer: (?i)^billingsystem"]
actions = ["sign"]

[[rule]]
name = "big"
size_over = "1KiB"
actions = ["zip-attachments"]
"#;
    let s = ok(&[("00.toml", RCPTS), ("50.toml", rules)]);
    let billing = Envelope {
        client: "billing",
        from: "payroll@example.com",
    };
    let small = msg("x", "y");
    let v = s.judge_message(&billing, &["b@example.com".into()], &small);
    assert!(accepted(&v[0]).signs());
    let v = s.judge_message(&ENV, &["b@example.com".into()], &small);
    assert!(accepted(&v[0]).is_pass_through());
    let big = msg("x", &"y".repeat(2000));
    assert!(zips(accepted(&verdict(&s, "b@example.com", &big))));
    let diags = s.check_clients(&["reports"]);
    assert_eq!(diags.len(), 1);
    assert!(
        diags[0].to_string().starts_with(
            "policies/50.toml:3:11: rule \"billing app\": client \"billing\" is not a [[client]]"
        ),
        "{}",
        diags[0]
    );
    assert!(s.check_clients(&["billing"]).is_empty());
    // That rule signs: without [smime] in the configuration, check warns and names it.
    let smime = s.check_smime(false);
    assert_eq!(smime.len(), 1);
    assert!(
        smime[0].to_string().contains(
            "rule \"billing app\" says sign but the configuration has no [smime] section"
        ),
        "{}",
        smime[0]
    );
    assert_eq!(smime[0].severity, Severity::Warning);
    assert!(s.check_smime(true).is_empty());
}

#[test]
fn explain_shows_evidence_with_redacted_hits() {
    let rules = r#"[[rule]]
name = "payroll"
from = ["payroll@*"]
to = ["*@bank.example"]
body = ["builtin:credit-card"]
actions = ["sign", "encrypt"]
"#;
    let s = ok(&[("00.toml", RCPTS), ("50.toml", rules)]);
    let m = msg("Pay", "card 4111 1111 1111 1111 thanks");
    let e = s.explain(
        &ENV,
        &["a@bank.example".into(), "ceo@example.com".into()],
        &m,
    );
    let text = e.to_string();
    assert!(
        text.contains("matched rule \"payroll\" in policies/50.toml"),
        "{text}"
    );
    assert!(
        text.contains("body: \"builtin:credit-card\" matched \"4111 **** **** 1111\" in text part"),
        "{text}"
    );
    assert!(
        text.contains("to: \"*@bank.example\" matched \"a@bank.example\""),
        "{text}"
    );
    assert!(
        text.contains("verdict: accept, then sign, encrypt (if no certificate: reject)"),
        "{text}"
    );
    assert!(
        text.contains("denied by \"ceo@example.com\" in policies/00.toml"),
        "{text}"
    );
    assert!(!text.contains("4111 1111 1111 1111"), "{text}");
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["recipients"][0]["verdict"]["verdict"], "accept");
    assert_eq!(
        json["recipients"][0]["matched_rules"][0]["evidence"][2]["matched"],
        "4111 **** **** 1111"
    );
    assert_eq!(json["recipients"][1]["approval"]["outcome"], "denied");
    assert_eq!(json["policy_version"].as_str().unwrap().len(), 12);
    // explain and judge agree.
    let v = s.judge_message(
        &ENV,
        &["a@bank.example".into(), "ceo@example.com".into()],
        &m,
    );
    let ev: Vec<_> = e.recipients.iter().map(|r| r.verdict.clone()).collect();
    assert_eq!(v, ev);
}

#[test]
fn version_changes_with_content() {
    let a = ok(&[("00.toml", RCPTS)]);
    let b = ok(&[("00.toml", "[recipients]\nallow = [\"*\"]\n")]);
    assert_ne!(a.version(), b.version());
    assert_eq!(a.version(), ok(&[("00.toml", RCPTS)]).version());
}

#[test]
fn load_reads_directory_in_name_order() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policies");
    std::fs::create_dir(&p).unwrap();
    std::fs::write(
        p.join("50-rules.toml"),
        "[[rule]]\nname = \"r\"\nactions = [\"sign\"]\n",
    )
    .unwrap();
    std::fs::write(p.join("00-recipients.toml"), RCPTS).unwrap();
    std::fs::write(p.join(".#50-rules.toml"), "garbage [").unwrap();
    std::fs::write(p.join("README"), "not toml").unwrap();
    let s = PolicySet::load(&p).unwrap();
    assert_eq!(
        s.files(),
        ["policies/00-recipients.toml", "policies/50-rules.toml"]
    );
    assert_eq!(s.rule_count(), 1);
    // A Latin-1 file name that is no policy file is none of our business.
    let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9.bak");
    std::fs::write(p.join(latin1), "x").unwrap();
    assert!(PolicySet::load(&p).is_ok());
    // A policy file that cannot be read is an error, not silently skipped.
    std::os::unix::fs::symlink(p.join("gone.toml"), p.join("70-x.toml")).unwrap();
    let e = PolicySet::load(&p).unwrap_err().to_string();
    assert!(e.contains("policies/70-x.toml:1:1: cannot read"), "{e}");
    std::fs::remove_file(p.join("70-x.toml")).unwrap();
    // Bytes that are not UTF-8: their line and column.
    std::fs::write(p.join("60-bad.toml"), b"# ok\n# caf\xe9\n").unwrap();
    let e = PolicySet::load(&p).unwrap_err().to_string();
    assert!(e.contains("policies/60-bad.toml:2:6: not UTF-8"), "{e}");
    std::fs::remove_file(p.join("60-bad.toml")).unwrap();

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = PolicySet::load(&empty).unwrap_err();
    assert!(
        e.to_string().starts_with("empty:1:1: no policy files"),
        "{e}"
    );
}

/// With no subject/header/body/attachment rule the message is not parsed for judging;
/// size, envelope and recipient rules decide exactly as with a parsed message.
#[test]
fn content_free_sets_judge_without_parsing_and_agree_with_explain() {
    let rules = r#"[[rule]]
name = "big"
size_over = "1KiB"
actions = ["zip-attachments"]

[[rule]]
name = "bank"
to = ["*@bank.example"]
actions = ["sign"]
"#;
    let s = ok(&[("00.toml", RCPTS), ("50.toml", rules)]);
    assert!(!s.needs_parse);
    let rcpts = vec!["a@bank.example".to_owned(), "b@example.com".to_owned()];
    for m in [msg("x", "y"), msg("x", &"y".repeat(2000)), b"\xff".to_vec()] {
        let judged = s.judge_message(&ENV, &rcpts, &m);
        let explained: Vec<RecipientVerdict> = s
            .explain(&ENV, &rcpts, &m)
            .recipients
            .into_iter()
            .map(|r| r.verdict)
            .collect();
        assert_eq!(judged, explained);
    }
    let big = msg("x", &"y".repeat(2000));
    let v = s.judge_message(&ENV, &rcpts, &big);
    assert!(zips(accepted(&v[0])) && accepted(&v[0]).signs());
    assert!(zips(accepted(&v[1])) && !accepted(&v[1]).signs());
    let with_body = ok(&[
        ("00.toml", RCPTS),
        (
            "50.toml",
            "[[rule]]\nname = \"b\"\nbody = [\"x\"]\nactions = [\"sign\"]\n",
        ),
    ]);
    assert!(with_body.needs_parse);
}

/// Windows saves `x.exe.` and `x.exe ` as `x.exe`: an `attachment_name` rule sees them so.
#[test]
fn attachment_names_are_matched_as_windows_saves_them() {
    let rules = r#"
[[rule]]
name = "no executables"
attachment_name = ["*.exe"]
actions = ["strip-attachments"]
"#;
    let s = ok(&[("00.toml", RCPTS), ("50.toml", rules)]);
    for name in ["x.exe", "x.exe.", "x.exe ", "X.EXE. . "] {
        let m = format!("From: payroll@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\r\nMZ\r\n--b--\r\n");
        let v = verdict(&s, "a@bank.example", m.as_bytes());
        assert_eq!(accepted(&v).attachments, Attachments::Strip, "{name:?}");
    }
}

#[test]
fn deny_and_rules_cover_subaddresses_and_spellings_are_judged_canonically() {
    let rules = r#"[[rule]]
name = "ceo mail is encrypted"
to = ["boss@example.com"]
actions = ["reject"]
message = "boss mail goes another way"
"#;
    let mut s = ok(&[("00-recipients.toml", RCPTS), ("50-rules.toml", rules)]);
    let yes = |_: &str| true;
    for denied in [
        "ceo+x@example.com",
        "CEO+a+b@EXAMPLE.com.",
        "\"ceo\"@example.com",
        "\"ceo+x\"@example.com",
    ] {
        let r = s.judge_rcpt(&ENV, denied, &yes).unwrap_err();
        assert_eq!(
            r.reason, "recipient denied by \"ceo@example.com\"",
            "{denied}"
        );
    }
    let r = s.judge_rcpt(&ENV, "boss+x@example.com", &yes).unwrap_err();
    assert_eq!(r.reason, "boss mail goes another way");
    for refused in [
        "user%evil.example@example.com",
        "evil.example!user@example.com",
        "\"user@evil.example\"@example.com",
        "ceo(x)@example.com",
        "user@evil.example@example.com",
        "@a.example:user@example.com",
    ] {
        let r = s.judge_rcpt(&ENV, refused, &yes).unwrap_err();
        assert_eq!(r.by.rule, ADDRESS_SYNTAX, "{refused}");
        let v = verdict(&s, refused, b"Subject: x\r\n\r\nx\r\n");
        assert!(matches!(v, RecipientVerdict::Reject { .. }), "{refused}");
    }
    // With `-` as a delimiter too, and routing characters allowed.
    s.set_address_reading(
        crate::address::AddressRules {
            allow_routing_characters: true,
        },
        &['+', '-'],
    );
    assert!(s.judge_rcpt(&ENV, "ceo-x@example.com", &yes).is_err());
    // Allowed routing characters are judged as the upstream may route them, too.
    assert_eq!(
        s.judge_rcpt(&ENV, "user%eu.example.com@example.com", &yes),
        Ok(())
    );
    assert_eq!(
        s.judge_rcpt(&ENV, "eu.example.com!user@bank.example", &yes),
        Ok(())
    );
    let r = s
        .judge_rcpt(&ENV, "user%evil.example@example.com", &yes)
        .unwrap_err();
    assert_eq!(
        r.reason,
        "recipient not approved (as the upstream may route it: <user@evil.example>)"
    );
    let r = s
        .judge_rcpt(&ENV, "\"ceo+x@example.com\"@bank.example", &yes)
        .unwrap_err();
    assert!(
        r.reason
            .starts_with("recipient denied by \"ceo@example.com\""),
        "{}",
        r.reason
    );
    // A rule about boss@ applies where the upstream would route the address.
    let r = s
        .judge_rcpt(&ENV, "boss%example.com@bank.example", &yes)
        .unwrap_err();
    assert_eq!(r.reason, "boss mail goes another way");
    let v = verdict(
        &s,
        "ceo%example.com@bank.example",
        b"Subject: x\r\n\r\nx\r\n",
    );
    assert!(matches!(v, RecipientVerdict::Reject { .. }), "{v:?}");
    s.set_address_reading(crate::address::AddressRules::default(), &[]);
    assert_eq!(s.judge_rcpt(&ENV, "ceo+x@example.com", &yes), Ok(()));
}

#[test]
fn explain_shows_the_canonical_form_it_judged() {
    let s = ok(&[("00-recipients.toml", RCPTS)]);
    let e = s.explain(
        &Envelope {
            client: "local",
            from: "Payroll@EXAMPLE.com",
        },
        &[
            "\"CEO+x\"@Example.COM.".to_owned(),
            "u%v@example.com".to_owned(),
        ],
        b"Subject: x\r\n\r\nx\r\n",
    );
    assert_eq!(e.from, "payroll@example.com");
    let r = &e.recipients[0];
    assert_eq!(r.judged_as.as_deref(), Some("ceo+x@example.com"));
    assert_eq!(r.subaddress_of.as_deref(), Some("ceo@example.com"));
    let text = e.to_string();
    assert!(
        text.contains("judged as <ceo+x@example.com>, a subaddress of <ceo@example.com>"),
        "{text}"
    );
    assert!(text.contains("denied by \"ceo@example.com\""), "{text}");
    assert_eq!(e.recipients[1].judged_as, None);
    assert!(text.contains("routing character '%'"), "{text}");
}

#[test]
fn a_rules_own_encryption_order_is_kept_and_checked() {
    use crate::policy::verdict::CryptoKind;
    let rules = "[[rule]]\nname = \"pgp first\"\nto = [\"*@bank.example\"]\nactions = [\"encrypt\"]\nencryption = [\"openpgp\", \"smime\"]\n\n[[rule]]\nname = \"later\"\nactions = [\"sign\"]\nencryption = [\"smime\"]\n";
    let s = ok(&[("00.toml", RCPTS), ("50.toml", rules)]);
    let a = accepted(&verdict(&s, "a@bank.example", &msg("x", "y"))).clone();
    assert_eq!(a.order(), [CryptoKind::Openpgp, CryptoKind::Smime]);
    let b = accepted(&verdict(&s, "b@example.com", &msg("x", "y"))).clone();
    assert_eq!(b.order(), [CryptoKind::Smime]);
    let e = errors(&[
        ("00.toml", RCPTS),
        (
            "50.toml",
            "[[rule]]\nname = \"x\"\nactions = [\"encrypt\"]\nencryption = [\"pgp\"]\n",
        ),
    ]);
    assert!(e[0].contains("unknown kind \"pgp\""), "{e:?}");
    let e = errors(&[
        ("00.toml", RCPTS),
        ("50.toml", "[[rule]]\nname = \"x\"\nactions = [\"strip-attachments\"]\nencryption = [\"openpgp\"]\n"),
    ]);
    assert!(e[0].contains("only used with"), "{e:?}");
}
