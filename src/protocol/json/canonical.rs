//! Whether a received line is already `JSON.stringify` of what it parses to, so that
//! its signed text can be cut from it instead of written out again.

use super::parse::Parser;

/// What [`parse_noting_canonical`](super::parse_noting_canonical) found out about the
/// text itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonicalText {
    /// The bytes of the top-level `"signature":…` member, with one comma beside it,
    /// if the object has that member.
    pub(super) signature: Option<std::ops::Range<usize>>,
}

impl CanonicalText {
    /// `to_canonical_without(&["signature"])` of the parsed object, cut from the text
    /// it was parsed from instead of written out again.
    pub fn without_signature(&self, text: &str) -> Option<String> {
        let Some(range) = &self.signature else {
            return Some(text.to_owned());
        };
        let before = text.get(..range.start)?;
        let after = text.get(range.end..)?;
        let mut out = String::with_capacity(before.len() + after.len());
        out.push_str(before);
        out.push_str(after);
        Some(out)
    }
}

impl Parser<'_> {
    /// Whether the number literal just read (from `start`) is the text
    /// `Number::toString` writes for its value. Only literals of at most 15 digits
    /// without an exponent qualify: a decimal of at most 15 significant digits is the
    /// shortest one that rounds to its double (no other decimal of at most 15 digits
    /// rounds to the same double), which is what `Number::toString` writes, in fixed
    /// notation for the magnitudes allowed here.
    pub(super) fn number_is_canonical(
        &self,
        start: usize,
        negative: bool,
        exponent: bool,
        digits: usize,
        fraction_digits: usize,
        mantissa: u64,
    ) -> bool {
        if exponent || digits > 15 {
            return false;
        }
        if mantissa == 0 {
            // `0` only: `-0` is written `0`, and `0.0` is written `0`.
            return !negative && fraction_digits == 0;
        }
        if fraction_digits == 0 {
            return true;
        }
        // `1.50` is written `1.5`.
        if self.bytes.get(self.pos - 1) == Some(&b'0') {
            return false;
        }
        // Below 1: `0.` and at most five zeros (1e-7 is written `1e-7`).
        let integer_digits = digits - fraction_digits;
        let is_fraction_only =
            integer_digits == 1 && self.bytes.get(start + usize::from(negative)) == Some(&b'0');
        if is_fraction_only {
            let significant = mantissa.ilog10() as usize + 1;
            return fraction_digits - significant <= 5;
        }
        true
    }
}
