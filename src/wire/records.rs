//! The reference's JSON records: conversion between JSON objects and the domain
//! types of [`crate::model`].
//!
//! This is the only place that knows the reference's field names. Parsing is strict
//! about types (every problem is reported with its field) and keeps the source
//! object; rendering writes the typed fields back into that object in place, so a
//! record read from a file comes back with its key order, unknown fields and
//! explicit `null`s, and a record the appliance created uses the reference's
//! creation order (`06-storage.md` §4.1, §4.6).

use crate::model::{
    IdentityRecord, KeyHistoryEntry, PrivacyType, PublicKeyRecord, Source, Timestamp, TrustRecord,
    TrustStatus,
};
use crate::protocol::json::{JsString, Object, Value};

/// Reads a trust record from a reference JSON object.
pub fn trust_from_json(object: &Object) -> Result<TrustRecord, String> {
    let key_history = match object.get("keyHistory") {
        Some(Value::Array(entries)) => entries
            .iter()
            .enumerate()
            .map(|(position, entry)| {
                key_history_from_json(entry)
                    .map_err(|reason| format!("keyHistory[{position}]: {reason}"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(String::from("keyHistory: expected an array")),
        None => return Err(String::from("keyHistory: missing")),
    };
    Ok(TrustRecord {
        id: required_string(object, "id")?,
        sender_id: required_string(object, "senderId")?,
        receiver_id: required_string(object, "receiverId")?,
        status: TrustStatus::from_wire(&required_string(object, "status")?),
        created_at: required_timestamp(object, "createdAt")?,
        updated_at: optional_timestamp(object, "updatedAt")?,
        decided_by: required_string(object, "decidedBy")?,
        decided_at: required_timestamp(object, "decidedAt")?,
        expires_at: optional_timestamp(object, "expiresAt")?,
        public_key_base64: required_string(object, "publicKeyBase64")?,
        public_key_fingerprint: required_string(object, "publicKeyFingerprint")?,
        key_history,
        privacy_type: PrivacyType::from_wire(&required_string(object, "privacyType")?),
        retry_after_date: optional_timestamp(object, "retryAfterDate")?,
        metadata: optional_object(object, "metadata")?,
        source: Some(Source(object.clone())),
    })
}

fn key_history_from_json(value: &Value) -> Result<KeyHistoryEntry, String> {
    let object = value.as_object().ok_or("expected an object")?;
    Ok(KeyHistoryEntry {
        fingerprint: required_string(object, "fingerprint")?,
        first_seen: required_timestamp(object, "firstSeen")?,
        last_seen: required_timestamp(object, "lastSeen")?,
    })
}

/// Writes a trust record as the reference's JSON object.
pub fn trust_to_json(record: &TrustRecord) -> Object {
    let source = record.source.as_ref().map(|source| &source.0);
    let source_history = source.and_then(|object| object.get("keyHistory")?.as_array());
    let history = record
        .key_history
        .iter()
        .enumerate()
        .map(|(position, entry)| {
            // An unchanged entry keeps its source form (unknown keys, order).
            if let Some(raw) = source_history.and_then(|entries| entries.get(position))
                && key_history_from_json(raw).as_ref() == Ok(entry)
            {
                return raw.clone();
            }
            let mut object = Object::new();
            object.insert("fingerprint", entry.fingerprint.as_str());
            object.insert("firstSeen", entry.first_seen.as_str());
            object.insert("lastSeen", entry.last_seen.as_str());
            Value::Object(object)
        })
        .collect();
    let fields = [
        ("id", Some(Value::from(record.id.as_str()))),
        ("senderId", Some(record.sender_id.as_str().into())),
        ("receiverId", Some(record.receiver_id.as_str().into())),
        ("status", Some(record.status.as_str().into())),
        ("createdAt", Some(record.created_at.as_str().into())),
        ("decidedBy", Some(record.decided_by.as_str().into())),
        ("decidedAt", Some(record.decided_at.as_str().into())),
        ("expiresAt", timestamp_value(record.expires_at.as_ref())),
        (
            "publicKeyBase64",
            Some(record.public_key_base64.as_str().into()),
        ),
        (
            "publicKeyFingerprint",
            Some(record.public_key_fingerprint.as_str().into()),
        ),
        ("keyHistory", Some(Value::Array(history))),
        ("privacyType", Some(record.privacy_type.as_str().into())),
        (
            "retryAfterDate",
            timestamp_value(record.retry_after_date.as_ref()),
        ),
        ("metadata", record.metadata.clone().map(Value::Object)),
        ("updatedAt", timestamp_value(record.updated_at.as_ref())),
    ];
    render(source, fields)
}

/// Reads an identity record from a reference JSON object.
pub fn identity_from_json(object: &Object) -> Result<IdentityRecord, String> {
    let public_keys = match object.get("publicKeys") {
        Some(Value::Array(keys)) => keys
            .iter()
            .enumerate()
            .map(|(position, key)| {
                let key = key
                    .as_object()
                    .ok_or_else(|| format!("publicKeys[{position}]: expected an object"))?;
                public_key_from_json(key)
                    .map_err(|reason| format!("publicKeys[{position}]: {reason}"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(String::from("publicKeys: expected an array")),
        None => return Err(String::from("publicKeys: missing")),
    };
    Ok(IdentityRecord {
        id: required_string(object, "id")?,
        identity: required_string(object, "identity")?,
        current_selector: required_string(object, "currentSelector")?,
        public_keys,
        created_at: required_timestamp(object, "createdAt")?,
        updated_at: optional_timestamp(object, "updatedAt")?,
        metadata: optional_object(object, "metadata")?,
        source: Some(Source(object.clone())),
    })
}

/// Reads a public-key record from a reference JSON object.
pub fn public_key_from_json(object: &Object) -> Result<PublicKeyRecord, String> {
    Ok(PublicKeyRecord {
        selector: required_string(object, "selector")?,
        public_key: required_string(object, "publicKey")?,
        key_type: required_string(object, "keyType")?,
        version: required_string(object, "version")?,
        created_at: required_timestamp(object, "createdAt")?,
        source: Some(Source(object.clone())),
    })
}

/// Writes an identity record as the reference's JSON object.
pub fn identity_to_json(record: &IdentityRecord) -> Object {
    let keys = record
        .public_keys
        .iter()
        .map(|key| Value::Object(public_key_to_json(key)))
        .collect();
    let fields = [
        ("id", Some(Value::from(record.id.as_str()))),
        ("identity", Some(record.identity.as_str().into())),
        (
            "currentSelector",
            Some(record.current_selector.as_str().into()),
        ),
        ("publicKeys", Some(Value::Array(keys))),
        ("createdAt", Some(record.created_at.as_str().into())),
        ("updatedAt", timestamp_value(record.updated_at.as_ref())),
        ("metadata", record.metadata.clone().map(Value::Object)),
    ];
    render(record.source.as_ref().map(|source| &source.0), fields)
}

/// Writes a public-key record as the reference's JSON object.
pub fn public_key_to_json(key: &PublicKeyRecord) -> Object {
    let fields = [
        ("selector", Some(Value::from(key.selector.as_str()))),
        ("publicKey", Some(key.public_key.as_str().into())),
        ("keyType", Some(key.key_type.as_str().into())),
        ("version", Some(key.version.as_str().into())),
        ("createdAt", Some(key.created_at.as_str().into())),
    ];
    render(key.source.as_ref().map(|source| &source.0), fields)
}

/// Builds the JSON object of a record: without a source, the known fields in the
/// given (creation) order; with one, the source with every known field replaced in
/// place, appended when new, and removed when absent — except that an explicit
/// `null` in the source stays `null` while the field is still absent.
fn render<const N: usize>(source: Option<&Object>, fields: [(&str, Option<Value>); N]) -> Object {
    let Some(source) = source else {
        let mut out = Object::new();
        for (key, value) in fields {
            if let Some(value) = value {
                out.insert(key, value);
            }
        }
        return out;
    };
    let mut out = source.clone();
    for (key, value) in fields {
        match value {
            Some(value) => {
                if out.get(key) != Some(&value) {
                    out.insert(key, value);
                }
            }
            None => {
                if !matches!(out.get(key), Some(Value::Null)) {
                    out.remove(key);
                }
            }
        }
    }
    out
}

fn timestamp_value(timestamp: Option<&Timestamp>) -> Option<Value> {
    timestamp.map(|timestamp| Value::from(timestamp.as_str()))
}

fn required_string(object: &Object, key: &str) -> Result<String, String> {
    match object.get(key) {
        Some(Value::String(JsString::Text(text))) => Ok(text.to_string()),
        Some(Value::String(JsString::Units(_))) => {
            Err(format!("{key}: contains an unpaired surrogate"))
        }
        Some(_) => Err(format!("{key}: expected a string")),
        None => Err(format!("{key}: missing")),
    }
}

fn required_timestamp(object: &Object, key: &str) -> Result<Timestamp, String> {
    let text = required_string(object, key)?;
    Timestamp::parse(&text).map_err(|error| format!("{key}: {error}"))
}

fn optional_timestamp(object: &Object, key: &str) -> Result<Option<Timestamp>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => required_timestamp(object, key).map(Some),
    }
}

fn optional_object(object: &Object, key: &str) -> Result<Option<Object>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner.clone())),
        Some(_) => Err(format!("{key}: expected an object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::json::parse;

    #[test]
    fn nulls_unknown_fields_and_order_survive() {
        let text = r#"{"extra":1,"id":"x","senderId":"a$b.c","receiverId":"d$e.f","status":"accepted","createdAt":"2025-01-01T00:00:00.000Z","decidedBy":"","decidedAt":"2025-01-01T00:00:00Z","expiresAt":null,"publicKeyBase64":"","publicKeyFingerprint":"","keyHistory":[{"lastSeen":"2025-01-01T00:00:00.000Z","fingerprint":"f","firstSeen":"2024-01-01T00:00:00.000Z","note":true}],"privacyType":"mixed"}"#;
        let object = parse(text).unwrap().as_object().unwrap().clone();
        let record = trust_from_json(&object).unwrap();
        assert_eq!(record.expires_at, None);
        assert_eq!(trust_to_json(&record), object);

        let mut changed = record;
        changed.expires_at = Some(Timestamp::parse("2026-01-01T00:00:00.000Z").unwrap());
        changed.updated_at = Some(Timestamp::parse("2025-02-01T00:00:00.000Z").unwrap());
        let out = trust_to_json(&changed);
        let keys: Vec<_> = out.iter().map(|(key, _)| key.as_str().unwrap()).collect();
        assert_eq!(keys[0], "extra");
        assert_eq!(keys[8], "expiresAt");
        assert_eq!(*keys.last().unwrap(), "updatedAt");
    }
}
