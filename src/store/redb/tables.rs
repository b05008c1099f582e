//! Every table of the redb file, the names the store keeps in `meta` and
//! `counters`, and the byte layouts of their keys (`schema/storage.md`).
//!
//! One place for all of them, so that a table or key layout is never defined twice
//! and the backup's table list ([`super::backup`]) can be checked against this file.

use redb::TableDefinition;

use crate::store::keys::{concat, id_bytes, instant_part, string_part};
use crate::store::{
    EntryKind, Mailbox, MailboxEntry, Perspective, RecordKind, StoreError, StoreResult, Timestamp,
    TrustStatus,
};

/// The one byte that stands for a value of a domain enum in keys and stored values.
///
/// Part of the file format (`schema/storage.md`): a byte, once given, never changes
/// meaning. The domain types in [`crate::model`] know nothing of it.
pub(super) trait Tag: Copy + Sized + 'static {
    /// Every value, each with its own byte.
    const ALL: &'static [Self];

    /// The value's byte.
    fn tag(self) -> u8;

    /// The value of a stored byte, if it stands for one.
    fn from_tag(tag: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|value| value.tag() == tag)
    }
}

/// The byte that starts every trust key of the perspective.
impl Tag for Perspective {
    const ALL: &'static [Self] = &Perspective::ALL;

    fn tag(self) -> u8 {
        match self {
            Perspective::Inbound => 1,
            Perspective::Outbound => 2,
        }
    }
}

/// The byte of a mailbox in listing keys, digests and entry values.
impl Tag for Mailbox {
    const ALL: &'static [Self] = &Mailbox::ALL;

    fn tag(self) -> u8 {
        match self {
            Mailbox::Inbox => 1,
            Mailbox::Outbox => 2,
            Mailbox::Sentbox => 3,
            Mailbox::Draft => 4,
            Mailbox::Trash => 5,
        }
    }
}

/// The byte of an entry's kind in entry values.
impl Tag for EntryKind {
    const ALL: &'static [Self] = &EntryKind::ALL;

    fn tag(self) -> u8 {
        match self {
            EntryKind::Transporter => 1,
            EntryKind::DeliveryFailure => 2,
            EntryKind::Draft => 3,
        }
    }
}

/// Keys and values stored as raw bytes.
pub(super) type Bytes = &'static [u8];

// ---- Trust and identity tables ----

pub(super) const META: TableDefinition<&str, Bytes> = TableDefinition::new("meta");
pub(super) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
pub(super) const TRUST: TableDefinition<Bytes, Bytes> = TableDefinition::new("trust");
pub(super) const TRUST_BY_RECEIVER: TableDefinition<Bytes, ()> =
    TableDefinition::new("trust_by_receiver");
pub(super) const TRUST_BY_SENDER: TableDefinition<Bytes, ()> =
    TableDefinition::new("trust_by_sender");
pub(super) const TRUST_BY_STATUS: TableDefinition<Bytes, ()> =
    TableDefinition::new("trust_by_status");
pub(super) const TRUST_BY_EXPIRY: TableDefinition<Bytes, Bytes> =
    TableDefinition::new("trust_by_expiry");
pub(super) const TRUST_STATUS_COUNT: TableDefinition<Bytes, u64> =
    TableDefinition::new("trust_status_count");
pub(super) const IDENTITY: TableDefinition<Bytes, Bytes> = TableDefinition::new("identity");
pub(super) const IDENTITY_BY_NAME: TableDefinition<Bytes, Bytes> =
    TableDefinition::new("identity_by_name");
pub(super) const IDENTITY_KEY: TableDefinition<Bytes, Bytes> = TableDefinition::new("identity_key");

// ---- Mailbox tables (`06-storage.md` §5.2) ----

/// `entry_id` → `0x01 ++ postcard(EntryV1)`.
pub(super) const MAILBOX_ENTRY: TableDefinition<u64, Bytes> = TableDefinition::new("mailbox_entry");
/// `str(lower(owner)) ++ mailbox ++ instant(at) ++ u64be(entry_id)` → ().
pub(super) const MAILBOX_LISTING: TableDefinition<Bytes, ()> =
    TableDefinition::new("mailbox_listing");
/// `artifact_digest(owner, mailbox, artifact_id) ++ u64be(entry_id)` → () (since v4).
///
/// Finds the entries of one artifact id in one mailbox, and so also serves the
/// inbound de-duplication check (the sender is compared on the entries found). The
/// 16-byte digest keeps keys short: inserts land on random leaves (artifact ids are
/// random), and short keys mean fewer, fuller branch pages above them, so fewer
/// pages are rewritten per commit.
pub(super) const MAILBOX_ARTIFACT: TableDefinition<Bytes, ()> =
    TableDefinition::new("mailbox_artifact");
/// `str(lower(owner)) ++ mailbox` → number of entries (absent when 0).
pub(super) const MAILBOX_COUNT: TableDefinition<Bytes, u64> = TableDefinition::new("mailbox_count");

// ---- Outbox tables (`08-delivery.md` §5, since v5) ----

/// `instant(due) ++ u64be(entry_id)` → (): the delivery schedule. `due` is the
/// end of the entry's claim while a delivery attempt holds it, else its next
/// attempt time.
pub(super) const OUTBOX_DUE: TableDefinition<Bytes, ()> = TableDefinition::new("outbox_due");
/// `str(lower(owner)) ++ str(lower(to)) ++ u64be(entry_id)` → (): each (owner,
/// receiver) pair's queue; its first entry is the only one of the pair attempted.
pub(super) const OUTBOX_PAIR: TableDefinition<Bytes, ()> = TableDefinition::new("outbox_pair");
/// `entry_id` → (): every outbox entry in the order it was queued.
pub(super) const OUTBOX_ORDER: TableDefinition<u64, ()> = TableDefinition::new("outbox_order");

// ---- Agent tables (`07-agents-auth.md` §6.7; since v6) ----

/// SHA-256 of an enrollment token's lookup key → `0x01 ++ postcard(TokenV1)`.
pub(super) const AGENT_TOKEN: TableDefinition<Bytes, Bytes> = TableDefinition::new("agent_token");
/// Agent id → `0x01 ++ postcard(SessionV1)`.
pub(super) const AGENT_SESSION: TableDefinition<&str, Bytes> =
    TableDefinition::new("agent_session");
/// `str(lower(owner)) ++ str(agent_id)` → (): the agents of an owner.
pub(super) const AGENT_BY_OWNER: TableDefinition<Bytes, ()> =
    TableDefinition::new("agent_by_owner");

/// Tables of schema version 3 that version 4 replaced with [`MAILBOX_ARTIFACT`];
/// the migration deletes them.
pub(super) mod legacy {
    use super::{Bytes, TableDefinition};

    /// `str(lower(owner)) ++ mailbox ++ str(artifact_id) ++ u64be(entry_id)` → ().
    pub(in crate::store::redb) const MAILBOX_BY_ARTIFACT: TableDefinition<Bytes, ()> =
        TableDefinition::new("mailbox_by_artifact");
    /// `str(lower(to)) ++ str(lower(from)) ++ str(artifact_id)` → entry id.
    pub(in crate::store::redb) const INBOUND_DEDUP: TableDefinition<Bytes, u64> =
        TableDefinition::new("inbound_dedup");
}

// ---- Names in `meta` and `counters` ----

pub(super) const META_SCHEMA_VERSION: &str = "schema_version";
pub(super) const META_DATABASE_ID: &str = "database_id";
pub(super) const META_CREATED_AT: &str = "created_at";
/// When readiness last tried a write after a write failure (ISO timestamp text).
pub(super) const META_WRITE_PROBE: &str = "write_probe";
pub(super) const SEQ_TRUST: &str = "trust_seq";
pub(super) const SEQ_IDENTITY: &str = "identity_seq";
/// Counter of entry ids handed out; entry ids start at 1.
pub(super) const SEQ_ENTRY: &str = "mailbox_entry_seq";

// ---- Key layouts (schema/storage.md) ----

/// The 32 key bytes of a computed id given in any case; `NotFound` when it is not
/// one (no record can have such an id).
pub(super) fn normalised_id(kind: RecordKind, id: &str) -> StoreResult<[u8; 32]> {
    let lower = id.to_lowercase();
    id_bytes(&lower).ok_or_else(|| StoreError::NotFound {
        kind,
        id: id.to_owned(),
    })
}

pub(super) fn trust_key(perspective: Perspective, id: &[u8; 32]) -> Vec<u8> {
    concat(&[&[perspective.tag()], id])
}

pub(super) fn receiver_prefix(perspective: Perspective, receiver: &str) -> Vec<u8> {
    concat(&[&[perspective.tag()], &string_part(&receiver.to_lowercase())])
}

pub(super) fn sender_prefix(perspective: Perspective, sender: &str) -> Vec<u8> {
    concat(&[&[perspective.tag()], &string_part(&sender.to_lowercase())])
}

pub(super) fn status_prefix(perspective: Perspective, status: &TrustStatus) -> Vec<u8> {
    concat(&[&[perspective.tag()], &string_part(status.as_str())])
}

pub(super) fn status_count_key(perspective: Perspective, status: &TrustStatus) -> Vec<u8> {
    concat(&[&[perspective.tag()], status.as_str().as_bytes()])
}

pub(super) fn expiry_key(
    perspective: Perspective,
    expires_at: &Timestamp,
    id: &[u8; 32],
) -> Vec<u8> {
    concat(&[&[perspective.tag()], &instant_part(expires_at.millis()), id])
}

pub(super) fn identity_key_prefix(identity: &str) -> Vec<u8> {
    string_part(&identity.to_lowercase())
}

/// An agent's key in [`AGENT_BY_OWNER`].
pub(super) fn agent_owner_key(owner: &str, agent_id: &str) -> Vec<u8> {
    concat(&[&string_part(&owner.to_lowercase()), &string_part(agent_id)])
}

/// Length of a listing cursor: `instant(at) ++ u64be(entry_id)`.
pub(super) const LISTING_SORT_LEN: usize = 16;

/// `str(lower(owner)) ++ mailbox`: the listing prefix and the count key of a mailbox.
pub(super) fn owner_prefix(owner: &str, mailbox: Mailbox) -> Vec<u8> {
    concat(&[&string_part(&owner.to_lowercase()), &[mailbox.tag()]])
}

/// The first 16 bytes of SHA-256 over `str(lower(owner)) ++ mailbox ++
/// str(artifact_id)`: the prefix of an entry's key in [`MAILBOX_ARTIFACT`].
///
/// Entries found under a digest are always compared field by field, so a digest
/// collision (never seen in practice: 128 bits) could cost a read, never a wrong
/// answer.
pub(super) fn artifact_digest(owner: &str, mailbox: Mailbox, artifact_id: &str) -> [u8; 16] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(&string_part(&owner.to_lowercase()));
    context.update(&[mailbox.tag()]);
    context.update(&string_part(artifact_id));
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&context.finish().as_ref()[..16]);
    digest
}

/// An entry's key in [`MAILBOX_ARTIFACT`].
pub(super) fn artifact_key(entry: &MailboxEntry) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(&artifact_digest(
        &entry.owner,
        entry.mailbox,
        &entry.artifact_id,
    ));
    key[16..].copy_from_slice(&entry.entry_id.to_be_bytes());
    key
}

/// The entry id at the end of an index key.
pub(super) fn trailing_entry_id(table: &'static str, key: &[u8]) -> StoreResult<u64> {
    key.len()
        .checked_sub(8)
        .and_then(|start| <[u8; 8]>::try_from(&key[start..]).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Decode {
            table,
            detail: String::from("malformed index key"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T: Tag + PartialEq + std::fmt::Debug>() {
        let mut seen = Vec::new();
        for &value in T::ALL {
            assert_eq!(T::from_tag(value.tag()), Some(value));
            assert!(!seen.contains(&value.tag()), "{value:?}: byte given twice");
            seen.push(value.tag());
        }
        assert_eq!(T::from_tag(0), None);
    }

    #[test]
    fn tags_are_distinct_and_round_trip() {
        round_trips::<Perspective>();
        round_trips::<Mailbox>();
        round_trips::<EntryKind>();
    }
}
