//! Answers to agents (`spec/07-agents-auth.md` §3.2, §6.8): `btps_response` with the
//! action's message and document, written only after the action committed.
//!
//! By default answers are neither signed nor encrypted, like the reference's. With
//! `agents.encrypt_answers` a query result is encrypted to the agent's key
//! (`standardEncrypt`) and the answer signed with the server key over exactly the
//! members sent — `encryption` included, so that the reference client's rebuilt
//! object matches — naming the owner's domain signer and the server's selector.

use crate::crypto::EncryptionMode;
use crate::protocol::ProtocolError;
use crate::protocol::json::Value;
use crate::protocol::response;
use crate::server::pipeline::{After, Pipeline, Reply};
use crate::signing;

use super::Verified;

/// What an answer's document is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Content {
    /// A query result: encrypted when the policy says so.
    QueryResult,
    /// Anything else (auth responses, acknowledgements): always plain.
    Plain,
}

impl Pipeline {
    /// A success answer to `verified` with `message` and `document`.
    pub(super) fn agent_answer(
        &self,
        verified: &Verified<'_>,
        message: &str,
        document: Value,
        content: Content,
    ) -> Result<Reply, ProtocolError> {
        let mut answer = response::success(message, Some(&verified.artifact.id));
        if content == Content::QueryResult && self.agents.policy.encrypt_answers {
            let (ciphertext, encryption) =
                signing::encrypt_document(&document, &verified.key, EncryptionMode::Standard)?;
            answer.insert("document", ciphertext);
            answer.insert("encryption", encryption);
            answer.insert(
                "signedBy",
                (self.lookup_signer)(verified.owner.domain()).as_str(),
            );
            answer.insert("selector", self.server_selector.as_str());
            signing::sign_object(&mut answer, &self.server_key);
        } else {
            answer.insert("document", document);
        }
        Ok(Reply::respond(&answer, After::KeepOpen))
    }

    /// [`Self::agent_answer`] of a query result given as JSON text: the stored
    /// artifacts go into the answer byte for byte, without being parsed and written
    /// out again (`document_text` must be one JSON object on one line).
    pub(super) fn agent_answer_text(
        &self,
        verified: &Verified<'_>,
        message: &str,
        document_text: String,
    ) -> Result<Reply, ProtocolError> {
        if self.agents.policy.encrypt_answers {
            // Encrypted, the text is the plaintext as it is.
            return self.agent_answer(
                verified,
                message,
                Value::from(document_text),
                Content::QueryResult,
            );
        }
        let answer = response::success(message, Some(&verified.artifact.id));
        let mut line = answer.to_canonical();
        // The envelope is an object: its text ends with the closing brace.
        line.pop();
        line.reserve(document_text.len() + 13);
        line.push_str(",\"document\":");
        line.push_str(&document_text);
        line.push('}');
        Ok(Reply {
            line: Some(line),
            after: After::KeepOpen,
            request_id: None,
            answered_error: None,
        })
    }
}
