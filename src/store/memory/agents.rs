//! Enrollment tokens and agent sessions in memory: the agent methods of a
//! [`MemoryStorage`] transaction (with their undo entries) and its [`AgentStore`].

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{MemoryStorage, MemoryTransaction, Undo, lock, ready};
use crate::store::contract::{AgentStore, KeyedToken};
use crate::store::{AgentSession, BoxFuture, EnrollmentToken, StoreResult};

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

impl MemoryAgents {
    /// Puts back the state a rolled-back transaction changed.
    pub(super) fn restore(&self, state: AgentState) {
        *lock(&self.state) = state;
    }
}

/// The agent methods of a memory transaction: each change first remembers the
/// agent state as it was (once per transaction), which a rollback restores.
impl MemoryTransaction<'_> {
    fn agents_changing(&mut self) -> std::sync::MutexGuard<'_, AgentState> {
        let state = lock(&self.storage.agents.state);
        if !self
            .undo
            .iter()
            .any(|change| matches!(change, Undo::Agents(_)))
        {
            self.undo.push(Undo::Agents(Box::new(state.clone())));
        }
        state
    }

    pub(super) fn enrollment_token_of(&self, key: &[u8; 32]) -> Option<EnrollmentToken> {
        lock(&self.storage.agents.state).tokens.get(key).cloned()
    }

    pub(super) fn put_token(&mut self, key: &[u8; 32], token: &EnrollmentToken) {
        self.agents_changing().tokens.insert(*key, token.clone());
    }

    pub(super) fn delete_token(&mut self, key: &[u8; 32]) -> bool {
        self.agents_changing().tokens.remove(key).is_some()
    }

    pub(super) fn session_of(&self, agent_id: &str) -> Option<AgentSession> {
        lock(&self.storage.agents.state)
            .sessions
            .get(agent_id)
            .cloned()
    }

    pub(super) fn put_agent_session(&mut self, session: &AgentSession) {
        self.agents_changing()
            .sessions
            .insert(session.agent_id.clone(), session.clone());
    }

    pub(super) fn delete_agent_session(&mut self, agent_id: &str) -> bool {
        self.agents_changing().sessions.remove(agent_id).is_some()
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

    fn sessions<'a>(
        &'a self,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<Vec<AgentSession>>> {
        let owner = owner.map(str::to_lowercase);
        let state = lock(&self.inner.agents.state);
        ready(Ok(state
            .sessions
            .values()
            .filter(|session| {
                owner
                    .as_ref()
                    .is_none_or(|owner| session.owner.to_lowercase() == *owner)
            })
            .cloned()
            .collect()))
    }

    fn enrollment_tokens(&self) -> BoxFuture<'_, StoreResult<Vec<KeyedToken>>> {
        let state = lock(&self.inner.agents.state);
        ready(Ok(state
            .tokens
            .iter()
            .map(|(key, token)| (*key, token.clone()))
            .collect()))
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
