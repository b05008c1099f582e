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
//! This module is pure: no I/O, no allocation beyond the value itself (and, while
//! parsing, two scratch stacks of members and items).

use compact_str::CompactString;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use hashbrown::HashTable;

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
    Text(CompactString),
    /// UTF-16 code units including at least one lone surrogate.
    Units(Vec<u16>),
}

impl JsString {
    /// Builds a string from UTF-16 code units, choosing the canonical representation.
    pub fn from_units(units: Vec<u16>) -> Self {
        match String::from_utf16(&units) {
            Ok(text) => JsString::Text(CompactString::from(text)),
            Err(_) => JsString::Units(units),
        }
    }

    /// The text, when the string is well-formed Unicode.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            JsString::Text(text) => Some(text.as_str()),
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
            JsString::Text(text) => fmt::Debug::fmt(text.as_str(), f),
            JsString::Units(units) => write!(f, "{}", String::from_utf16_lossy(units)),
        }
    }
}

impl From<&str> for JsString {
    fn from(text: &str) -> Self {
        JsString::Text(CompactString::new(text))
    }
}

impl From<String> for JsString {
    fn from(text: String) -> Self {
        JsString::Text(CompactString::from(text))
    }
}

impl JsString {
    /// Whether this is the well-formed string `text`.
    fn is_text(&self, text: &str) -> bool {
        matches!(self, JsString::Text(own) if own == text)
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
    pub fn string(text: impl Into<JsString>) -> Self {
        Value::String(text.into())
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
        Value::string(text)
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

/// Above this many members an object keeps a hash index of its keys; at or below it,
/// a key is found by comparing it with each member's (cheaper than hashing for the
/// handful of members real artifacts have, and no allocation).
const INDEX_THRESHOLD: usize = 16;

/// A JSON object: members in insertion order, as a JavaScript object holds them.
///
/// Keys are unique. Equality ignores member order (as a map's does).
#[derive(Clone, Default)]
pub struct Object {
    members: Vec<(JsString, Value)>,
    /// Present exactly when there are more than [`INDEX_THRESHOLD`] members.
    index: Option<Box<KeyIndex>>,
}

/// Positions of an object's members by key hash.
///
/// Keys come from the network, so the hasher is std's randomly keyed SipHash (the
/// index only exists for large objects, off the hot path, so its cost does not matter
/// but its resistance to chosen collisions does).
#[derive(Clone)]
struct KeyIndex {
    table: HashTable<usize>,
    state: RandomState,
}

impl KeyIndex {
    /// An index of `members`, whose keys are unique.
    fn build(members: &[(JsString, Value)]) -> Box<Self> {
        let mut index = Box::new(KeyIndex {
            table: HashTable::with_capacity(members.len() * 2),
            state: RandomState::new(),
        });
        for position in 0..members.len() {
            index.insert(members, position);
        }
        index
    }

    /// Adds `members[position]`, whose key is not indexed yet.
    fn insert(&mut self, members: &[(JsString, Value)], position: usize) {
        let KeyIndex { table, state } = self;
        let hash = state.hash_one(&members[position].0);
        table.insert_unique(hash, position, |&other| state.hash_one(&members[other].0));
    }

    /// The position of `key`.
    fn find(&self, members: &[(JsString, Value)], key: &JsString) -> Option<usize> {
        let hash = self.state.hash_one(key);
        self.table
            .find(hash, |&position| members[position].0 == *key)
            .copied()
    }

    /// The position of the well-formed key `key` (`JsString::Text` hashes as `str`).
    fn find_str(&self, members: &[(JsString, Value)], key: &str) -> Option<usize> {
        let hash = self.state.hash_one(key);
        self.table
            .find(hash, |&position| members[position].0.is_text(key))
            .copied()
    }

    /// Forgets `members[position]`, which is about to be removed from `members`, and
    /// moves the positions after it down by one.
    fn remove(&mut self, members: &[(JsString, Value)], position: usize) {
        let hash = self.state.hash_one(&members[position].0);
        if let Ok(entry) = self.table.find_entry(hash, |&other| other == position) {
            entry.remove();
        }
        for other in self.table.iter_mut() {
            if *other > position {
                *other -= 1;
            }
        }
    }
}

/// The position of `key` among `members` (indexed by `index` when present).
#[inline]
fn position_of(
    members: &[(JsString, Value)],
    index: Option<&KeyIndex>,
    key: &JsString,
) -> Option<usize> {
    match index {
        Some(index) => index.find(members, key),
        None => members.iter().position(|(own, _)| own == key),
    }
}

/// Sets member `key` of the object whose members are `members[base..]`: an existing
/// member keeps its position and takes the new value (JavaScript assignment, and
/// `JSON.parse` of a duplicate key), a new one is appended. Keeps `index` present
/// exactly when the object has more than [`INDEX_THRESHOLD`] members.
#[inline]
fn set_member(
    members: &mut Vec<(JsString, Value)>,
    base: usize,
    index: &mut Option<Box<KeyIndex>>,
    key: JsString,
    value: Value,
) -> bool {
    let own = &mut members[base..];
    if let Some(position) = position_of(own, index.as_deref(), &key) {
        own[position].1 = value;
        return true;
    }
    members.push((key, value));
    let own = &members[base..];
    match index {
        Some(index) => index.insert(own, own.len() - 1),
        None if own.len() > INDEX_THRESHOLD => *index = Some(KeyIndex::build(own)),
        None => {}
    }
    false
}

impl Object {
    /// An empty object.
    pub fn new() -> Self {
        Self::default()
    }

    /// The position of member `key`.
    fn position(&self, key: &str) -> Option<usize> {
        match &self.index {
            Some(index) => index.find_str(&self.members, key),
            None => self.members.iter().position(|(own, _)| own.is_text(key)),
        }
    }

    /// The value of member `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.position(key).map(|position| &self.members[position].1)
    }

    /// The value of member `key`, mutably.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.position(key)
            .map(|position| &mut self.members[position].1)
    }

    /// Whether member `key` is present (with any value, `null` included).
    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// The text of member `key` when it is a well-formed string.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// Sets member `key`. An existing member keeps its position (JavaScript assignment);
    /// a new one is appended.
    pub fn insert(&mut self, key: impl Into<JsString>, value: impl Into<Value>) {
        let _replaced = set_member(
            &mut self.members,
            0,
            &mut self.index,
            key.into(),
            value.into(),
        );
    }

    /// Removes the member at `position`, keeping the order of the others.
    fn remove_at(&mut self, position: usize) -> Value {
        if self.members.len() - 1 > INDEX_THRESHOLD {
            if let Some(index) = &mut self.index {
                index.remove(&self.members, position);
            }
        } else {
            self.index = None;
        }
        self.members.remove(position).1
    }

    /// Removes member `key`, keeping the order of the others (JavaScript `delete`).
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.position(key).map(|position| self.remove_at(position))
    }

    /// Removes member `key` if present and appends it again as the last member.
    pub fn append(&mut self, key: impl Into<JsString>, value: impl Into<Value>) {
        let key = key.into();
        if let Some(position) = position_of(&self.members, self.index.as_deref(), &key) {
            self.remove_at(position);
        }
        self.insert(key, value);
    }

    /// Members in insertion order (not in `JSON.stringify` order; see [`Object::to_canonical`]).
    pub fn iter(&self) -> impl Iterator<Item = (&JsString, &Value)> {
        self.members.iter().map(|(key, value)| (key, value))
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

impl PartialEq for Object {
    /// Same members with equal values, in any order.
    fn eq(&self, other: &Self) -> bool {
        if self.members.len() != other.members.len() {
            return false;
        }
        // Usually the members are in the same order; otherwise look the key up. Either
        // way each value is compared once.
        self.members.iter().zip(&other.members).enumerate().all(
            |(position, ((key, value), (same_place, _)))| {
                let position = if key == same_place {
                    Some(position)
                } else {
                    position_of(&other.members, other.index.as_deref(), key)
                };
                position.is_some_and(|position| other.members[position].1 == *value)
            },
        )
    }
}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// The members shown as a map, `{key: value, ...}`.
        struct Members<'a>(&'a [(JsString, Value)]);
        impl fmt::Debug for Members<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(self.0.iter().map(|(key, value)| (key, value)))
                    .finish()
            }
        }
        f.debug_struct("Object")
            .field("members", &Members(&self.members))
            .finish()
    }
}

impl FromIterator<(JsString, Value)> for Object {
    fn from_iter<I: IntoIterator<Item = (JsString, Value)>>(iter: I) -> Self {
        let mut object = Object::new();
        for (key, value) in iter {
            object.insert(key, value);
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
    parse_noting_canonical(text).map(|(value, _)| value)
}

/// What [`parse_noting_canonical`] found out about the text itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonicalText {
    /// The bytes of the top-level `"signature":…` member, with one comma beside it,
    /// if the object has that member.
    signature: Option<std::ops::Range<usize>>,
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

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// Members of the objects being parsed, innermost last: each object collects its
    /// members here and moves them into a vector of exactly the right size when it
    /// closes, so no object grows its own vector member by member.
    members: Vec<(JsString, Value)>,
    /// Items of the arrays being parsed, the same way.
    items: Vec<Value>,
    /// Whether the text so far is exactly what `JSON.stringify` writes for it.
    canonical: bool,
    /// Where the top-level member `signature` starts (its key's quote) and ends.
    signature: Option<(usize, usize)>,
}

/// Powers of ten that are exact doubles (10^0 to 10^22).
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

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
            self.canonical = false;
        }
    }

    /// The input from `start` to the current position. Every caller stops at ASCII
    /// bytes, which are character boundaries of the `&str` input, so this never fails
    /// and needs no UTF-8 validation.
    fn slice_from(&self, start: usize) -> Result<&str, ParseError> {
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

    /// Whether the number literal just read (from `start`) is the text
    /// `Number::toString` writes for its value. Only literals of at most 15 digits
    /// without an exponent qualify: a decimal of at most 15 significant digits is the
    /// shortest one that rounds to its double (no other decimal of at most 15 digits
    /// rounds to the same double), which is what `Number::toString` writes, in fixed
    /// notation for the magnitudes allowed here.
    fn number_is_canonical(
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
        let start = self.pos;
        self.pos += plain_run(&self.bytes[start..]);
        if self.peek() == Some(b'"') {
            // No escapes (almost every string): inline up to 24 bytes, else one
            // allocation of the right size.
            let text = CompactString::new(self.slice_from(start)?);
            self.pos += 1;
            return Ok(JsString::Text(text));
        }
        let mut text = String::with_capacity(self.pos - start + 16);
        text.push_str(self.slice_from(start)?);
        // Set once a lone surrogate appears: from then on the string is kept as UTF-16.
        let mut units: Option<Vec<u16>> = None;
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(match units {
                        Some(units) => JsString::from_units(units),
                        None => JsString::Text(CompactString::from(text)),
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
                        b'/' => {
                            // Written back as `/`.
                            self.canonical = false;
                            u16::from(b'/')
                        }
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => u16::from(b'\n'),
                        b'r' => u16::from(b'\r'),
                        b't' => u16::from(b'\t'),
                        b'u' => {
                            // The writer uses `\u` only for a few control characters
                            // and lone surrogates; any `\u` takes the written path.
                            self.canonical = false;
                            self.hex4()?
                        }
                        _ => return Err(self.error("invalid escape")),
                    };
                    self.push_unit(unit, &mut text, &mut units)?;
                }
                Some(_) => return Err(self.error("control character in string")),
            }
            // Copy the next run of plain characters in one go.
            let run_start = self.pos;
            self.pos += plain_run(&self.bytes[run_start..]);
            if self.pos > run_start {
                let run = self.slice_from(run_start)?;
                match &mut units {
                    Some(units) => units.extend(run.encode_utf16()),
                    None => text.push_str(run),
                }
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

/// Whether a string byte is special to JSON: a quote, a backslash or a control
/// character (the bytes `JSON.parse` stops at and `JSON.stringify` escapes).
fn is_special(byte: u8) -> bool {
    byte == b'"' || byte == b'\\' || byte < 0x20
}

/// The length of the longest prefix of `bytes` without a special byte
/// ([`is_special`]), examined eight bytes at a time.
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let (words, tail) = bytes.as_chunks::<8>();
    for (position, word) in words.iter().enumerate() {
        let word = u64::from_le_bytes(*word);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        // `(x - ONES) & !x` has the high bit of a byte set where x has a zero byte, and
        // `(x - 0x20 * ONES) & !x` where a byte is below 0x20; a borrow can only mark
        // bytes above the first real hit, so the lowest marked byte is the first one.
        let found = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (word.wrapping_sub(ONES * 0x20) & !word))
            & HIGH_BITS;
        if found != 0 {
            return position * 8 + (found.trailing_zeros() / 8) as usize;
        }
    }
    let checked = words.len() * 8;
    checked
        + tail
            .iter()
            .position(|&byte| is_special(byte))
            .unwrap_or(tail.len())
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
    let skipped =
        |key: &JsString| !skip.is_empty() && key.as_str().is_some_and(|text| skip.contains(&text));
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
    let members = &object.members;
    if !members.iter().any(|(key, _)| array_index(key).is_some()) {
        // No array-index keys (the usual case): insertion order as it is.
        for (key, value) in members {
            if !skipped(key) {
                member(out, key, value);
            }
        }
    } else {
        let mut indices: Vec<(u32, &JsString, &Value)> = members
            .iter()
            .filter_map(|(key, value)| array_index(key).map(|index| (index, key, value)))
            .collect();
        indices.sort_unstable_by_key(|(index, _, _)| *index);
        for (_, key, value) in &indices {
            if !skipped(key) {
                member(out, key, value);
            }
        }
        for (key, value) in members {
            if array_index(key).is_none() && !skipped(key) {
                member(out, key, value);
            }
        }
    }
    out.push('}');
}

/// ECMAScript `Number::toString`, with non-finite values as `null` (`JSON.stringify`).
pub fn write_number(out: &mut String, number: f64) {
    /// 2^53: every integer of smaller magnitude is an exact double.
    const EXACT_INTEGERS: u64 = 1 << 53;
    if !number.is_finite() {
        out.push_str("null");
    } else if number == 0.0 {
        out.push('0'); // both +0 and -0
    } else {
        // The conversion saturates and drops any fraction; comparing back tells whether
        // it was exact.
        #[allow(clippy::cast_possible_truncation)]
        let integer = number as i64;
        if integer as f64 == number && integer.unsigned_abs() < EXACT_INTEGERS {
            // An integer below 2^53 (so below 10^21): `Number::toString` writes its
            // decimal digits, as `ryu-js` would, without the general algorithm.
            write_integer(out, integer);
        } else if let Some((scaled, places)) = short_decimal(number) {
            write_decimal(out, scaled, places);
        } else {
            let mut buffer = ryu_js::Buffer::new();
            out.push_str(buffer.format_finite(number));
        }
    }
}

/// The most decimal places [`short_decimal`] tries.
const SHORT_DECIMAL_PLACES: usize = 6;

/// `number` as `scaled / 10^places` when a decimal of at most 15 significant digits
/// and 1 to [`SHORT_DECIMAL_PLACES`] places, whose last digit is not zero, rounds to
/// it: amounts such as `1234.5` or `19.99`.
///
/// Such a decimal is exactly what `Number::toString` writes. Two different decimals of
/// at most 15 significant digits never round to the same double (a double has more
/// than 15 digits of precision), so no shorter decimal rounds to `number`, and no other
/// one of the same length: the decimal is the unique shortest one, the digits ECMAScript
/// asks for. Its exponent puts it in the plain (not exponential) notation: it is no
/// integer, below 10^15, and at least 10^-6.
fn short_decimal(number: f64) -> Option<(i64, usize)> {
    for (places, &scale) in EXACT_POWERS_OF_TEN
        .iter()
        .enumerate()
        .take(SHORT_DECIMAL_PLACES + 1)
        .skip(1)
    {
        let candidate = (number * scale).round();
        if candidate.abs() >= 1e15 {
            return None;
        }
        // Below 10^15 in magnitude: an exact integer conversion.
        #[allow(clippy::cast_possible_truncation)]
        let scaled = candidate as i64;
        // `scaled` and `scale` are exact doubles and IEEE division rounds correctly, so
        // this compares `number` with the decimal `scaled / 10^places` rounded to a
        // double: the candidate counts only when that decimal reads back as `number`.
        if scaled as f64 / scale == number {
            return (scaled % 10 != 0).then_some((scaled, places));
        }
    }
    None
}

/// `scaled / 10^places` in decimal: `-`, the integer part, `.`, and exactly `places`
/// fraction digits.
fn write_decimal(out: &mut String, scaled: i64, places: usize) {
    if scaled < 0 {
        out.push('-');
    }
    let rest = scaled.unsigned_abs();
    // `places` is at most SHORT_DECIMAL_PLACES, so the power is exact.
    let scale = 10u64.pow(u32::try_from(places).unwrap_or(0));
    push_digits(out, rest / scale, 1);
    out.push('.');
    push_digits(out, rest % scale, places);
}

/// The decimal digits of `integer`, with a `-` if negative.
fn write_integer(out: &mut String, integer: i64) {
    if integer < 0 {
        out.push('-');
    }
    push_digits(out, integer.unsigned_abs(), 1);
}

/// Appends the decimal digits of `value`, padded with leading zeros to `width`.
pub(crate) fn push_digits(out: &mut String, value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    let mut rest = value;
    while rest > 0 {
        start -= 1;
        // `rest % 10` is below 10.
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let start = start.min(digits.len().saturating_sub(width));
    out.extend(digits[start..].iter().map(|&digit| char::from(digit)));
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
    let bytes = text.as_bytes();
    let mut position = 0;
    loop {
        // Copy the run of characters that need no escape in one go. It ends at an
        // ASCII byte or at the end, both character boundaries.
        let run_end = position + plain_run(&bytes[position..]);
        out.push_str(&text[position..run_end]);
        let Some(&byte) = bytes.get(run_end) else {
            return;
        };
        let escape: &str = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            _ => "",
        };
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        } else {
            out.push_str(escape);
        }
        position = run_end + 1;
    }
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

    /// A small deterministic generator (xorshift64*), for many varied cases.
    struct Cases(u64);

    impl Cases {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    /// Checks `object` against a model of its members in order, and the invariant of
    /// its index.
    fn assert_matches(object: &Object, model: &[(String, f64)]) {
        let members: Vec<(String, f64)> = object
            .iter()
            .map(|(key, value)| (key.as_str().unwrap().to_owned(), value.as_f64().unwrap()))
            .collect();
        assert_eq!(members, model);
        assert_eq!(object.len(), model.len());
        assert_eq!(object.index.is_some(), model.len() > INDEX_THRESHOLD);
        for (key, value) in model {
            assert_eq!(object.get(key), Some(&Value::Number(*value)), "{key}");
            assert!(object.contains_key(key));
        }
        assert!(object.get("absent").is_none());
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
    fn objects_above_and_below_the_index_threshold_behave_alike() {
        let mut cases = Cases(0x9e37_79b9_7f4a_7c15);
        for round in 0..40 {
            let mut object = Object::new();
            let mut model: Vec<(String, f64)> = Vec::new();
            // Enough distinct keys to cross the threshold in both directions.
            let keys = 8 + round;
            for step in 0..400 {
                let key = format!("key{}", cases.below(keys));
                let value = f64::from(step);
                let position = model.iter().position(|(own, _)| *own == key);
                match cases.below(4) {
                    0 | 1 => {
                        object.insert(key.as_str(), value);
                        match position {
                            Some(position) => model[position].1 = value,
                            None => model.push((key, value)),
                        }
                    }
                    2 => {
                        let removed = object.remove(&key);
                        assert_eq!(
                            removed.and_then(|value| value.as_f64()),
                            position.map(|position| model.remove(position).1)
                        );
                    }
                    _ => {
                        object.append(key.as_str(), value);
                        if let Some(position) = position {
                            model.remove(position);
                        }
                        model.push((key, value));
                    }
                }
                assert_matches(&object, &model);
            }
            // `get_mut` finds the member in place.
            if let Some((key, _)) = model.first() {
                *object.get_mut(key).unwrap() = Value::Number(-1.0);
                model[0].1 = -1.0;
                assert_matches(&object, &model);
            }
        }
    }

    #[test]
    fn array_index_keys_come_first_in_large_objects_too() {
        let mut object = Object::new();
        for member in (0..30).rev() {
            object.insert(format!("{member}"), f64::from(member));
            object.insert(format!("k{member}"), f64::from(member));
        }
        assert!(object.index.is_some());
        let indices: Vec<String> = (0..30)
            .map(|member| format!(r#""{member}":{member}"#))
            .collect();
        let names: Vec<String> = (0..30)
            .rev()
            .map(|member| format!(r#""k{member}":{member}"#))
            .collect();
        assert_eq!(
            object.to_canonical(),
            format!("{{{},{}}}", indices.join(","), names.join(","))
        );
        let reparsed = parse(&object.to_canonical()).unwrap();
        assert_eq!(
            reparsed.as_object().unwrap().to_canonical(),
            object.to_canonical()
        );
        // Leaving out a member by name works with and without array-index keys.
        assert_eq!(
            parse(r#"{"b":1,"signature":2,"1":3}"#)
                .unwrap()
                .as_object()
                .unwrap()
                .to_canonical_without(&["signature"]),
            r#"{"1":3,"b":1}"#
        );
        assert_eq!(
            parse(r#"{"b":1,"signature":2,"a":3}"#)
                .unwrap()
                .as_object()
                .unwrap()
                .to_canonical_without(&["signature", "a"]),
            r#"{"b":1}"#
        );
    }

    #[test]
    fn object_equality_ignores_order_and_debug_shows_a_map() {
        let first = parse(r#"{"a":1,"b":[2],"c":{"d":null}}"#).unwrap();
        let second = parse(r#"{"c":{"d":null},"a":1,"b":[2]}"#).unwrap();
        let third = parse(r#"{"c":{"d":null},"a":1,"b":[3]}"#).unwrap();
        let fourth = parse(r#"{"a":1,"b":[2]}"#).unwrap();
        assert_eq!(first, second);
        assert_ne!(first, third);
        assert_ne!(first, fourth);
        assert_ne!(fourth, first);
        let large: Object = (0..20)
            .map(|member| {
                (
                    JsString::from(format!("k{member}")),
                    Value::from(f64::from(member)),
                )
            })
            .collect();
        let reversed: Object = (0..20)
            .rev()
            .map(|member| {
                (
                    JsString::from(format!("k{member}")),
                    Value::from(f64::from(member)),
                )
            })
            .collect();
        assert_eq!(large, reversed);
        assert_eq!(
            format!("{:?}", parse(r#"{"a":1,"b":"x"}"#).unwrap()),
            r#"Object(Object { members: {"a": Number(1.0), "b": String("x")} })"#
        );
    }

    #[test]
    fn strings_with_escapes_anywhere() {
        // Special characters at every offset around the eight-byte steps, after plain
        // ASCII and after multi-byte characters.
        for prefix in ["", "é", "€€", "😀"] {
            for length in 0..20 {
                for special in ['"', '\\', '\n', '\u{1}', '\u{1f}', '/', '\u{7f}', 'é'] {
                    let text: String = format!(
                        "{prefix}{}{special}{}",
                        "a".repeat(length),
                        "b".repeat(length % 7)
                    );
                    let escaped = Value::string(text.clone()).to_canonical();
                    let mut expected = String::from("\"");
                    for character in text.chars() {
                        match character {
                            '"' => expected.push_str("\\\""),
                            '\\' => expected.push_str("\\\\"),
                            '\n' => expected.push_str("\\n"),
                            '\u{1}' => expected.push_str("\\u0001"),
                            '\u{1f}' => expected.push_str("\\u001f"),
                            other => expected.push(other),
                        }
                    }
                    expected.push('"');
                    assert_eq!(escaped, expected);
                    assert_eq!(parse(&escaped).unwrap().as_str(), Some(text.as_str()));
                    // A raw control character inside a string is refused wherever it is.
                    if special < ' ' {
                        assert!(parse(&format!("\"{text}\"")).is_err());
                    }
                }
            }
        }
        assert_eq!(
            round(r#"["abcdefghij\u0041klmnopqrstuvwxyz\ud800abcdefghijklmnop\/"]"#),
            "[\"abcdefghijAklmnopqrstuvwxyz\\ud800abcdefghijklmnop/\"]"
        );
        assert!(parse("\"abcdefghijklmnop").is_err());
        assert!(parse("\"abcdefghijklmnop\\").is_err());
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

    #[test]
    fn numbers_are_written_as_ryu_js_writes_them() {
        let reference = |number: f64| {
            let mut out = String::new();
            if !number.is_finite() {
                out.push_str("null");
            } else if number == 0.0 {
                out.push('0');
            } else {
                out.push_str(ryu_js::Buffer::new().format_finite(number));
            }
            out
        };
        let mut cases = Cases(0xdead_beef_cafe_f00d);
        let mut numbers: Vec<f64> = vec![
            0.1,
            0.2,
            0.1 + 0.2,
            0.3,
            1234.5,
            -1234.5,
            19.99,
            0.000001,
            0.0000015,
            0.0000001,
            1e-7,
            123456789012345.6,
            99999999999999.99,
            999999999999999.9,
            1e15 - 0.5,
            9007199254740991.0,
            9007199254740992.0,
            9007199254740993.0,
            1e21,
            1e22,
            -1e21,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            f64::EPSILON,
            1.0 / 3.0,
            2.0 / 3.0,
            100.5,
            113.5,
            -0.5,
            0.5,
            4.35,
            0.07,
            1.005,
            2.675,
            f64::NAN,
            f64::INFINITY,
        ];
        for _ in 0..100_000 {
            // Decimals of every length and scale, and arbitrary doubles.
            let length = u32::try_from(1 + cases.below(17)).unwrap();
            let digits = cases.below(10u64.pow(length));
            let places = cases.below(9);
            #[allow(clippy::cast_precision_loss)]
            let decimal = digits as f64 / 10f64.powi(i32::try_from(places).unwrap());
            numbers.push(decimal);
            numbers.push(-decimal);
            numbers.push(f64::from_bits(cases.next()));
        }
        for number in numbers {
            let mut out = String::new();
            write_number(&mut out, number);
            assert_eq!(out, reference(number), "{number:e}");
        }
    }
}
