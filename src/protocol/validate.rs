//! Line handling: decode, parse, classify and validate one received line
//! (`spec/01-wire.md` §2–§3, `spec/02-artifacts.md`).
//!
//! The rules are those of the reference's zod schemas, restated in the spec, with the
//! appliance's deliberate differences (listed in `docs/compatibility.md`):
//!
//! * a line is validated against the schema of the kind it was classified as, not
//!   against the union of all schemas;
//! * identities must contain exactly one `$`;
//! * empty `selector` / `hostSelector` values are refused;
//! * the agent document rule is the "careful implementation" of §4.3;
//! * strings used as typed fields (ids, identities, selectors) must be well-formed
//!   Unicode (a lone surrogate there is refused; inside documents it is kept).

use crate::identity::{Identity, IdentityError, is_js_whitespace, is_schema_identity};
use crate::protocol::artifact::{
    AgentAction, AgentArtifact, Artifact, ArtifactKind, Attestation, ControlAction,
    ControlArtifact, DELIVERY_FAILURE_TYPE, Delegation, DeliveryFailureArtifact, EncryptionObject,
    EncryptionType, IdentityLookupRequest, SignatureObject, TransporterArtifact, TransporterType,
};
use crate::protocol::error::{ErrorCode, ProtocolError};
use crate::protocol::formats::{is_currency, is_datetime, is_email, is_url};
use crate::protocol::json::{self, Object, Value};

/// Decodes, parses, classifies and validates one line (without its `\n`).
///
/// Returns `Ok(None)` for a blank line, which the server ignores without answering.
/// Invalid UTF-8 is replaced by U+FFFD first, as the reference's stream decoder does;
/// a single trailing `\r` is part of the separator.
pub fn parse_line(line: &[u8]) -> Result<Option<Artifact>, ProtocolError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // `from_utf8_lossy` decodes character by character even when nothing needs
    // replacing; `from_utf8` checks a valid line (the usual case) several times faster.
    let text = match std::str::from_utf8(line) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(line),
    };
    if text.chars().all(is_js_whitespace) {
        return Ok(None);
    }
    let (value, canonical) = json::parse_noting_canonical(&text)
        .map_err(|error| ProtocolError::new(ErrorCode::InvalidJson, error.to_string()))?;
    let mut artifact = validate(value)?;
    if let (Artifact::Transporter(transporter), Some(canonical)) = (&mut artifact, canonical) {
        transporter.signed_text = canonical.without_signature(&text);
    }
    Ok(Some(artifact))
}

/// Classifies a parsed value by the reference's structural tests, in their order
/// (`spec/01-wire.md` §3). `None` when no kind matches.
pub fn classify(value: &Value) -> Option<ArtifactKind> {
    let object = value.as_object()?;
    let is_string = |key: &str| object.get(key).is_some_and(Value::is_string);
    let has = |key: &str| object.contains_key(key);
    if is_string("action") && !has("agentId") && !has("document") && !has("signature") && !has("to")
    {
        Some(ArtifactKind::Control)
    } else if is_string("from") && is_string("type") && !has("agentId") {
        Some(ArtifactKind::Transporter)
    } else if is_string("identity")
        && is_string("hostSelector")
        && !has("signature")
        && !has("document")
        && !has("to")
    {
        Some(ArtifactKind::IdentityLookup)
    } else if is_string("to") && is_string("action") && has("agentId") && has("signature") {
        Some(ArtifactKind::Agent)
    } else {
        None
    }
}

/// Classifies and validates a parsed value against the schema of its kind.
pub fn validate(value: Value) -> Result<Artifact, ProtocolError> {
    let kind = classify(&value)
        .ok_or_else(|| ProtocolError::validation("no artifact kind matches the line"))?;
    let Value::Object(raw) = value else {
        return Err(ProtocolError::validation("not an object"));
    };
    match kind {
        ArtifactKind::Control => control(raw).map(Artifact::Control),
        ArtifactKind::Transporter => transporter(raw).map(Artifact::Transporter),
        ArtifactKind::IdentityLookup => identity_lookup(raw).map(Artifact::IdentityLookup),
        ArtifactKind::Agent => agent(raw).map(Artifact::Agent),
    }
}

// ---------------------------------------------------------------------------------
// Field access with paths in error messages.
// ---------------------------------------------------------------------------------

type Check<T> = Result<T, ProtocolError>;

fn invalid(path: &str, key: &str, what: &str) -> ProtocolError {
    if path.is_empty() {
        ProtocolError::validation(format!("{key}: {what}"))
    } else {
        ProtocolError::validation(format!("{path}.{key}: {what}"))
    }
}

/// An object being checked, with its path for error messages.
#[derive(Clone, Copy)]
struct Fields<'a> {
    object: &'a Object,
    path: &'a str,
}

impl<'a> Fields<'a> {
    fn new(object: &'a Object, path: &'a str) -> Self {
        Fields { object, path }
    }

    fn error(&self, key: &str, what: &str) -> ProtocolError {
        invalid(self.path, key, what)
    }

    /// A required string member, well-formed Unicode.
    fn string(&self, key: &str) -> Check<&'a str> {
        match self.object.get(key) {
            None => Err(self.error(key, "required")),
            Some(Value::String(string)) => string
                .as_str()
                .ok_or_else(|| self.error(key, "contains a lone surrogate")),
            Some(_) => Err(self.error(key, "must be a string")),
        }
    }

    /// A required string member of any content (documents may carry lone surrogates).
    fn any_string(&self, key: &str) -> Check<()> {
        match self.object.get(key) {
            None => Err(self.error(key, "required")),
            Some(Value::String(_)) => Ok(()),
            Some(_) => Err(self.error(key, "must be a string")),
        }
    }

    /// An optional string member: absent, or a string (`null` is refused).
    fn optional_string(&self, key: &str) -> Check<Option<&'a str>> {
        match self.object.get(key) {
            None => Ok(None),
            Some(_) => self.string(key).map(Some),
        }
    }

    fn optional_any_string(&self, key: &str) -> Check<()> {
        match self.object.get(key) {
            None => Ok(()),
            Some(_) => self.any_string(key),
        }
    }

    fn non_empty_string(&self, key: &str) -> Check<&'a str> {
        let text = self.string(key)?;
        if text.is_empty() {
            Err(self.error(key, "must not be empty"))
        } else {
            Ok(text)
        }
    }

    fn datetime(&self, key: &str) -> Check<&'a str> {
        let text = self.string(key)?;
        if is_datetime(text) {
            Ok(text)
        } else {
            Err(self.error(key, "not an ISO-8601 UTC datetime"))
        }
    }

    fn optional_datetime(&self, key: &str) -> Check<Option<&'a str>> {
        match self.object.get(key) {
            None => Ok(None),
            Some(_) => self.datetime(key).map(Some),
        }
    }

    fn identity(&self, key: &str) -> Check<Identity> {
        let text = self.string(key)?;
        if !is_schema_identity(text) {
            return Err(self.error(key, "not an identity (account$domain)"));
        }
        Identity::parse(text).map_err(|error| match error {
            IdentityError::SeveralDollars => {
                self.error(key, "identity must contain exactly one '$'")
            }
            _ => self.error(key, "not an identity (account$domain)"),
        })
    }

    fn schema_identity(&self, key: &str) -> Check<()> {
        let text = self.string(key)?;
        if is_schema_identity(text) {
            Ok(())
        } else {
            Err(self.error(key, "not an identity (account$domain)"))
        }
    }

    fn optional_format(&self, key: &str, check: fn(&str) -> bool, what: &str) -> Check<()> {
        match self.optional_string(key)? {
            Some(text) if !check(text) => Err(self.error(key, what)),
            _ => Ok(()),
        }
    }

    fn one_of<T>(&self, key: &str, parse: fn(&str) -> Option<T>) -> Check<T> {
        let text = self.string(key)?;
        parse(text).ok_or_else(|| self.error(key, "not an accepted value"))
    }

    fn optional_one_of<T>(&self, key: &str, parse: fn(&str) -> Option<T>) -> Check<Option<T>> {
        match self.object.get(key) {
            None => Ok(None),
            Some(_) => self.one_of(key, parse).map(Some),
        }
    }

    fn number(&self, key: &str) -> Check<f64> {
        match self.object.get(key) {
            None => Err(self.error(key, "required")),
            Some(Value::Number(number)) => Ok(*number),
            Some(_) => Err(self.error(key, "must be a number")),
        }
    }

    fn object(&self, key: &str) -> Check<&'a Object> {
        match self.object.get(key) {
            None => Err(self.error(key, "required")),
            Some(Value::Object(object)) => Ok(object),
            Some(_) => Err(self.error(key, "must be an object")),
        }
    }

    fn optional_object(&self, key: &str) -> Check<Option<&'a Object>> {
        match self.object.get(key) {
            None => Ok(None),
            Some(_) => self.object(key).map(Some),
        }
    }

    fn string_array(&self, key: &str) -> Check<()> {
        match self.object.get(key) {
            None => Err(self.error(key, "required")),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => Ok(()),
            Some(_) => Err(self.error(key, "must be an array of strings")),
        }
    }

    fn optional_string_array(&self, key: &str) -> Check<()> {
        match self.object.get(key) {
            None => Ok(()),
            Some(_) => self.string_array(key),
        }
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

// ---------------------------------------------------------------------------------
// Shared objects.
// ---------------------------------------------------------------------------------

fn signature_object(object: &Object, path: &str) -> Check<SignatureObject> {
    let fields = Fields::new(object, path);
    if fields.string("algorithmHash")? != "sha256" {
        return Err(fields.error("algorithmHash", "must be \"sha256\""));
    }
    Ok(SignatureObject {
        value: fields.string("value")?.to_owned(),
        fingerprint: fields.string("fingerprint")?.to_owned(),
    })
}

fn signature_member(fields: &Fields<'_>) -> Check<SignatureObject> {
    let object = fields.object("signature")?;
    signature_object(object, &fields.child_path("signature"))
}

/// `encryption`: the key must be present, its value `null` or an encryption object.
fn encryption_member(fields: &Fields<'_>) -> Check<Option<EncryptionObject>> {
    match fields.object.get("encryption") {
        None => Err(fields.error("encryption", "required (object or null)")),
        Some(Value::Null) => Ok(None),
        Some(Value::Object(object)) => {
            let path = fields.child_path("encryption");
            let encryption = Fields::new(object, &path);
            if encryption.string("algorithm")? != "aes-256-gcm" {
                return Err(encryption.error("algorithm", "must be \"aes-256-gcm\""));
            }
            Ok(Some(EncryptionObject {
                algorithm: "aes-256-gcm".to_owned(),
                encrypted_key: encryption.string("encryptedKey")?.to_owned(),
                iv: encryption.string("iv")?.to_owned(),
                auth_tag: encryption.string("authTag")?.to_owned(),
                kind: encryption.one_of("type", EncryptionType::parse)?,
            }))
        }
        Some(_) => Err(fields.error("encryption", "must be an object or null")),
    }
}

fn delegation_member(fields: &Fields<'_>) -> Check<Option<Delegation>> {
    let Some(object) = fields.optional_object("delegation")? else {
        return Ok(None);
    };
    let path = fields.child_path("delegation");
    let delegation = Fields::new(object, &path);
    let attestation = match delegation.optional_object("attestation")? {
        None => None,
        Some(object) => {
            let path = delegation.child_path("attestation");
            let attestation = Fields::new(object, &path);
            Some(Attestation {
                signed_by: attestation.identity("signedBy")?,
                issued_at: attestation.datetime("issuedAt")?.to_owned(),
                signature: signature_member(&attestation)?,
                selector: attestation.non_empty_string("selector")?.to_owned(),
            })
        }
    };
    Ok(Some(Delegation {
        agent_id: delegation.string("agentId")?.to_owned(),
        agent_public_key: delegation.string("agentPubKey")?.to_owned(),
        signed_by: delegation.identity("signedBy")?,
        signature: signature_member(&delegation)?,
        issued_at: delegation.datetime("issuedAt")?.to_owned(),
        selector: delegation.non_empty_string("selector")?.to_owned(),
        attestation,
    }))
}

// ---------------------------------------------------------------------------------
// Documents.
// ---------------------------------------------------------------------------------

fn document_object<'a>(value: &'a Value, path: &str) -> Check<&'a Object> {
    value
        .as_object()
        .ok_or_else(|| ProtocolError::validation(format!("{path}: must be an object")))
}

/// Trust request document (`spec/02-artifacts.md` §2.3).
pub fn trust_request_document(value: &Value, path: &str) -> Check<()> {
    let fields = Fields::new(document_object(value, path)?, path);
    fields.any_string("id")?;
    fields.any_string("name")?;
    if !is_email(fields.string("email")?) {
        return Err(fields.error("email", "not an email address"));
    }
    fields.any_string("reason")?;
    fields.any_string("phone")?;
    fields.optional_any_string("address")?;
    fields.optional_format("logoUrl", is_url, "not a URL")?;
    fields.optional_any_string("displayName")?;
    fields.optional_format("websiteUrl", is_url, "not a URL")?;
    fields.optional_any_string("message")?;
    fields.optional_datetime("expiresAt")?;
    fields.optional_one_of("privacyType", privacy_type)?;
    Ok(())
}

/// Trust response document (`spec/02-artifacts.md` §2.4).
pub fn trust_response_document(value: &Value, path: &str) -> Check<()> {
    let fields = Fields::new(document_object(value, path)?, path);
    fields.any_string("id")?;
    fields.one_of("decision", trust_decision)?;
    fields.datetime("decidedAt")?;
    fields.any_string("decidedBy")?;
    fields.optional_datetime("expiresAt")?;
    fields.optional_datetime("retryAfterDate")?;
    fields.optional_any_string("message")?;
    fields.optional_one_of("privacyType", privacy_type)?;
    Ok(())
}

/// Invoice document (`spec/02-artifacts.md` §2.5).
pub fn invoice_document(value: &Value, path: &str) -> Check<()> {
    let fields = Fields::new(document_object(value, path)?, path);
    fields.any_string("title")?;
    fields.any_string("id")?;
    fields.datetime("issuedAt")?;
    fields.one_of("status", invoice_status)?;
    for key in ["dueAt", "paidAt", "refundedAt", "disputedAt"] {
        fields.optional_datetime(key)?;
    }
    let total_path = fields.child_path("totalAmount");
    let total = Fields::new(fields.object("totalAmount")?, &total_path);
    total.number("value")?;
    if !is_currency(total.string("currency")?) {
        return Err(total.error("currency", "not an accepted currency code"));
    }
    let items_path = fields.child_path("lineItems");
    let items = Fields::new(fields.object("lineItems")?, &items_path);
    items.string_array("columns")?;
    match items.object.get("rows") {
        Some(Value::Array(rows)) => {
            for (index, row) in rows.iter().enumerate() {
                let row_ok = row.as_object().is_some_and(|row| {
                    row.iter()
                        .all(|(_, cell)| matches!(cell, Value::String(_) | Value::Number(_)))
                });
                if !row_ok {
                    return Err(items.error(
                        &format!("rows[{index}]"),
                        "must be an object of strings and numbers",
                    ));
                }
            }
        }
        Some(_) => return Err(items.error("rows", "must be an array")),
        None => return Err(items.error("rows", "required")),
    }
    if let Some(issuer) = fields.optional_object("issuer")? {
        let path = fields.child_path("issuer");
        let issuer = Fields::new(issuer, &path);
        issuer.any_string("name")?;
        issuer.optional_format("email", is_email, "not an email address")?;
        issuer.optional_any_string("phone")?;
    }
    if let Some(link) = fields.optional_object("paymentLink")? {
        let path = fields.child_path("paymentLink");
        let link = Fields::new(link, &path);
        link.any_string("linkText")?;
        if !is_url(link.string("url")?) {
            return Err(link.error("url", "not a URL"));
        }
    }
    fields.optional_any_string("description")?;
    if let Some(attachment) = fields.optional_object("attachment")? {
        let path = fields.child_path("attachment");
        let attachment = Fields::new(attachment, &path);
        attachment.any_string("content")?;
        attachment.one_of("type", attachment_type)?;
        attachment.optional_any_string("filename")?;
    }
    if let Some(template) = fields.optional_object("template")? {
        let path = fields.child_path("template");
        let template = Fields::new(template, &path);
        template.any_string("name")?;
        template.object("data")?;
    }
    Ok(())
}

/// The document schema of a transporter `type`.
pub fn transporter_document(kind: TransporterType, value: &Value, path: &str) -> Check<()> {
    match kind {
        TransporterType::TrustRequest => trust_request_document(value, path),
        TransporterType::TrustResponse => trust_response_document(value, path),
        TransporterType::Document => invoice_document(value, path),
    }
}

fn privacy_type(text: &str) -> Option<()> {
    matches!(text, "unencrypted" | "encrypted" | "mixed").then_some(())
}

fn trust_decision(text: &str) -> Option<()> {
    matches!(text, "accepted" | "rejected" | "revoked" | "blocked").then_some(())
}

fn invoice_status(text: &str) -> Option<()> {
    matches!(
        text,
        "paid" | "unpaid" | "partial" | "refunded" | "disputed"
    )
    .then_some(())
}

fn attachment_type(text: &str) -> Option<()> {
    matches!(text, "application/pdf" | "image/jpeg" | "image/png").then_some(())
}

// ---------------------------------------------------------------------------------
// The four kinds.
// ---------------------------------------------------------------------------------

fn transporter(raw: Object) -> Check<TransporterArtifact> {
    let fields = Fields::new(&raw, "");
    let version = fields.string("version")?.to_owned();
    let issued_at = fields.datetime("issuedAt")?.to_owned();
    let id = fields.string("id")?.to_owned();
    let kind = fields.one_of("type", TransporterType::parse)?;
    let from = fields.identity("from")?;
    let to = fields.identity("to")?;
    let signature = signature_member(&fields)?;
    let encryption = encryption_member(&fields)?;
    let document = raw
        .get("document")
        .ok_or_else(|| fields.error("document", "required"))?;
    if encryption.is_some() {
        if !document.is_string() {
            return Err(fields.error("document", "must be a string when encrypted"));
        }
    } else {
        transporter_document(kind, document, "document")?;
    }
    let delegation = delegation_member(&fields)?;
    let selector = fields.non_empty_string("selector")?.to_owned();
    Ok(TransporterArtifact {
        version,
        issued_at,
        id,
        kind,
        from,
        to,
        selector,
        signature,
        encryption,
        delegation,
        raw,
        signed_text: None,
    })
}

fn control(raw: Object) -> Check<ControlArtifact> {
    let fields = Fields::new(&raw, "");
    Ok(ControlArtifact {
        version: fields.string("version")?.to_owned(),
        id: fields.string("id")?.to_owned(),
        issued_at: fields.datetime("issuedAt")?.to_owned(),
        action: fields.one_of("action", ControlAction::parse)?,
        raw,
    })
}

fn identity_lookup(raw: Object) -> Check<IdentityLookupRequest> {
    let fields = Fields::new(&raw, "");
    Ok(IdentityLookupRequest {
        version: fields.string("version")?.to_owned(),
        id: fields.string("id")?.to_owned(),
        issued_at: fields.datetime("issuedAt")?.to_owned(),
        identity: fields.identity("identity")?,
        from: fields.identity("from")?,
        host_selector: fields.non_empty_string("hostSelector")?.to_owned(),
        identity_selector: fields
            .optional_string("identitySelector")?
            .map(str::to_owned),
        raw,
    })
}

fn agent(raw: Object) -> Check<AgentArtifact> {
    let fields = Fields::new(&raw, "");
    let id = fields.string("id")?.to_owned();
    let action = fields.one_of("action", AgentAction::parse)?;
    let agent_id = fields.string("agentId")?.to_owned();
    let to = fields.identity("to")?;
    let issued_at = fields.datetime("issuedAt")?.to_owned();
    let signature = signature_member(&fields)?;
    let encryption = encryption_member(&fields)?;
    agent_document(action, raw.get("document"), encryption.is_some())?;
    Ok(AgentArtifact {
        raw,
        id,
        action,
        agent_id,
        to,
        issued_at,
        signature,
        encryption,
    })
}

/// Validates the plaintext of an encrypted agent document for `action`, as an
/// unencrypted document is validated (`spec/07-agents-auth.md` §2.4 step 4).
pub fn decrypted_agent_document(action: AgentAction, document: &Value) -> Check<()> {
    agent_document(action, Some(document), false)
}

/// The agent document rule of the careful implementation (`spec/02-artifacts.md` §4.3).
fn agent_document(action: AgentAction, document: Option<&Value>, encrypted: bool) -> Check<()> {
    let Some(document) = document else {
        return if action.requires_document() {
            Err(ProtocolError::validation(format!(
                "document: required for {action}"
            )))
        } else {
            Ok(())
        };
    };
    if action.requires_document() && matches!(document, Value::String(text) if text.is_empty()) {
        return Err(ProtocolError::validation(format!(
            "document: required for {action}"
        )));
    }
    if encrypted {
        if action == AgentAction::AuthRequest {
            return Err(ProtocolError::validation(
                "encryption: auth.request must not be encrypted",
            ));
        }
        return if document.is_string() {
            Ok(())
        } else {
            Err(ProtocolError::validation(
                "document: must be a string when encrypted",
            ))
        };
    }
    use AgentAction::*;
    // These five accept the bare document or a transporter artifact wrapping it.
    if matches!(
        action,
        TrustRequest | TrustRespond | TrustUpdate | TrustDelete | ArtifactSend
    ) && let Some(wrapper) = document.as_object()
        && wrapper.get("from").is_some_and(Value::is_string)
        && wrapper.get("type").is_some_and(Value::is_string)
    {
        return wrapped_agent_document(action, wrapper);
    }
    agent_action_document(action, document, "document")
}

fn wrapped_agent_document(action: AgentAction, wrapper: &Object) -> Check<()> {
    let fields = Fields::new(wrapper, "document");
    fields.string("version")?;
    fields.datetime("issuedAt")?;
    fields.string("id")?;
    fields.one_of("type", TransporterType::parse)?;
    fields.identity("from")?;
    fields.identity("to")?;
    signature_member(&fields)?;
    let encryption = encryption_member(&fields)?;
    delegation_member(&fields)?;
    fields.non_empty_string("selector")?;
    let inner = wrapper
        .get("document")
        .ok_or_else(|| fields.error("document", "required"))?;
    if encryption.is_some() {
        return if inner.is_string() {
            Ok(())
        } else {
            Err(fields.error("document", "must be a string when encrypted"))
        };
    }
    agent_action_document(action, inner, "document.document")
}

fn agent_action_document(action: AgentAction, document: &Value, path: &str) -> Check<()> {
    use AgentAction::*;
    match action {
        AuthRequest | AuthRefresh => auth_request_document(document, path),
        SystemPing | TrustFetch => Ok(()),
        TrustRequest => trust_request_document(document, path),
        TrustRespond => trust_response_document(document, path),
        TrustUpdate | DraftUpdate => mutation_document(document, path),
        TrustDelete | InboxSeen | InboxDelete | OutboxCancel | DraftDelete | TrashDelete
        | SentboxDelete => ids_document(document, path),
        InboxFetch | OutboxFetch | DraftFetch | TrashFetch | SentboxFetch => {
            query_document(document, path)
        }
        DraftCreate => create_document(document, path),
        ArtifactSend => invoice_document(document, path),
    }
}

/// AuthReqDoc (`spec/02-artifacts.md` §4.4.1).
fn auth_request_document(value: &Value, path: &str) -> Check<()> {
    let fields = Fields::new(document_object(value, path)?, path);
    fields.schema_identity("identity")?;
    fields.any_string("authToken")?;
    fields.any_string("publicKey")?;
    if let Some(info) = fields.optional_object("agentInfo")? {
        let info_ok = info.iter().all(|(_, entry)| match entry {
            Value::String(_) => true,
            Value::Array(items) => items.iter().all(Value::is_string),
            _ => false,
        });
        if !info_ok {
            return Err(fields.error("agentInfo", "values must be strings or arrays of strings"));
        }
    }
    Ok(())
}

/// AgentQuery (`spec/02-artifacts.md` §4.4.2): at least one of its six keys.
fn query_document(value: &Value, path: &str) -> Check<()> {
    let fields = Fields::new(document_object(value, path)?, path);
    const KEYS: [&str; 6] = ["since", "until", "limit", "cursor", "query", "sort"];
    if !KEYS.iter().any(|key| fields.object.contains_key(key)) {
        return Err(ProtocolError::validation(format!(
            "{path}: a query needs at least one of {KEYS:?}"
        )));
    }
    fields.optional_datetime("since")?;
    fields.optional_datetime("until")?;
    if fields.object.contains_key("limit") {
        fields.number("limit")?;
    }
    fields.optional_any_string("cursor")?;
    fields.optional_one_of("sort", |text| matches!(text, "asc" | "desc").then_some(()))?;
    if let Some(query) = fields.optional_object("query")? {
        let query_path = fields.child_path("query");
        let query = Fields::new(query, &query_path);
        for key in ["title", "from", "to"] {
            if let Some(filter) = query.optional_object(key)? {
                let filter_path = query.child_path(key);
                let filter = Fields::new(filter, &filter_path);
                for text_key in ["like", "eq", "ne", "notLike"] {
                    filter.optional_any_string(text_key)?;
                }
                for list_key in ["in", "notIn"] {
                    filter.optional_string_array(list_key)?;
                }
            }
        }
    }
    Ok(())
}

/// AgentMutation (`spec/02-artifacts.md` §4.4.3).
fn mutation_document(value: &Value, path: &str) -> Check<()> {
    let fields = Fields::new(document_object(value, path)?, path);
    fields.any_string("id")?;
    any_inner_document(&fields)
}

/// AgentCreate (`spec/02-artifacts.md` §4.4.4).
fn create_document(value: &Value, path: &str) -> Check<()> {
    let fields = Fields::new(document_object(value, path)?, path);
    fields.one_of("type", TransporterType::parse)?;
    any_inner_document(&fields)
}

/// `document`: a trust request, trust response or invoice document (first that fits).
fn any_inner_document(fields: &Fields<'_>) -> Check<()> {
    let inner = fields
        .object
        .get("document")
        .ok_or_else(|| fields.error("document", "required"))?;
    let path = fields.child_path("document");
    trust_request_document(inner, &path)
        .or_else(|_| trust_response_document(inner, &path))
        .or_else(|_| invoice_document(inner, &path))
        .map_err(|_| {
            fields.error(
                "document",
                "not a trust request, trust response or invoice document",
            )
        })
}

/// IdsPayload (`spec/02-artifacts.md` §4.4.5).
fn ids_document(value: &Value, path: &str) -> Check<()> {
    Fields::new(document_object(value, path)?, path).string_array("ids")
}

/// Validates a delivery-failure artifact (`spec/02-artifacts.md` §8).
pub fn delivery_failure(value: Value) -> Check<DeliveryFailureArtifact> {
    let Value::Object(raw) = value else {
        return Err(ProtocolError::validation(
            "a delivery failure must be an object",
        ));
    };
    let fields = Fields::new(&raw, "");
    let id = fields.string("id")?.to_owned();
    let issued_at = fields.datetime("issuedAt")?.to_owned();
    if fields.string("type")? != DELIVERY_FAILURE_TYPE {
        return Err(fields.error("type", "must be \"BTP_DELIVERY_FAILURE\""));
    }
    let from = fields.identity("from")?;
    let to = fields.identity("to")?;
    let document_path = fields.child_path("document");
    let document = Fields::new(fields.object("document")?, &document_path);
    document.string("id")?;
    let reason = document.string("reason")?.to_owned();
    let failed_at = document.datetime("failedAt")?.to_owned();
    let retry_count = match document.object.get("retryCount") {
        None => None,
        Some(_) => Some(document.number("retryCount")?),
    };
    if let Some(inner) = document.object.get("document") {
        let inner = inner.clone();
        let Value::Object(inner) = inner else {
            return Err(document.error("document", "must be a transporter artifact"));
        };
        transporter(inner).map_err(|error| {
            ProtocolError::validation(format!("document.document: {}", error.detail))
        })?;
    }
    let recipient = document.identity("recipient")?;
    let transport_artifact_id = document.string("transportArtifactId")?.to_owned();
    document.optional_string("agentArtifactId")?;
    Ok(DeliveryFailureArtifact {
        id,
        issued_at,
        from,
        to,
        reason,
        failed_at,
        recipient,
        transport_artifact_id,
        retry_count,
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(line: &str) -> Option<ArtifactKind> {
        classify(&json::parse(line).unwrap())
    }

    #[test]
    fn classification_order() {
        // A control artifact that also carries from/type stays control.
        assert_eq!(
            kind_of(r#"{"action":"QUIT","from":"a$b.c","type":"x"}"#),
            Some(ArtifactKind::Control)
        );
        // An identity lookup with a string type becomes a transporter.
        assert_eq!(
            kind_of(r#"{"identity":"a$b.c","hostSelector":"s","from":"a$b.c","type":"x"}"#),
            Some(ArtifactKind::Transporter)
        );
        // An agent artifact without signature matches nothing.
        assert_eq!(
            kind_of(r#"{"to":"a$b.c","action":"inbox.fetch","agentId":"x"}"#),
            None
        );
        assert_eq!(kind_of("[1]"), None);
        assert_eq!(
            kind_of(r#"{"to":"a$b.c","action":"x","agentId":null,"signature":null}"#),
            Some(ArtifactKind::Agent)
        );
    }

    #[test]
    fn blank_lines_are_ignored() {
        assert!(parse_line(b"").unwrap().is_none());
        assert!(
            parse_line(" \t\u{3000}\u{feff}\r".as_bytes())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn errors_carry_the_right_code() {
        assert_eq!(parse_line(b"{").unwrap_err().code, ErrorCode::InvalidJson);
        assert_eq!(
            parse_line(b"{\"a\":1}").unwrap_err().code,
            ErrorCode::Validation
        );
        assert_eq!(
            parse_line(b"\xff\xfe").unwrap_err().code,
            ErrorCode::InvalidJson
        );
        // Invalid UTF-8 inside a string becomes U+FFFD: the line is still JSON.
        assert_eq!(
            parse_line(b"{\"a\":\"\xff\"}\r").unwrap_err().code,
            ErrorCode::Validation
        );
    }

    #[test]
    fn delivery_failures() {
        let good = r#"{"id":"df-1","issuedAt":"2025-02-01T00:05:00.000Z","type":"BTP_DELIVERY_FAILURE","from":"admin$vendor.example","to":"billing$vendor.example","document":{"id":"f-1","reason":"Server not available","failedAt":"2025-02-01T00:05:00.000Z","retryCount":5,"recipient":"pay$client.example","transportArtifactId":"doc-1"}}"#;
        let failure = delivery_failure(json::parse(good).unwrap()).unwrap();
        assert_eq!(failure.reason, "Server not available");
        assert_eq!(failure.retry_count, Some(5.0));
        let wrong_type = good.replace("BTP_DELIVERY_FAILURE", "BTPS_DOC");
        assert!(delivery_failure(json::parse(&wrong_type).unwrap()).is_err());
        let no_recipient = good.replace(r#""recipient":"pay$client.example","#, "");
        assert!(delivery_failure(json::parse(&no_recipient).unwrap()).is_err());
        let bad_inner = good.replace(
            r#""transportArtifactId""#,
            r#""document":{"type":"BTPS_DOC"},"transportArtifactId""#,
        );
        assert!(delivery_failure(json::parse(&bad_inner).unwrap()).is_err());
    }

    #[test]
    fn control_artifacts() {
        let line = br#"{"version":"1.0.0","id":"c-1","issuedAt":"2025-01-15T10:30:00.000Z","action":"QUIT"}"#;
        let Some(Artifact::Control(control)) = parse_line(line).unwrap() else {
            panic!()
        };
        assert_eq!(control.action, ControlAction::Quit);
        let bad = br#"{"version":"1.0.0","id":"c-1","issuedAt":"2025-01-15T10:30:00.000Z","action":"STOP"}"#;
        assert_eq!(parse_line(bad).unwrap_err().code, ErrorCode::Validation);
    }
}
