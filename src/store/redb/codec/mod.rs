//! Storage records: the postcard-encoded values of the redb tables.
//!
//! Every value is one record-format version byte followed by the postcard encoding
//! of that version's struct. Decoding dispatches on the byte, so records written by
//! an older version keep decoding after a new version is added; a byte this build
//! does not know is reported, never guessed. Only fixed-width integers and strings
//! appear (no `usize`), so the format does not depend on pointer width.
//! The layouts are documented in `schema/storage.md`; golden bytes in the tests
//! below pin them.
//!
//! This file holds the framing shared by every value and the trust, identity and
//! public-key values; `entry` holds the mailbox entries, which are also stored
//! LZ4-compressed when that pays.

mod agent;
mod entry;

use serde::{Deserialize, Serialize};

use crate::protocol::json::{self, Object, Value};
use crate::store::{
    IdentityRecord, KeyHistoryEntry, PrivacyType, PublicKeyRecord, Source, StoreError, Timestamp,
    TrustRecord, TrustStatus,
};

pub(super) use self::agent::{decode_session, decode_token, encode_session, encode_token};
pub(super) use self::entry::{decode_entry, encode_entry};

/// Record format version of trust, identity, key and mailbox-entry values written
/// by this build.
const RECORD_VERSION: u8 = 1;

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

/// A decoded trust value: the record and its insertion sequence number (export
/// writes records in insertion order, `06-storage.md` §4.6).
pub(super) struct StoredTrust {
    pub(super) seq: u64,
    pub(super) record: TrustRecord,
}

/// A decoded identity value and its insertion sequence number.
pub(super) struct StoredIdentity {
    pub(super) seq: u64,
    pub(super) record: IdentityRecord,
}

pub(super) fn encode_trust(seq: u64, record: &TrustRecord) -> Vec<u8> {
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

pub(super) fn decode_trust(
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

pub(super) fn encode_identity(seq: u64, record: &IdentityRecord) -> Vec<u8> {
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

pub(super) fn decode_identity(
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

pub(super) fn encode_public_key(key: &PublicKeyRecord) -> Vec<u8> {
    versioned(&public_key_v1(key))
}

pub(super) fn decode_public_key(
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
