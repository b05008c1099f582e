//! [`JsString`] and [`Value`]: JSON strings and values with JavaScript semantics.

use compact_str::CompactString;
use std::fmt;
use std::hash::{Hash, Hasher};

use super::Object;
use super::stringify::write_value;

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
    pub(super) fn is_text(&self, text: &str) -> bool {
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
