//! Group commit: artifacts accepted on all connections at about the same time share
//! one transaction of the storage backend.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Notify;

use crate::protocol::{ProtocolError, TransporterType};
use crate::server::trust::TrustPolicy;
use crate::store::{
    InboundGroup, InboundTransaction, Storage, StoreError, StoreResult, Timestamp, TrustRecord,
};

use super::rules::{self, NotingWrites};
use super::{AcceptError, Accepted, VerifiedArtifact};

/// Most records the committer keeps between groups (a record is well under 1 KB).
const TRUST_CACHE_CAPACITY: usize = 4096;

/// Inbound trust records the committer read in earlier groups, for the documents of
/// later ones: the record read per document was ~6 % of the committer's time.
///
/// The records are the committed ones, and they stay valid only while nothing else
/// writes: each group compares the store's count of write transactions
/// ([`InboundTransaction::generation`]) with the count during the previous group, and
/// starts empty if any other write transaction began in between — an operator's
/// trust change, an import, a sweep, a failed group retried one by one. Within a group,
/// an artifact that changes trust records empties the cache, and the rest of the
/// group neither reads from nor adds to it (what it would read is not committed yet).
#[derive(Debug, Default)]
struct TrustCache {
    /// The transaction generation during the last group that used it.
    seen: u64,
    /// By trust id (inbound perspective); `None`: no record (the sender is refused).
    records: HashMap<String, Option<Arc<TrustRecord>>>,
}

impl TrustCache {
    /// Starts a group's use of the cache, inside its transaction of generation
    /// `generation` ([`InboundTransaction::generation`]; `None`: the backend cannot
    /// tell, and the cache stays empty).
    fn begin(&mut self, generation: Option<u64>) -> bool {
        let Some(now) = generation else {
            self.records.clear();
            return false;
        };
        if self.seen.checked_add(1) != Some(now) {
            self.records.clear();
        }
        self.seen = now;
        true
    }
}

/// One group as the backend sees it: the artifacts, their outcomes so far, and the
/// trust cache as this group may use it.
struct Group<'g> {
    artifacts: Vec<&'g VerifiedArtifact>,
    outcomes: Vec<Option<Result<Accepted, ProtocolError>>>,
    now: Timestamp,
    policy: &'g TrustPolicy,
    cache: &'g mut TrustCache,
    /// `None` until the first artifact; then whether this group may use the cache
    /// (false once an artifact of the group changed trust records: what the cache
    /// holds may be stale, and what the group would read is not committed yet).
    cache_open: Option<bool>,
}

impl<'g> Group<'g> {
    fn new(
        artifacts: Vec<&'g VerifiedArtifact>,
        policy: &'g TrustPolicy,
        cache: &'g mut TrustCache,
    ) -> Self {
        Group {
            outcomes: vec![None; artifacts.len()],
            artifacts,
            now: Timestamp::now(),
            policy,
            cache,
            cache_open: None,
        }
    }

    /// The record `artifact` is checked against.
    fn record(
        &mut self,
        transaction: &mut dyn InboundTransaction,
        artifact: &VerifiedArtifact,
    ) -> StoreResult<Option<Arc<TrustRecord>>> {
        let open = match self.cache_open {
            Some(open) => open,
            None => {
                let open = self.cache.begin(transaction.generation());
                self.cache_open = Some(open);
                open
            }
        };
        let id = &artifact.trust_id;
        let cacheable = open && artifact.kind == TransporterType::Document;
        if cacheable && let Some(record) = self.cache.records.get(id) {
            return Ok(record.clone());
        }
        let record = transaction
            .trust(artifact.checked_perspective(), id)?
            .map(Arc::new);
        if cacheable {
            if self.cache.records.len() >= TRUST_CACHE_CAPACITY {
                self.cache.records.clear();
            }
            self.cache.records.insert(id.clone(), record.clone());
        }
        Ok(record)
    }
}

impl InboundGroup for Group<'_> {
    fn len(&self) -> usize {
        self.artifacts.len()
    }

    fn receiver(&self, index: usize) -> &str {
        self.artifacts
            .get(index)
            .map_or("", |artifact| artifact.to.as_str())
    }

    /// The duplicate check, the trust check, the record changes and the inbox
    /// entry of one artifact. A refusal changes nothing.
    fn apply(
        &mut self,
        index: usize,
        transaction: &mut dyn InboundTransaction,
    ) -> StoreResult<bool> {
        let Some(&artifact) = self.artifacts.get(index) else {
            return Ok(false);
        };
        if let Some(entry_id) = transaction.duplicate_of(&artifact.entry)? {
            self.outcomes[index] = Some(Ok(Accepted::Duplicate { entry_id }));
            return Ok(false);
        }
        let record = self.record(transaction, artifact)?;
        if let Err(refusal) = rules::check(artifact, record.as_deref(), &self.now, self.policy) {
            self.outcomes[index] = Some(Err(refusal));
            return Ok(false);
        }
        let mut noting = NotingWrites {
            transaction,
            wrote: false,
        };
        rules::apply(
            &mut noting,
            artifact,
            record.as_deref(),
            &self.now,
            self.policy,
        )?;
        if noting.wrote {
            self.cache_open = Some(false);
            self.cache.records.clear();
        }
        let entry_id = transaction.insert_inbox(&artifact.entry)?;
        self.outcomes[index] = Some(Ok(Accepted::Stored { entry_id }));
        Ok(true)
    }
}

/// Accepts `artifacts` in order in one transaction of `storage`; one outcome per
/// artifact. Documents' trust records come from `cache` while it is valid.
fn accept_all(
    storage: &dyn Storage,
    artifacts: Vec<&VerifiedArtifact>,
    policy: &TrustPolicy,
    cache: &mut TrustCache,
) -> StoreResult<Vec<Result<Accepted, ProtocolError>>> {
    let started = crate::metrics::timer();
    let mut group = Group::new(artifacts, policy, cache);
    let committed = storage.commit_inbound(&mut group);
    // Failed transactions are timed too: a slow failing disk shows in the histogram.
    crate::metrics::committed(started);
    committed?;
    group
        .outcomes
        .into_iter()
        .map(|outcome| {
            outcome.ok_or_else(|| {
                StoreError::TaskFailed("the backend did not apply every artifact".to_owned())
            })
        })
        .collect()
}

/// Accepts one artifact in a transaction of its own.
fn accept_alone(
    storage: &dyn Storage,
    artifact: &VerifiedArtifact,
    policy: &TrustPolicy,
) -> Result<Accepted, AcceptError> {
    let mut outcomes = accept_all(storage, vec![artifact], policy, &mut TrustCache::default())?;
    match outcomes.pop() {
        Some(outcome) => outcome.map_err(AcceptError::Refused),
        None => Err(AcceptError::Store(StoreError::TaskFailed(
            "no outcome for the artifact".to_owned(),
        ))),
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
/// whatever else is waiting (up to 256 artifacts), runs the duplicate and trust checks
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
    /// Starts the committer thread for `storage`. Dropping the committer stops the
    /// thread once the artifacts already queued are committed.
    /// Its thread is scheduled `nice` steps (0–19) below the calling thread.
    pub fn start(
        storage: Arc<dyn Storage>,
        policy: TrustPolicy,
        nice: u8,
        committed: Arc<Notify>,
    ) -> std::io::Result<Committer> {
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
                    // A backend may panic (redb on a page damaged outside it: the
                    // file is not read whole at open). The group's artifacts are then answered with
                    // an internal error (their reply channels drop) and the thread
                    // goes on serving the next group.
                    let size = group.len();
                    let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        if commit_group(storage.as_ref(), &policy, &mut cache, group) {
                            committed.notify_waiters();
                        }
                    }));
                    if committed.is_err() {
                        tracing::error!(
                            size,
                            "committing a group failed inside the storage backend; its artifacts were answered with an internal error (a retry is de-duplicated)"
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

/// Commits one group and answers its artifacts; whether anything was stored.
fn commit_group(
    storage: &dyn Storage,
    policy: &TrustPolicy,
    cache: &mut TrustCache,
    group: Vec<Job>,
) -> bool {
    let artifacts: Vec<&VerifiedArtifact> = group.iter().map(|job| &job.artifact).collect();
    let outcomes = accept_all(storage, artifacts, policy, cache);
    let mut stored = false;
    match outcomes {
        Ok(outcomes) => {
            for (job, outcome) in group.into_iter().zip(outcomes) {
                stored |= matches!(outcome, Ok(Accepted::Stored { .. }));
                let outcome = outcome.map_err(AcceptError::Refused);
                let _ = job.reply.send((outcome, job.artifact));
            }
        }
        Err(error) => {
            tracing::warn!(error = %error, size = group.len(), "group commit failed; committing one by one");
            for job in group {
                let outcome = accept_alone(storage, &job.artifact, policy);
                stored |= matches!(outcome, Ok(Accepted::Stored { .. }));
                let _ = job.reply.send((outcome, job.artifact));
            }
        }
    }
    stored
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::protocol::ErrorCode;
    use crate::server::inbound::Content;
    use crate::server::trust::VerifyingKey;
    use crate::store::{IdentityRecord, NewInboxEntry, PublicKeyRecord, RedbOptions, RedbStore};

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
        let request = artifact(
            TransporterType::TrustRequest,
            "request-1",
            VENDOR,
            CLIENT,
            r#"{"id":"request-1","name":"Vendor"}"#,
        );
        let outcomes = accept_all(&store, vec![&request], &policy, &mut cache).unwrap();
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
        let outcomes =
            accept_all(&store, vec![&before, &answer, &after], &policy, &mut cache).unwrap();
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
