//! Enrollment tokens and agent sessions in memory, and the agent transaction of
//! [`MemoryStorage`]: under the store's one transaction lock, with an undo log, so
//! that a transaction that fails or is refused leaves nothing behind.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{MemoryStorage, lock, ready};
use crate::store::contract::{AgentStore, AgentTransaction};
use crate::store::{
    AgentSession, BoxFuture, EnrollmentToken, NewTrustRecord, Perspective, StoreResult, TrustPatch,
    TrustRecord,
};

/// Tokens by the hash of their lookup key, sessions by agent id.
#[derive(Clone, Default)]
pub(super) struct AgentState {
    tokens: BTreeMap<[u8; 32], EnrollmentToken>,
    sessions: BTreeMap<String, AgentSession>,
}

/// The agent tables of a [`MemoryStorage`].
#[derive(Default)]
pub(super) struct MemoryAgents {
    state: Mutex<AgentState>,
}

/// One agent transaction: the agent state as it was before (restored on rollback)
/// and the trust records it changed.
struct MemoryAgentTransaction<'s> {
    storage: &'s MemoryStorage,
    state: AgentState,
    trust_before: Vec<(Perspective, String, Option<TrustRecord>)>,
}

impl MemoryAgentTransaction<'_> {
    fn remember(&mut self, perspective: Perspective, id: &str) {
        let id = id.to_lowercase();
        if !self
            .trust_before
            .iter()
            .any(|(side, known, _)| *side == perspective && *known == id)
        {
            let before = self.storage.inner.trust.side(perspective).get_sync(&id);
            self.trust_before.push((perspective, id, before));
        }
    }

    fn roll_back(self) {
        for (perspective, id, before) in self.trust_before.into_iter().rev() {
            // In memory a restore cannot fail (there is no file to write).
            let _ = self
                .storage
                .inner
                .trust
                .side(perspective)
                .restore_sync(&id, before);
        }
    }
}

impl AgentTransaction for MemoryAgentTransaction<'_> {
    fn put_enrollment_token(&mut self, key: &[u8; 32], token: &EnrollmentToken) -> StoreResult<()> {
        self.state.tokens.insert(*key, token.clone());
        Ok(())
    }

    fn take_enrollment_token(&mut self, key: &[u8; 32]) -> StoreResult<Option<EnrollmentToken>> {
        Ok(self.state.tokens.remove(key))
    }

    fn session(&mut self, agent_id: &str) -> StoreResult<Option<AgentSession>> {
        Ok(self.state.sessions.get(agent_id).cloned())
    }

    fn put_session(&mut self, session: &AgentSession) -> StoreResult<()> {
        self.state
            .sessions
            .insert(session.agent_id.clone(), session.clone());
        Ok(())
    }

    fn delete_session(&mut self, agent_id: &str) -> StoreResult<bool> {
        Ok(self.state.sessions.remove(agent_id).is_some())
    }

    fn trust(&mut self, perspective: Perspective, id: &str) -> StoreResult<Option<TrustRecord>> {
        Ok(self.storage.inner.trust.side(perspective).get_sync(id))
    }

    fn create_trust(
        &mut self,
        perspective: Perspective,
        record: NewTrustRecord,
    ) -> StoreResult<TrustRecord> {
        let id = crate::identity::compute_trust_id(&record.sender_id, &record.receiver_id);
        self.remember(perspective, &id);
        self.storage
            .inner
            .trust
            .side(perspective)
            .create_sync(record, None)
    }

    fn update_trust(
        &mut self,
        perspective: Perspective,
        id: &str,
        patch: TrustPatch,
    ) -> StoreResult<TrustRecord> {
        self.remember(perspective, id);
        self.storage
            .inner
            .trust
            .side(perspective)
            .update_sync(id, patch)
    }

    fn delete_trust(&mut self, perspective: Perspective, id: &str) -> StoreResult<bool> {
        self.remember(perspective, id);
        self.storage.inner.trust.side(perspective).delete_sync(id)
    }
}

impl AgentStore for MemoryStorage {
    fn session<'a>(
        &'a self,
        agent_id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<AgentSession>>> {
        let state = lock(&self.inner.agents.state);
        ready(Ok(state.sessions.get(agent_id).cloned()))
    }

    fn sessions_of<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, StoreResult<Vec<AgentSession>>> {
        let owner = owner.to_lowercase();
        let state = lock(&self.inner.agents.state);
        ready(Ok(state
            .sessions
            .values()
            .filter(|session| session.owner.to_lowercase() == owner)
            .cloned()
            .collect()))
    }

    fn transact(
        &self,
        work: &mut dyn FnMut(&mut dyn AgentTransaction) -> StoreResult<bool>,
    ) -> StoreResult<()> {
        let mut generation = lock(&self.inner.transactions);
        *generation += 1;
        let state = lock(&self.inner.agents.state).clone();
        let mut transaction = MemoryAgentTransaction {
            storage: self,
            state,
            trust_before: Vec::new(),
        };
        match work(&mut transaction) {
            Ok(true) => {
                *lock(&self.inner.agents.state) = transaction.state;
                Ok(())
            }
            Ok(false) => {
                transaction.roll_back();
                Ok(())
            }
            Err(error) => {
                transaction.roll_back();
                Err(error)
            }
        }
    }

    fn sweep(&self, now_millis: i64) -> StoreResult<(u64, u64)> {
        let _generation = lock(&self.inner.transactions);
        let mut state = lock(&self.inner.agents.state);
        let tokens = state.tokens.len();
        state
            .tokens
            .retain(|_, token| token.is_valid_at(now_millis));
        let sessions = state.sessions.len();
        state
            .sessions
            .retain(|_, session| session.refresh_expires_at.millis() >= now_millis);
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Ok((
            count(tokens - state.tokens.len()),
            count(sessions - state.sessions.len()),
        ))
    }
}
