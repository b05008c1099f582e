//! Storage records: the postcard-encoded values of the redb tables.
//!
//! Every value is one record-format version byte followed by the postcard encoding
//! of that version's struct. Decoding dispatches on the byte, so records written by
//! an older version keep decoding after a new version is added; a byte this build
//! does not know is reported, never guessed. Only fixed-width integers and strings
//! appear (no `usize`), so the format does not depend on pointer width.
//! The layouts are documented in `schema/storage.md`; golden bytes in the tests
//! below pin them.

use serde::{Deserialize, Serialize};

use crate::protocol::json::{self, Object, Value};

use super::error::StoreError;
use super::mailbox::{EntryKind, EntryMeta, Mailbox, MailboxEntry};
use super::record::{
    IdentityRecord, KeyHistoryEntry, PrivacyType, PublicKeyRecord, Source, Timestamp, TrustRecord,
    TrustStatus,
};

/// Record format version of trust, identity, key and mailbox-entry values written
/// by this build.
pub(crate) const RECORD_VERSION: u8 = 1;

#[derive(Serialize, Deserialize)]
struct TrustV1 {
    seq: u64,
    sender_id: String,
    receiver_id: String,
    status: String,
    created_at: String,
    updated_at: Option<String>,
    decided_by: String,
    decided_at: String,
    expires_at: Option<String>,
    public_key_base64: String,
    public_key_fingerprint: String,
    key_history: Vec<KeyHistoryV1>,
    privacy_type: String,
    retry_after_date: Option<String>,
    metadata: Option<String>,
    source: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct KeyHistoryV1 {
    fingerprint: String,
    first_seen: String,
    last_seen: String,
}

#[derive(Serialize, Deserialize)]
struct IdentityV1 {
    seq: u64,
    identity: String,
    current_selector: String,
    public_keys: Vec<PublicKeyV1>,
    created_at: String,
    updated_at: Option<String>,
    metadata: Option<String>,
    source: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct PublicKeyV1 {
    selector: String,
    public_key: String,
    key_type: String,
    version: String,
    created_at: String,
    source: Option<String>,
}

/// A mailbox entry; its `entry_id` is the table key, not part of the value.
#[derive(Deserialize)]
struct EntryV1 {
    owner: String,
    mailbox: u8,
    origin: Option<u8>,
    at_millis: i64,
    kind: u8,
    artifact_id: String,
    artifact_type: String,
    from: String,
    to: String,
    title: Option<String>,
    #[serde(deserialize_with = "raw_bytes::deserialize")]
    raw: Vec<u8>,
    meta: EntryMetaV1,
}

/// [`EntryV1`] by reference: what encoding writes, without copying the entry first.
#[derive(Serialize)]
struct EntryV1Ref<'a> {
    owner: &'a str,
    mailbox: u8,
    origin: Option<u8>,
    at_millis: i64,
    kind: u8,
    artifact_id: &'a str,
    artifact_type: &'a str,
    from: &'a str,
    to: &'a str,
    title: Option<&'a str>,
    #[serde(serialize_with = "raw_bytes::serialize")]
    raw: &'a [u8],
    meta: EntryMetaV1,
}

/// The artifact bytes of an entry as one byte string. In postcard a byte string is
/// the length and the bytes, exactly the encoding of a sequence of `u8`, so entries
/// written either way read the same; this way the bytes are copied in one go instead
/// of one call per byte.
mod raw_bytes {
    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::ser::Serializer;

    pub(super) fn serialize<S: Serializer>(
        bytes: &&[u8],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl<'de> Visitor<'de> for Bytes {
            type Value = Vec<u8>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }

            fn visit_bytes<E>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
                Ok(bytes.to_vec())
            }

            fn visit_byte_buf<E>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(bytes)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(byte) = seq.next_element()? {
                    bytes.push(byte);
                }
                Ok(bytes)
            }
        }
        deserializer.deserialize_byte_buf(Bytes)
    }
}

#[derive(Serialize, Deserialize)]
struct EntryMetaV1 {
    seen: bool,
    seen_at: Option<String>,
    received_at: Option<String>,
    remote_address: Option<String>,
    queued_at: Option<String>,
    attempts: u32,
    next_attempt_at: Option<String>,
    last_error: Option<String>,
    delivered_at: Option<String>,
    response_id: Option<String>,
    agent_artifact_id: Option<String>,
    agent_id: Option<String>,
    trashed_at: Option<String>,
    cancelled_at: Option<String>,
}

/// A decoded trust value: the record and its insertion sequence number (export
/// writes records in insertion order, `06-storage.md` §4.6).
pub(crate) struct StoredTrust {
    pub(crate) seq: u64,
    pub(crate) record: TrustRecord,
}

/// A decoded identity value and its insertion sequence number.
pub(crate) struct StoredIdentity {
    pub(crate) seq: u64,
    pub(crate) record: IdentityRecord,
}

pub(crate) fn encode_trust(seq: u64, record: &TrustRecord) -> Vec<u8> {
    let value = TrustV1 {
        seq,
        sender_id: record.sender_id.clone(),
        receiver_id: record.receiver_id.clone(),
        status: record.status.as_str().to_owned(),
        created_at: record.created_at.as_str().to_owned(),
        updated_at: text(record.updated_at.as_ref()),
        decided_by: record.decided_by.clone(),
        decided_at: record.decided_at.as_str().to_owned(),
        expires_at: text(record.expires_at.as_ref()),
        public_key_base64: record.public_key_base64.clone(),
        public_key_fingerprint: record.public_key_fingerprint.clone(),
        key_history: record
            .key_history
            .iter()
            .map(|entry| KeyHistoryV1 {
                fingerprint: entry.fingerprint.clone(),
                first_seen: entry.first_seen.as_str().to_owned(),
                last_seen: entry.last_seen.as_str().to_owned(),
            })
            .collect(),
        privacy_type: record.privacy_type.as_str().to_owned(),
        retry_after_date: text(record.retry_after_date.as_ref()),
        metadata: record.metadata.as_ref().map(Object::to_canonical),
        source: record.source.as_ref().map(|source| source.0.to_canonical()),
    };
    versioned(&value)
}

pub(crate) fn decode_trust(
    table: &'static str,
    id: String,
    bytes: &[u8],
) -> Result<StoredTrust, StoreError> {
    let value: TrustV1 = unversioned(table, bytes)?;
    let timestamp = |text: &str| parse_timestamp(table, text);
    let record = TrustRecord {
        id,
        sender_id: value.sender_id,
        receiver_id: value.receiver_id,
        status: TrustStatus::from_wire(&value.status),
        created_at: timestamp(&value.created_at)?,
        updated_at: value.updated_at.as_deref().map(timestamp).transpose()?,
        decided_by: value.decided_by,
        decided_at: timestamp(&value.decided_at)?,
        expires_at: value.expires_at.as_deref().map(timestamp).transpose()?,
        public_key_base64: value.public_key_base64,
        public_key_fingerprint: value.public_key_fingerprint,
        key_history: value
            .key_history
            .iter()
            .map(|entry| {
                Ok(KeyHistoryEntry {
                    fingerprint: entry.fingerprint.clone(),
                    first_seen: timestamp(&entry.first_seen)?,
                    last_seen: timestamp(&entry.last_seen)?,
                })
            })
            .collect::<Result<_, StoreError>>()?,
        privacy_type: PrivacyType::from_wire(&value.privacy_type),
        retry_after_date: value
            .retry_after_date
            .as_deref()
            .map(timestamp)
            .transpose()?,
        metadata: value
            .metadata
            .as_deref()
            .map(|text| parse_object(table, text))
            .transpose()?,
        source: value
            .source
            .as_deref()
            .map(|text| parse_object(table, text).map(Source))
            .transpose()?,
    };
    Ok(StoredTrust {
        seq: value.seq,
        record,
    })
}

pub(crate) fn encode_identity(seq: u64, record: &IdentityRecord) -> Vec<u8> {
    let value = IdentityV1 {
        seq,
        identity: record.identity.clone(),
        current_selector: record.current_selector.clone(),
        public_keys: record.public_keys.iter().map(public_key_v1).collect(),
        created_at: record.created_at.as_str().to_owned(),
        updated_at: text(record.updated_at.as_ref()),
        metadata: record.metadata.as_ref().map(Object::to_canonical),
        source: record.source.as_ref().map(|source| source.0.to_canonical()),
    };
    versioned(&value)
}

pub(crate) fn decode_identity(
    table: &'static str,
    id: String,
    bytes: &[u8],
) -> Result<StoredIdentity, StoreError> {
    let value: IdentityV1 = unversioned(table, bytes)?;
    let record = IdentityRecord {
        id,
        identity: value.identity,
        current_selector: value.current_selector,
        public_keys: value
            .public_keys
            .into_iter()
            .map(|key| public_key_from_v1(table, key))
            .collect::<Result<_, _>>()?,
        created_at: parse_timestamp(table, &value.created_at)?,
        updated_at: value
            .updated_at
            .as_deref()
            .map(|text| parse_timestamp(table, text))
            .transpose()?,
        metadata: value
            .metadata
            .as_deref()
            .map(|text| parse_object(table, text))
            .transpose()?,
        source: value
            .source
            .as_deref()
            .map(|text| parse_object(table, text).map(Source))
            .transpose()?,
    };
    Ok(StoredIdentity {
        seq: value.seq,
        record,
    })
}

pub(crate) fn encode_public_key(key: &PublicKeyRecord) -> Vec<u8> {
    versioned(&public_key_v1(key))
}

pub(crate) fn decode_public_key(
    table: &'static str,
    bytes: &[u8],
) -> Result<PublicKeyRecord, StoreError> {
    public_key_from_v1(table, unversioned(table, bytes)?)
}

fn public_key_v1(key: &PublicKeyRecord) -> PublicKeyV1 {
    PublicKeyV1 {
        selector: key.selector.clone(),
        public_key: key.public_key.clone(),
        key_type: key.key_type.clone(),
        version: key.version.clone(),
        created_at: key.created_at.as_str().to_owned(),
        source: key.source.as_ref().map(|source| source.0.to_canonical()),
    }
}

fn public_key_from_v1(
    table: &'static str,
    key: PublicKeyV1,
) -> Result<PublicKeyRecord, StoreError> {
    Ok(PublicKeyRecord {
        selector: key.selector,
        public_key: key.public_key,
        key_type: key.key_type,
        version: key.version,
        created_at: parse_timestamp(table, &key.created_at)?,
        source: key
            .source
            .as_deref()
            .map(|text| parse_object(table, text).map(Source))
            .transpose()?,
    })
}

pub(crate) fn encode_entry(entry: &MailboxEntry) -> Vec<u8> {
    let meta = &entry.meta;
    let value = EntryV1Ref {
        owner: &entry.owner,
        mailbox: entry.mailbox.tag(),
        origin: entry.origin.map(Mailbox::tag),
        at_millis: entry.at_millis,
        kind: entry.kind.tag(),
        artifact_id: &entry.artifact_id,
        artifact_type: &entry.artifact_type,
        from: &entry.from,
        to: &entry.to,
        title: entry.title.as_deref(),
        raw: &entry.raw,
        meta: EntryMetaV1 {
            seen: meta.seen,
            seen_at: text(meta.seen_at.as_ref()),
            received_at: text(meta.received_at.as_ref()),
            remote_address: meta.remote_address.clone(),
            queued_at: text(meta.queued_at.as_ref()),
            attempts: meta.attempts,
            next_attempt_at: text(meta.next_attempt_at.as_ref()),
            last_error: meta.last_error.clone(),
            delivered_at: text(meta.delivered_at.as_ref()),
            response_id: meta.response_id.clone(),
            agent_artifact_id: meta.agent_artifact_id.clone(),
            agent_id: meta.agent_id.clone(),
            trashed_at: text(meta.trashed_at.as_ref()),
            cancelled_at: text(meta.cancelled_at.as_ref()),
        },
    };
    // The artifact bytes dominate; the rest is a few short strings.
    versioned_sized(&value, entry.raw.len() + 512)
}

pub(crate) fn decode_entry(
    table: &'static str,
    entry_id: u64,
    bytes: &[u8],
) -> Result<MailboxEntry, StoreError> {
    let value: EntryV1 = unversioned(table, bytes)?;
    let timestamp = |text: Option<String>| {
        text.as_deref()
            .map(|text| parse_timestamp(table, text))
            .transpose()
    };
    let mailbox = |tag: u8| {
        Mailbox::from_tag(tag).ok_or_else(|| StoreError::Decode {
            table,
            detail: format!("unknown mailbox tag {tag}"),
        })
    };
    let meta = value.meta;
    Ok(MailboxEntry {
        entry_id,
        owner: value.owner,
        mailbox: mailbox(value.mailbox)?,
        origin: value.origin.map(mailbox).transpose()?,
        at_millis: value.at_millis,
        kind: EntryKind::from_tag(value.kind).ok_or_else(|| StoreError::Decode {
            table,
            detail: format!("unknown entry kind tag {}", value.kind),
        })?,
        artifact_id: value.artifact_id,
        artifact_type: value.artifact_type,
        from: value.from,
        to: value.to,
        title: value.title,
        raw: value.raw,
        meta: EntryMeta {
            seen: meta.seen,
            seen_at: timestamp(meta.seen_at)?,
            received_at: timestamp(meta.received_at)?,
            remote_address: meta.remote_address,
            queued_at: timestamp(meta.queued_at)?,
            attempts: meta.attempts,
            next_attempt_at: timestamp(meta.next_attempt_at)?,
            last_error: meta.last_error,
            delivered_at: timestamp(meta.delivered_at)?,
            response_id: meta.response_id,
            agent_artifact_id: meta.agent_artifact_id,
            agent_id: meta.agent_id,
            trashed_at: timestamp(meta.trashed_at)?,
            cancelled_at: timestamp(meta.cancelled_at)?,
        },
    })
}

fn text(timestamp: Option<&Timestamp>) -> Option<String> {
    timestamp.map(|timestamp| timestamp.as_str().to_owned())
}

fn versioned<T: Serialize>(value: &T) -> Vec<u8> {
    versioned_sized(value, 0)
}

/// [`versioned`] into a buffer with room for `size_hint` bytes.
fn versioned_sized<T: Serialize>(value: &T, size_hint: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size_hint.max(1));
    out.push(RECORD_VERSION);
    // Serialising plain structs of strings and integers into a Vec cannot fail.
    match postcard::to_extend(value, out) {
        Ok(bytes) => bytes,
        Err(_) => vec![RECORD_VERSION],
    }
}

fn unversioned<'de, T: Deserialize<'de>>(
    table: &'static str,
    bytes: &'de [u8],
) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, body)) => {
            postcard::from_bytes(body).map_err(|error| StoreError::Decode {
                table,
                detail: error.to_string(),
            })
        }
        Some((version, _)) => Err(StoreError::Decode {
            table,
            detail: format!("record format version {version} is unknown to this build"),
        }),
        None => Err(StoreError::Decode {
            table,
            detail: String::from("empty value"),
        }),
    }
}

fn parse_timestamp(table: &'static str, text: &str) -> Result<Timestamp, StoreError> {
    Timestamp::parse(text).map_err(|error| StoreError::Decode {
        table,
        detail: error.to_string(),
    })
}

fn parse_object(table: &'static str, text: &str) -> Result<Object, StoreError> {
    match json::parse(text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(StoreError::Decode {
            table,
            detail: String::from("stored JSON is not an object"),
        }),
        Err(error) => Err(StoreError::Decode {
            table,
            detail: error.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TrustRecord {
        TrustRecord {
            id: crate::identity::compute_trust_id("a$b.c", "d$e.f"),
            sender_id: String::from("a$b.c"),
            receiver_id: String::from("d$e.f"),
            status: TrustStatus::Accepted,
            created_at: Timestamp::parse("2025-01-01T00:00:00.000Z").unwrap(),
            updated_at: None,
            decided_by: String::from("x"),
            decided_at: Timestamp::parse("2025-01-01T00:00:00.000Z").unwrap(),
            expires_at: Some(Timestamp::parse("2026-01-01T00:00:00.000Z").unwrap()),
            public_key_base64: String::from("k"),
            public_key_fingerprint: String::from("f"),
            key_history: vec![],
            privacy_type: PrivacyType::Mixed,
            retry_after_date: None,
            metadata: None,
            source: None,
        }
    }

    /// Golden bytes of a version-1 trust value: if this changes, the on-disk format
    /// changed and needs a new record version (and `schema/storage.md` an update).
    #[test]
    fn trust_v1_layout_is_stable() {
        let bytes = encode_trust(7, &sample());
        let golden: &[u8] = b"\x01\x07\x05a$b.c\x05d$e.f\x08accepted\x182025-01-01T00:00:00.000Z\x00\x01x\x182025-01-01T00:00:00.000Z\x01\x182026-01-01T00:00:00.000Z\x01k\x01f\x00\x05mixed\x00\x00\x00";
        assert_eq!(bytes, golden);
        let decoded = decode_trust("trust", sample().id, golden).unwrap();
        assert_eq!(decoded.seq, 7);
        assert_eq!(decoded.record, sample());
    }

    fn sample_entry() -> MailboxEntry {
        MailboxEntry {
            entry_id: 3,
            owner: String::from("d$e.f"),
            mailbox: Mailbox::Inbox,
            origin: None,
            at_millis: 1_735_689_600_000,
            kind: EntryKind::Transporter,
            artifact_id: String::from("x1"),
            artifact_type: String::from("BTPS_DOC"),
            from: String::from("a$b.c"),
            to: String::from("d$e.f"),
            title: Some(String::from("T")),
            raw: b"{}".to_vec(),
            meta: EntryMeta {
                received_at: Some(Timestamp::parse("2025-01-01T00:00:00.000Z").unwrap()),
                remote_address: Some(String::from("1.2.3.4")),
                ..EntryMeta::default()
            },
        }
    }

    /// Golden bytes of a version-1 mailbox entry (see `trust_v1_layout_is_stable`).
    #[test]
    fn entry_v1_layout_is_stable() {
        let bytes = encode_entry(&sample_entry());
        let golden: &[u8] = b"\x01\x05d$e.f\x01\x00\x80\xf0\xcb\xf2\x83\x65\x01\x02x1\x08BTPS_DOC\x05a$b.c\x05d$e.f\x01\x01T\x02{}\x00\x00\x01\x182025-01-01T00:00:00.000Z\x01\x071.2.3.4\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
        assert_eq!(bytes, golden, "{:x?}", bytes);
        let decoded = decode_entry("mailbox_entry", 3, golden).unwrap();
        assert_eq!(decoded, sample_entry());
    }

    #[test]
    fn unknown_record_versions_are_refused() {
        let mut bytes = encode_trust(1, &sample());
        bytes[0] = 9;
        assert!(matches!(
            decode_trust("trust", String::new(), &bytes),
            Err(StoreError::Decode { .. })
        ));
    }
}
