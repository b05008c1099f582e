//! The writer: `JSON.stringify` byte for byte, with ECMAScript `Number::toString`
//! number formatting.

use super::string::plain_run;
use super::{EXACT_POWERS_OF_TEN, JsString, Object, Value};

/// Whether `key` is an array index in the ECMAScript sense: the canonical decimal
/// form of an integer from 0 to 2^32 − 2. Such keys are enumerated first.
// The parser calls this for every key it reads, from another module (so possibly
// another codegen unit): `#[inline]` keeps it inlined there.
#[inline]
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

pub(super) fn write_value(out: &mut String, value: &Value) {
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

pub(super) fn write_object(out: &mut String, object: &Object, skip: &[&str]) {
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
    use crate::protocol::json::parse;
    use crate::protocol::json::test_support::{Cases, round};

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
