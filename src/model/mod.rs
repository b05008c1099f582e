//! The domain types the logic works with: trust records, identity records, mailbox
//! entries and their parts.
//!
//! Plain values with the rules every record obeys ([`validate_trust`],
//! [`validate_identity`]). They know nothing of storage or of any encoding: the
//! storage contract ([`crate::store`], which re-exports them) keeps them, [`crate::wire`]
//! is their form in the reference's JSON files, and the redb backend has its own
//! versioned encoding of them.

mod agent;
mod mailbox;
mod query;
mod record;

pub use agent::{
    AGENT_ID_PREFIX, AgentSession, EnrollmentToken, RETIRED_REFRESH_TOKENS, enrollment_token_key,
    is_agent_id, refresh_token_hash,
};
pub use mailbox::{
    DELIVERY_FAILURE_TYPE, EntryKind, EntryMeta, Mailbox, MailboxEntry, NewInboxEntry,
    NewOutboxEntry, OutboxState,
};
pub use query::{EntryFilter, ListingPosition, MailboxQuery, QueryPage, TextFilter, run_query};
pub use record::{
    IdentityPatch, IdentityRecord, KeyHistoryEntry, NewTrustRecord, Perspective, PrivacyType,
    PublicKeyRecord, Source, Timestamp, TimestampError, TrustPatch, TrustRecord, TrustStatus,
    validate_identity, validate_trust,
};
