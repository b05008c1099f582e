//! Mailbox entry values: the version-1 postcard layout, and its LZ4-compressed form
//! for entries whose artifact compresses well enough to be worth it.
//!
//! The artifact bytes dominate an entry, and most invoices are repetitive JSON: a
//! plain 2.2 KB invoice shrinks to ~1.6 KB, so two share a 4 KB database page and
//! each group commit writes fewer pages. Either form decodes, whatever this build
//! would write for the same entry.

use serde::{Deserialize, Serialize};

use crate::store::redb::tables::Tag;
use crate::store::{EntryKind, EntryMeta, Mailbox, MailboxEntry, StoreError};

use super::RECORD_VERSION;
use super::{parse_timestamp, text, versioned_sized};

/// Format byte of a mailbox entry stored compressed: `0x02 ++ u32le(length of the
/// postcard body) ++ LZ4 block of the version-1 postcard body`.
const ENTRY_LZ4: u8 = 2;

/// Bodies shorter than this are stored as they are: too little to gain.
const COMPRESS_FROM: usize = 512;

/// The longest entry body a compressed record may announce: far above any artifact
/// the server accepts (`limits.max_line_bytes` is at most a few MiB in practice), so
/// that a damaged length cannot make decoding allocate without bound.
const MAX_ENTRY_BODY: usize = 256 << 20;

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

/// Fields added after version 1, written after the version-1 body (schema 5).
///
/// A version-1 body read by postcard ends where its last field ends, so what
/// follows it is this record: an entry written before it existed simply has no
/// bytes there, and reads as all `None`.
#[derive(Serialize, Deserialize)]
struct EntryExtraV1 {
    in_flight_until: Option<String>,
    last_attempt_at: Option<String>,
}

pub(in crate::store::redb) fn encode_entry(entry: &MailboxEntry) -> Vec<u8> {
    let value = EntryV1Ref::from(entry);
    // The artifact bytes dominate; the rest is a few short strings.
    let mut plain = versioned_sized(&value, entry.raw.len() + 512);
    let extra = EntryExtraV1 {
        in_flight_until: text(entry.meta.in_flight_until.as_ref()),
        last_attempt_at: text(entry.meta.last_attempt_at.as_ref()),
    };
    if extra.in_flight_until.is_some() || extra.last_attempt_at.is_some() {
        // Serialising two optional strings into a Vec cannot fail.
        if let Ok(bytes) = postcard::to_extend(&extra, plain.clone()) {
            plain = bytes;
        }
    }
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

pub(in crate::store::redb) fn decode_entry(
    table: &'static str,
    entry_id: u64,
    bytes: &[u8],
) -> Result<MailboxEntry, StoreError> {
    let corrupt = |detail: String| StoreError::Decode { table, detail };
    let body: std::borrow::Cow<'_, [u8]> = match bytes.split_first() {
        Some((&ENTRY_LZ4, rest)) => {
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
            std::borrow::Cow::Owned(body)
        }
        Some((&RECORD_VERSION, body)) => std::borrow::Cow::Borrowed(body),
        Some((version, _)) => {
            return Err(corrupt(format!(
                "record format version {version} is unknown to this build"
            )));
        }
        None => return Err(corrupt(String::from("empty value"))),
    };
    let (value, rest): (EntryV1, &[u8]) =
        postcard::take_from_bytes(&body).map_err(|error| corrupt(error.to_string()))?;
    let extra = if rest.is_empty() {
        EntryExtraV1 {
            in_flight_until: None,
            last_attempt_at: None,
        }
    } else {
        postcard::from_bytes(rest).map_err(|error| corrupt(error.to_string()))?
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
            in_flight_until: timestamp(extra.in_flight_until)?,
            last_attempt_at: timestamp(extra.last_attempt_at)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Timestamp;

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

    /// Golden bytes of a version-1 mailbox entry (see `trust_v1_layout_is_stable` in `codec`).
    #[test]
    fn entry_v1_layout_is_stable() {
        let bytes = encode_entry(&sample_entry());
        let golden: &[u8] = b"\x01\x05d$e.f\x01\x00\x80\xf0\xcb\xf2\x83\x65\x01\x02x1\x08BTPS_DOC\x05a$b.c\x05d$e.f\x01\x01T\x02{}\x00\x00\x01\x182025-01-01T00:00:00.000Z\x01\x071.2.3.4\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
        assert_eq!(bytes, golden, "{:x?}", bytes);
        let decoded = decode_entry("mailbox_entry", 3, golden).unwrap();
        assert_eq!(decoded, sample_entry());
    }

    /// The fields of version 5 follow the version-1 body; an entry without them
    /// is byte for byte a version-1 entry, and both forms read back exactly.
    #[test]
    fn outbox_fields_follow_the_v1_body() {
        let plain = sample_entry();
        let mut held = sample_entry();
        held.meta.in_flight_until = Some(Timestamp::parse("2025-01-01T00:01:00.000Z").unwrap());
        held.meta.last_attempt_at = Some(Timestamp::parse("2025-01-01T00:00:30.000Z").unwrap());
        let (short, long) = (encode_entry(&plain), encode_entry(&held));
        assert!(long.starts_with(&short), "the v1 body comes first");
        assert_eq!(decode_entry("mailbox_entry", 3, &long).unwrap(), held);
        assert_eq!(decode_entry("mailbox_entry", 3, &short).unwrap(), plain);
        let mut damaged = long.clone();
        damaged.truncate(long.len() - 3);
        assert!(decode_entry("mailbox_entry", 3, &damaged).is_err());
        let compressible = MailboxEntry {
            meta: held.meta,
            ..compressible_entry()
        };
        let stored = encode_entry(&compressible);
        assert_eq!(stored[0], ENTRY_LZ4);
        assert_eq!(
            decode_entry("mailbox_entry", 3, &stored).unwrap(),
            compressible
        );
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
}
