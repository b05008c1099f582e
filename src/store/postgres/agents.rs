//! Enrollment tokens and agent sessions (`07-agents-auth.md` §6.7): one row each,
//! the record as a small JSON object beside the columns the lookups, the owner
//! listing and the sweep need (schema version 2).

use std::sync::Arc;

use deadpool_postgres::ClientWrapper;

use super::records::{execute, rows};
use super::{Db, Parts};
use crate::protocol::json::{JsString, Object, Value, parse};
use crate::store::contract::{AgentStore, KeyedToken};
use crate::store::keys::{hex_decode, id_text};
use crate::store::{AgentSession, BoxFuture, EnrollmentToken, StoreResult, Timestamp};

fn text(value: &str) -> Value {
    Value::String(JsString::from(value))
}

fn time(value: &Timestamp) -> Value {
    text(value.as_str())
}

pub(crate) fn encode_token(token: &EnrollmentToken) -> String {
    let mut object = Object::new();
    object.insert("identity", text(&token.identity));
    object.insert("createdAt", time(&token.created_at));
    object.insert("expiresAt", time(&token.expires_at));
    object.insert("decryptBy", text(&token.decrypt_by));
    object.insert("issuedBy", text(&token.issued_by));
    if let Some(metadata) = &token.metadata {
        object.insert("metadata", Value::Object(metadata.clone()));
    }
    Value::Object(object).to_canonical()
}

pub(crate) fn encode_session(session: &AgentSession) -> String {
    let mut object = Object::new();
    object.insert("agentId", text(&session.agent_id));
    object.insert("owner", text(&session.owner));
    object.insert("createdAt", time(&session.created_at));
    object.insert("refreshHash", text(&id_text(&session.refresh_hash)));
    object.insert("refreshExpiresAt", time(&session.refresh_expires_at));
    object.insert("decryptBy", text(&session.decrypt_by));
    if let Some(info) = &session.agent_info {
        object.insert("agentInfo", Value::Object(info.clone()));
    }
    if let Some(at) = &session.last_refresh_at {
        object.insert("lastRefreshAt", time(at));
    }
    let retired = session
        .retired
        .iter()
        .map(|hash| text(&id_text(hash)))
        .collect();
    object.insert("retired", Value::Array(retired));
    Value::Object(object).to_canonical()
}

/// The fields of a stored object, each read with what it must be.
struct Fields(Object);

impl Fields {
    fn parse(stored: &str) -> Result<Self, String> {
        match parse(stored) {
            Ok(Value::Object(object)) => Ok(Fields(object)),
            _ => Err("not a JSON object".to_owned()),
        }
    }

    fn text(&self, key: &str) -> Result<String, String> {
        self.0
            .str(key)
            .map(str::to_owned)
            .ok_or_else(|| format!("{key}: expected a string"))
    }

    fn time(&self, key: &str) -> Result<Timestamp, String> {
        Timestamp::parse(&self.text(key)?).map_err(|error| format!("{key}: {error}"))
    }

    fn optional_time(&self, key: &str) -> Result<Option<Timestamp>, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.time(key).map(Some),
        }
    }

    fn object(&self, key: &str) -> Result<Option<Object>, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(object)) => Ok(Some(object.clone())),
            Some(_) => Err(format!("{key}: expected an object")),
        }
    }
}

fn hash(text: &str) -> Result<[u8; 32], String> {
    hex_decode(text)
        .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
        .ok_or_else(|| "expected 64 hex digits".to_owned())
}

pub(crate) fn decode_token(stored: &str) -> Result<EnrollmentToken, String> {
    let fields = Fields::parse(stored)?;
    Ok(EnrollmentToken {
        identity: fields.text("identity")?,
        created_at: fields.time("createdAt")?,
        expires_at: fields.time("expiresAt")?,
        decrypt_by: fields.text("decryptBy")?,
        issued_by: fields.text("issuedBy")?,
        metadata: fields.object("metadata")?,
    })
}

pub(crate) fn decode_session(stored: &str) -> Result<AgentSession, String> {
    let fields = Fields::parse(stored)?;
    let retired = match fields.0.get("retired") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => hash(text.as_str().unwrap_or_default()),
                _ => Err("retired: expected strings".to_owned()),
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
        Some(_) => return Err("retired: expected an array".to_owned()),
    };
    Ok(AgentSession {
        agent_id: fields.text("agentId")?,
        owner: fields.text("owner")?,
        created_at: fields.time("createdAt")?,
        refresh_hash: hash(&fields.text("refreshHash")?)
            .map_err(|e| format!("refreshHash: {e}"))?,
        refresh_expires_at: fields.time("refreshExpiresAt")?,
        decrypt_by: fields.text("decryptBy")?,
        agent_info: fields.object("agentInfo")?,
        last_refresh_at: fields.optional_time("lastRefreshAt")?,
        retired,
    })
}

/// The statements on the agent tables.
pub(crate) struct AgentSql;

impl AgentSql {
    pub(crate) async fn token(
        client: &ClientWrapper,
        parts: &Parts,
        key: [u8; 32],
    ) -> StoreResult<Option<EnrollmentToken>> {
        let found = rows(
            client,
            &parts.errors,
            "SELECT record FROM btps_enrollment_tokens WHERE key = $1 FOR UPDATE",
            &[&key.as_slice()],
        )
        .await?;
        found
            .first()
            .map(|row| {
                let stored: String = row.try_get(0).map_err(|e| parts.errors.query(&e))?;
                decode_token(&stored)
                    .map_err(|reason| parts.errors.decode("btps_enrollment_tokens", reason))
            })
            .transpose()
    }

    pub(crate) async fn put_token(
        client: &ClientWrapper,
        parts: &Parts,
        key: [u8; 32],
        token: &EnrollmentToken,
    ) -> StoreResult<()> {
        execute(
            client,
            &parts.errors,
            "INSERT INTO btps_enrollment_tokens (key, expires_at, record) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at,
                 record = EXCLUDED.record",
            &[
                &key.as_slice(),
                &token.expires_at.millis(),
                &encode_token(token),
            ],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn delete_token(
        client: &ClientWrapper,
        parts: &Parts,
        key: [u8; 32],
    ) -> StoreResult<bool> {
        let changed = execute(
            client,
            &parts.errors,
            "DELETE FROM btps_enrollment_tokens WHERE key = $1",
            &[&key.as_slice()],
        )
        .await?;
        Ok(changed.unwrap_or(0) > 0)
    }

    pub(crate) async fn session(
        client: &ClientWrapper,
        parts: &Parts,
        agent_id: &str,
        for_update: bool,
    ) -> StoreResult<Option<AgentSession>> {
        let sql = if for_update {
            "SELECT record FROM btps_agent_sessions WHERE agent_id = $1 FOR UPDATE"
        } else {
            "SELECT record FROM btps_agent_sessions WHERE agent_id = $1"
        };
        let found = rows(client, &parts.errors, sql, &[&agent_id]).await?;
        found
            .first()
            .map(|row| {
                let stored: String = row.try_get(0).map_err(|e| parts.errors.query(&e))?;
                decode_session(&stored)
                    .map_err(|reason| parts.errors.decode("btps_agent_sessions", reason))
            })
            .transpose()
    }

    pub(crate) async fn put_session(
        client: &ClientWrapper,
        parts: &Parts,
        session: &AgentSession,
    ) -> StoreResult<()> {
        execute(
            client,
            &parts.errors,
            "INSERT INTO btps_agent_sessions (agent_id, owner_lc, expires_at, record)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (agent_id) DO UPDATE SET owner_lc = EXCLUDED.owner_lc,
                 expires_at = EXCLUDED.expires_at, record = EXCLUDED.record",
            &[
                &session.agent_id,
                &session.owner.to_lowercase(),
                &session.refresh_expires_at.millis(),
                &encode_session(session),
            ],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn delete_session(
        client: &ClientWrapper,
        parts: &Parts,
        agent_id: &str,
    ) -> StoreResult<bool> {
        let changed = execute(
            client,
            &parts.errors,
            "DELETE FROM btps_agent_sessions WHERE agent_id = $1",
            &[&agent_id],
        )
        .await?;
        Ok(changed.unwrap_or(0) > 0)
    }
}

/// [`AgentStore`] on the database.
#[derive(Clone)]
pub(crate) struct PgAgents {
    pub(crate) db: Arc<Db>,
}

impl AgentStore for PgAgents {
    fn session<'a>(
        &'a self,
        agent_id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<AgentSession>>> {
        let parts = self.db.parts();
        let agent_id = agent_id.to_owned();
        Box::pin(self.db.run(async move {
            parts
                .with(|client, parts| async move {
                    AgentSql::session(&client, &parts, &agent_id, false).await
                })
                .await
        }))
    }

    fn sessions<'a>(
        &'a self,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<Vec<AgentSession>>> {
        let parts = self.db.parts();
        let owner = owner.map(str::to_lowercase);
        Box::pin(self.db.run(async move {
            parts
                .with(|client, parts| async move {
                    let found = match &owner {
                        Some(owner) => {
                            rows(
                                &client,
                                &parts.errors,
                                "SELECT record FROM btps_agent_sessions WHERE owner_lc = $1
                                 ORDER BY agent_id",
                                &[owner],
                            )
                            .await?
                        }
                        None => {
                            rows(
                                &client,
                                &parts.errors,
                                "SELECT record FROM btps_agent_sessions ORDER BY agent_id",
                                &[],
                            )
                            .await?
                        }
                    };
                    found
                        .iter()
                        .map(|row| {
                            let stored: String =
                                row.try_get(0).map_err(|e| parts.errors.query(&e))?;
                            decode_session(&stored).map_err(|reason| {
                                parts.errors.decode("btps_agent_sessions", reason)
                            })
                        })
                        .collect()
                })
                .await
        }))
    }

    fn enrollment_tokens(&self) -> BoxFuture<'_, StoreResult<Vec<KeyedToken>>> {
        let parts = self.db.parts();
        Box::pin(self.db.run(async move {
            parts
                .with(|client, parts| async move {
                    let found = rows(
                        &client,
                        &parts.errors,
                        "SELECT key, record FROM btps_enrollment_tokens ORDER BY key",
                        &[],
                    )
                    .await?;
                    found
                        .iter()
                        .map(|row| {
                            let key: Vec<u8> =
                                row.try_get(0).map_err(|e| parts.errors.query(&e))?;
                            let stored: String =
                                row.try_get(1).map_err(|e| parts.errors.query(&e))?;
                            let bad = |reason: String| {
                                parts.errors.decode("btps_enrollment_tokens", reason)
                            };
                            let key = <[u8; 32]>::try_from(key.as_slice())
                                .map_err(|_| bad("a key of another length".to_owned()))?;
                            Ok((key, decode_token(&stored).map_err(bad)?))
                        })
                        .collect()
                })
                .await
        }))
    }

    fn sweep(&self, now_millis: i64) -> StoreResult<(u64, u64)> {
        let parts = self.db.parts();
        self.db.block(async move {
            parts
                .in_transaction(|client, parts| async move {
                    let tokens = execute(
                        &client,
                        &parts.errors,
                        "DELETE FROM btps_enrollment_tokens WHERE expires_at < $1",
                        &[&now_millis],
                    )
                    .await?;
                    let sessions = execute(
                        &client,
                        &parts.errors,
                        "DELETE FROM btps_agent_sessions WHERE expires_at < $1",
                        &[&now_millis],
                    )
                    .await?;
                    Ok((tokens.unwrap_or(0), sessions.unwrap_or(0)))
                })
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_sessions_read_back_exactly() {
        let at = Timestamp::parse("2025-01-01T00:00:00.000Z").unwrap();
        let mut metadata = Object::new();
        metadata.insert("purpose", text("erp"));
        let token = EnrollmentToken {
            identity: "Finance$Client.test".to_owned(),
            created_at: at.clone(),
            expires_at: at.clone(),
            decrypt_by: "admin$client.test".to_owned(),
            issued_by: "op".to_owned(),
            metadata: Some(metadata.clone()),
        };
        assert_eq!(decode_token(&encode_token(&token)), Ok(token));
        let session = AgentSession {
            agent_id: "btps_ag_1".to_owned(),
            owner: "finance$client.test".to_owned(),
            created_at: at.clone(),
            refresh_hash: [7; 32],
            refresh_expires_at: at.clone(),
            decrypt_by: "admin$client.test".to_owned(),
            agent_info: Some(metadata),
            last_refresh_at: Some(at),
            retired: vec![[1; 32], [2; 32]],
        };
        assert_eq!(decode_session(&encode_session(&session)), Ok(session));
        assert!(decode_session("{}").is_err());
        assert!(decode_token("[]").is_err());
    }
}
