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

use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::BoxFuture;
use crate::config::Config;
use crate::identity::Identity;
use crate::protocol::response::parse_response;
use crate::server::{Pipeline, Service, ServiceContext};
use crate::store::{MailboxEntry, Storage, Timestamp};

use super::finish::{FinishContext, Finished, finish};
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
                            attempts.spawn(async move {
                                attempt(&shared, entry).await;
                                crate::metrics::outbox_in_flight(false);
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

/// One attempt on a claimed entry, and its end committed.
async fn attempt(shared: &Shared, entry: MailboxEntry) {
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
    let owner_domain = entry
        .owner
        .rsplit_once('$')
        .map_or(entry.owner.as_str(), |(_, domain)| domain)
        .to_owned();
    let notice_from = shared.config.lookup_signer(&owner_domain);
    let storage = Arc::clone(&shared.storage);
    let schedule = shared.schedule.clone();
    let delay_notice_after = shared.config.delivery.delay_notice_after;
    let logged = outcome.clone();
    let finished = tokio::task::spawn_blocking(move || {
        let now = Timestamp::now();
        let context = FinishContext {
            schedule: &schedule,
            jitter: RetrySchedule::random_jitter(),
            notice_from: &notice_from,
            delay_notice_after,
            now: &now,
        };
        finish(storage.as_ref(), &entry, &outcome, &destination, &context).map(|done| (done, entry))
    })
    .await;
    match finished {
        Ok(Ok((done, entry))) => {
            let event = match &done {
                Finished::Delivered => Some("delivered"),
                Finished::Retry(_) => Some("retried"),
                Finished::Failed => Some("failed"),
                Finished::Gone => None,
            };
            if let Some(event) = event {
                crate::metrics::outbox_event(event);
            }
            match (&done, &logged) {
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
        Ok(Err(error)) => {
            // The claim stays until it runs out; the entry is then tried again.
            tracing::error!(error = %error, "committing a delivery attempt failed");
        }
        Err(error) => tracing::error!(error = %error, "a delivery attempt task failed"),
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
