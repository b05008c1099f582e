//! Agent values: enrollment tokens and agent sessions (`07-agents-auth.md` §6.7),
//! record format version 1. Neither holds a secret: a token is the table key's
//! preimage, a refresh token only its SHA-256.

use serde::{Deserialize, Serialize};

use crate::protocol::json::Object;
use crate::store::{AgentSession, EnrollmentToken, StoreError};

use super::{parse_object, parse_timestamp, text, unversioned, versioned};

#[derive(Serialize, Deserialize)]
struct TokenV1 {
    identity: String,
    created_at: String,
    expires_at: String,
    decrypt_by: String,
    issued_by: String,
    metadata: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct SessionV1 {
    owner: String,
    created_at: String,
    refresh_hash: [u8; 32],
    refresh_expires_at: String,
    decrypt_by: String,
    agent_info: Option<String>,
    last_refresh_at: Option<String>,
    retired: Vec<[u8; 32]>,
}

pub(in crate::store::redb) fn encode_token(token: &EnrollmentToken) -> Vec<u8> {
    versioned(&TokenV1 {
        identity: token.identity.clone(),
        created_at: token.created_at.as_str().to_owned(),
        expires_at: token.expires_at.as_str().to_owned(),
        decrypt_by: token.decrypt_by.clone(),
        issued_by: token.issued_by.clone(),
        metadata: token.metadata.as_ref().map(Object::to_canonical),
    })
}

pub(in crate::store::redb) fn decode_token(bytes: &[u8]) -> Result<EnrollmentToken, StoreError> {
    const TABLE: &str = "agent_token";
    let value: TokenV1 = unversioned(TABLE, bytes)?;
    Ok(EnrollmentToken {
        identity: value.identity,
        created_at: parse_timestamp(TABLE, &value.created_at)?,
        expires_at: parse_timestamp(TABLE, &value.expires_at)?,
        decrypt_by: value.decrypt_by,
        issued_by: value.issued_by,
        metadata: value
            .metadata
            .as_deref()
            .map(|text| parse_object(TABLE, text))
            .transpose()?,
    })
}

pub(in crate::store::redb) fn encode_session(session: &AgentSession) -> Vec<u8> {
    versioned(&SessionV1 {
        owner: session.owner.clone(),
        created_at: session.created_at.as_str().to_owned(),
        refresh_hash: session.refresh_hash,
        refresh_expires_at: session.refresh_expires_at.as_str().to_owned(),
        decrypt_by: session.decrypt_by.clone(),
        agent_info: session.agent_info.as_ref().map(Object::to_canonical),
        last_refresh_at: text(session.last_refresh_at.as_ref()),
        retired: session.retired.clone(),
    })
}

pub(in crate::store::redb) fn decode_session(
    agent_id: &str,
    bytes: &[u8],
) -> Result<AgentSession, StoreError> {
    const TABLE: &str = "agent_session";
    let value: SessionV1 = unversioned(TABLE, bytes)?;
    Ok(AgentSession {
        agent_id: agent_id.to_owned(),
        owner: value.owner,
        created_at: parse_timestamp(TABLE, &value.created_at)?,
        refresh_hash: value.refresh_hash,
        refresh_expires_at: parse_timestamp(TABLE, &value.refresh_expires_at)?,
        decrypt_by: value.decrypt_by,
        agent_info: value
            .agent_info
            .as_deref()
            .map(|text| parse_object(TABLE, text))
            .transpose()?,
        last_refresh_at: value
            .last_refresh_at
            .as_deref()
            .map(|text| parse_timestamp(TABLE, text))
            .transpose()?,
        retired: value.retired,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Timestamp;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap()
    }

    /// Golden bytes of a version-1 session value: if this changes, the on-disk
    /// format changed and needs a new record version (and `schema/storage.md`).
    #[test]
    fn session_v1_layout_is_stable() {
        let session = AgentSession {
            agent_id: String::from("btps_ag_x"),
            owner: String::from("a$b.c"),
            created_at: at("2025-01-01T00:00:00.000Z"),
            refresh_hash: [7; 32],
            refresh_expires_at: at("2025-01-08T00:00:00.000Z"),
            decrypt_by: String::from("s$b.c"),
            agent_info: None,
            last_refresh_at: None,
            retired: vec![[1; 32]],
        };
        let bytes = encode_session(&session);
        let mut golden = b"\x01\x05a$b.c\x182025-01-01T00:00:00.000Z".to_vec();
        golden.extend_from_slice(&[7; 32]);
        golden.extend_from_slice(b"\x182025-01-08T00:00:00.000Z\x05s$b.c\x00\x00\x01");
        golden.extend_from_slice(&[1; 32]);
        assert_eq!(bytes, golden);
        assert_eq!(decode_session("btps_ag_x", &golden).unwrap(), session);
    }

    #[test]
    fn tokens_round_trip() {
        let token = EnrollmentToken {
            identity: String::from("a$b.c"),
            created_at: at("2025-01-01T00:00:00.000Z"),
            expires_at: at("2025-01-01T00:15:00.000Z"),
            decrypt_by: String::from("s$b.c"),
            issued_by: String::from("operator"),
            metadata: None,
        };
        assert_eq!(decode_token(&encode_token(&token)).unwrap(), token);
        assert!(decode_token(&[9, 1]).is_err());
    }
}
