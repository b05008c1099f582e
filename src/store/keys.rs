//! Byte layouts of index keys and cursors, shared by both backends so that a
//! listing orders and pages the same way everywhere (`schema/storage.md`).
//!
//! Every index key is `<perspective byte> <query part> <sort part>`, where the query
//! part is fixed for one query (e.g. the lower-cased receiver) and the sort part
//! orders within it (e.g. the 32-byte id). A cursor is the sort part of the last
//! item returned; the next page starts strictly after it.

/// A string as a key component: 4-byte big-endian length, then UTF-8 bytes.
///
/// The length prefix makes the encoding prefix-free, so `("ab", id)` and
/// `("a", "b…")` can never collide; listings only ever range over one exact string.
pub(crate) fn string_part(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + text.len());
    // Strings longer than 4 GiB cannot reach the store (redb values are capped lower).
    let length = u32::try_from(text.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// A millisecond instant as 8 bytes that sort like the signed value.
pub(crate) fn instant_part(millis: i64) -> [u8; 8] {
    (u64::from_be_bytes(millis.to_be_bytes()) ^ (1 << 63)).to_be_bytes()
}

/// The 32 bytes of a 64-hex-digit computed id.
pub(crate) fn id_bytes(id: &str) -> Option<[u8; 32]> {
    let bytes = hex_decode(id)?;
    <[u8; 32]>::try_from(bytes.as_slice()).ok()
}

/// The 64 lower-case hex digits of a 32-byte id.
pub(crate) fn id_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// Decodes hex (either case); `None` on odd length or a non-hex digit.
pub(crate) fn hex_decode(text: &str) -> Option<Vec<u8>> {
    fn digit(byte: u8) -> Option<u8> {
        match byte {
            b'0'..=b'9' => Some(byte - b'0'),
            b'a'..=b'f' => Some(byte - b'a' + 10),
            b'A'..=b'F' => Some(byte - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// `prefix ++ parts…`.
pub(crate) fn concat(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|part| part.len()).sum());
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// The smallest key greater than every key starting with `prefix`, or `None` when
/// there is none (prefix all `0xff`).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_sort_like_numbers() {
        let values = [i64::MIN, -5, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        for pair in values.windows(2) {
            assert!(instant_part(pair[0]) < instant_part(pair[1]));
        }
    }

    #[test]
    fn ids_round_trip() {
        let id = crate::identity::compute_id("a$b.c");
        assert_eq!(id_text(&id_bytes(&id).unwrap()), id);
        assert_eq!(id_bytes("abc"), None);
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff]), None);
    }
}
