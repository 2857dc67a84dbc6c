//! The one decision path from an accepted DATA to the outgoing copies, shared by
//! `serve` ([`crate::smtp::ingest::Ingest::accept`], which then writes the spool) and by
//! `explain` (which renders what was decided): MIME limits, Bcc removal, header repair,
//! 7-bit conversion, trace headers, header From check, policy, plan, hidden recipients,
//! transforms, DKIM. CPU-bound: the live path runs it on a blocking thread.
//!
//! Invariant: whatever `serve` would relay, `explain` shows, because both call
//! [`decide_traced`]; nothing here touches the disk or the network.

use crate::audit::{Copy, CopyKind, Detail};
use crate::policy::verdict::RecipientVerdict;
use crate::queue::spool::{EntryKind, Envelope};
use crate::runtime::Runtime;
use crate::smtp::ingest::{
    add_trace_headers, check_header_from, complete_header, refuse_hazard, refuse_limits,
    without_blind_copies, SessionInfo,
};
use crate::smtp::reply::{named, Reply};
use crate::smtp::session::Transaction;
use crate::transform::Plan;

/// A refusal at end of DATA: the reply, and the audit facts saying what decided it.
pub type Refusal = (Reply, Detail);

/// What the pipeline produced for an accepted message.
#[derive(Debug)]
pub struct Decision {
    /// The spool entries to store, each with its envelope, DKIM-signed, in plan order
    /// (each copy followed by its extra messages, such as a zip's password mail).
    pub copies: Vec<(Envelope, Vec<u8>)>,
    /// Audit facts: per copy, recipients, actions, rules, notes.
    pub audit: Vec<Copy>,
    /// The repairs made to the message at receipt, for the audit log.
    pub repairs: Vec<String>,
}

/// How one planned copy fared, for `explain` to render.
#[derive(Debug, Clone)]
pub struct CopyOutcome {
    /// Index of the copy in the copies (its extras follow it).
    pub index: usize,
    /// How many extra messages follow it.
    pub extras: usize,
    /// Audit-safe notes of the plan and the transforms.
    pub notes: Vec<String>,
    /// Why the transform or DKIM failed, if it did (the message is then refused).
    pub error: Option<String>,
}

/// The intermediate results of one run of the pipeline: what `explain` shows besides
/// the decision. Filled as far as the pipeline got.
#[derive(Debug, Default)]
pub struct Trace {
    /// The message as judged (repaired, with trace headers); `None` when it was refused
    /// before the policy saw it.
    pub message: Option<Vec<u8>>,
    /// The repairs made at receipt.
    pub repairs: Vec<String>,
    /// The policy's verdict per recipient, in envelope order.
    pub verdicts: Vec<(String, RecipientVerdict)>,
    /// The copies planned.
    pub plans: Vec<Plan>,
    /// Recipients the planning refused, with the reason (no certificate, ...).
    pub unplanned: Vec<(String, String)>,
    /// Per plan, in order, up to the first failure.
    pub outcomes: Vec<CopyOutcome>,
    /// The copies made before a failure (on success they are in the [`Decision`]).
    pub partial: Vec<(Envelope, Vec<u8>)>,
}

/// The decision for one message, as `serve` makes it.
pub fn decide(
    rt: &Runtime,
    info: &SessionInfo,
    tx: &Transaction,
    id: &str,
    message: Vec<u8>,
) -> Result<Decision, Refusal> {
    decide_traced(rt, info, tx, id, message, &mut Trace::default())
}

/// [`decide`], recording the intermediate results in `trace`.
pub fn decide_traced(
    rt: &Runtime,
    info: &SessionInfo,
    tx: &Transaction,
    id: &str,
    message: Vec<u8>,
    trace: &mut Trace,
) -> Result<Decision, Refusal> {
    let (message, message_id) = receive(rt, info, tx, id, message, trace)?;
    let mut copies = Vec::new();
    let result = judge_and_transform(rt, info, tx, id, &message, message_id, trace, &mut copies);
    trace.message = Some(message);
    match result {
        Ok(audit) => Ok(Decision {
            copies,
            audit,
            repairs: trace.repairs.clone(),
        }),
        Err(e) => {
            trace.partial = copies;
            Err(e)
        }
    }
}

/// The receipt steps: limits, Bcc removal, header repair, 7-bit conversion, trace
/// headers. Returns the message as it will be judged, and its Message-ID.
fn receive(
    rt: &Runtime,
    info: &SessionInfo,
    tx: &Transaction,
    id: &str,
    message: Vec<u8>,
    trace: &mut Trace,
) -> Result<(Vec<u8>, Option<String>), Refusal> {
    let ambiguous = refuse_limits(&message)?;
    let hostname = &rt.config.server.hostname;
    let message = without_blind_copies(message);
    let (message, repairs) = complete_header(message, &tx.from, hostname).map_err(|r| {
        (
            r,
            Detail::Check {
                check: "header block",
            },
        )
    })?;
    trace.repairs = repairs;
    if ambiguous || !trace.repairs.is_empty() {
        // The repaired message is judged whole: still read two ways, it is refused;
        // restored continuations can join lines into one Content-* field, and the
        // limits hold for the message as it now is.
        refuse_hazard(&message)?;
    }
    // Before policy, transforms and DKIM: what the upstream may refuse (long lines,
    // 8-bit data) is converted now, or refused now.
    let message = match crate::transform::seven_bit::prepare(&message, tx.smtputf8) {
        Ok(p) => {
            trace.repairs.extend(p.notes);
            p.message.map_or(message, |m| m)
        }
        Err(e) => {
            let reply = Reply::new(
                crate::smtp::reply::Class::Permanent,
                50,
                e.enhanced(),
                format!("message refused: {e} (transform/seven_bit.rs)"),
            );
            return Err((
                reply,
                Detail::SevenBit {
                    seven_bit: e.to_string(),
                },
            ));
        }
    };
    Ok(add_trace_headers(&message, info, hostname, id, &tx.rcpts))
}

/// Header From check, policy, plan, transforms and DKIM; pushes the copies and
/// returns their audit facts.
#[allow(clippy::too_many_arguments)]
fn judge_and_transform(
    rt: &Runtime,
    info: &SessionInfo,
    tx: &Transaction,
    id: &str,
    message: &[u8],
    message_id: Option<String>,
    trace: &mut Trace,
    copies: &mut Vec<(Envelope, Vec<u8>)>,
) -> Result<Vec<Copy>, Refusal> {
    check_header_from(rt, &info.client, message).map_err(|r| (r, Detail::InReply))?;
    let env = crate::policy::Envelope {
        client: &info.client,
        from: &tx.from,
    };
    // `receive` ran the MIME limits check on this message before anything parsed it.
    let verdicts = rt
        .policy
        .judge_message_within_limits(&env, &tx.rcpts, message);
    trace.verdicts = tx.rcpts.iter().cloned().zip(verdicts).collect();
    let mut pairs = Vec::with_capacity(trace.verdicts.len());
    let mut rules_by_rcpt: std::collections::HashMap<&str, Vec<String>> =
        std::collections::HashMap::new();
    let mut refs_by_rcpt: std::collections::HashMap<&str, &[crate::policy::verdict::RuleRef]> =
        std::collections::HashMap::new();
    for (rcpt, v) in &trace.verdicts {
        match v {
            RecipientVerdict::Reject { reason, by } => {
                let reply =
                    named::policy_reject(format!("message refused for <{rcpt}>: {reason} ({by})"));
                return Err((
                    reply,
                    Detail::Rule {
                        rcpt: rcpt.clone(),
                        rule: by.rule.clone(),
                        file: by.file.clone(),
                    },
                ));
            }
            RecipientVerdict::Accept { actions, rules } => {
                let names: Vec<String> = rules.iter().map(|r| r.rule.clone()).collect();
                rules_by_rcpt.insert(rcpt, names);
                refs_by_rcpt.insert(rcpt, rules);
                pairs.push((rcpt.clone(), actions.clone()));
            }
        }
    }
    let (plans, refused) = crate::transform::plan_with_keys(&pairs, &rt.keys(), message);
    trace.plans = crate::transform::separate_hidden_recipients(plans, message);
    trace.unplanned = refused;
    if let Some((rcpt, why)) = trace.unplanned.first() {
        let by: Vec<String> = refs_by_rcpt
            .get(rcpt.as_str())
            .map(|v| v.iter().map(|r| r.to_string()).collect())
            .unwrap_or_default();
        let reply = named::policy_reject(format!(
            "message refused for <{rcpt}>: {why} ({})",
            by.join("; ")
        ));
        return Err((
            reply,
            Detail::Unplanned {
                rcpt: rcpt.clone(),
                refused: why.clone(),
            },
        ));
    }
    let dkim_err = |e: crate::transform::dkim::DkimError| {
        tracing::error!("DKIM signing failed: {e}");
        (
            named::transform_failed("DKIM signing failed"),
            Detail::Dkim {
                dkim: e.to_string(),
            },
        )
    };
    let mut audit = Vec::new();
    let new_env =
        |copy_id: String, from: String, rcpts: Vec<String>, kind: EntryKind, bytes: &[u8]| {
            Envelope {
                id: copy_id,
                from,
                rcpts,
                created: crate::clock::unix_now(),
                client: info.client.clone(),
                message_id: if kind == EntryKind::Message {
                    message_id.clone()
                } else {
                    None
                },
                policy_version: Some(rt.policy.version().to_string()),
                kind,
                // What this copy holds, not what the client declared: an encrypted
                // copy of an 8-bit message is 7-bit.
                body_8bit: bytes.iter().any(|&b| b >= 0x80),
                smtputf8: tx.smtputf8,
            }
        };
    for (n, plan) in trace.plans.iter().enumerate() {
        let mut outcome = CopyOutcome {
            index: copies.len(),
            extras: 0,
            notes: plan.notes.clone(),
            error: None,
        };
        let out = match crate::transform::apply_with_keys(plan, &tx.from, message, &rt.keys()) {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!("transform of {id} failed: {e}");
                outcome.error = Some(e.to_string());
                trace.outcomes.push(outcome);
                let reply = if e.is_permanent() {
                    named::policy_reject(format!("message refused: {e}"))
                } else {
                    named::transform_failed(&e.to_string())
                };
                return Err((
                    reply,
                    Detail::Transform {
                        transform: e.to_string(),
                    },
                ));
            }
        };
        outcome.notes.clone_from(&out.notes);
        let signed = match rt.dkim.sign(&out.message) {
            Ok(s) => s,
            Err(e) => {
                outcome.error = Some(format!("DKIM signing failed: {e}"));
                trace.outcomes.push(outcome);
                return Err(dkim_err(e));
            }
        };
        let copy_id = format!("{id}-{}", n + 1);
        let rules = plan
            .recipients
            .iter()
            .map(|r| rules_by_rcpt.get(r.as_str()).cloned().unwrap_or_default())
            .collect();
        audit.push(Copy::Message {
            queue_id: copy_id.clone(),
            rcpts: plan.recipients.clone(),
            actions: plan.actions.clone(),
            rules,
            notes: out.notes.clone(),
            size: signed.len(),
        });
        let env = new_env(
            copy_id,
            tx.from.clone(),
            plan.recipients.clone(),
            EntryKind::Message,
            &signed,
        );
        copies.push((env, signed));
        for extra in out.extra {
            let extra_id = format!("{id}-p{}", copies.len());
            let signed = match rt.dkim.sign(&extra.message) {
                Ok(s) => s,
                Err(e) => {
                    outcome.error = Some(format!("DKIM signing failed: {e}"));
                    trace.outcomes.push(outcome);
                    return Err(dkim_err(e));
                }
            };
            audit.push(Copy::Password {
                queue_id: extra_id.clone(),
                rcpts: extra.to.clone(),
                kind: CopyKind::Password,
            });
            let env = new_env(extra_id, extra.from, extra.to, EntryKind::Password, &signed);
            copies.push((env, signed));
            outcome.extras += 1;
        }
        trace.outcomes.push(outcome);
    }
    Ok(audit)
}
