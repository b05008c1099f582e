//! The agent tables of the redb store (`07-agents-auth.md` §6.7): enrollment tokens
//! by the hash of their lookup key, agent sessions by agent id with an index by
//! owner, and the [`AgentStore`] over them.
//!
//! A session and its owner index entry are always written and removed together in
//! the caller's write transaction.

use std::ops::Bound;

use redb::ReadableTable;

use crate::store::contract::{AgentStore, KeyedToken};
use crate::store::keys::prefix_end;
use crate::store::keys::string_part;
use crate::store::{
    AgentSession, BoxFuture, EnrollmentToken, Mailbox, MailboxEntry, RecordKind, RedbStore,
    StoreError, StoreResult,
};

use super::codec;
use super::tables::{
    AGENT_BY_OWNER, AGENT_SESSION, AGENT_TOKEN, Bytes, MAILBOX_ARTIFACT, MAILBOX_ENTRY,
    agent_owner_key,
};
use super::{Snapshot, WriteBatch};

/// Reads a session from an open table.
fn read_session(
    table: &impl ReadableTable<&'static str, Bytes>,
    path: &std::path::Path,
    agent_id: &str,
) -> StoreResult<Option<AgentSession>> {
    let found = table
        .get(agent_id)
        .map_err(|e| super::error::database_error(path, e))?;
    found
        .map(|guard| codec::decode_session(agent_id, guard.value()))
        .transpose()
}

/// The agent ids under `owner` (case-insensitive) in the owner index.
fn owner_agents(
    index: &impl ReadableTable<Bytes, ()>,
    path: &std::path::Path,
    owner: &str,
) -> StoreResult<Vec<String>> {
    let error = |e| super::error::database_error(path, e);
    let prefix = string_part(&owner.to_lowercase());
    let end = prefix_end(&prefix);
    let bounds = (
        Bound::Included(prefix.as_slice()),
        end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
    );
    let mut agents = Vec::new();
    for item in index.range::<&[u8]>(bounds).map_err(error)? {
        let (key, ()) = item
            .map(|(key, value)| (key, value.value()))
            .map_err(error)?;
        // str(owner) ++ str(agent id): skip the owner part and the agent id's length.
        let agent = key
            .value()
            .get(prefix.len() + 4..)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .ok_or_else(|| StoreError::Decode {
                table: "agent_by_owner",
                detail: String::from("malformed index key"),
            })?;
        agents.push(agent.to_owned());
    }
    Ok(agents)
}

impl Snapshot<'_> {
    /// The session of `agent_id`, if any.
    pub fn agent_session(&self, agent_id: &str) -> StoreResult<Option<AgentSession>> {
        let error = |e| super::error::database_error(self.path, e);
        let table = self.txn.open_table(AGENT_SESSION).map_err(error)?;
        read_session(&table, self.path, agent_id)
    }

    /// The sessions of `owner` (case-insensitive), by agent id; every session when
    /// `owner` is `None`.
    pub fn agent_sessions(&self, owner: Option<&str>) -> StoreResult<Vec<AgentSession>> {
        let error = |e| super::error::database_error(self.path, e);
        let table = self.txn.open_table(AGENT_SESSION).map_err(error)?;
        match owner {
            Some(owner) => {
                let index = self.txn.open_table(AGENT_BY_OWNER).map_err(error)?;
                owner_agents(&index, self.path, owner)?
                    .iter()
                    .filter_map(|agent| read_session(&table, self.path, agent).transpose())
                    .collect()
            }
            None => {
                let mut sessions = Vec::new();
                for item in table.iter().map_err(|e| self.error_of(e))? {
                    let (key, value) = item.map_err(|e| self.error_of(e))?;
                    sessions.push(codec::decode_session(key.value(), value.value())?);
                }
                Ok(sessions)
            }
        }
    }

    /// Every stored enrollment token with its key, in key order.
    pub fn enrollment_tokens(&self) -> StoreResult<Vec<([u8; 32], EnrollmentToken)>> {
        let error = |e| super::error::database_error(self.path, e);
        let table = self.txn.open_table(AGENT_TOKEN).map_err(error)?;
        let mut tokens = Vec::new();
        for item in table.iter().map_err(|e| self.error_of(e))? {
            let (key, value) = item.map_err(|e| self.error_of(e))?;
            let key = <[u8; 32]>::try_from(key.value()).map_err(|_| StoreError::Decode {
                table: "agent_token",
                detail: String::from("a key that is not 32 bytes"),
            })?;
            tokens.push((key, codec::decode_token(value.value())?));
        }
        Ok(tokens)
    }

    fn error_of(&self, error: impl Into<redb::Error>) -> StoreError {
        super::error::database_error(self.path, error)
    }
}

impl WriteBatch<'_> {
    /// Stores an enrollment token under `key` (replacing any token there).
    pub fn put_enrollment_token(
        &mut self,
        key: &[u8; 32],
        token: &EnrollmentToken,
    ) -> StoreResult<()> {
        let mut table = self
            .txn
            .open_table(AGENT_TOKEN)
            .map_err(|e| self.error(e))?;
        table
            .insert(key.as_slice(), codec::encode_token(token).as_slice())
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// The enrollment token under `key`, as this transaction sees it.
    pub fn enrollment_token(&self, key: &[u8; 32]) -> StoreResult<Option<EnrollmentToken>> {
        let table = self
            .txn
            .open_table(AGENT_TOKEN)
            .map_err(|e| self.error(e))?;
        let found = table.get(key.as_slice()).map_err(|e| self.error(e))?;
        found
            .map(|guard| codec::decode_token(guard.value()))
            .transpose()
    }

    /// Removes the enrollment token under `key`; whether there was one.
    pub fn delete_enrollment_token(&mut self, key: &[u8; 32]) -> StoreResult<bool> {
        let mut table = self
            .txn
            .open_table(AGENT_TOKEN)
            .map_err(|e| self.error(e))?;
        let removed = table.remove(key.as_slice()).map_err(|e| self.error(e))?;
        Ok(removed.is_some())
    }

    /// The entries of (`owner`, `mailbox`) holding `artifact_id`, as this
    /// transaction sees them.
    pub fn mailbox_entries_by_artifact(
        &self,
        owner: &str,
        mailbox: Mailbox,
        artifact_id: &str,
    ) -> StoreResult<Vec<MailboxEntry>> {
        let error = |e| super::error::database_error(self.path, e);
        let index = self.txn.open_table(MAILBOX_ARTIFACT).map_err(error)?;
        let entries = self.txn.open_table(MAILBOX_ENTRY).map_err(error)?;
        super::mailbox::entries_by_artifact(
            &index,
            &entries,
            self.path,
            owner,
            mailbox,
            artifact_id,
        )
    }

    /// The session of `agent_id` as this transaction sees it.
    pub fn agent_session(&self, agent_id: &str) -> StoreResult<Option<AgentSession>> {
        let table = self
            .txn
            .open_table(AGENT_SESSION)
            .map_err(|e| self.error(e))?;
        read_session(&table, self.path, agent_id)
    }

    /// Stores `session` and its owner index entry (moving the entry when the owner
    /// changed).
    pub fn put_agent_session(&mut self, session: &AgentSession) -> StoreResult<()> {
        if session.agent_id.is_empty() || session.owner.is_empty() {
            return Err(StoreError::Invalid {
                kind: RecordKind::AgentSession,
                reason: String::from("agent id and owner must not be empty"),
            });
        }
        let previous = self.agent_session(&session.agent_id)?;
        let mut index = self
            .txn
            .open_table(AGENT_BY_OWNER)
            .map_err(|e| self.error(e))?;
        if let Some(previous) = previous {
            index
                .remove(agent_owner_key(&previous.owner, &previous.agent_id).as_slice())
                .map_err(|e| self.error(e))?;
        }
        index
            .insert(
                agent_owner_key(&session.owner, &session.agent_id).as_slice(),
                (),
            )
            .map_err(|e| self.error(e))?;
        let mut table = self
            .txn
            .open_table(AGENT_SESSION)
            .map_err(|e| self.error(e))?;
        table
            .insert(
                session.agent_id.as_str(),
                codec::encode_session(session).as_slice(),
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Removes the session of `agent_id` and its owner index entry; whether it
    /// existed.
    pub fn delete_agent_session(&mut self, agent_id: &str) -> StoreResult<bool> {
        let Some(previous) = self.agent_session(agent_id)? else {
            return Ok(false);
        };
        let mut index = self
            .txn
            .open_table(AGENT_BY_OWNER)
            .map_err(|e| self.error(e))?;
        index
            .remove(agent_owner_key(&previous.owner, agent_id).as_slice())
            .map_err(|e| self.error(e))?;
        let mut table = self
            .txn
            .open_table(AGENT_SESSION)
            .map_err(|e| self.error(e))?;
        table.remove(agent_id).map_err(|e| self.error(e))?;
        Ok(true)
    }

    /// Removes the tokens and sessions expired before `now_millis`; how many of each.
    pub fn sweep_agents(&mut self, now_millis: i64) -> StoreResult<(u64, u64)> {
        let expired_tokens: Vec<[u8; 32]> = {
            let table = self
                .txn
                .open_table(AGENT_TOKEN)
                .map_err(|e| self.error(e))?;
            let mut keys = Vec::new();
            for item in table.iter().map_err(|e| self.error(e))? {
                let (key, value) = item.map_err(|e| self.error(e))?;
                let token = codec::decode_token(value.value())?;
                if !token.is_valid_at(now_millis)
                    && let Ok(key) = <[u8; 32]>::try_from(key.value())
                {
                    keys.push(key);
                }
            }
            keys
        };
        for key in &expired_tokens {
            self.delete_enrollment_token(key)?;
        }
        let expired_sessions: Vec<String> = {
            let table = self
                .txn
                .open_table(AGENT_SESSION)
                .map_err(|e| self.error(e))?;
            let mut agents = Vec::new();
            for item in table.iter().map_err(|e| self.error(e))? {
                let (key, value) = item.map_err(|e| self.error(e))?;
                let session = codec::decode_session(key.value(), value.value())?;
                if session.refresh_expires_at.millis() < now_millis {
                    agents.push(session.agent_id);
                }
            }
            agents
        };
        for agent in &expired_sessions {
            self.delete_agent_session(agent)?;
        }
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Ok((count(expired_tokens.len()), count(expired_sessions.len())))
    }
}

fn blocking<T: Send + 'static>(
    store: &RedbStore,
    work: impl FnOnce(&RedbStore) -> StoreResult<T> + Send + 'static,
) -> BoxFuture<'static, StoreResult<T>> {
    let store = store.clone();
    Box::pin(async move {
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|error| StoreError::TaskFailed(error.to_string()))?
    })
}

impl AgentStore for RedbStore {
    fn session<'a>(
        &'a self,
        agent_id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<AgentSession>>> {
        let agent_id = agent_id.to_owned();
        blocking(self, move |store| {
            store.read(|snapshot| snapshot.agent_session(&agent_id))
        })
    }

    fn sessions<'a>(
        &'a self,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<Vec<AgentSession>>> {
        let owner = owner.map(str::to_owned);
        blocking(self, move |store| {
            store.read(|snapshot| snapshot.agent_sessions(owner.as_deref()))
        })
    }

    fn enrollment_tokens(&self) -> BoxFuture<'_, StoreResult<Vec<KeyedToken>>> {
        blocking(self, |store| {
            store.read(|snapshot| snapshot.enrollment_tokens())
        })
    }

    fn sweep(&self, now_millis: i64) -> StoreResult<(u64, u64)> {
        self.write_if_changed(|batch| {
            let swept = batch.sweep_agents(now_millis)?;
            Ok((swept, swept != (0, 0)))
        })
    }
}
