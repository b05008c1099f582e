//! Mailbox queries (`07-agents-auth.md` §4.2): time bounds, order, a position to
//! continue after, a page size and filters on an entry's `from`, `to` and title.
//!
//! The semantics are here, once, as pure functions over entries; each backend
//! decides how to walk its indexes and asks [`EntryFilter::matches`] about the
//! entries inside the time window.

use super::mailbox::MailboxEntry;

/// A string filter (`07-agents-auth.md` §4.1): every operator present must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TextFilter {
    /// Equal to.
    pub eq: Option<String>,
    /// Not equal to.
    pub ne: Option<String>,
    /// Equal to one of.
    pub any_of: Option<Vec<String>>,
    /// Equal to none of.
    pub none_of: Option<Vec<String>>,
    /// Contains (literally, ignoring case).
    pub like: Option<String>,
    /// Does not contain (literally, ignoring case).
    pub not_like: Option<String>,
}

impl TextFilter {
    /// Whether the filter names no operator (and so holds for everything).
    pub fn is_empty(&self) -> bool {
        *self == TextFilter::default()
    }

    /// Whether `value` satisfies every operator. `exact` makes `eq`, `ne`, `in` and
    /// `notIn` compare exactly (titles); otherwise every comparison ignores case
    /// (identities). `like` and `notLike` always ignore case. An absent value never
    /// satisfies `eq`, `in` or `like`, and always satisfies `ne`, `notIn`, `notLike`.
    pub fn matches(&self, value: Option<&str>, exact: bool) -> bool {
        let fold = |text: &str| {
            if exact {
                text.to_owned()
            } else {
                text.to_lowercase()
            }
        };
        let folded = value.map(fold);
        let equal = |wanted: &str| folded.as_deref() == Some(fold(wanted).as_str());
        let lowered = value.map(str::to_lowercase);
        let contains = |part: &str| {
            lowered
                .as_deref()
                .is_some_and(|text| text.contains(&part.to_lowercase()))
        };
        self.eq.as_deref().is_none_or(equal)
            && self.ne.as_deref().is_none_or(|wanted| !equal(wanted))
            && self
                .any_of
                .as_ref()
                .is_none_or(|list| list.iter().any(|wanted| equal(wanted)))
            && self
                .none_of
                .as_ref()
                .is_none_or(|list| !list.iter().any(|wanted| equal(wanted)))
            && self.like.as_deref().is_none_or(contains)
            && self.not_like.as_deref().is_none_or(|part| !contains(part))
    }
}

/// The filters of a query, all of which must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryFilter {
    /// On the entry's derived title (exact, `like` ignoring case).
    pub title: Option<TextFilter>,
    /// On the artifact's `from` (ignoring case).
    pub from: Option<TextFilter>,
    /// On the artifact's `to` (ignoring case).
    pub to: Option<TextFilter>,
}

impl EntryFilter {
    /// Whether no filter would reject anything.
    pub fn is_empty(&self) -> bool {
        [&self.title, &self.from, &self.to]
            .into_iter()
            .all(|filter| filter.as_ref().is_none_or(TextFilter::is_empty))
    }

    /// Whether `entry` passes every filter.
    pub fn matches(&self, entry: &MailboxEntry) -> bool {
        self.matches_fields(&entry.from, &entry.to, entry.title.as_deref())
    }

    /// Whether an entry with these fields passes every filter.
    pub fn matches_fields(&self, from: &str, to: &str, title: Option<&str>) -> bool {
        self.from
            .as_ref()
            .is_none_or(|filter| filter.matches(Some(from), false))
            && self
                .to
                .as_ref()
                .is_none_or(|filter| filter.matches(Some(to), false))
            && self
                .title
                .as_ref()
                .is_none_or(|filter| filter.matches(title, true))
    }
}

/// A position in a mailbox listing: the (`at`, `entry_id`) of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListingPosition {
    /// When the entry entered its mailbox, in milliseconds since the epoch.
    pub at_millis: i64,
    /// The entry id.
    pub entry_id: u64,
}

impl ListingPosition {
    /// The position of `entry`.
    pub fn of(entry: &MailboxEntry) -> Self {
        ListingPosition {
            at_millis: entry.at_millis,
            entry_id: entry.entry_id,
        }
    }
}

/// One query over a mailbox of one owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxQuery {
    /// Only entries with `at` at or after this instant (milliseconds).
    pub since: Option<i64>,
    /// Only entries with `at` at or before this instant (milliseconds).
    pub until: Option<i64>,
    /// Newest first (`desc`) instead of oldest first.
    pub newest_first: bool,
    /// Continue strictly after this position (in the query's order).
    pub after: Option<ListingPosition>,
    /// At most this many entries (0 counts as 1).
    pub limit: u32,
    /// What entries must satisfy.
    pub filter: EntryFilter,
}

impl MailboxQuery {
    /// Whether `position` lies inside the time bounds.
    pub fn in_window(&self, at_millis: i64) -> bool {
        self.since.is_none_or(|since| at_millis >= since)
            && self.until.is_none_or(|until| at_millis <= until)
    }

    /// Whether `position` comes after the query's cursor in its order.
    pub fn is_after_cursor(&self, position: ListingPosition) -> bool {
        match self.after {
            None => true,
            Some(after) if self.newest_first => position < after,
            Some(after) => position > after,
        }
    }

    /// The page size as a count.
    pub fn effective_limit(&self) -> usize {
        usize::try_from(self.limit.max(1)).unwrap_or(usize::MAX)
    }
}

/// The answer to a [`MailboxQuery`].
#[derive(Clone, Debug, PartialEq)]
pub struct QueryPage {
    /// The entries, in the query's order.
    pub items: Vec<MailboxEntry>,
    /// Whether at least one matching entry follows the last one returned.
    pub has_next: bool,
    /// How many entries match the time bounds and filters, ignoring the cursor and
    /// the limit.
    pub total: u64,
}

/// Runs `query` over entries given in ascending (`at`, `entry_id`) order, all of
/// one owner and mailbox: the reference semantics every backend must reproduce.
pub fn run_query<'a>(
    ascending: impl DoubleEndedIterator<Item = &'a MailboxEntry>,
    query: &MailboxQuery,
) -> QueryPage {
    let ordered: Box<dyn Iterator<Item = &MailboxEntry>> = if query.newest_first {
        Box::new(ascending.rev())
    } else {
        Box::new(ascending)
    };
    let limit = query.effective_limit();
    let mut page = QueryPage {
        items: Vec::new(),
        has_next: false,
        total: 0,
    };
    for entry in ordered {
        if !query.in_window(entry.at_millis) || !query.filter.matches(entry) {
            continue;
        }
        page.total += 1;
        if !query.is_after_cursor(ListingPosition::of(entry)) {
            continue;
        }
        if page.items.len() < limit {
            page.items.push(entry.clone());
        } else {
            page.has_next = true;
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(build: impl FnOnce(&mut TextFilter)) -> TextFilter {
        let mut filter = TextFilter::default();
        build(&mut filter);
        filter
    }

    #[test]
    fn operators_follow_the_spec() {
        let like = filter(|f| f.like = Some("INV".into()));
        assert!(like.matches(Some("an invoice"), true));
        assert!(!like.matches(None, true));
        let not_like = filter(|f| f.not_like = Some("inv".into()));
        assert!(not_like.matches(None, true));
        assert!(!not_like.matches(Some("Invoice"), true));
        // Titles compare exactly for eq, identities ignoring case.
        let eq = filter(|f| f.eq = Some("Invoice".into()));
        assert!(!eq.matches(Some("invoice"), true));
        assert!(eq.matches(Some("invoice"), false));
        let empty_in = filter(|f| f.any_of = Some(vec![]));
        assert!(!empty_in.matches(Some("x"), true));
        let empty_not_in = filter(|f| f.none_of = Some(vec![]));
        assert!(empty_not_in.matches(Some("x"), true));
        let ne = filter(|f| f.ne = Some("x".into()));
        assert!(ne.matches(None, true));
        // Literal: no wildcards.
        let wildcard = filter(|f| f.like = Some("in.*e".into()));
        assert!(!wildcard.matches(Some("invoice"), true));
    }
}
