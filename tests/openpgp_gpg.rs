//! OpenPGP as real peers read it: keys made by GnuPG (`gpg --batch --quick-gen-key`:
//! RSA-3072, Curve25519, NIST P-256, an expired one, a revoked one, a sign-only one) in
//! a throwaway GNUPGHOME, exported into sealgate's keyring; messages go through
//! `sealgate serve` to the capture upstream; `gpg --decrypt`, `gpg --verify` and
//! `rnp --decrypt` (the library Thunderbird uses) read what arrives.

mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sealgate::message::mime::{self, Kind};
use sealgate::policy::verdict::{Actions, Crypto, CryptoKind, IfNoKey};
use sealgate::transform::openpgp::{OpenPgp, OpenPgpConfig, PgpSignerConfig};
use sealgate::transform::{apply_with_keys, Keys, Plan};
use support::*;

/// Runs a command with optional stdin; returns its output.
fn run(cmd: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let data = stdin.map(|d| d.to_vec()).unwrap_or_default();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A throwaway GNUPGHOME; its agent is stopped on drop.
struct Gpg {
    home: PathBuf,
}

/// One key as gpg lists it.
#[derive(Debug, Clone)]
struct GpgKey {
    fpr: String,
    /// Long key IDs of the subkeys with the encryption capability that are valid now.
    enc_subkeys: Vec<String>,
    /// Long key IDs of every encryption-capable subkey, expired or not.
    all_enc_subkeys: Vec<String>,
}

impl Gpg {
    fn new(dir: &Path) -> Gpg {
        let home = dir.join("gnupg");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        Gpg { home }
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut all = vec!["--homedir", p(&self.home), "--batch", "--no-tty"];
        all.extend_from_slice(args);
        run("gpg", &all, stdin)
    }

    fn must(&self, args: &[&str]) -> Output {
        let out = self.run(args, None);
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `gpg --quick-gen-key` with a primary of `algo` and, when given, a subkey of `sub`
    /// for encryption; `faked` runs both at a past time (for an expired key).
    fn gen(
        &self,
        uid: &str,
        algo: &str,
        sub: Option<&str>,
        faked: Option<&str>,
        expire: &str,
    ) -> GpgKey {
        let mut base = vec!["--pinentry-mode", "loopback", "--passphrase", ""];
        if let Some(t) = faked {
            base.extend_from_slice(&["--faked-system-time", t]);
        }
        let mut args = base.clone();
        args.extend_from_slice(&["--quick-gen-key", uid, algo, "sign,cert", expire]);
        self.must(&args);
        let fpr = self.key(uid).fpr;
        if let Some(sub) = sub {
            let mut args = base.clone();
            args.extend_from_slice(&["--quick-add-key", &fpr, sub, "encr", expire]);
            self.must(&args);
        }
        self.key(uid)
    }

    /// Fingerprint and encryption subkeys of the key for `uid`.
    fn key(&self, uid: &str) -> GpgKey {
        let out = self.must(&["--with-colons", "--fixed-list-mode", "--list-keys", uid]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut fpr = None;
        let mut enc = Vec::new();
        let mut all = Vec::new();
        let mut last_pub = false;
        for line in text.lines() {
            let f: Vec<&str> = line.split(':').collect();
            match f[0] {
                "pub" => last_pub = true,
                "fpr" if last_pub && fpr.is_none() => {
                    fpr = Some(f[9].to_string());
                    last_pub = false;
                }
                "sub" => {
                    last_pub = false;
                    if f[11].contains('e') {
                        all.push(f[4].to_string());
                        if !matches!(f[1], "e" | "r") {
                            enc.push(f[4].to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        GpgKey {
            fpr: fpr.expect("fingerprint"),
            enc_subkeys: enc,
            all_enc_subkeys: all,
        }
    }

    /// Imports the revocation certificate gpg wrote at generation time.
    fn revoke(&self, fpr: &str) {
        let rev =
            std::fs::read_to_string(self.home.join(format!("openpgp-revocs.d/{fpr}.rev"))).unwrap();
        let rev = rev.replace(
            ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
            "-----BEGIN PGP PUBLIC KEY BLOCK-----",
        );
        let out = self.run(&["--import"], Some(rev.as_bytes()));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn export(&self, armor: bool, uids: &[&str]) -> Vec<u8> {
        let mut args = vec!["--export"];
        if armor {
            args.push("--armor");
        }
        args.extend_from_slice(uids);
        let out = self.must(&args);
        assert!(!out.stdout.is_empty(), "nothing exported for {uids:?}");
        out.stdout
    }

    fn export_secret(&self, uids: &[&str], passphrase: &str) -> Vec<u8> {
        let mut args = vec![
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            passphrase,
            "--armor",
            "--export-secret-keys",
        ];
        args.extend_from_slice(uids);
        self.must(&args).stdout
    }

    /// `gpg --status-fd 1 --decrypt`: (status lines, plaintext as written to --output).
    fn decrypt(&self, dir: &Path, armored: &[u8]) -> (String, Vec<u8>, String) {
        let input = dir.join("in.asc");
        let output = dir.join("out.bin");
        let _ = std::fs::remove_file(&output);
        std::fs::write(&input, armored).unwrap();
        let out = self.run(
            &[
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--status-fd",
                "1",
                "--output",
                p(&output),
                "--decrypt",
                p(&input),
            ],
            None,
        );
        let plain = std::fs::read(&output).unwrap_or_default();
        (
            String::from_utf8_lossy(&out.stdout).to_string(),
            plain,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    fn verify(&self, dir: &Path, sig: &[u8], content: &[u8]) -> String {
        let s = dir.join("sig.asc");
        let c = dir.join("content.bin");
        std::fs::write(&s, sig).unwrap();
        std::fs::write(&c, content).unwrap();
        let out = self.run(&["--status-fd", "1", "--verify", p(&s), p(&c)], None);
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .args(["--homedir", p(&self.home), "--kill", "all"])
            .status();
    }
}

/// Long key IDs named by `ENC_TO` status lines.
fn enc_to(status: &str) -> BTreeSet<String> {
    status
        .lines()
        .filter_map(|l| l.strip_prefix("[GNUPG:] ENC_TO "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn write_secret(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The inner MIME entity as sealgate builds it: the `Content-*` fields, an empty line
/// and the body, byte for byte.
fn content_entity(message: &[u8]) -> Vec<u8> {
    let split = mime::header_end(message);
    let (header, body) = message.split_at(split);
    let mut out = Vec::new();
    let mut has_ct = false;
    for f in mime::fields(header) {
        if f.is_content() {
            has_ct |= f.is("content-type");
            out.extend_from_slice(f.raw);
        }
    }
    if !has_ct {
        out.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// The second part (the armored OpenPGP message) of a `multipart/encrypted` message,
/// after checking the RFC 3156 structure.
fn encrypted_part(message: &[u8]) -> Vec<u8> {
    let tree = mime::parse(message);
    let ct = header_value(message, "Content-Type").unwrap_or_default();
    assert!(
        ct.starts_with("multipart/encrypted")
            && ct.contains("protocol=\"application/pgp-encrypted\""),
        "{ct}"
    );
    let Kind::Multipart { parts, .. } = &tree.kind else {
        panic!("not multipart")
    };
    assert_eq!(parts.len(), 2);
    let first = String::from_utf8_lossy(parts[0].1.raw).to_string();
    assert!(
        first.contains("Content-Type: application/pgp-encrypted"),
        "{first}"
    );
    assert!(first.contains("Version: 1"), "{first}");
    parts[1].1.body.to_vec()
}

const SIGNER_PASS: &str = "correct horse battery";

#[test]
fn gnupg_and_rnp_read_what_sealgate_encrypts_and_signs() {
    let mut env = TestEnv::new(EnvOptions::default());
    let root = env.path().to_path_buf();
    let g = Gpg::new(&root);
    let work = root.join("work");
    std::fs::create_dir(&work).unwrap();

    // The RSA key dates from 2020 and has an encryption subkey that expired then (never
    // encrypted to) beside its current RSA-3072 one.
    let past = Some("20200101T000000!");
    let rsa = g.gen("RSA <rsa@bank.example>", "rsa3072", None, past, "never");
    for (algo, when, expire) in [("cv25519", past, "1d"), ("rsa3072", None, "never")] {
        let mut args = vec!["--pinentry-mode", "loopback", "--passphrase", ""];
        if let Some(t) = when {
            args.extend_from_slice(&["--faked-system-time", t]);
        }
        args.extend_from_slice(&["--quick-add-key", &rsa.fpr, algo, "encr", expire]);
        g.must(&args);
    }
    let rsa = g.key("rsa@bank.example");
    assert_eq!(rsa.all_enc_subkeys.len(), 2, "{rsa:?}");
    assert_eq!(rsa.enc_subkeys.len(), 1, "{rsa:?}");
    let cv = g.gen(
        "Curve <cv@bank.example>",
        "ed25519",
        Some("cv25519"),
        None,
        "never",
    );
    let p256 = g.gen(
        "P256 <p256@bank.example>",
        "nistp256",
        Some("nistp256"),
        None,
        "never",
    );
    let bcc = g.gen(
        "Hidden <bcc@bank.example>",
        "ed25519",
        Some("cv25519"),
        None,
        "never",
    );
    let expired = g.gen(
        "Expired <expired@partner.example>",
        "ed25519",
        Some("cv25519"),
        Some("20200101T000000!"),
        "1d",
    );
    let revoked = g.gen(
        "Revoked <revoked@partner.example>",
        "ed25519",
        Some("cv25519"),
        None,
        "never",
    );
    g.revoke(&revoked.fpr);
    let signonly = g.gen(
        "Sign only <signonly@partner.example>",
        "ed25519",
        None,
        None,
        "never",
    );
    // The signer, protected by a passphrase.
    g.must(&[
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        SIGNER_PASS,
        "--quick-gen-key",
        "Payroll <payroll@example.com>",
        "ed25519",
        "sign,cert",
        "never",
    ]);
    let signer = g.key("payroll@example.com");

    // The keyring: several certificates per armored file, a binary export, a duplicate.
    let ring = root.join("keyring");
    std::fs::create_dir(&ring).unwrap();
    std::fs::write(
        ring.join("bank.asc"),
        g.export(true, &["rsa@bank.example", "cv@bank.example"]),
    )
    .unwrap();
    std::fs::write(
        ring.join("p256.gpg"),
        g.export(false, &["p256@bank.example"]),
    )
    .unwrap();
    std::fs::write(
        ring.join("cv-again.asc"),
        g.export(true, &["cv@bank.example", "bcc@bank.example"]),
    )
    .unwrap();
    std::fs::write(
        ring.join("partner.asc"),
        g.export(
            true,
            &[
                "expired@partner.example",
                "revoked@partner.example",
                "signonly@partner.example",
            ],
        ),
    )
    .unwrap();
    write_secret(
        &root.join("payroll.sec.asc"),
        &g.export_secret(&["payroll@example.com"], SIGNER_PASS),
    );
    write_secret(
        &root.join("payroll.pass"),
        format!("{SIGNER_PASS}\n").as_bytes(),
    );

    let mut cfg = std::fs::read_to_string(&env.config).unwrap();
    cfg.push_str(
        "\n[openpgp]\nkeyring = \"keyring\"\n\n[[openpgp.signer]]\nsenders = [\"payroll@example.com\"]\n\
         key_file = \"payroll.sec.asc\"\npassphrase_file = \"payroll.pass\"\n",
    );
    std::fs::write(&env.config, cfg).unwrap();
    std::fs::write(
        root.join("policies/50-pgp.toml"),
        "[[rule]]\nname = \"bank gets OpenPGP\"\nto = [\"*@bank.example\"]\nactions = [\"sign\", \"encrypt\"]\nencryption = [\"openpgp\"]\n\n\
         [[rule]]\nname = \"partner encrypted or stripped\"\nto = [\"*@partner.example\"]\nactions = [\"encrypt\"]\nif_no_certificate = \"strip-attachments\"\n\n\
         [[rule]]\nname = \"notices are signed\"\nto = [\"*@sign.example\"]\nactions = [\"sign\"]\n",
    )
    .unwrap();

    // `check` warns about each unusable key, naming fingerprint and reason.
    let out = run(SEALGATE, &["check", "-c", p(&env.config)], None);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (k, why) in [
        (&expired, "expired"),
        (&revoked, "revoked"),
        (&signonly, "sign-only"),
    ] {
        assert!(
            text.lines().any(|l| l.contains(&k.fpr) && l.contains(why)),
            "check does not warn about {why} key {}:\n{text}",
            k.fpr
        );
    }
    assert!(
        !text.contains(&cv.fpr),
        "a good key is not warned about:\n{text}"
    );

    // `explain` names the kind and fingerprint used, and why the others were not used.
    let msg = crlf(
        format!(
            "From: Payroll <payroll@example.com>\nTo: rsa@bank.example, cv@bank.example, p256@bank.example\n\
             Subject: salaries\nMessage-ID: <pgp-1@example.com>\nDate: Mon, 30 Nov 2026 10:00:00 +0000\n\
             MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n\
             The figures for November.\nTrailing space here: \n{}\n",
            "x".repeat(70)
        )
        .as_bytes(),
    );
    let msg_path = work.join("msg.eml");
    std::fs::write(&msg_path, &msg).unwrap();
    let out = run(
        SEALGATE,
        &[
            "explain",
            "-c",
            p(&env.config),
            "--from",
            "payroll@example.com",
            "--to",
            "cv@bank.example",
            "--to",
            "expired@partner.example",
            "--to",
            "revoked@partner.example",
            "--to",
            "signonly@partner.example",
            p(&msg_path),
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("OpenPGP key {}", cv.fpr)), "{text}");
    assert!(text.contains("encrypt (openpgp)"), "{text}");
    assert!(
        text.contains(&format!("signed with OpenPGP key {}", signer.fpr)),
        "{text}"
    );
    for (k, why) in [
        (&expired, "expired"),
        (&revoked, "revoked"),
        (&signonly, "sign-only"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains(&k.fpr) && l.contains(why) && l.contains("strip-attachments")),
            "explain does not say why key {} ({why}) was not used:\n{text}",
            k.fpr
        );
    }

    let up = env.start_good_capture();
    env.start_serve();
    // Encrypted: three recipients named in To, one Bcc (envelope only).
    let reply = send(
        env.port,
        "payroll@example.com",
        &[
            "rsa@bank.example",
            "cv@bank.example",
            "p256@bank.example",
            "bcc@bank.example",
        ],
        &msg,
    );
    assert!(reply.starts_with("250"), "{reply}");
    // Signed only.
    let notice = crlf(
        b"From: payroll@example.com\nTo: notice@sign.example\nSubject: notice\n\
          Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n\
          Gr\xc3\xbc\xc3\x9fe, trailing space \nand a tab\t\n",
    );
    let reply = send(
        env.port,
        "payroll@example.com",
        &["notice@sign.example"],
        &notice,
    );
    assert!(reply.starts_with("250"), "{reply}");
    let got = env.wait_for_messages(&up, 3);

    let shown: BTreeSet<String> = ["rsa@bank.example", "cv@bank.example", "p256@bank.example"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let main = got
        .iter()
        .find(|r| r.rcpts.iter().cloned().collect::<BTreeSet<_>>() == shown)
        .expect("one copy for the recipients named in To");
    let hidden = got
        .iter()
        .find(|r| r.rcpts == ["bcc@bank.example"])
        .expect("a copy of its own for the Bcc recipient");
    let signed = got
        .iter()
        .find(|r| r.rcpts == ["notice@sign.example"])
        .expect("the signed notice");

    let expect_inner = content_entity(&msg);
    let mut expect_main: BTreeSet<String> = BTreeSet::new();
    for k in [&rsa, &cv, &p256] {
        expect_main.extend(k.enc_subkeys.iter().cloned());
    }
    for (copy, expected) in [
        (main, expect_main.clone()),
        (
            hidden,
            bcc.enc_subkeys.iter().cloned().collect::<BTreeSet<_>>(),
        ),
    ] {
        assert_eq!(copy.header("Subject").as_deref(), Some("salaries"));
        let armored = encrypted_part(&copy.bytes);
        let (status, plain, err) = g.decrypt(&work, &armored);
        assert!(
            status.contains("[GNUPG:] DECRYPTION_OKAY"),
            "{status}\n{err}"
        );
        assert!(status.contains("[GNUPG:] GOODMDC"), "{status}\n{err}");
        assert!(
            status
                .lines()
                .any(|l| l.starts_with("[GNUPG:] VALIDSIG ") && l.contains(&signer.fpr)),
            "{status}\n{err}"
        );
        assert_eq!(
            enc_to(&status),
            expected,
            "ENC_TO names exactly the intended keys\n{status}"
        );
        assert_eq!(
            plain, expect_inner,
            "the inner entity arrives byte for byte"
        );
    }
    // No expired subkey, no Bcc key in the shared copy.
    let main_ids = enc_to(&g.decrypt(&work, &encrypted_part(&main.bytes)).0);
    for id in rsa
        .all_enc_subkeys
        .iter()
        .filter(|k| !rsa.enc_subkeys.contains(k))
    {
        assert!(
            !main_ids.contains(id),
            "expired subkey {id} was encrypted to"
        );
    }
    for id in &bcc.enc_subkeys {
        assert!(
            !main_ids.contains(id),
            "the Bcc key {id} shows in the shared copy"
        );
    }

    // RNP reads the same message with the recipients' secret keys.
    let keyfile = work.join("rnp-keys.asc");
    let mut keys = g.export_secret(
        &["rsa@bank.example", "cv@bank.example", "p256@bank.example"],
        "",
    );
    keys.extend_from_slice(&g.export(true, &["payroll@example.com"]));
    std::fs::write(&keyfile, keys).unwrap();
    let enc_path = work.join("main.asc");
    std::fs::write(&enc_path, encrypted_part(&main.bytes)).unwrap();
    let rnp_home = work.join("rnp-home");
    std::fs::create_dir(&rnp_home).unwrap();
    let out = run(
        "rnp",
        &[
            "--homedir",
            p(&rnp_home),
            "--keyfile",
            p(&keyfile),
            "--notty",
            "--password",
            "",
            "--decrypt",
            p(&enc_path),
            "--output",
            "-",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "rnp --decrypt: {err}");
    assert_eq!(out.stdout, expect_inner, "rnp: {err}");
    assert!(
        err.contains("Good signature") || err.contains("Valid signature"),
        "rnp: {err}"
    );

    // The signed notice: multipart/signed, part 1 cut from the raw bytes verifies.
    let ct = signed.header("Content-Type").unwrap_or_default();
    assert!(ct.starts_with("multipart/signed"), "{ct}");
    assert!(ct.contains("micalg=pgp-sha256"), "{ct}");
    assert!(
        ct.contains("protocol=\"application/pgp-signature\""),
        "{ct}"
    );
    let boundary = ct
        .split("boundary=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let raw = &signed.bytes;
    let delim = format!("--{boundary}\r\n");
    let start = mime::find(raw, delim.as_bytes()).unwrap() + delim.len();
    let end =
        start + mime::find(&raw[start..], format!("\r\n--{boundary}\r\n").as_bytes()).unwrap();
    let part1 = raw[start..end].to_vec();
    assert!(part1.iter().all(|&b| b < 0x80), "the signed part is 7-bit");
    let sig_start = mime::find(&raw[end..], b"-----BEGIN PGP SIGNATURE-----").unwrap() + end;
    let sig_end =
        mime::find(&raw[sig_start..], b"-----END PGP SIGNATURE-----").unwrap() + sig_start + 27;
    let sig = raw[sig_start..sig_end].to_vec();
    let status = g.verify(&work, &sig, &part1);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("[GNUPG:] VALIDSIG ") && l.contains(&signer.fpr)),
        "{status}"
    );
    let mut flipped = part1.clone();
    let i = flipped.len() - 3;
    flipped[i] ^= 0x01;
    let status = g.verify(&work, &sig, &flipped);
    assert!(status.contains("[GNUPG:] BADSIG"), "{status}");

    // The audit record names the kind and the fingerprints.
    let audit = std::fs::read_to_string(&env.audit).unwrap();
    assert!(audit.contains("\"kind\":\"openpgp\""), "{audit}");
    assert!(audit.contains(&cv.fpr), "{audit}");
}

/// A small keyring for the library-level tests: one Curve25519 recipient and a signer.
fn small_setup(dir: &Path) -> (Gpg, OpenPgp, GpgKey, GpgKey) {
    small_setup_with(dir, None)
}

fn small_setup_with(dir: &Path, header_protection: Option<bool>) -> (Gpg, OpenPgp, GpgKey, GpgKey) {
    let g = Gpg::new(dir);
    let cv = g.gen(
        "Curve <cv@bank.example>",
        "ed25519",
        Some("cv25519"),
        None,
        "never",
    );
    let signer = g.gen(
        "Payroll <payroll@example.com>",
        "ed25519",
        None,
        None,
        "never",
    );
    let ring = dir.join("ring.asc");
    std::fs::write(&ring, g.export(true, &["cv@bank.example"])).unwrap();
    let sec = dir.join("signer.sec.asc");
    write_secret(&sec, &g.export_secret(&["payroll@example.com"], ""));
    let cfg = OpenPgpConfig {
        keyring: ring,
        signer: vec![PgpSignerConfig {
            senders: vec!["*@example.com".into()],
            key_file: sec,
            passphrase_file: None,
            passphrase_env: None,
        }],
        header_protection,
        ..OpenPgpConfig::default()
    };
    let pgp = OpenPgp::load(&cfg, dir, false).unwrap();
    (g, pgp, cv, signer)
}

#[test]
fn corpus_survives_openpgp_sign_and_encrypt() {
    let dir = tempfile::tempdir().unwrap();
    let (g, pgp, cv, signer) = small_setup(dir.path());
    let keys = Keys {
        smime: None,
        openpgp: Some(&pgp),
        order: &[CryptoKind::Openpgp],
    };
    let plan = Plan {
        actions: Actions {
            crypto: Crypto::planned(true, Some(CryptoKind::Openpgp)),
            ..Actions::default()
        },
        recipients: vec!["cv@bank.example".into()],
        notes: Vec::new(),
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus");
    let mut n = 0;
    for sub in ["rfc", "malformed", "thirdparty"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort();
        for path in files {
            let raw = std::fs::read(&path).unwrap();
            let canon = mime::canonical_crlf(&raw).into_owned();
            if sealgate::transform::openpgp::is_encrypted(&canon).is_some() {
                continue;
            }
            let out = apply_with_keys(&plan, "payroll@example.com", &raw, &keys)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let (status, plain, err) = g.decrypt(dir.path(), &encrypted_part(&out.message));
            let name = path.display();
            assert!(
                status.contains("[GNUPG:] DECRYPTION_OKAY"),
                "{name}: {status}\n{err}"
            );
            assert!(
                status
                    .lines()
                    .any(|l| l.starts_with("[GNUPG:] VALIDSIG ") && l.contains(&signer.fpr)),
                "{name}: {status}\n{err}"
            );
            assert_eq!(enc_to(&status), cv.enc_subkeys.iter().cloned().collect());
            let expected = content_entity(&canon);
            assert!(
                plain == expected,
                "{name}: decrypted entity differs from the original"
            );
            // Decoded leaf content is the same too.
            let leaves = |m: &[u8]| -> Vec<Vec<u8>> {
                let mut v = Vec::new();
                fn walk(e: &mime::Entity<'_>, v: &mut Vec<Vec<u8>>) {
                    match &e.kind {
                        Kind::Multipart { parts, .. } => parts.iter().for_each(|(_, p)| walk(p, v)),
                        _ => v.push(
                            mime::decode_body(e.body, &e.info.transfer_encoding).into_owned(),
                        ),
                    }
                }
                walk(&mime::parse(m), &mut v);
                v
            };
            assert_eq!(leaves(&plain), leaves(&expected), "{name}");
            n += 1;
        }
    }
    assert!(n >= 50, "corpus missing ({n})");
}

#[test]
fn already_encrypted_mail_passes_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (_g, pgp, _cv, _signer) = small_setup(dir.path());
    let keys = Keys {
        smime: None,
        openpgp: Some(&pgp),
        order: &[CryptoKind::Openpgp],
    };
    let actions = Actions::encrypt(true, IfNoKey::Reject);
    let msg = crlf(b"From: payroll@example.com\nTo: cv@bank.example\nSubject: s\nMIME-Version: 1.0\nContent-Type: text/plain\n\nhello\n");
    let (plans, refused) = sealgate::transform::plan_with_keys(
        &[("cv@bank.example".into(), actions.clone())],
        &keys,
        &msg,
    );
    assert!(refused.is_empty());
    let once = apply_with_keys(&plans[0], "payroll@example.com", &msg, &keys)
        .unwrap()
        .message;
    assert!(header_value(&once, "Content-Type")
        .unwrap()
        .starts_with("multipart/encrypted"));
    // Sent again (e.g. a client that already encrypted): not wrapped a second time,
    // even for a recipient without any key.
    let (plans, refused) = sealgate::transform::plan_with_keys(
        &[("nokey@bank.example".into(), actions)],
        &keys,
        &once,
    );
    assert!(refused.is_empty(), "{refused:?}");
    assert!(plans[0].actions.is_pass_through());
    assert!(
        plans[0].notes[0].contains("already encrypted"),
        "{:?}",
        plans[0].notes
    );
    let twice = apply_with_keys(&plans[0], "payroll@example.com", &once, &keys)
        .unwrap()
        .message;
    assert_eq!(twice, once);
}

#[test]
fn keybox_is_refused_with_export_advice() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gpg::new(dir.path());
    g.gen(
        "K <k@bank.example>",
        "ed25519",
        Some("cv25519"),
        None,
        "never",
    );
    let kbx = g.home.join("pubring.kbx");
    assert!(kbx.exists(), "gpg 2.2 writes a keybox");
    let cfg = OpenPgpConfig {
        keyring: kbx,
        ..OpenPgpConfig::default()
    };
    let err = OpenPgp::load(&cfg, dir.path(), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("keybox") && err.contains("gpg --export"),
        "{err}"
    );
    // The same through the binary: `sealgate check` fails and says how to export.
    let mut env = TestEnv::new(EnvOptions::default());
    let mut cfg = std::fs::read_to_string(&env.config).unwrap();
    cfg.push_str(&format!(
        "\n[openpgp]\nkeyring = \"{}\"\n",
        g.home.join("pubring.kbx").display()
    ));
    std::fs::write(&env.config, cfg).unwrap();
    let out = run(SEALGATE, &["check", "-c", p(&env.config)], None);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("gpg --export"), "{text}");
    env.kill_serve();
}

#[test]
fn signing_key_file_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gpg::new(dir.path());
    g.gen("S <s@example.com>", "ed25519", None, None, "never");
    let ring = dir.path().join("ring.asc");
    std::fs::write(&ring, g.export(true, &["s@example.com"])).unwrap();
    let sec = dir.path().join("s.sec.asc");
    write_secret(&sec, &g.export_secret(&["s@example.com"], ""));
    std::fs::set_permissions(&sec, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = OpenPgpConfig {
        keyring: ring,
        signer: vec![PgpSignerConfig {
            senders: vec!["*@example.com".into()],
            key_file: sec.clone(),
            passphrase_file: None,
            passphrase_env: None,
        }],
        ..OpenPgpConfig::default()
    };
    let err = OpenPgp::load(&cfg, dir.path(), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&sec, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(OpenPgp::load(&cfg, dir.path(), false).is_ok());
}

#[test]
fn demo_sends_one_openpgp_message_that_gpg_decrypts() {
    let (tmp, dir) = support::demo::demo_dir();
    let outbox = dir.join("outbox");
    let mut found = None;
    for e in std::fs::read_dir(&outbox).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        if header_value(&bytes, "To").is_some_and(|t| t.contains("dora@bank.example")) {
            found = Some(bytes);
        }
    }
    let msg = found.expect("the demo's OpenPGP sample reached the upstream");
    let g = Gpg::new(tmp.path());
    for f in [
        "recipient-keys/dora@bank.example.sec.asc",
        "certs/openpgp-signing/example.com.asc",
    ] {
        g.must(&["--import", p(&dir.join(f))]);
    }
    let signer = g.key("payroll@example.com");
    let (status, plain, err) = g.decrypt(tmp.path(), &encrypted_part(&msg));
    assert!(
        status.contains("[GNUPG:] DECRYPTION_OKAY"),
        "{status}\n{err}"
    );
    assert!(status.contains("[GNUPG:] GOODMDC"), "{status}\n{err}");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("[GNUPG:] VALIDSIG ") && l.contains(&signer.fpr)),
        "{status}\n{err}"
    );
    assert!(String::from_utf8_lossy(&plain).contains("payroll totals for November"));
}

#[test]
fn header_protection_hides_the_subject_in_what_gpg_decrypts() {
    let dir = tempfile::tempdir().unwrap();
    let (g, pgp, _cv, _signer) = small_setup_with(dir.path(), Some(true));
    let keys = Keys {
        smime: None,
        openpgp: Some(&pgp),
        order: &[CryptoKind::Openpgp],
    };
    let plan = Plan {
        actions: Actions {
            crypto: Crypto::planned(true, Some(CryptoKind::Openpgp)),
            ..Actions::default()
        },
        recipients: vec!["cv@bank.example".into()],
        notes: Vec::new(),
    };
    let msg = crlf(b"From: payroll@example.com\nTo: cv@bank.example\nSubject: salaries of the board\nContent-Type: text/plain\n\nnumbers\n");
    let out = apply_with_keys(&plan, "payroll@example.com", &msg, &keys).unwrap();
    assert_eq!(
        header_value(&out.message, "Subject").as_deref(),
        Some("...")
    );
    assert!(!String::from_utf8_lossy(&out.message).contains("board"));
    let (status, plain, err) = g.decrypt(dir.path(), &encrypted_part(&out.message));
    assert!(
        status.contains("[GNUPG:] DECRYPTION_OKAY"),
        "{status}\n{err}"
    );
    let inner = String::from_utf8_lossy(&plain);
    assert!(inner.contains("hp=\"cipher\""), "{inner}");
    assert!(inner.contains("Subject: salaries of the board"), "{inner}");
    assert!(inner.contains("HP-Outer: Subject: ..."), "{inner}");
}
