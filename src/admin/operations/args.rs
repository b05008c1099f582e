//! Parsing the operator's text: identities, selectors, keys, instants, cursors and
//! statuses, each refused with an [`AdminError::InvalidArgument`] that names what
//! was wrong, so that the socket and the direct path report the same errors.

use crate::crypto::PublicKey;
use crate::identity::Identity;
use crate::store::{Cursor, Timestamp, TrustStatus};

use super::{AdminError, AdminResult};

/// Parses an identity argument, naming it in the error.
pub fn parse_identity(text: &str) -> AdminResult<Identity> {
    Identity::parse(text)
        .map_err(|error| AdminError::InvalidArgument(format!("invalid identity {text:?}: {error}")))
}

/// A selector is the first label of a DNS name.
pub fn check_selector(selector: &str) -> AdminResult<()> {
    let valid = !selector.is_empty()
        && selector.len() <= 63
        && selector
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if valid {
        Ok(())
    } else {
        Err(AdminError::InvalidArgument(format!(
            "invalid selector {selector:?}: use 1 to 63 letters, digits, '-' or '_' (it is a DNS label)"
        )))
    }
}

pub(super) fn parse_public_key(text: &str) -> AdminResult<PublicKey> {
    let text = text.trim();
    let parsed = if text.starts_with("-----") {
        PublicKey::from_pem(text)
    } else {
        PublicKey::from_base64_spki(text)
    };
    parsed.map_err(|error| AdminError::InvalidArgument(format!("invalid public key: {error}")))
}

pub(super) fn parse_time(option: &str, text: &str) -> AdminResult<Timestamp> {
    Timestamp::parse(text).map_err(|_| {
        AdminError::InvalidArgument(format!(
            "invalid {option} {text:?}: expected an RFC 3339 instant such as 2026-01-31T00:00:00Z"
        ))
    })
}

pub(super) fn parse_cursor(text: Option<&str>) -> AdminResult<Option<Cursor>> {
    text.map(|text| {
        text.parse::<Cursor>()
            .map_err(|_| AdminError::InvalidArgument(format!("invalid --cursor {text:?}")))
    })
    .transpose()
}

pub(super) fn parse_status(text: &str) -> AdminResult<TrustStatus> {
    let status = TrustStatus::from_wire(text);
    if !status.is_known() {
        return Err(AdminError::InvalidArgument(format!(
            "invalid --status {text:?}: use pending, accepted, rejected, revoked or blocked"
        )));
    }
    Ok(status)
}

pub(super) fn check_sender(sender: &str) -> AdminResult<()> {
    // An agent id is a sender too (agent records), so only identities are parsed.
    if sender.trim().is_empty() {
        return Err(AdminError::InvalidArgument(String::from(
            "the sender must not be empty",
        )));
    }
    if sender.contains('$') {
        parse_identity(sender)?;
    }
    Ok(())
}
