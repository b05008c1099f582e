//! Putting artifacts into the outbox (`08-delivery.md` §5.1) together with the
//! trust changes they imply (`05-trust.md` §6.3, §6.4), each in one transaction;
//! and the operator's steering of an entry (retry now, cancel).
//!
//! Every function here blocks (it runs a [`Storage::transact`]); async callers use
//! `spawn_blocking`.

use crate::identity::{Identity, compute_trust_id};
use crate::protocol::json::{Object, Value};
use crate::protocol::{ProtocolError, TransporterType};
use crate::server::inbound::Content;
use crate::server::trust::{self, RequestTerms, TrustPolicy, VerifyingKey};
use crate::store::{
    Mailbox, MailboxEntry, NewOutboxEntry, OutboxState, Perspective, Storage, StoreError,
    StoreTransaction, Timestamp, TrustPatch, TrustRecord, TrustStatus,
};

/// Why an artifact was not queued.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The trust rules refuse it (a request to a partner already trusted, blocked,
    /// or within its cooling-off period).
    #[error("{0}")]
    Refused(ProtocolError),
    /// The sender is not hosted here, or the artifact is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The entry does not exist, or is not in the state the change needs.
    #[error("{0}")]
    State(String),
    /// The database failed; nothing was queued.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The outbox entry for a built artifact: its fields read from the artifact, its
/// bytes the artifact's canonical JSON text (what is sent on every attempt).
pub fn outbox_entry(artifact: &Object, queued_at: Timestamp) -> Result<NewOutboxEntry, QueueError> {
    let text = |key: &str| {
        artifact
            .str(key)
            .map(str::to_owned)
            .ok_or_else(|| QueueError::Invalid(format!("the artifact has no {key}")))
    };
    let kind = TransporterType::parse(&text("type")?)
        .ok_or_else(|| QueueError::Invalid("the artifact has no transporter type".to_owned()))?;
    let plain = match artifact.get("encryption") {
        None | Some(Value::Null) => artifact.get("document"),
        Some(_) => None,
    };
    let from = text("from")?;
    Ok(NewOutboxEntry {
        owner: from.clone(),
        artifact_id: text("id")?,
        artifact_type: kind.as_str().to_owned(),
        from,
        to: text("to")?,
        title: Content::read(kind, plain).title,
        raw: Value::Object(artifact.clone()).to_canonical().into_bytes(),
        queued_at,
        agent_artifact_id: None,
        agent_id: None,
    })
}

/// Runs `work` in one transaction of `storage` for `owner` and returns its value.
pub fn transact<T>(
    storage: &dyn Storage,
    owner: &str,
    mut work: impl FnMut(&mut dyn StoreTransaction) -> Result<T, QueueError>,
) -> Result<T, QueueError> {
    let mut outcome: Option<Result<T, QueueError>> = None;
    let committed = storage.transact(owner, &mut |transaction| match work(transaction) {
        Ok(value) => {
            outcome = Some(Ok(value));
            Ok(())
        }
        // A refusal writes nothing: the (empty) transaction may commit.
        Err(QueueError::Store(error)) => Err(error),
        Err(error) => {
            outcome = Some(Err(error));
            Err(StoreError::TaskFailed(String::from("refused")))
        }
    });
    match (committed, outcome) {
        (_, Some(Err(error))) => Err(error),
        (Ok(()), Some(Ok(value))) => Ok(value),
        (Err(error), _) => Err(QueueError::Store(error)),
        (Ok(()), None) => Err(QueueError::Store(StoreError::TaskFailed(
            "the transaction ran no work".to_owned(),
        ))),
    }
}

/// Queues a built artifact from a hosted identity.
pub fn enqueue(
    storage: &dyn Storage,
    artifact: &Object,
    now: &Timestamp,
) -> Result<MailboxEntry, QueueError> {
    let entry = outbox_entry(artifact, now.clone())?;
    let owner = entry.owner.clone();
    transact(storage, &owner, |tx| {
        if !tx.is_hosted(&owner)? {
            return Err(QueueError::Invalid(format!(
                "{owner} is not hosted here: only a hosted identity sends through this server"
            )));
        }
        Ok(tx.enqueue(entry.clone())?)
    })
}

/// The guard of an outbound trust request from `from` to `to` (`05-trust.md`
/// §6.3), checked against the requesting-side record outside a transaction: what an
/// operator command checks before it builds and signs the request.
pub fn check_trust_request(
    record: Option<&TrustRecord>,
    now: &Timestamp,
) -> Result<(), QueueError> {
    trust::check_trust_request(record, now).map_err(QueueError::Refused)
}

/// Queues a signed TRUST_REQ and records the requesting side's pending record
/// (`05-trust.md` §6.3), in one transaction; refuses as §6.3 says. Returns the
/// record and the entry.
pub fn queue_trust_request(
    storage: &dyn Storage,
    artifact: &Object,
    now: &Timestamp,
    policy: &TrustPolicy,
) -> Result<(TrustRecord, MailboxEntry), QueueError> {
    let entry = outbox_entry(artifact, now.clone())?;
    queue_trust_request_entry(storage, artifact, &entry, now, policy)
}

/// [`queue_trust_request`] of an outbox entry made beforehand (an agent's, which
/// names the agent).
pub fn queue_trust_request_entry(
    storage: &dyn Storage,
    artifact: &Object,
    entry: &NewOutboxEntry,
    now: &Timestamp,
    policy: &TrustPolicy,
) -> Result<(TrustRecord, MailboxEntry), QueueError> {
    let (from, to) = (entry.from.clone(), entry.to.clone());
    let terms = match artifact.get("encryption") {
        None | Some(Value::Null) => artifact
            .get("document")
            .map(RequestTerms::from_document)
            .unwrap_or_default(),
        Some(_) => RequestTerms::default(),
    };
    let id = compute_trust_id(&from, &to);
    transact(storage, &from, |tx| {
        if !tx.is_hosted(&from)? {
            return Err(QueueError::Invalid(format!("{from} is not hosted here")));
        }
        let existing = tx.trust(Perspective::Outbound, &id)?;
        check_trust_request(existing.as_ref(), now)?;
        let record = match existing {
            None => {
                let unknown = VerifyingKey {
                    base64: String::new(),
                    fingerprint: String::new(),
                    delegated_by: None,
                };
                let mut new = trust::new_request_record(
                    &from,
                    &to,
                    &entry.artifact_id,
                    &terms,
                    &unknown,
                    now,
                    policy,
                );
                // The requesting side is not cooling off: that is the receiver's.
                new.retry_after_date = None;
                tx.create_trust(Perspective::Outbound, new)?
            }
            Some(_) => {
                let patch = TrustPatch {
                    status: Some(TrustStatus::Pending),
                    decided_by: Some("system".to_owned()),
                    decided_at: Some(now.clone()),
                    expires_at: Some(terms.expires_at.clone()),
                    privacy_type: Some(
                        terms
                            .privacy_type
                            .clone()
                            .unwrap_or_else(|| policy.default_privacy.clone()),
                    ),
                    retry_after_date: Some(None),
                    ..TrustPatch::default()
                };
                tx.update_trust(Perspective::Outbound, &id, patch)?
            }
        };
        let queued = tx.enqueue(entry.clone())?;
        Ok((record, queued))
    })
}

/// The TRUST_RES document answering the request of `record` (the receiving side's
/// record after the decision, `05-trust.md` §6.4): the request document's id, the
/// decision, who and when, and the terms the record now has.
pub fn trust_response_document(record: &TrustRecord) -> Value {
    let request_id = record
        .metadata
        .as_ref()
        .and_then(|metadata| metadata.get("request"))
        .and_then(Value::as_object)
        .and_then(|request| {
            request
                .str("documentId")
                .or_else(|| request.str("artifactId"))
        })
        .map_or_else(|| record.id.clone(), str::to_owned);
    let mut document = Object::new();
    document.insert("id", request_id);
    document.insert("decision", record.status.as_str());
    document.insert("decidedAt", record.decided_at.as_str());
    document.insert("decidedBy", record.decided_by.as_str());
    if let Some(expires_at) = &record.expires_at {
        document.insert("expiresAt", expires_at.as_str());
    }
    if let Some(retry_after) = &record.retry_after_date {
        document.insert("retryAfterDate", retry_after.as_str());
    }
    document.insert("privacyType", record.privacy_type.as_str());
    Value::Object(document)
}

/// Applies `patch` to the receiving side's record of (`sender`, `receiver`) and,
/// when `response` is given, queues it (the signed TRUST_RES to `sender`) in the
/// same transaction (`05-trust.md` §6.4). Returns the record after the change and
/// the entry queued.
pub fn decide_and_respond(
    storage: &dyn Storage,
    sender: &str,
    receiver: &Identity,
    patch: &TrustPatch,
    response: Option<&Object>,
    now: &Timestamp,
) -> Result<(TrustRecord, Option<MailboxEntry>), QueueError> {
    let id = compute_trust_id(sender, receiver.as_str());
    let entry = response
        .map(|artifact| outbox_entry(artifact, now.clone()))
        .transpose()?;
    transact(storage, receiver.as_str(), |tx| {
        if tx.trust(Perspective::Inbound, &id)?.is_none() {
            return Err(QueueError::State(format!(
                "no trust record from {sender} to {receiver} (nothing to decide on)"
            )));
        }
        let record = tx.update_trust(Perspective::Inbound, &id, patch.clone())?;
        let queued = match &entry {
            Some(entry) => Some(tx.enqueue(entry.clone())?),
            None => None,
        };
        Ok((record, queued))
    })
}

/// Makes an outbox entry due now (an operator's `outbox retry`). An entry in
/// flight is left alone.
pub fn retry_now(
    storage: &dyn Storage,
    owner: &str,
    entry_id: u64,
    now: &Timestamp,
) -> Result<MailboxEntry, QueueError> {
    transact(storage, owner, |tx| {
        let mut entry = outbox_entry_of(tx, entry_id)?;
        if entry.outbox_state(now.millis()) == Some(OutboxState::InFlight) {
            return Err(QueueError::State(format!(
                "outbox entry {entry_id} is being delivered right now"
            )));
        }
        entry.meta.in_flight_until = None;
        entry.meta.next_attempt_at = Some(now.clone());
        tx.update_entry(&entry)?;
        Ok(entry)
    })
}

/// Cancels an outbox entry that is not in flight: it moves to the trash with
/// `cancelledAt` (`06-storage.md` §5.2).
pub fn cancel(
    storage: &dyn Storage,
    owner: &str,
    entry_id: u64,
    now: &Timestamp,
) -> Result<MailboxEntry, QueueError> {
    transact(storage, owner, |tx| {
        let mut entry = outbox_entry_of(tx, entry_id)?;
        if entry.outbox_state(now.millis()) == Some(OutboxState::InFlight) {
            return Err(QueueError::State(format!(
                "outbox entry {entry_id} is being delivered right now and cannot be cancelled"
            )));
        }
        entry.origin = Some(Mailbox::Outbox);
        entry.mailbox = Mailbox::Trash;
        entry.at_millis = now.millis();
        entry.meta.in_flight_until = None;
        entry.meta.cancelled_at = Some(now.clone());
        entry.meta.trashed_at = Some(now.clone());
        tx.update_entry(&entry)?;
        Ok(entry)
    })
}

fn outbox_entry_of(
    tx: &mut dyn StoreTransaction,
    entry_id: u64,
) -> Result<MailboxEntry, QueueError> {
    match tx.entry(entry_id)? {
        Some(entry) if entry.mailbox == Mailbox::Outbox => Ok(entry),
        Some(entry) => Err(QueueError::State(format!(
            "entry {entry_id} is not in the outbox (it is in the {})",
            entry.mailbox
        ))),
        None => Err(QueueError::State(format!("no outbox entry {entry_id}"))),
    }
}
