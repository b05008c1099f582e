//! The whole storage contract in memory: for tests, examples and trying an
//! embedding out. Nothing survives the process.
//!
//! Records use the same rules as every backend (the JSON stores' code without a
//! file, one store per perspective); mailboxes are a map by entry id with a
//! de-duplication index. [`Storage::commit_inbound`] runs under one lock and
//! keeps an undo log, so a group that fails leaves nothing behind — the same
//! all-or-nothing a database transaction gives.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

mod agents;

use super::contract::{
    AgentStore, InboundGroup, InboundTransaction, MailboxStore, OutboxStats, OutboxStore, Storage,
    StoreTransaction,
};
use super::keys::{concat, instant_part};
use super::{
    AgentSession, BoxFuture, Cursor, EnrollmentToken, IdentityStore, JsonIdentityStore,
    JsonTrustStore, Mailbox, MailboxEntry, MailboxQuery, NewTrustRecord, Page, PageRequest,
    Perspective, PreparedInboxEntry, QueryPage, RecordKind, StoreError, StoreResult, Timestamp,
    TrustPatch, TrustRecord, TrustStatus, TrustStore,
};

/// An in-memory [`Storage`]. Cloning gives another handle on the same data.
///
/// ```
/// use btps::store::{IdentityRecord, MemoryStorage, PublicKeyRecord, Storage, Timestamp};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), btps::store::StoreError> {
/// let storage = MemoryStorage::new();
/// let key = PublicKeyRecord {
///     selector: "btps1".to_owned(),
///     public_key: "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA".to_owned(),
///     key_type: "rsa".to_owned(),
///     version: "1.0.0".to_owned(),
///     created_at: Timestamp::now(),
///     source: None,
/// };
/// // Hosting an identity is having its record.
/// storage
///     .identities()
///     .create(IdentityRecord::new("finance$client.example", key, Timestamp::now()))
///     .await?;
/// let found = storage.identities().get_by_identity("Finance$Client.example").await?;
/// assert_eq!(found.map(|record| record.current_selector), Some("btps1".to_owned()));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct MemoryStorage {
    inner: Arc<Inner>,
}

struct Inner {
    trust: PerspectiveTrust,
    identities: JsonIdentityStore,
    mailboxes: MemoryMailboxes,
    agents: agents::MemoryAgents,
    /// Serialises inbound transactions and trust writes; counts them (the
    /// transaction generation). Shared with `trust`.
    transactions: Arc<Mutex<u64>>,
}

impl Default for Inner {
    fn default() -> Self {
        let trust = PerspectiveTrust::default();
        Inner {
            transactions: Arc::clone(&trust.transactions),
            trust,
            identities: JsonIdentityStore::in_memory(),
            mailboxes: MemoryMailboxes::default(),
            agents: agents::MemoryAgents::default(),
        }
    }
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStorage::default()
    }

    /// The mailboxes, with the in-memory store's synchronous helpers.
    pub fn memory_mailboxes(&self) -> &MemoryMailboxes {
        &self.inner.mailboxes
    }
}

impl std::fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStorage").finish_non_exhaustive()
    }
}

impl Storage for MemoryStorage {
    fn trust(&self) -> &dyn TrustStore {
        &self.inner.trust
    }

    fn identities(&self) -> &dyn IdentityStore {
        &self.inner.identities
    }

    fn mailboxes(&self) -> &dyn MailboxStore {
        &self.inner.mailboxes
    }

    fn agents(&self) -> Option<&dyn AgentStore> {
        Some(self)
    }

    fn outbox(&self) -> &dyn OutboxStore {
        &self.inner.mailboxes
    }

    fn commit_inbound(&self, group: &mut dyn InboundGroup) -> StoreResult<()> {
        let mut generation = lock(&self.inner.transactions);
        *generation += 1;
        let mut transaction = MemoryTransaction {
            storage: &self.inner,
            undo: Vec::new(),
            generation: *generation,
        };
        for index in 0..group.len() {
            if let Err(error) = group.apply(index, &mut transaction) {
                transaction.roll_back();
                return Err(error);
            }
        }
        Ok(())
    }

    fn transact(
        &self,
        _owner: &str,
        work: &mut dyn FnMut(&mut dyn StoreTransaction) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let mut generation = lock(&self.inner.transactions);
        *generation += 1;
        let mut transaction = MemoryTransaction {
            storage: &self.inner,
            undo: Vec::new(),
            generation: *generation,
        };
        let outcome = work(&mut transaction);
        if outcome.is_err() {
            transaction.roll_back();
        }
        outcome
    }
}

/// A poisoned lock only means a panic elsewhere; every change below is applied
/// whole or undone, so the data behind it is consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One change of a transaction, and how to take it back.
enum Undo {
    Trust {
        perspective: Perspective,
        id: String,
        /// Boxed: a trust record is large, and most undo entries are mailbox entries.
        before: Option<Box<TrustRecord>>,
    },
    Entry(u64),
    /// An entry changed or removed: how it was.
    EntryBefore(Box<MailboxEntry>),
    /// The tokens and sessions as they were before the first agent change.
    Agents(Box<agents::AgentState>),
}

struct MemoryTransaction<'s> {
    storage: &'s Inner,
    undo: Vec<Undo>,
    generation: u64,
}

impl MemoryTransaction<'_> {
    fn roll_back(self) {
        for change in self.undo.into_iter().rev() {
            match change {
                Undo::Trust {
                    perspective,
                    id,
                    before,
                } => {
                    // In memory a restore cannot fail (there is no file to write).
                    let _ = self
                        .storage
                        .trust
                        .side(perspective)
                        .restore_sync(&id, before.map(|record| *record));
                }
                Undo::Entry(entry_id) => self.storage.mailboxes.remove(entry_id),
                Undo::EntryBefore(entry) => self.storage.mailboxes.put(*entry),
                Undo::Agents(state) => self.storage.agents.restore(*state),
            }
        }
    }
}

impl InboundTransaction for MemoryTransaction<'_> {
    fn trust(&mut self, perspective: Perspective, id: &str) -> StoreResult<Option<TrustRecord>> {
        Ok(self.storage.trust.side(perspective).get_sync(id))
    }

    fn create_trust(
        &mut self,
        perspective: Perspective,
        record: NewTrustRecord,
    ) -> StoreResult<()> {
        let created = self
            .storage
            .trust
            .side(perspective)
            .create_sync(record, None)?;
        self.undo.push(Undo::Trust {
            perspective,
            id: created.id,
            before: None,
        });
        Ok(())
    }

    fn update_trust(
        &mut self,
        perspective: Perspective,
        id: &str,
        patch: TrustPatch,
    ) -> StoreResult<()> {
        let store = self.storage.trust.side(perspective);
        let before = store.get_sync(id).map(Box::new);
        store.update_sync(id, patch)?;
        self.undo.push(Undo::Trust {
            perspective,
            id: id.to_lowercase(),
            before,
        });
        Ok(())
    }

    fn is_hosted(&mut self, identity: &str) -> StoreResult<bool> {
        Ok(self
            .storage
            .identities
            .get_sync(&crate::identity::compute_id(identity))
            .is_some())
    }

    fn duplicate_of(&mut self, entry: &PreparedInboxEntry) -> StoreResult<Option<u64>> {
        Ok(self.storage.mailboxes.duplicate_of(entry))
    }

    fn insert_inbox(&mut self, entry: &PreparedInboxEntry) -> StoreResult<u64> {
        let entry_id = self.storage.mailboxes.insert(entry)?;
        self.undo.push(Undo::Entry(entry_id));
        Ok(entry_id)
    }

    fn generation(&self) -> Option<u64> {
        Some(self.generation)
    }
}

impl StoreTransaction for MemoryTransaction<'_> {
    fn trust(&mut self, perspective: Perspective, id: &str) -> StoreResult<Option<TrustRecord>> {
        Ok(self.storage.trust.side(perspective).get_sync(id))
    }

    fn create_trust(
        &mut self,
        perspective: Perspective,
        record: NewTrustRecord,
    ) -> StoreResult<TrustRecord> {
        let created = self
            .storage
            .trust
            .side(perspective)
            .create_sync(record, None)?;
        self.undo.push(Undo::Trust {
            perspective,
            id: created.id.clone(),
            before: None,
        });
        Ok(created)
    }

    fn update_trust(
        &mut self,
        perspective: Perspective,
        id: &str,
        patch: TrustPatch,
    ) -> StoreResult<TrustRecord> {
        let store = self.storage.trust.side(perspective);
        let before = store.get_sync(id).map(Box::new);
        let updated = store.update_sync(id, patch)?;
        self.undo.push(Undo::Trust {
            perspective,
            id: id.to_lowercase(),
            before,
        });
        Ok(updated)
    }

    fn delete_trust(&mut self, perspective: Perspective, id: &str) -> StoreResult<bool> {
        let store = self.storage.trust.side(perspective);
        let before = store.get_sync(id).map(Box::new);
        let deleted = store.delete_sync(id)?;
        if deleted {
            self.undo.push(Undo::Trust {
                perspective,
                id: id.to_lowercase(),
                before,
            });
        }
        Ok(deleted)
    }

    fn is_hosted(&mut self, identity: &str) -> StoreResult<bool> {
        InboundTransaction::is_hosted(self, identity)
    }

    fn entry(&mut self, entry_id: u64) -> StoreResult<Option<MailboxEntry>> {
        Ok(lock(&self.storage.mailboxes.state)
            .entries
            .get(&entry_id)
            .cloned())
    }

    fn insert_entry(&mut self, mut entry: MailboxEntry) -> StoreResult<u64> {
        let entry_id = {
            let mut state = lock(&self.storage.mailboxes.state);
            state.last_entry += 1;
            state.last_entry
        };
        entry.entry_id = entry_id;
        self.storage.mailboxes.put(entry);
        self.undo.push(Undo::Entry(entry_id));
        Ok(entry_id)
    }

    fn update_entry(&mut self, entry: &MailboxEntry) -> StoreResult<()> {
        let before =
            StoreTransaction::entry(self, entry.entry_id)?.ok_or_else(|| StoreError::NotFound {
                kind: RecordKind::MailboxEntry,
                id: entry.entry_id.to_string(),
            })?;
        self.storage.mailboxes.put(entry.clone());
        self.undo.push(Undo::EntryBefore(Box::new(before)));
        Ok(())
    }

    fn remove_entry(&mut self, entry_id: u64) -> StoreResult<Option<MailboxEntry>> {
        let before = StoreTransaction::entry(self, entry_id)?;
        if let Some(before) = &before {
            self.storage.mailboxes.remove(entry_id);
            self.undo.push(Undo::EntryBefore(Box::new(before.clone())));
        }
        Ok(before)
    }

    fn entries_by_artifact(
        &mut self,
        owner: &str,
        mailbox: Mailbox,
        artifact_id: &str,
    ) -> StoreResult<Vec<MailboxEntry>> {
        let owner = owner.to_lowercase();
        Ok(lock(&self.storage.mailboxes.state)
            .entries
            .values()
            .filter(|entry| {
                entry.mailbox == mailbox
                    && entry.artifact_id == artifact_id
                    && entry.owner.to_lowercase() == owner
            })
            .cloned()
            .collect())
    }

    fn enrollment_token(&mut self, key: &[u8; 32]) -> StoreResult<Option<EnrollmentToken>> {
        Ok(self.enrollment_token_of(key))
    }

    fn put_enrollment_token(&mut self, key: &[u8; 32], token: &EnrollmentToken) -> StoreResult<()> {
        self.put_token(key, token);
        Ok(())
    }

    fn delete_enrollment_token(&mut self, key: &[u8; 32]) -> StoreResult<bool> {
        Ok(self.delete_token(key))
    }

    fn session(&mut self, agent_id: &str) -> StoreResult<Option<AgentSession>> {
        Ok(self.session_of(agent_id))
    }

    fn put_session(&mut self, session: &AgentSession) -> StoreResult<()> {
        self.put_agent_session(session);
        Ok(())
    }

    fn delete_session(&mut self, agent_id: &str) -> StoreResult<bool> {
        Ok(self.delete_agent_session(agent_id))
    }
}

/// Trust records kept apart by perspective, as the appliance keeps them
/// (`spec/05-trust.md` §6.6).
///
/// Writes through [`TrustStore`] take the transaction lock and count as a
/// transaction, so that they never interleave with a group's and the committer's
/// trust cache sees them ([`InboundTransaction::generation`]).
struct PerspectiveTrust {
    inbound: JsonTrustStore,
    outbound: JsonTrustStore,
    transactions: Arc<Mutex<u64>>,
}

impl Default for PerspectiveTrust {
    fn default() -> Self {
        PerspectiveTrust {
            inbound: JsonTrustStore::in_memory(),
            outbound: JsonTrustStore::in_memory(),
            transactions: Arc::default(),
        }
    }
}

impl PerspectiveTrust {
    fn side(&self, perspective: Perspective) -> &JsonTrustStore {
        match perspective {
            Perspective::Inbound => &self.inbound,
            Perspective::Outbound => &self.outbound,
        }
    }

    /// Runs one trust write as a transaction of its own.
    fn write<'a, T: Send + 'a>(
        &self,
        work: impl FnOnce() -> StoreResult<T>,
    ) -> BoxFuture<'a, StoreResult<T>> {
        let mut transactions = lock(&self.transactions);
        *transactions += 1;
        ready(work())
    }
}

impl TrustStore for PerspectiveTrust {
    fn get<'a>(
        &'a self,
        perspective: Perspective,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<TrustRecord>>> {
        self.side(perspective).get(perspective, id)
    }

    fn create<'a>(
        &'a self,
        perspective: Perspective,
        record: NewTrustRecord,
        id: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<TrustRecord>> {
        let store = self.side(perspective);
        self.write(|| store.create_sync(record, id))
    }

    fn update<'a>(
        &'a self,
        perspective: Perspective,
        id: &'a str,
        patch: TrustPatch,
    ) -> BoxFuture<'a, StoreResult<TrustRecord>> {
        let store = self.side(perspective);
        self.write(|| store.update_sync(id, patch))
    }

    fn delete<'a>(
        &'a self,
        perspective: Perspective,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        let store = self.side(perspective);
        self.write(|| store.delete_sync(id))
    }

    fn list_by_receiver<'a>(
        &'a self,
        perspective: Perspective,
        receiver: &'a str,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        self.side(perspective)
            .list_by_receiver(perspective, receiver, page)
    }

    fn list_by_sender<'a>(
        &'a self,
        perspective: Perspective,
        sender: &'a str,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        self.side(perspective)
            .list_by_sender(perspective, sender, page)
    }

    fn list_by_status<'a>(
        &'a self,
        perspective: Perspective,
        status: &'a TrustStatus,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        self.side(perspective)
            .list_by_status(perspective, status, page)
    }

    fn list_expiring_before<'a>(
        &'a self,
        perspective: Perspective,
        before_millis: i64,
        status: Option<&'a TrustStatus>,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        self.side(perspective)
            .list_expiring_before(perspective, before_millis, status, page)
    }

    fn list_all<'a>(
        &'a self,
        perspective: Perspective,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        self.side(perspective).list_all(perspective, page)
    }

    fn count_by_status(
        &self,
        perspective: Perspective,
    ) -> BoxFuture<'_, StoreResult<BTreeMap<TrustStatus, u64>>> {
        self.side(perspective).count_by_status(perspective)
    }
}

/// Mailboxes in memory: entries by id, a de-duplication index, subscription
/// cursors.
#[derive(Default)]
pub struct MemoryMailboxes {
    state: Mutex<MailState>,
}

#[derive(Default)]
struct MailState {
    entries: BTreeMap<u64, MailboxEntry>,
    /// (lower-cased receiver, lower-cased sender, artifact id) → inbox entry.
    inbound: HashMap<(String, String, String), u64>,
    last_entry: u64,
    cursors: BTreeMap<String, u64>,
}

/// The length of a mailbox listing cursor: the instant, then the entry id.
const LISTING_CURSOR_LEN: usize = 16;

impl MemoryMailboxes {
    fn duplicate_of(&self, entry: &PreparedInboxEntry) -> Option<u64> {
        lock(&self.state).inbound.get(&dedup_key(entry)).copied()
    }

    fn insert(&self, prepared: &PreparedInboxEntry) -> StoreResult<u64> {
        let mut state = lock(&self.state);
        let entry_id = state.last_entry + 1;
        let entry = prepared.to_entry(entry_id)?;
        state.last_entry = entry_id;
        state.inbound.insert(dedup_key(prepared), entry_id);
        state.entries.insert(entry_id, entry);
        Ok(entry_id)
    }

    fn remove(&self, entry_id: u64) {
        let mut state = lock(&self.state);
        if let Some(entry) = state.entries.remove(&entry_id) {
            let key = (
                entry.to.to_lowercase(),
                entry.from.to_lowercase(),
                entry.artifact_id,
            );
            state.inbound.remove(&key);
        }
    }

    /// Stores `entry` under its id (replacing one with the same id), keeping the
    /// de-duplication index of inbox entries in step.
    fn put(&self, entry: MailboxEntry) {
        let mut state = lock(&self.state);
        if let Some(old) = state.entries.remove(&entry.entry_id) {
            let key = (
                old.to.to_lowercase(),
                old.from.to_lowercase(),
                old.artifact_id,
            );
            if state.inbound.get(&key) == Some(&old.entry_id) {
                state.inbound.remove(&key);
            }
        }
        if entry.mailbox == Mailbox::Inbox {
            let key = (
                entry.to.to_lowercase(),
                entry.from.to_lowercase(),
                entry.artifact_id.clone(),
            );
            state.inbound.insert(key, entry.entry_id);
        }
        state.last_entry = state.last_entry.max(entry.entry_id);
        state.entries.insert(entry.entry_id, entry);
    }

    /// The first entry of each (owner, receiver) queue in the outbox: the only
    /// ones the schedule offers.
    fn queue_heads(state: &MailState) -> Vec<&MailboxEntry> {
        let mut seen = std::collections::HashSet::new();
        state
            .entries
            .values()
            .filter(|entry| entry.mailbox == Mailbox::Outbox)
            .filter(|entry| seen.insert((entry.owner.to_lowercase(), entry.to.to_lowercase())))
            .collect()
    }

    /// Every entry, in entry-id order (for tests).
    pub fn all(&self) -> Vec<MailboxEntry> {
        lock(&self.state).entries.values().cloned().collect()
    }
}

fn dedup_key(entry: &PreparedInboxEntry) -> (String, String, String) {
    (
        entry.to_lowercase_receiver().to_owned(),
        entry.to_lowercase_sender().to_owned(),
        entry.artifact_id().to_owned(),
    )
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl OutboxStore for MemoryMailboxes {
    fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> BoxFuture<'_, StoreResult<Vec<MailboxEntry>>> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut state = lock(&self.state);
        let mut due: Vec<(i64, u64)> = Self::queue_heads(&state)
            .into_iter()
            .filter(|entry| entry.due_millis() <= now.millis())
            .map(|entry| (entry.due_millis(), entry.entry_id))
            .collect();
        due.sort_unstable();
        let mut claimed = Vec::new();
        for (_, entry_id) in due.into_iter().take(limit) {
            if let Some(entry) = state.entries.get_mut(&entry_id) {
                entry.meta.in_flight_until = Some(lease_until.clone());
                claimed.push(entry.clone());
            }
        }
        ready(Ok(claimed))
    }

    fn release_claims(&self, now: Timestamp) -> BoxFuture<'_, StoreResult<u64>> {
        let mut state = lock(&self.state);
        let mut released = 0;
        for entry in state.entries.values_mut() {
            if entry.mailbox == Mailbox::Outbox && entry.meta.in_flight_until.take().is_some() {
                entry.meta.next_attempt_at = Some(now.clone());
                released += 1;
            }
        }
        ready(Ok(released))
    }

    fn next_due(&self) -> BoxFuture<'_, StoreResult<Option<i64>>> {
        let state = lock(&self.state);
        let next = Self::queue_heads(&state)
            .into_iter()
            .map(MailboxEntry::due_millis)
            .min();
        ready(Ok(next))
    }

    fn list<'a>(
        &'a self,
        owner: Option<&'a str>,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<MailboxEntry>>> {
        let after = match &page.after {
            None => Ok(0),
            Some(cursor) => <[u8; 8]>::try_from(cursor.0.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::InvalidCursor),
        };
        let page = after.map(|after| {
            let owner = owner.map(str::to_lowercase);
            let state = lock(&self.state);
            let mut rest = state
                .entries
                .range(after.saturating_add(1)..)
                .map(|(_, entry)| entry)
                .filter(|entry| entry.mailbox == Mailbox::Outbox)
                .filter(|entry| {
                    owner
                        .as_deref()
                        .is_none_or(|owner| entry.owner.to_lowercase() == owner)
                });
            let items: Vec<MailboxEntry> = rest
                .by_ref()
                .take(page.effective_limit())
                .cloned()
                .collect();
            let next = if rest.next().is_some() {
                items
                    .last()
                    .map(|entry| Cursor(entry.entry_id.to_be_bytes().to_vec()))
            } else {
                None
            };
            Page { items, next }
        });
        ready(page)
    }

    fn stats(&self) -> BoxFuture<'_, StoreResult<OutboxStats>> {
        let state = lock(&self.state);
        let mut outbox = state
            .entries
            .values()
            .filter(|entry| entry.mailbox == Mailbox::Outbox);
        let oldest = outbox.next();
        let stats = OutboxStats {
            entries: u64::try_from(outbox.count() + usize::from(oldest.is_some()))
                .unwrap_or(u64::MAX),
            oldest_queued_at: oldest.and_then(|entry| entry.meta.queued_at.clone()),
        };
        ready(Ok(stats))
    }
}

impl MailboxStore for MemoryMailboxes {
    fn entry(&self, entry_id: u64) -> BoxFuture<'_, StoreResult<Option<MailboxEntry>>> {
        ready(Ok(lock(&self.state).entries.get(&entry_id).cloned()))
    }

    fn list<'a>(
        &'a self,
        owner: &'a str,
        mailbox: Mailbox,
        page: PageRequest,
        newest_first: bool,
    ) -> BoxFuture<'a, StoreResult<Page<MailboxEntry>>> {
        let owner = owner.to_lowercase();
        let state = lock(&self.state);
        let mut keyed: Vec<(Vec<u8>, &MailboxEntry)> = state
            .entries
            .values()
            .filter(|entry| entry.mailbox == mailbox && entry.owner.to_lowercase() == owner)
            .map(|entry| {
                let key = concat(&[
                    &instant_part(entry.at_millis),
                    &entry.entry_id.to_be_bytes(),
                ]);
                (key, entry)
            })
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        if newest_first {
            keyed.reverse();
        }
        let page = match &page.after {
            Some(cursor) if cursor.0.len() != LISTING_CURSOR_LEN => Err(StoreError::InvalidCursor),
            _ => {
                let limit = page.effective_limit();
                let mut rest = keyed.into_iter().filter(|(key, _)| match &page.after {
                    None => true,
                    Some(cursor) if newest_first => *key < cursor.0,
                    Some(cursor) => *key > cursor.0,
                });
                let chosen: Vec<_> = rest.by_ref().take(limit).collect();
                let next = if rest.next().is_some() {
                    chosen.last().map(|(key, _)| Cursor(key.clone()))
                } else {
                    None
                };
                Ok(Page {
                    items: chosen.into_iter().map(|(_, entry)| entry.clone()).collect(),
                    next,
                })
            }
        };
        ready(page)
    }

    fn count<'a>(&'a self, owner: &'a str, mailbox: Mailbox) -> BoxFuture<'a, StoreResult<u64>> {
        let owner = owner.to_lowercase();
        let count = lock(&self.state)
            .entries
            .values()
            .filter(|entry| entry.mailbox == mailbox && entry.owner.to_lowercase() == owner)
            .count();
        ready(Ok(u64::try_from(count).unwrap_or(u64::MAX)))
    }

    fn inbox_after(&self, after: u64, limit: u32) -> BoxFuture<'_, StoreResult<Vec<MailboxEntry>>> {
        let limit = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
        let entries = lock(&self.state)
            .entries
            .range(after.saturating_add(1)..)
            .map(|(_, entry)| entry)
            .filter(|entry| entry.mailbox == Mailbox::Inbox)
            .take(limit)
            .cloned()
            .collect();
        ready(Ok(entries))
    }

    fn cursor<'a>(&'a self, name: &'a str) -> BoxFuture<'a, StoreResult<u64>> {
        ready(Ok(lock(&self.state)
            .cursors
            .get(name)
            .copied()
            .unwrap_or(0)))
    }

    fn set_cursor<'a>(&'a self, name: &'a str, entry_id: u64) -> BoxFuture<'a, StoreResult<()>> {
        lock(&self.state).cursors.insert(name.to_owned(), entry_id);
        ready(Ok(()))
    }

    fn query<'a>(
        &'a self,
        owner: &'a str,
        mailbox: Mailbox,
        query: &'a MailboxQuery,
    ) -> BoxFuture<'a, StoreResult<QueryPage>> {
        let owner = owner.to_lowercase();
        let state = lock(&self.state);
        let mut entries: Vec<&MailboxEntry> = state
            .entries
            .values()
            .filter(|entry| entry.mailbox == mailbox && entry.owner.to_lowercase() == owner)
            .collect();
        entries.sort_by_key(|entry| (entry.at_millis, entry.entry_id));
        ready(Ok(crate::model::run_query(entries.into_iter(), query)))
    }
}
