//! `inbox.fetch`, `outbox.fetch`, `sentbox.fetch`, `draft.fetch`, `trash.fetch`
//! (`spec/07-agents-auth.md` §3.2, §4, §5): a query over one mailbox of the owner,
//! answered with `{results: [{artifact, meta}], cursor?, total, hasNext}`.
//!
//! The store walks only the owner's listing index inside the time window
//! ([`crate::store::MailboxStore::query`]); each artifact is embedded as the JSON it
//! was received or built as (member order kept, so the sender's signature stays
//! verifiable), with the mailbox's own `meta`.

use crate::protocol::ProtocolError;
use crate::protocol::json::{Object, Value};
use crate::server::pipeline::{Pipeline, Reply, storage_failure};
use crate::store::{ListingPosition, Mailbox, MailboxEntry, MailboxQuery, Timestamp};

use super::cursor::{self, Position};
use super::{Verified, documents};

impl Pipeline {
    /// One page of the owner's `mailbox`.
    pub(super) async fn fetch(
        &self,
        verified: &Verified<'_>,
        mailbox: Mailbox,
    ) -> Result<Reply, ProtocolError> {
        let document = documents::query(verified.document())?;
        let owner = verified.owner.as_str();
        let digest = cursor::digest(
            owner,
            mailbox.as_str(),
            document.since,
            document.until,
            &document.query_text,
        );
        let after = match &document.cursor {
            None => None,
            Some(text) => match cursor::decode(text, document.newest_first, &digest)? {
                Position::Entry(position) => Some(position),
                Position::Trust { .. } => {
                    return Err(
                        ProtocolError::validation("cursor: a trust listing's cursor")
                            .with_reason("cursor of another query"),
                    );
                }
            },
        };
        let query = MailboxQuery {
            since: document.since,
            until: document.until,
            newest_first: document.newest_first,
            after,
            limit: document.limit,
            filter: document.filter,
        };
        let page = self
            .storage
            .mailboxes()
            .query(owner, mailbox, &query)
            .await
            .map_err(storage_failure)?;
        let mut text = String::with_capacity(
            page.items
                .iter()
                .map(|entry| entry.raw.len() + 200)
                .sum::<usize>()
                + 100,
        );
        text.push_str("{\"results\":[");
        for (index, entry) in page.items.iter().enumerate() {
            if index > 0 {
                text.push(',');
            }
            push_result(&mut text, entry)?;
        }
        text.push(']');
        if page.has_next
            && let Some(last) = page.items.last()
        {
            let position = Position::Entry(ListingPosition::of(last));
            text.push_str(",\"cursor\":");
            text.push_str(
                &Value::from(cursor::encode(query.newest_first, &position, &digest)).to_canonical(),
            );
        }
        text.push_str(",\"total\":");
        text.push_str(&Value::from(count(page.total)).to_canonical());
        text.push_str(if page.has_next {
            ",\"hasNext\":true}"
        } else {
            ",\"hasNext\":false}"
        });
        self.agent_answer_text(verified, "success", text)
    }
}

/// A count as a JSON number (exact below 2^53).
pub(super) fn count(value: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let number = value as f64;
    number
}

/// One result, `{"artifact": <the artifact as stored>, "meta": {…}}` (§5.2): the
/// artifact's bytes go in as they were received or built — valid JSON by
/// construction (they were parsed before they were stored), so the sender's
/// signature stays verifiable byte for byte.
fn push_result(text: &mut String, entry: &MailboxEntry) -> Result<(), ProtocolError> {
    let raw = std::str::from_utf8(&entry.raw)
        .map_err(|_| storage_failure(format!("mailbox entry {} is not UTF-8", entry.entry_id)))?;
    let raw = raw.trim_matches([' ', '\t', '\r', '\n']);
    if !(raw.starts_with('{') && raw.ends_with('}')) || raw.contains('\n') {
        return Err(storage_failure(format!(
            "mailbox entry {} does not hold a JSON object",
            entry.entry_id
        )));
    }
    text.push_str("{\"artifact\":");
    text.push_str(raw);
    text.push_str(",\"meta\":");
    text.push_str(&meta(entry).to_canonical());
    text.push('}');
    Ok(())
}

/// The `meta` of an entry: what its mailbox knows of it, and its `entryId`.
pub(super) fn meta(entry: &MailboxEntry) -> Object {
    let meta = &entry.meta;
    let mut object = Object::new();
    let time = |object: &mut Object, key: &str, at: Option<&Timestamp>| {
        if let Some(at) = at {
            object.insert(key, at.as_str());
        }
    };
    let attempts = f64::from(meta.attempts);
    match entry.mailbox {
        Mailbox::Inbox => {
            object.insert("seen", meta.seen);
            if meta.seen {
                time(&mut object, "seenAt", meta.seen_at.as_ref());
            }
            time(&mut object, "receivedAt", meta.received_at.as_ref());
        }
        Mailbox::Outbox => {
            time(&mut object, "queuedAt", meta.queued_at.as_ref());
            object.insert("attempts", attempts);
            time(&mut object, "nextAttemptAt", meta.next_attempt_at.as_ref());
            if let Some(error) = &meta.last_error {
                object.insert("lastError", error.as_str());
            }
        }
        Mailbox::Sentbox => {
            time(&mut object, "deliveredAt", meta.delivered_at.as_ref());
            object.insert("attempts", attempts);
        }
        Mailbox::Trash => {
            if let Some(origin) = entry.origin {
                object.insert("origin", origin.as_str());
            }
            time(&mut object, "trashedAt", meta.trashed_at.as_ref());
            time(&mut object, "cancelledAt", meta.cancelled_at.as_ref());
        }
        Mailbox::Draft => {}
    }
    object.insert("entryId", entry.entry_id.to_string());
    object
}
