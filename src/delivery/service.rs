//! The delivery worker: a [`Service`] of `btps serve` that claims due outbox
//! entries, runs their attempts (at most `max_in_flight` at once) and commits each
//! end (`08-delivery.md` §5).
//!
//! It wakes when an entry is queued in this process ([`Outbound::wake`]), when an
//! attempt ends, when the next entry is due, and at least once a second (entries
//! queued by another process sharing the database). At start it releases the
//! claims a previous run left (a crash): those entries are due at once, their
//! attempt counts unchanged. At stop it claims nothing more and lets the attempts
//! in hand finish within the server's grace period; an attempt cut off keeps its
//! claim until the next start releases it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use crate::BoxFuture;
use crate::config::Config;
use crate::identity::Identity;
use crate::protocol::response::parse_response;
use crate::server::{Pipeline, Service, ServiceContext};
use crate::store::{MailboxEntry, Storage, Timestamp};

use super::finish::{Attempted, FinishContext, Finished, finish_group};
use super::outcome::{Failure, Outcome, classify};
use super::remote::{Destination, Remote};
use super::schedule::RetrySchedule;

/// The longest the worker sleeps without looking at the schedule.
const POLL: Duration = Duration::from_secs(1);

/// The delivery worker.
pub struct DeliveryService {
    config: Arc<Config>,
    remote: Arc<Remote>,
    schedule: RetrySchedule,
    wake: Arc<Notify>,
}

impl DeliveryService {
    /// A worker delivering through `remote`, configured by `config.delivery`, woken
    /// by `wake` (shared with whatever queues entries in this process).
    pub fn new(config: Arc<Config>, remote: Remote, wake: Arc<Notify>) -> Self {
        DeliveryService {
            schedule: RetrySchedule::new(config.delivery.retry_schedule.clone()),
            config,
            remote: Arc::new(remote),
            wake,
        }
    }

    /// How long a claim lasts: an attempt's connect and answer time, with room.
    fn lease(&self) -> Duration {
        self.config.delivery.connect_timeout
            + self.config.delivery.response_timeout * 2
            + Duration::from_secs(30)
    }
}

impl Service for DeliveryService {
    fn name(&self) -> &'static str {
        "delivery"
    }

    fn run(
        self: Box<Self>,
        context: ServiceContext,
        stop: BoxFuture<'static, ()>,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.work(context, stop).await })
    }
}

/// What every attempt task shares.
struct Shared {
    storage: Arc<dyn Storage>,
    pipeline: Arc<Pipeline>,
    local_address: SocketAddr,
    remote: Arc<Remote>,
    schedule: RetrySchedule,
    config: Arc<Config>,
}

impl DeliveryService {
    async fn work(self, context: ServiceContext, mut stop: BoxFuture<'static, ()>) {
        let storage = Arc::clone(&context.storage);
        match storage.outbox().release_claims(Timestamp::now()).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(
                released,
                "outbox entries in flight at the last stop are queued again"
            ),
            Err(error) => tracing::error!(error = %error, "releasing the outbox's claims failed"),
        }
        let limit = self.config.delivery.max_in_flight.max(1);
        let lease = self.lease();
        let shared = Arc::new(Shared {
            storage: Arc::clone(&storage),
            pipeline: Arc::clone(&context.pipeline),
            local_address: context.address,
            remote: Arc::clone(&self.remote),
            schedule: self.schedule.clone(),
            config: Arc::clone(&self.config),
        });
        // Attempts end into the finisher, which commits what has ended together.
        let (ended, to_finish) = mpsc::unbounded_channel::<Attempted>();
        let finisher = tokio::spawn(finisher(
            Arc::clone(&shared),
            to_finish,
            Arc::clone(&self.wake),
        ));
        let mut attempts: JoinSet<()> = JoinSet::new();
        loop {
            let free = limit.saturating_sub(attempts.len());
            let mut claimed_any = false;
            if free > 0 {
                let now = Timestamp::now();
                let until = later(&now, lease);
                match storage
                    .outbox()
                    .claim_due(now, until, u32::try_from(free).unwrap_or(u32::MAX))
                    .await
                {
                    Ok(claimed) => {
                        claimed_any = !claimed.is_empty();
                        for entry in claimed {
                            crate::metrics::outbox_in_flight(true);
                            let shared = Arc::clone(&shared);
                            let ended = ended.clone();
                            attempts.spawn(async move {
                                let attempted = attempt(&shared, entry).await;
                                // The finisher outlives the attempts; if it is gone
                                // the claim runs out and the entry is tried again.
                                let _ = ended.send(attempted);
                            });
                        }
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "claiming due outbox entries failed");
                    }
                }
            }
            if claimed_any && attempts.len() < limit {
                // More may be due right away.
                continue;
            }
            let sleep = if attempts.len() >= limit {
                POLL * 60
            } else {
                self.time_to_next(storage.as_ref()).await
            };
            tokio::select! {
                () = &mut stop => break,
                () = self.wake.notified() => {}
                Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
                () = tokio::time::sleep(sleep) => {}
            }
        }
        while attempts.join_next().await.is_some() {}
        drop(ended);
        let _ = finisher.await;
    }

    /// How long until the next entry is due, at most [`POLL`].
    async fn time_to_next(&self, storage: &dyn Storage) -> Duration {
        match storage.outbox().next_due().await {
            Ok(Some(due)) => {
                let wait = due.saturating_sub(Timestamp::now().millis());
                Duration::from_millis(u64::try_from(wait).unwrap_or(0)).min(POLL)
            }
            _ => POLL,
        }
    }
}

fn later(now: &Timestamp, by: Duration) -> Timestamp {
    let millis = now
        .millis()
        .saturating_add(i64::try_from(by.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_millis(millis).unwrap_or_else(|_| now.clone())
}

/// The most attempts committed in one transaction.
const FINISH_BATCH: usize = 256;

/// Commits ended attempts: whatever has ended while the previous commit ran goes
/// into the next one, one transaction per owner, so that a burst of deliveries
/// costs a few durable writes instead of one each. Wakes the worker after each
/// commit (the next entry of a queue may now be due).
async fn finisher(
    shared: Arc<Shared>,
    mut ended: mpsc::UnboundedReceiver<Attempted>,
    wake: Arc<Notify>,
) {
    while let Some(first) = ended.recv().await {
        let mut batch = vec![first];
        while batch.len() < FINISH_BATCH {
            match ended.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let mut by_owner: Vec<(String, Vec<Attempted>)> = Vec::new();
        for attempted in batch {
            let owner = attempted.entry.owner.to_lowercase();
            match by_owner.iter_mut().find(|(known, _)| *known == owner) {
                Some((_, group)) => group.push(attempted),
                None => by_owner.push((owner, vec![attempted])),
            }
        }
        for (_, group) in by_owner {
            commit(&shared, group).await;
        }
        wake.notify_one();
    }
}

/// Commits one owner's ended attempts, then counts and logs them.
async fn commit(shared: &Shared, group: Vec<Attempted>) {
    let owner = group[0].entry.owner.clone();
    let owner_domain = owner
        .rsplit_once('$')
        .map_or(owner.as_str(), |(_, domain)| domain)
        .to_owned();
    let notice_from = shared.config.lookup_signer(&owner_domain);
    let storage = Arc::clone(&shared.storage);
    let schedule = shared.schedule.clone();
    let delay_notice_after = shared.config.delivery.delay_notice_after;
    let count = group.len();
    let finished = tokio::task::spawn_blocking(move || {
        let now = Timestamp::now();
        let context = FinishContext {
            schedule: &schedule,
            notice_from: &notice_from,
            delay_notice_after,
            now: &now,
        };
        finish_group(storage.as_ref(), &owner, &group, &context).map(|done| (done, group))
    })
    .await;
    for _ in 0..count {
        crate::metrics::outbox_in_flight(false);
    }
    let (done, group) = match finished {
        Ok(Ok(finished)) => finished,
        Ok(Err(error)) => {
            // The claims stay until they run out; the entries are then tried again.
            tracing::error!(error = %error, attempts = count, "committing delivery attempts failed");
            return;
        }
        Err(error) => {
            tracing::error!(error = %error, "a delivery commit task failed");
            return;
        }
    };
    for (done, attempted) in done.iter().zip(&group) {
        let entry = &attempted.entry;
        let event = match done {
            Finished::Delivered => Some("delivered"),
            Finished::Retry(_) => Some("retried"),
            Finished::Failed => Some("failed"),
            Finished::Gone => None,
        };
        if let Some(event) = event {
            crate::metrics::outbox_event(event);
        }
        match (done, &attempted.outcome) {
            (Finished::Delivered, _) => tracing::debug!(
                entry = entry.entry_id, id = %entry.artifact_id, to = %entry.to, "delivered"
            ),
            (Finished::Retry(at), Outcome::Transient(failure)) => tracing::info!(
                entry = entry.entry_id, id = %entry.artifact_id, to = %entry.to,
                error = %failure.message, next = %at, "delivery failed for now; retrying"
            ),
            (Finished::Failed, Outcome::Transient(failure) | Outcome::Permanent(failure)) => {
                tracing::warn!(
                    entry = entry.entry_id, id = %entry.artifact_id, to = %entry.to,
                    error = %failure.message, "delivery failed; the owner is notified"
                );
            }
            _ => {}
        }
    }
}

/// One attempt on a claimed entry.
async fn attempt(shared: &Shared, entry: MailboxEntry) -> Attempted {
    let (outcome, destination) = match Identity::parse(&entry.to) {
        Err(error) => (
            Outcome::Permanent(Failure::new(
                "BTP_ERROR_INVALID_IDENTITY",
                "Invalid message format",
                format!("the receiver {:?} is not an identity: {error}", entry.to),
            )),
            Destination::default(),
        ),
        Ok(to) if is_local(shared, &to).await => {
            (local(shared, &entry).await, Destination::default())
        }
        Ok(to) => {
            shared
                .remote
                .attempt(&to, &entry.artifact_id, &entry.raw)
                .await
        }
    };
    crate::metrics::delivery_attempt(match &outcome {
        Outcome::Delivered { .. } => "delivered",
        Outcome::Transient(_) => "transient",
        Outcome::Permanent(_) => "permanent",
    });
    Attempted {
        entry,
        outcome,
        destination,
        jitter: RetrySchedule::random_jitter(),
    }
}

/// Whether `to` is served by this appliance: a hosted identity, or any identity of
/// a hosted domain (which this server answers for, `08-delivery.md` §1.4).
async fn is_local(shared: &Shared, to: &Identity) -> bool {
    if shared.config.hosted_domain(to.domain()).is_some() {
        return true;
    }
    matches!(
        shared
            .storage
            .identities()
            .get_by_identity(to.as_str())
            .await,
        Ok(Some(_))
    )
}

/// Delivers in-process through the server's own inbound pipeline, with the same
/// checks as for an artifact from the network (`08-delivery.md` §5.6).
async fn local(shared: &Shared, entry: &MailboxEntry) -> Outcome {
    let reply = shared
        .pipeline
        .handle_line(&entry.raw, shared.local_address)
        .await;
    let Some(line) = reply.line else {
        return Outcome::Transient(Failure::closed("the inbound pipeline gave no answer"));
    };
    match parse_response(&line) {
        Ok(response) => classify(&response),
        Err(error) => Outcome::Transient(Failure::unreadable(format!(
            "the inbound pipeline's answer is not a response: {error}"
        ))),
    }
}
