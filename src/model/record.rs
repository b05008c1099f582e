//! Trust records, identity records and their parts.
//!
//! These are the values the server logic works with. They know nothing of JSON
//! files or postcard: [`crate::wire`] converts them to and from the reference's JSON
//! records, and the redb backend's `codec` to and from the versioned storage records
//! (STYLE.md #3). Storage-only rules (a created record's id, the key byte of a
//! perspective) live with the store.
//!
//! Losslessness: a record read from a reference file remembers that file's JSON
//! object in [`Source`], so that unknown fields, explicit `null`s, key order and
//! nested extras come back unchanged on export. The typed fields are always the
//! truth; the source only contributes what the types do not model.

use std::fmt;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::protocol::json::Object;

/// An instant as the reference writes it: an ISO timestamp string.
///
/// The original text is kept (a file's timestamps are exported verbatim); the
/// instant in milliseconds since the Unix epoch orders the expiry index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timestamp {
    text: String,
    millis: i64,
}

impl Timestamp {
    /// Parses an RFC 3339 timestamp (any offset; the reference writes `…Z`).
    pub fn parse(text: &str) -> Result<Self, TimestampError> {
        let instant = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| TimestampError {
            text: text.to_owned(),
        })?;
        Ok(Timestamp {
            text: text.to_owned(),
            millis: millis_of(instant),
        })
    }

    /// The instant `millis` milliseconds after the epoch, written like JavaScript's
    /// `toISOString()` (`YYYY-MM-DDTHH:mm:ss.sssZ`).
    pub fn from_millis(millis: i64) -> Result<Self, TimestampError> {
        let nanos = i128::from(millis) * 1_000_000;
        let instant =
            OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| TimestampError {
                text: millis.to_string(),
            })?;
        if (0..=9999).contains(&instant.year()) {
            let text = crate::protocol::response::iso_millis(instant);
            return Ok(Timestamp { text, millis });
        }
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let text = instant.format(&format).map_err(|_| TimestampError {
            text: millis.to_string(),
        })?;
        Ok(Timestamp { text, millis })
    }

    /// The current instant in the `toISOString()` form.
    pub fn now() -> Self {
        let millis = millis_of(OffsetDateTime::now_utc());
        // The current time is always within the range `from_millis` accepts.
        Self::from_millis(millis).unwrap_or(Timestamp {
            text: String::from("1970-01-01T00:00:00.000Z"),
            millis: 0,
        })
    }

    /// The text as given (or as written by [`Timestamp::from_millis`]).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Milliseconds since the Unix epoch (sub-millisecond digits are truncated).
    pub fn millis(&self) -> i64 {
        self.millis
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn millis_of(instant: OffsetDateTime) -> i64 {
    let millis = instant.unix_timestamp_nanos().div_euclid(1_000_000);
    // RFC 3339 years are 0000–9999, far inside the i64 millisecond range.
    i64::try_from(millis).unwrap_or(if millis < 0 { i64::MIN } else { i64::MAX })
}

/// A string that is not an RFC 3339 timestamp.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 timestamp: {text:?}")]
pub struct TimestampError {
    /// The offending text.
    pub text: String,
}

/// The status of a trust record (`05-trust.md` §4.1).
///
/// The reference stores statuses as free strings; [`TrustStatus::Other`] keeps a
/// status this version does not know representable, so that such a record can still
/// be read and written back. Validation refuses it where the spec asks for a known one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrustStatus {
    /// A request exists, no decision yet.
    Pending,
    /// The sender may deliver documents (until `expiresAt`).
    Accepted,
    /// The request was declined.
    Rejected,
    /// A granted trust was withdrawn.
    Revoked,
    /// The sender may send nothing, not even a new request.
    Blocked,
    /// A status outside the spec, kept verbatim.
    Other(String),
}

impl TrustStatus {
    /// The status as its wire string.
    pub fn as_str(&self) -> &str {
        match self {
            TrustStatus::Pending => "pending",
            TrustStatus::Accepted => "accepted",
            TrustStatus::Rejected => "rejected",
            TrustStatus::Revoked => "revoked",
            TrustStatus::Blocked => "blocked",
            TrustStatus::Other(text) => text,
        }
    }

    /// Maps a wire string; unknown strings become [`TrustStatus::Other`].
    pub fn from_wire(text: &str) -> Self {
        match text {
            "pending" => TrustStatus::Pending,
            "accepted" => TrustStatus::Accepted,
            "rejected" => TrustStatus::Rejected,
            "revoked" => TrustStatus::Revoked,
            "blocked" => TrustStatus::Blocked,
            other => TrustStatus::Other(other.to_owned()),
        }
    }

    /// Whether the status is one the spec defines.
    pub fn is_known(&self) -> bool {
        !matches!(self, TrustStatus::Other(_))
    }
}

impl fmt::Display for TrustStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The privacy level agreed for documents under a trust (`05-trust.md` §8).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PrivacyType {
    /// Documents travel in clear.
    Unencrypted,
    /// Documents must be encrypted.
    Encrypted,
    /// Either form is accepted.
    Mixed,
    /// A value outside the spec, kept verbatim.
    Other(String),
}

impl PrivacyType {
    /// The privacy type as its wire string.
    pub fn as_str(&self) -> &str {
        match self {
            PrivacyType::Unencrypted => "unencrypted",
            PrivacyType::Encrypted => "encrypted",
            PrivacyType::Mixed => "mixed",
            PrivacyType::Other(text) => text,
        }
    }

    /// Maps a wire string; unknown strings become [`PrivacyType::Other`].
    pub fn from_wire(text: &str) -> Self {
        match text {
            "unencrypted" => PrivacyType::Unencrypted,
            "encrypted" => PrivacyType::Encrypted,
            "mixed" => PrivacyType::Mixed,
            other => PrivacyType::Other(other.to_owned()),
        }
    }

    /// Whether the value is one the spec defines.
    pub fn is_known(&self) -> bool {
        !matches!(self, PrivacyType::Other(_))
    }
}

/// The JSON object a record was read from (or last written as), kept so that
/// export reproduces what the types do not model: unknown fields, explicit
/// `null`s, key order, and unknown keys inside nested entries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Source(pub Object);

/// A key that was current before the present one (`05-trust.md` §7).
#[derive(Clone, Debug, PartialEq)]
pub struct KeyHistoryEntry {
    /// Fingerprint of the old key.
    pub fingerprint: String,
    /// When that key became current.
    pub first_seen: Timestamp,
    /// When it stopped being current.
    pub last_seen: Timestamp,
}

/// The fields of a trust record that a creator supplies (everything but the id
/// and `updatedAt`).
#[derive(Clone, Debug, PartialEq)]
pub struct NewTrustRecord {
    /// Who may send (identity or agent id), case as given.
    pub sender_id: String,
    /// Who receives, case as given.
    pub receiver_id: String,
    /// Current state.
    pub status: TrustStatus,
    /// First creation.
    pub created_at: Timestamp,
    /// Who made the current decision.
    pub decided_by: String,
    /// When the current decision was made.
    pub decided_at: Timestamp,
    /// End of validity, if any.
    pub expires_at: Option<Timestamp>,
    /// The counterpart's SPKI DER in base64 (or the empty string until known).
    pub public_key_base64: String,
    /// base64(SHA-256(SPKI DER)).
    pub public_key_fingerprint: String,
    /// Earlier keys.
    pub key_history: Vec<KeyHistoryEntry>,
    /// Agreed privacy level.
    pub privacy_type: PrivacyType,
    /// No new request before this instant, if set.
    pub retry_after_date: Option<Timestamp>,
    /// Free-form application data.
    pub metadata: Option<Object>,
}

/// A stored trust record (`05-trust.md` §2).
#[derive(Clone, Debug, PartialEq)]
pub struct TrustRecord {
    /// `computeTrustId(senderId, receiverId)`: 64 lower-case hex digits.
    pub id: String,
    /// Who may send (identity or agent id), case as given.
    pub sender_id: String,
    /// Who receives, case as given.
    pub receiver_id: String,
    /// Current state.
    pub status: TrustStatus,
    /// First creation.
    pub created_at: Timestamp,
    /// Last change, if any.
    pub updated_at: Option<Timestamp>,
    /// Who made the current decision.
    pub decided_by: String,
    /// When the current decision was made.
    pub decided_at: Timestamp,
    /// End of validity, if any.
    pub expires_at: Option<Timestamp>,
    /// The counterpart's SPKI DER in base64.
    pub public_key_base64: String,
    /// base64(SHA-256(SPKI DER)).
    pub public_key_fingerprint: String,
    /// Earlier keys.
    pub key_history: Vec<KeyHistoryEntry>,
    /// Agreed privacy level.
    pub privacy_type: PrivacyType,
    /// No new request before this instant, if set.
    pub retry_after_date: Option<Timestamp>,
    /// Free-form application data.
    pub metadata: Option<Object>,
    /// The JSON object the record came from, when it came from a file.
    pub source: Option<Source>,
}

impl TrustRecord {
    /// A record made of `new` under `id`, not yet stored.
    pub fn from_new(id: String, new: NewTrustRecord) -> Self {
        TrustRecord {
            id,
            sender_id: new.sender_id,
            receiver_id: new.receiver_id,
            status: new.status,
            created_at: new.created_at,
            updated_at: None,
            decided_by: new.decided_by,
            decided_at: new.decided_at,
            expires_at: new.expires_at,
            public_key_base64: new.public_key_base64,
            public_key_fingerprint: new.public_key_fingerprint,
            key_history: new.key_history,
            privacy_type: new.privacy_type,
            retry_after_date: new.retry_after_date,
            metadata: new.metadata,
            source: None,
        }
    }

    /// Whether the record is active at `now_millis` (`05-trust.md` §5.1): accepted
    /// and not expired (an expiry equal to now still counts as active).
    pub fn is_active_at(&self, now_millis: i64) -> bool {
        self.status == TrustStatus::Accepted
            && self
                .expires_at
                .as_ref()
                .is_none_or(|expiry| expiry.millis() >= now_millis)
    }

    /// Applies `patch` (top-level fields replaced, not merged, as the reference does).
    pub fn apply(&mut self, patch: TrustPatch) {
        let TrustPatch {
            status,
            decided_by,
            decided_at,
            expires_at,
            public_key_base64,
            public_key_fingerprint,
            key_history,
            privacy_type,
            retry_after_date,
            metadata,
        } = patch;
        if let Some(value) = status {
            self.status = value;
        }
        if let Some(value) = decided_by {
            self.decided_by = value;
        }
        if let Some(value) = decided_at {
            self.decided_at = value;
        }
        if let Some(value) = expires_at {
            self.expires_at = value;
        }
        if let Some(value) = public_key_base64 {
            self.public_key_base64 = value;
        }
        if let Some(value) = public_key_fingerprint {
            self.public_key_fingerprint = value;
        }
        if let Some(value) = key_history {
            self.key_history = value;
        }
        if let Some(value) = privacy_type {
            self.privacy_type = value;
        }
        if let Some(value) = retry_after_date {
            self.retry_after_date = value;
        }
        if let Some(value) = metadata {
            self.metadata = value;
        }
    }
}

/// A partial change to a trust record. `None` leaves a field alone; for optional
/// fields `Some(None)` removes the field. The id and the two parties cannot be
/// changed (`05-trust.md` §9.2), so the patch has no place for them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrustPatch {
    /// New status.
    pub status: Option<TrustStatus>,
    /// New decider.
    pub decided_by: Option<String>,
    /// New decision time.
    pub decided_at: Option<Timestamp>,
    /// New expiry, or `Some(None)` to remove it.
    pub expires_at: Option<Option<Timestamp>>,
    /// New key.
    pub public_key_base64: Option<String>,
    /// New key fingerprint.
    pub public_key_fingerprint: Option<String>,
    /// New key history (replaces the list).
    pub key_history: Option<Vec<KeyHistoryEntry>>,
    /// New privacy type.
    pub privacy_type: Option<PrivacyType>,
    /// New retry date, or `Some(None)` to remove it.
    pub retry_after_date: Option<Option<Timestamp>>,
    /// New metadata (replaces the whole object), or `Some(None)` to remove it.
    pub metadata: Option<Option<Object>>,
}

/// One public key of an identity (`06-storage.md` §3.2).
#[derive(Clone, Debug, PartialEq)]
pub struct PublicKeyRecord {
    /// Selector name, unique within the identity.
    pub selector: String,
    /// The key: a PEM, or a bare base64 SPKI body, stored as given.
    pub public_key: String,
    /// Key algorithm (always `rsa` in the reference).
    pub key_type: String,
    /// Free-form version label.
    pub version: String,
    /// When the key was added.
    pub created_at: Timestamp,
    /// The JSON object the key came from, when it came from a file.
    pub source: Option<Source>,
}

/// An identity record: the published keys of an identity without DNS keys of its own.
#[derive(Clone, Debug, PartialEq)]
pub struct IdentityRecord {
    /// `computeId(identity)`.
    pub id: String,
    /// The identity as given.
    pub identity: String,
    /// Selector used when a lookup names none.
    pub current_selector: String,
    /// All keys, one per selector.
    pub public_keys: Vec<PublicKeyRecord>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change, if any.
    pub updated_at: Option<Timestamp>,
    /// Free-form application data.
    pub metadata: Option<Object>,
    /// The JSON object the record came from, when it came from a file.
    pub source: Option<Source>,
}

impl IdentityRecord {
    /// A new record for `identity` with one key, which is made current.
    pub fn new(identity: &str, key: PublicKeyRecord, created_at: Timestamp) -> Self {
        IdentityRecord {
            id: crate::identity::compute_id(identity),
            identity: identity.to_owned(),
            current_selector: key.selector.clone(),
            public_keys: vec![key],
            created_at,
            updated_at: None,
            metadata: None,
            source: None,
        }
    }

    /// The key named `selector`, or the current one (`06-storage.md` §3.3:
    /// exact, case-sensitive selector match, first match wins).
    pub fn key(&self, selector: Option<&str>) -> Option<&PublicKeyRecord> {
        let wanted = selector.unwrap_or(&self.current_selector);
        self.public_keys.iter().find(|key| key.selector == wanted)
    }

    /// Applies `patch`.
    pub fn apply(&mut self, patch: IdentityPatch) {
        if let Some(value) = patch.current_selector {
            self.current_selector = value;
        }
        if let Some(value) = patch.public_keys {
            self.public_keys = value;
        }
        if let Some(value) = patch.metadata {
            self.metadata = value;
        }
    }

    /// Adds `key`, or replaces the key with the same selector in place.
    pub fn put_key(&mut self, key: PublicKeyRecord, make_current: bool) {
        if make_current {
            self.current_selector = key.selector.clone();
        }
        match self
            .public_keys
            .iter_mut()
            .find(|existing| existing.selector == key.selector)
        {
            Some(existing) => *existing = key,
            None => self.public_keys.push(key),
        }
    }
}

/// A partial change to an identity record. The id and the identity cannot change.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IdentityPatch {
    /// New current selector.
    pub current_selector: Option<String>,
    /// New key list (replaces the list).
    pub public_keys: Option<Vec<PublicKeyRecord>>,
    /// New metadata, or `Some(None)` to remove it.
    pub metadata: Option<Option<Object>>,
}

/// Which side of a relationship a stored trust record serves (`05-trust.md` §6.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Perspective {
    /// The local party is `receiverId` (TRUST_REQ, BTPS_DOC and agent checks).
    Inbound,
    /// The local party is `senderId` (the TRUST_RES check).
    Outbound,
}

impl Perspective {
    /// Both perspectives, in key order.
    pub const ALL: [Perspective; 2] = [Perspective::Inbound, Perspective::Outbound];
}

/// Checks the rules every stored trust record obeys (`05-trust.md` §2, §9.2):
/// the id is the computed one, the status and privacy type are known values.
pub fn validate_trust(record: &TrustRecord) -> Result<(), String> {
    let computed = crate::identity::compute_trust_id(&record.sender_id, &record.receiver_id);
    if record.id != computed {
        return Err(format!(
            "id {:?} is not computeTrustId(senderId, receiverId) = {computed}",
            record.id
        ));
    }
    if !record.status.is_known() {
        return Err(format!("unknown status {:?}", record.status.as_str()));
    }
    if !record.privacy_type.is_known() {
        return Err(format!(
            "unknown privacyType {:?}",
            record.privacy_type.as_str()
        ));
    }
    if record.sender_id.is_empty() || record.receiver_id.is_empty() {
        return Err(String::from("senderId and receiverId must not be empty"));
    }
    Ok(())
}

/// Checks the rules every stored identity record obeys (`06-storage.md` §3.4):
/// computed id, unique selectors, a current selector that names a key, `rsa` keys.
pub fn validate_identity(record: &IdentityRecord) -> Result<(), String> {
    let computed = crate::identity::compute_id(&record.identity);
    if record.id != computed {
        return Err(format!(
            "id {:?} is not computeId(identity) = {computed}",
            record.id
        ));
    }
    if record.identity.is_empty() {
        return Err(String::from("identity must not be empty"));
    }
    for (position, key) in record.public_keys.iter().enumerate() {
        if record.public_keys[..position]
            .iter()
            .any(|earlier| earlier.selector == key.selector)
        {
            return Err(format!("selector {:?} appears twice", key.selector));
        }
        if key.key_type != "rsa" {
            return Err(format!(
                "key {:?}: unknown keyType {:?}",
                key.selector, key.key_type
            ));
        }
    }
    if record.key(None).is_none() {
        return Err(format!(
            "currentSelector {:?} names none of the keys",
            record.current_selector
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_text_and_order_by_instant() {
        let zulu = Timestamp::parse("2025-06-01T10:00:00.000Z").unwrap();
        let offset = Timestamp::parse("2025-06-01T12:00:00.000+02:00").unwrap();
        assert_eq!(zulu.millis(), offset.millis());
        assert_eq!(offset.as_str(), "2025-06-01T12:00:00.000+02:00");
        assert_eq!(
            Timestamp::from_millis(zulu.millis()).unwrap().as_str(),
            "2025-06-01T10:00:00.000Z"
        );
        assert!(Timestamp::parse("yesterday").is_err());
        let before_epoch = Timestamp::parse("1969-12-31T23:59:59.999Z").unwrap();
        assert_eq!(before_epoch.millis(), -1);
    }

    #[test]
    fn statuses_round_trip_including_unknown_ones() {
        for text in [
            "pending", "accepted", "rejected", "revoked", "blocked", "paused",
        ] {
            assert_eq!(TrustStatus::from_wire(text).as_str(), text);
        }
        assert!(!TrustStatus::from_wire("paused").is_known());
    }
}
