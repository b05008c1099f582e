//! Domain types of the mailboxes (`06-storage.md` §5.2): one entry per stored
//! artifact, in one of five mailboxes of its owner.
//!
//! An entry keeps the artifact as the exact bytes received (or built), so that the
//! sender's signature stays verifiable end to end; the other fields are what the
//! listings and actions need without parsing those bytes again.

use std::fmt;

use super::record::Timestamp;

/// The mailboxes of a hosted identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mailbox {
    /// What arrived for the owner (and delivery-failure notices).
    Inbox,
    /// What waits to be delivered for the owner.
    Outbox,
    /// What was delivered for the owner.
    Sentbox,
    /// What the owner is preparing.
    Draft,
    /// What the owner deleted, until it is purged.
    Trash,
}

impl Mailbox {
    /// Every mailbox, in key order.
    pub const ALL: [Mailbox; 5] = [
        Mailbox::Inbox,
        Mailbox::Outbox,
        Mailbox::Sentbox,
        Mailbox::Draft,
        Mailbox::Trash,
    ];

    /// The name agents use in actions (`inbox.fetch`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Mailbox::Inbox => "inbox",
            Mailbox::Outbox => "outbox",
            Mailbox::Sentbox => "sentbox",
            Mailbox::Draft => "draft",
            Mailbox::Trash => "trash",
        }
    }

    /// The mailbox of a name, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|mailbox| mailbox.as_str() == text)
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an entry's `raw` bytes hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A transporter artifact (TRUST_REQ, TRUST_RES, BTPS_DOC).
    Transporter,
    /// A delivery-failure artifact (`08-delivery.md` §6).
    DeliveryFailure,
    /// A draft document.
    Draft,
}

impl EntryKind {
    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Transporter => "transporter",
            EntryKind::DeliveryFailure => "delivery_failure",
            EntryKind::Draft => "draft",
        }
    }

    /// Every kind.
    pub const ALL: [EntryKind; 3] = [
        EntryKind::Transporter,
        EntryKind::DeliveryFailure,
        EntryKind::Draft,
    ];
}

pub use crate::protocol::artifact::DELIVERY_FAILURE_TYPE;

/// State of an entry beside its bytes (`06-storage.md` §5.2, `meta`).
///
/// Every field the mailbox movements of §5.2 need is here from the start, so that
/// outbound delivery and trash need no new record format.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EntryMeta {
    /// The owner has seen the entry (inbox).
    pub seen: bool,
    /// When it was first marked seen.
    pub seen_at: Option<Timestamp>,
    /// When the inbound artifact was accepted.
    pub received_at: Option<Timestamp>,
    /// The peer address the inbound artifact came from.
    pub remote_address: Option<String>,
    /// When the outbound artifact was queued.
    pub queued_at: Option<Timestamp>,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// When the next delivery attempt is due.
    pub next_attempt_at: Option<Timestamp>,
    /// Why the last delivery attempt failed.
    pub last_error: Option<String>,
    /// When the artifact was delivered.
    pub delivered_at: Option<Timestamp>,
    /// The id of the receiving server's response.
    pub response_id: Option<String>,
    /// The id of the agent artifact that originated this entry.
    pub agent_artifact_id: Option<String>,
    /// The agent that originated this entry.
    pub agent_id: Option<String>,
    /// When the entry was moved to the trash.
    pub trashed_at: Option<Timestamp>,
    /// When the outbound entry was cancelled.
    pub cancelled_at: Option<Timestamp>,
    /// While a delivery attempt holds the outbound entry: until when its claim
    /// lasts. A claim that outlives this (its node died) may be taken again.
    pub in_flight_until: Option<Timestamp>,
    /// When the last delivery attempt ended.
    pub last_attempt_at: Option<Timestamp>,
}

/// A stored mailbox entry.
#[derive(Clone, Debug, PartialEq)]
pub struct MailboxEntry {
    /// Server-assigned, strictly increasing, never reused.
    pub entry_id: u64,
    /// The hosted identity the entry belongs to, as received.
    pub owner: String,
    /// The mailbox the entry is in.
    pub mailbox: Mailbox,
    /// For the trash: the mailbox the entry came from.
    pub origin: Option<Mailbox>,
    /// When the entry entered its mailbox, in milliseconds since the epoch.
    pub at_millis: i64,
    /// What `raw` holds.
    pub kind: EntryKind,
    /// The artifact's `id`.
    pub artifact_id: String,
    /// The artifact's `type`.
    pub artifact_type: String,
    /// The artifact's `from`.
    pub from: String,
    /// The artifact's `to`.
    pub to: String,
    /// A searchable title derived at insert, if any.
    pub title: Option<String>,
    /// The artifact JSON exactly as received or built.
    pub raw: Vec<u8>,
    /// State beside the bytes.
    pub meta: EntryMeta,
}

/// Where an outbox entry stands (`08-delivery.md` §5.2). Delivered, failed and
/// cancelled entries have left the outbox (sentbox, a notice in the inbox, trash).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutboxState {
    /// Due now (or at its next attempt time, before any attempt).
    Queued,
    /// A delivery attempt holds it.
    InFlight,
    /// An attempt failed for now; the next one is due at `nextAttemptAt`.
    RetryWait,
}

impl OutboxState {
    /// The state's name, as listings print it.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Queued => "queued",
            OutboxState::InFlight => "in_flight",
            OutboxState::RetryWait => "retry_wait",
        }
    }
}

impl fmt::Display for OutboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl MailboxEntry {
    /// The entry moved to the trash at `now` (`06-storage.md` §5.2): the mailbox
    /// it came from becomes its `origin`, `at` and `trashedAt` become `now`.
    #[must_use]
    pub fn into_trash(mut self, now: &Timestamp) -> Self {
        self.origin = Some(self.mailbox);
        self.mailbox = Mailbox::Trash;
        self.at_millis = now.millis();
        self.meta.trashed_at = Some(now.clone());
        self
    }

    /// When an outbox entry is next looked at: the end of its claim while one holds
    /// it, else its next attempt time (else the time it was queued). This is the
    /// key of the delivery schedule index.
    pub fn due_millis(&self) -> i64 {
        self.meta
            .in_flight_until
            .as_ref()
            .or(self.meta.next_attempt_at.as_ref())
            .map_or(self.at_millis, Timestamp::millis)
    }

    /// The state of an outbox entry at `now_millis`; `None` outside the outbox.
    pub fn outbox_state(&self, now_millis: i64) -> Option<OutboxState> {
        if self.mailbox != Mailbox::Outbox {
            return None;
        }
        Some(match &self.meta.in_flight_until {
            Some(until) if until.millis() > now_millis => OutboxState::InFlight,
            _ if self.meta.attempts > 0 && self.due_millis() > now_millis => OutboxState::RetryWait,
            _ => OutboxState::Queued,
        })
    }
}

/// The checks every new entry needs: its index keys (owner, artifact id, type,
/// from, to) are not empty, and its owner is the party named (`from` of an
/// outbound artifact, `to` of an inbound one), ignoring case.
fn check_index_keys(keys: [&String; 5], owner_is: (&str, &String)) -> Result<(), String> {
    let [owner, ..] = keys;
    let (party, value) = owner_is;
    if owner.to_lowercase() != value.to_lowercase() {
        return Err(format!("the owner must be the artifact's {party}"));
    }
    let names = ["owner", "artifact id", "artifact type", "from", "to"];
    match names.iter().zip(keys).find(|(_, value)| value.is_empty()) {
        Some((name, _)) => Err(format!("{name} must not be empty")),
        None => Ok(()),
    }
}

/// An artifact queued for delivery by a hosted identity (`08-delivery.md` §5.1).
#[derive(Clone, Debug, PartialEq)]
pub struct NewOutboxEntry {
    /// The hosted identity sending it (the artifact's `from`).
    pub owner: String,
    /// The artifact's `id`.
    pub artifact_id: String,
    /// The artifact's `type`.
    pub artifact_type: String,
    /// The artifact's `from`.
    pub from: String,
    /// The artifact's `to`.
    pub to: String,
    /// A searchable title, if any.
    pub title: Option<String>,
    /// The final artifact bytes, sent as they are on every attempt.
    pub raw: Vec<u8>,
    /// When it was queued; also the entry's `at` and its first attempt time.
    pub queued_at: Timestamp,
    /// The agent artifact that asked for the send, if any.
    pub agent_artifact_id: Option<String>,
    /// The agent that asked for the send, if any.
    pub agent_id: Option<String>,
}

impl NewOutboxEntry {
    /// The entry this becomes (its id assigned by the store), after the checks every
    /// outbox entry needs: non-empty index keys, the owner is the artifact's `from`.
    pub fn into_entry(self) -> Result<MailboxEntry, String> {
        check_index_keys(
            [
                &self.owner,
                &self.artifact_id,
                &self.artifact_type,
                &self.from,
                &self.to,
            ],
            ("from", &self.from),
        )?;
        Ok(MailboxEntry {
            entry_id: 0,
            owner: self.owner,
            mailbox: Mailbox::Outbox,
            origin: None,
            at_millis: self.queued_at.millis(),
            kind: EntryKind::Transporter,
            artifact_id: self.artifact_id,
            artifact_type: self.artifact_type,
            from: self.from,
            to: self.to,
            title: self.title,
            raw: self.raw,
            meta: EntryMeta {
                next_attempt_at: Some(self.queued_at.clone()),
                queued_at: Some(self.queued_at),
                agent_artifact_id: self.agent_artifact_id,
                agent_id: self.agent_id,
                ..EntryMeta::default()
            },
        })
    }
}

/// An inbound transporter artifact accepted for a hosted identity.
#[derive(Clone, Debug, PartialEq)]
pub struct NewInboxEntry {
    /// The hosted identity whose inbox receives it (the artifact's `to`).
    pub owner: String,
    /// The artifact's `id`.
    pub artifact_id: String,
    /// The artifact's `type`.
    pub artifact_type: String,
    /// The artifact's `from`.
    pub from: String,
    /// The artifact's `to`.
    pub to: String,
    /// A searchable title (`07-agents-auth.md` §4.3), if any.
    pub title: Option<String>,
    /// The artifact JSON exactly as received.
    pub raw: Vec<u8>,
    /// When it was accepted; also the entry's `at`.
    pub received_at: Timestamp,
    /// The peer address it came from.
    pub remote_address: Option<String>,
}

impl NewInboxEntry {
    /// Checks what every inbox entry needs: the identities and the artifact id
    /// must not be empty (they are index keys), and the owner is the artifact's `to`
    /// (the de-duplication check looks the artifact up in the inbox of its `to`).
    pub(crate) fn validate(&self) -> Result<(), String> {
        check_index_keys(
            [
                &self.owner,
                &self.artifact_id,
                &self.artifact_type,
                &self.from,
                &self.to,
            ],
            ("to", &self.to),
        )
    }

    /// The entry this becomes under `entry_id`.
    pub(crate) fn into_entry(self, entry_id: u64) -> MailboxEntry {
        let kind = if self.artifact_type == DELIVERY_FAILURE_TYPE {
            EntryKind::DeliveryFailure
        } else {
            EntryKind::Transporter
        };
        MailboxEntry {
            entry_id,
            owner: self.owner,
            mailbox: Mailbox::Inbox,
            origin: None,
            at_millis: self.received_at.millis(),
            kind,
            artifact_id: self.artifact_id,
            artifact_type: self.artifact_type,
            from: self.from,
            to: self.to,
            title: self.title,
            raw: self.raw,
            meta: EntryMeta {
                received_at: Some(self.received_at),
                remote_address: self.remote_address,
                ..EntryMeta::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_names_round_trip() {
        for mailbox in Mailbox::ALL {
            assert_eq!(Mailbox::parse(mailbox.as_str()), Some(mailbox));
        }
        assert_eq!(Mailbox::parse("Inbox"), None);
    }
}
