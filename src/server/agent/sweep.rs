//! Expired agent material removed periodically (`spec/07-agents-auth.md` §6.7):
//! enrollment tokens and sessions past their expiry, and agent trust records
//! expired for longer than the grace period (with their sessions). A service of the
//! server, started and stopped with it.

use std::sync::Arc;
use std::time::Duration;

use crate::BoxFuture;
use crate::identity::is_schema_identity;
use crate::server::builder::{Service, ServiceContext};
use crate::store::{PageRequest, Perspective, Storage, StoreError, Timestamp};

/// Agent trust records removed per sweep at most (the next sweep takes the rest).
const RECORDS_PER_SWEEP: usize = 500;
/// The page size of the expiry index while looking for them.
const PAGE: u32 = 500;

/// What one sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Expired enrollment tokens.
    pub tokens: u64,
    /// Expired sessions.
    pub sessions: u64,
    /// Agent trust records expired longer than the grace period.
    pub records: u64,
}

/// The periodic sweep of expired agent material.
#[derive(Clone, Copy, Debug)]
pub struct AgentSweeper {
    interval: Duration,
    grace: Duration,
}

impl AgentSweeper {
    /// A sweep every `interval`, removing agent records expired for `grace`.
    pub fn new(interval: Duration, grace: Duration) -> Self {
        AgentSweeper { interval, grace }
    }

    /// One sweep now. Blocking work runs on the blocking pool.
    pub async fn sweep(&self, storage: &Arc<dyn Storage>) -> Result<SweepReport, StoreError> {
        if storage.agents().is_none() {
            return Ok(SweepReport::default());
        }
        let now = Timestamp::now().millis();
        let grace = i64::try_from(self.grace.as_millis()).unwrap_or(i64::MAX);
        // Partner records expire too: page through the expiry index, keeping the
        // agents' (at most RECORDS_PER_SWEEP a sweep; the next sweep takes the rest).
        let mut agents: Vec<(String, String, String)> = Vec::new();
        let mut page = PageRequest::first(PAGE);
        loop {
            let expired = storage
                .trust()
                .list_expiring_before(Perspective::Inbound, now.saturating_sub(grace), None, page)
                .await?;
            agents.extend(
                expired
                    .items
                    .into_iter()
                    .filter(|record| !is_schema_identity(&record.sender_id))
                    .map(|record| (record.id, record.sender_id, record.receiver_id)),
            );
            match expired.next {
                Some(next) if agents.len() < RECORDS_PER_SWEEP => {
                    page = PageRequest::after(next, PAGE);
                }
                _ => break,
            }
        }
        agents.truncate(RECORDS_PER_SWEEP);
        let storage = Arc::clone(storage);
        tokio::task::spawn_blocking(move || {
            let Some(store) = storage.agents() else {
                return Ok(SweepReport::default());
            };
            let (tokens, sessions) = store.sweep(now)?;
            let mut records = 0;
            for (id, agent, owner) in &agents {
                storage.transact(owner, &mut |transaction| {
                    if transaction.delete_trust(Perspective::Inbound, id)? {
                        records += 1;
                    }
                    transaction.delete_session(agent)?;
                    Ok(())
                })?;
            }
            Ok(SweepReport {
                tokens,
                sessions,
                records,
            })
        })
        .await
        .map_err(|error| StoreError::TaskFailed(error.to_string()))?
    }
}

impl Service for AgentSweeper {
    fn name(&self) -> &'static str {
        "agent sweep"
    }

    fn run(
        self: Box<Self>,
        context: ServiceContext,
        stop: BoxFuture<'static, ()>,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut stop = stop;
            let mut ticker = tokio::time::interval(self.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = &mut stop => return,
                    _ = ticker.tick() => {}
                }
                match self.sweep(&context.storage).await {
                    Ok(report) if report != SweepReport::default() => {
                        tracing::info!(
                            tokens = report.tokens,
                            sessions = report.sessions,
                            records = report.records,
                            "expired agent material removed"
                        );
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "sweeping expired agent material failed"),
                }
            }
        })
    }
}
