//! `encrypt` picks the kind per recipient: the first kind in the order (a rule's own
//! `encryption`, else `[policy] encryption`, else S/MIME then OpenPGP) with a usable key;
//! `if_no_certificate` applies only when no kind has one. Keys: the S/MIME test PKI and
//! an OpenPGP keyring made with Sequoia's CertBuilder.

mod smime_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use openpgp::cert::prelude::*;
use openpgp::serialize::SerializeInto;
use sealgate::policy::verdict::{Actions, Attachments, Crypto, CryptoKind, IfNoKey};
use sealgate::transform::openpgp::{OpenPgp, OpenPgpConfig, PgpSignerConfig};
use sealgate::transform::{apply_with_keys, plan_with_keys, Keys};
use sequoia_openpgp as openpgp;
use smime_support::*;

/// A keyring with OpenPGP keys for alice@bank.example (who also has an S/MIME
/// certificate) and erin@pgp.example (OpenPGP only), and a signer for *@example.com.
fn keyring(dir: &Path) -> OpenPgp {
    let ring = dir.join("openpgp");
    std::fs::create_dir(&ring).unwrap();
    for uid in ["Alice <alice@bank.example>", "Erin <Erin@PGP.example>"] {
        let (cert, _) = CertBuilder::general_purpose(Some(uid)).generate().unwrap();
        let name = format!("{}.asc", cert.fingerprint().to_hex());
        std::fs::write(ring.join(name), cert.armored().to_vec().unwrap()).unwrap();
    }
    let (signer, _) = CertBuilder::general_purpose(Some("Payroll <payroll@example.com>"))
        .generate()
        .unwrap();
    let key = dir.join("payroll.sec.asc");
    std::fs::write(&key, signer.as_tsk().armored().to_vec().unwrap()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = OpenPgpConfig {
        keyring: "openpgp".into(),
        signer: vec![PgpSignerConfig {
            senders: vec!["*@example.com".into()],
            key_file: "payroll.sec.asc".into(),
            passphrase_file: None,
            passphrase_env: None,
        }],
        ..OpenPgpConfig::default()
    };
    OpenPgp::load(&cfg, dir, false).unwrap()
}

fn encrypt(order: &[CryptoKind]) -> Actions {
    Actions {
        crypto: Crypto::Encrypt {
            sign: true,
            order: order.to_vec(),
            if_no_key: IfNoKey::Reject,
        },
        ..Actions::default()
    }
}

fn content_type(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_string();
    head.split("\r\n")
        .find(|l| l.to_ascii_lowercase().starts_with("content-type:"))
        .unwrap_or("")
        .to_string()
}

#[test]
fn first_kind_with_a_usable_key_wins_per_recipient() {
    let pki = pki();
    let smime = pki.load(&pki.config());
    let pgp = keyring(pki.dir.path());
    let msg = rich_message();
    let keys = |order: &'static [CryptoKind]| Keys {
        smime: Some(&smime),
        openpgp: Some(&pgp),
        order,
    };

    // Default order: S/MIME first for alice (she has both), OpenPGP for erin (key only),
    // and nobody for mallory: refused (if_no_certificate = reject).
    let k = keys(&[]);
    let (plans, refused) = plan_with_keys(
        &[
            ("alice@bank.example".into(), encrypt(&[])),
            ("erin@pgp.example".into(), encrypt(&[])),
            ("mallory@nowhere.example".into(), encrypt(&[])),
        ],
        &k,
        &msg,
    );
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].1.contains("S/MIME") && refused[0].1.contains("OpenPGP"),
        "{}",
        refused[0].1
    );
    assert_eq!(plans.len(), 2, "one copy per kind: {plans:?}");
    let by = |r: &str| plans.iter().find(|p| p.recipients == [r]).unwrap();
    assert_eq!(
        by("alice@bank.example").actions.kind(),
        Some(CryptoKind::Smime)
    );
    assert_eq!(
        by("erin@pgp.example").actions.kind(),
        Some(CryptoKind::Openpgp)
    );
    let smime_out =
        apply_with_keys(by("alice@bank.example"), "payroll@example.com", &msg, &k).unwrap();
    assert!(content_type(&smime_out.message).contains("application/pkcs7-mime"));
    let pgp_out = apply_with_keys(by("erin@pgp.example"), "payroll@example.com", &msg, &k).unwrap();
    assert!(
        content_type(&pgp_out.message).contains("multipart/encrypted"),
        "{}",
        content_type(&pgp_out.message)
    );
    assert!(
        pgp_out
            .notes
            .iter()
            .any(|n| n.contains("OpenPGP key") && n.contains("erin@pgp.example")),
        "{:?}",
        pgp_out.notes
    );

    // [policy] encryption = ["openpgp", "smime"]: alice now gets OpenPGP.
    let k = keys(&[CryptoKind::Openpgp, CryptoKind::Smime]);
    let (plans, _) = plan_with_keys(&[("alice@bank.example".into(), encrypt(&[]))], &k, &msg);
    assert_eq!(plans[0].actions.kind(), Some(CryptoKind::Openpgp));

    // A rule's own order wins over [policy]'s.
    let (plans, _) = plan_with_keys(
        &[("alice@bank.example".into(), encrypt(&[CryptoKind::Smime]))],
        &k,
        &msg,
    );
    assert_eq!(plans[0].actions.kind(), Some(CryptoKind::Smime));

    // A rule that allows only S/MIME for erin (OpenPGP key only) falls back.
    let mut a = encrypt(&[CryptoKind::Smime]);
    if let Crypto::Encrypt { if_no_key, .. } = &mut a.crypto {
        *if_no_key = IfNoKey::Strip;
    }
    let (plans, refused) = plan_with_keys(&[("erin@pgp.example".into(), a)], &k, &msg);
    assert!(refused.is_empty());
    assert!(!plans[0].actions.encrypts() && plans[0].actions.attachments == Attachments::Strip);
    assert!(
        plans[0].notes[0].contains("fallback strip-attachments"),
        "{:?}",
        plans[0].notes
    );
}

#[test]
fn signed_only_copies_use_the_first_kind_with_a_signer() {
    let pki = pki();
    let smime = pki.load(&pki.config());
    let pgp = keyring(pki.dir.path());
    let msg = rich_message();
    let sign = |order: &[CryptoKind]| Actions {
        crypto: Crypto::Sign {
            order: order.to_vec(),
        },
        ..Actions::default()
    };
    let order = [CryptoKind::Openpgp, CryptoKind::Smime];
    let k = Keys {
        smime: Some(&smime),
        openpgp: Some(&pgp),
        order: &order,
    };
    let (plans, _) = plan_with_keys(&[("x@anywhere.example".into(), sign(&[]))], &k, &msg);
    let out = apply_with_keys(&plans[0], "payroll@example.com", &msg, &k).unwrap();
    let ct = content_type(&out.message);
    assert!(ct.contains("multipart/signed"), "{ct}");
    assert!(String::from_utf8_lossy(&out.message).contains("application/pgp-signature"));
    // The rule says S/MIME: an S/MIME signature.
    let (plans, _) = plan_with_keys(
        &[("x@anywhere.example".into(), sign(&[CryptoKind::Smime]))],
        &k,
        &msg,
    );
    let out = apply_with_keys(&plans[0], "payroll@example.com", &msg, &k).unwrap();
    assert!(String::from_utf8_lossy(&out.message).contains("application/pkcs7-signature"));
}
