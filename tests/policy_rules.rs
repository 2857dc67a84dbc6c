//! Policy rules against fixture messages: one case per condition and per action, each
//! with a message that matches and one that does not (tests/fixtures/policy/*/), the
//! repository's sample `policies/`, and every real-world corpus message judged without panic.

use sealgate::policy::verdict::{Actions, Attachments, NoCertFallback, RecipientVerdict};
use sealgate::policy::{Envelope, PolicySet};
use serde::Deserialize;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    about: String,
    #[serde(rename = "match")]
    matching: String,
    nomatch: String,
    match_from: Option<String>,
    match_to: Option<String>,
    match_client: Option<String>,
    nomatch_from: Option<String>,
    nomatch_to: Option<String>,
    nomatch_client: Option<String>,
    #[serde(default)]
    expect: Vec<String>,
    expect_reject: Option<String>,
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn case_set(dir: &Path) -> PolicySet {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let files = vec![
        (
            "policies/00-recipients.toml".to_owned(),
            read(&fixtures().join("policy/00-recipients.toml")),
        ),
        (
            format!("policies/{name}.toml"),
            read(&dir.join("policy.toml")),
        ),
    ];
    PolicySet::from_sources(&files).unwrap_or_else(|e| panic!("{name}: policy does not load:\n{e}"))
}

fn actions_as_words(v: &RecipientVerdict) -> Vec<String> {
    let RecipientVerdict::Accept { actions, .. } = v else {
        return vec![];
    };
    let mut out = Vec::new();
    for (on, name) in [
        (actions.signs(), "sign"),
        (actions.encrypts(), "encrypt"),
        (
            actions.attachments == Attachments::Strip,
            "strip-attachments",
        ),
        (zips(actions), "zip-attachments"),
    ] {
        if on {
            out.push(name.to_owned());
        }
    }
    if let Some(f) = actions
        .if_no_certificate()
        .filter(|f| *f != NoCertFallback::Reject)
    {
        let f = serde_json::to_value(f).unwrap();
        out.push(format!("if_no_certificate={}", f.as_str().unwrap()));
    }
    if let Some(p) = actions.password_to() {
        out.push(format!("password_to={p}"));
    }
    out
}

fn zips(a: &Actions) -> bool {
    matches!(a.attachments, Attachments::Zip { .. })
}

fn involves_rule_under_test(v: &RecipientVerdict) -> bool {
    match v {
        RecipientVerdict::Accept { rules, .. } => rules.iter().any(|r| r.rule == "under test"),
        RecipientVerdict::Reject { by, .. } => by.rule == "under test",
    }
}

#[test]
fn every_condition_and_action_fixture_matches_and_does_not_match() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures().join("policy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.toml").is_file())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 20,
        "expected a case per condition and action, found {}",
        dirs.len()
    );
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let case: Case = toml::from_str(&read(&dir.join("case.toml")))
            .unwrap_or_else(|e| panic!("{name}/case.toml: {e}"));
        let set = case_set(&dir);
        assert!(set.warnings().is_empty(), "{name}: {:?}", set.warnings());

        let judge =
            |msg: &str, from: &Option<String>, to: &Option<String>, client: &Option<String>| {
                let bytes = std::fs::read(fixtures().join(msg)).unwrap();
                let env = Envelope {
                    client: client.as_deref().unwrap_or("local"),
                    from: from.as_deref().unwrap_or("payroll@example.com"),
                };
                let to = to.clone().unwrap_or_else(|| "a@bank.example".into());
                let v = set.judge_message(&env, std::slice::from_ref(&to), &bytes);
                let e = set.explain(&env, std::slice::from_ref(&to), &bytes);
                assert_eq!(
                    e.recipients[0].verdict, v[0],
                    "{name}: explain and judge disagree"
                );
                let rcpt = set.judge_rcpt(&env, &to, &|_| true);
                (v.into_iter().next().unwrap(), e, rcpt)
            };

        let (v, explanation, rcpt) = judge(
            &case.matching,
            &case.match_from,
            &case.match_to,
            &case.match_client,
        );
        assert!(
            involves_rule_under_test(&v),
            "{name} ({}): matching message did not match: {v:?}\n{explanation}",
            case.about
        );
        match &case.expect_reject {
            Some(reason) => {
                let RecipientVerdict::Reject { reason: got, by } = &v else {
                    panic!("{name}: expected reject, got {v:?}");
                };
                assert_eq!(got, reason, "{name}");
                assert_eq!(
                    by.to_string(),
                    format!("rule \"under test\" in policies/{name}.toml")
                );
                // A content-free rule already refuses at RCPT time.
                let content_free = !read(&dir.join("policy.toml")).contains("body")
                    && !read(&dir.join("policy.toml")).contains("attachment");
                if content_free {
                    assert_eq!(
                        rcpt.unwrap_err().reason,
                        *reason,
                        "{name}: RCPT-time refusal"
                    );
                }
            }
            None => {
                assert_eq!(actions_as_words(&v), case.expect, "{name}: actions");
                assert!(rcpt.is_ok(), "{name}: refused at RCPT: {rcpt:?}");
            }
        }
        let text = explanation.to_string();
        assert!(
            text.contains(&format!(
                "matched rule \"under test\" in policies/{name}.toml"
            )),
            "{name}: explain text:\n{text}"
        );

        let (v, explanation, _) = judge(
            &case.nomatch,
            &case.nomatch_from,
            &case.nomatch_to,
            &case.nomatch_client,
        );
        assert!(
            !involves_rule_under_test(&v),
            "{name} ({}): non-matching message matched: {v:?}\n{explanation}",
            case.about
        );
        assert!(
            matches!(v, RecipientVerdict::Accept { .. }),
            "{name}: {v:?}"
        );
    }
}

fn corpus_messages() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["rfc", "malformed", "thirdparty"] {
        for e in std::fs::read_dir(fixtures().join("corpus").join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "eml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every condition and every detector at once, so that judging touches all code paths.
const EVERYTHING: &str = r#"
[recipients]
allow = ["*"]

[[rule]]
name = "all detectors"
body = ["builtin:credit-card", "builtin:iban", "builtin:us-ssn", "builtin:email-address",
        "builtin:private-key", "builtin:aws-access-key", "builtin:uk-nino", "builtin:github-token"]
actions = ["encrypt"]
if_no_certificate = "strip-attachments"

[[rule]]
name = "every content condition"
subject = ["(?i).*"]
header = ["Content-Type: (?i)multipart", "From: @"]
body = ["(?i)\\b(test|message)\\b", "."]
attachment_name = ["*"]
attachment_type = ["*/*"]
size_over = "1"
actions = ["zip-attachments"]
"#;

#[test]
fn judging_never_panics_on_corpus_messages() {
    let sample = PolicySet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).unwrap();
    let everything =
        PolicySet::from_sources(&[("policies/x.toml".into(), EVERYTHING.into())]).unwrap();
    let rcpts = vec!["a@bank.example".to_owned(), "b@example.com".to_owned()];
    let env = Envelope {
        client: "local",
        from: "payroll@example.com",
    };
    let messages = corpus_messages();
    assert!(messages.len() >= 50, "corpus missing: {}", messages.len());
    let mut zipped = 0;
    for p in &messages {
        let bytes = std::fs::read(p).unwrap();
        for set in [&sample, &everything] {
            let v = set.judge_message(&env, &rcpts, &bytes);
            assert_eq!(v.len(), 2, "{}", p.display());
            let e = set.explain(&env, &rcpts, &bytes);
            let _ = e.to_string();
            serde_json::to_string(&e).unwrap();
        }
        // Truncated copies: every prefix length class, as a crash half-way through DATA would give.
        for cut in [
            1,
            bytes.len() / 3,
            bytes.len() / 2,
            bytes.len().saturating_sub(1),
        ] {
            let _ = everything.judge_message(&env, &rcpts, &bytes[..cut.min(bytes.len())]);
        }
        if let RecipientVerdict::Accept { actions, .. } =
            &everything.judge_message(&env, &rcpts, &bytes)[0]
        {
            zipped += usize::from(zips(actions));
        }
    }
    assert!(zipped > 0, "no corpus message had an attachment");
}

#[test]
fn sample_policies_load_cleanly_and_do_what_their_comments_say() {
    let set = PolicySet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).unwrap();
    assert!(set.warnings().is_empty(), "{:?}", set.warnings());
    let env = Envelope {
        client: "local",
        from: "payroll@example.com",
    };
    let no_cert = |_: &str| false;
    let r = set
        .judge_rcpt(&env, "a@bank.example", &no_cert)
        .unwrap_err();
    assert_eq!(
        r.by.to_string(),
        "rule \"payroll to the bank is signed and encrypted\" in policies/50-rules.toml"
    );
    assert!(set
        .judge_rcpt(&env, "someone@eu.example.com", &no_cert)
        .is_ok());
    let r = set
        .judge_rcpt(&env, "ci@build.test.example.com", &no_cert)
        .unwrap_err();
    assert_eq!(r.by.to_string(), "policies/00-recipients.toml");
    let r = set
        .judge_rcpt(&env, "x@evil.example", &no_cert)
        .unwrap_err();
    assert_eq!(r.reason, "recipient not approved");

    let card = std::fs::read(fixtures().join("policy/messages/card.eml")).unwrap();
    let v = set.judge_message(
        &env,
        &["a@bank.example".into(), "b@partner.example".into()],
        &card,
    );
    let RecipientVerdict::Accept { actions, .. } = &v[0] else {
        panic!("{v:?}")
    };
    assert!(actions.signs() && actions.encrypts());
    assert_eq!(
        actions.if_no_certificate(),
        Some(NoCertFallback::Reject),
        "reject wins over zip"
    );
    let RecipientVerdict::Accept { actions, .. } = &v[1] else {
        panic!("{v:?}")
    };
    assert!(actions.encrypts() && !actions.signs());
    assert_eq!(
        actions.if_no_certificate(),
        Some(NoCertFallback::ZipAttachments)
    );

    let exe = std::fs::read(fixtures().join("policy/messages/exe-attachment.eml")).unwrap();
    let v = set.judge_message(&env, &["b@example.com".into()], &exe);
    let RecipientVerdict::Accept { actions, .. } = &v[0] else {
        panic!("{v:?}")
    };
    assert_eq!(actions.attachments, Attachments::Strip);
}

#[test]
fn broken_policy_directory_reports_every_error_with_position() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policies");
    std::fs::create_dir(&p).unwrap();
    std::fs::write(
        p.join("00.toml"),
        "[recipients]\nallow = [\"example.com\"]\n",
    )
    .unwrap();
    std::fs::write(
        p.join("10.toml"),
        "[[rule]]\nname = \"x\"\nbody = [\"(\"]\nactions = [\"encrypt\"]\n",
    )
    .unwrap();
    std::fs::write(
        p.join("20.toml"),
        "[[rule]]\nname = \"y\"\nattachment_name = [\"*.exe\"]\nactions = [\"strip\"]\n",
    )
    .unwrap();
    let e = PolicySet::load(&p).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("policies/10.toml:3:9: rule \"x\": body: invalid regex \"(\""),
        "{text}"
    );
    assert!(
        text.contains("policies/20.toml:4:12: rule \"y\": unknown action \"strip\""),
        "{text}"
    );
}
