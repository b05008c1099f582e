//! PEM armour: the reference's exact rules for public keys, a tolerant reader for
//! private key files, and the writers for both.

use super::base64::encode_base64;
use super::error::KeyError;

/// The armour lines of an SPKI public key, the only public form BTPS accepts.
pub(crate) const PUBLIC_BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
/// See [`PUBLIC_BEGIN`].
pub(crate) const PUBLIC_END: &str = "-----END PUBLIC KEY-----";

/// Whitespace as JavaScript's `String.prototype.trim` sees it (WhiteSpace and
/// LineTerminator): unlike Rust's `trim` it includes U+FEFF and excludes U+0085.
fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

/// `text.trim()` in JavaScript.
pub(crate) fn js_trim(text: &str) -> &str {
    text.trim_matches(is_js_whitespace)
}

/// The base64 body of a public key PEM, by the reference's rule (spec §2.3): the
/// trimmed text must start with the SPKI BEGIN line and end with the END line.
pub(crate) fn public_key_body(text: &str) -> Result<&str, KeyError> {
    let trimmed = js_trim(text);
    if trimmed.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
        return Err(KeyError::Pkcs1PublicKey);
    }
    trimmed
        .strip_prefix(PUBLIC_BEGIN)
        .and_then(|rest| rest.strip_suffix(PUBLIC_END))
        .ok_or(KeyError::NotPublicKeyPem)
}

/// The first PEM block of a key file: its label and base64 body. Text before the
/// BEGIN line is skipped, as OpenSSL does for key files with comments.
pub(crate) fn first_block(text: &str) -> Result<(&str, &str), KeyError> {
    const BEGIN: &str = "-----BEGIN ";
    let start = text.find(BEGIN).ok_or(KeyError::NotPrivateKeyPem)?;
    let after_begin = &text[start + BEGIN.len()..];
    let label_end = after_begin
        .find("-----")
        .ok_or(KeyError::NotPrivateKeyPem)?;
    let label = &after_begin[..label_end];
    let rest = &after_begin[label_end + "-----".len()..];
    let end_line = format!("-----END {label}-----");
    let body_end = rest
        .find(&end_line)
        .ok_or_else(|| KeyError::UnterminatedPem {
            label: label.to_owned(),
        })?;
    Ok((label, &rest[..body_end]))
}

/// Wraps DER in PEM armour with 64-character lines separated by `\n`.
/// `trailing_newline` adds the final `\n` that OpenSSL writes and the reference's
/// base64→PEM converter leaves out.
pub(crate) fn armour(label: &str, der: &[u8], trailing_newline: bool) -> String {
    armour_base64(label, &encode_base64(der), trailing_newline)
}

/// [`armour`] for a body that is already base64.
pub(crate) fn armour_base64(label: &str, body: &str, trailing_newline: bool) -> String {
    let mut lines = Vec::with_capacity(body.len() / 64 + 3);
    let begin = format!("-----BEGIN {label}-----");
    lines.push(begin.as_str());
    // Base64 is ASCII, so every 64-byte chunk boundary is a character boundary.
    lines.extend(
        body.as_bytes()
            .chunks(64)
            .filter_map(|chunk| std::str::from_utf8(chunk).ok()),
    );
    let end = format!("-----END {label}-----");
    lines.push(end.as_str());
    let mut text = lines.join("\n");
    if trailing_newline {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_body_follows_the_reference_rule() {
        assert_eq!(
            public_key_body(
                "\u{feff} -----BEGIN PUBLIC KEY-----\nAB\n-----END PUBLIC KEY-----\r\n"
            )
            .unwrap(),
            "\nAB\n"
        );
        assert_eq!(
            public_key_body("-----BEGIN PUBLIC KEY-----AB-----END PUBLIC KEY-----").unwrap(),
            "AB"
        );
        assert_eq!(
            public_key_body("-----BEGIN PUBLIC KEY-----\nAB\n").unwrap_err(),
            KeyError::NotPublicKeyPem
        );
        assert_eq!(
            public_key_body("x-----BEGIN PUBLIC KEY-----\nAB\n-----END PUBLIC KEY-----")
                .unwrap_err(),
            KeyError::NotPublicKeyPem
        );
        assert_eq!(
            public_key_body("-----BEGIN RSA PUBLIC KEY-----\nAB\n-----END RSA PUBLIC KEY-----")
                .unwrap_err(),
            KeyError::Pkcs1PublicKey
        );
        assert_eq!(
            public_key_body("-----BEGIN PUBLIC KEY-----").unwrap_err(),
            KeyError::NotPublicKeyPem
        );
    }

    #[test]
    fn first_block_finds_label_and_body() {
        let (label, body) = first_block(
            "comment\n-----BEGIN RSA PRIVATE KEY-----\nAB\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap();
        assert_eq!((label, body), ("RSA PRIVATE KEY", "\nAB\n"));
        assert!(matches!(
            first_block("-----BEGIN PRIVATE KEY-----\nAB\n-----END RSA PRIVATE KEY-----"),
            Err(KeyError::UnterminatedPem { .. })
        ));
        assert_eq!(
            first_block("no pem").unwrap_err(),
            KeyError::NotPrivateKeyPem
        );
        assert_eq!(
            first_block("-----BEGIN ").unwrap_err(),
            KeyError::NotPrivateKeyPem
        );
    }

    #[test]
    fn armour_uses_64_column_lines() {
        let body = "A".repeat(130);
        let text = armour_base64("PUBLIC KEY", &body, false);
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[3].len(), 2);
        assert!(!text.ends_with('\n'));
        assert!(armour_base64("PRIVATE KEY", &body, true).ends_with("-----END PRIVATE KEY-----\n"));
    }
}
