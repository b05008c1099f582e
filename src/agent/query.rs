//! The documents an agent sends and gets back: queries (`spec/07-agents-auth.md`
//! §4) and the answers to queries, mutations and outbound actions (§5).

use crate::protocol::AgentAction;
use crate::protocol::json::{Object, Value};

use super::AgentError;

/// A query document (§4.1), built up; an empty query sends no document.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    document: Object,
    filters: Object,
}

impl Query {
    /// The query of everything, newest first, 50 at a time (the server's defaults).
    pub fn new() -> Self {
        Query::default()
    }

    /// Only items at or after this ISO timestamp.
    #[must_use]
    pub fn since(mut self, instant: &str) -> Self {
        self.document.insert("since", instant);
        self
    }

    /// Only items at or before this ISO timestamp.
    #[must_use]
    pub fn until(mut self, instant: &str) -> Self {
        self.document.insert("until", instant);
        self
    }

    /// At most `limit` items (the server caps it at 100).
    #[must_use]
    pub fn limit(mut self, limit: u32) -> Self {
        self.document.insert("limit", f64::from(limit));
        self
    }

    /// Oldest first instead of newest first.
    #[must_use]
    pub fn oldest_first(mut self) -> Self {
        self.document.insert("sort", "asc");
        self
    }

    /// Continue after the page that answered this cursor.
    #[must_use]
    pub fn cursor(mut self, cursor: &str) -> Self {
        self.document.insert("cursor", cursor);
        self
    }

    /// A filter on `field` (`title`, `from` or `to`): `operator` is one of `eq`,
    /// `ne`, `like`, `notLike` (with a string) or `in`, `notIn` (with an array).
    #[must_use]
    pub fn filter(mut self, field: &str, operator: &str, value: impl Into<Value>) -> Self {
        let mut filter = self
            .filters
            .get(field)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        filter.insert(operator, value.into());
        self.filters.insert(field, filter);
        self
    }

    /// The query document, or `None` for the empty query.
    pub fn document(&self) -> Option<Value> {
        let mut document = self.document.clone();
        if !self.filters.is_empty() {
            document.insert("query", self.filters.clone());
        }
        (!document.is_empty()).then_some(Value::Object(document))
    }
}

fn unexpected(action: AgentAction, detail: &str) -> AgentError {
    AgentError::UnexpectedAnswer {
        action,
        detail: detail.to_owned(),
    }
}

/// An answer to a query (§5.1).
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    /// The items: `{artifact, meta}` for mailboxes, bare records for `trust.fetch`.
    pub results: Vec<Value>,
    /// Where the next page starts, when there is one.
    pub cursor: Option<String>,
    /// How many items match, all pages together.
    pub total: Option<u64>,
    /// Whether another page follows.
    pub has_next: bool,
}

impl QueryResult {
    pub(super) fn from_answer(action: AgentAction, answer: &Object) -> Result<Self, AgentError> {
        let results = answer
            .get("results")
            .and_then(Value::as_array)
            .ok_or_else(|| unexpected(action, "no results array"))?
            .to_vec();
        let total = answer
            .get("total")
            .and_then(Value::as_f64)
            .and_then(|total| {
                // Counts are integers below 2^53.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let count = total as u64;
                (total >= 0.0 && total.fract() == 0.0).then_some(count)
            });
        Ok(QueryResult {
            results,
            cursor: answer.str("cursor").map(str::to_owned),
            total,
            has_next: matches!(answer.get("hasNext"), Some(Value::Bool(true))),
        })
    }

    /// The artifact ids of mailbox results, in order.
    pub fn artifact_ids(&self) -> Vec<String> {
        self.results
            .iter()
            .filter_map(|result| {
                result
                    .as_object()?
                    .get("artifact")?
                    .as_object()?
                    .str("id")
                    .map(str::to_owned)
            })
            .collect()
    }
}

/// An answer to an ids action (§5.2): which ids were acted on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acknowledgement {
    /// The ids acted on.
    pub updated: Vec<String>,
    /// The ids not found.
    pub not_found: Vec<String>,
    /// The outbox entries not cancelled because they were being sent (`outbox.cancel`).
    pub in_flight: Vec<String>,
}

impl Acknowledgement {
    pub(super) fn from_answer(action: AgentAction, answer: &Object) -> Result<Self, AgentError> {
        let list = |key: &str| -> Vec<String> {
            answer
                .get(key)
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|item| item.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        if !answer.contains_key("updated") {
            return Err(unexpected(action, "no updated list"));
        }
        Ok(Acknowledgement {
            updated: list("updated"),
            not_found: list("notFound"),
            in_flight: list("inFlight"),
        })
    }
}

/// The answer to an outbound action: the artifact is queued for delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    /// The id of the transporter artifact queued.
    pub artifact_id: String,
    /// `queued`.
    pub status: String,
}

impl Queued {
    pub(super) fn from_answer(action: AgentAction, answer: &Object) -> Result<Self, AgentError> {
        Ok(Queued {
            artifact_id: answer
                .str("artifactId")
                .ok_or_else(|| unexpected(action, "no artifactId"))?
                .to_owned(),
            status: answer.str("status").unwrap_or_default().to_owned(),
        })
    }
}
