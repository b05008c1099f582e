//! The storage contract the server runs on: one [`Storage`] handle per server.
//!
//! A backend implements four things:
//!
//! * the record stores the reference's users know — [`TrustStore`] and
//!   [`IdentityStore`] (async: each call may cross a network);
//! * [`MailboxStore`] — reading the mailboxes, and the durable cursors of
//!   [`crate::server::Subscription`]s (async);
//! * [`Storage::commit_inbound`] — the one write the hot path makes: a *group* of
//!   inbound artifacts, each checked and applied by the server inside **one
//!   transaction of the backend's**, committed before any of them is answered. This
//!   call is **blocking**: the server makes it from its group-commit thread, never
//!   from an async worker; a backend over the network uses a synchronous client or
//!   `tokio::runtime::Handle::block_on` inside it;
//! * optionally [`Maintenance`] — what only a local database file can do (online
//!   backup, file size); the HTTP endpoint and the operator commands ask for it.
//!
//! The trust rules themselves are not the backend's business: the server runs them
//! against the [`InboundTransaction`] view the backend hands it, so a new backend
//! only stores and reads. `docs/embedding.md` states the guarantees a backend gives
//! (atomicity of a group, idempotency on the artifact id, ordering, crash
//! behaviour) and walks through writing one.

use std::path::Path;

use super::{
    AgentSession, BackupReport, BoxFuture, EnrollmentToken, IdentityStore, Mailbox, MailboxEntry,
    MailboxQuery, NewOutboxEntry, NewTrustRecord, Page, PageRequest, Perspective,
    PreparedInboxEntry, QueryPage, StoreResult, Timestamp, TrustPatch, TrustRecord, TrustStore,
};

/// Everything a BTPS server keeps, behind one handle (`Arc<dyn Storage>`).
///
/// Implemented by [`super::RedbStore`] (the appliance's default: one file, one
/// transaction per group), [`super::MemoryStorage`] (tests and examples),
/// [`super::JsonFilesStorage`] (the reference's JSON record files beside another
/// backend's mailboxes), and by any application type — a per-tenant router, a
/// PostgreSQL client.
pub trait Storage: Send + Sync + 'static {
    /// Trust records (both perspectives).
    fn trust(&self) -> &dyn TrustStore;

    /// Identity records and their public keys; an identity with a record is hosted
    /// by this server.
    fn identities(&self) -> &dyn IdentityStore;

    /// The mailboxes.
    fn mailboxes(&self) -> &dyn MailboxStore;

    /// The outbox's schedule: claiming due entries for delivery, listing the queue.
    fn outbox(&self) -> &dyn OutboxStore;

    /// Runs `work` inside one write transaction and commits it when `work` returns
    /// `Ok`, **blocking** until the commit is durable; on `Err` nothing of it
    /// remains. Every operator, agent and delivery change that is not an inbound
    /// artifact goes through here: a trust decision together with the TRUST_RES it
    /// queues, an outbox entry moving to the sentbox, a delivery-failure notice
    /// replacing its entry.
    ///
    /// `owner` is the hosted identity whose data the work changes (a router picks
    /// the tenant by it). Called from blocking contexts only (the server uses
    /// `spawn_blocking`).
    fn transact(
        &self,
        owner: &str,
        work: &mut dyn FnMut(&mut dyn StoreTransaction) -> StoreResult<()>,
    ) -> StoreResult<()>;

    /// Checks and applies every artifact of `group` inside one transaction and
    /// commits it, **blocking** until the commit is durable.
    ///
    /// The backend opens a transaction, calls [`InboundGroup::apply`] for each index
    /// `0..group.len()` in order with its [`InboundTransaction`], and commits if any
    /// call returned `true` (a group that stored nothing may be rolled back instead).
    /// If anything fails — an `apply`, or the commit itself — nothing of the group
    /// may remain and the error is returned; the server then retries the artifacts
    /// one at a time. A backend that splits the group (a router sending each tenant
    /// to its own database) may commit the parts separately: a retried artifact is
    /// then found as a duplicate and acknowledged again, never stored twice.
    fn commit_inbound(&self, group: &mut dyn InboundGroup) -> StoreResult<()>;

    /// Answers when the backend can serve a read now and, after a write failed,
    /// write again (readiness). Blocking. A backend whose writes fail for now (a
    /// full disk) returns [`StoreError::Unavailable`](super::StoreError::Unavailable)
    /// here until a write succeeds.
    fn check_ready(&self) -> StoreResult<()> {
        Ok(())
    }

    /// What only a local database file can do, if this backend has one.
    fn maintenance(&self) -> Option<&dyn Maintenance> {
        None
    }

    /// Enrollment tokens and agent sessions, if this backend keeps them; without
    /// them agents cannot enroll (every other agent action still works for agent
    /// trust records that exist).
    fn agents(&self) -> Option<&dyn AgentStore> {
        None
    }
}

/// A group of verified inbound artifacts, as the server hands it to
/// [`Storage::commit_inbound`]. Implemented by the server.
pub trait InboundGroup {
    /// How many artifacts the group holds.
    fn len(&self) -> usize;

    /// Whether the group is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The receiver (a hosted identity, as received) of artifact `index`: what a
    /// router picks the tenant's store by.
    fn receiver(&self, index: usize) -> &str;

    /// Runs the duplicate check, the trust check and the changes of artifact
    /// `index` in `transaction`; `true` when it wrote something. A refusal is not an
    /// error: it writes nothing and returns `false`. An error means the transaction
    /// must not commit.
    fn apply(
        &mut self,
        index: usize,
        transaction: &mut dyn InboundTransaction,
    ) -> StoreResult<bool>;
}

/// What the server reads and writes of one inbound transaction. Every read sees
/// the transaction's own earlier writes.
pub trait InboundTransaction {
    /// The trust record `id` (lower-case hex) from `perspective`, if any.
    fn trust(&mut self, perspective: Perspective, id: &str) -> StoreResult<Option<TrustRecord>>;

    /// Stores a new trust record under its computed id.
    fn create_trust(&mut self, perspective: Perspective, record: NewTrustRecord)
    -> StoreResult<()>;

    /// Applies `patch` to the trust record `id` and sets its `updatedAt`.
    fn update_trust(
        &mut self,
        perspective: Perspective,
        id: &str,
        patch: TrustPatch,
    ) -> StoreResult<()>;

    /// Whether `identity` (case-insensitive) has an identity record.
    fn is_hosted(&mut self, identity: &str) -> StoreResult<bool>;

    /// The inbox entry that already holds this artifact — same receiver and sender
    /// (both case-insensitive) and the same artifact id (exact) — if any.
    fn duplicate_of(&mut self, entry: &PreparedInboxEntry) -> StoreResult<Option<u64>>;

    /// Stores the entry in its owner's inbox; returns its entry id (strictly
    /// increasing across the whole store, never reused).
    fn insert_inbox(&mut self, entry: &PreparedInboxEntry) -> StoreResult<u64>;

    /// A number that moved by exactly one since an earlier transaction's if and only
    /// if no other write happened in between (`None`: the backend cannot tell). The
    /// server keeps trust records it read across groups only while this holds.
    fn generation(&self) -> Option<u64> {
        None
    }
}

/// What [`Storage::transact`] work reads and writes. Every read sees the
/// transaction's own earlier writes.
pub trait StoreTransaction {
    /// The trust record `id` (any case) from `perspective`, if any.
    fn trust(&mut self, perspective: Perspective, id: &str) -> StoreResult<Option<TrustRecord>>;

    /// Stores a new trust record under its computed id; fails with `AlreadyExists`.
    fn create_trust(
        &mut self,
        perspective: Perspective,
        record: NewTrustRecord,
    ) -> StoreResult<TrustRecord>;

    /// Applies `patch` to the trust record `id`, sets its `updatedAt` and returns it.
    fn update_trust(
        &mut self,
        perspective: Perspective,
        id: &str,
        patch: TrustPatch,
    ) -> StoreResult<TrustRecord>;

    /// Removes the trust record `id`; whether it existed.
    fn delete_trust(&mut self, perspective: Perspective, id: &str) -> StoreResult<bool>;

    /// Whether `identity` (case-insensitive) has an identity record.
    fn is_hosted(&mut self, identity: &str) -> StoreResult<bool>;

    /// The mailbox entry `entry_id`, if any.
    fn entry(&mut self, entry_id: u64) -> StoreResult<Option<MailboxEntry>>;

    /// Stores `entry` under a fresh entry id (the one it carries is ignored) and
    /// returns that id. No de-duplication: for entries the server makes itself
    /// (outbox entries, delivery-failure notices, drafts).
    fn insert_entry(&mut self, entry: MailboxEntry) -> StoreResult<u64>;

    /// Replaces the stored entry with the same id (its mailbox, time, meta or
    /// bytes may have changed) and updates every index; `NotFound` if there is none.
    fn update_entry(&mut self, entry: &MailboxEntry) -> StoreResult<()>;

    /// Removes the entry; the entry removed, if there was one.
    fn remove_entry(&mut self, entry_id: u64) -> StoreResult<Option<MailboxEntry>>;

    /// The entries of (`owner` case-insensitive, `mailbox`) holding the artifact id
    /// `artifact_id` (exact), in entry-id order: what the agents' ids-based actions
    /// (`inbox.seen`, `inbox.delete`, …) act on. The default refuses (a backend
    /// without agent support).
    fn entries_by_artifact(
        &mut self,
        owner: &str,
        mailbox: Mailbox,
        artifact_id: &str,
    ) -> StoreResult<Vec<MailboxEntry>> {
        let _ = (owner, mailbox, artifact_id);
        Err(no_agents())
    }

    /// The enrollment token stored under `key` ([`crate::model::enrollment_token_key`]),
    /// if any. A backend without agent tables ([`Storage::agents`] is `None`) keeps
    /// the default, which refuses every agent method.
    fn enrollment_token(&mut self, key: &[u8; 32]) -> StoreResult<Option<EnrollmentToken>> {
        let _ = key;
        Err(no_agents())
    }

    /// Stores an enrollment token under `key`, replacing any token there.
    fn put_enrollment_token(&mut self, key: &[u8; 32], token: &EnrollmentToken) -> StoreResult<()> {
        let _ = (key, token);
        Err(no_agents())
    }

    /// Removes the enrollment token under `key`; whether there was one.
    fn delete_enrollment_token(&mut self, key: &[u8; 32]) -> StoreResult<bool> {
        let _ = key;
        Err(no_agents())
    }

    /// The session of the agent `agent_id`, if any.
    fn session(&mut self, agent_id: &str) -> StoreResult<Option<AgentSession>> {
        let _ = agent_id;
        Err(no_agents())
    }

    /// Stores `session` under its agent id, replacing any session there.
    fn put_session(&mut self, session: &AgentSession) -> StoreResult<()> {
        let _ = session;
        Err(no_agents())
    }

    /// Removes the session of `agent_id`; whether there was one.
    fn delete_session(&mut self, agent_id: &str) -> StoreResult<bool> {
        let _ = agent_id;
        Err(no_agents())
    }

    /// Queues an outbound artifact: a new outbox entry due at once, returned with
    /// its entry id.
    fn enqueue(&mut self, entry: NewOutboxEntry) -> StoreResult<MailboxEntry> {
        let mut entry = entry
            .into_entry()
            .map_err(|reason| super::StoreError::Invalid {
                kind: super::RecordKind::MailboxEntry,
                reason,
            })?;
        entry.entry_id = self.insert_entry(entry.clone())?;
        Ok(entry)
    }
}

/// The refusal of the agent methods of a backend that keeps no agent tables.
fn no_agents() -> super::StoreError {
    super::StoreError::Invalid {
        kind: super::RecordKind::AgentSession,
        reason: String::from("this storage keeps no agent sessions or enrollment tokens"),
    }
}

/// The outbox's queue, as the delivery worker and the operator see it
/// (`08-delivery.md` §5). Moving an entry on (to the sentbox, back to the queue,
/// out with a notice) is a [`Storage::transact`] of the server's.
pub trait OutboxStore: Send + Sync {
    /// Claims up to `limit` entries due at `now` for delivery until
    /// `lease_until`, oldest due first, and returns them claimed. Only the first
    /// entry of each (owner, receiver) queue is ever claimed, so a pair's
    /// artifacts are attempted in the order they were queued. An entry whose claim
    /// ran out (its node died) is due again. Each entry is claimed by one caller
    /// only, also when several servers share the backend.
    fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> BoxFuture<'_, StoreResult<Vec<MailboxEntry>>>;

    /// Ends the claims this server held before it (re)started: each such entry is
    /// due at once, its attempt count unchanged. How many. A backend shared by
    /// several servers leaves other servers' claims alone (they run out instead).
    fn release_claims(&self, now: Timestamp) -> BoxFuture<'_, StoreResult<u64>>;

    /// When the next entry is due (milliseconds since the epoch), if any.
    fn next_due(&self) -> BoxFuture<'_, StoreResult<Option<i64>>>;

    /// Entries in the order they were queued, of `owner` (case-insensitive) only
    /// when given.
    fn list<'a>(
        &'a self,
        owner: Option<&'a str>,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<MailboxEntry>>>;

    /// How many entries wait and when the oldest was queued.
    fn stats(&self) -> BoxFuture<'_, StoreResult<OutboxStats>>;
}

/// The size and age of the outbox.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutboxStats {
    /// Entries in the outbox (queued, in flight or waiting for a retry).
    pub entries: u64,
    /// When the oldest of them was queued.
    pub oldest_queued_at: Option<Timestamp>,
}

/// Reading the mailboxes.
pub trait MailboxStore: Send + Sync {
    /// The entry `entry_id`, if any.
    fn entry(&self, entry_id: u64) -> BoxFuture<'_, StoreResult<Option<MailboxEntry>>>;

    /// Entries of (`owner` case-insensitive, `mailbox`) ordered by the time they
    /// entered it, then entry id; newest first when `newest_first`. A cursor
    /// continues strictly after its entry, so entries added meanwhile never make a
    /// page repeat or skip one.
    fn list<'a>(
        &'a self,
        owner: &'a str,
        mailbox: Mailbox,
        page: PageRequest,
        newest_first: bool,
    ) -> BoxFuture<'a, StoreResult<Page<MailboxEntry>>>;

    /// How many entries (`owner`, `mailbox`) holds.
    fn count<'a>(&'a self, owner: &'a str, mailbox: Mailbox) -> BoxFuture<'a, StoreResult<u64>>;

    /// Inbox entries (of every owner) with an entry id greater than `after`, in
    /// entry-id order, at most `limit`: the feed of [`crate::server::Subscription`].
    fn inbox_after(&self, after: u64, limit: u32) -> BoxFuture<'_, StoreResult<Vec<MailboxEntry>>>;

    /// The durable position of the subscription `name`: the last entry id its
    /// consumer acknowledged (0 before the first).
    fn cursor<'a>(&'a self, name: &'a str) -> BoxFuture<'a, StoreResult<u64>>;

    /// Stores the position of the subscription `name`, durably.
    fn set_cursor<'a>(&'a self, name: &'a str, entry_id: u64) -> BoxFuture<'a, StoreResult<()>>;

    /// Runs `query` over the entries of (`owner` case-insensitive, `mailbox`)
    /// (`07-agents-auth.md` §4.2). A backend with indexes walks only the owner's
    /// entries inside the time window; this default pages through
    /// [`MailboxStore::list`] and filters, which is correct but reads the whole
    /// mailbox.
    fn query<'a>(
        &'a self,
        owner: &'a str,
        mailbox: Mailbox,
        query: &'a MailboxQuery,
    ) -> BoxFuture<'a, StoreResult<QueryPage>> {
        Box::pin(async move {
            let mut entries = Vec::new();
            let mut page = PageRequest::first(500);
            loop {
                let listed = self.list(owner, mailbox, page, false).await?;
                entries.extend(listed.items);
                match listed.next {
                    Some(next) => page = PageRequest::after(next, 500),
                    None => break,
                }
            }
            Ok(crate::model::run_query(entries.iter(), query))
        })
    }
}

/// An enrollment token with the key it is stored under.
pub type KeyedToken = ([u8; 32], EnrollmentToken);

/// Enrollment tokens and agent sessions (`07-agents-auth.md` §6.7).
///
/// Reads are async; every change is made in a [`Storage::transact`] (the agent
/// methods of [`StoreTransaction`]), except the periodic sweep.
pub trait AgentStore: Send + Sync {
    /// The session of `agent_id`, if any.
    fn session<'a>(&'a self, agent_id: &'a str)
    -> BoxFuture<'a, StoreResult<Option<AgentSession>>>;

    /// The sessions of `owner` (case-insensitive), or of every owner, by agent id.
    fn sessions<'a>(
        &'a self,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<Vec<AgentSession>>>;

    /// Every stored enrollment token with its key, in key order.
    fn enrollment_tokens(&self) -> BoxFuture<'_, StoreResult<Vec<KeyedToken>>>;

    /// Removes the enrollment tokens and sessions that expired before `now_millis`,
    /// in one transaction; how many of each. **Blocking.**
    fn sweep(&self, now_millis: i64) -> StoreResult<(u64, u64)>;
}

/// What only a backend with a local database file can do. Every method blocks.
pub trait Maintenance: Send + Sync {
    /// The database file.
    fn database_path(&self) -> &Path;

    /// The size of the database file in bytes, if it can be read.
    fn file_size(&self) -> Option<u64> {
        std::fs::metadata(self.database_path())
            .ok()
            .map(|metadata| metadata.len())
    }

    /// A consistent snapshot of the whole database, written to an unlinked
    /// scratch file beside it while writers go on, positioned at its start.
    fn backup_to_anonymous_file(&self) -> StoreResult<(std::fs::File, BackupReport)>;

    /// Removes scratch files that interrupted backups left behind; how many.
    fn remove_stale_backups(&self) -> usize;
}
