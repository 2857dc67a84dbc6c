//! The one decision path from an accepted DATA to the outgoing copies, shared by
//! `serve` ([`crate::smtp::ingest::Ingest::accept`], which then writes the spool) and by
//! `explain` (which renders what was decided): MIME limits, Bcc removal, header repair,
//! 7-bit conversion, trace headers, header From check, policy, plan, hidden recipients,
//! transforms, DKIM. CPU-bound: the live path runs it on a blocking thread.
//!
//! The message is read once: after the receipt steps ([`receipt`], [`trace`]) its bytes
//! become a [`Message`] (header index + MIME tree), and the header From check
//! ([`header_from`]), the policy, the planning, the transforms and DKIM all read that
//! one [`Message`]. Only bytes a transform produces anew are read again.
//!
//! Invariant: whatever `serve` would relay, `explain` shows, because both call
//! [`decide_traced`]; nothing here touches the disk or the network.

pub mod header_from;
pub mod receipt;
pub mod trace;

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::audit::{Copy, CopyKind, Detail};
use crate::message::Message;
use crate::policy::verdict::RecipientVerdict;
use crate::policy::verdict::{Actions, RuleRef};
use crate::queue::spool::{EntryKind, Envelope};
use crate::runtime::Runtime;
use crate::smtp::reply::{named, Reply};
use crate::smtp::session::Transaction;
use crate::transform::Plan;

/// Facts about the session a message arrived in.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// `[[client]]` name or `local`.
    pub client: String,
    /// EHLO/HELO name.
    pub helo: String,
    /// Peer address.
    pub peer: SocketAddr,
    /// The session was under STARTTLS.
    pub tls: bool,
}

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
    let bytes = receive(rt, info, tx, id, message, trace)?;
    let mut copies = Vec::new();
    let result = judge_and_transform(rt, info, tx, id, &Message::new(&bytes), trace, &mut copies);
    trace.message = Some(bytes);
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

/// The receipt steps: CRLF line ends, limits, Bcc removal, header repair, 7-bit
/// conversion, trace headers. Returns the message as it will be judged.
fn receive(
    rt: &Runtime,
    info: &SessionInfo,
    tx: &Transaction,
    id: &str,
    message: Vec<u8>,
    trace: &mut Trace,
) -> Result<Vec<u8>, Refusal> {
    // The one canonicalisation: every step after this one reads and writes CRLF.
    let canonical = match Message::canonical(&message) {
        std::borrow::Cow::Owned(canonical) => Some(canonical),
        std::borrow::Cow::Borrowed(_) => None,
    };
    let message = canonical.unwrap_or(message);
    let ambiguous = receipt::refuse_limits(&message)?;
    let hostname = &rt.config.server.hostname;
    let message = receipt::without_blind_copies(message);
    let (message, repairs) =
        receipt::complete_header(message, &tx.from, hostname).map_err(|r| {
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
        receipt::refuse_hazard(&message)?;
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
    Ok(trace::add_trace_headers(
        &message, info, hostname, id, &tx.rcpts,
    ))
}

/// What the policy accepted: per recipient its actions, and the rules that decided.
struct Accepted<'t> {
    /// `(recipient, actions)` in envelope order, for the planning.
    pairs: Vec<(String, Actions)>,
    /// Per recipient, the names of the rules that matched (audit).
    rules_by_rcpt: HashMap<&'t str, Vec<String>>,
    /// Per recipient, the rules that matched (named when the planning refuses it).
    refs_by_rcpt: HashMap<&'t str, &'t [RuleRef]>,
}

/// Header From check, policy, plan, transforms and DKIM; pushes the copies and
/// returns their audit facts.
fn judge_and_transform(
    rt: &Runtime,
    info: &SessionInfo,
    tx: &Transaction,
    id: &str,
    message: &Message<'_>,
    trace: &mut Trace,
    copies: &mut Vec<(Envelope, Vec<u8>)>,
) -> Result<Vec<Copy>, Refusal> {
    header_from::check_header_from(rt, &info.client, message.headers())
        .map_err(|r| (r, Detail::InReply))?;
    let env = crate::policy::Envelope {
        client: &info.client,
        from: &tx.from,
    };
    // `receive` ran the MIME limits check on this message before anything parsed it.
    let verdicts = rt.policy.judge_read_message(&env, &tx.rcpts, message);
    trace.verdicts = tx.rcpts.iter().cloned().zip(verdicts).collect();
    let accepted = accepted(&trace.verdicts)?;
    let (plans, refused) =
        crate::transform::plan_with_keys(&accepted.pairs, &rt.keys(), message.bytes());
    let plans = crate::transform::separate_hidden_recipients(plans, message.headers());
    if let Some((rcpt, why)) = refused.first() {
        let by: Vec<String> = accepted
            .refs_by_rcpt
            .get(rcpt.as_str())
            .map(|v| v.iter().map(|r| r.to_string()).collect())
            .unwrap_or_default();
        let reply = named::policy_reject(format!(
            "message refused for <{rcpt}>: {why} ({})",
            by.join("; ")
        ));
        let facts = Detail::Unplanned {
            rcpt: rcpt.clone(),
            refused: why.clone(),
        };
        trace.plans = plans;
        trace.unplanned = refused;
        return Err((reply, facts));
    }
    let rules_by_rcpt = accepted.rules_by_rcpt;
    trace.plans = plans;
    let copier = Copier {
        rt,
        info,
        tx,
        id,
        message,
        message_id: message.headers().message_id(),
    };
    let mut audit = Vec::new();
    for (n, plan) in trace.plans.iter().enumerate() {
        let made = copier.copy(n, plan, &rules_by_rcpt, copies, &mut audit);
        trace.outcomes.push(made.outcome);
        if let Some(refusal) = made.error {
            return Err(refusal);
        }
    }
    Ok(audit)
}

/// The policy's verdicts, or the refusal of the first recipient a rule rejects.
fn accepted(verdicts: &[(String, RecipientVerdict)]) -> Result<Accepted<'_>, Refusal> {
    let mut accepted = Accepted {
        pairs: Vec::with_capacity(verdicts.len()),
        rules_by_rcpt: HashMap::new(),
        refs_by_rcpt: HashMap::new(),
    };
    for (rcpt, v) in verdicts {
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
                accepted.rules_by_rcpt.insert(rcpt, names);
                accepted.refs_by_rcpt.insert(rcpt, rules);
                accepted.pairs.push((rcpt.clone(), actions.clone()));
            }
        }
    }
    Ok(accepted)
}

/// How one plan fared: its outcome for the trace, and the refusal when it failed.
struct CopyResult {
    outcome: CopyOutcome,
    error: Option<Refusal>,
}

/// Makes the outgoing copies of one message, plan by plan.
struct Copier<'a, 'm> {
    rt: &'a Runtime,
    info: &'a SessionInfo,
    tx: &'a Transaction,
    id: &'a str,
    message: &'a Message<'m>,
    /// The judged message's Message-ID, for the spool envelopes.
    message_id: Option<String>,
}

impl Copier<'_, '_> {
    /// Transforms and DKIM-signs the copy of plan `n` and its extra messages, pushing
    /// them to `copies` and their audit facts to `audit`.
    fn copy(
        &self,
        n: usize,
        plan: &crate::transform::Plan,
        rules_by_rcpt: &HashMap<&str, Vec<String>>,
        copies: &mut Vec<(Envelope, Vec<u8>)>,
        audit: &mut Vec<Copy>,
    ) -> CopyResult {
        let mut outcome = CopyOutcome {
            index: copies.len(),
            extras: 0,
            notes: plan.notes.clone(),
            error: None,
        };
        let (rt, tx, id) = (self.rt, self.tx, self.id);
        let out = match crate::transform::apply_message(plan, &tx.from, self.message, &rt.keys()) {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!("transform of {id} failed: {e}");
                outcome.error = Some(e.to_string());
                let reply = if e.is_permanent() {
                    named::policy_reject(format!("message refused: {e}"))
                } else {
                    named::transform_failed(&e.to_string())
                };
                let error = Some((
                    reply,
                    Detail::Transform {
                        transform: e.to_string(),
                    },
                ));
                return CopyResult { outcome, error };
            }
        };
        outcome.notes.clone_from(&out.notes);
        // A copy whose header block is the judged message's (relayed unchanged, or only
        // its body rewritten) has the same From: its index is used, not read again.
        let signed = if self.message.same_header(&out.message) {
            rt.dkim
                .sign_with_headers(&out.message, self.message.headers())
        } else {
            rt.dkim.sign(&out.message)
        };
        let signed = match signed {
            Ok(s) => s,
            Err(e) => return dkim_failed(outcome, e),
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
        let env = self.envelope(
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
                Err(e) => return dkim_failed(outcome, e),
            };
            audit.push(Copy::Password {
                queue_id: extra_id.clone(),
                rcpts: extra.to.clone(),
                kind: CopyKind::Password,
            });
            let env = self.envelope(extra_id, extra.from, extra.to, EntryKind::Password, &signed);
            copies.push((env, signed));
            outcome.extras += 1;
        }
        CopyResult {
            outcome,
            error: None,
        }
    }

    /// The spool envelope of one outgoing copy.
    fn envelope(
        &self,
        copy_id: String,
        from: String,
        rcpts: Vec<String>,
        kind: EntryKind,
        bytes: &[u8],
    ) -> Envelope {
        Envelope {
            id: copy_id,
            from,
            rcpts,
            created: crate::clock::unix_now(),
            client: self.info.client.clone(),
            message_id: if kind == EntryKind::Message {
                self.message_id.clone()
            } else {
                None
            },
            policy_version: Some(self.rt.policy.version().to_string()),
            kind,
            // What this copy holds, not what the client declared: an encrypted
            // copy of an 8-bit message is 7-bit.
            body_8bit: bytes.iter().any(|&b| b >= 0x80),
            smtputf8: self.tx.smtputf8,
        }
    }
}

/// A DKIM failure of a copy: `451 4.7.0`, the copy not made.
fn dkim_failed(mut outcome: CopyOutcome, e: crate::transform::dkim::DkimError) -> CopyResult {
    tracing::error!("DKIM signing failed: {e}");
    outcome.error = Some(format!("DKIM signing failed: {e}"));
    CopyResult {
        outcome,
        error: Some((
            named::transform_failed("DKIM signing failed"),
            Detail::Dkim {
                dkim: e.to_string(),
            },
        )),
    }
}
