//! The parser: `JSON.parse` semantics, with an exact fast path for short numbers,
//! noting on the way whether the text is already canonical. String literals are read
//! in `string.rs`.

use super::canonical::CanonicalText;
use super::object::set_member;
use super::{EXACT_POWERS_OF_TEN, JsString, MAX_DEPTH, Object, Value, array_index};

/// Why a text is not JSON (`JSON.parse` would throw).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at byte {offset}: {reason}")]
pub struct ParseError {
    /// Byte offset in the input where parsing stopped.
    pub offset: usize,
    /// What was wrong there.
    pub reason: &'static str,
}

/// Parses one JSON text with `JSON.parse` semantics (RFC 8259 grammar, JSON
/// whitespace only, exactly one value, duplicate keys allowed).
pub fn parse(text: &str) -> Result<Value, ParseError> {
    parse_noting_canonical(text).map(|(value, _)| value)
}

/// [`parse`], and whether `text` is already `JSON.stringify` of the value it parses
/// to: a top-level object, no whitespace, no escapes other than the ones the writer
/// produces, no duplicate or array-index keys, numbers written as
/// `Number::toString` writes them. The check is conservative: a text it does not
/// recognise is simply written out again by the caller.
pub fn parse_noting_canonical(text: &str) -> Result<(Value, Option<CanonicalText>), ParseError> {
    let mut parser = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        members: Vec::new(),
        items: Vec::new(),
        canonical: true,
        signature: None,
    };
    parser.skip_whitespace();
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.pos != parser.bytes.len() {
        return Err(parser.error("unexpected data after the value"));
    }
    let canonical = (parser.canonical && value.as_object().is_some()).then(|| CanonicalText {
        signature: parser.signature.map(|(start, end)| {
            if start > 1 {
                // Not the first member: take the comma before it.
                start - 1..end
            } else if parser.bytes.get(end) == Some(&b',') {
                // The first of several: take the comma after it.
                start..end + 1
            } else {
                start..end
            }
        }),
    });
    Ok((value, canonical))
}

/// The state of one parse: the input, the position in it, and the scratch stacks.
pub(super) struct Parser<'a> {
    text: &'a str,
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
    /// Members of the objects being parsed, innermost last: each object collects its
    /// members here and moves them into a vector of exactly the right size when it
    /// closes, so no object grows its own vector member by member.
    members: Vec<(JsString, Value)>,
    /// Items of the arrays being parsed, the same way.
    items: Vec<Value>,
    /// Whether the text so far is exactly what `JSON.stringify` writes for it.
    pub(super) canonical: bool,
    /// Where the top-level member `signature` starts (its key's quote) and ends.
    signature: Option<(usize, usize)>,
}

impl Parser<'_> {
    pub(super) fn error(&self, reason: &'static str) -> ParseError {
        ParseError {
            offset: self.pos,
            reason,
        }
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
            self.canonical = false;
        }
    }

    /// The input from `start` to the current position. Every caller stops at ASCII
    /// bytes, which are character boundaries of the `&str` input, so this never fails
    /// and needs no UTF-8 validation.
    pub(super) fn slice_from(&self, start: usize) -> Result<&str, ParseError> {
        self.text
            .get(start..self.pos)
            .ok_or_else(|| self.error("invalid UTF-8"))
    }

    fn expect_literal(
        &mut self,
        literal: &'static [u8],
        value: Value,
    ) -> Result<Value, ParseError> {
        if self.bytes[self.pos..].starts_with(literal) {
            self.pos += literal.len();
            Ok(value)
        } else {
            Err(self.error("invalid literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        match self.peek() {
            None => Err(self.error("unexpected end of input")),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b't') => self.expect_literal(b"true", Value::Bool(true)),
            Some(b'f') => self.expect_literal(b"false", Value::Bool(false)),
            Some(b'n') => self.expect_literal(b"null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("unexpected character")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        self.pos += 1; // '{'
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(Object::new()));
        }
        // This object's members are `self.members[base..]`.
        let base = self.members.len();
        self.members.reserve(16);
        let mut index = None;
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a member name"));
            }
            let key_start = self.pos;
            let key = self.string()?;
            if array_index(&key).is_some() {
                // The writer moves array-index keys to the front.
                self.canonical = false;
            }
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return Err(self.error("expected ':'"));
            }
            self.pos += 1;
            self.skip_whitespace();
            let value = self.value(depth)?;
            if depth == 1 && key.is_text("signature") {
                self.signature = Some((key_start, self.pos));
            }
            // A duplicate key keeps its first position and takes the last value,
            // exactly JavaScript's behaviour.
            if set_member(&mut self.members, base, &mut index, key, value) {
                self.canonical = false;
            }
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    // One allocation of exactly this object's size.
                    let members = self.members.split_off(base);
                    return Ok(Value::Object(Object { members, index }));
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        self.pos += 1; // '['
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(Vec::new()));
        }
        // This array's items are `self.items[base..]`.
        let base = self.items.len();
        self.items.reserve(16);
        loop {
            self.skip_whitespace();
            let item = self.value(depth)?;
            self.items.push(item);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(self.items.split_off(base)));
                }
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }

    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        // The decimal digits as an integer while they fit, for the exact fast path.
        let mut mantissa: u64 = 0;
        let mut digits = 0usize;
        let mut fraction_digits = 0usize;
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                digits = 1;
            }
            Some(b'1'..=b'9') => {
                while let Some(digit @ b'0'..=b'9') = self.peek() {
                    mantissa = mantissa
                        .wrapping_mul(10)
                        .wrapping_add(u64::from(digit - b'0'));
                    digits += 1;
                    self.pos += 1;
                }
            }
            _ => return Err(self.error("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("invalid number"));
            }
            while let Some(digit @ b'0'..=b'9') = self.peek() {
                mantissa = mantissa
                    .wrapping_mul(10)
                    .wrapping_add(u64::from(digit - b'0'));
                digits += 1;
                fraction_digits += 1;
                self.pos += 1;
            }
        }
        let mut exponent = false;
        if let Some(b'e' | b'E') = self.peek() {
            exponent = true;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("invalid number"));
            }
            self.skip_digits();
        }
        if self.canonical
            && !self.number_is_canonical(
                start,
                negative,
                exponent,
                digits,
                fraction_digits,
                mantissa,
            )
        {
            self.canonical = false;
        }
        if !exponent && digits <= 15 && fraction_digits < EXACT_POWERS_OF_TEN.len() {
            // Clinger's fast path: at most 15 digits make an integer below 2^53, exact
            // as a double, and so is 10^fraction_digits; one IEEE division then rounds
            // the quotient correctly, which is what the full parser below computes.
            // `-0` stays negative zero, as in JavaScript.
            let magnitude = mantissa as f64 / EXACT_POWERS_OF_TEN[fraction_digits];
            return Ok(Value::Number(if negative { -magnitude } else { magnitude }));
        }
        // Rust's float parser rounds correctly and turns overflowing literals into
        // ±inf, as JavaScript does.
        self.slice_from(start)?
            .parse::<f64>()
            .map(Value::Number)
            .map_err(|_| self.error("invalid number"))
    }

    fn skip_digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::json::test_support::{Cases, round};

    #[test]
    fn duplicate_keys_keep_first_position_and_last_value() {
        assert_eq!(round(r#"{"a":1,"b":2,"a":3}"#), r#"{"a":3,"b":2}"#);
    }

    #[test]
    fn rejects_what_json_parse_rejects() {
        for bad in [
            "",
            " ",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            ".5",
            "+1",
            "\"\t\"",
            "\u{feff}{}",
            "{} x",
            "tru",
            "'a'",
            "\"\\x\"",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).is_err());
        let fine = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&fine).is_ok());
    }

    #[test]
    fn duplicate_keys_in_a_large_object() {
        // More members than the threshold, so the parser switches to the hash index
        // part-way; duplicates both before and after that point.
        let mut text = String::from("{");
        for member in 0..40 {
            text.push_str(&format!(r#""k{member}":{member},"#));
        }
        text.push_str(r#""k3":"three","k30":"thirty","k39":null,"k40":40}"#);
        let value = parse(&text).unwrap();
        let object = value.as_object().unwrap();
        assert_eq!(object.len(), 41);
        assert!(object.index.is_some());
        let mut expected = String::from("{");
        for member in 0..41 {
            let value = match member {
                3 => "\"three\"".to_owned(),
                30 => "\"thirty\"".to_owned(),
                39 => "null".to_owned(),
                _ => member.to_string(),
            };
            expected.push_str(&format!(r#""k{member}":{value},"#));
        }
        expected.pop();
        expected.push('}');
        assert_eq!(object.to_canonical(), expected);
        assert_eq!(object.str("k30"), Some("thirty"));
        assert_eq!(object.get("k39"), Some(&Value::Null));
    }

    #[test]
    fn number_literals_parse_as_the_full_parser_reads_them() {
        let mut cases = Cases(0x0123_4567_89ab_cdef);
        let mut literals: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "-0.0",
            "1",
            "-1",
            "0.1",
            "0.2",
            "0.3",
            "1234.5",
            "19.99",
            "9007199254740993",
            "999999999999999",
            "9999999999999999",
            "123456789012345.6",
            "0.000001",
            "0.0000001",
            "1.7976931348623157",
            "4.9406564584124654",
            "0.1234567890123456789012",
            "12345678901234567890",
            "1e5",
            "1E-5",
            "2.5e+3",
            "1e400",
            "-1e400",
            "5e-324",
        ]
        .iter()
        .map(|literal| (*literal).to_owned())
        .collect();
        for _ in 0..20_000 {
            let length = u32::try_from(cases.below(18)).unwrap();
            let integer = cases.below(10u64.pow(length));
            let fraction_length = cases.below(25);
            let fraction: String = (0..fraction_length)
                .map(|_| char::from(b'0' + u8::try_from(cases.below(10)).unwrap()))
                .collect();
            let sign = if cases.below(2) == 0 { "" } else { "-" };
            literals.push(if fraction.is_empty() {
                format!("{sign}{integer}")
            } else {
                format!("{sign}{integer}.{fraction}")
            });
        }
        for literal in &literals {
            let parsed = parse(literal).unwrap().as_f64().unwrap();
            let expected: f64 = literal.parse().unwrap();
            assert_eq!(parsed.to_bits(), expected.to_bits(), "{literal}");
        }
    }
}
