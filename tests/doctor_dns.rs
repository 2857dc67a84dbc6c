//! `sealgate doctor` against a small authoritative DNS server and SMTP/TLS upstreams that
//! the test starts on loopback: a good zone gives only OK, a broken zone gives the FAIL
//! and WARN lines an operator needs, each with a fix. No internet.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509NameBuilder, X509};
use sealgate::ops::doctor::{self, DoctorInput, Finding, UpstreamProbe, Verdict};
use sealgate::transform::dkim::{keygen, Algorithm, DkimConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

// ---------------------------------------------------------------------------------------
// A tiny authoritative DNS server: TXT records from a map, over UDP and TCP.

/// name (lower case, no trailing dot) -> TXT records, each a list of character-strings.
type Zone = HashMap<String, Vec<Vec<String>>>;

/// Builds the answer to one DNS query; `None` for anything we cannot parse.
fn dns_answer(query: &[u8], zone: &Zone, udp: bool) -> Option<Vec<u8>> {
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(pos)? as usize;
        pos += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(pos..pos + len)?).to_ascii_lowercase());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*query.get(pos)?, *query.get(pos + 1)?]);
    let question = &query[12..pos + 4];
    let name = labels.join(".");

    let records = zone.get(&name);
    let rcode: u16 = if records.is_some() || zone.keys().any(|k| k.ends_with(&format!(".{name}"))) {
        0
    } else {
        3 // NXDOMAIN
    };
    let answers: &[Vec<String>] = match (qtype, records) {
        (16, Some(r)) => r,
        _ => &[],
    };
    let mut rdata_all = Vec::new();
    for record in answers {
        let mut rdata = Vec::new();
        for s in record {
            assert!(s.len() <= 255, "test zone string too long");
            rdata.push(s.len() as u8);
            rdata.extend_from_slice(s.as_bytes());
        }
        rdata_all.extend_from_slice(&[0xC0, 0x0C, 0, 16, 0, 1, 0, 0, 0, 60]);
        rdata_all.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        rdata_all.extend_from_slice(&rdata);
    }
    let rd = u16::from_be_bytes([query[2], query[3]]) & 0x0100;
    let mut flags = 0x8000 | 0x0400 | rd | rcode;
    let mut ancount = answers.len() as u16;
    if udp && 12 + question.len() + rdata_all.len() > 512 {
        flags |= 0x0200; // TC: ask again over TCP
        ancount = 0;
        rdata_all.clear();
    }
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query[0..2]);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&ancount.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    out.extend_from_slice(&rdata_all);
    Some(out)
}

/// Starts the server on 127.0.0.1 (same port for UDP and TCP); it lives until the test ends.
fn start_dns(zone: Zone) -> SocketAddr {
    let zone = Arc::new(zone);
    let (udp, tcp) = loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()) {
            break (udp, tcp);
        }
    };
    let addr = udp.local_addr().unwrap();
    let z = zone.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = udp.recv_from(&mut buf) {
            if let Some(answer) = dns_answer(&buf[..n], &z, true) {
                let _ = udp.send_to(&answer, peer);
            }
        }
    });
    std::thread::spawn(move || {
        for stream in tcp.incoming() {
            let Ok(mut stream) = stream else { continue };
            let zone = zone.clone();
            std::thread::spawn(move || loop {
                let mut len = [0u8; 2];
                if stream.read_exact(&mut len).is_err() {
                    return;
                }
                let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
                if stream.read_exact(&mut query).is_err() {
                    return;
                }
                let Some(answer) = dns_answer(&query, &zone, false) else {
                    return;
                };
                let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&answer);
                if stream.write_all(&framed).is_err() {
                    return;
                }
            });
        }
    });
    addr
}

/// Adds a TXT record given as one value (split into 255-byte strings like a zone file).
fn txt(zone: &mut Zone, name: &str, value: &str) {
    let strings = value
        .as_bytes()
        .chunks(255)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    zone.entry(name.to_string()).or_default().push(strings);
}

/// Adds the record exactly as `keygen` printed it: `name. IN TXT ( "a" "b" )`.
fn printed_record(zone: &mut Zone, record: &str) {
    let (name, rest) = record.split_once(' ').unwrap();
    let strings = rest
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    zone.entry(name.trim_end_matches('.').to_string())
        .or_default()
        .push(strings);
}

// ---------------------------------------------------------------------------------------
// Certificates and a STARTTLS upstream

struct Ca {
    cert: X509,
    key: PKey<Private>,
}

fn name(cn: &str) -> openssl::x509::X509Name {
    let mut n = X509NameBuilder::new().unwrap();
    n.append_entry_by_text("CN", cn).unwrap();
    n.build()
}

fn new_ca(cn: &str) -> Ca {
    let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name(cn)).unwrap();
    b.set_issuer_name(&name(cn)).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(3650).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    Ca {
        cert: b.build(),
        key,
    }
}

/// A leaf valid from `from_days` to `to_days` relative to now, with a DNS or e-mail SAN.
fn leaf(
    ca: &Ca,
    cn: &str,
    dns: Option<&str>,
    email: Option<&str>,
    from_days: i64,
    to_days: i64,
) -> (X509, PKey<Private>) {
    let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let mut serial = openssl::bn::BigNum::new().unwrap();
    serial
        .rand(64, openssl::bn::MsbOption::MAYBE_ZERO, false)
        .unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name(cn)).unwrap();
    b.set_issuer_name(ca.cert.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(now + from_days * 86_400).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now + to_days * 86_400 + 3_600).unwrap())
        .unwrap();
    let mut san = SubjectAlternativeName::new();
    if let Some(d) = dns {
        san.dns(d);
    }
    if let Some(e) = email {
        san.email(e);
    }
    let san = san.build(&b.x509v3_context(Some(&ca.cert), None)).unwrap();
    b.append_extension(san).unwrap();
    b.sign(&ca.key, MessageDigest::sha256()).unwrap();
    (b.build(), key)
}

/// An SMTP server on 127.0.0.1 that offers STARTTLS (or not) and then completes a TLS
/// handshake with `cert`; it never accepts mail.
async fn start_upstream(cert: Option<(X509, PKey<Private>, X509)>, offer_starttls: bool) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = cert.map(|(leaf, key, ca)| {
        let chain = vec![
            rustls_pki_types::CertificateDer::from(leaf.to_der().unwrap()),
            rustls_pki_types::CertificateDer::from(ca.to_der().unwrap()),
        ];
        let key =
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.private_key_to_pkcs8().unwrap().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                reader
                    .get_mut()
                    .write_all(b"220 upstream.test ESMTP\r\n")
                    .await
                    .unwrap();
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let cmd = line.trim().to_ascii_uppercase();
                    if cmd.starts_with("EHLO") {
                        let reply: &[u8] = if offer_starttls {
                            b"250-upstream.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
                        } else {
                            b"250-upstream.test\r\n250 PIPELINING\r\n"
                        };
                        reader.get_mut().write_all(reply).await.unwrap();
                    } else if cmd == "STARTTLS" && offer_starttls {
                        reader
                            .get_mut()
                            .write_all(b"220 go ahead\r\n")
                            .await
                            .unwrap();
                        if let Some(acceptor) = acceptor {
                            if let Ok(tls) = acceptor.accept(reader.into_inner()).await {
                                // RFC 3207: no new greeting; answer commands until QUIT.
                                let mut tls = tokio::io::BufReader::new(tls);
                                let mut cmd = String::new();
                                while tls.read_line(&mut cmd).await.unwrap_or(0) > 0 {
                                    let reply: &[u8] =
                                        if cmd.to_ascii_uppercase().starts_with("QUIT") {
                                            b"221 bye\r\n"
                                        } else {
                                            b"250 upstream.test\r\n"
                                        };
                                    let _ = tls.get_mut().write_all(reply).await;
                                    cmd.clear();
                                }
                            }
                        }
                        return;
                    } else {
                        reader
                            .get_mut()
                            .write_all(b"502 5.5.1 no\r\n")
                            .await
                            .unwrap();
                    }
                }
            });
        }
    });
    port
}

fn write_pem(dir: &Path, file: &str, cert: &X509) -> PathBuf {
    let p = dir.join(file);
    std::fs::write(&p, cert.to_pem().unwrap()).unwrap();
    p
}

fn dkim_entry(domain: &str, selector: &str, key_file: &str) -> DkimConfig {
    DkimConfig {
        domain: domain.into(),
        selector: selector.into(),
        key_file: key_file.into(),
        sign_subdomains: false,
        expire: None,
        max_key_age: Some("365d".into()),
    }
}

fn find<'a>(findings: &'a [Finding], check: &str, subject: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.check == check && f.subject == subject)
        .unwrap_or_else(|| {
            panic!(
                "no {check} finding for {subject} in:\n{}",
                doctor::render_text(findings)
            )
        })
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn good_zone_and_upstream_give_only_ok() {
    let dir = tempfile::tempdir().unwrap();
    let d = "good.example";
    let mut zone = Zone::new();
    let rsa = keygen(
        d,
        "sg-rsa",
        Algorithm::Rsa,
        2048,
        &dir.path().join("rsa.key"),
    )
    .unwrap();
    let ed = keygen(
        d,
        "sg-ed",
        Algorithm::Ed25519,
        0,
        &dir.path().join("ed.key"),
    )
    .unwrap();
    printed_record(&mut zone, &rsa);
    printed_record(&mut zone, &ed);
    txt(&mut zone, d, "google-site-verification=abc123");
    txt(
        &mut zone,
        d,
        "v=spf1 ip4:192.0.2.10 include:_spf.good.example -all",
    );
    txt(
        &mut zone,
        &format!("_dmarc.{d}"),
        "v=DMARC1; p=reject; rua=mailto:dmarc@good.example",
    );
    txt(
        &mut zone,
        &format!("_mta-sts.{d}"),
        "v=STSv1; id=20261101T000000",
    );
    txt(
        &mut zone,
        &format!("_smtp._tls.{d}"),
        "v=TLSRPTv1; rua=mailto:tls@good.example",
    );
    let dns = start_dns(zone);

    let ca = new_ca("Test Upstream CA");
    let (cert, key) = leaf(&ca, "localhost", Some("localhost"), None, -1, 90);
    let ca_file = write_pem(dir.path(), "upstream-ca.pem", &ca.cert);
    let port = start_upstream(Some((cert, key, ca.cert.clone())), true).await;
    let (smime, _) = leaf(&ca, "Payroll", None, Some("payroll@good.example"), -1, 400);
    let smime_file = write_pem(dir.path(), "payroll.pem", &smime);

    let input = DoctorInput {
        domains: vec![d.into()],
        dkim: vec![
            dkim_entry(d, "sg-rsa", "rsa.key"),
            dkim_entry(d, "sg-ed", "ed.key"),
        ],
        base: dir.path().to_path_buf(),
        upstream: Some(UpstreamProbe {
            host: "localhost".into(),
            port,
            implicit_tls: false,
            ca_file: Some(ca_file),
        }),
        certificates: vec![smime_file],
        dns: Some(dns),
    };
    let findings = doctor::run(&input).await;
    let text = doctor::render_text(&findings);
    assert!(!doctor::has_failures(&findings), "{text}");
    assert!(findings.iter().all(|f| f.verdict == Verdict::Ok), "{text}");
    for line in text.lines() {
        assert!(line.starts_with("OK   "), "{line}");
    }
    for (check, subject) in [
        ("dkim", "sg-rsa._domainkey.good.example"),
        ("dkim", "sg-ed._domainkey.good.example"),
        ("spf", d),
        ("dmarc", "_dmarc.good.example"),
        ("mta-sts", "_mta-sts.good.example"),
        ("tls-rpt", "_smtp._tls.good.example"),
    ] {
        find(&findings, check, subject);
    }
    let tls = find(&findings, "upstream-tls", &format!("localhost:{port}"));
    assert!(tls.detail.starts_with("TLS 1.3"), "{}", tls.detail);
    assert!(tls.detail.contains("expires in 90 days"), "{}", tls.detail);
    assert!(find(&findings, "dmarc", "_dmarc.good.example")
        .detail
        .contains("policy reject"));
    assert!(find(&findings, "dkim", "sg-rsa._domainkey.good.example")
        .detail
        .contains("rsa 2048 bits"));
    let json = serde_json::to_value(&findings).unwrap();
    assert_eq!(json[0]["verdict"], "ok");
}

#[tokio::test]
async fn broken_zone_gives_fail_and_warn_with_fixes() {
    let dir = tempfile::tempdir().unwrap();
    let d = "broken.example";
    let mut zone = Zone::new();
    // The RSA record publishes some other key; the Ed25519 record is missing.
    keygen(
        d,
        "sg-rsa",
        Algorithm::Rsa,
        2048,
        &dir.path().join("rsa.key"),
    )
    .unwrap();
    let stale = keygen(
        d,
        "sg-rsa",
        Algorithm::Rsa,
        2048,
        &dir.path().join("old-rsa.key"),
    )
    .unwrap();
    printed_record(&mut zone, &stale);
    keygen(
        d,
        "sg-ed",
        Algorithm::Ed25519,
        0,
        &dir.path().join("ed.key"),
    )
    .unwrap();
    // An old key: older than max_key_age.
    let old = SystemTime::now() - Duration::from_secs(400 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(dir.path().join("ed.key"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    txt(&mut zone, d, "v=spf1 ip4:192.0.2.10 -all");
    txt(&mut zone, d, "v=spf1 include:other.example ~all");
    txt(&mut zone, &format!("_dmarc.{d}"), "v=DMARC1; p=none");
    txt(&mut zone, &format!("_smtp._tls.{d}"), "v=TLSRPTv1;");
    // A subdomain with no key and no SPF; DMARC is inherited from the parent.
    txt(&mut zone, "sub.broken.example", "just some text");
    let dns = start_dns(zone);

    let ca = new_ca("Test CA");
    let (soon, _) = leaf(&ca, "Soon", None, Some("soon@broken.example"), -300, 10);
    let (gone, _) = leaf(&ca, "Gone", None, Some("gone@broken.example"), -400, -5);
    let soon_file = write_pem(dir.path(), "soon.pem", &soon);
    let gone_file = write_pem(dir.path(), "gone.pem", &gone);
    let port = start_upstream(None, false).await;

    let input = DoctorInput {
        domains: vec![d.into(), "sub.broken.example".into()],
        dkim: vec![
            dkim_entry(d, "sg-rsa", "rsa.key"),
            dkim_entry(d, "sg-ed", "ed.key"),
        ],
        base: dir.path().to_path_buf(),
        upstream: Some(UpstreamProbe {
            host: "127.0.0.1".into(),
            port,
            implicit_tls: false,
            ca_file: None,
        }),
        certificates: vec![soon_file.clone(), gone_file.clone()],
        dns: Some(dns),
    };
    let findings = doctor::run(&input).await;
    let text = doctor::render_text(&findings);
    println!("{text}");
    assert!(doctor::has_failures(&findings));

    let rsa = find(&findings, "dkim", "sg-rsa._domainkey.broken.example");
    assert_eq!(rsa.verdict, Verdict::Fail, "{text}");
    assert!(
        rsa.detail.starts_with("published key does not match "),
        "{}",
        rsa.detail
    );
    assert!(
        rsa.detail.contains(
            "rsa.key (fix: publish sg-rsa._domainkey.broken.example. IN TXT ( \"v=DKIM1; k=rsa; p="
        ),
        "{}",
        rsa.detail
    );
    assert!(
        text.contains("FAIL dkim sg-rsa._domainkey.broken.example: published key does not match"),
        "{text}"
    );

    let ed = find(&findings, "dkim", "sg-ed._domainkey.broken.example");
    assert_eq!(ed.verdict, Verdict::Fail);
    assert!(
        ed.detail.contains("no DKIM record published") && ed.detail.contains("k=ed25519"),
        "{}",
        ed.detail
    );

    let age = find(
        &findings,
        "dkim-key",
        &dir.path().join("ed.key").display().to_string(),
    );
    assert_eq!(age.verdict, Verdict::Warn);
    assert!(age.detail.contains("400 days old"), "{}", age.detail);

    let spf = find(&findings, "spf", d);
    assert_eq!(spf.verdict, Verdict::Fail);
    assert!(spf.detail.starts_with("2 SPF records"), "{}", spf.detail);
    assert_eq!(
        find(&findings, "spf", "sub.broken.example").verdict,
        Verdict::Fail
    );

    let dmarc = find(&findings, "dmarc", "_dmarc.broken.example");
    assert_eq!(dmarc.verdict, Verdict::Warn);
    assert!(dmarc.detail.starts_with("policy none"), "{}", dmarc.detail);
    let sub_dmarc = find(&findings, "dmarc", "_dmarc.sub.broken.example");
    assert!(
        sub_dmarc
            .detail
            .contains("inherited from _dmarc.broken.example"),
        "{}",
        sub_dmarc.detail
    );

    assert_eq!(
        find(&findings, "mta-sts", "_mta-sts.broken.example").verdict,
        Verdict::Warn
    );
    assert_eq!(
        find(&findings, "tls-rpt", "_smtp._tls.broken.example").verdict,
        Verdict::Fail
    );
    let no_key = find(&findings, "dkim", "sub.broken.example");
    assert_eq!(no_key.verdict, Verdict::Warn);
    assert!(no_key
        .detail
        .contains("sealgate dkim-keygen --domain sub.broken.example"));

    let up = find(&findings, "upstream-tls", &format!("127.0.0.1:{port}"));
    assert_eq!(up.verdict, Verdict::Fail);
    assert!(
        up.detail.contains("does not offer STARTTLS"),
        "{}",
        up.detail
    );

    let soon = find(&findings, "certificate", &soon_file.display().to_string());
    assert_eq!(soon.verdict, Verdict::Warn, "{}", soon.detail);
    assert!(
        soon.detail.contains("expires in 10 days"),
        "{}",
        soon.detail
    );
    let gone = find(&findings, "certificate", &gone_file.display().to_string());
    assert_eq!(gone.verdict, Verdict::Fail);
    assert!(gone.detail.contains("expired"), "{}", gone.detail);

    // Every line that is not OK says what to do.
    for line in text.lines().filter(|l| !l.starts_with("OK")) {
        assert!(line.contains("fix:"), "no fix in: {line}");
    }
}

#[tokio::test]
async fn upstream_certificate_from_another_ca_fails() {
    let dir = tempfile::tempdir().unwrap();
    let real = new_ca("Real CA");
    let other = new_ca("Other CA");
    let (cert, key) = leaf(&real, "localhost", Some("localhost"), None, -1, 90);
    let port = start_upstream(Some((cert, key, real.cert.clone())), true).await;
    let ca_file = write_pem(dir.path(), "other-ca.pem", &other.cert);
    let input = DoctorInput {
        base: dir.path().to_path_buf(),
        upstream: Some(UpstreamProbe {
            host: "localhost".into(),
            port,
            implicit_tls: false,
            ca_file: Some(ca_file),
        }),
        ..Default::default()
    };
    let findings = doctor::run(&input).await;
    assert_eq!(findings.len(), 1, "{}", doctor::render_text(&findings));
    assert_eq!(findings[0].verdict, Verdict::Fail);
    assert!(
        findings[0].detail.starts_with("TLS handshake failed"),
        "{}",
        findings[0].detail
    );
    assert!(
        findings[0].detail.contains("fix: set upstream.ca_file"),
        "{}",
        findings[0].detail
    );
}

#[tokio::test]
async fn unreachable_dns_server_fails_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    keygen(
        "example.com",
        "s",
        Algorithm::Ed25519,
        0,
        &dir.path().join("ed.key"),
    )
    .unwrap();
    // A bound UDP socket that never answers; nothing listens on TCP.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let input = DoctorInput {
        dkim: vec![dkim_entry("example.com", "s", "ed.key")],
        base: dir.path().to_path_buf(),
        dns: Some(silent.local_addr().unwrap()),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let findings = doctor::run(&input).await;
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
    let dkim = find(&findings, "dkim", "s._domainkey.example.com");
    assert_eq!(dkim.verdict, Verdict::Fail);
    assert!(
        dkim.detail.starts_with("DNS lookup failed"),
        "{}",
        dkim.detail
    );
}
