//! Trust records: listings from each index, both records of one relationship, the
//! operator's decisions on the receiving-side record, and deletion.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::identity::compute_trust_id;
use crate::store::{PageRequest, Perspective, Timestamp, TrustPatch, TrustRecord, TrustStatus};
use crate::wire::trust_to_json;

use super::args::{check_sender, parse_cursor, parse_identity, parse_status, parse_time};
use super::{AdminContext, AdminError, AdminResponse, AdminResult, object_json};

/// The operator's decision on a trust record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Decision {
    /// The sender may deliver documents.
    Accept,
    /// The sender's request is refused (a new one is allowed after `retry_after`).
    Reject,
    /// A granted trust is withdrawn.
    Revoke,
    /// Nothing from the sender is accepted, not even a new request.
    Block,
}

impl Decision {
    fn status(self) -> TrustStatus {
        match self {
            Decision::Accept => TrustStatus::Accepted,
            Decision::Reject => TrustStatus::Rejected,
            Decision::Revoke => TrustStatus::Revoked,
            Decision::Block => TrustStatus::Blocked,
        }
    }
}

/// The arguments of a trust listing.
pub(super) struct TrustListing {
    pub(super) outbound: bool,
    pub(super) receiver: Option<String>,
    pub(super) sender: Option<String>,
    pub(super) status: Option<String>,
    pub(super) expiring_before: Option<String>,
    pub(super) limit: u32,
    pub(super) cursor: Option<String>,
}

fn perspective(outbound: bool) -> (Perspective, &'static str) {
    if outbound {
        (Perspective::Outbound, "outbound")
    } else {
        (Perspective::Inbound, "inbound")
    }
}

pub(super) fn trust_list(
    context: &AdminContext,
    listing: &TrustListing,
) -> AdminResult<AdminResponse> {
    let (perspective, _) = perspective(listing.outbound);
    let status = listing.status.as_deref().map(parse_status).transpose()?;
    let expiring = listing
        .expiring_before
        .as_deref()
        .map(|text| parse_time("--expiring-before", text))
        .transpose()?;
    let page = PageRequest {
        after: parse_cursor(listing.cursor.as_deref())?,
        limit: listing.limit,
    };
    let trust = context.storage().trust();
    let listed = context.wait(async {
        if let Some(before) = &expiring {
            trust
                .list_expiring_before(perspective, before.millis(), status.as_ref(), page)
                .await
        } else if let Some(receiver) = &listing.receiver {
            trust.list_by_receiver(perspective, receiver, page).await
        } else if let Some(sender) = &listing.sender {
            trust.list_by_sender(perspective, sender, page).await
        } else if let Some(status) = &status {
            trust.list_by_status(perspective, status, page).await
        } else {
            trust.list_all(perspective, page).await
        }
    })??;
    Ok(AdminResponse::TrustRecords {
        records: listed.items.iter().map(trust_json).collect(),
        next: listed.next.as_ref().map(ToString::to_string),
    })
}

pub(super) fn trust_show(
    context: &AdminContext,
    sender: &str,
    receiver: &str,
) -> AdminResult<AdminResponse> {
    check_sender(sender)?;
    parse_identity(receiver)?;
    let id = compute_trust_id(sender, receiver);
    let trust = context.storage().trust();
    let (inbound, outbound) = context.wait(async {
        Ok::<_, crate::store::StoreError>((
            trust.get(Perspective::Inbound, &id).await?,
            trust.get(Perspective::Outbound, &id).await?,
        ))
    })??;
    if inbound.is_none() && outbound.is_none() {
        return Err(AdminError::NotFound(format!(
            "no trust record from {sender} to {receiver} (id {id})"
        )));
    }
    Ok(AdminResponse::TrustPair {
        inbound: inbound.as_ref().map(trust_json),
        outbound: outbound.as_ref().map(trust_json),
    })
}

/// The arguments of an operator's decision.
pub(super) struct TrustDecision {
    pub(super) sender: String,
    pub(super) receiver: String,
    pub(super) decision: Decision,
    pub(super) expires_at: Option<String>,
    pub(super) retry_after: Option<String>,
    pub(super) decided_by: String,
    pub(super) notify: bool,
}

pub(super) fn trust_decide(
    context: &AdminContext,
    decision: &TrustDecision,
) -> AdminResult<AdminResponse> {
    check_sender(&decision.sender)?;
    parse_identity(&decision.receiver)?;
    let expires_at = decision
        .expires_at
        .as_deref()
        .map(|text| parse_time("--expires-at", text))
        .transpose()?;
    let retry_after = decision
        .retry_after
        .as_deref()
        .map(|text| parse_time("--retry-after", text))
        .transpose()?;
    if decision.decided_by.trim().is_empty() {
        return Err(AdminError::InvalidArgument(String::from(
            "--decided-by must not be empty",
        )));
    }
    let patch = TrustPatch {
        status: Some(decision.decision.status()),
        decided_by: Some(decision.decided_by.clone()),
        decided_at: Some(Timestamp::now()),
        expires_at: expires_at.map(Some),
        retry_after_date: retry_after.map(Some),
        ..TrustPatch::default()
    };
    // The receiving side's record: the local party is the receiver (05-trust.md §4.2).
    super::outbound::decide(
        context,
        &decision.sender,
        &decision.receiver,
        &patch,
        decision.notify,
    )
}

pub(super) fn trust_delete(
    context: &AdminContext,
    sender: &str,
    receiver: &str,
    outbound: bool,
) -> AdminResult<AdminResponse> {
    check_sender(sender)?;
    parse_identity(receiver)?;
    let (perspective, name) = perspective(outbound);
    let id = compute_trust_id(sender, receiver);
    if !context.wait(context.storage().trust().delete(perspective, &id))?? {
        return Err(AdminError::NotFound(format!(
            "no {name} trust record from {sender} to {receiver}"
        )));
    }
    Ok(AdminResponse::TrustDeleted {
        id,
        perspective: name.to_owned(),
    })
}

/// A trust record in the reference's JSON shape.
pub(super) fn trust_json(record: &TrustRecord) -> Value {
    object_json(&trust_to_json(record).to_canonical())
}
