//! Names every build knows, with or without the `postgres` feature: the
//! reference's default table names, which table names are accepted, and the
//! connection string with its password hidden (configuration checks and logs use
//! them).

/// The reference's default trust table.
pub const DEFAULT_TRUST_TABLE: &str = "btps_trust";
/// The reference's default identity table.
pub const DEFAULT_IDENTITY_TABLE: &str = "btps_identity";

/// Whether `name` may name a table: a lower-case SQL identifier of at most 48
/// characters (room for the index names derived from it), not starting with a digit.
pub fn valid_table_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && name.len() <= 48
}

/// The connection string with its password replaced by `***`, for logs and
/// messages (both the URL form and the `key=value` form).
pub fn redact_uri(uri: &str) -> String {
    if uri.starts_with("postgres://") || uri.starts_with("postgresql://") {
        // userinfo ends at the last '@' before the path.
        let scheme_end = uri.find("://").map_or(0, |at| at + 3);
        let rest = &uri[scheme_end..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let mut out = uri[..scheme_end].to_owned();
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        out.push_str(&redact_query(&rest[authority_end..]));
        out
    } else {
        redact_key_values(uri)
    }
}

/// `?password=…` parameters of a URL's query.
fn redact_query(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|part| match part.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => part.to_owned(),
        })
        .collect();
    format!("{path}?{}", parts.join("&"))
}

/// `password=…` (quoted or not) of a `key=value` connection string.
fn redact_key_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = find_password_key(rest) {
        out.push_str(&rest[..at]);
        out.push_str("password=***");
        let mut value = rest[at + "password".len()..].trim_start();
        value = value.strip_prefix('=').unwrap_or(value).trim_start();
        rest = if let Some(quoted) = value.strip_prefix('\'') {
            // Up to the closing quote that is not escaped.
            let mut end = quoted.len();
            let mut escaped = false;
            for (index, c) in quoted.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '\'' if !escaped => {
                        end = index + 1;
                        break;
                    }
                    _ => escaped = false,
                }
            }
            &quoted[end.min(quoted.len())..]
        } else {
            let end = value.find(char::is_whitespace).unwrap_or(value.len());
            &value[end..]
        };
    }
    out.push_str(rest);
    out
}

/// Where a `password` key (followed by `=`) starts, at a word boundary.
fn find_password_key(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find("password") {
        let at = from + found;
        let boundary = at == 0 || lower.as_bytes()[at - 1].is_ascii_whitespace();
        let after = lower[at + "password".len()..].trim_start();
        if boundary && after.starts_with('=') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_both_forms() {
        assert_eq!(
            redact_uri("postgres://btps:s3cret@db.example:5432/btps?sslmode=require"),
            "postgres://btps:***@db.example:5432/btps?sslmode=require"
        );
        assert_eq!(
            redact_uri("postgresql://btps@db/btps?password=s3cret&sslmode=disable"),
            "postgresql://btps@db/btps?password=***&sslmode=disable"
        );
        assert_eq!(
            redact_uri("postgres://u:p%40ss@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_uri("host=db user=btps password=s3cret dbname=btps"),
            "host=db user=btps password=*** dbname=btps"
        );
        assert_eq!(
            redact_uri("host=db password = 'it\\'s secret' dbname=btps"),
            "host=db password=*** dbname=btps"
        );
        assert_eq!(redact_uri("host=/run/postgresql"), "host=/run/postgresql");
    }

    #[test]
    fn table_names_are_plain_identifiers() {
        assert!(valid_table_name("btps_trust"));
        assert!(valid_table_name("_t1"));
        assert!(!valid_table_name("1t"));
        assert!(!valid_table_name("Trust"));
        assert!(!valid_table_name("t; drop table x"));
        assert!(!valid_table_name(""));
        assert!(!valid_table_name(&"t".repeat(49)));
    }
}
