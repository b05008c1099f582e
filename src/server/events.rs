//! After-commit events for business systems (an ERP, a webhook): an at-least-once
//! feed of the artifacts stored in the inboxes, read from a durable cursor.
//!
//! The feed never delays an acknowledgement: the server answers the sender when the
//! group commit is durable, then only wakes the subscriptions. A subscription reads
//! the inboxes in entry-id order from the storage itself, so a consumer that is slow,
//! stops or restarts misses nothing: it resumes after the last entry it
//! acknowledged ([`Subscription::ack`]), and sees again what it had been given but
//! not acknowledged.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::store::{MailboxEntry, Storage, StoreResult};

/// How often a waiting subscription looks at the storage even without a wake-up:
/// entries written by another process (a second node on a shared database, an
/// operator's import) are seen within this time.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How many entries a subscription reads at once.
const BATCH: u32 = 64;

/// Opens subscriptions on a server's storage; cloned freely.
#[derive(Clone)]
pub struct Events {
    storage: Arc<dyn Storage>,
    committed: Arc<Notify>,
}

impl Events {
    pub(crate) fn new(storage: Arc<dyn Storage>, committed: Arc<Notify>) -> Self {
        Events { storage, committed }
    }

    /// The subscription `name`, positioned after the last entry its consumer
    /// acknowledged (the start of the inboxes the first time).
    pub async fn subscribe(&self, name: &str) -> StoreResult<Subscription> {
        let acknowledged = self.storage.mailboxes().cursor(name).await?;
        Ok(Subscription {
            name: name.to_owned(),
            storage: Arc::clone(&self.storage),
            committed: Arc::clone(&self.committed),
            delivered: acknowledged,
            buffer: VecDeque::new(),
        })
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

/// One consumer's at-least-once feed of inbox entries.
///
/// ```no_run
/// # async fn consume(server: &btps::server::Server) -> Result<(), btps::store::StoreError> {
/// let mut feed = server.events().subscribe("erp").await?;
/// loop {
///     let entry = feed.next().await?;
///     // … hand `entry.raw` (the artifact exactly as received) to the ERP …
///     feed.ack(entry.entry_id).await?;
/// }
/// # }
/// ```
pub struct Subscription {
    name: String,
    storage: Arc<dyn Storage>,
    committed: Arc<Notify>,
    /// The last entry id handed out by [`Subscription::next`].
    delivered: u64,
    buffer: VecDeque<MailboxEntry>,
}

impl Subscription {
    /// The subscription's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next inbox entry after the last one handed out, waiting until one is
    /// committed.
    pub async fn next(&mut self) -> StoreResult<MailboxEntry> {
        loop {
            if let Some(entry) = self.buffer.pop_front() {
                self.delivered = entry.entry_id;
                return Ok(entry);
            }
            // Registered before the read, so a commit between the read and the wait
            // still wakes us.
            let committed = self.committed.notified();
            tokio::pin!(committed);
            committed.as_mut().enable();
            let entries = self
                .storage
                .mailboxes()
                .inbox_after(self.delivered, BATCH)
                .await?;
            if entries.is_empty() {
                tokio::select! {
                    () = &mut committed => {}
                    () = tokio::time::sleep(POLL_INTERVAL) => {}
                }
            } else {
                self.buffer.extend(entries);
            }
        }
    }

    /// Records durably that the consumer has handled every entry up to and
    /// including `entry_id`: after a restart the feed resumes after it.
    pub async fn ack(&mut self, entry_id: u64) -> StoreResult<()> {
        self.storage
            .mailboxes()
            .set_cursor(&self.name, entry_id)
            .await
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("name", &self.name)
            .field("delivered", &self.delivered)
            .finish_non_exhaustive()
    }
}
