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

/// Format byte of a mailbox entry stored compressed: `0x02 ++ u32le(length of the
/// postcard body) ++ LZ4 block of the version-1 postcard body`.
const ENTRY_LZ4: u8 = 2;

/// Bodies shorter than this are stored as they are: too little to gain.
const COMPRESS_FROM: usize = 512;

/// The longest entry body a compressed record may announce: far above any artifact
/// the server accepts (`limits.max_line_bytes` is at most a few MiB in practice), so
/// that a damaged length cannot make decoding allocate without bound.
const MAX_ENTRY_BODY: usize = 256 << 20;

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
    let value = EntryV1Ref::from(entry);
    // The artifact bytes dominate; the rest is a few short strings.
    let plain = versioned_sized(&value, entry.raw.len() + 512);
    let body = &plain[1..];
    if body.len() < COMPRESS_FROM {
        return plain;
    }
    let Ok(length) = u32::try_from(body.len()) else {
        return plain;
    };
    let compressed = lz4_flex::block::compress(body);
    // Only worth it when it saves a tenth: encrypted documents barely compress.
    if 5 + compressed.len() > body.len() - body.len() / 10 {
        return plain;
    }
    let mut out = Vec::with_capacity(5 + compressed.len());
    out.push(ENTRY_LZ4);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&compressed);
    out
}

impl<'a> From<&'a MailboxEntry> for EntryV1Ref<'a> {
    fn from(entry: &'a MailboxEntry) -> Self {
        let meta = &entry.meta;
        EntryV1Ref {
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
        }
    }
}

pub(crate) fn decode_entry(
    table: &'static str,
    entry_id: u64,
    bytes: &[u8],
) -> Result<MailboxEntry, StoreError> {
    let value: EntryV1 = match bytes.split_first() {
        Some((&ENTRY_LZ4, rest)) => {
            let corrupt = |detail: String| StoreError::Decode { table, detail };
            let (length, block) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| corrupt(String::from("compressed entry without its length")))?;
            let length = usize::try_from(u32::from_le_bytes(*length)).unwrap_or(usize::MAX);
            // LZ4 expands at most ~255 times, so a damaged length cannot ask for more.
            if length > MAX_ENTRY_BODY || length > block.len().saturating_mul(255) {
                return Err(corrupt(format!(
                    "compressed entry announces {length} bytes"
                )));
            }
            let body = lz4_flex::block::decompress(block, length)
                .map_err(|error| corrupt(format!("compressed entry: {error}")))?;
            if body.len() != length {
                return Err(corrupt(String::from("compressed entry: wrong length")));
            }
            postcard::from_bytes(&body).map_err(|error| corrupt(error.to_string()))?
        }
        _ => unversioned(table, bytes)?,
    };
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

    /// An entry whose document compresses: a line of repeated invoice rows.
    fn compressible_entry() -> MailboxEntry {
        let rows: String = (0..12)
            .map(|i| format!("{{\"Description\":\"Item {i}\",\"Quantity\":2,\"Amount\":10.5}},"))
            .collect();
        MailboxEntry {
            raw: format!("{{\"rows\":[{rows}null]}}").into_bytes(),
            ..sample_entry()
        }
    }

    #[test]
    fn compressible_entries_are_stored_compressed_and_read_back_exactly() {
        let entry = compressible_entry();
        let bytes = encode_entry(&entry);
        assert_eq!(bytes[0], ENTRY_LZ4);
        let plain = versioned_sized(&EntryV1Ref::from(&entry), 0);
        assert!(
            bytes.len() < plain.len() / 2,
            "{} of {}",
            bytes.len(),
            plain.len()
        );
        assert_eq!(
            u32::from_le_bytes(bytes[1..5].try_into().unwrap()) as usize,
            plain.len() - 1
        );
        assert_eq!(decode_entry("mailbox_entry", 3, &bytes).unwrap(), entry);
        // Entries written uncompressed (by an older build, or because they did not
        // compress) read as before.
        assert_eq!(decode_entry("mailbox_entry", 3, &plain).unwrap(), entry);
    }

    /// A compressed entry as this build first wrote it must always decode (the
    /// compressor's output may change between versions; what it wrote must stay
    /// readable).
    #[test]
    fn entry_lz4_records_stay_readable() {
        let golden: &[u8] = &[
            0x02, 0xdc, 0x02, 0x00, 0x00, 0xf3, 0x12, 0x05, 0x64, 0x24, 0x65, 0x2e, 0x66, 0x01,
            0x00, 0x80, 0xf0, 0xcb, 0xf2, 0x83, 0x65, 0x01, 0x02, 0x78, 0x31, 0x08, 0x42, 0x54,
            0x50, 0x53, 0x5f, 0x44, 0x4f, 0x43, 0x05, 0x61, 0x24, 0x62, 0x2e, 0x63, 0x21, 0x00,
            0xff, 0x32, 0x01, 0x54, 0x81, 0x05, 0x7b, 0x22, 0x72, 0x6f, 0x77, 0x73, 0x22, 0x3a,
            0x5b, 0x7b, 0x22, 0x44, 0x65, 0x73, 0x63, 0x72, 0x69, 0x70, 0x74, 0x69, 0x6f, 0x6e,
            0x22, 0x3a, 0x22, 0x49, 0x74, 0x65, 0x6d, 0x20, 0x30, 0x22, 0x2c, 0x22, 0x51, 0x75,
            0x61, 0x6e, 0x74, 0x69, 0x74, 0x79, 0x22, 0x3a, 0x32, 0x2c, 0x22, 0x41, 0x6d, 0x6f,
            0x75, 0x6e, 0x74, 0x22, 0x3a, 0x31, 0x30, 0x2e, 0x35, 0x7d, 0x2c, 0x34, 0x00, 0x02,
            0x1f, 0x31, 0x34, 0x00, 0x20, 0x1f, 0x32, 0x34, 0x00, 0x20, 0x1f, 0x33, 0x34, 0x00,
            0x20, 0x1f, 0x34, 0x34, 0x00, 0x20, 0x1f, 0x35, 0x34, 0x00, 0x20, 0x1f, 0x36, 0x34,
            0x00, 0x20, 0x1f, 0x37, 0x34, 0x00, 0x20, 0x1f, 0x38, 0x34, 0x00, 0x20, 0x1f, 0x39,
            0x34, 0x00, 0x20, 0x1f, 0x31, 0x09, 0x02, 0x22, 0x0f, 0x0a, 0x02, 0x0c, 0xf1, 0x09,
            0x6e, 0x75, 0x6c, 0x6c, 0x5d, 0x7d, 0x00, 0x00, 0x01, 0x18, 0x32, 0x30, 0x32, 0x35,
            0x2d, 0x30, 0x31, 0x2d, 0x30, 0x31, 0x54, 0x30, 0x30, 0x3a, 0x03, 0x00, 0xf0, 0x09,
            0x2e, 0x30, 0x30, 0x30, 0x5a, 0x01, 0x07, 0x31, 0x2e, 0x32, 0x2e, 0x33, 0x2e, 0x34,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(
            decode_entry("mailbox_entry", 3, golden).unwrap(),
            compressible_entry()
        );
    }

    #[test]
    fn incompressible_and_small_entries_stay_plain() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let noise: Vec<u8> = (0..3000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                b'A' + (state % 26) as u8
            })
            .collect();
        let noisy = MailboxEntry {
            raw: noise,
            ..sample_entry()
        };
        assert_eq!(encode_entry(&noisy)[0], RECORD_VERSION);
        assert_eq!(encode_entry(&sample_entry())[0], RECORD_VERSION);
    }

    #[test]
    fn damaged_compressed_entries_are_errors() {
        let good = encode_entry(&compressible_entry());
        let mut cases: Vec<Vec<u8>> = vec![
            vec![ENTRY_LZ4],
            vec![ENTRY_LZ4, 1, 0],
            good[..good.len() / 2].to_vec(),
        ];
        // A length far beyond what the block could hold.
        let mut huge = good.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        cases.push(huge);
        // A length that does not match the block.
        let mut short = good.clone();
        short[1..5].copy_from_slice(&10u32.to_le_bytes());
        cases.push(short);
        // Every single-byte change of the block decodes to an error or to some entry,
        // never to a panic.
        for position in 5..good.len() {
            let mut flipped = good.clone();
            flipped[position] ^= 0x5a;
            let _ = decode_entry("mailbox_entry", 3, &flipped);
        }
        for case in cases {
            assert!(
                matches!(
                    decode_entry("mailbox_entry", 3, &case),
                    Err(StoreError::Decode { .. })
                ),
                "{case:x?}"
            );
        }
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
