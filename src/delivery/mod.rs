//! Outbound delivery (`08-delivery.md` §1–§6): the durable outbox's worker, the
//! artifacts the appliance signs for its hosted identities, and the operations that
//! queue them together with the trust changes they imply.
//!
//! * [`queue`] — entering the outbox (with a trust request's or decision's record
//!   change in the same transaction), retrying and cancelling an entry;
//! * [`originate`] — building and signing for a hosted identity through its
//!   domain's delegator (`07-agents-auth.md` §8.3);
//! * [`DeliveryService`] — the worker inside `btps serve`: claims, attempts
//!   ([`remote`] over TLS with a per-host pool, or in-process for hosted
//!   receivers), outcome classes ([`outcome`]), the retry schedule
//!   ([`schedule`]) and the commit of each end ([`finish`]).
//!
//! `docs/delivery.md` describes the behaviour for operators.

mod agents;
pub mod finish;
pub mod originate;
pub mod outcome;
pub mod queue;
pub mod remote;
pub mod schedule;
mod service;

use std::sync::Arc;

use tokio::sync::Notify;

pub use originate::{APPLIANCE_AGENT_ID, OriginateError, Originator};
pub use outcome::{Failure, Outcome};
pub use queue::QueueError;
pub use remote::Remote;
pub use schedule::RetrySchedule;
pub use service::DeliveryService;

use crate::server::trust::TrustPolicy;

/// What queues artifacts in a running server (the admin socket, agents): the
/// originator that signs for hosted identities, the trust policy of new records,
/// and the worker's wake-up.
#[derive(Clone, Debug)]
pub struct Outbound {
    /// Signs for hosted identities.
    pub originator: Arc<Originator>,
    /// Trust policy for the records a request creates.
    pub policy: TrustPolicy,
    /// Wakes the delivery worker of this process.
    pub wake: Arc<Notify>,
}

impl Outbound {
    /// Tells the worker that something was queued.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}
