//! A second, independent S/MIME implementation reads what sealgate writes: GnuPG's
//! `gpgsm` decrypts a signed-and-encrypted message and verifies the detached signature.
//! (gpgsm 2.2 has no ECDH key agreement and no AuthEnvelopedData, so this test covers
//! RSA recipients with AES-256-CBC; openssl covers the rest in `smime_roundtrip`.)

mod smime_support;

use std::path::Path;
use std::process::Command;

use sealgate::message::mime::{self, Kind};
use sealgate::policy::verdict::{Actions, Crypto, CryptoKind};
use sealgate::transform::{apply, Plan};
use smime_support::*;

/// Runs gpgsm in its own GNUPGHOME; stops the agent when dropped.
struct Gpgsm {
    home: std::path::PathBuf,
}

impl Gpgsm {
    fn new(dir: &Path) -> Gpgsm {
        use std::os::unix::fs::PermissionsExt;
        let home = dir.join("gnupg");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        Gpgsm { home }
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> (bool, Vec<u8>, String) {
        let mut all = vec![
            "--homedir",
            p(&self.home),
            "--batch",
            "--disable-crl-checks",
            "--disable-policy-checks",
            "--pinentry-mode",
            "loopback",
        ];
        all.extend_from_slice(args);
        let out = run("gpgsm", &all, stdin, false);
        (
            out.status.success(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }
}

impl Drop for Gpgsm {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .args(["--homedir", p(&self.home), "--kill", "gpg-agent"])
            .status();
    }
}

#[test]
fn gpgsm_decrypts_and_verifies_what_sealgate_sends() {
    let pki = pki();
    let smime = pki.load(&pki.config());
    let g = Gpgsm::new(pki.dir.path());

    // Trust the test CA, import Alice's key (PKCS#12 with 3DES, which gpgsm 2.2 reads).
    let (ok, _, err) = g.run(&["--import", p(&pki.ca_path)], None);
    assert!(ok, "{err}");
    let fpr = pki.ca.digest(openssl::hash::MessageDigest::sha1()).unwrap();
    let fpr: String = fpr.iter().map(|b| format!("{b:02X}")).collect();
    std::fs::write(g.home.join("trustlist.txt"), format!("{fpr} S relax\n")).unwrap();
    let p12 = pki.path("alice.p12");
    run(
        "openssl",
        &[
            "pkcs12",
            "-export",
            "-in",
            p(&pki.alice.cert_path),
            "-inkey",
            p(&pki.alice.key_path),
            "-passout",
            "pass:test",
            "-keypbe",
            "PBE-SHA1-3DES",
            "-certpbe",
            "PBE-SHA1-3DES",
            "-macalg",
            "sha1",
            "-out",
            p(&p12),
        ],
        None,
        true,
    );
    let (ok, _, err) = g.run(
        &["--passphrase-fd", "0", "--import", p(&p12)],
        Some(b"test\n"),
    );
    assert!(ok, "{err}");

    let msg = rich_message();
    let plan = Plan {
        actions: Actions {
            crypto: Crypto::planned(true, Some(CryptoKind::Smime)),
            ..Actions::default()
        },
        recipients: vec!["alice@bank.example".into()],
        notes: Vec::new(),
    };
    let out = apply(&plan, "payroll@example.com", &msg, Some(&smime)).unwrap();

    // The body of the outgoing message is the base64 EnvelopedData.
    let tree = mime::parse(&out.message);
    let der = mime::decode_body(tree.body, &tree.info.transfer_encoding).into_owned();
    let der_path = pki.path("enc.der");
    std::fs::write(&der_path, &der).unwrap();
    let (ok, plain, err) = g.run(
        &["--passphrase-fd", "0", "--decrypt", p(&der_path)],
        Some(b"test\n"),
    );
    assert!(ok, "gpgsm --decrypt: {err}");
    assert!(plain.starts_with(b"Content-Type: multipart/signed"));

    // Split the multipart/signed and verify the detached signature over the first part.
    let signed = mime::parse(&plain);
    let Kind::Multipart { parts, .. } = &signed.kind else {
        panic!("not multipart/signed")
    };
    assert_eq!(parts.len(), 2);
    let content = parts[0].1.raw;
    assert_eq!(
        content,
        content_entity(&msg).as_slice(),
        "bit-identical after decrypt"
    );
    let sig = mime::decode_body(parts[1].1.body, "base64").into_owned();
    let sig_path = pki.path("sig.p7s");
    let content_path = pki.path("content.eml");
    std::fs::write(&sig_path, &sig).unwrap();
    std::fs::write(&content_path, content).unwrap();
    let (ok, _, err) = g.run(&["--verify", p(&sig_path), p(&content_path)], None);
    assert!(
        ok && err.contains("Good signature"),
        "gpgsm --verify: {err}"
    );
}
