//! Base64 the way BTPS peers write it and the way Node reads it.
//!
//! Everything this crate emits is standard base64 with `=` padding (what Node's
//! `toString('base64')` produces). On input, Node's `Buffer.from(text, 'base64')` is
//! very forgiving; real clients only ever send standard padded base64, so we accept
//! the forms a careful client could plausibly produce (either alphabet, padding
//! optional, whitespace anywhere) and reject anything else as garbage rather than
//! silently skipping characters the way Node does.

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};

use super::error::Base64Error;

/// Standard alphabet, no padding expected, and trailing bits of the last symbol
/// ignored: Node does not check that they are zero, so neither do we.
const LENIENT_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// Encodes bytes as standard base64 with `=` padding.
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes base64 leniently enough for real clients: standard or URL-safe alphabet
/// (even mixed), padding optional, ASCII whitespace anywhere ignored. Anything else
/// (foreign characters, padding in the middle, an impossible length) is an error.
pub fn decode_base64_lenient(text: &str) -> Result<Vec<u8>, Base64Error> {
    // What real clients send (standard alphabet, at most two `=` at the end) is
    // decoded in place; everything else goes through the symbol-by-symbol path.
    let bytes = text.as_bytes();
    let body = bytes
        .strip_suffix(b"==")
        .or_else(|| bytes.strip_suffix(b"="))
        .unwrap_or(bytes);
    if body.iter().all(|&byte| is_standard_symbol(byte)) {
        return decode_symbols(body, bytes.len() - body.len());
    }
    decode_base64_symbolwise(text)
}

fn is_standard_symbol(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'+' || byte == b'/'
}

/// `symbols` (standard alphabet only) followed by `padding` `=` signs.
fn decode_symbols(symbols: &[u8], padding: usize) -> Result<Vec<u8>, Base64Error> {
    // A single symbol in the last quantum carries only 6 bits: never a whole byte.
    if symbols.len() % 4 == 1 {
        return Err(Base64Error::InvalidLength {
            symbols: symbols.len(),
        });
    }
    if padding > 2 || (padding > 0 && !(symbols.len() + padding).is_multiple_of(4)) {
        return Err(Base64Error::WrongPadding { padding });
    }
    LENIENT_ENGINE
        .decode(symbols)
        .map_err(|error| Base64Error::Undecodable(error.to_string()))
}

/// The general path: collects the symbols (mapping the URL-safe alphabet, skipping
/// whitespace), counts the padding, and rejects anything else.
fn decode_base64_symbolwise(text: &str) -> Result<Vec<u8>, Base64Error> {
    let mut symbols = Vec::with_capacity(text.len());
    let mut padding = 0usize;
    for (index, character) in text.char_indices() {
        match character {
            c if c.is_ascii_whitespace() => {}
            '=' => padding += 1,
            // Data after padding: Node would stop at the `=`; we call it garbage.
            _ if padding > 0 => return Err(Base64Error::MisplacedPadding { index }),
            'A'..='Z' | 'a'..='z' | '0'..='9' | '+' | '/' => symbols.push(character as u8),
            '-' => symbols.push(b'+'),
            '_' => symbols.push(b'/'),
            _ => return Err(Base64Error::InvalidCharacter { character, index }),
        }
    }
    decode_symbols(&symbols, padding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_spellings_clients_use() {
        let expected = b"\xfb\xff\xbe hello".to_vec();
        let standard = encode_base64(&expected);
        assert_eq!(standard, "+/++IGhlbGxv");
        for text in [
            "+/++IGhlbGxv",
            "-_-+IGhl bGxv",
            "+/++\r\nIGhl\tbGxv\n",
            " +/++IGhlbGxv ",
        ] {
            assert_eq!(decode_base64_lenient(text).unwrap(), expected, "{text:?}");
        }
        assert_eq!(decode_base64_lenient("aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64_lenient("aGk").unwrap(), b"hi");
        assert_eq!(decode_base64_lenient("aA==").unwrap(), b"h");
        assert_eq!(decode_base64_lenient("aA").unwrap(), b"h");
        assert_eq!(decode_base64_lenient("").unwrap(), b"");
        // Non-zero trailing bits, as Node tolerates them.
        assert_eq!(decode_base64_lenient("aB==").unwrap(), b"h");
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            decode_base64_lenient("aGk*"),
            Err(Base64Error::InvalidCharacter {
                character: '*',
                index: 3
            })
        ));
        assert!(matches!(
            decode_base64_lenient("aG=k"),
            Err(Base64Error::MisplacedPadding { index: 3 })
        ));
        assert!(matches!(
            decode_base64_lenient("aGkab"),
            Err(Base64Error::InvalidLength { symbols: 5 })
        ));
        assert!(matches!(
            decode_base64_lenient("aGk=="),
            Err(Base64Error::WrongPadding { padding: 2 })
        ));
        assert!(matches!(
            decode_base64_lenient("aA==="),
            Err(Base64Error::WrongPadding { padding: 3 })
        ));
        assert!(decode_base64_lenient("é").is_err());
        assert!(decode_base64_lenient("====").is_err());
    }

    proptest::proptest! {
        /// The in-place path answers exactly as the symbol-by-symbol one, errors
        /// included, on text made of base64 symbols, padding, whitespace, the
        /// URL-safe symbols and garbage.
        #[test]
        fn the_fast_path_agrees_with_the_general_one(
            text in "[A-Za-z0-9+/]{0,12}[=]{0,3}[A-Za-z0-9+/ =_\\-\n.é]{0,6}[=]{0,3}"
        ) {
            proptest::prop_assert_eq!(
                decode_base64_lenient(&text),
                decode_base64_symbolwise(&text)
            );
        }
    }
}
