//! JSON values as JavaScript sees them, and `JSON.stringify` reproduced byte for byte.
//!
//! BTPS signs the text that JavaScript's `JSON.stringify` produces for the value that
//! `JSON.parse` made of the received line, never the received bytes themselves
//! (`spec/03-crypto.md` §4). Reproducing that text needs a value model with the
//! JavaScript semantics, which `serde_json::Value` does not have:
//!
//! * objects keep insertion order, a duplicate key keeps its first position and takes
//!   the last value, and keys that are array indices are written first in ascending
//!   numeric order;
//! * every number is an IEEE-754 double, formatted with ECMAScript's
//!   `Number::toString` (`ryu-js`); a literal too large for a double is `Infinity`
//!   and is written as `null`;
//! * strings are sequences of UTF-16 code units, so `"\ud800"` (a lone surrogate) is a
//!   legal string that must survive a round trip.
//!
//! This module is pure: no I/O, no allocation beyond the value itself.

use std::fmt;
use std::hash::{Hash, Hasher};

use indexmap::{Equivalent, IndexMap};

/// How deeply arrays and objects may nest before a line is refused as invalid JSON.
///
/// JavaScript's own limit is the engine's stack; real artifacts nest fewer than ten
/// levels. A fixed bound keeps the recursive parser and serializer safe on any stack.
pub const MAX_DEPTH: usize = 128;

/// A JSON string as JavaScript holds it.
///
/// Invariant: [`JsString::Units`] is used only when the string contains at least one
/// unpaired surrogate; every well-formed string is [`JsString::Text`]. Equality and
/// hashing rely on this, so construct values through [`JsString::from_units`].
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum JsString {
    /// Well-formed Unicode text (every string a real artifact carries).
    Text(String),
    /// UTF-16 code units including at least one lone surrogate.
    Units(Vec<u16>),
}

impl JsString {
    /// Builds a string from UTF-16 code units, choosing the canonical representation.
    pub fn from_units(units: Vec<u16>) -> Self {
        match String::from_utf16(&units) {
            Ok(text) => JsString::Text(text),
            Err(_) => JsString::Units(units),
        }
    }

    /// The text, when the string is well-formed Unicode.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            JsString::Text(text) => Some(text),
            JsString::Units(_) => None,
        }
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        match self {
            JsString::Text(text) => text.is_empty(),
            JsString::Units(units) => units.is_empty(),
        }
    }
}

impl Hash for JsString {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // `Text` hashes exactly like `str` so that `StrKey` lookups find it.
        match self {
            JsString::Text(text) => text.as_str().hash(state),
            JsString::Units(units) => units.hash(state),
        }
    }
}

impl fmt::Debug for JsString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsString::Text(text) => fmt::Debug::fmt(text, f),
            JsString::Units(units) => write!(f, "{}", String::from_utf16_lossy(units)),
        }
    }
}

impl From<&str> for JsString {
    fn from(text: &str) -> Self {
        JsString::Text(text.to_owned())
    }
}

impl From<String> for JsString {
    fn from(text: String) -> Self {
        JsString::Text(text)
    }
}

/// Borrowed `&str` key for map lookups without allocating a [`JsString`].
#[derive(Hash)]
struct StrKey<'a>(&'a str);

impl Equivalent<JsString> for StrKey<'_> {
    fn equivalent(&self, key: &JsString) -> bool {
        matches!(key, JsString::Text(text) if text == self.0)
    }
}

/// A `null` to borrow where a member is absent.
pub static NULL: Value = Value::Null;

/// A parsed JSON value with JavaScript semantics.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// Every JSON number is a double; non-finite values stringify as `null`.
    Number(f64),
    /// A string (possibly with lone surrogates).
    String(JsString),
    /// An array.
    Array(Vec<Value>),
    /// An object with JavaScript key semantics.
    Object(Object),
}

impl Value {
    /// The object, if this value is one.
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(object) => Some(object),
            _ => None,
        }
    }

    /// The object, mutably, if this value is one.
    pub fn as_object_mut(&mut self) -> Option<&mut Object> {
        match self {
            Value::Object(object) => Some(object),
            _ => None,
        }
    }

    /// The text of a well-formed string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(string) => string.as_str(),
            _ => None,
        }
    }

    /// The array, if this value is one.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The number, if this value is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(number) => Some(*number),
            _ => None,
        }
    }

    /// Whether this is a string value (of any content).
    pub fn is_string(&self) -> bool {
        matches!(self, Value::String(_))
    }

    /// JavaScript truthiness (`""`, `0`, `NaN`, `false` and `null` are falsy).
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(flag) => *flag,
            Value::Number(number) => *number != 0.0 && !number.is_nan(),
            Value::String(string) => !string.is_empty(),
            Value::Array(_) | Value::Object(_) => true,
        }
    }

    /// `JSON.stringify(value)`.
    pub fn to_canonical(&self) -> String {
        let mut out = String::with_capacity(256);
        write_value(&mut out, self);
        out
    }

    /// A string value.
    pub fn string(text: impl Into<String>) -> Self {
        Value::String(JsString::Text(text.into()))
    }
}

impl From<Object> for Value {
    fn from(object: Object) -> Self {
        Value::Object(object)
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::string(text)
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Value::String(JsString::Text(text))
    }
}

impl From<bool> for Value {
    fn from(flag: bool) -> Self {
        Value::Bool(flag)
    }
}

impl From<f64> for Value {
    fn from(number: f64) -> Self {
        Value::Number(number)
    }
}

/// A JSON object: members in insertion order, as a JavaScript object holds them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Object {
    members: IndexMap<JsString, Value>,
}

impl Object {
    /// An empty object.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of member `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.members.get(&StrKey(key))
    }

    /// The value of member `key`, mutably.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.members.get_mut(&StrKey(key))
    }

    /// Whether member `key` is present (with any value, `null` included).
    pub fn contains_key(&self, key: &str) -> bool {
        self.members.contains_key(&StrKey(key))
    }

    /// The text of member `key` when it is a well-formed string.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// Sets member `key`. An existing member keeps its position (JavaScript assignment);
    /// a new one is appended.
    pub fn insert(&mut self, key: impl Into<JsString>, value: impl Into<Value>) {
        self.members.insert(key.into(), value.into());
    }

    /// Removes member `key`, keeping the order of the others (JavaScript `delete`).
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.members.shift_remove(&StrKey(key))
    }

    /// Removes member `key` if present and appends it again as the last member.
    pub fn append(&mut self, key: impl Into<JsString>, value: impl Into<Value>) {
        let key = key.into();
        self.members.shift_remove(&key);
        self.members.insert(key, value.into());
    }

    /// Members in insertion order (not in `JSON.stringify` order; see [`Object::to_canonical`]).
    pub fn iter(&self) -> impl Iterator<Item = (&JsString, &Value)> {
        self.members.iter()
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the object has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// `JSON.stringify(object)`.
    pub fn to_canonical(&self) -> String {
        self.to_canonical_without(&[])
    }

    /// `JSON.stringify` of this object with the top-level members named in `skip`
    /// left out, without copying the object (the signed text of an artifact is its
    /// canonical form minus `signature`).
    pub fn to_canonical_without(&self, skip: &[&str]) -> String {
        let mut out = String::with_capacity(512);
        write_object(&mut out, self, skip);
        out
    }
}

impl FromIterator<(JsString, Value)> for Object {
    fn from_iter<I: IntoIterator<Item = (JsString, Value)>>(iter: I) -> Self {
        let mut object = Object::new();
        for (key, value) in iter {
            object.members.insert(key, value);
        }
        object
    }
}

// ---------------------------------------------------------------------------------
// Parsing: JSON.parse semantics.
// ---------------------------------------------------------------------------------

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
    let mut parser = Parser {
        bytes: text.as_bytes(),
        pos: 0,
    };
    parser.skip_whitespace();
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.pos != parser.bytes.len() {
        return Err(parser.error("unexpected data after the value"));
    }
    Ok(value)
}

struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, reason: &'static str) -> ParseError {
        ParseError {
            offset: self.pos,
            reason,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
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
        let mut object = Object::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(object));
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a member name"));
            }
            let key = self.string()?;
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return Err(self.error("expected ':'"));
            }
            self.pos += 1;
            self.skip_whitespace();
            let value = self.value(depth)?;
            // IndexMap::insert replaces the value in place: last value wins, first
            // position kept — exactly JavaScript's behaviour for duplicate keys.
            object.members.insert(key, value);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(object));
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
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_whitespace();
            items.push(self.value(depth)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }

    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.skip_digits(),
            _ => return Err(self.error("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("invalid number"));
            }
            self.skip_digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("invalid number"));
            }
            self.skip_digits();
        }
        // The slice is ASCII by construction. Rust's float parser rounds correctly and
        // turns overflowing literals into ±inf, as JavaScript does.
        let literal = std::str::from_utf8(&self.bytes[start..self.pos])
            .map_err(|_| self.error("invalid number"))?;
        literal
            .parse::<f64>()
            .map(Value::Number)
            .map_err(|_| self.error("invalid number"))
    }

    fn skip_digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn hex4(&mut self) -> Result<u16, ParseError> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("bad \\u escape"))?;
        let mut unit: u16 = 0;
        for &digit in digits {
            let nibble = match digit {
                b'0'..=b'9' => digit - b'0',
                b'a'..=b'f' => digit - b'a' + 10,
                b'A'..=b'F' => digit - b'A' + 10,
                _ => return Err(self.error("bad \\u escape")),
            };
            unit = (unit << 4) | u16::from(nibble);
        }
        self.pos += 4;
        Ok(unit)
    }

    fn string(&mut self) -> Result<JsString, ParseError> {
        self.pos += 1; // opening quote
        let mut text = String::new();
        // Set once a lone surrogate appears: from then on the string is kept as UTF-16.
        let mut units: Option<Vec<u16>> = None;
        loop {
            // Copy the run of plain characters in one go.
            let run_start = self.pos;
            while let Some(byte) = self.peek() {
                if byte == b'"' || byte == b'\\' || byte < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            if self.pos > run_start {
                // The input is a &str and the run stops only at ASCII bytes, so the run
                // is valid UTF-8; the check cannot fail but costs little.
                let run = std::str::from_utf8(&self.bytes[run_start..self.pos])
                    .map_err(|_| self.error("invalid UTF-8"))?;
                match &mut units {
                    Some(units) => units.extend(run.encode_utf16()),
                    None => text.push_str(run),
                }
            }
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(match units {
                        Some(units) => JsString::from_units(units),
                        None => JsString::Text(text),
                    });
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let escape = self
                        .peek()
                        .ok_or_else(|| self.error("unterminated string"))?;
                    self.pos += 1;
                    let unit = match escape {
                        b'"' => u16::from(b'"'),
                        b'\\' => u16::from(b'\\'),
                        b'/' => u16::from(b'/'),
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => u16::from(b'\n'),
                        b'r' => u16::from(b'\r'),
                        b't' => u16::from(b'\t'),
                        b'u' => self.hex4()?,
                        _ => return Err(self.error("invalid escape")),
                    };
                    self.push_unit(unit, &mut text, &mut units)?;
                }
                Some(_) => return Err(self.error("control character in string")),
            }
        }
    }

    /// Appends one escaped UTF-16 unit, pairing surrogates where JavaScript would.
    fn push_unit(
        &mut self,
        unit: u16,
        text: &mut String,
        units: &mut Option<Vec<u16>>,
    ) -> Result<(), ParseError> {
        if let Some(units) = units {
            units.push(unit);
            return Ok(());
        }
        if (0xD800..0xDC00).contains(&unit) && self.bytes[self.pos..].starts_with(b"\\u") {
            // A high surrogate followed by an escaped low surrogate is one character.
            let saved = self.pos;
            self.pos += 2;
            let low = self.hex4()?;
            if (0xDC00..0xE000).contains(&low) {
                let code = 0x10000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00);
                // Always a valid scalar value: 0x10000..=0x10FFFF.
                if let Some(character) = char::from_u32(code) {
                    text.push(character);
                    return Ok(());
                }
            }
            self.pos = saved;
        }
        match char::from_u32(u32::from(unit)) {
            Some(character) => text.push(character),
            None => {
                // A lone surrogate: switch this string to its UTF-16 form.
                let mut all: Vec<u16> = text.encode_utf16().collect();
                all.push(unit);
                *units = Some(all);
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Serializing: JSON.stringify semantics.
// ---------------------------------------------------------------------------------

/// Whether `key` is an array index in the ECMAScript sense: the canonical decimal
/// form of an integer from 0 to 2^32 − 2. Such keys are enumerated first.
pub fn array_index(key: &JsString) -> Option<u32> {
    let text = key.as_str()?;
    let bytes = text.as_bytes();
    match bytes {
        [] => None,
        [b'0'] => Some(0),
        [b'1'..=b'9', rest @ ..] if rest.len() <= 9 && rest.iter().all(u8::is_ascii_digit) => {
            let value: u64 = text.parse().ok()?;
            u32::try_from(value).ok().filter(|&index| index != u32::MAX)
        }
        _ => None,
    }
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => write_number(out, *number),
        Value::String(string) => write_string(out, string),
        Value::Array(items) => {
            out.push('[');
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(object) => write_object(out, object, &[]),
    }
}

fn write_object(out: &mut String, object: &Object, skip: &[&str]) {
    let skipped = |key: &JsString| key.as_str().is_some_and(|text| skip.contains(&text));
    out.push('{');
    let mut first = true;
    let mut member = |out: &mut String, key: &JsString, value: &Value| {
        if !first {
            out.push(',');
        }
        first = false;
        write_string(out, key);
        out.push(':');
        write_value(out, value);
    };
    let mut indices: Vec<(u32, &JsString, &Value)> = object
        .members
        .iter()
        .filter_map(|(key, value)| array_index(key).map(|index| (index, key, value)))
        .collect();
    if indices.is_empty() {
        for (key, value) in &object.members {
            if !skipped(key) {
                member(out, key, value);
            }
        }
    } else {
        indices.sort_unstable_by_key(|(index, _, _)| *index);
        for (_, key, value) in &indices {
            if !skipped(key) {
                member(out, key, value);
            }
        }
        for (key, value) in &object.members {
            if array_index(key).is_none() && !skipped(key) {
                member(out, key, value);
            }
        }
    }
    out.push('}');
}

/// ECMAScript `Number::toString`, with non-finite values as `null` (`JSON.stringify`).
pub fn write_number(out: &mut String, number: f64) {
    if !number.is_finite() {
        out.push_str("null");
    } else if number == 0.0 {
        out.push('0'); // both +0 and -0
    } else {
        let mut buffer = ryu_js::Buffer::new();
        out.push_str(buffer.format_finite(number));
    }
}

fn write_string(out: &mut String, string: &JsString) {
    out.push('"');
    match string {
        JsString::Text(text) => write_escaped_text(out, text),
        JsString::Units(units) => {
            for decoded in char::decode_utf16(units.iter().copied()) {
                match decoded {
                    Ok(character) => {
                        let mut buffer = [0u8; 4];
                        write_escaped_text(out, character.encode_utf8(&mut buffer));
                    }
                    Err(lone) => {
                        use std::fmt::Write;
                        // Writing to a String cannot fail.
                        let _ = write!(out, "\\u{:04x}", lone.unpaired_surrogate());
                    }
                }
            }
        }
    }
    out.push('"');
}

fn write_escaped_text(out: &mut String, text: &str) {
    let mut run_start = 0;
    for (position, byte) in text.bytes().enumerate() {
        let escape: &str = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[run_start..position]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        } else {
            out.push_str(escape);
        }
        run_start = position + 1;
    }
    out.push_str(&text[run_start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(text: &str) -> String {
        parse(text).unwrap().to_canonical()
    }

    #[test]
    fn duplicate_keys_keep_first_position_and_last_value() {
        assert_eq!(round(r#"{"a":1,"b":2,"a":3}"#), r#"{"a":3,"b":2}"#);
    }

    #[test]
    fn index_keys_come_first() {
        assert_eq!(
            round(
                r#"{"b":1,"a":2,"1":3,"0":4,"-1":5,"01":6,"1.0":7,"4294967294":8,"4294967295":9}"#
            ),
            r#"{"0":4,"1":3,"4294967294":8,"b":1,"a":2,"-1":5,"01":6,"1.0":7,"4294967295":9}"#
        );
    }

    #[test]
    fn numbers_follow_ecmascript() {
        assert_eq!(
            round("[-0,1e21,1e-7,0.000001,1e400,-1e400,5e-324]"),
            "[0,1e+21,1e-7,0.000001,null,null,5e-324]"
        );
    }

    #[test]
    fn lone_surrogates_survive() {
        assert_eq!(
            round(r#"["\ud800","\uDFFF","\ude00\ud83d","\ud83d\ude00"]"#),
            "[\"\\ud800\",\"\\udfff\",\"\\ude00\\ud83d\",\"😀\"]"
        );
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
}
