//! The end of one attempt, committed in one transaction (`08-delivery.md` §5.3
//! step 5): the entry moves to the sentbox with the answer's id, or back to the
//! queue at its next scheduled time, or out of the outbox with a delivery-failure
//! notice in its owner's inbox (§6). A delay notice goes to the owner once, when an
//! entry has waited longer than the configured time.

use std::time::Duration;

use crate::identity::Identity;
use crate::protocol::json::{self, Object, Value};
use crate::protocol::response::new_id;
use crate::store::{
    DELIVERY_FAILURE_TYPE, EntryKind, EntryMeta, Mailbox, MailboxEntry, Storage, StoreError,
    StoreTransaction, Timestamp,
};

use super::outcome::{Failure, Outcome};
use super::remote::Destination;
use super::schedule::RetrySchedule;

/// What finishing an attempt did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finished {
    /// Moved to the sentbox.
    Delivered,
    /// Back in the queue until this time.
    Retry(Timestamp),
    /// Removed; a failure notice is in the owner's inbox.
    Failed,
    /// The entry had left the outbox meanwhile (nothing changed).
    Gone,
}

/// What the finishing transaction needs besides the attempt.
pub struct FinishContext<'a> {
    /// The retry delays.
    pub schedule: &'a RetrySchedule,
    /// Random jitter in `[-1, 1]` for the next delay.
    pub jitter: f64,
    /// The identity notices come from (the owner's domain's server identity).
    pub notice_from: &'a Identity,
    /// After how long in the outbox a delay notice is sent.
    pub delay_notice_after: Option<Duration>,
    /// Now.
    pub now: &'a Timestamp,
}

/// Commits the end of the attempt on `claimed` (the entry as claimed).
pub fn finish(
    storage: &dyn Storage,
    claimed: &MailboxEntry,
    outcome: &Outcome,
    destination: &Destination,
    context: &FinishContext<'_>,
) -> Result<Finished, StoreError> {
    let mut finished = Finished::Gone;
    storage.transact(&claimed.owner, &mut |tx| {
        finished = finish_in(tx, claimed, outcome, destination, context)?;
        Ok(())
    })?;
    Ok(finished)
}

fn finish_in(
    tx: &mut dyn StoreTransaction,
    claimed: &MailboxEntry,
    outcome: &Outcome,
    destination: &Destination,
    context: &FinishContext<'_>,
) -> Result<Finished, StoreError> {
    let now = context.now;
    let Some(mut entry) = tx.entry(claimed.entry_id)? else {
        return Ok(Finished::Gone);
    };
    if entry.mailbox != Mailbox::Outbox {
        return Ok(Finished::Gone);
    }
    let previous_attempt = entry.meta.last_attempt_at.clone();
    entry.meta.attempts = entry.meta.attempts.saturating_add(1);
    entry.meta.last_attempt_at = Some(now.clone());
    entry.meta.in_flight_until = None;
    let failure = match outcome {
        Outcome::Delivered { response_id } => {
            entry.mailbox = Mailbox::Sentbox;
            entry.at_millis = now.millis();
            entry.meta.delivered_at = Some(now.clone());
            entry.meta.response_id = response_id.clone();
            entry.meta.last_error = None;
            entry.meta.next_attempt_at = None;
            tx.update_entry(&entry)?;
            return Ok(Finished::Delivered);
        }
        Outcome::Transient(failure) => {
            if let Some(delay) = context
                .schedule
                .delay_after(entry.meta.attempts, context.jitter)
            {
                let next = Timestamp::from_millis(
                    now.millis()
                        .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
                )
                .unwrap_or_else(|_| now.clone());
                entry.meta.next_attempt_at = Some(next.clone());
                entry.meta.last_error = Some(failure.message.clone());
                if let Some(after) = context.delay_notice_after
                    && crossed(&entry, previous_attempt.as_ref(), now, after)
                {
                    let notice = notice(&entry, failure, destination, context, false);
                    tx.insert_entry(notice)?;
                }
                tx.update_entry(&entry)?;
                return Ok(Finished::Retry(next));
            }
            failure
        }
        Outcome::Permanent(failure) => failure,
    };
    entry.meta.last_error = Some(failure.message.clone());
    tx.remove_entry(entry.entry_id)?;
    tx.insert_entry(notice(&entry, failure, destination, context, true))?;
    Ok(Finished::Failed)
}

/// Whether this failed attempt is the first one after the entry's age passed
/// `after`: the delay notice goes out once, without a flag of its own.
fn crossed(
    entry: &MailboxEntry,
    previous_attempt: Option<&Timestamp>,
    now: &Timestamp,
    after: Duration,
) -> bool {
    let queued = entry
        .meta
        .queued_at
        .as_ref()
        .map_or(entry.at_millis, Timestamp::millis);
    let limit = queued.saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX));
    let before = previous_attempt.map_or(i64::MIN, Timestamp::millis);
    before < limit && now.millis() >= limit
}

/// A delivery-failure notice (`08-delivery.md` §6.3) for the owner's inbox: the
/// final one, or (`final_failure` false) a delay notice of the same shape whose
/// `errorLog.code` is `BTP_DELIVERY_DELAYED` and whose `errorLog.meta.final` is
/// false (`docs/delivery.md`).
fn notice(
    entry: &MailboxEntry,
    failure: &Failure,
    destination: &Destination,
    context: &FinishContext<'_>,
    final_failure: bool,
) -> MailboxEntry {
    let now = context.now;
    let mut meta = Object::new();
    if let Some(host) = &destination.host {
        meta.insert("host", host.as_str());
    }
    if let Some(port) = destination.port {
        meta.insert("port", f64::from(port));
    }
    meta.insert("attempts", f64::from(entry.meta.attempts));
    meta.insert("lastAttemptAt", now.as_str());
    meta.insert("final", final_failure);
    let mut error_log = Object::new();
    let (code, reason) = if final_failure {
        (failure.code.clone(), failure.reason.clone())
    } else {
        (
            "BTP_DELIVERY_DELAYED".to_owned(),
            format!("Delivery delayed: {}", failure.reason),
        )
    };
    error_log.insert("code", code);
    error_log.insert("message", failure.message.as_str());
    error_log.insert("meta", meta);
    let mut document = Object::new();
    document.insert("id", new_id());
    document.insert("reason", reason);
    document.insert("failedAt", now.as_str());
    document.insert(
        "retryCount",
        f64::from(entry.meta.attempts.saturating_sub(1)),
    );
    let undelivered = std::str::from_utf8(&entry.raw)
        .ok()
        .and_then(|text| json::parse(text).ok())
        .unwrap_or(Value::Null);
    document.insert("document", undelivered);
    document.insert("errorLog", error_log);
    document.insert("recipient", entry.to.as_str());
    document.insert("transportArtifactId", entry.artifact_id.as_str());
    if let Some(agent_artifact) = &entry.meta.agent_artifact_id {
        document.insert("agentArtifactId", agent_artifact.as_str());
    }
    let id = new_id();
    let mut artifact = Object::new();
    artifact.insert("id", id.as_str());
    artifact.insert("issuedAt", now.as_str());
    artifact.insert("type", DELIVERY_FAILURE_TYPE);
    artifact.insert("from", context.notice_from.as_str());
    artifact.insert("to", entry.owner.as_str());
    artifact.insert("document", document);
    let title = if final_failure {
        format!("Delivery to {} failed", entry.to)
    } else {
        format!("Delivery to {} delayed", entry.to)
    };
    MailboxEntry {
        entry_id: 0,
        owner: entry.owner.clone(),
        mailbox: Mailbox::Inbox,
        origin: None,
        at_millis: now.millis(),
        kind: EntryKind::DeliveryFailure,
        artifact_id: id,
        artifact_type: DELIVERY_FAILURE_TYPE.to_owned(),
        from: context.notice_from.to_string(),
        to: entry.owner.clone(),
        title: Some(title),
        raw: Value::Object(artifact).to_canonical().into_bytes(),
        meta: EntryMeta {
            received_at: Some(now.clone()),
            ..EntryMeta::default()
        },
    }
}
