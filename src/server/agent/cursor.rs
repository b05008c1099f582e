//! Query cursors (`spec/07-agents-auth.md` §4.2): an opaque base64url string holding
//! a format version, the sort direction, the position of the last item returned
//! and a digest of the query it belongs to, as JSON (the form of the spec's
//! example): `{"v":1,"s":"d","a":<at>,"e":<entry id>,"q":"<digest>"}` for mailbox
//! entries, `{"v":1,"s":"d","a":<createdAt>,"p":"i","t":"<trust id>","q":…}` for
//! trust records.
//!
//! The next page starts strictly after that position, so entries stored meanwhile
//! never make a page repeat or skip an item. The digest covers the owner, the
//! mailbox, the time bounds and the filters: a cursor of another query (another
//! mailbox, another owner's, other filters) is refused instead of silently
//! continuing somewhere else. A cursor that does not decode, or that was issued for
//! the other sort direction, is refused too.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::protocol::ProtocolError;
use crate::protocol::json::{self, Object, Value};
use crate::store::{ListingPosition, Perspective};

/// The cursor format written by this version.
const VERSION: f64 = 1.0;

/// The largest integer a JSON number carries exactly.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// Where a page ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Position {
    /// A mailbox entry.
    Entry(ListingPosition),
    /// A trust record: its `createdAt`, perspective and id.
    Trust {
        at_millis: i64,
        perspective: Perspective,
        id: String,
    },
}

/// What a cursor is bound to: the first 8 bytes of SHA-256 over the query's scope
/// (owner, what is queried), time bounds and filters.
pub(super) fn digest(
    owner: &str,
    scope: &str,
    since: Option<i64>,
    until: Option<i64>,
    filters: &str,
) -> String {
    let text = format!(
        "{}\n{scope}\n{}\n{}\n{filters}",
        owner.to_lowercase(),
        since.map_or_else(String::new, |at| at.to_string()),
        until.map_or_else(String::new, |at| at.to_string()),
    );
    let hash = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    hash.as_ref()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn number(value: i64) -> f64 {
    // Instants and entry ids stay far below 2^53, where doubles are exact.
    #[allow(clippy::cast_precision_loss)]
    let number = value as f64;
    number
}

/// The cursor text continuing after `position`.
pub(super) fn encode(newest_first: bool, position: &Position, digest: &str) -> String {
    let mut object = Object::new();
    object.insert("v", VERSION);
    object.insert("s", if newest_first { "d" } else { "a" });
    match position {
        Position::Entry(entry) => {
            object.insert("a", number(entry.at_millis));
            object.insert(
                "e",
                number(i64::try_from(entry.entry_id).unwrap_or(i64::MAX)),
            );
        }
        Position::Trust {
            at_millis,
            perspective,
            id,
        } => {
            object.insert("a", number(*at_millis));
            object.insert(
                "p",
                match perspective {
                    Perspective::Inbound => "i",
                    Perspective::Outbound => "o",
                },
            );
            object.insert("t", id.as_str());
        }
    }
    object.insert("q", digest);
    URL_SAFE_NO_PAD.encode(object.to_canonical())
}

fn refused(detail: impl Into<String>) -> ProtocolError {
    ProtocolError::validation(format!("cursor: {}", detail.into())).with_reason("invalid cursor")
}

fn integer(object: &Object, key: &str) -> Result<i64, ProtocolError> {
    let value = object
        .get(key)
        .and_then(Value::as_f64)
        .filter(|value| value.fract() == 0.0 && value.abs() <= MAX_EXACT)
        .ok_or_else(|| refused(format!("{key} is not an integer")))?;
    // Checked integral and within ±2^53.
    #[allow(clippy::cast_possible_truncation)]
    let value = value as i64;
    Ok(value)
}

/// The position `text` continues after, if it is a cursor of this query and order.
pub(super) fn decode(
    text: &str,
    newest_first: bool,
    digest: &str,
) -> Result<Position, ProtocolError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| refused("not base64url"))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| refused("not UTF-8"))?;
    let value = json::parse(text).map_err(|_| refused("not JSON"))?;
    let object = value.as_object().ok_or_else(|| refused("not an object"))?;
    if object.get("v").and_then(Value::as_f64) != Some(VERSION) {
        return Err(refused("unknown cursor version"));
    }
    let sort = if newest_first { "d" } else { "a" };
    if object.str("s") != Some(sort) {
        return Err(refused("issued for the other sort direction"));
    }
    if object.str("q") != Some(digest) {
        return Err(refused("it belongs to another query").with_reason("cursor of another query"));
    }
    let at_millis = integer(object, "a")?;
    if let Some(id) = object.str("t") {
        let perspective = match object.str("p") {
            Some("i") => Perspective::Inbound,
            Some("o") => Perspective::Outbound,
            _ => return Err(refused("no perspective")),
        };
        return Ok(Position::Trust {
            at_millis,
            perspective,
            id: id.to_owned(),
        });
    }
    let entry_id =
        u64::try_from(integer(object, "e")?).map_err(|_| refused("negative entry id"))?;
    Ok(Position::Entry(ListingPosition {
        at_millis,
        entry_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_query() {
        let query = digest("Alice$Saas.test", "inbox", None, Some(5), "");
        assert_eq!(query, digest("alice$saas.test", "inbox", None, Some(5), ""));
        let position = Position::Entry(ListingPosition {
            at_millis: 1_736_937_000_000,
            entry_id: 42,
        });
        let text = encode(true, &position, &query);
        assert_eq!(decode(&text, true, &query).unwrap(), position);
        // The other direction, another query, garbage: refused.
        assert!(decode(&text, false, &query).is_err());
        let other = digest("alice$saas.test", "trash", None, Some(5), "");
        let error = decode(&text, true, &other).unwrap_err();
        assert_eq!(error.reason(), Some("cursor of another query"));
        assert!(decode("!!", true, &query).is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode("[1]"), true, &query).is_err());
        let trust = Position::Trust {
            at_millis: 5,
            perspective: Perspective::Outbound,
            id: String::from("ab"),
        };
        let text = encode(false, &trust, &query);
        assert_eq!(decode(&text, false, &query).unwrap(), trust);
    }
}
