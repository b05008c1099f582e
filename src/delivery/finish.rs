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

/// One attempt, ended: what [`finish_group`] commits.
#[derive(Clone, Debug)]
pub struct Attempted {
    /// The entry as claimed.
    pub entry: MailboxEntry,
    /// What the attempt came to.
    pub outcome: Outcome,
    /// Where it went.
    pub destination: Destination,
    /// Random jitter in `[-1, 1]` for the next delay.
    pub jitter: f64,
}

/// What the finishing transaction needs besides the attempts.
pub struct FinishContext<'a> {
    /// The retry delays.
    pub schedule: &'a RetrySchedule,
    /// The identity notices come from (the owners' domain's server identity).
    pub notice_from: &'a Identity,
    /// After how long in the outbox a delay notice is sent.
    pub delay_notice_after: Option<Duration>,
    /// Now.
    pub now: &'a Timestamp,
}

/// Commits the ends of several attempts on entries of one `owner` in one
/// transaction (the worker's group commit: one durable write for many
/// deliveries), in order; what each came to.
pub fn finish_group(
    storage: &dyn Storage,
    owner: &str,
    attempts: &[Attempted],
    context: &FinishContext<'_>,
) -> Result<Vec<Finished>, StoreError> {
    let mut finished = Vec::with_capacity(attempts.len());
    storage.transact(owner, &mut |tx| {
        finished.clear();
        for attempted in attempts {
            finished.push(finish_in(tx, attempted, context)?);
        }
        Ok(())
    })?;
    Ok(finished)
}

fn finish_in(
    tx: &mut dyn StoreTransaction,
    attempted: &Attempted,
    context: &FinishContext<'_>,
) -> Result<Finished, StoreError> {
    let Attempted {
        entry: claimed,
        outcome,
        destination,
        jitter,
    } = attempted;
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
            if let Some(delay) = context.schedule.delay_after(entry.meta.attempts, *jitter) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStorage, NewOutboxEntry};

    const OWNER: &str = "billing$vendor.test";

    fn at(millis: i64) -> Timestamp {
        Timestamp::from_millis(millis).unwrap()
    }

    /// An entry queued at `T0`, claimed.
    fn queued(storage: &MemoryStorage) -> MailboxEntry {
        let mut claimed = None;
        storage
            .transact(OWNER, &mut |tx| {
                claimed = Some(tx.enqueue(NewOutboxEntry {
                    owner: OWNER.to_owned(),
                    artifact_id: "a1".to_owned(),
                    artifact_type: "BTPS_DOC".to_owned(),
                    from: OWNER.to_owned(),
                    to: "pay$client.test".to_owned(),
                    title: None,
                    raw: br#"{"id":"a1"}"#.to_vec(),
                    queued_at: at(T0),
                    agent_artifact_id: None,
                    agent_id: None,
                })?);
                Ok(())
            })
            .unwrap();
        claimed.unwrap()
    }

    const T0: i64 = 1_735_689_600_000;

    fn end(storage: &MemoryStorage, entry: &MailboxEntry, outcome: &Outcome, now: i64) -> Finished {
        let schedule = RetrySchedule::new(vec![Duration::from_secs(60); 2]);
        let from = Identity::parse("admin$vendor.test").unwrap();
        let now = at(now);
        let context = FinishContext {
            schedule: &schedule,
            notice_from: &from,
            delay_notice_after: Some(Duration::from_secs(90)),
            now: &now,
        };
        let attempted = Attempted {
            entry: entry.clone(),
            outcome: outcome.clone(),
            destination: Destination::default(),
            jitter: 0.0,
        };
        let mut done = finish_group(storage, OWNER, &[attempted], &context).unwrap();
        done.remove(0)
    }

    fn inbox(storage: &MemoryStorage) -> Vec<MailboxEntry> {
        storage
            .memory_mailboxes()
            .all()
            .into_iter()
            .filter(|entry| entry.mailbox == Mailbox::Inbox)
            .collect()
    }

    #[test]
    fn transient_failures_retry_on_schedule_then_fail_with_one_delay_and_one_final_notice() {
        let storage = MemoryStorage::new();
        let entry = queued(&storage);
        let down = Outcome::Transient(Failure::connect("refused"));
        assert_eq!(
            end(&storage, &entry, &down, T0 + 1_000),
            Finished::Retry(at(T0 + 61_000))
        );
        assert!(inbox(&storage).is_empty(), "not delayed yet");
        // The second failure passes the 90 s mark: one delay notice.
        assert_eq!(
            end(&storage, &entry, &down, T0 + 100_000),
            Finished::Retry(at(T0 + 160_000))
        );
        let notices = inbox(&storage);
        assert_eq!(notices.len(), 1);
        let text = String::from_utf8(notices[0].raw.clone()).unwrap();
        assert!(
            text.contains("BTP_DELIVERY_DELAYED") && text.contains(r#""final":false"#),
            "{text}"
        );
        // The schedule is used up: the entry fails, a final notice follows.
        assert_eq!(end(&storage, &entry, &down, T0 + 200_000), Finished::Failed);
        let notices = inbox(&storage);
        assert_eq!(notices.len(), 2);
        let last = String::from_utf8(notices[1].raw.clone()).unwrap();
        assert!(
            last.contains(r#""retryCount":2"#) && last.contains(r#""final":true"#),
            "{last}"
        );
        assert!(last.contains(r#""recipient":"pay$client.test""#), "{last}");
        assert!(last.contains(r#""document":{"id":"a1"}"#), "{last}");
        assert_eq!(notices[1].kind, EntryKind::DeliveryFailure);
        assert_eq!(notices[1].owner, OWNER);
        // Nothing is left in the outbox; a late end changes nothing.
        assert_eq!(end(&storage, &entry, &down, T0 + 300_000), Finished::Gone);
    }

    #[test]
    fn delivery_moves_the_entry_to_the_sentbox_with_the_answer_id() {
        let storage = MemoryStorage::new();
        let entry = queued(&storage);
        let delivered = Outcome::Delivered {
            response_id: Some("answer-1".to_owned()),
        };
        assert_eq!(
            end(&storage, &entry, &delivered, T0 + 5),
            Finished::Delivered
        );
        let stored = storage.memory_mailboxes().all();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].mailbox, Mailbox::Sentbox);
        assert_eq!(stored[0].meta.response_id.as_deref(), Some("answer-1"));
        assert_eq!(stored[0].meta.attempts, 1);
        assert_eq!(stored[0].meta.delivered_at, Some(at(T0 + 5)));
    }
}
