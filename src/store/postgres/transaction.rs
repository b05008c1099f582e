//! One write transaction of the server's: the group commit
//! ([`Storage::commit_inbound`](crate::store::Storage::commit_inbound)) and
//! [`Storage::transact`](crate::store::Storage::transact).
//!
//! The transaction begins by locking the entry-id counter row (`btps_meta`,
//! `entry_seq`) and keeps the counter in memory until it commits, writing it back
//! in the commit's round trip. Holding that lock to the end makes these
//! transactions run one at a time across every node on the database:
//!
//! * entry ids are handed out, and become visible, in increasing order — the
//!   event feed's "everything after the last id I saw" never misses an entry;
//! * the second node to receive an artifact waits, then finds the first node's
//!   entry with `duplicate_of` and acknowledges it again instead of storing it
//!   twice (the unique index on (receiver, sender, artifact id) refuses a second
//!   copy in any case, failing the group, whose artifacts the server then retries
//!   one by one);
//! * changes to the outbox's queues never race (`outbox.rs`).
//!
//! Every statement runs on the backend's runtime while the calling thread blocks
//! (the contract's transactions are blocking). A transaction dropped before its
//! commit — an error, a panic in the server's rules — is rolled back on the
//! runtime; a connection whose statement timed out or whose rollback failed is
//! closed rather than returned to the pool.

use std::future::Future;
use std::sync::Arc;

use deadpool_postgres::Object;

use super::agents::AgentSql;
use super::entries::EntrySql;
use super::records::{IdentitySql, TrustSql};
use super::{Db, Parts};
use crate::store::contract::{InboundTransaction, StoreTransaction};
use crate::store::{
    AgentSession, EnrollmentToken, Mailbox, MailboxEntry, NewTrustRecord, Perspective,
    PreparedInboxEntry, StoreError, StoreResult, TrustPatch, TrustRecord,
};

/// Polls `future` on the calling thread until it is ready, inside the backend
/// runtime's context (so that its timers work); the connection tasks it waits on
/// run on that runtime and wake this thread directly. A statement of the group
/// commit thus costs one wake-up of the committer instead of a task hand-off each
/// way. Never called on one of the backend runtime's own threads.
fn block_here<F: Future>(handle: &tokio::runtime::Handle, make: impl FnOnce() -> F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    // Entered before the future is made: a timer is registered when it is built.
    let _context = handle.enter();
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(make());
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        // A wake-up that came before parking makes this return at once.
        std::thread::park();
    }
}

/// An open transaction on one pooled connection.
pub(crate) struct PgTransaction {
    db: Arc<Db>,
    parts: Parts,
    client: Option<Arc<Object>>,
    /// The counter as read at the start, and the last id handed out since.
    first_entry: i64,
    last_entry: i64,
    /// A statement timed out: the connection's state is unknown.
    broken: bool,
    /// The inbound trust record of the artifact whose duplicate check ran last,
    /// read in the same round trip (the two statements pipelined): what the
    /// server's next call, `trust(Inbound, that id)`, asks for. Any other
    /// statement first drops it.
    read_ahead: Option<(String, Option<TrustRecord>)>,
}

impl PgTransaction {
    /// Begins a transaction and takes the entry-id counter's lock.
    pub(crate) fn begin(db: &Arc<Db>) -> StoreResult<Self> {
        let parts = db.parts();
        let task = parts.clone();
        let (client, counter) = db.block(async move {
            let client = task.connection().await?;
            let timeout = task.timeout;
            let begin = async {
                let messages = client
                    .simple_query(
                        "BEGIN; SET LOCAL synchronous_commit = on;
                         SELECT value FROM btps_meta WHERE name = 'entry_seq' FOR UPDATE",
                    )
                    .await
                    .map_err(|e| task.errors.query(&e))?;
                let value = messages.iter().find_map(|message| match message {
                    tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0),
                    _ => None,
                });
                value
                    .and_then(|text| text.parse::<i64>().ok())
                    .ok_or_else(|| {
                        task.errors
                            .decode("btps_meta", "the entry counter is missing or not a number")
                    })
            };
            match tokio::time::timeout(timeout, begin).await {
                Ok(Ok(counter)) => Ok((client, counter)),
                Ok(Err(error)) => {
                    // The connection may be inside a failed transaction: close it.
                    drop(Object::take(client));
                    Err(error)
                }
                Err(_) => {
                    drop(Object::take(client));
                    Err(task.errors.timed_out())
                }
            }
        })?;
        Ok(PgTransaction {
            db: Arc::clone(db),
            parts,
            client: Some(Arc::new(client)),
            first_entry: counter,
            last_entry: counter,
            broken: false,
            read_ahead: None,
        })
    }

    /// Runs one step of the transaction on the runtime and waits for it.
    fn step<T, F, Fut>(&mut self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Object>, Parts) -> Fut,
        Fut: Future<Output = StoreResult<T>> + Send + 'static,
    {
        self.read_ahead = None;
        let client = self
            .client
            .clone()
            .ok_or_else(|| StoreError::TaskFailed("the transaction has ended".to_owned()))?;
        let parts = self.parts.clone();
        let timeout = parts.timeout;
        let errors = parts.errors.clone();
        let future = work(client, parts);
        let Some(handle) = self.db.runtime.handle() else {
            self.broken = true;
            return Err(StoreError::TaskFailed(
                "the PostgreSQL runtime has stopped".to_owned(),
            ));
        };
        match block_here(handle, || tokio::time::timeout(timeout, future)) {
            Ok(result) => result,
            Err(_elapsed) => {
                self.broken = true;
                Err(errors.timed_out())
            }
        }
    }

    /// The next entry id (the counter is locked by this transaction).
    fn next_entry_id(&mut self) -> StoreResult<u64> {
        self.last_entry = self.last_entry.checked_add(1).ok_or_else(|| {
            self.parts
                .errors
                .backend("the entry-id counter is exhausted")
        })?;
        u64::try_from(self.last_entry).map_err(|_| {
            self.parts
                .errors
                .decode("btps_meta", "negative entry counter")
        })
    }

    /// Commits, durably, after writing the counter back.
    pub(crate) fn commit(mut self) -> StoreResult<()> {
        let sql = if self.last_entry == self.first_entry {
            "COMMIT".to_owned()
        } else {
            // An integer this transaction computed, not input.
            format!(
                "UPDATE btps_meta SET value = {} WHERE name = 'entry_seq'; COMMIT",
                self.last_entry
            )
        };
        self.step(|client, parts| async move {
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| parts.errors.query(&e))
        })?;
        // Ended either way: the connection goes back to the pool clean.
        self.client = None;
        Ok(())
    }

    /// Rolls back (a group that wrote nothing).
    pub(crate) fn roll_back(mut self) -> StoreResult<()> {
        self.step(|client, parts| async move {
            client
                .batch_execute("ROLLBACK")
                .await
                .map_err(|e| parts.errors.query(&e))
        })?;
        self.client = None;
        Ok(())
    }
}

impl Drop for PgTransaction {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let broken = self.broken;
        let Some(handle) = self.db.runtime.handle() else {
            return;
        };
        handle.spawn(async move {
            let rolled_back = !broken && client.batch_execute("ROLLBACK").await.is_ok();
            if !rolled_back && let Ok(object) = Arc::try_unwrap(client) {
                // Closing the connection ends its transaction on the server.
                drop(Object::take(object));
            }
        });
    }
}

impl InboundTransaction for PgTransaction {
    fn trust(&mut self, perspective: Perspective, id: &str) -> StoreResult<Option<TrustRecord>> {
        if let Some((ahead, record)) = self.read_ahead.take()
            && perspective == Perspective::Inbound
            && ahead == id.to_lowercase()
        {
            return Ok(record);
        }
        let id = id.to_owned();
        self.step(|client, parts| async move {
            TrustSql::get(&client, &parts, perspective, &id, false).await
        })
    }

    fn create_trust(
        &mut self,
        perspective: Perspective,
        record: NewTrustRecord,
    ) -> StoreResult<()> {
        self.step(|client, parts| async move {
            TrustSql::create(&client, &parts, perspective, record, None)
                .await
                .map(drop)
        })
    }

    fn update_trust(
        &mut self,
        perspective: Perspective,
        id: &str,
        patch: TrustPatch,
    ) -> StoreResult<()> {
        let id = id.to_owned();
        self.step(|client, parts| async move {
            TrustSql::update(&client, &parts, perspective, &id, patch)
                .await
                .map(drop)
        })
    }

    fn is_hosted(&mut self, identity: &str) -> StoreResult<bool> {
        let identity = identity.to_owned();
        self.step(|client, parts| async move {
            IdentitySql::is_hosted(&client, &parts, &identity).await
        })
    }

    fn duplicate_of(&mut self, entry: &PreparedInboxEntry) -> StoreResult<Option<u64>> {
        let receiver = entry.to_lowercase_receiver().to_owned();
        let sender = entry.to_lowercase_sender().to_owned();
        let artifact = entry.artifact_id().to_owned();
        let trust_id = crate::identity::compute_trust_id(&sender, &receiver);
        let id = trust_id.clone();
        let (duplicate, record) = self.step(|client, parts| async move {
            // One round trip: tokio-postgres pipelines the two statements.
            let (duplicate, record) = tokio::join!(
                EntrySql::duplicate_of(&client, &parts, &receiver, &sender, &artifact),
                TrustSql::get(&client, &parts, Perspective::Inbound, &id, false),
            );
            Ok((duplicate?, record.ok()))
        })?;
        if duplicate.is_none()
            && let Some(record) = record
        {
            self.read_ahead = Some((trust_id, record));
        }
        Ok(duplicate)
    }

    fn insert_inbox(&mut self, entry: &PreparedInboxEntry) -> StoreResult<u64> {
        let entry_id = self.next_entry_id()?;
        let stored = entry.to_entry(entry_id)?;
        self.step(|client, parts| async move { EntrySql::insert(&client, &parts, &stored).await })?;
        Ok(entry_id)
    }
}

impl StoreTransaction for PgTransaction {
    fn trust(&mut self, perspective: Perspective, id: &str) -> StoreResult<Option<TrustRecord>> {
        InboundTransaction::trust(self, perspective, id)
    }

    fn create_trust(
        &mut self,
        perspective: Perspective,
        record: NewTrustRecord,
    ) -> StoreResult<TrustRecord> {
        self.step(|client, parts| async move {
            TrustSql::create(&client, &parts, perspective, record, None).await
        })
    }

    fn update_trust(
        &mut self,
        perspective: Perspective,
        id: &str,
        patch: TrustPatch,
    ) -> StoreResult<TrustRecord> {
        let id = id.to_owned();
        self.step(|client, parts| async move {
            TrustSql::update(&client, &parts, perspective, &id, patch).await
        })
    }

    fn delete_trust(&mut self, perspective: Perspective, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.step(|client, parts| async move {
            TrustSql::delete(&client, &parts, perspective, &id).await
        })
    }

    fn is_hosted(&mut self, identity: &str) -> StoreResult<bool> {
        InboundTransaction::is_hosted(self, identity)
    }

    fn entry(&mut self, entry_id: u64) -> StoreResult<Option<MailboxEntry>> {
        self.step(
            |client, parts| async move { EntrySql::get(&client, &parts, entry_id, true).await },
        )
    }

    fn insert_entry(&mut self, mut entry: MailboxEntry) -> StoreResult<u64> {
        let entry_id = self.next_entry_id()?;
        entry.entry_id = entry_id;
        self.step(|client, parts| async move { EntrySql::insert(&client, &parts, &entry).await })?;
        Ok(entry_id)
    }

    fn update_entry(&mut self, entry: &MailboxEntry) -> StoreResult<()> {
        let entry = entry.clone();
        self.step(|client, parts| async move { EntrySql::update(&client, &parts, &entry).await })
    }

    fn remove_entry(&mut self, entry_id: u64) -> StoreResult<Option<MailboxEntry>> {
        self.step(|client, parts| async move { EntrySql::remove(&client, &parts, entry_id).await })
    }

    fn entries_by_artifact(
        &mut self,
        owner: &str,
        mailbox: Mailbox,
        artifact_id: &str,
    ) -> StoreResult<Vec<MailboxEntry>> {
        let owner = owner.to_lowercase();
        let artifact_id = artifact_id.to_owned();
        self.step(|client, parts| async move {
            EntrySql::by_artifact(&client, &parts, &owner, mailbox, &artifact_id).await
        })
    }

    fn enrollment_token(&mut self, key: &[u8; 32]) -> StoreResult<Option<EnrollmentToken>> {
        let key = *key;
        self.step(|client, parts| async move { AgentSql::token(&client, &parts, key).await })
    }

    fn put_enrollment_token(&mut self, key: &[u8; 32], token: &EnrollmentToken) -> StoreResult<()> {
        let (key, token) = (*key, token.clone());
        self.step(
            |client, parts| async move { AgentSql::put_token(&client, &parts, key, &token).await },
        )
    }

    fn delete_enrollment_token(&mut self, key: &[u8; 32]) -> StoreResult<bool> {
        let key = *key;
        self.step(|client, parts| async move { AgentSql::delete_token(&client, &parts, key).await })
    }

    fn session(&mut self, agent_id: &str) -> StoreResult<Option<AgentSession>> {
        let agent_id = agent_id.to_owned();
        self.step(|client, parts| async move {
            AgentSql::session(&client, &parts, &agent_id, true).await
        })
    }

    fn put_session(&mut self, session: &AgentSession) -> StoreResult<()> {
        let session = session.clone();
        self.step(
            |client, parts| async move { AgentSql::put_session(&client, &parts, &session).await },
        )
    }

    fn delete_session(&mut self, agent_id: &str) -> StoreResult<bool> {
        let agent_id = agent_id.to_owned();
        self.step(|client, parts| async move {
            AgentSql::delete_session(&client, &parts, &agent_id).await
        })
    }
}
