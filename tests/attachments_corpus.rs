//! Every real-world message in `tests/fixtures/corpus/` (RFC examples and Dovecot's
//! malformed and third-party messages, see the README and licence files there) goes
//! through strip, zip and sign+encrypt without a panic, and comes back intact:
//! - strip/zip leave a message without attachments byte-identical, and a zipped
//!   attachment decrypts to exactly its decoded content;
//! - after decrypt + verify, the signed content is the original entity, byte for byte.

mod smime_support;

use std::io::Read;
use std::path::PathBuf;

use openssl::cms::{CMSOptions, CmsContentInfo};
use sealgate::message::mime::{self, Kind};
use sealgate::policy::verdict::{Actions, Attachments, Crypto, CryptoKind};
use sealgate::transform::attachments;
use sealgate::transform::{apply, Plan};
use sha2::{Digest, Sha256};
use smime_support::*;

fn corpus() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus");
    let mut files = Vec::new();
    for dir in ["rfc", "malformed", "thirdparty"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "eml") {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 50, "corpus missing");
    files
}

fn plan(actions: Actions) -> Plan {
    Plan {
        actions,
        recipients: vec!["alice@bank.example".into()],
        notes: Vec::new(),
    }
}

#[test]
fn corpus_survives_strip_and_zip() {
    for path in corpus() {
        let raw = std::fs::read(&path).unwrap();
        let canon = mime::canonical_crlf(&raw).into_owned();
        let found = attachments::list(&canon);
        let name = path.display().to_string();

        let stripped = apply(
            &plan(Actions::attachments(Attachments::Strip)),
            "a@example.com",
            &raw,
            None,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        if found.is_empty() {
            assert_eq!(
                stripped.message, canon,
                "{name}: changed without attachments"
            );
        } else {
            for a in &found {
                assert!(
                    String::from_utf8_lossy(&stripped.message).contains(&a.sha256),
                    "{name}: no notice for {a}"
                );
            }
            assert!(
                attachments::list(&stripped.message).is_empty(),
                "{name}: attachment left"
            );
        }

        let zipped = apply(
            &plan(Actions::attachments(Attachments::Zip { password_to: None })),
            "a@example.com",
            &raw,
            None,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        if found.is_empty() {
            assert_eq!(zipped.message, canon, "{name}");
            assert!(zipped.extra.is_empty());
            continue;
        }
        let pw_mail = String::from_utf8_lossy(&zipped.extra[0].message).to_string();
        let pw = pw_mail
            .lines()
            .find_map(|l| l.strip_prefix("Password: "))
            .unwrap()
            .trim()
            .to_string();
        let left = attachments::list(&zipped.message);
        assert_eq!(left.len(), 1, "{name}: only the archive remains: {left:?}");
        assert_eq!(left[0].name, attachments::ZIP_NAME);
        // Find the archive part and open it.
        let archive = find_zip(&zipped.message).unwrap_or_else(|| panic!("{name}: no zip"));
        let mut za = zip::ZipArchive::new(std::io::Cursor::new(archive)).unwrap();
        assert_eq!(za.len(), found.len(), "{name}");
        let mut hashes: Vec<String> = Vec::new();
        for i in 0..za.len() {
            let mut f = za.by_index_decrypt(i, pw.as_bytes()).unwrap();
            let mut v = Vec::new();
            f.read_to_end(&mut v).unwrap();
            hashes.push(format!("{:x}", Sha256::digest(&v)));
        }
        let mut want: Vec<String> = found.iter().map(|a| a.sha256.clone()).collect();
        want.sort();
        hashes.sort();
        assert_eq!(hashes, want, "{name}: zip content differs");
    }
}

fn find_zip(message: &[u8]) -> Option<Vec<u8>> {
    fn walk(e: &mime::Entity<'_>) -> Option<Vec<u8>> {
        if e.info.file_name.as_deref() == Some(attachments::ZIP_NAME) {
            return Some(mime::decode_body(e.body, &e.info.transfer_encoding).into_owned());
        }
        match &e.kind {
            Kind::Multipart { parts, .. } => parts.iter().find_map(|(_, p)| walk(p)),
            Kind::Message(m) => walk(m),
            Kind::Leaf => None,
        }
    }
    walk(&mime::parse(message))
}

#[test]
fn corpus_survives_sign_and_encrypt_bit_identical() {
    let pki = pki();
    let smime = pki.load(&pki.config());
    for path in corpus() {
        let raw = std::fs::read(&path).unwrap();
        let name = path.display().to_string();
        let canon = mime::canonical_crlf(&raw).into_owned();
        let out = apply(
            &plan(Actions {
                crypto: Crypto::planned(true, Some(CryptoKind::Smime)),
                ..Actions::default()
            }),
            "payroll@example.com",
            &raw,
            Some(&smime),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let tree = mime::parse(&out.message);
        assert_eq!(tree.info.content_type, "application/pkcs7-mime", "{name}");
        let der = mime::decode_body(tree.body, "base64").into_owned();
        let cms = CmsContentInfo::from_der(&der).unwrap();
        let inner = cms.decrypt(&pki.alice.key, &pki.alice.cert).unwrap();
        let signed = mime::parse(&inner);
        let Kind::Multipart { parts, .. } = &signed.kind else {
            panic!("{name}: inner is not multipart/signed")
        };
        let content = parts[0].1.raw;
        assert_eq!(
            content,
            content_entity(&canon).as_slice(),
            "{name}: content differs"
        );
        let sig = mime::decode_body(parts[1].1.body, "base64").into_owned();
        let mut sig = CmsContentInfo::from_der(&sig).unwrap();
        let mut store = openssl::x509::store::X509StoreBuilder::new().unwrap();
        store.add_cert(pki.ca.clone()).unwrap();
        let store = store.build();
        sig.verify(None, Some(&store), Some(content), None, CMSOptions::BINARY)
            .unwrap_or_else(|e| panic!("{name}: signature: {e}"));
    }
}
