//! `trust.fetch`, `trust.update`, `trust.delete` (`spec/07-agents-auth.md` §3.2,
//! `spec/05-trust.md` §6.5): the owner's own trust records, local only — nothing is
//! sent to the counterpart.
//!
//! The owner's records are its receiving-side (`inbound`) records, where it is
//! `receiverId` — its partners and its own agents — and its requesting-side
//! (`outbound`) records, where it is `senderId`. Another hosted identity's records
//! that merely name the owner stay that identity's. Revoking or deleting an agent
//! record also deletes the agent's session, in the same transaction.

use std::cmp::Ordering;

use crate::identity::is_schema_identity;
use crate::protocol::json::{Object, Value};
use crate::protocol::{ErrorCode, ProtocolError};
use crate::server::pipeline::{Pipeline, Reply, storage_failure};
use crate::server::trust::Decision;
use crate::store::{PageRequest, Perspective, TrustRecord, TrustStatus};
use crate::wire::trust_to_json;

use super::answer::Content;
use super::cursor::{self, Position};
use super::fetch::count;
use super::{Verified, documents, transact};

/// Whether `record` (from `perspective`) is one of `owner`'s own.
fn owned_by(perspective: Perspective, record: &TrustRecord, owner: &str) -> bool {
    let party = match perspective {
        Perspective::Inbound => &record.receiver_id,
        Perspective::Outbound => &record.sender_id,
    };
    party.to_lowercase() == owner.to_lowercase()
}

/// Whether `record` is an agent's (its sender is not an identity).
fn is_agent_record(perspective: Perspective, record: &TrustRecord) -> bool {
    perspective == Perspective::Inbound && !is_schema_identity(&record.sender_id)
}

fn perspective_rank(perspective: Perspective) -> u8 {
    match perspective {
        Perspective::Inbound => 0,
        Perspective::Outbound => 1,
    }
}

/// The order of a trust listing: `createdAt`, then perspective, then id.
fn order(a: &(Perspective, TrustRecord), b: &(Perspective, TrustRecord)) -> Ordering {
    (a.1.created_at.millis(), perspective_rank(a.0), &a.1.id).cmp(&(
        b.1.created_at.millis(),
        perspective_rank(b.0),
        &b.1.id,
    ))
}

fn position(item: &(Perspective, TrustRecord)) -> Position {
    Position::Trust {
        at_millis: item.1.created_at.millis(),
        perspective: item.0,
        id: item.1.id.clone(),
    }
}

fn after(item: &(Perspective, TrustRecord), cursor: &Position, newest_first: bool) -> bool {
    let Position::Trust {
        at_millis,
        perspective,
        id,
    } = cursor
    else {
        return true;
    };
    let key = (
        item.1.created_at.millis(),
        perspective_rank(item.0),
        item.1.id.as_str(),
    );
    let cursor = (*at_millis, perspective_rank(*perspective), id.as_str());
    if newest_first {
        key < cursor
    } else {
        key > cursor
    }
}

impl Pipeline {
    /// Every record of `owner` from `perspective` (its party index, all pages).
    async fn owner_records(
        &self,
        perspective: Perspective,
        owner: &str,
    ) -> Result<Vec<(Perspective, TrustRecord)>, ProtocolError> {
        let trust = self.storage.trust();
        let mut records = Vec::new();
        let mut page = PageRequest::first(500);
        loop {
            let listed = match perspective {
                Perspective::Inbound => trust.list_by_receiver(perspective, owner, page).await,
                Perspective::Outbound => trust.list_by_sender(perspective, owner, page).await,
            }
            .map_err(storage_failure)?;
            records.extend(listed.items.into_iter().map(|record| (perspective, record)));
            match listed.next {
                Some(next) => page = PageRequest::after(next, 500),
                None => return Ok(records),
            }
        }
    }

    /// `trust.fetch`: the owner's records, both perspectives, as bare trust records.
    pub(super) async fn trust_fetch(
        &self,
        verified: &Verified<'_>,
    ) -> Result<Reply, ProtocolError> {
        let document = documents::query(verified.document())?;
        let owner = verified.owner.as_str();
        let digest = cursor::digest(
            owner,
            "trust",
            document.since,
            document.until,
            &document.query_text,
        );
        let cursor = match &document.cursor {
            None => None,
            Some(text) => match cursor::decode(text, document.newest_first, &digest)? {
                position @ Position::Trust { .. } => Some(position),
                Position::Entry(_) => {
                    return Err(
                        ProtocolError::validation("cursor: a mailbox listing's cursor")
                            .with_reason("cursor of another query"),
                    );
                }
            },
        };
        let mut records = self.owner_records(Perspective::Inbound, owner).await?;
        records.extend(self.owner_records(Perspective::Outbound, owner).await?);
        let filter = &document.filter;
        records.retain(|(_, record)| {
            let at = record.created_at.millis();
            document.since.is_none_or(|since| at >= since)
                && document.until.is_none_or(|until| at <= until)
                && filter
                    .from
                    .as_ref()
                    .is_none_or(|from| from.matches(Some(&record.sender_id), false))
                && filter
                    .to
                    .as_ref()
                    .is_none_or(|to| to.matches(Some(&record.receiver_id), false))
        });
        records.sort_by(order);
        if document.newest_first {
            records.reverse();
        }
        let total = records.len();
        let mut following = records.iter().filter(|item| {
            cursor
                .as_ref()
                .is_none_or(|cursor| after(item, cursor, document.newest_first))
        });
        let limit = usize::try_from(document.limit).unwrap_or(usize::MAX);
        let page: Vec<&(Perspective, TrustRecord)> = following.by_ref().take(limit).collect();
        let has_next = following.next().is_some();
        let mut answer = Object::new();
        answer.insert(
            "results",
            Value::Array(
                page.iter()
                    .map(|(_, record)| Value::Object(trust_to_json(record)))
                    .collect(),
            ),
        );
        if has_next && let Some(last) = page.last() {
            answer.insert(
                "cursor",
                cursor::encode(document.newest_first, &position(last), &digest),
            );
        }
        answer.insert("total", count(u64::try_from(total).unwrap_or(u64::MAX)));
        answer.insert("hasNext", has_next);
        self.agent_answer(
            verified,
            "success",
            Value::Object(answer),
            Content::QueryResult,
        )
    }

    /// `trust.update`: the decision of a trust-response document applied to one of
    /// the owner's records.
    pub(super) async fn trust_update(
        &self,
        verified: &Verified<'_>,
    ) -> Result<Reply, ProtocolError> {
        let (id, inner) = documents::mutation(verified.document())?;
        let decision = Decision::from_document(inner).ok_or_else(|| {
            ProtocolError::validation("document.document: a trust response document is required")
        })?;
        if decision.status == TrustStatus::Pending || !decision.status.is_known() {
            return Err(ProtocolError::validation(format!(
                "document.document.decision: {} is not a decision",
                decision.status.as_str()
            )));
        }
        let id = id.to_lowercase();
        let owner = verified.owner.as_str().to_owned();
        let updated = transact(&self.storage, verified.owner.as_str(), move |transaction| {
            let mut updated = Vec::new();
            for perspective in Perspective::ALL {
                let Some(record) = transaction.trust(perspective, &id)? else {
                    continue;
                };
                if !owned_by(perspective, &record, &owner) {
                    continue;
                }
                let record = transaction.update_trust(perspective, &id, decision.patch())?;
                if is_agent_record(perspective, &record) && record.status != TrustStatus::Accepted {
                    transaction.delete_session(&record.sender_id)?;
                }
                updated.push(record);
            }
            if updated.is_empty() {
                let error = ProtocolError::new(
                    ErrorCode::TrustNonExistent,
                    format!("no trust record {id} of this identity"),
                );
                return Ok(Err(error));
            }
            Ok(Ok(updated))
        })
        .await?;
        let mut answer = Object::new();
        let total = count(u64::try_from(updated.len()).unwrap_or(u64::MAX));
        answer.insert(
            "results",
            Value::Array(
                updated
                    .iter()
                    .map(|record| Value::Object(trust_to_json(record)))
                    .collect(),
            ),
        );
        answer.insert("total", total);
        answer.insert("hasNext", false);
        self.agent_answer(verified, "success", Value::Object(answer), Content::Plain)
    }

    /// `trust.delete`: removes the owner's records with these ids.
    pub(super) async fn trust_delete(
        &self,
        verified: &Verified<'_>,
    ) -> Result<Reply, ProtocolError> {
        let ids = documents::ids(verified.document())?;
        let owner = verified.owner.as_str().to_owned();
        let (deleted, not_found) =
            transact(&self.storage, verified.owner.as_str(), move |transaction| {
                let (mut deleted, mut not_found) = (Vec::new(), Vec::new());
                for id in &ids {
                    let mut found = false;
                    for perspective in Perspective::ALL {
                        let Some(record) = transaction.trust(perspective, id)? else {
                            continue;
                        };
                        if !owned_by(perspective, &record, &owner) {
                            continue;
                        }
                        transaction.delete_trust(perspective, id)?;
                        if is_agent_record(perspective, &record) {
                            transaction.delete_session(&record.sender_id)?;
                        }
                        found = true;
                    }
                    if found {
                        deleted.push(id.clone());
                    } else {
                        not_found.push(id.clone());
                    }
                }
                Ok(Ok((deleted, not_found)))
            })
            .await?;
        let strings = |ids: Vec<String>| Value::Array(ids.into_iter().map(Value::from).collect());
        let mut answer = Object::new();
        answer.insert("updated", strings(deleted));
        answer.insert("notFound", strings(not_found));
        self.agent_answer(verified, "success", Value::Object(answer), Content::Plain)
    }
}
