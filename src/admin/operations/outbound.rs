//! What the operator sends: trust requests, trust answers to requesters, documents,
//! and the outbox and sentbox they go through (`08-delivery.md`).
//!
//! Artifacts the appliance makes for a hosted identity are signed through the
//! domain's delegator ([`crate::delivery::Originator`]); an artifact the operator
//! signed with a key of their own is queued exactly as given.

use serde_json::{Value, json};

use crate::delivery::queue::{self, QueueError};
use crate::delivery::{Originator, Outbound};
use crate::identity::{Identity, compute_trust_id};
use crate::protocol::json::{self as btps_json, Object};
use crate::protocol::{self, TransporterType};
use crate::store::{
    Mailbox, MailboxEntry, PageRequest, Perspective, Timestamp, TrustPatch, TrustStatus,
};

use super::args::{parse_cursor, parse_identity};
use super::inbox::instant_text;
use super::trust::trust_json;
use super::{AdminContext, AdminError, AdminResponse, AdminResult};

impl From<QueueError> for AdminError {
    fn from(error: QueueError) -> Self {
        match error {
            QueueError::Refused(refusal) => AdminError::Conflict(refusal.to_string()),
            QueueError::Invalid(reason) => AdminError::InvalidArgument(reason),
            QueueError::State(reason) => AdminError::Conflict(reason),
            QueueError::Store(error) => error.into(),
        }
    }
}

/// The outbound side of the context, or why there is none.
fn outbound(context: &AdminContext) -> AdminResult<&Outbound> {
    context.outbound().ok_or_else(|| {
        AdminError::Unsupported(String::from(
            "the server signs and delivers what its identities send: start `btps serve` \
             (these commands then reach it through its admin socket)",
        ))
    })
}

/// The originator after the delegator check of `from`'s domain.
fn checked_originator<'a>(
    context: &'a AdminContext,
    from: &Identity,
) -> AdminResult<&'a Originator> {
    let outbound = outbound(context)?;
    let originator = outbound.originator.as_ref();
    context
        .wait(originator.check_delegator(from.domain()))?
        .map_err(|error| AdminError::Unsupported(error.to_string()))?;
    Ok(originator)
}

fn wake(context: &AdminContext) {
    if let Some(outbound) = context.outbound() {
        outbound.wake();
    }
    crate::metrics::outbox_event("queued");
}

fn hosted(context: &AdminContext, identity: &Identity) -> AdminResult<()> {
    let found = context.wait(
        context
            .storage()
            .identities()
            .get_by_identity(identity.as_str()),
    )??;
    match found {
        Some(_) => Ok(()),
        None => Err(AdminError::NotFound(format!(
            "{identity} is not a hosted identity: only a hosted identity sends through this server"
        ))),
    }
}

/// The fields of a trust request document given on the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustRequestFields {
    /// Legal name of the requester.
    pub name: Option<String>,
    /// Contact e-mail.
    pub email: Option<String>,
    /// Why trust is asked for.
    pub reason: Option<String>,
    /// Contact phone.
    pub phone: Option<String>,
    /// A whole request document (JSON text) instead of, or under, the fields above.
    pub document: Option<String>,
}

/// `btps trust request FROM TO`: records the requesting side's pending record and
/// queues the TRUST_REQ, in one transaction (`05-trust.md` §6.3).
pub(super) fn trust_request(
    context: &AdminContext,
    from: &str,
    to: &str,
    fields: &TrustRequestFields,
) -> AdminResult<AdminResponse> {
    let from = parse_identity(from)?;
    let to = parse_identity(to)?;
    hosted(context, &from)?;
    let mut document = match &fields.document {
        Some(text) => match btps_json::parse(text) {
            Ok(btps_json::Value::Object(object)) => object,
            _ => {
                return Err(AdminError::InvalidArgument(String::from(
                    "--document must hold a JSON object (a trust request document)",
                )));
            }
        },
        None => Object::new(),
    };
    if document.get("id").is_none() {
        document.insert("id", crate::protocol::response::new_id());
    }
    for (key, value) in [
        ("name", &fields.name),
        ("email", &fields.email),
        ("reason", &fields.reason),
        ("phone", &fields.phone),
    ] {
        if let Some(value) = value {
            document.insert(key, value.as_str());
        }
    }
    let now = Timestamp::now();
    // Refuse before signing when the record says no (checked again when queued).
    let id = compute_trust_id(from.as_str(), to.as_str());
    let existing = context.wait(context.storage().trust().get(Perspective::Outbound, &id))??;
    queue::check_trust_request(existing.as_ref(), &now)?;
    let originator = checked_originator(context, &from)?;
    let artifact = originator
        .sign(
            TransporterType::TrustRequest,
            &from,
            &to,
            btps_json::Value::Object(document),
            None,
        )
        .map_err(|error| AdminError::Unsupported(error.to_string()))?;
    check_artifact(&artifact)?;
    let outbound = outbound(context)?;
    let (record, entry) = queue::queue_trust_request(
        context.storage().as_ref(),
        &artifact,
        &now,
        &outbound.policy,
    )?;
    wake(context);
    Ok(AdminResponse::TrustRequested {
        record: trust_json(&record),
        entry: entry_json(&entry, now.millis()),
    })
}

/// The operator's decision on the receiving side's record, and — unless
/// `notify` is off, and only for a request still pending — the TRUST_RES to the
/// requester queued in the same transaction (`05-trust.md` §6.4).
pub(super) fn decide(
    context: &AdminContext,
    sender: &str,
    receiver: &str,
    patch: &TrustPatch,
    notify: bool,
) -> AdminResult<AdminResponse> {
    let receiver = parse_identity(receiver)?;
    let id = compute_trust_id(sender, receiver.as_str());
    let current = context
        .wait(context.storage().trust().get(Perspective::Inbound, &id))??
        .ok_or_else(|| {
            AdminError::NotFound(format!(
                "no trust record from {sender} to {receiver} (nothing to decide on)"
            ))
        })?;
    let requester = Identity::parse(sender).ok();
    let (response, note) = match (notify, &requester) {
        (false, _) => (None, Some("not notified (--no-notify)".to_owned())),
        (true, None) => (
            None,
            Some(format!(
                "not notified: {sender} is not an identity (an agent)"
            )),
        ),
        (true, Some(_)) if current.status != TrustStatus::Pending => (
            None,
            Some(format!(
                "not notified: the record was {} (a requester only accepts an answer to a \
                 pending request)",
                current.status.as_str()
            )),
        ),
        (true, Some(requester)) => {
            let mut decided = current;
            decided.apply(patch.clone());
            // The decision stands even when the answer cannot be signed; the
            // operator is told why the requester was not notified.
            let signed = checked_originator(context, &receiver).and_then(|originator| {
                let artifact = originator
                    .sign(
                        TransporterType::TrustResponse,
                        &receiver,
                        requester,
                        queue::trust_response_document(&decided),
                        None,
                    )
                    .map_err(|error| AdminError::Unsupported(error.to_string()))?;
                check_artifact(&artifact)?;
                Ok(artifact)
            });
            match signed {
                Ok(artifact) => (Some(artifact), None),
                Err(error) => (None, Some(format!("not notified: {error}"))),
            }
        }
    };
    let now = Timestamp::now();
    let (record, entry) = queue::decide_and_respond(
        context.storage().as_ref(),
        sender,
        &receiver,
        patch,
        response.as_ref(),
        &now,
    )?;
    if entry.is_some() {
        wake(context);
    }
    Ok(AdminResponse::TrustDecided {
        record: trust_json(&record),
        notified: entry.as_ref().map(|entry| entry_json(entry, now.millis())),
        note,
    })
}

/// What `btps send` hands the server: a document to sign for a hosted sender, or
/// an artifact the operator signed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendRequest {
    /// The sender (hosted).
    pub from: String,
    /// The receiver.
    pub to: String,
    /// `TRUST_REQ`, `TRUST_RES` or `BTPS_DOC`.
    pub kind: String,
    /// The document (JSON text), for the server to sign.
    pub document: Option<String>,
    /// Encrypt the document to the receiver's DNS key.
    pub encrypt: bool,
    /// A complete signed artifact (JSON text), queued as it is.
    pub artifact: Option<String>,
}

/// Queues one artifact for delivery.
pub(super) fn send(context: &AdminContext, request: &SendRequest) -> AdminResult<AdminResponse> {
    let from = parse_identity(&request.from)?;
    let to = parse_identity(&request.to)?;
    let kind = TransporterType::parse(&request.kind).ok_or_else(|| {
        AdminError::InvalidArgument(String::from(
            "--type: expected TRUST_REQ, TRUST_RES or BTPS_DOC",
        ))
    })?;
    hosted(context, &from)?;
    let artifact = match (&request.artifact, &request.document) {
        (Some(text), _) => {
            let artifact = match btps_json::parse(text) {
                Ok(btps_json::Value::Object(object)) => object,
                _ => {
                    return Err(AdminError::InvalidArgument(String::from(
                        "the artifact is not a JSON object",
                    )));
                }
            };
            let matches = artifact.str("from") == Some(from.as_str())
                && artifact.str("to") == Some(to.as_str())
                && artifact.str("type") == Some(kind.as_str());
            if !matches {
                return Err(AdminError::InvalidArgument(String::from(
                    "the artifact's from, to and type must be the ones given",
                )));
            }
            artifact
        }
        (None, Some(text)) => {
            let document = btps_json::parse(text).map_err(|error| {
                AdminError::InvalidArgument(format!("--document is not JSON: {error}"))
            })?;
            let originator = checked_originator(context, &from)?;
            let receiver_key = if request.encrypt {
                let key = context
                    .wait(originator.receiver_key(&to))?
                    .map_err(|error| AdminError::NotFound(format!("--encrypt: {error}")))?;
                Some(key)
            } else {
                None
            };
            originator
                .sign(kind, &from, &to, document, receiver_key.as_ref())
                .map_err(|error| AdminError::Unsupported(error.to_string()))?
        }
        (None, None) => {
            return Err(AdminError::InvalidArgument(String::from(
                "give a document to sign, or a signed artifact",
            )));
        }
    };
    check_artifact(&artifact)?;
    let now = Timestamp::now();
    let entry = queue::enqueue(context.storage().as_ref(), &artifact, &now)?;
    wake(context);
    Ok(AdminResponse::OutboxEntry {
        entry: entry_json(&entry, now.millis()),
    })
}

/// An artifact the server would refuse as malformed is never queued.
fn check_artifact(artifact: &Object) -> AdminResult<()> {
    let line = btps_json::Value::Object(artifact.clone()).to_canonical();
    protocol::parse_line(line.as_bytes())
        .map(drop)
        .map_err(|error| AdminError::InvalidArgument(format!("the artifact is not valid: {error}")))
}

/// A page of the outbox, of one identity or of all, in queue order.
pub(super) fn outbox_list(
    context: &AdminContext,
    identity: Option<&str>,
    limit: u32,
    cursor: Option<&str>,
) -> AdminResult<AdminResponse> {
    let identity = identity.map(parse_identity).transpose()?;
    let page = PageRequest {
        after: parse_cursor(cursor)?,
        limit,
    };
    let outbox = context.storage().outbox();
    let listed = context.wait(outbox.list(identity.as_ref().map(Identity::as_str), page))??;
    let now = Timestamp::now().millis();
    Ok(AdminResponse::OutboxEntries {
        entries: listed
            .items
            .iter()
            .map(|entry| entry_json(entry, now))
            .collect(),
        next: listed.next.as_ref().map(ToString::to_string),
    })
}

/// A page of an identity's sentbox, newest first.
pub(super) fn sentbox_list(
    context: &AdminContext,
    identity: &str,
    limit: u32,
    cursor: Option<&str>,
) -> AdminResult<AdminResponse> {
    let identity = parse_identity(identity)?;
    let page = PageRequest {
        after: parse_cursor(cursor)?,
        limit,
    };
    let mailboxes = context.storage().mailboxes();
    let listed =
        context.wait(mailboxes.list(identity.as_str(), Mailbox::Sentbox, page, true))??;
    let now = Timestamp::now().millis();
    Ok(AdminResponse::OutboxEntries {
        entries: listed
            .items
            .iter()
            .map(|entry| entry_json(entry, now))
            .collect(),
        next: listed.next.as_ref().map(ToString::to_string),
    })
}

/// The entry `entry_id` of the outbox (or wherever it went: sentbox, trash).
pub(super) fn outbox_show(context: &AdminContext, entry_id: u64) -> AdminResult<AdminResponse> {
    let entry = stored_entry(context, entry_id)?;
    let mut value = entry_json(&entry, Timestamp::now().millis());
    if let (Some(object), Ok(text)) = (value.as_object_mut(), std::str::from_utf8(&entry.raw)) {
        object.insert("artifact".to_owned(), Value::from(text));
    }
    Ok(AdminResponse::OutboxEntry { entry: value })
}

fn stored_entry(context: &AdminContext, entry_id: u64) -> AdminResult<MailboxEntry> {
    context
        .wait(context.storage().mailboxes().entry(entry_id))??
        .filter(|entry| match entry.mailbox {
            Mailbox::Outbox | Mailbox::Sentbox => true,
            Mailbox::Trash => entry.origin == Some(Mailbox::Outbox),
            Mailbox::Inbox | Mailbox::Draft => false,
        })
        .ok_or_else(|| AdminError::NotFound(format!("no outbox entry {entry_id}")))
}

/// Makes an entry due now.
pub(super) fn outbox_retry(context: &AdminContext, entry_id: u64) -> AdminResult<AdminResponse> {
    let owner = stored_entry(context, entry_id)?.owner;
    let now = Timestamp::now();
    let entry = queue::retry_now(context.storage().as_ref(), &owner, entry_id, &now)?;
    if let Some(outbound) = context.outbound() {
        outbound.wake();
    }
    Ok(AdminResponse::OutboxEntry {
        entry: entry_json(&entry, now.millis()),
    })
}

/// Moves an entry that is not in flight to the trash.
pub(super) fn outbox_cancel(context: &AdminContext, entry_id: u64) -> AdminResult<AdminResponse> {
    let owner = stored_entry(context, entry_id)?.owner;
    let now = Timestamp::now();
    let entry = queue::cancel(context.storage().as_ref(), &owner, entry_id, &now)?;
    crate::metrics::outbox_event("cancelled");
    Ok(AdminResponse::OutboxEntry {
        entry: entry_json(&entry, now.millis()),
    })
}

/// An outbound entry as the outbox commands print it.
pub(super) fn entry_json(entry: &MailboxEntry, now_millis: i64) -> Value {
    let time = |value: Option<&Timestamp>| value.map(|at| Value::from(at.as_str()));
    let state = match entry.outbox_state(now_millis) {
        Some(state) => state.as_str().to_owned(),
        None if entry.mailbox == Mailbox::Sentbox => "delivered".to_owned(),
        None if entry.meta.cancelled_at.is_some() => "cancelled".to_owned(),
        None => entry.mailbox.as_str().to_owned(),
    };
    json!({
        "id": entry.entry_id,
        "mailbox": entry.mailbox.as_str(),
        "state": state,
        "artifactId": entry.artifact_id,
        "type": entry.artifact_type,
        "from": entry.from,
        "to": entry.to,
        "title": entry.title,
        "queuedAt": time(entry.meta.queued_at.as_ref()),
        "attempts": entry.meta.attempts,
        "nextAttemptAt": time(entry.meta.next_attempt_at.as_ref()),
        "lastAttemptAt": time(entry.meta.last_attempt_at.as_ref()),
        "lastError": entry.meta.last_error,
        "deliveredAt": time(entry.meta.delivered_at.as_ref()),
        "responseId": entry.meta.response_id,
        "cancelledAt": time(entry.meta.cancelled_at.as_ref()),
        "at": instant_text(entry.at_millis),
    })
}
