//! The handler of identity lookups (`spec/04-identity-dns.md` §7); agent
//! artifacts are handled in [`super::agent`].

use crate::crypto::PublicKey;
use crate::protocol::json::{Object, Value};
use crate::protocol::response;
use crate::protocol::{ErrorCode, IdentityLookupRequest, ProtocolError};
use crate::server::pipeline::{After, Pipeline, Reply};
use crate::signing;

impl Pipeline {
    pub(super) async fn identity_lookup(
        &self,
        lookup: &IdentityLookupRequest,
    ) -> Result<Reply, ProtocolError> {
        let not_found = || {
            ProtocolError::new(
                ErrorCode::IdentityNotFound,
                format!("no key for {}", lookup.identity),
            )
        };
        let record = self.hosted(&lookup.identity).await?.ok_or_else(not_found)?;
        let selector = lookup
            .identity_selector
            .as_deref()
            .unwrap_or(&record.current_selector);
        let key = record
            .public_keys
            .iter()
            .find(|key| key.selector == selector)
            .ok_or_else(not_found)?;
        let document = key_document(key);
        let mut answer = response::success("success", Some(&lookup.id));
        answer.insert("selector", self.server_selector.as_str());
        answer.insert("document", Value::Object(document));
        answer.insert(
            "signedBy",
            (self.lookup_signer)(lookup.identity.domain()).as_str(),
        );
        signing::sign_object(&mut answer, &self.server_key);
        Ok(Reply::respond(&answer, After::End))
    }
}

/// The identity key document of a lookup answer: the stored key record minus
/// `createdAt`, members in stored order, the key as SPKI PEM (`spec/04-identity-dns.md` §7).
fn key_document(key: &crate::store::PublicKeyRecord) -> Object {
    let pem = if key.public_key.trim_start().starts_with("-----BEGIN") {
        key.public_key.clone()
    } else {
        PublicKey::from_base64_spki(key.public_key.trim())
            .map_or_else(|_| key.public_key.clone(), |parsed| parsed.to_pem())
    };
    match &key.source {
        Some(source) => {
            let mut document = source.0.clone();
            document.remove("createdAt");
            if document.contains_key("publicKey") {
                document.insert("publicKey", pem);
            }
            document
        }
        None => {
            let mut document = Object::new();
            document.insert("selector", key.selector.as_str());
            document.insert("publicKey", pem);
            document.insert("keyType", key.key_type.as_str());
            document.insert("version", key.version.as_str());
            document
        }
    }
}
