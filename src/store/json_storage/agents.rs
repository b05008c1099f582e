//! Agents beside the reference's JSON files: enrollment tokens and sessions live in
//! the inner backend (the files have no place for them), agent trust records in the
//! trust file, where the reference keeps them. As for inbound artifacts, the file
//! changes are written as they are made, under the storage's lock, and the inner
//! transaction commits after them.

use super::JsonFilesStorage;
use crate::store::contract::{AgentStore, AgentTransaction};
use crate::store::{
    AgentSession, BoxFuture, EnrollmentToken, NewTrustRecord, Perspective, StoreError, StoreResult,
    TrustPatch, TrustRecord,
};

/// Tokens and sessions from the inner transaction, trust records from the file.
struct FileAgentTransaction<'t> {
    files: &'t JsonFilesStorage,
    inner: &'t mut dyn AgentTransaction,
}

impl AgentTransaction for FileAgentTransaction<'_> {
    fn put_enrollment_token(&mut self, key: &[u8; 32], token: &EnrollmentToken) -> StoreResult<()> {
        self.inner.put_enrollment_token(key, token)
    }

    fn take_enrollment_token(&mut self, key: &[u8; 32]) -> StoreResult<Option<EnrollmentToken>> {
        self.inner.take_enrollment_token(key)
    }

    fn session(&mut self, agent_id: &str) -> StoreResult<Option<AgentSession>> {
        self.inner.session(agent_id)
    }

    fn put_session(&mut self, session: &AgentSession) -> StoreResult<()> {
        self.inner.put_session(session)
    }

    fn delete_session(&mut self, agent_id: &str) -> StoreResult<bool> {
        self.inner.delete_session(agent_id)
    }

    fn trust(&mut self, _perspective: Perspective, id: &str) -> StoreResult<Option<TrustRecord>> {
        Ok(self.files.trust.get_sync(id))
    }

    fn create_trust(
        &mut self,
        _perspective: Perspective,
        record: NewTrustRecord,
    ) -> StoreResult<TrustRecord> {
        self.files.trust.create_sync(record, None)
    }

    fn update_trust(
        &mut self,
        _perspective: Perspective,
        id: &str,
        patch: TrustPatch,
    ) -> StoreResult<TrustRecord> {
        self.files.trust.update_sync(id, patch)
    }

    fn delete_trust(&mut self, _perspective: Perspective, id: &str) -> StoreResult<bool> {
        self.files.trust.delete_sync(id)
    }
}

impl JsonFilesStorage {
    fn inner_agents(&self) -> StoreResult<&dyn AgentStore> {
        self.inner.agents().ok_or_else(|| StoreError::Invalid {
            kind: crate::store::RecordKind::AgentSession,
            reason: String::from("the mailbox backend keeps no agent sessions"),
        })
    }
}

impl AgentStore for JsonFilesStorage {
    fn session<'a>(
        &'a self,
        agent_id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<AgentSession>>> {
        Box::pin(async move { self.inner_agents()?.session(agent_id).await })
    }

    fn sessions_of<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, StoreResult<Vec<AgentSession>>> {
        Box::pin(async move { self.inner_agents()?.sessions_of(owner).await })
    }

    fn transact(
        &self,
        work: &mut dyn FnMut(&mut dyn AgentTransaction) -> StoreResult<bool>,
    ) -> StoreResult<()> {
        // A poisoned lock only means a panic elsewhere; every file change is whole.
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.inner_agents()?.transact(&mut |inner| {
            let mut files = FileAgentTransaction { files: self, inner };
            work(&mut files)
        })
    }

    fn sweep(&self, now_millis: i64) -> StoreResult<(u64, u64)> {
        self.inner_agents()?.sweep(now_millis)
    }
}
