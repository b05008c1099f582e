//! The server response envelope (`spec/01-wire.md` §6): building the lines a server
//! writes, and parsing the lines a client reads.

use crate::identity::Identity;
use crate::protocol::artifact::{EncryptionObject, SignatureObject};
use crate::protocol::error::{ErrorCode, ProtocolError};
use crate::protocol::json::{self, Object, Value};

/// The protocol version every response carries.
pub const PROTOCOL_VERSION: &str = "1.0.0";

/// The current time as JavaScript's `Date.prototype.toISOString()` writes it:
/// `YYYY-MM-DDTHH:MM:SS.sssZ`.
pub fn now_iso() -> String {
    iso_millis(time::OffsetDateTime::now_utc())
}

/// Formats a UTC instant as `YYYY-MM-DDTHH:MM:SS.sssZ`.
pub fn iso_millis(instant: time::OffsetDateTime) -> String {
    let instant = instant.to_offset(time::UtcOffset::UTC);
    // Every response carries one: years 0 to 9999 are written digit by digit.
    if let Ok(year) = u16::try_from(instant.year())
        && year <= 9999
    {
        let mut out = String::with_capacity(24);
        for (value, width, separator) in [
            (year, 4, '-'),
            (u16::from(u8::from(instant.month())), 2, '-'),
            (u16::from(instant.day()), 2, 'T'),
            (u16::from(instant.hour()), 2, ':'),
            (u16::from(instant.minute()), 2, ':'),
            (u16::from(instant.second()), 2, '.'),
            (instant.millisecond(), 3, 'Z'),
        ] {
            crate::protocol::json::push_digits(&mut out, u64::from(value), width);
            out.push(separator);
        }
        return out;
    }
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        instant.year(),
        u8::from(instant.month()),
        instant.day(),
        instant.hour(),
        instant.minute(),
        instant.second(),
        instant.millisecond()
    )
}

/// A fresh response id: a random UUID v4, lower-case and hyphenated.
///
/// The bytes come from the thread's CSPRNG (`rand::thread_rng`), not from a system
/// call per id as `Uuid::new_v4` takes them: every response needs one.
pub fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

fn envelope(status: Object, req_id: Option<&str>, kind: &str) -> Object {
    let mut response = Object::new();
    response.insert("version", PROTOCOL_VERSION);
    response.insert("status", status);
    response.insert("id", new_id());
    response.insert("issuedAt", now_iso());
    if let Some(req_id) = req_id.filter(|id| !id.is_empty()) {
        response.insert("reqId", req_id);
    }
    response.insert("type", kind);
    response
}

/// A `btps_response` with status `{"ok":true,"message":<message>,"code":200}`.
pub fn success(message: &str, req_id: Option<&str>) -> Object {
    let mut status = Object::new();
    status.insert("ok", true);
    status.insert("message", message);
    status.insert("code", 200.0);
    envelope(status, req_id, "btps_response")
}

/// A `btps_error` for `error`: status `{"ok":false,"code":500,"message":…[,"reason":…]}`.
pub fn error(error: &ProtocolError, req_id: Option<&str>) -> Object {
    let mut status = Object::new();
    status.insert("ok", false);
    status.insert("code", f64::from(error.status_code()));
    status.insert("message", error.wire_message());
    if let Some(reason) = error.reason() {
        status.insert("reason", reason);
    }
    envelope(status, req_id, "btps_error")
}

/// The line written for a response: compact `JSON.stringify` plus `\n`.
pub fn to_line(response: &Object) -> String {
    let mut line = response.to_canonical();
    line.push('\n');
    line
}

/// `btps_response` or `btps_error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseType {
    /// Success.
    Response,
    /// Failure.
    Error,
}

/// The signer of a signed response.
#[derive(Clone, Debug)]
pub struct ResponseSigner {
    /// The server identity that signed.
    pub signed_by: Identity,
    /// The selector of its key.
    pub selector: String,
    /// The signature.
    pub signature: SignatureObject,
}

/// A parsed server response.
#[derive(Clone, Debug)]
pub struct ServerResponse {
    /// The parsed object as received (what a signature covers).
    pub raw: Object,
    /// `status.ok`.
    pub ok: bool,
    /// `status.code`.
    pub code: f64,
    /// `status.message`.
    pub message: Option<String>,
    /// `status.reason` (appliance only).
    pub reason: Option<String>,
    /// The id of the request answered.
    pub req_id: Option<String>,
    /// `type`.
    pub kind: ResponseType,
    /// Signature, signer and selector, when signed.
    pub signer: Option<ResponseSigner>,
    /// `encryption`, when present.
    pub encryption: Option<EncryptionObject>,
}

/// Parses and validates one response line (`spec/01-wire.md` §6).
pub fn parse_response(line: &str) -> Result<ServerResponse, ProtocolError> {
    let invalid = |what: &str| ProtocolError::validation(format!("response: {what}"));
    let value = json::parse(line.trim_end_matches(['\r', '\n']))
        .map_err(|error| ProtocolError::new(ErrorCode::InvalidJson, error.to_string()))?;
    let Value::Object(raw) = value else {
        return Err(invalid("not an object"));
    };
    let version = raw
        .str("version")
        .ok_or_else(|| invalid("version must be a string"))?;
    let mut parts = version.split('.');
    let numeric = parts.clone().count() == 3
        && parts.all(|part| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit()));
    if !numeric {
        return Err(invalid("version must look like 1.0.0"));
    }
    let status = raw
        .get("status")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("status must be an object"))?;
    let ok = match status.get("ok") {
        Some(Value::Bool(flag)) => *flag,
        _ => return Err(invalid("status.ok must be a boolean")),
    };
    let code = status
        .get("code")
        .and_then(Value::as_f64)
        .ok_or_else(|| invalid("status.code must be a number"))?;
    let message = match status.get("message") {
        None => None,
        Some(value) => Some(
            value
                .as_str()
                .ok_or_else(|| invalid("status.message must be a string"))?
                .to_owned(),
        ),
    };
    let reason = status.str("reason").map(str::to_owned);
    raw.str("id")
        .ok_or_else(|| invalid("id must be a string"))?;
    raw.str("issuedAt")
        .ok_or_else(|| invalid("issuedAt must be a string"))?;
    let req_id = match raw.get("reqId") {
        None => None,
        Some(value) => Some(
            value
                .as_str()
                .ok_or_else(|| invalid("reqId must be a string"))?
                .to_owned(),
        ),
    };
    let kind = match raw.str("type") {
        Some("btps_response") => ResponseType::Response,
        Some("btps_error") => ResponseType::Error,
        _ => return Err(invalid("type must be btps_response or btps_error")),
    };
    if let Some(document) = raw.get("document")
        && !matches!(document, Value::Object(_) | Value::String(_))
    {
        return Err(invalid("document must be an object or a string"));
    }
    let signer = match raw.get("signature") {
        None => None,
        Some(Value::Object(signature)) => {
            let signed_by = raw
                .str("signedBy")
                .ok_or_else(|| invalid("a signed response needs signedBy"))?;
            let selector = raw
                .str("selector")
                .ok_or_else(|| invalid("a signed response needs selector"))?;
            let algorithm = signature.str("algorithmHash");
            let value = signature.str("value");
            let fingerprint = signature.str("fingerprint");
            let (Some("sha256"), Some(value), Some(fingerprint)) = (algorithm, value, fingerprint)
            else {
                return Err(invalid(
                    "signature must have algorithmHash sha256, value and fingerprint",
                ));
            };
            Some(ResponseSigner {
                signed_by: Identity::parse(signed_by)
                    .map_err(|_| invalid("signedBy is not an identity"))?,
                selector: selector.to_owned(),
                signature: SignatureObject {
                    value: value.to_owned(),
                    fingerprint: fingerprint.to_owned(),
                },
            })
        }
        Some(_) => return Err(invalid("signature must be an object")),
    };
    let encryption = match raw.get("encryption") {
        None | Some(Value::Null) => None,
        Some(Value::Object(encryption)) => {
            if !raw.get("document").is_some_and(Value::is_string) {
                return Err(invalid("an encrypted response needs a string document"));
            }
            let field = |key: &str| {
                encryption
                    .str(key)
                    .map(str::to_owned)
                    .ok_or_else(|| invalid("encryption fields must be strings"))
            };
            Some(EncryptionObject {
                algorithm: field("algorithm")?,
                encrypted_key: field("encryptedKey")?,
                iv: field("iv")?,
                auth_tag: field("authTag")?,
                kind: crate::protocol::artifact::EncryptionType::parse(&field("type")?)
                    .ok_or_else(|| invalid("encryption.type is not an accepted value"))?,
            })
        }
        Some(_) => return Err(invalid("encryption must be an object")),
    };
    Ok(ServerResponse {
        raw,
        ok,
        code,
        message,
        reason,
        req_id,
        kind,
        signer,
        encryption,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_key_order() {
        let line = to_line(&success("success", Some("tr-42")));
        assert!(line.starts_with(
            r#"{"version":"1.0.0","status":{"ok":true,"message":"success","code":200},"id":""#
        ));
        assert!(line.ends_with("\"reqId\":\"tr-42\",\"type\":\"btps_response\"}\n"));
        let parsed = parse_response(&line).unwrap();
        assert!(parsed.ok);
        assert_eq!(parsed.req_id.as_deref(), Some("tr-42"));
    }

    #[test]
    fn error_key_order_and_reason() {
        let failure = ProtocolError::new(ErrorCode::SigMismatch, "");
        let line = to_line(&error(&failure, Some("")));
        assert!(line.contains(r#""status":{"ok":false,"code":500,"message":" Signature verification failed","reason":"BTP_ERROR_SIG_MISMATCH"}"#));
        assert!(!line.contains("reqId"), "an empty request id is omitted");
    }

    #[test]
    fn iso_format_matches_the_general_formatter() {
        use rand::Rng;
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let mut rng = rand::thread_rng();
        // From year 0 to 9999, plus the edges.
        let (first, last) = (-62_167_219_200_000_i64, 253_402_300_799_999_i64);
        let samples = (0..20_000).map(|_| rng.gen_range(first..=last)).chain([
            first,
            last,
            0,
            951_782_400_000,
            1_709_164_800_999,
        ]);
        for millis in samples {
            let instant =
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
                    .unwrap();
            assert_eq!(
                iso_millis(instant),
                instant.format(&format).unwrap(),
                "{millis}"
            );
        }
    }

    #[test]
    fn response_ids_are_random_v4_uuids() {
        let (first, second) = (new_id(), new_id());
        assert_ne!(first, second);
        for id in [first, second] {
            let parsed = uuid::Uuid::parse_str(&id).unwrap();
            assert_eq!(parsed.get_version_num(), 4, "{id}");
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122, "{id}");
            assert_eq!(parsed.hyphenated().to_string(), id);
        }
    }

    #[test]
    fn iso_format() {
        let instant = time::macros::datetime!(2025-01-15 10:30:00.123 UTC);
        assert_eq!(iso_millis(instant), "2025-01-15T10:30:00.123Z");
    }
}
