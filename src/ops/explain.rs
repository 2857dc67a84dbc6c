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
    let at_rcpt = RcptTime::judge(&rt, &env, to);
    let mut trace = Trace::default();
    let decision = (!at_rcpt.survivors.is_empty())
        .then(|| decide(&rt, client, from, &at_rcpt.survivors, message, &mut trace));
    // What the policy judged: the message as repaired at receipt (Bcc fields gone,
    // trace headers added), read as the pipeline read it; the message as given when it
    // was refused before that.
    let explanation = match &trace.message {
        Some(m) => rt
            .policy
            .explain_read_message(&env, to, &crate::message::Message::new(m)),
        None => rt.policy.explain(
            &env,
            to,
            &crate::pipeline::receipt::without_blind_copies(message.to_vec()),
        ),
    };
    let mut text = explanation.to_string();
    for r in &trace.repairs {
        let _ = writeln!(text, "repaired at receipt: {r}");
    }
    let reply = match &decision {
        Some(Err((reply, _))) => Some(reply.to_string()),
        _ => at_rcpt.sender_refused.clone(),
    };
    let refused_json = render_refusals(&rt, &at_rcpt, &trace, reply.as_deref(), &mut text);
    if let Some(dir) = write {
        private_dir(dir)?;
    }
    let made: &[(crate::queue::spool::Envelope, Vec<u8>)] = match &decision {
        Some(Ok(d)) => &d.copies,
        _ => &trace.partial,
    };
    let any_reject = trace
        .verdicts
        .iter()
        .any(|(_, v)| matches!(v, RecipientVerdict::Reject { .. }));
    let mut copies = Vec::new();
    if !any_reject && trace.unplanned.is_empty() {
        for (n, plan) in trace.plans.iter().enumerate() {
            let outcome = trace.outcomes.get(n);
            if let Some(copy) = render_copy(&rt, from, n, plan, outcome, made, write, &mut text)? {
                copies.push(copy);
            }
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

/// What a live session decides before DATA: the sender at MAIL, each recipient at RCPT.
struct RcptTime {
    /// Why MAIL would be refused (then no recipient is tried).
    sender_refused: Option<String>,
    /// Recipients refused at RCPT, with the reason.
    rcpt_refused: Vec<(String, String)>,
    /// Recipients that reach DATA, in the order given.
    survivors: Vec<String>,
}

impl RcptTime {
    fn judge(rt: &Runtime, env: &crate::policy::Envelope<'_>, to: &[String]) -> RcptTime {
        // As in a live session: a sender refused at MAIL (a client's allowed_senders, or a
        // sender whose bounces could go nowhere) ends the transaction before any RCPT.
        let sender_refused = crate::smtp::ingest::check_sender(rt, env.client, env.from)
            .err()
            .map(|r| r.to_string());
        let keys = rt.keys();
        let has_cert = |a: &str| keys.has_key(a);
        let rcpt_refused: Vec<(String, String)> = to
            .iter()
            .filter(|_| sender_refused.is_none())
            .filter_map(|r| {
                rt.policy
                    .judge_rcpt(env, r, &has_cert)
                    .err()
                    .map(|rej| (r.clone(), format!("{} ({})", rej.reason, rej.by)))
            })
            .collect();
        // As in a live session: recipients refused at RCPT are simply not part of the message.
        let survivors = to
            .iter()
            .filter(|_| sender_refused.is_none())
            .filter(|r| !rcpt_refused.iter().any(|(x, _)| x == *r))
            .cloned()
            .collect();
        RcptTime {
            sender_refused,
            rcpt_refused,
            survivors,
        }
    }
}

/// The end of DATA for the survivors, as a local session would submit it.
fn decide(
    rt: &Runtime,
    client: &str,
    from: &str,
    survivors: &[String],
    message: &[u8],
    trace: &mut Trace,
) -> Result<crate::pipeline::Decision, crate::pipeline::Refusal> {
    let info = SessionInfo {
        client: client.to_string(),
        helo: "explain".to_string(),
        peer: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: false,
    };
    let tx = Transaction {
        from: from.to_string(),
        rcpts: survivors.to_vec(),
        declared_size: None,
        // As `sealgate sendmail` submits: SMTPUTF8 only for a non-ASCII address.
        smtputf8: !from.is_ascii() || survivors.iter().any(|r| !r.is_ascii()),
        body_8bit: message.iter().any(|&b| b >= 0x80),
    };
    let id = crate::queue::spool::new_id();
    crate::pipeline::decide_traced(rt, &info, &tx, &id, message.to_vec(), trace)
}

/// Writes who is refused where (MAIL, RCPT, a content rule, a receipt step, the
/// planning) under "outgoing copies:", and returns the same as JSON.
fn render_refusals(
    rt: &Runtime,
    at_rcpt: &RcptTime,
    trace: &Trace,
    reply: Option<&str>,
    text: &mut String,
) -> Vec<serde_json::Value> {
    let mut refused_json = Vec::new();
    for (r, v) in &trace.verdicts {
        if let RecipientVerdict::Reject { reason, by } = v {
            refused_json
                .push(json!({"rcpt": r, "stage": "data", "reason": format!("{reason} ({by})")}));
        }
    }
    let _ = writeln!(text, "\noutgoing copies:");
    for (r, why) in &at_rcpt.rcpt_refused {
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
    if let Some(why) = &at_rcpt.sender_refused {
        let _ = writeln!(text, "  none: the sender is refused at MAIL: {why}");
    } else if any_reject {
        let _ = writeln!(text, "  none: a content rule refuses the message for a recipient, so it is refused whole (550 5.7.1)");
    } else if at_rcpt.survivors.is_empty() {
        let _ = writeln!(text, "  none: every recipient is refused at RCPT");
    } else if trace.message.is_none() || trace.verdicts.is_empty() {
        // Refused by a receipt step (limits, header block, 7-bit, header From).
        if let Some(reply) = reply {
            let _ = writeln!(text, "  none: refused at end of DATA: {reply}");
        }
    }
    for (r, why) in &trace.unplanned {
        let _ = writeln!(text, "  <{r}>: refused: {why}");
        refused_json.push(json!({"rcpt": r, "stage": "data", "reason": why}));
    }
    refused_json
}

/// Writes one planned copy (actions, keys, signer, DKIM, notes, where it was written or
/// why it failed) and returns it as JSON; `None` when its copy is missing from `made`.
#[allow(clippy::too_many_arguments)]
fn render_copy(
    rt: &Runtime,
    from: &str,
    n: usize,
    plan: &crate::transform::Plan,
    outcome: Option<&crate::pipeline::CopyOutcome>,
    made: &[(crate::queue::spool::Envelope, Vec<u8>)],
    write: Option<&Path>,
    text: &mut String,
) -> anyhow::Result<Option<serde_json::Value>> {
    let _ = writeln!(text, "  copy {} to {}:", n + 1, plan.recipients.join(", "));
    let _ = writeln!(text, "    actions: {}", describe(&plan.actions));
    let certs = render_certificates(rt, plan, text);
    let signer = render_signer(rt, from, plan, text);
    let mut file = None;
    let mut dkim = Vec::new();
    let mut error = None;
    match outcome {
        Some(o) if o.error.is_none() => {
            let Some((_, signed)) = made.get(o.index) else {
                return Ok(None);
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
                file = Some(write_copy(dir, n, o, signed, made, text)?);
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
    Ok(Some(
        json!({"recipients": plan.recipients, "actions": plan.actions, "certificates": certs,
               "signer": signer, "dkim": dkim, "notes": plan.notes, "file": file, "error": error}),
    ))
}

/// Writes the copy of plan `n` and its extra messages into `dir`; returns the copy's path.
fn write_copy(
    dir: &Path,
    n: usize,
    o: &crate::pipeline::CopyOutcome,
    signed: &[u8],
    made: &[(crate::queue::spool::Envelope, Vec<u8>)],
    text: &mut String,
) -> anyhow::Result<String> {
    let p = dir.join(format!("copy-{}.eml", n + 1));
    write_private(&p, signed)?;
    let _ = writeln!(text, "    written: {}", p.display());
    for k in 0..o.extras {
        let Some((extra_env, extra)) = made.get(o.index + 1 + k) else {
            continue;
        };
        let extra_path = dir.join(format!("copy-{}-extra-{}.eml", n + 1, k + 1));
        write_private(&extra_path, extra)?;
        let _ = writeln!(
            text,
            "    written: {} (to {})",
            extra_path.display(),
            extra_env.rcpts.join(", ")
        );
    }
    Ok(p.display().to_string())
}

/// The certificate or OpenPGP key each recipient of an encrypting plan gets.
fn render_certificates(
    rt: &Runtime,
    plan: &crate::transform::Plan,
    text: &mut String,
) -> Vec<serde_json::Value> {
    let mut certs = Vec::new();
    if !plan.actions.encrypts() {
        return certs;
    }
    let kind = plan
        .actions
        .kind()
        .unwrap_or(crate::policy::verdict::CryptoKind::Smime);
    if kind == crate::policy::verdict::CryptoKind::Openpgp {
        let Some(p) = &rt.openpgp else {
            return certs;
        };
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
        return certs;
    }
    let Some(s) = &rt.smime else {
        return certs;
    };
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
                let _ = writeln!(text, "    encrypt to <{r}>: no usable certificate: {e}");
            }
        }
    }
    certs
}

/// The signer of a signing plan (OpenPGP or S/MIME), when there is one for `from`.
fn render_signer(
    rt: &Runtime,
    from: &str,
    plan: &crate::transform::Plan,
    text: &mut String,
) -> Option<serde_json::Value> {
    use crate::policy::verdict::CryptoKind;
    if !plan.actions.signs() {
        return None;
    }
    let pgp_signs = plan.actions.kind() == Some(CryptoKind::Openpgp)
        || (!plan.actions.encrypts()
            && rt.keys().sign_kind(from, &plan.actions) == Some(CryptoKind::Openpgp));
    if pgp_signs {
        rt.openpgp.as_ref().and_then(|p| p.signer_for(from)).map(|si| {
            let _ = writeln!(text, "    sign as: OpenPGP key {} (signing key {}, {}, {})", si.fingerprint, si.signing_key, si.algorithm, si.key_file.display());
            json!({"kind": "openpgp", "file": si.key_file, "fingerprint": si.fingerprint, "signing_key": si.signing_key, "algorithm": si.algorithm})
        })
    } else {
        rt.smime.as_ref().and_then(|s| s.signer_for(from)).map(|si| {
            let _ = writeln!(text, "    sign as: {} ({}, {})", si.cert_path.display(), si.subject, si.key);
            json!({"file": si.cert_path, "subject": si.subject, "key": si.key, "opaque": si.opaque})
        })
    }
}

fn describe(a: &crate::policy::verdict::Actions) -> String {
    let mut v: Vec<String> = a.attachments.describe().into_iter().collect();
    if a.signs() {
        v.push("sign".into());
    }
    if a.encrypts() {
        match a.kind() {
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
