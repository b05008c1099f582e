//! [`Object`]: a JSON object's members in insertion order, with a hash index of its
//! keys once it is large.

use std::fmt;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use super::stringify::write_object;
use super::{JsString, Value};

/// Above this many members an object keeps a hash index of its keys; at or below it,
/// a key is found by comparing it with each member's (cheaper than hashing for the
/// handful of members real artifacts have, and no allocation).
const INDEX_THRESHOLD: usize = 16;

/// A JSON object: members in insertion order, as a JavaScript object holds them.
///
/// Keys are unique. Equality ignores member order (as a map's does).
#[derive(Clone, Default)]
pub struct Object {
    pub(super) members: Vec<(JsString, Value)>,
    /// Present exactly when there are more than [`INDEX_THRESHOLD`] members.
    pub(super) index: Option<Box<KeyIndex>>,
}

/// Positions of an object's members by key hash.
///
/// Keys come from the network, so the hasher is std's randomly keyed SipHash (the
/// index only exists for large objects, off the hot path, so its cost does not matter
/// but its resistance to chosen collisions does).
#[derive(Clone)]
pub(super) struct KeyIndex {
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
pub(super) fn set_member(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::json::parse;
    use crate::protocol::json::test_support::Cases;

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
}
