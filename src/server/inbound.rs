//! Accepting a verified transporter artifact: the duplicate check, the trust check and
//! the record changes it leads to, and the inbox entry — all in one redb write
//! transaction, committed before the server answers (README decision 2).
//!
//! The checks run inside the write transaction, so that two connections racing on the
//! same record see a consistent order; a transaction that stored nothing (only
//! duplicates and refusals) is aborted instead of committed and costs no disk write.

use crate::identity::{Identity, compute_id, compute_trust_id};
use crate::protocol::json::Value;
use crate::protocol::{ProtocolError, TransporterType};
use crate::server::trust::{self, Decision, RequestTerms, TrustPolicy, VerifyingKey};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::store::{
    IdentityRecord, InboxWriter, JsonIdentityStore, JsonTrustStore, NewTrustRecord, Perspective,
    PreparedInboxEntry, RedbStore, StoreError, Timestamp, TrustPatch, TrustRecord, TrustStatus,
    WriteBatch,
};

/// A transporter artifact whose signature has verified, ready to be accepted.
#[derive(Clone, Debug)]
pub struct VerifiedArtifact {
    /// `type`.
    pub kind: TransporterType,
    /// The sender's artifact id.
    pub id: String,
    /// The sender.
    pub from: Identity,
    /// The receiver (hosted here).
    pub to: Identity,
    /// What the server reads from the document (nothing when it is encrypted).
    pub content: Content,
    /// Whether the document is encrypted.
    pub encrypted: bool,
    /// The key that verified it.
    pub key: VerifyingKey,
    /// Its inbox entry (the exact bytes of the line, the time it was received, the
    /// peer's address), encoded on the connection's thread.
    pub entry: PreparedInboxEntry,
    /// The id of the trust record the trust check reads (see
    /// [`VerifiedArtifact::checked_trust_id`]), computed on the connection's thread.
    pub trust_id: String,
}

impl VerifiedArtifact {
    /// The id of the trust record the trust check reads: the receiving-side record
    /// for TRUST_REQ and BTPS_DOC, the requesting-side record of the original request
    /// (the flipped id) for TRUST_RES (`spec/05-trust.md` §5.3, §6.6).
    pub fn checked_trust_id(kind: TransporterType, from: &Identity, to: &Identity) -> String {
        match kind {
            TransporterType::TrustResponse => compute_trust_id(to.as_str(), from.as_str()),
            _ => compute_trust_id(from.as_str(), to.as_str()),
        }
    }

    /// The perspective of the record named by `trust_id`: outbound (the requesting
    /// side) for TRUST_RES, inbound otherwise.
    fn checked_perspective(&self) -> Perspective {
        match self.kind {
            TransporterType::TrustResponse => Perspective::Outbound,
            _ => Perspective::Inbound,
        }
    }
}

/// The parts of a plain document that accepting an artifact reads, taken out on the
/// connection's thread so that the document itself never travels to the committer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Content {
    /// The inbox entry's searchable title.
    pub title: Option<String>,
    /// The terms of a plain trust request.
    pub terms: Option<RequestTerms>,
    /// The decision of a plain trust response.
    pub decision: Option<Decision>,
}

impl Content {
    /// Reads what matters of the document of an artifact of type `kind` (`None`:
    /// the document is encrypted).
    pub fn read(kind: TransporterType, plain_document: Option<&Value>) -> Self {
        let Some(document) = plain_document else {
            return Content::default();
        };
        let text = |key: &str| document.as_object().and_then(|object| object.str(key));
        match kind {
            TransporterType::Document => Content {
                title: text("title").map(str::to_owned),
                ..Content::default()
            },
            TransporterType::TrustRequest => Content {
                title: text("name").map(|name| format!("Trust request from {name}")),
                terms: Some(RequestTerms::from_document(document)),
                decision: None,
            },
            TransporterType::TrustResponse => Content {
                title: text("decision").map(|decision| format!("Trust {decision}")),
                terms: None,
                decision: Decision::from_document(document),
            },
        }
    }
}

/// What happened to an accepted artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Stored as a new inbox entry.
    Stored {
        /// The new entry.
        entry_id: u64,
    },
    /// The same (receiver, sender, id) was stored before: acknowledged again, not stored.
    Duplicate {
        /// The earlier entry.
        entry_id: u64,
    },
}

/// Why an artifact was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// Refused by the trust rules (answered with the protocol error).
    #[error("{0}")]
    Refused(ProtocolError),
    /// The database failed; nothing was committed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where trust and identity records live. Inboxes are always in the redb file.
#[derive(Clone)]
pub enum RecordSource {
    /// In the redb file, changed in the same transaction as the inbox entry (the default).
    Redb,
    /// In the reference's JSON files (`STORAGE_TYPE=json`), for running beside or
    /// migrating from a reference deployment. The file has no perspectives (one
    /// record per id, as the reference keeps it); its changes are written before the
    /// inbox entry is committed, under one lock, so they are not atomic with it.
    Json {
        /// The trust file.
        trust: JsonTrustStore,
        /// The identity file.
        identities: JsonIdentityStore,
        /// Serialises check-and-change on the files.
        lock: Arc<Mutex<()>>,
    },
}

impl RecordSource {
    /// JSON files as the record source.
    pub fn json(trust: JsonTrustStore, identities: JsonIdentityStore) -> Self {
        RecordSource::Json {
            trust,
            identities,
            lock: Arc::default(),
        }
    }

    /// The identity record of `identity` if it is hosted here. Blocking.
    pub fn hosted(
        &self,
        store: &RedbStore,
        identity: &str,
    ) -> Result<Option<IdentityRecord>, StoreError> {
        match self {
            RecordSource::Redb => store.read(|snapshot| snapshot.identity_by_name(identity)),
            RecordSource::Json { identities, .. } => Ok(identities.get_sync(&compute_id(identity))),
        }
    }

    /// A trust record. Blocking.
    pub fn trust(
        &self,
        store: &RedbStore,
        perspective: Perspective,
        id: &str,
    ) -> Result<Option<TrustRecord>, StoreError> {
        match self {
            RecordSource::Redb => store.trust(perspective, id),
            RecordSource::Json { trust, .. } => Ok(trust.get_sync(id)),
        }
    }
}

/// The trust and identity records the accept step reads and changes.
trait Records {
    fn trust(&self, perspective: Perspective, id: &str) -> Result<Option<TrustRecord>, StoreError>;
    fn create_trust(
        &mut self,
        perspective: Perspective,
        record: NewTrustRecord,
    ) -> Result<(), StoreError>;
    fn update_trust(
        &mut self,
        perspective: Perspective,
        id: &str,
        patch: TrustPatch,
    ) -> Result<(), StoreError>;
    fn is_hosted(&self, identity: &Identity) -> Result<bool, StoreError>;
}

impl Records for WriteBatch<'_> {
    fn trust(&self, perspective: Perspective, id: &str) -> Result<Option<TrustRecord>, StoreError> {
        WriteBatch::trust(self, perspective, id)
    }

    fn create_trust(
        &mut self,
        perspective: Perspective,
        record: NewTrustRecord,
    ) -> Result<(), StoreError> {
        WriteBatch::create_trust(self, perspective, record, None).map(drop)
    }

    fn update_trust(
        &mut self,
        perspective: Perspective,
        id: &str,
        patch: TrustPatch,
    ) -> Result<(), StoreError> {
        WriteBatch::update_trust(self, perspective, id, patch).map(drop)
    }

    fn is_hosted(&self, identity: &Identity) -> Result<bool, StoreError> {
        Ok(self.identity(&compute_id(identity.as_str()))?.is_some())
    }
}

/// A group's batch, noting whether an artifact wrote trust records (every write goes
/// through [`Records`]), so that the trust cache learns it from the writes themselves.
struct NotingWrites<'b, 't> {
    batch: &'b mut WriteBatch<'t>,
    wrote: bool,
}

impl Records for NotingWrites<'_, '_> {
    fn trust(&self, perspective: Perspective, id: &str) -> Result<Option<TrustRecord>, StoreError> {
        Records::trust(&*self.batch, perspective, id)
    }

    fn create_trust(
        &mut self,
        perspective: Perspective,
        record: NewTrustRecord,
    ) -> Result<(), StoreError> {
        self.wrote = true;
        Records::create_trust(self.batch, perspective, record)
    }

    fn update_trust(
        &mut self,
        perspective: Perspective,
        id: &str,
        patch: TrustPatch,
    ) -> Result<(), StoreError> {
        self.wrote = true;
        Records::update_trust(self.batch, perspective, id, patch)
    }

    fn is_hosted(&self, identity: &Identity) -> Result<bool, StoreError> {
        Records::is_hosted(&*self.batch, identity)
    }
}

/// The reference's files: one record per id, whatever the perspective.
struct JsonRecords<'a> {
    trust: &'a JsonTrustStore,
    identities: &'a JsonIdentityStore,
}

impl Records for JsonRecords<'_> {
    fn trust(
        &self,
        _perspective: Perspective,
        id: &str,
    ) -> Result<Option<TrustRecord>, StoreError> {
        Ok(self.trust.get_sync(id))
    }

    fn create_trust(
        &mut self,
        _perspective: Perspective,
        record: NewTrustRecord,
    ) -> Result<(), StoreError> {
        match self.trust.create_sync(record, None) {
            // Both perspectives share the file's one record.
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    fn update_trust(
        &mut self,
        _perspective: Perspective,
        id: &str,
        patch: TrustPatch,
    ) -> Result<(), StoreError> {
        self.trust.update_sync(id, patch).map(drop)
    }

    fn is_hosted(&self, identity: &Identity) -> Result<bool, StoreError> {
        Ok(self
            .identities
            .get_sync(&compute_id(identity.as_str()))
            .is_some())
    }
}

/// Runs the duplicate check, the trust check and the changes for `artifact`, and
/// commits them with the inbox entry. Blocking: call it from a blocking thread.
pub fn accept(
    store: &RedbStore,
    source: &RecordSource,
    artifact: &VerifiedArtifact,
    policy: &TrustPolicy,
) -> Result<Accepted, AcceptError> {
    match source {
        RecordSource::Redb => accept_in_redb(store, artifact, policy),
        RecordSource::Json {
            trust,
            identities,
            lock,
        } => {
            // A poisoned lock only means a panic elsewhere; the files are consistent
            // because every change is written whole.
            let _guard = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Timestamp::now();
            if let Some(entry_id) = store.read(|snapshot| {
                snapshot.inbound_duplicate(
                    artifact.to.as_str(),
                    artifact.from.as_str(),
                    &artifact.id,
                )
            })? {
                return Ok(Accepted::Duplicate { entry_id });
            }
            let mut records = JsonRecords { trust, identities };
            let record = records.trust(artifact.checked_perspective(), &artifact.trust_id)?;
            check(artifact, record.as_ref(), &now, policy).map_err(AcceptError::Refused)?;
            apply(&mut records, artifact, record.as_ref(), &now, policy)?;
            let entry_id = store.write(|batch| {
                batch.with_inbox(|_, inbox| inbox.insert_prepared(&artifact.entry))
            })?;
            Ok(Accepted::Stored { entry_id })
        }
    }
}

fn accept_in_redb(
    store: &RedbStore,
    artifact: &VerifiedArtifact,
    policy: &TrustPolicy,
) -> Result<Accepted, AcceptError> {
    let now = Timestamp::now();
    let mut outcomes = accept_all(store, &[artifact], &now, policy, &mut TrustCache::default())?;
    match outcomes.pop() {
        Some(outcome) => outcome.map_err(AcceptError::Refused),
        None => Err(AcceptError::Store(StoreError::TaskFailed(
            "no outcome for the artifact".to_owned(),
        ))),
    }
}

/// Accepts `artifacts` in order in one write transaction (the mailbox tables opened
/// once), committed only if one of them was stored. One outcome per artifact.
/// Documents' trust records come from `cache` when it is still valid.
fn accept_all(
    store: &RedbStore,
    artifacts: &[&VerifiedArtifact],
    now: &Timestamp,
    policy: &TrustPolicy,
    cache: &mut TrustCache,
) -> Result<Vec<Result<Accepted, ProtocolError>>, StoreError> {
    let started = crate::metrics::timer();
    let written = store.write_if_changed(|batch| {
        let mut trust = cache.begin(store);
        let outcomes = batch.with_inbox(|batch, inbox| {
            artifacts
                .iter()
                .map(|artifact| accept_one(batch, inbox, &mut trust, artifact, now, policy))
                .collect::<Result<Vec<_>, _>>()
        })?;
        let stored = outcomes
            .iter()
            .any(|outcome| matches!(outcome, Ok(Accepted::Stored { .. })));
        Ok((outcomes, stored))
    });
    // Failed transactions are timed too: a slow failing disk shows in the histogram.
    crate::metrics::committed(started);
    written
}

/// The duplicate check, the trust check, the record changes and the inbox entry of
/// one artifact, inside a write transaction. A refusal changes nothing.
fn accept_one(
    batch: &mut WriteBatch<'_>,
    inbox: &mut InboxWriter<'_>,
    trust: &mut GroupTrust<'_>,
    artifact: &VerifiedArtifact,
    now: &Timestamp,
    policy: &TrustPolicy,
) -> Result<Result<Accepted, ProtocolError>, StoreError> {
    if let Some(entry_id) = inbox.duplicate_of(&artifact.entry)? {
        return Ok(Ok(Accepted::Duplicate { entry_id }));
    }
    let record = trust.record(batch, artifact)?;
    if let Err(refusal) = check(artifact, record.as_deref(), now, policy) {
        return Ok(Err(refusal));
    }
    let mut records = NotingWrites {
        batch,
        wrote: false,
    };
    apply(&mut records, artifact, record.as_deref(), now, policy)?;
    if records.wrote {
        trust.changed();
    }
    let entry_id = inbox.insert_prepared(&artifact.entry)?;
    Ok(Ok(Accepted::Stored { entry_id }))
}

/// Most records the committer keeps between groups (a record is well under 1 KB).
const TRUST_CACHE_CAPACITY: usize = 4096;

/// Inbound trust records the committer read in earlier groups, for the documents of
/// later ones: the record read per document was ~6 % of the committer's time.
///
/// The records are the committed ones, and they stay valid only while nothing else
/// writes: each group compares the store's count of write transactions
/// ([`RedbStore::write_transactions`]) with the count during the previous group, and
/// starts empty if any other write transaction began in between — an operator's
/// trust change, an import, a sweep, a failed group retried one by one. Within a group,
/// an artifact that changes trust records empties the cache, and the rest of the
/// group neither reads from nor adds to it (what it would read is not committed yet).
#[derive(Debug, Default)]
struct TrustCache {
    /// The store's write-transaction count during the last group that used it.
    seen: u64,
    /// By trust id (inbound perspective); `None`: no record (the sender is refused).
    records: HashMap<String, Option<Arc<TrustRecord>>>,
}

impl TrustCache {
    /// Starts a group's use of the cache, inside its write transaction.
    fn begin(&mut self, store: &RedbStore) -> GroupTrust<'_> {
        let now = store.write_transactions();
        if self.seen.checked_add(1) != Some(now) {
            self.records.clear();
        }
        self.seen = now;
        GroupTrust {
            cache: self,
            open: true,
        }
    }
}

/// The trust cache as one group uses it.
struct GroupTrust<'c> {
    cache: &'c mut TrustCache,
    /// False once an artifact of this group changed trust records.
    open: bool,
}

impl GroupTrust<'_> {
    /// The record `artifact` is checked against.
    fn record(
        &mut self,
        batch: &WriteBatch<'_>,
        artifact: &VerifiedArtifact,
    ) -> Result<Option<Arc<TrustRecord>>, StoreError> {
        let id = &artifact.trust_id;
        let cacheable = self.open && artifact.kind == TransporterType::Document;
        if cacheable && let Some(record) = self.cache.records.get(id) {
            return Ok(record.clone());
        }
        let record = Records::trust(batch, artifact.checked_perspective(), id)?.map(Arc::new);
        if cacheable {
            if self.cache.records.len() >= TRUST_CACHE_CAPACITY {
                self.cache.records.clear();
            }
            self.cache.records.insert(id.clone(), record.clone());
        }
        Ok(record)
    }

    /// Called once an artifact of the group has written trust records: what the
    /// cache holds may be stale, and what the group would read is not committed yet.
    fn changed(&mut self) {
        self.open = false;
        self.cache.records.clear();
    }
}

/// The largest number of artifacts one group commit takes.
const MAX_GROUP: usize = 256;

/// An answer, with the artifact handed back so that it is freed on the connection's
/// thread that allocated it rather than on the committer's (freeing another
/// thread's memory is the allocator's slow path, and the committer is the serial
/// stage).
type Answer = (Result<Accepted, AcceptError>, VerifiedArtifact);

struct Job {
    artifact: VerifiedArtifact,
    reply: tokio::sync::oneshot::Sender<Answer>,
}

/// Group commit: artifacts accepted on all connections at about the same time share
/// one durable write transaction, so the cost of a commit (an fsync) is paid once per
/// group instead of once per artifact. Every artifact still gets its answer only
/// after the transaction holding it has committed (README decision 2).
///
/// A dedicated thread owns the write side: it takes the first waiting artifact, adds
/// whatever else is waiting (up to [`MAX_GROUP`]), runs the duplicate and trust checks
/// of all of them inside one write transaction, stores the accepted ones, and answers
/// every artifact after the commit (a group that stored nothing is aborted instead).
/// If the transaction fails, each artifact of the group is retried on its own, so one
/// bad artifact cannot fail the others. Everything that needs no transaction (the
/// encoded inbox entry, the trust id) is prepared beforehand on the connection's
/// thread, and by default the connection threads leave this thread a core
/// (`limits.worker_threads`). The thread runs at a lower priority
/// (`limits.committer_nice`): when the cores are all busy the connection threads go
/// first, more artifacts wait meanwhile, and the larger groups cost less CPU per
/// artifact (the fixed cost of a commit is paid by more of them).
pub struct Committer {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Committer {
    /// Closes the queue and waits for the thread, so that its handle on the database
    /// is gone when the committer is: a server that stops closes its database cleanly.
    fn drop(&mut self) {
        let (closed, _) = tokio::sync::mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.jobs, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Committer {
    /// Starts the committer thread for `store`. Dropping the committer stops the
    /// thread once the artifacts already queued are committed.
    /// Its thread is scheduled `nice` steps (0–19) below the calling thread.
    pub fn start(store: RedbStore, policy: TrustPolicy, nice: u8) -> std::io::Result<Committer> {
        let (jobs, mut queue) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("btps-committer".to_owned())
            .spawn(move || {
                if let Err(error) = lower_thread_priority(nice) {
                    tracing::warn!(%error, nice, "could not lower the group-commit thread's priority");
                }
                let mut cache = TrustCache::default();
                while let Some(first) = queue.blocking_recv() {
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match queue.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    // redb may panic on a page damaged outside it (the file is not
                    // read whole at open). The group's artifacts are then answered with
                    // an internal error (their reply channels drop) and the thread
                    // goes on serving the next group.
                    let size = group.len();
                    let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        commit_group(&store, &policy, &mut cache, group);
                    }));
                    if committed.is_err() {
                        tracing::error!(
                            size,
                            "committing a group failed inside the database; its artifacts were answered with an internal error (a retry is de-duplicated)"
                        );
                    }
                }
            })?;
        Ok(Committer {
            jobs,
            thread: Some(thread),
        })
    }

    /// Accepts one verified artifact; resolves after its transaction has committed.
    pub async fn accept(&self, artifact: VerifiedArtifact) -> Result<Accepted, AcceptError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let closed =
            || AcceptError::Store(StoreError::TaskFailed("the committer stopped".to_owned()));
        self.jobs
            .send(Job { artifact, reply })
            .map_err(|_| closed())?;
        let (outcome, artifact) = answer.await.map_err(|_| {
            AcceptError::Store(StoreError::TaskFailed(
                "the group commit holding the artifact failed".to_owned(),
            ))
        })?;
        drop(artifact);
        outcome
    }
}

/// Adds `by` to the calling thread's nice value (capped at 19). On Linux a thread id
/// given to `setpriority(PRIO_PROCESS, …)` names that one thread.
#[cfg(target_os = "linux")]
fn lower_thread_priority(by: u8) -> std::io::Result<()> {
    if by == 0 {
        return Ok(());
    }
    let thread = Some(rustix::thread::gettid());
    let current = rustix::process::getpriority_process(thread)?;
    rustix::process::setpriority_process(thread, (current + i32::from(by)).min(19))?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn lower_thread_priority(_by: u8) -> std::io::Result<()> {
    Ok(())
}

fn commit_group(store: &RedbStore, policy: &TrustPolicy, cache: &mut TrustCache, group: Vec<Job>) {
    let now = Timestamp::now();
    let artifacts: Vec<&VerifiedArtifact> = group.iter().map(|job| &job.artifact).collect();
    let outcomes = accept_all(store, &artifacts, &now, policy, cache);
    drop(artifacts);
    match outcomes {
        Ok(outcomes) => {
            for (job, outcome) in group.into_iter().zip(outcomes) {
                let outcome = outcome.map_err(AcceptError::Refused);
                let _ = job.reply.send((outcome, job.artifact));
            }
        }
        Err(error) => {
            tracing::warn!(error = %error, size = group.len(), "group commit failed; committing one by one");
            for job in group {
                let outcome = accept_in_redb(store, &job.artifact, policy);
                let _ = job.reply.send((outcome, job.artifact));
            }
        }
    }
}

fn check(
    artifact: &VerifiedArtifact,
    record: Option<&TrustRecord>,
    now: &Timestamp,
    policy: &TrustPolicy,
) -> Result<(), ProtocolError> {
    match artifact.kind {
        TransporterType::TrustRequest => trust::check_trust_request(record, now),
        TransporterType::TrustResponse => {
            trust::check_trust_response(record, artifact.from.as_str())
        }
        TransporterType::Document => trust::check_document(record, now, artifact.encrypted, policy),
    }
}

/// Updates `id` in `perspective` with `patch` unless the patch is empty.
fn update(
    batch: &mut impl Records,
    perspective: Perspective,
    id: &str,
    patch: TrustPatch,
) -> Result<(), StoreError> {
    if !trust::is_empty(&patch) {
        batch.update_trust(perspective, id, patch)?;
    }
    Ok(())
}

fn apply(
    batch: &mut impl Records,
    artifact: &VerifiedArtifact,
    record: Option<&TrustRecord>,
    now: &Timestamp,
    policy: &TrustPolicy,
) -> Result<(), StoreError> {
    let (from, to) = (artifact.from.as_str(), artifact.to.as_str());
    match artifact.kind {
        TransporterType::TrustRequest => {
            let terms = artifact.content.terms.clone().unwrap_or_default();
            let id = artifact.trust_id.clone();
            match record {
                None => {
                    let new = trust::new_request_record(
                        from,
                        to,
                        &artifact.id,
                        &terms,
                        &artifact.key,
                        now,
                        policy,
                    );
                    batch.create_trust(Perspective::Inbound, new)?;
                }
                Some(record) => {
                    let patch = trust::renew_request_patch(
                        record,
                        &artifact.id,
                        &terms,
                        &artifact.key,
                        now,
                        policy,
                    );
                    update(batch, Perspective::Inbound, &id, patch)?;
                }
            }
            // Both parties hosted here: keep the requesting side's record in step
            // (`spec/05-trust.md` §6.6), so that the answer can be accepted later.
            if batch.is_hosted(&artifact.from)? {
                // The counterpart's key is unknown until its answer arrives.
                let counterpart = VerifyingKey {
                    base64: String::new(),
                    fingerprint: String::new(),
                    delegated_by: None,
                };
                match batch.trust(Perspective::Outbound, &id)? {
                    None => {
                        let mut new = trust::new_request_record(
                            from,
                            to,
                            &artifact.id,
                            &terms,
                            &counterpart,
                            now,
                            policy,
                        );
                        new.retry_after_date = None;
                        batch.create_trust(Perspective::Outbound, new)?;
                    }
                    Some(_) => {
                        let patch = TrustPatch {
                            status: Some(TrustStatus::Pending),
                            decided_by: Some("system".to_owned()),
                            decided_at: Some(now.clone()),
                            expires_at: Some(terms.expires_at.clone()),
                            privacy_type: Some(
                                terms
                                    .privacy_type
                                    .unwrap_or_else(|| policy.default_privacy.clone()),
                            ),
                            ..TrustPatch::default()
                        };
                        update(batch, Perspective::Outbound, &id, patch)?;
                    }
                }
            }
        }
        TransporterType::TrustResponse => {
            // The original request went from `to` (hosted) to `from`.
            let id = artifact.trust_id.clone();
            let Some(record) = record else { return Ok(()) };
            let mut patch = trust::key_patch(record, &artifact.key, now);
            // An encrypted decision cannot be read here: the record stays pending
            // until the owner applies it (`spec/05-trust.md` §6.2).
            let decision = artifact.content.decision.clone();
            if let Some(decision) = &decision {
                let decided = decision.patch();
                patch.status = decided.status;
                patch.decided_by = decided.decided_by;
                patch.decided_at = decided.decided_at;
                patch.expires_at = decided.expires_at;
                patch.retry_after_date = decided.retry_after_date;
                patch.privacy_type = decided.privacy_type;
            }
            update(batch, Perspective::Outbound, &id, patch)?;
            if let Some(decision) = decision
                && batch.is_hosted(&artifact.from)?
                && batch.trust(Perspective::Inbound, &id)?.is_some()
            {
                update(batch, Perspective::Inbound, &id, decision.patch())?;
            }
        }
        TransporterType::Document => {
            if let Some(record) = record {
                let patch = trust::key_patch(record, &artifact.key, now);
                update(batch, Perspective::Inbound, &artifact.trust_id, patch)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;
    use crate::store::{NewInboxEntry, PublicKeyRecord, RedbOptions};

    /// Asks for trust, then sends documents.
    const VENDOR: &str = "billing$vendor.test";
    /// Answers the request; receives the documents.
    const CLIENT: &str = "finance$client.test";

    fn store_hosting_both(dir: &std::path::Path) -> RedbStore {
        let store = RedbStore::open(&dir.join("btps.redb"), &RedbOptions::default()).unwrap();
        for identity in [VENDOR, CLIENT] {
            let key = PublicKeyRecord {
                selector: "btps1".to_owned(),
                public_key: String::new(),
                key_type: "rsa".to_owned(),
                version: "1.0.0".to_owned(),
                created_at: Timestamp::now(),
                source: None,
            };
            store
                .create_identity(IdentityRecord::new(identity, key, Timestamp::now()))
                .unwrap();
        }
        store
    }

    /// A verified artifact as the connection thread hands it over.
    fn artifact(
        kind: TransporterType,
        id: &str,
        from: &str,
        to: &str,
        document: &str,
    ) -> VerifiedArtifact {
        let from = Identity::parse(from).unwrap();
        let to = Identity::parse(to).unwrap();
        let document = crate::protocol::json::parse(document).unwrap();
        let entry = NewInboxEntry {
            owner: to.as_str().to_owned(),
            artifact_id: id.to_owned(),
            artifact_type: kind.as_str().to_owned(),
            from: from.as_str().to_owned(),
            to: to.as_str().to_owned(),
            title: None,
            raw: format!(r#"{{"id":"{id}"}}"#).into_bytes(),
            received_at: Timestamp::now(),
            remote_address: None,
        }
        .prepare()
        .unwrap();
        VerifiedArtifact {
            trust_id: VerifiedArtifact::checked_trust_id(kind, &from, &to),
            kind,
            id: id.to_owned(),
            from,
            to,
            content: Content::read(kind, Some(&document)),
            encrypted: false,
            key: VerifyingKey {
                base64: "a2V5".to_owned(),
                fingerprint: "Zmlu".to_owned(),
                delegated_by: None,
            },
            entry,
        }
    }

    /// The committer keeps the trust records its documents were checked against
    /// between artifacts; an artifact of the same group that writes trust records
    /// must empty that cache, or a later document of the group is checked against
    /// the record as it was before.
    #[test]
    fn a_document_after_a_trust_answer_in_its_group_sees_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_hosting_both(dir.path());
        let policy = TrustPolicy::default();
        let mut cache = TrustCache::default();
        let now = Timestamp::now();
        let request = artifact(
            TransporterType::TrustRequest,
            "request-1",
            VENDOR,
            CLIENT,
            r#"{"id":"request-1","name":"Vendor"}"#,
        );
        let outcomes = accept_all(&store, &[&request], &now, &policy, &mut cache).unwrap();
        assert!(
            matches!(outcomes[0], Ok(Accepted::Stored { .. })),
            "{outcomes:?}"
        );

        // One group: a document while trust is pending, the client's acceptance,
        // and a document after it.
        let invoice = |id: &str| {
            artifact(
                TransporterType::Document,
                id,
                VENDOR,
                CLIENT,
                r#"{"title":"Invoice"}"#,
            )
        };
        let before = invoice("invoice-1");
        let answer = artifact(
            TransporterType::TrustResponse,
            "response-1",
            CLIENT,
            VENDOR,
            r#"{"decision":"accepted","decidedBy":"finance$client.test","decidedAt":"2026-01-01T00:00:00.000Z"}"#,
        );
        let after = invoice("invoice-2");
        let outcomes = accept_all(
            &store,
            &[&before, &answer, &after],
            &now,
            &policy,
            &mut cache,
        )
        .unwrap();
        assert!(
            matches!(&outcomes[0], Err(refusal) if refusal.code == ErrorCode::TrustNonExistent),
            "{outcomes:?}"
        );
        assert!(
            matches!(outcomes[1], Ok(Accepted::Stored { .. })),
            "{outcomes:?}"
        );
        assert!(
            matches!(outcomes[2], Ok(Accepted::Stored { .. })),
            "the document after the acceptance was checked against the pending record: {outcomes:?}"
        );
    }
}
