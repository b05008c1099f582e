//! Agents beside the reference's JSON files: enrollment tokens and sessions live in
//! the inner backend (the files have no place for them), agent trust records in the
//! trust file, where the reference keeps them; the transaction that changes both is
//! the storage's [`Storage::transact`](crate::store::Storage::transact).

use super::JsonFilesStorage;
use crate::store::contract::{AgentStore, KeyedToken};
use crate::store::{AgentSession, BoxFuture, StoreError, StoreResult};

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

    fn sessions<'a>(
        &'a self,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<Vec<AgentSession>>> {
        Box::pin(async move { self.inner_agents()?.sessions(owner).await })
    }

    fn enrollment_tokens(&self) -> BoxFuture<'_, StoreResult<Vec<KeyedToken>>> {
        Box::pin(async move { self.inner_agents()?.enrollment_tokens().await })
    }

    fn sweep(&self, now_millis: i64) -> StoreResult<(u64, u64)> {
        self.inner_agents()?.sweep(now_millis)
    }
}
