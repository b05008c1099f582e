//! The agents' mailbox changes (`spec/07-agents-auth.md` §3.2, `06-storage.md`
//! §5.2): `inbox.seen`; `inbox.delete`, `sentbox.delete`, `draft.delete` (to the
//! trash); `trash.delete` (for good); `outbox.cancel` (to the trash unless a
//! delivery attempt holds the entry); `draft.create` and `draft.update`.
//!
//! An ids action names artifact ids (draft ids for drafts); every entry of the
//! owner's mailbox holding one is acted on, each id once, all in one transaction.
//! The answer is `{"updated": [...], "notFound": [...]}` (+ `inFlight`).

use crate::model::{EntryKind, EntryMeta};
use crate::protocol::json::{self, Object, Value};
use crate::protocol::response::new_id;
use crate::protocol::{ProtocolError, TransporterType};
use crate::server::inbound::Content;
use crate::server::pipeline::{Pipeline, Reply};
use crate::store::{Mailbox, MailboxEntry, OutboxState, Timestamp};

use super::answer::Content as AnswerContent;
use super::fetch::{count, meta};
use super::{Verified, documents, transact};

/// What an ids action does to each entry it finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    /// `inbox.seen`.
    Seen,
    /// `inbox.delete`, `sentbox.delete`, `draft.delete`.
    Trash,
    /// `trash.delete`.
    Purge,
    /// `outbox.cancel`.
    Cancel,
}

/// The ids a change acted on, did not find, or (cancel) found in flight.
#[derive(Debug, Default)]
struct Outcome {
    updated: Vec<String>,
    not_found: Vec<String>,
    in_flight: Vec<String>,
}

fn strings(ids: Vec<String>) -> Value {
    Value::Array(ids.into_iter().map(Value::from).collect())
}

impl Pipeline {
    /// An ids action on the owner's `mailbox`.
    pub(super) async fn change_entries(
        &self,
        verified: &Verified<'_>,
        mailbox: Mailbox,
        change: Change,
    ) -> Result<Reply, ProtocolError> {
        let ids = documents::ids(verified.document())?;
        let owner = verified.owner.as_str().to_owned();
        let scope = owner.clone();
        let outcome = transact(&self.storage, &scope, move |transaction| {
            let now = Timestamp::now();
            let mut outcome = Outcome::default();
            for id in &ids {
                let entries = transaction.entries_by_artifact(&owner, mailbox, id)?;
                if entries.is_empty() {
                    outcome.not_found.push(id.clone());
                    continue;
                }
                let mut busy = false;
                for mut entry in entries {
                    match change {
                        Change::Seen => {
                            if !entry.meta.seen {
                                entry.meta.seen = true;
                                entry.meta.seen_at = Some(now.clone());
                                transaction.update_entry(&entry)?;
                            }
                        }
                        Change::Trash => transaction.update_entry(&entry.into_trash(&now))?,
                        Change::Purge => {
                            transaction.remove_entry(entry.entry_id)?;
                        }
                        Change::Cancel => {
                            if entry.outbox_state(now.millis()) == Some(OutboxState::InFlight) {
                                busy = true;
                                continue;
                            }
                            entry.meta.in_flight_until = None;
                            entry.meta.cancelled_at = Some(now.clone());
                            transaction.update_entry(&entry.into_trash(&now))?;
                        }
                    }
                }
                if busy {
                    outcome.in_flight.push(id.clone());
                } else {
                    outcome.updated.push(id.clone());
                }
            }
            Ok(Ok(outcome))
        })
        .await?;
        let mut answer = Object::new();
        answer.insert("updated", strings(outcome.updated));
        answer.insert("notFound", strings(outcome.not_found));
        if change == Change::Cancel {
            answer.insert("inFlight", strings(outcome.in_flight));
        }
        self.agent_answer(
            verified,
            "success",
            Value::Object(answer),
            AnswerContent::Plain,
        )
    }

    /// `draft.create`: a new draft with a new id (UUID v4).
    pub(super) async fn draft_create(
        &self,
        verified: &Verified<'_>,
    ) -> Result<Reply, ProtocolError> {
        let document = verified
            .document()
            .and_then(Value::as_object)
            .ok_or_else(|| ProtocolError::validation("document: a draft needs {type, document}"))?;
        let kind = document
            .str("type")
            .and_then(TransporterType::parse)
            .ok_or_else(|| {
                ProtocolError::validation("document.type: TRUST_REQ, TRUST_RES or BTPS_DOC")
            })?;
        let body = document
            .get("document")
            .ok_or_else(|| ProtocolError::validation("document.document: required"))?;
        // The document must be of the type named (the reference checks neither).
        crate::protocol::validate::transporter_document(kind, body, "document.document")?;
        let to = match document.get("to") {
            None => None,
            Some(to) => Some(
                to.as_str()
                    .and_then(|text| crate::identity::Identity::parse(text).ok())
                    .ok_or_else(|| ProtocolError::validation("document.to: not an identity"))?,
            ),
        };
        let now = Timestamp::now();
        let id = new_id();
        let mut draft = Object::new();
        draft.insert("id", id.as_str());
        draft.insert("type", kind.as_str());
        if let Some(to) = &to {
            draft.insert("to", to.as_str());
        }
        draft.insert("document", body.clone());
        draft.insert("createdAt", now.as_str());
        draft.insert("updatedAt", now.as_str());
        let owner = verified.owner.as_str().to_owned();
        let entry = MailboxEntry {
            entry_id: 0,
            owner: owner.clone(),
            mailbox: Mailbox::Draft,
            origin: None,
            at_millis: now.millis(),
            kind: EntryKind::Draft,
            artifact_id: id,
            artifact_type: kind.as_str().to_owned(),
            from: owner.clone(),
            to: to.map(|to| to.as_str().to_owned()).unwrap_or_default(),
            title: Content::read(kind, Some(body)).title,
            raw: draft.to_canonical().into_bytes(),
            meta: EntryMeta {
                agent_artifact_id: Some(verified.artifact.id.clone()),
                agent_id: Some(verified.artifact.agent_id.clone()),
                ..EntryMeta::default()
            },
        };
        let stored = transact(&self.storage, &owner, move |transaction| {
            let mut entry = entry.clone();
            entry.entry_id = transaction.insert_entry(entry.clone())?;
            Ok(Ok(entry))
        })
        .await?;
        self.draft_answer(verified, &stored, draft)
    }

    /// `draft.update`: the owner's draft `id` gets a new document of its type.
    pub(super) async fn draft_update(
        &self,
        verified: &Verified<'_>,
    ) -> Result<Reply, ProtocolError> {
        let (id, body) = documents::mutation(verified.document())?;
        let body = body.clone();
        let owner = verified.owner.as_str().to_owned();
        let scope = owner.clone();
        let (entry, draft) = transact(&self.storage, &scope, move |transaction| {
            let Some(mut entry) = transaction
                .entries_by_artifact(&owner, Mailbox::Draft, &id)?
                .into_iter()
                .next()
            else {
                return Ok(Err(ProtocolError::validation(format!("no draft {id}"))
                    .with_reason("unknown draft")));
            };
            let Some(kind) = TransporterType::parse(&entry.artifact_type) else {
                return Ok(Err(ProtocolError::validation(
                    "the stored draft has no type",
                )));
            };
            if let Err(error) =
                crate::protocol::validate::transporter_document(kind, &body, "document.document")
            {
                return Ok(Err(error));
            }
            let stored = std::str::from_utf8(&entry.raw)
                .ok()
                .and_then(|text| json::parse(text).ok());
            let Some(Value::Object(mut draft)) = stored else {
                return Ok(Err(ProtocolError::storage(format!(
                    "draft entry {} does not hold a draft",
                    entry.entry_id
                ))));
            };
            let now = Timestamp::now();
            draft.insert("document", body.clone());
            draft.insert("updatedAt", now.as_str());
            entry.raw = draft.to_canonical().into_bytes();
            entry.title = Content::read(kind, Some(&body)).title;
            entry.at_millis = now.millis();
            transaction.update_entry(&entry)?;
            Ok(Ok((entry, draft)))
        })
        .await?;
        self.draft_answer(verified, &entry, draft)
    }

    /// A query result holding one draft (§3.2).
    fn draft_answer(
        &self,
        verified: &Verified<'_>,
        entry: &MailboxEntry,
        draft: Object,
    ) -> Result<Reply, ProtocolError> {
        let mut result = Object::new();
        result.insert("artifact", draft);
        result.insert("meta", meta(entry));
        let mut answer = Object::new();
        answer.insert("results", Value::Array(vec![Value::Object(result)]));
        answer.insert("total", count(1));
        answer.insert("hasNext", false);
        self.agent_answer(
            verified,
            "success",
            Value::Object(answer),
            AnswerContent::QueryResult,
        )
    }
}
