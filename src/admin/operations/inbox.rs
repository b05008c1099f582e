//! Inboxes of hosted identities: a page of entries (newest first) and one entry
//! with its artifact exactly as received.

use serde_json::{Value, json};

use crate::crypto::encode_base64;
use crate::store::{Mailbox, MailboxEntry, PageRequest, Timestamp};

use super::args::{parse_cursor, parse_identity};
use super::{AdminContext, AdminError, AdminResponse, AdminResult};

pub(super) fn inbox_list(
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
    let storage = context.storage();
    let listed = context.wait(async {
        let hosted = storage
            .identities()
            .get_by_identity(identity.as_str())
            .await?;
        if hosted.is_none() {
            return Ok::<_, crate::store::StoreError>(None);
        }
        let mailboxes = storage.mailboxes();
        let page = mailboxes
            .list(identity.as_str(), Mailbox::Inbox, page, true)
            .await?;
        let total = mailboxes.count(identity.as_str(), Mailbox::Inbox).await?;
        Ok(Some((page, total)))
    })??;
    let (listed, total) = listed
        .ok_or_else(|| AdminError::NotFound(format!("{identity} is not a hosted identity")))?;
    Ok(AdminResponse::InboxEntries {
        entries: listed.items.iter().map(entry_json).collect(),
        total,
        next: listed.next.as_ref().map(ToString::to_string),
    })
}

pub(super) fn inbox_show(context: &AdminContext, entry_id: u64) -> AdminResult<AdminResponse> {
    let entry = context
        .wait(context.storage().mailboxes().entry(entry_id))??
        .ok_or_else(|| AdminError::NotFound(format!("no mailbox entry {entry_id}")))?;
    let mut value = entry_json(&entry);
    if let Some(object) = value.as_object_mut() {
        // The artifact as a JSON string holds the exact bytes; bytes that are not
        // UTF-8 (never accepted from the wire, but possible) go as base64.
        match std::str::from_utf8(&entry.raw) {
            Ok(text) => object.insert(String::from("artifact"), Value::from(text)),
            Err(_) => object.insert(
                String::from("artifactBase64"),
                Value::from(encode_base64(&entry.raw)),
            ),
        };
    }
    Ok(AdminResponse::InboxEntry { entry: value })
}

fn entry_json(entry: &MailboxEntry) -> Value {
    let meta = &entry.meta;
    let time = |timestamp: Option<&Timestamp>| timestamp.map(ToString::to_string);
    json!({
        "entryId": entry.entry_id,
        "owner": entry.owner,
        "mailbox": entry.mailbox.as_str(),
        "at": instant_text(entry.at_millis),
        "kind": entry.kind.as_str(),
        "artifactId": entry.artifact_id,
        "type": entry.artifact_type,
        "from": entry.from,
        "to": entry.to,
        "title": entry.title,
        "size": entry.raw.len(),
        "meta": {
            "seen": meta.seen,
            "seenAt": time(meta.seen_at.as_ref()),
            "receivedAt": time(meta.received_at.as_ref()),
            "remoteAddress": meta.remote_address,
        },
    })
}

/// An instant in milliseconds as RFC 3339 text (the number itself if out of range).
pub fn instant_text(millis: i64) -> String {
    Timestamp::from_millis(millis).map_or_else(|_| millis.to_string(), |t| t.to_string())
}
