//! The documents of agent actions read into types (`spec/07-agents-auth.md` §3.1,
//! §4). Validation has already checked their shape; reading them again never
//! assumes it: anything unexpected is a validation error, never a panic.

use crate::identity::Identity;
use crate::protocol::ProtocolError;
use crate::protocol::formats::datetime_millis;
use crate::protocol::json::{Object, Value};
use crate::store::{EntryFilter, TextFilter};

/// The default and the largest page of a query (`spec/07-agents-auth.md` §10 Q7).
pub(super) const DEFAULT_LIMIT: u32 = 50;
/// Larger limits are reduced to this.
pub(super) const MAX_LIMIT: u32 = 100;

fn invalid(detail: impl Into<String>) -> ProtocolError {
    ProtocolError::validation(detail.into())
}

fn object<'a>(document: Option<&'a Value>, action: &str) -> Result<&'a Object, ProtocolError> {
    document
        .and_then(Value::as_object)
        .ok_or_else(|| invalid(format!("document: {action} needs an object")))
}

/// A transporter artifact's own document when `document` wraps one (the reference
/// client wraps `trust.update` and `trust.delete` documents), else `document`.
pub(super) fn unwrapped(document: &Value) -> &Value {
    match document.as_object() {
        Some(wrapper)
            if wrapper.get("from").is_some_and(Value::is_string)
                && wrapper.get("type").is_some_and(Value::is_string) =>
        {
            wrapper.get("document").unwrap_or(document)
        }
        _ => document,
    }
}

/// The document of `auth.request` and `auth.refresh`.
pub(super) struct AuthDocument {
    /// The identity claimed.
    pub(super) identity: Identity,
    /// The enrollment token, or the refresh token.
    pub(super) token: String,
    /// What the agent says about itself.
    pub(super) agent_info: Option<Object>,
}

pub(super) fn auth(document: Option<&Value>) -> Result<AuthDocument, ProtocolError> {
    let document = object(document, "authentication")?;
    let identity = document
        .str("identity")
        .and_then(|text| Identity::parse(text).ok())
        .ok_or_else(|| invalid("document.identity: not an identity"))?;
    let token = document
        .str("authToken")
        .ok_or_else(|| invalid("document.authToken: required"))?
        .to_owned();
    let agent_info = document
        .get("agentInfo")
        .and_then(Value::as_object)
        .cloned();
    Ok(AuthDocument {
        identity,
        token,
        agent_info,
    })
}

/// The `ids` of an ids document, each once, in the order given.
pub(super) fn ids(document: Option<&Value>) -> Result<Vec<String>, ProtocolError> {
    let document = document.map(unwrapped);
    let list = object(document, "this action")?
        .get("ids")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("document.ids: an array of strings is required"))?;
    let mut ids: Vec<String> = Vec::with_capacity(list.len());
    for item in list {
        let id = item
            .as_str()
            .ok_or_else(|| invalid("document.ids: every id must be a string"))?;
        if !ids.iter().any(|seen| seen == id) {
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}

/// The `{id, document}` of a mutation.
pub(super) fn mutation(document: Option<&Value>) -> Result<(String, &Value), ProtocolError> {
    let document = object(document.map(unwrapped), "this action")?;
    let id = document
        .str("id")
        .ok_or_else(|| invalid("document.id: required"))?;
    let inner = document
        .get("document")
        .ok_or_else(|| invalid("document.document: required"))?;
    Ok((id.to_owned(), inner))
}

/// A query document (§4.1) read into its parts; the cursor stays text until the
/// query's scope is known.
#[derive(Debug, Default)]
pub(super) struct QueryDocument {
    pub(super) since: Option<i64>,
    pub(super) until: Option<i64>,
    pub(super) limit: u32,
    pub(super) newest_first: bool,
    pub(super) cursor: Option<String>,
    pub(super) filter: EntryFilter,
    /// The `query` member as sent, canonical (part of what a cursor is bound to).
    pub(super) query_text: String,
}

pub(super) fn query(document: Option<&Value>) -> Result<QueryDocument, ProtocolError> {
    let mut query = QueryDocument {
        limit: DEFAULT_LIMIT,
        newest_first: true,
        ..QueryDocument::default()
    };
    let Some(document) = document else {
        return Ok(query);
    };
    let document = document
        .as_object()
        .ok_or_else(|| invalid("document: a query must be an object"))?;
    let instant = |key: &str| -> Result<Option<i64>, ProtocolError> {
        match document.get(key) {
            None => Ok(None),
            Some(value) => value
                .as_str()
                .and_then(datetime_millis)
                .map(Some)
                .ok_or_else(|| invalid(format!("document.{key}: not a datetime"))),
        }
    };
    query.since = instant("since")?;
    query.until = instant("until")?;
    if let Some(limit) = document.get("limit") {
        let number = limit
            .as_f64()
            .ok_or_else(|| invalid("document.limit: not a number"))?;
        if number.fract() != 0.0 || number < 1.0 || !number.is_finite() {
            return Err(invalid(format!(
                "document.limit: must be an integer of at least 1, found {number}"
            ))
            .with_reason("invalid limit"));
        }
        // Checked finite, integral and positive; anything above the cap is the cap.
        query.limit = if number >= f64::from(MAX_LIMIT) {
            MAX_LIMIT
        } else {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let limit = number as u32;
            limit
        };
    }
    query.cursor = match document.get("cursor") {
        None => None,
        Some(cursor) => Some(
            cursor
                .as_str()
                .ok_or_else(|| invalid("document.cursor: must be a string"))?
                .to_owned(),
        ),
    };
    query.newest_first = match document.str("sort") {
        None if document.get("sort").is_none() => true,
        Some("desc") => true,
        Some("asc") => false,
        _ => return Err(invalid("document.sort: asc or desc")),
    };
    if let Some(filters) = document.get("query") {
        query.query_text = filters.to_canonical();
        let filters = filters
            .as_object()
            .ok_or_else(|| invalid("document.query: must be an object"))?;
        query.filter = EntryFilter {
            title: text_filter(filters, "title")?,
            from: text_filter(filters, "from")?,
            to: text_filter(filters, "to")?,
        };
    }
    Ok(query)
}

fn text_filter(filters: &Object, key: &str) -> Result<Option<TextFilter>, ProtocolError> {
    let Some(filter) = filters.get(key) else {
        return Ok(None);
    };
    let filter = filter
        .as_object()
        .ok_or_else(|| invalid(format!("document.query.{key}: must be an object")))?;
    let text = |operator: &str| -> Result<Option<String>, ProtocolError> {
        match filter.get(operator) {
            None => Ok(None),
            Some(value) => value
                .as_str()
                .map(|text| Some(text.to_owned()))
                .ok_or_else(|| {
                    invalid(format!("document.query.{key}.{operator}: must be a string"))
                }),
        }
    };
    let list = |operator: &str| -> Result<Option<Vec<String>>, ProtocolError> {
        match filter.get(operator) {
            None => Ok(None),
            Some(value) => value
                .as_array()
                .and_then(|items| {
                    items
                        .iter()
                        .map(|item| item.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                })
                .map(Some)
                .ok_or_else(|| {
                    invalid(format!(
                        "document.query.{key}.{operator}: must be an array of strings"
                    ))
                }),
        }
    };
    Ok(Some(TextFilter {
        eq: text("eq")?,
        ne: text("ne")?,
        any_of: list("in")?,
        none_of: list("notIn")?,
        like: text("like")?,
        not_like: text("notLike")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::json;

    fn parse(text: &str) -> Result<QueryDocument, ProtocolError> {
        query(Some(&json::parse(text).unwrap()))
    }

    #[test]
    fn limits_are_checked_and_capped() {
        assert_eq!(parse(r#"{"limit":7}"#).unwrap().limit, 7);
        assert_eq!(parse(r#"{"limit":1000}"#).unwrap().limit, MAX_LIMIT);
        assert_eq!(query(None).unwrap().limit, DEFAULT_LIMIT);
        for bad in [r#"{"limit":0}"#, r#"{"limit":2.5}"#, r#"{"limit":-3}"#] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_and_order_are_read() {
        let parsed =
            parse(r#"{"sort":"asc","query":{"title":{"like":"inv"},"from":{"in":["a$b.c"]}}}"#)
                .unwrap();
        assert!(!parsed.newest_first);
        assert_eq!(parsed.filter.title.unwrap().like.as_deref(), Some("inv"));
        assert_eq!(
            parsed.filter.from.unwrap().any_of,
            Some(vec![String::from("a$b.c")])
        );
        assert!(parse(r#"{"sort":"up"}"#).is_err());
    }

    #[test]
    fn ids_are_taken_once_each() {
        let document = json::parse(r#"{"ids":["a","b","a"]}"#).unwrap();
        assert_eq!(ids(Some(&document)).unwrap(), ["a", "b"]);
        let wrong = json::parse(r#"{"ids":[1]}"#).unwrap();
        assert!(ids(Some(&wrong)).is_err());
    }
}
