//! S/MIME round trips through the real `openssl` tool: what sealgate signs verifies,
//! what it encrypts decrypts bit-identically, for RSA and EC recipients, CBC and GCM,
//! PKCS#1 v1.5 and OAEP; certificates that must not be used are not.

mod smime_support;

use sealgate::policy::verdict::{Actions, Attachments, Crypto, CryptoKind, IfNoKey};
use sealgate::transform::smime::{Cipher, KeyTransport};
use sealgate::transform::{apply, plan, Plan};
use smime_support::*;

fn sign_only() -> Actions {
    Actions::sign()
}

fn sign_encrypt() -> Actions {
    Actions {
        crypto: Crypto::planned(true, Some(CryptoKind::Smime)),
        ..Actions::default()
    }
}

fn one_plan(actions: Actions, rcpts: &[&str]) -> Plan {
    Plan {
        actions,
        recipients: rcpts.iter().map(|s| s.to_string()).collect(),
        notes: Vec::new(),
    }
}

const PLAIN: &[u8] = b"From: payroll@example.com\r\nTo: alice@bank.example\r\nSubject: March\r\nDate: Mon, 30 Nov 2026 10:00:00 +0100\r\nMessage-ID: <p1@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nHello Alice,\r\n\r\nthe figures are attached.\r\n";

#[test]
fn detached_signature_verifies_with_openssl_cms_and_smime() {
    let pki = pki();
    let smime = pki.load(&pki.config());
    let out = apply(
        &one_plan(sign_only(), &["x@y"]),
        "payroll@example.com",
        PLAIN,
        Some(&smime),
    )
    .unwrap();
    let text = String::from_utf8(out.message.clone()).unwrap();
    assert!(text
        .starts_with("From: payroll@example.com\r\nTo: alice@bank.example\r\nSubject: March\r\n"));
    assert!(
        text.contains("multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256")
    );
    let f = pki.path("signed.eml");
    std::fs::write(&f, &out.message).unwrap();
    let content = pki.path("content.out");
    run(
        "openssl",
        &[
            "cms",
            "-verify",
            "-CAfile",
            p(&pki.ca_path),
            "-in",
            p(&f),
            "-out",
            p(&content),
        ],
        None,
        true,
    );
    // What was signed is exactly the original entity: Content-* fields and body.
    assert_eq!(std::fs::read(&content).unwrap(), content_entity(PLAIN));
    run(
        "openssl",
        &[
            "smime",
            "-verify",
            "-CAfile",
            p(&pki.ca_path),
            "-in",
            p(&f),
            "-out",
            "/dev/null",
        ],
        None,
        true,
    );
    let print = run(
        "openssl",
        &["cms", "-cmsout", "-print", "-in", p(&f)],
        None,
        true,
    );
    let print = String::from_utf8_lossy(&print.stdout);
    assert!(print.contains("signingTime"), "{print}");
    assert!(
        print.contains("S/MIME Capabilities") || print.contains("SMIME-CAPS"),
        "{print}"
    );
    assert!(print.contains("sha256"), "{print}");
    assert!(
        print.contains("sealgate test CA"),
        "chain included: {print}"
    );
}

#[test]
fn ecdsa_p384_signer_and_8bit_body_verify() {
    let pki = pki();
    let smime = pki.load(&pki.config());
    let msg = rich_message();
    let out = apply(
        &one_plan(sign_only(), &["x@y"]),
        "ops@ec.example.com",
        &msg,
        Some(&smime),
    )
    .unwrap();
    // Sign-only output is 7-bit clean below the (SMTPUTF8) header, so relays cannot
    // break the signature by downgrading 8BITMIME.
    let body_start = out
        .message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap();
    assert!(
        out.message[body_start..].iter().all(|c| *c < 0x80),
        "signed body still has 8-bit data"
    );
    let f = pki.path("signed.eml");
    std::fs::write(&f, &out.message).unwrap();
    let content = pki.path("content.out");
    run(
        "openssl",
        &[
            "cms",
            "-verify",
            "-CAfile",
            p(&pki.ca_path),
            "-in",
            p(&f),
            "-out",
            p(&content),
        ],
        None,
        true,
    );
    let signed = std::fs::read(&content).unwrap();
    let parsed = mail_parser::MessageParser::default()
        .parse(&signed)
        .unwrap();
    assert_eq!(
        parsed.body_text(0).unwrap().trim_end(),
        "Grüße aus Köln — naïve café ✓"
    );
    let print = run(
        "openssl",
        &["cms", "-cmsout", "-print", "-in", p(&f)],
        None,
        true,
    );
    assert!(String::from_utf8_lossy(&print.stdout).contains("ecdsa-with-SHA256"));
}

/// A billing export with one 3,000-octet CSV line: RFC 5322 allows 998, and a relay
/// that folds the line would break a detached signature over it. The signed part is
/// base64-encoded first, every line of the output is short, and the content that
/// `openssl cms -verify` returns decodes to the original line.
#[test]
fn a_line_over_998_octets_is_encoded_before_signing() {
    let pki = pki();
    let smime = pki.load(&pki.config());
    let row: String = (0..600).map(|i| format!("{i:04},")).collect();
    assert!(row.len() > 998);
    let msg = format!(
        "From: payroll@example.com\r\nTo: alice@bank.example\r\nSubject: export\r\nMIME-Version: 1.0\r\nContent-Type: text/csv; charset=us-ascii\r\n\r\n{row}\r\nend\r\n"
    );
    let out = apply(
        &one_plan(sign_only(), &["x@y"]),
        "payroll@example.com",
        msg.as_bytes(),
        Some(&smime),
    )
    .unwrap();
    let longest = out
        .message
        .split(|&c| c == b'\n')
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    assert!(longest <= 1000, "a line of {longest} octets left sealgate");
    let signed = openssl_verify(&pki, &out.message);
    let parsed = mail_parser::MessageParser::default()
        .parse(&signed)
        .unwrap();
    let text = String::from_utf8_lossy(parsed.parts[0].contents()).into_owned();
    assert_eq!(text.lines().next(), Some(row.as_str()), "{text}");
}

#[test]
fn opaque_signature_verifies_and_carries_the_content() {
    let pki = pki();
    let mut cfg = pki.config();
    cfg.signer[1].opaque = true;
    let smime = pki.load(&cfg);
    let out = apply(
        &one_plan(sign_only(), &["x@y"]),
        "payroll@example.com",
        PLAIN,
        Some(&smime),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.message);
    assert!(text.contains("application/pkcs7-mime; smime-type=signed-data"));
    let f = pki.path("opaque.eml");
    std::fs::write(&f, &out.message).unwrap();
    let content = pki.path("content.out");
    run(
        "openssl",
        &[
            "cms",
            "-verify",
            "-CAfile",
            p(&pki.ca_path),
            "-in",
            p(&f),
            "-binary",
            "-out",
            p(&content),
        ],
        None,
        true,
    );
    assert_eq!(std::fs::read(&content).unwrap(), content_entity(PLAIN));
}

/// Decrypts with the openssl tool and returns the plaintext entity.
fn openssl_decrypt(pki: &Pki, file: &std::path::Path, who: &Ident) -> Vec<u8> {
    let out = pki.path("decrypted.out");
    run(
        "openssl",
        &[
            "cms",
            "-decrypt",
            "-in",
            p(file),
            "-recip",
            p(&who.cert_path),
            "-inkey",
            p(&who.key_path),
            "-binary",
            "-out",
            p(&out),
        ],
        None,
        true,
    );
    std::fs::read(&out).unwrap()
}

/// Verifies a decrypted multipart/signed entity and returns the signed content.
fn openssl_verify(pki: &Pki, entity: &[u8]) -> Vec<u8> {
    let f = pki.path("inner.eml");
    std::fs::write(&f, entity).unwrap();
    let content = pki.path("inner-content.out");
    // multipart/signed is read as canonical MIME (no -binary), as mail clients do
    run(
        "openssl",
        &[
            "cms",
            "-verify",
            "-CAfile",
            p(&pki.ca_path),
            "-in",
            p(&f),
            "-out",
            p(&content),
        ],
        None,
        true,
    );
    std::fs::read(&content).unwrap()
}

#[test]
fn sign_then_encrypt_to_rsa_and_ec_recipients_in_one_envelope() {
    let pki = pki();
    let smime = pki.load(&pki.config());
    let msg = rich_message();
    let rcpts = [
        (
            "alice@bank.example".to_string(),
            Actions::encrypt(true, IfNoKey::Reject),
        ),
        (
            "BOB@bank.example".to_string(),
            Actions::encrypt(true, IfNoKey::Reject),
        ),
    ];
    let (plans, refused) = plan(&rcpts, Some(&smime));
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(plans.len(), 1, "one copy for both");
    let out = apply(&plans[0], "payroll@example.com", &msg, Some(&smime)).unwrap();
    let text = String::from_utf8_lossy(&out.message).to_string();
    assert!(text.contains(
        "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m"
    ));
    assert!(
        !text.contains("Köln") && !text.contains("Inner"),
        "plaintext leaked"
    );
    assert!(
        text.contains("Subject: Gehaltsabrechnung März"),
        "outer subject kept without header protection"
    );
    let f = pki.path("enc.eml");
    std::fs::write(&f, &out.message).unwrap();
    let print = run(
        "openssl",
        &["cms", "-cmsout", "-print", "-in", p(&f)],
        None,
        true,
    );
    let print = String::from_utf8_lossy(&print.stdout);
    assert!(print.contains("aes-256-cbc"), "{print}");
    assert!(
        print.contains("d.ktri") && print.contains("d.kari"),
        "one RSA and one EC recipient: {print}"
    );
    for who in [&pki.alice, &pki.bob] {
        let inner = openssl_decrypt(&pki, &f, who);
        assert!(inner.starts_with(b"Content-Type: multipart/signed"));
        let signed = openssl_verify(&pki, &inner);
        // Body, attachment and nested message come back bit-identical.
        assert_eq!(signed, content_entity(&msg));
    }
}

#[test]
fn gcm_yields_auth_enveloped_data_that_openssl_decrypts() {
    let pki = pki();
    let mut cfg = pki.config();
    cfg.cipher = Cipher::Aes256Gcm;
    let smime = pki.load(&cfg);
    let enc_only = Actions {
        crypto: Crypto::planned(false, Some(CryptoKind::Smime)),
        ..Actions::default()
    };
    let out = apply(
        &one_plan(enc_only, &["bob@bank.example"]),
        "payroll@example.com",
        &rich_message(),
        Some(&smime),
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&out.message).contains("smime-type=authEnveloped-data"));
    let f = pki.path("gcm.eml");
    std::fs::write(&f, &out.message).unwrap();
    let print = run(
        "openssl",
        &["cms", "-cmsout", "-print", "-in", p(&f)],
        None,
        true,
    );
    assert!(String::from_utf8_lossy(&print.stdout).contains("aes-256-gcm"));
    assert_eq!(
        openssl_decrypt(&pki, &f, &pki.bob),
        content_entity(&rich_message())
    );
}

#[test]
fn oaep_key_transport_decrypts_with_openssl() {
    let pki = pki();
    let mut cfg = pki.config();
    cfg.key_transport = KeyTransport::Oaep;
    let smime = pki.load(&cfg);
    let out = apply(
        &one_plan(sign_encrypt(), &["alice@bank.example", "bob@bank.example"]),
        "payroll@example.com",
        PLAIN,
        Some(&smime),
    )
    .unwrap();
    let f = pki.path("oaep.eml");
    std::fs::write(&f, &out.message).unwrap();
    let print = run(
        "openssl",
        &["cms", "-cmsout", "-print", "-in", p(&f)],
        None,
        true,
    );
    let print = String::from_utf8_lossy(&print.stdout);
    assert!(print.contains("rsaesOaep"), "{print}");
    assert!(
        print.contains("d.kari"),
        "EC recipient still by ECDH: {print}"
    );
    for who in [&pki.alice, &pki.bob] {
        let inner = openssl_decrypt(&pki, &f, who);
        assert_eq!(openssl_verify(&pki, &inner), content_entity(PLAIN));
    }
}

#[test]
fn encrypt_to_self_lets_the_sender_read_it_back() {
    let pki = pki();
    let mut cfg = pki.config();
    cfg.encrypt_to_self = true;
    let smime = pki.load(&cfg);
    let out = apply(
        &one_plan(sign_encrypt(), &["alice@bank.example"]),
        "payroll@example.com",
        PLAIN,
        Some(&smime),
    )
    .unwrap();
    let f = pki.path("self.eml");
    std::fs::write(&f, &out.message).unwrap();
    let inner = openssl_decrypt(&pki, &f, &pki.signer_rsa);
    assert_eq!(openssl_verify(&pki, &inner), content_entity(PLAIN));
}

#[test]
fn header_protection_moves_the_subject_inside() {
    let pki = pki();
    let mut cfg = pki.config();
    cfg.header_protection = true;
    let smime = pki.load(&cfg);
    let out = apply(
        &one_plan(sign_encrypt(), &["alice@bank.example"]),
        "payroll@example.com",
        PLAIN,
        Some(&smime),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.message).to_string();
    assert!(text.contains("\r\nSubject: ...\r\n"), "{text}");
    assert!(!text.contains("March"));
    let f = pki.path("hp.eml");
    std::fs::write(&f, &out.message).unwrap();
    let inner = openssl_decrypt(&pki, &f, &pki.alice);
    let signed = String::from_utf8(openssl_verify(&pki, &inner)).unwrap();
    assert!(signed.contains("hp=\"cipher\""), "{signed}");
    assert!(signed.contains("Subject: March\r\n"), "{signed}");
    assert!(signed.contains("HP-Outer: Subject: ...\r\n"), "{signed}");
    assert!(signed.ends_with("the figures are attached.\r\n"));
}

#[test]
fn expired_and_wrong_purpose_certificates_are_not_used() {
    let pki = pki();
    let smime = pki.load(&pki.config());
    let carol = smime.certificate_for("carol@bank.example").unwrap_err();
    assert!(carol.to_string().contains("expired"), "{carol}");
    let dave = smime.certificate_for("dave@bank.example").unwrap_err();
    assert!(dave.to_string().contains("emailProtection"), "{dave}");
    assert!(smime
        .certificate_for("nobody@bank.example")
        .unwrap_err()
        .to_string()
        .starts_with("no certificate"));
    assert!(smime.has_certificate("ALICE@bank.example"));
    let w = smime.warnings().join("\n");
    assert!(w.contains("carol.pem") && w.contains("expired"), "{w}");
    assert!(
        w.contains("dave.pem") && w.contains("emailProtection"),
        "{w}"
    );
    // A rule that requires encryption refuses these recipients, naming why.
    let req = Actions::encrypt(false, IfNoKey::Reject);
    let (plans, refused) = plan(
        &[
            ("carol@bank.example".into(), req.clone()),
            ("alice@bank.example".into(), req.clone()),
            ("nobody@bank.example".into(), req),
        ],
        Some(&smime),
    );
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].recipients, ["alice@bank.example"]);
    assert_eq!(refused.len(), 2);
    assert!(refused[0].1.contains("expired"), "{:?}", refused[0]);
}

/// Once a certificate is found for each, recipients whose rules differ only in the
/// fallback they did not need share one encrypted copy (the fallback no longer applies).
#[test]
fn fallbacks_not_taken_do_not_split_an_encrypted_copy() {
    let pki = pki();
    let smime = pki.load(&pki.config());
    let rcpts = [
        (
            "alice@bank.example".to_string(),
            Actions::encrypt(true, IfNoKey::Reject),
        ),
        (
            "bob@bank.example".to_string(),
            Actions::encrypt(true, IfNoKey::Zip { password_to: None }),
        ),
        (
            "nobody@bank.example".to_string(),
            Actions::encrypt(true, IfNoKey::Strip),
        ),
    ];
    let (plans, refused) = plan(&rcpts, Some(&smime));
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(plans.len(), 2, "{plans:?}");
    assert_eq!(
        plans[0].recipients,
        ["alice@bank.example", "bob@bank.example"]
    );
    assert_eq!(plans[0].actions.kind(), Some(CryptoKind::Smime));
    assert_eq!(plans[1].recipients, ["nobody@bank.example"]);
    assert_eq!(plans[1].actions.attachments, Attachments::Strip);
    assert!(plans[1].actions.signs() && !plans[1].actions.encrypts());
    let out = apply(&plans[0], "payroll@example.com", PLAIN, Some(&smime)).unwrap();
    let f = pki.path("shared.p7m.eml");
    std::fs::write(&f, &out.message).unwrap();
    for who in [&pki.alice, &pki.bob] {
        let inner = openssl_decrypt(&pki, &f, who);
        assert!(String::from_utf8_lossy(&inner).contains("the figures are attached"));
    }
}

#[test]
fn encryption_required_without_certificate_never_sends_plaintext() {
    let pki = pki();
    let smime = pki.load(&pki.config());
    // Even if a caller builds a plan by hand, apply refuses rather than send plaintext.
    let err = apply(
        &one_plan(sign_encrypt(), &["nobody@bank.example"]),
        "payroll@example.com",
        PLAIN,
        Some(&smime),
    )
    .unwrap_err();
    assert!(err.is_permanent());
    assert!(err.to_string().contains("nobody@bank.example"), "{err}");
    let err = apply(
        &one_plan(sign_encrypt(), &["alice@bank.example"]),
        "payroll@example.com",
        PLAIN,
        None,
    )
    .unwrap_err();
    assert!(err.is_permanent());
    // No signer for the sender: permanent, says so.
    let err = apply(
        &one_plan(sign_only(), &["x@y"]),
        "someone@other.example",
        PLAIN,
        Some(&smime),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no [[smime.signer]]"), "{err}");
}

#[test]
fn newest_valid_certificate_wins_and_domain_certificates_apply() {
    let pki = pki();
    let older = pki.issue(
        &CertSpec {
            not_before_days: -100,
            ..CertSpec::person("erin@bank.example")
        },
        KeyKind::Rsa2048,
        "erin-old",
        true,
    );
    let newer = pki.issue(
        &CertSpec {
            not_before_days: -2,
            ..CertSpec::person("erin@bank.example")
        },
        KeyKind::Rsa2048,
        "erin-new",
        true,
    );
    let future = pki.issue(
        &CertSpec {
            not_before_days: 5,
            ..CertSpec::person("erin@bank.example")
        },
        KeyKind::Rsa2048,
        "erin-future",
        true,
    );
    let gw = pki.issue(
        &CertSpec::person("gateway@partner.example"),
        KeyKind::EcP384,
        "gateway",
        false,
    );
    let mut cfg = pki.config();
    cfg.domain_certs
        .insert("partner.example".into(), gw.cert_path.clone());
    let smime = pki.load(&cfg);
    let got = smime.certificate_for("erin@bank.example").unwrap();
    assert_eq!(got.path, newer.cert_path);
    assert_ne!(got.path, older.cert_path);
    assert_ne!(got.path, future.cert_path);
    let gwinfo = smime.certificate_for("anyone@Partner.Example").unwrap();
    assert_eq!(gwinfo.path, gw.cert_path);
    assert!(smime.certificate_for("anyone@sub.partner.example").is_err());
    assert!(!smime
        .warnings()
        .join("\n")
        .contains("gateway certificate for"));

    // A gateway certificate that names another domain, and a key written as an address
    // pattern, are what `check` warns about.
    let mut cfg = pki.config();
    cfg.domain_certs
        .insert("other.example".into(), gw.cert_path.clone());
    cfg.domain_certs
        .insert("*@wild.example".into(), gw.cert_path.clone());
    let w = pki.load(&cfg).warnings().join("\n");
    assert!(
        w.contains("gateway certificate for other.example names only gateway@partner.example"),
        "{w}"
    );
    assert!(
        w.contains("\"*@wild.example\": write the domain alone"),
        "{w}"
    );
}

#[test]
fn trust_anchors_exclude_certificates_from_another_ca() {
    let pki = pki();
    // A self-signed "recipient" certificate that chains to nothing.
    let key = new_key(KeyKind::Rsa2048);
    let rogue = make_cert(&CertSpec::person("mallory@bank.example"), &key, None);
    std::fs::write(pki.recipients.join("mallory.pem"), rogue.to_pem().unwrap()).unwrap();
    let mut cfg = pki.config();
    let smime = pki.load(&cfg);
    assert!(
        smime.has_certificate("mallory@bank.example"),
        "no anchors: accepted"
    );
    cfg.trust_anchors = Some("ca.pem".into());
    let smime = pki.load(&cfg);
    let err = smime.certificate_for("mallory@bank.example").unwrap_err();
    assert!(err.to_string().contains("trust anchor"), "{err}");
    assert!(smime.has_certificate("alice@bank.example"));
}

#[test]
fn der_certificates_are_indexed_too() {
    let pki = pki();
    let key = new_key(KeyKind::EcP256);
    let c = make_cert(
        &CertSpec::person("frank@bank.example"),
        &key,
        Some((&pki.ca, &pki.ca_key)),
    );
    std::fs::write(pki.recipients.join("frank.cer"), c.to_der().unwrap()).unwrap();
    std::fs::write(pki.recipients.join("garbage.pem"), b"not a certificate").unwrap();
    let smime = pki.load(&pki.config());
    assert!(smime.has_certificate("frank@bank.example"));
    assert!(smime.warnings().join("\n").contains("garbage.pem"));
}

#[test]
fn signer_key_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let pki = pki();
    std::fs::set_permissions(
        &pki.signer_rsa.key_path,
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let err = sealgate::transform::smime::Smime::load(&pki.config(), pki.dir.path()).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

/// A self-signed certificate made by `openssl req` into the recipients directory.
fn openssl_cert(pki: &Pki, file: &str, subj: &str, ext: &[&str]) {
    let dir = pki.recipients.clone();
    let key = pki.path(&format!("{file}.key"));
    let cert = dir.join(format!("{file}.pem"));
    let mut args = vec![
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "30",
        "-subj",
        subj,
        "-keyout",
        p(&key),
        "-out",
        p(&cert),
    ];
    for e in ext {
        args.push("-addext");
        args.push(e);
    }
    run("openssl", &args, None, true);
}

#[test]
fn a_certificate_cannot_claim_an_address_its_san_does_not_name() {
    let pki = pki();
    // Newer than Alice's real certificate, SAN mallory@, subject emailAddress alice@.
    openssl_cert(
        &pki,
        "mallory",
        "/CN=Mallory/emailAddress=alice@bank.example",
        &[
            "subjectAltName=email:mallory@evil.example",
            "extendedKeyUsage=emailProtection",
            "keyUsage=digitalSignature,keyEncipherment",
        ],
    );
    // A CA certificate that carries an address is no recipient certificate.
    openssl_cert(
        &pki,
        "ca-with-address",
        "/CN=Some CA/emailAddress=erin@bank.example",
        &[
            "subjectAltName=email:erin@bank.example",
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=keyCertSign,keyEncipherment",
            "extendedKeyUsage=emailProtection",
        ],
    );
    let smime = pki.load(&pki.config());
    let alice = smime.certificate_for("alice@bank.example").unwrap();
    assert!(
        alice.path.ends_with("alice.pem"),
        "{}",
        alice.path.display()
    );
    assert!(smime.has_certificate("mallory@evil.example"));
    assert!(!smime.has_certificate("erin@bank.example"));
    // Spelled with a trailing dot, as the policy accepts it, the address still finds it.
    assert!(smime.has_certificate("alice@bank.example."));
}

#[test]
fn a_signer_certificate_that_expired_does_not_sign() {
    let pki = pki();
    pki.issue(
        &CertSpec {
            not_before_days: -400,
            not_after_days: -5,
            ..CertSpec::person("payroll@example.com")
        },
        KeyKind::Rsa2048,
        "signer-old",
        false,
    );
    let mut cfg = pki.config();
    for s in &mut cfg.signer {
        if s.cert.ends_with("signer-rsa.pem") {
            s.cert = "signer-old.pem".into();
            s.key_file = "signer-old.key".into();
        }
    }
    let smime = pki.load(&cfg);
    assert!(smime.warnings().join("\n").contains("signer-old.pem"));
    let err = apply(
        &one_plan(sign_only(), &["alice@bank.example"]),
        "payroll@example.com",
        PLAIN,
        Some(&smime),
    )
    .unwrap_err();
    assert!(err.is_permanent());
    assert!(
        err.to_string()
            .contains("signing certificate cannot be used"),
        "{err}"
    );
    assert!(err.to_string().contains("expired"), "{err}");
}
