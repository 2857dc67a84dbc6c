//! `sealgate explain`: the dry run. Runs the live path's own decision
//! ([`crate::pipeline`]: receipt repairs, header From check, policy, planning, transforms
//! and DKIM) on one message and shows what would happen, per recipient: rules
//! and evidence, actions, the certificates and keys chosen; with `--write DIR` it stores
//! the outgoing copies there instead of sending anything.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::json;

use crate::config::Config;
use crate::pipeline::Trace;
use crate::policy::verdict::RecipientVerdict;
use crate::runtime::Runtime;
use crate::smtp::ingest::SessionInfo;
use crate::smtp::session::Transaction;

/// Both renderings of one dry run.
pub struct ExplainReport {
    pub text: String,
    pub json: serde_json::Value,
}

/// Writes an outgoing copy readable by its owner only: a zip's password message sits
/// beside the zip, and plaintext must stay as private as the spool.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::secret::write_private(path, bytes).with_context(|| format!("{}", path.display()))
}

/// Makes `dir` a directory only its owner can enter, as the copies it receives are as
/// private as the spool: created with mode 0700, or an existing one of ours set to 0700.
/// A symbolic link is refused (it may lead anywhere, e.g. into another user's
/// directory), and so is a directory owned by someone else.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
    if !dir.exists() && std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("{}", dir.display()))?;
    }
    // Opened without following a link, then checked and changed through the descriptor:
    // nothing can swap the directory for a link in between.
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(dir)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => anyhow::anyhow!(
                "{}: is a symbolic link; --write needs a real directory (give the link's target)",
                dir.display()
            ),
            // O_DIRECTORY on a link answers ENOTDIR on Linux, ELOOP elsewhere.
            Some(libc::ENOTDIR)
                if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) =>
            {
                anyhow::anyhow!(
                    "{}: is a symbolic link; --write needs a real directory (give the link's target)",
                    dir.display()
                )
            }
            Some(libc::ENOTDIR) => {
                anyhow::anyhow!("{}: exists and is not a directory", dir.display())
            }
            _ => anyhow::Error::new(e).context(format!("{}", dir.display())),
        })?;
    let m = handle
        .metadata()
        .with_context(|| format!("{}", dir.display()))?;
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if m.uid() != me {
        anyhow::bail!(
            "{}: owned by uid {}, not by you (uid {me}); --write needs a directory of your own",
            dir.display(),
            m.uid()
        );
    }
    handle
        .set_permissions(std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("{}: cannot set mode 0700", dir.display()))
}

/// Runs the dry run: the recipients pass the RCPT-time policy as in a session, then the
/// survivors go through [`crate::pipeline::decide_traced`], the very path `serve` takes
/// at end of DATA (nothing is spooled), and the result is rendered.
pub fn run(
    cfg: &Config,
    client: &str,
    from: &str,
    to: &[String],
    message: &[u8],
    write: Option<&Path>,
) -> anyhow::Result<ExplainReport> {
    let rt = Runtime::from_config(cfg.clone())?;
    let env = crate::policy::Envelope { client, from };
    let mut refused_json = Vec::new();
    // As in a live session: a sender refused at MAIL (a client's allowed_senders, or a
    // sender whose bounces could go nowhere) ends the transaction before any RCPT.
    let sender_refused = crate::smtp::ingest::check_sender(&rt, client, from)
        .err()
        .map(|r| r.to_string());
    let rcpt_refused: Vec<(String, String)> = to
        .iter()
        .filter(|_| sender_refused.is_none())
        .filter_map(|r| {
            let keys = rt.keys();
            let has_cert = |a: &str| keys.has_key(a);
            rt.policy
                .judge_rcpt(&env, r, &has_cert)
                .err()
                .map(|rej| (r.clone(), format!("{} ({})", rej.reason, rej.by)))
        })
        .collect();
    // As in a live session: recipients refused at RCPT are simply not part of the message.
    let survivors: Vec<String> = to
        .iter()
        .filter(|_| sender_refused.is_none())
        .filter(|r| !rcpt_refused.iter().any(|(x, _)| x == *r))
        .cloned()
        .collect();
    let mut trace = Trace::default();
    let decision = if survivors.is_empty() {
        None
    } else {
        let info = SessionInfo {
            client: client.to_string(),
            helo: "explain".to_string(),
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: false,
        };
        let tx = Transaction {
            from: from.to_string(),
            rcpts: survivors.clone(),
            declared_size: None,
            // As `sealgate sendmail` submits: SMTPUTF8 only for a non-ASCII address.
            smtputf8: !from.is_ascii() || survivors.iter().any(|r| !r.is_ascii()),
            body_8bit: message.iter().any(|&b| b >= 0x80),
        };
        let id = crate::queue::spool::new_id();
        Some(crate::pipeline::decide_traced(
            &rt,
            &info,
            &tx,
            &id,
            message.to_vec(),
            &mut trace,
        ))
    };
    // What the policy judged: the message as repaired at receipt (Bcc fields gone,
    // trace headers added); the message as given when it was refused before that.
    let judged = match &trace.message {
        Some(m) => m.clone(),
        None => crate::pipeline::receipt::without_blind_copies(message.to_vec()),
    };
    let explanation = rt.policy.explain(&env, to, &judged);
    let mut text = explanation.to_string();
    for r in &trace.repairs {
        let _ = writeln!(text, "repaired at receipt: {r}");
    }
    let mut copies = Vec::new();
    for (r, v) in &trace.verdicts {
        if let RecipientVerdict::Reject { reason, by } = v {
            refused_json
                .push(json!({"rcpt": r, "stage": "data", "reason": format!("{reason} ({by})")}));
        }
    }
    let _ = writeln!(text, "\noutgoing copies:");
    for (r, why) in &rcpt_refused {
        let _ = writeln!(text, "  <{r}>: refused at RCPT: {why}");
        if why.contains("requires encryption") {
            if let Err(keys_why) = rt
                .keys()
                .choose(r, &crate::policy::verdict::Actions::default())
            {
                let _ = writeln!(text, "    why: {keys_why}");
            }
        }
        refused_json.push(json!({"rcpt": r, "stage": "rcpt", "reason": why}));
    }
    let any_reject = trace
        .verdicts
        .iter()
        .any(|(_, v)| matches!(v, RecipientVerdict::Reject { .. }));
    let reply = match &decision {
        Some(Err((reply, _))) => Some(reply.to_string()),
        _ => sender_refused.clone(),
    };
    if let Some(why) = &sender_refused {
        let _ = writeln!(text, "  none: the sender is refused at MAIL: {why}");
    } else if any_reject {
        let _ = writeln!(text, "  none: a content rule refuses the message for a recipient, so it is refused whole (550 5.7.1)");
    } else if survivors.is_empty() {
        let _ = writeln!(text, "  none: every recipient is refused at RCPT");
    } else if trace.message.is_none() || trace.verdicts.is_empty() {
        // Refused by a receipt step (limits, header block, 7-bit, header From).
        if let Some(reply) = &reply {
            let _ = writeln!(text, "  none: refused at end of DATA: {reply}");
        }
    }
    for (r, why) in &trace.unplanned {
        let _ = writeln!(text, "  <{r}>: refused: {why}");
        refused_json.push(json!({"rcpt": r, "stage": "data", "reason": why}));
    }
    if let Some(dir) = write {
        private_dir(dir)?;
    }
    let made: &[(crate::queue::spool::Envelope, Vec<u8>)] = match &decision {
        Some(Ok(d)) => &d.copies,
        _ => &trace.partial,
    };
    if !any_reject && trace.unplanned.is_empty() {
        for (n, plan) in trace.plans.iter().enumerate() {
            let _ = writeln!(text, "  copy {} to {}:", n + 1, plan.recipients.join(", "));
            let _ = writeln!(text, "    actions: {}", describe(&plan.actions));
            let mut certs = Vec::new();
            let kind = plan
                .actions
                .kind
                .unwrap_or(crate::policy::verdict::CryptoKind::Smime);
            if plan.actions.encrypt && kind == crate::policy::verdict::CryptoKind::Openpgp {
                if let Some(p) = &rt.openpgp {
                    for r in &plan.recipients {
                        match p.key_for(r) {
                            Ok(k) => {
                                let _ = writeln!(
                                    text,
                                    "    encrypt to <{r}>: OpenPGP key {} ({}, {}; encryption subkeys {})",
                                    k.fingerprint,
                                    k.path.display(),
                                    k.algorithm,
                                    k.subkeys.join(", ")
                                );
                                for s in &k.skipped {
                                    let _ = writeln!(text, "      not used: key {s}");
                                }
                                certs.push(json!({"rcpt": r, "kind": "openpgp", "file": k.path, "fingerprint": k.fingerprint, "subkeys": k.subkeys, "algorithm": k.algorithm, "not_used": k.skipped}));
                            }
                            Err(e) => {
                                let _ = writeln!(text, "    encrypt to <{r}>: {e}");
                            }
                        }
                    }
                }
            } else if plan.actions.encrypt {
                if let Some(s) = &rt.smime {
                    for r in &plan.recipients {
                        match s.certificate_for(r) {
                            Ok(c) => {
                                let _ = writeln!(
                                    text,
                                    "    encrypt to <{r}>: {} ({}, {}, until {}, sha256 {})",
                                    c.path.display(),
                                    c.subject,
                                    c.key,
                                    c.not_after,
                                    &c.fingerprint[..16.min(c.fingerprint.len())]
                                );
                                certs.push(json!({"rcpt": r, "file": c.path, "subject": c.subject, "key": c.key, "not_after": c.not_after, "sha256": c.fingerprint}));
                            }
                            Err(e) => {
                                let _ = writeln!(
                                    text,
                                    "    encrypt to <{r}>: no usable certificate: {e}"
                                );
                            }
                        }
                    }
                }
            }
            let pgp_signs = plan.actions.sign
                && (plan.actions.kind == Some(crate::policy::verdict::CryptoKind::Openpgp)
                    || (!plan.actions.encrypt
                        && rt.keys().sign_kind(from, &plan.actions)
                            == Some(crate::policy::verdict::CryptoKind::Openpgp)));
            let signer = if pgp_signs {
                rt.openpgp.as_ref().and_then(|p| p.signer_for(from)).map(|si| {
                    let _ = writeln!(text, "    sign as: OpenPGP key {} (signing key {}, {}, {})", si.fingerprint, si.signing_key, si.algorithm, si.key_file.display());
                    json!({"kind": "openpgp", "file": si.key_file, "fingerprint": si.fingerprint, "signing_key": si.signing_key, "algorithm": si.algorithm})
                })
            } else if plan.actions.sign {
                rt.smime.as_ref().and_then(|s| s.signer_for(from)).map(|si| {
                    let _ = writeln!(text, "    sign as: {} ({}, {})", si.cert_path.display(), si.subject, si.key);
                    json!({"file": si.cert_path, "subject": si.subject, "key": si.key, "opaque": si.opaque})
                })
            } else {
                None
            };
            let mut file = None;
            let mut dkim = Vec::new();
            let mut error = None;
            match trace.outcomes.get(n) {
                Some(o) if o.error.is_none() => {
                    let Some((_, signed)) = made.get(o.index) else {
                        continue;
                    };
                    let keys = rt.dkim.signing_keys_for(signed);
                    for k in &keys {
                        let _ = writeln!(
                            text,
                            "    DKIM: d={} s={} ({:?}, {})",
                            k.domain,
                            k.selector,
                            k.algorithm,
                            k.key_file.display()
                        );
                        dkim.push(json!(k));
                    }
                    if keys.is_empty() {
                        let _ = writeln!(text, "    DKIM: no key for the From domain; not signed");
                    }
                    for note in &o.notes {
                        let _ = writeln!(text, "    {note}");
                    }
                    if let Some(dir) = write {
                        let p = dir.join(format!("copy-{}.eml", n + 1));
                        write_private(&p, signed)?;
                        let _ = writeln!(text, "    written: {}", p.display());
                        file = Some(p.display().to_string());
                        for k in 0..o.extras {
                            let Some((extra_env, extra)) = made.get(o.index + 1 + k) else {
                                continue;
                            };
                            let p = dir.join(format!("copy-{}-extra-{}.eml", n + 1, k + 1));
                            write_private(&p, extra)?;
                            let _ = writeln!(
                                text,
                                "    written: {} (to {})",
                                p.display(),
                                extra_env.rcpts.join(", ")
                            );
                        }
                    }
                }
                Some(o) => {
                    for n in &o.notes {
                        let _ = writeln!(text, "    {n}");
                    }
                    let e = o.error.clone().unwrap_or_default();
                    let _ = writeln!(text, "    would fail: {e}");
                    error = Some(e);
                }
                None => {
                    let _ = writeln!(
                        text,
                        "    not made: an earlier copy failed, so the message is refused"
                    );
                }
            }
            copies.push(json!({"recipients": plan.recipients, "actions": plan.actions, "certificates": certs,
                               "signer": signer, "dkim": dkim, "notes": plan.notes, "file": file, "error": error}));
        }
    }
    if let Some(reply) = &reply {
        let _ = writeln!(text, "\nreply at end of DATA: {reply}");
    }
    let accepted = matches!(decision, Some(Ok(_)));
    let json = json!({"explanation": explanation, "refused": refused_json, "copies": copies,
                      "accepted": accepted, "reply": reply, "repairs": trace.repairs});
    Ok(ExplainReport { text, json })
}

fn describe(a: &crate::policy::verdict::Actions) -> String {
    let mut v = Vec::new();
    if a.strip_attachments {
        v.push("strip-attachments".to_string());
    }
    if a.zip_attachments {
        v.push(format!(
            "zip-attachments (password to {})",
            a.password_to.as_deref().unwrap_or("the sender")
        ));
    }
    if a.sign {
        v.push("sign".into());
    }
    if a.encrypt {
        match a.kind {
            Some(k) => v.push(format!("encrypt ({})", k.name())),
            None => v.push("encrypt".into()),
        }
    }
    if v.is_empty() {
        "relay unchanged (DKIM only)".into()
    } else {
        v.join(", ")
    }
}
