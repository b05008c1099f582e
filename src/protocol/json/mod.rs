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
//!
//! The module is split by responsibility: [`Value`] and [`JsString`] (`value.rs`),
//! [`Object`] and its key index (`object.rs`), the parser (`parse.rs`) with its string
//! reading and the scan for special bytes it shares with the writer (`string.rs`), the
//! check that a received line is already canonical (`canonical.rs`), and the
//! `JSON.stringify` writer with ECMAScript number formatting (`stringify.rs`).

mod canonical;
mod object;
mod parse;
mod string;
mod stringify;
mod value;

pub use canonical::CanonicalText;
pub use object::Object;
pub use parse::{ParseError, parse, parse_noting_canonical};
pub(crate) use stringify::push_digits;
pub use stringify::{array_index, write_number};
pub use value::{JsString, NULL, Value};

/// How deeply arrays and objects may nest before a line is refused as invalid JSON.
///
/// JavaScript's own limit is the engine's stack; real artifacts nest fewer than ten
/// levels. A fixed bound keeps the recursive parser and serializer safe on any stack.
pub const MAX_DEPTH: usize = 128;

/// Powers of ten that are exact doubles (10^0 to 10^22): the parser's fast path and
/// the number writer divide by them.
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Helpers shared by the unit tests of the submodules.
#[cfg(test)]
mod test_support {
    use super::parse;

    /// `JSON.stringify(JSON.parse(text))`.
    pub(super) fn round(text: &str) -> String {
        parse(text).unwrap().to_canonical()
    }

    /// A small deterministic generator (xorshift64*), for many varied cases.
    pub(super) struct Cases(pub(super) u64);

    impl Cases {
        pub(super) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        pub(super) fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }
}
