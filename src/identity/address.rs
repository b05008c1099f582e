//! Identity syntax: `account$domain` (`spec/04-identity-dns.md` §1, `02-artifacts.md` §0.2).
//!
//! Two rules exist in the reference. The *schema rule* decides whether an artifact
//! field is acceptable: the whole string matches `^\S+\$\S+\.\S+$` with JavaScript's
//! whitespace class. The *parser* splits at `$` to build DNS names and compare
//! domains. [`Identity::parse`] applies both plus the stricter grammar the spec
//! recommends: exactly one `$`.

use std::fmt;

/// Why a string is not a usable identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The string does not match `^\S+\$\S+\.\S+$`.
    #[error("BTPS identity is expected in the format username$domain.")]
    Format,
    /// More than one `$` (the reference would silently ignore the rest).
    #[error("BTPS identity must contain exactly one '$'")]
    SeveralDollars,
}

/// A validated BTPS identity such as `billing$vendor.com`.
///
/// The text is kept exactly as written (identities are covered by signatures and are
/// never rewritten); comparisons that the protocol defines as case-insensitive use
/// [`Identity::eq_ignore_case`] and [`Identity::same_domain`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    text: String,
    dollar: usize,
}

impl Identity {
    /// Parses and validates an identity.
    pub fn parse(text: &str) -> Result<Self, IdentityError> {
        if !is_schema_identity(text) {
            return Err(IdentityError::Format);
        }
        let mut dollars = text.match_indices('$');
        let dollar = dollars
            .next()
            .map(|(index, _)| index)
            .ok_or(IdentityError::Format)?;
        if dollars.next().is_some() {
            return Err(IdentityError::SeveralDollars);
        }
        Ok(Identity {
            text: text.to_owned(),
            dollar,
        })
    }

    /// The identity as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The part before `$`.
    pub fn account(&self) -> &str {
        &self.text[..self.dollar]
    }

    /// The part after `$`.
    pub fn domain(&self) -> &str {
        &self.text[self.dollar + 1..]
    }

    /// Whether two identities name the same address, ignoring case the way the
    /// computed ids do.
    pub fn eq_ignore_case(&self, other: &Identity) -> bool {
        self.text == other.text || self.text.to_lowercase() == other.text.to_lowercase()
    }

    /// Whether both identities have the same domain, ignoring case.
    pub fn same_domain(&self, other: &Identity) -> bool {
        self.domain() == other.domain()
            || self.domain().to_lowercase() == other.domain().to_lowercase()
    }

    /// The DNS name of this identity's key record under `selector`:
    /// `<selector>._btps.identity.<account>.<domain>`.
    pub fn key_record_name(&self, selector: &str) -> String {
        format!(
            "{selector}._btps.identity.{}.{}",
            self.account(),
            self.domain()
        )
    }

    /// The DNS name of the host record of this identity's domain: `_btps.host.<domain>`.
    pub fn host_record_name(&self) -> String {
        format!("_btps.host.{}", self.domain())
    }

    /// `computeId` of this identity.
    pub fn id(&self) -> String {
        super::compute_id(&self.text)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl std::str::FromStr for Identity {
    type Err = IdentityError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Identity::parse(text)
    }
}

/// JavaScript's `\s` class: U+0009–U+000D, U+0020, U+00A0, U+1680, U+2000–U+200A,
/// U+2028, U+2029, U+202F, U+205F, U+3000, U+FEFF. (Rust's `char::is_whitespace`
/// differs: it includes U+0085 and excludes U+FEFF.)
pub fn is_js_whitespace(character: char) -> bool {
    matches!(
        character,
        '\u{0009}'..='\u{000D}'
            | '\u{0020}'
            | '\u{00A0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200A}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202F}'
            | '\u{205F}'
            | '\u{3000}'
            | '\u{FEFF}'
    )
}

/// The schema rule `^\S+\$\S+\.\S+$` (JavaScript semantics, greedy with backtracking):
/// no whitespace anywhere, a `$` with at least one character before it, and after some
/// `$` at least one character, a `.`, and at least one character.
pub fn is_schema_identity(text: &str) -> bool {
    if text.is_empty() || text.chars().any(is_js_whitespace) {
        return false;
    }
    // Without whitespace, `\S+` matches anything non-empty, so the regex holds iff
    // some `$` at byte i > 0 is followed by some `.` at j > i + 1 with j < len - 1.
    let bytes = text.as_bytes();
    let Some(last_dot) = text.rfind('.') else {
        return false;
    };
    if last_dot + 1 >= bytes.len() {
        // The last '.' is at the end; an earlier '.' could still serve.
        return text[..last_dot]
            .rfind('.')
            .is_some_and(|dot| valid_split(text, dot));
    }
    valid_split(text, last_dot)
}

/// Whether there is a `$` with a non-empty prefix and at least one character between
/// it and the `.` at `dot` (the `.` must not be the last character).
fn valid_split(text: &str, dot: usize) -> bool {
    if dot + 1 >= text.len() {
        return false;
    }
    text[..dot]
        .match_indices('$')
        .any(|(dollar, _)| dollar > 0 && dot > dollar + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_rule() {
        for good in [
            "a$b.c",
            "billing$vendor.com",
            "a$$b.c",
            "a$b$c.d",
            "pay.john$vendor.com",
            "a$b..",
            "a$b.c.",
        ] {
            assert!(is_schema_identity(good), "{good}");
        }
        for bad in [
            "",
            "a$b",
            "$b.c",
            "a$.c",
            "a$b.",
            "a b$c.d",
            "a$b.c\n",
            "a\u{feff}$b.c",
            "ab.c",
        ] {
            assert!(!is_schema_identity(bad), "{bad:?}");
        }
    }

    #[test]
    fn parse_strict() {
        let identity = Identity::parse("pay.john$vendor.com").unwrap();
        assert_eq!(identity.account(), "pay.john");
        assert_eq!(identity.domain(), "vendor.com");
        assert_eq!(
            identity.key_record_name("btps1"),
            "btps1._btps.identity.pay.john.vendor.com"
        );
        assert_eq!(
            Identity::parse("a$b$c.d"),
            Err(IdentityError::SeveralDollars)
        );
        assert_eq!(
            Identity::parse("a$$b.c"),
            Err(IdentityError::SeveralDollars)
        );
    }
}
