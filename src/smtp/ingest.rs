//! From an accepted DATA to spooled outgoing copies: the decisions a session asks for
//! (credentials, sender, recipient), then the shared decision path
//! ([`crate::pipeline::decide`]) on a blocking thread, and the durable spool write and
//! audit after it.
//!
//! Invariants: `250` is returned only after every outgoing copy is fsynced; a message
//! is accepted for all its recipients or refused whole; a transform or self-check
//! failure answers `451 4.7.0` and stores nothing.

use std::sync::Arc;

use crate::audit::{Audit, Cause, Event, Stage};
use crate::glob::glob_match;
use crate::metrics::Metrics;
use crate::pipeline::Refusal;
use crate::queue::relay::Relay;
use crate::queue::spool::{self, Envelope, Spool};
use crate::runtime::Runtime;
use crate::smtp::reply::{named, Reply};
use crate::smtp::session::Transaction;

pub use crate::pipeline::SessionInfo;

impl SessionInfo {
    /// Who submitted, as the audit records show it.
    pub fn origin(&self) -> crate::audit::Origin {
        crate::audit::Origin {
            client: self.client.clone(),
            peer: crate::audit::Peer::Net(self.peer),
        }
    }
}

/// The shared end of every session: spool, relay, audit, metrics.
pub struct Ingest {
    /// Where accepted copies are written and fsynced before `250` is sent.
    pub spool: Spool,
    /// Told about the new entries so they are delivered now, not at the next scan.
    pub relay: Arc<Relay>,
    /// Where each acceptance, refusal and deferral at receipt is recorded.
    pub audit: Arc<Audit>,
    /// Counters for accepted and refused messages and failed transforms.
    pub metrics: Arc<Metrics>,
}

/// Verifies AUTH credentials against the `[[client]]` argon2 hashes.
/// An unknown user name costs one argon2 verification too (against another client's
/// hash, whose result is ignored), so the answer's timing does not tell which names exist.
pub fn authenticate(rt: &Runtime, username: &str, password: &str) -> Option<String> {
    use argon2::PasswordVerifier;
    let client = rt.config.clients.iter().find(|c| c.username == username);
    let hash_text = client.or(rt.config.clients.first())?.password_hash.as_str();
    let hash = argon2::PasswordHash::new(hash_text).ok()?;
    let verified = argon2::Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_ok();
    client.filter(|_| verified).map(|c| c.name.clone())
}

/// May `client` use `sender`? Clients with `allowed_senders` are held to them; and a
/// sender whose bounces could go nowhere (not an approved recipient, no `[server]
/// postmaster`) is refused now rather than found out when a DSN is due.
pub fn check_sender(rt: &Runtime, client: &str, sender: &str) -> Result<(), Reply> {
    match crate::pipeline::header_from::allowed_senders(rt, client) {
        Some(globs) if !globs.iter().any(|g| glob_match(g, sender)) => {
            return Err(named::sender_not_allowed(sender, client))
        }
        _ => {}
    }
    if sender.is_empty() {
        return Ok(());
    }
    match crate::queue::dsn::route(rt, client, sender) {
        crate::queue::dsn::Route::Nowhere { why } => Err(Reply::new(
            crate::smtp::reply::Class::Permanent,
            50,
            (7, 1),
            format!("<{sender}>: sender not approved as a bounce recipient: {why}"),
        )),
        _ => Ok(()),
    }
}

/// RCPT-time policy for one recipient: allow/deny lists and content-free rules.
pub fn check_recipient(rt: &Runtime, client: &str, sender: &str, rcpt: &str) -> Result<(), Reply> {
    let env = crate::policy::Envelope {
        client,
        from: sender,
    };
    let keys = rt.keys();
    let has_cert = |a: &str| keys.has_key(a);
    rt.policy
        .judge_rcpt(&env, rcpt, &has_cert)
        .map_err(|r| named::policy_reject(format!("<{rcpt}>: {} ({})", r.reason, r.by)))
}

impl Ingest {
    /// End of DATA: decide, transform, spool, reply.
    pub async fn accept(
        &self,
        rt: &Arc<Runtime>,
        info: &SessionInfo,
        tx: Transaction,
        message: Vec<u8>,
    ) -> Reply {
        let id = spool::new_id();
        // Everything CPU- or disk-bound happens in one blocking task: trace headers,
        // policy, transforms, DKIM and the durable write.
        let outcome = {
            let (rt, info, tx, id, spool) = (
                rt.clone(),
                info.clone(),
                tx.clone(),
                id.clone(),
                self.spool.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let decided = crate::pipeline::decide(&rt, &info, &tx, &id, message)?;
                let refs: Vec<(Envelope, &[u8])> = decided
                    .copies
                    .iter()
                    .map(|(e, m)| (e.clone(), m.as_slice()))
                    .collect();
                let stored = spool.store(&refs);
                Ok::<_, Refusal>((decided, stored))
            })
            .await
        };
        let decided = match outcome {
            Ok(Ok((d, Ok(())))) => d,
            Ok(Ok((_, Err(e)))) => {
                tracing::error!("spool write failed: {e}");
                let reply = named::local_error("cannot write to the spool");
                self.deferred(
                    info,
                    &tx,
                    &reply,
                    Cause::Spool {
                        spool: e.to_string(),
                    },
                );
                return reply;
            }
            Ok(Err((reply, why))) => {
                let why = Cause::Decided {
                    detail: why,
                    policy_version: rt.policy.version().to_string(),
                };
                if reply.is_permanent() {
                    self.rejected(info, &tx, &reply, why);
                } else {
                    self.metrics
                        .transform_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.deferred(info, &tx, &reply, why);
                }
                return reply;
            }
            Err(e) => {
                tracing::error!("message processing task failed: {e}");
                let reply = named::local_error("message processing failed");
                self.deferred(
                    info,
                    &tx,
                    &reply,
                    Cause::Task {
                        task: e.to_string(),
                    },
                );
                return reply;
            }
        };
        let ids: Vec<String> = decided.copies.iter().map(|(e, _)| e.id.clone()).collect();
        self.metrics
            .messages_accepted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some((e, _)) = decided.copies.first() {
            self.audit.record(&Event::Received {
                entry: crate::audit::Entry {
                    queue_id: id.clone(),
                    message_id: e.message_id.clone(),
                    from: e.from.clone(),
                    policy_version: Some(rt.policy.version().to_string()),
                },
                origin: info.origin(),
                tls: info.tls,
                rcpts: tx.rcpts,
                copies: decided.audit,
                repairs: decided.repairs,
            });
        }
        self.relay.schedule_now(&ids);
        named::queued(&id)
    }

    /// Records a temporary refusal (4xx) at end of DATA.
    fn deferred(&self, info: &SessionInfo, tx: &Transaction, reply: &Reply, why: Cause) {
        self.audit.record(&Event::DeferredAtReceipt {
            stage: Stage::Data,
            envelope: tx.audit_envelope(),
            origin: info.origin(),
            reply: reply.to_string(),
            why,
        });
    }

    /// Records a refusal at end of DATA.
    pub fn rejected(&self, info: &SessionInfo, tx: &Transaction, reply: &Reply, rules: Cause) {
        self.metrics
            .messages_rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.audit.record(&Event::RefusedData {
            stage: Stage::Data,
            envelope: tx.audit_envelope(),
            origin: info.origin(),
            reply: reply.to_string(),
            rules,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*@example.com", "Billing@Example.com"));
        assert!(!glob_match("*@example.com", "a@example.com.evil"));
        assert!(glob_match("a?c@x", "abc@x"));
    }
}
