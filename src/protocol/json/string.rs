//! JSON strings: the parser's reading of string literals (escapes, surrogate pairs,
//! lone surrogates) and the scan for the bytes special to JSON, which the writer
//! shares.

use compact_str::CompactString;

use super::JsString;
use super::parse::{ParseError, Parser};

impl Parser<'_> {
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

    pub(super) fn string(&mut self) -> Result<JsString, ParseError> {
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
pub(super) fn plain_run(bytes: &[u8]) -> usize {
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

#[cfg(test)]
mod tests {
    use crate::protocol::json::test_support::round;
    use crate::protocol::json::{Value, parse};

    #[test]
    fn lone_surrogates_survive() {
        assert_eq!(
            round(r#"["\ud800","\uDFFF","\ude00\ud83d","\ud83d\ude00"]"#),
            "[\"\\ud800\",\"\\udfff\",\"\\ude00\\ud83d\",\"😀\"]"
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
}
