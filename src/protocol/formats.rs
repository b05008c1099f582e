//! String formats of the artifact schemas (`spec/02-artifacts.md` §0.2 and §2.6):
//! datetime, email, url and the currency list, with the reference's (zod 3.25)
//! acceptance rules reproduced exactly.

/// The zod `datetime()` rule: `YYYY-MM-DDTHH:MM[:SS[.f+]]Z` with a real Gregorian
/// calendar date, hours 00–23, no leap second, ASCII digits only, upper-case `T`
/// and `Z`.
pub fn is_datetime(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let slice = bytes.get(range)?;
        if slice.is_empty() || !slice.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(
            slice
                .iter()
                .fold(0, |value, digit| value * 10 + u32::from(digit - b'0')),
        )
    };
    // Fixed prefix: "YYYY-MM-DDTHH:MM" (16 bytes).
    if bytes.len() < 17
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || bytes[10] != b'T'
        || bytes[13] != b':'
    {
        return false;
    }
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute)) = (
        digits(0..4),
        digits(5..7),
        digits(8..10),
        digits(11..13),
        digits(14..16),
    ) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if day == 0 || day > days_in_month || hour > 23 || minute > 59 {
        return false;
    }
    let rest = &bytes[16..];
    match rest {
        [b'Z'] => true,
        [b':', s1, s2, tail @ ..] => {
            if !s1.is_ascii_digit() || !s2.is_ascii_digit() || (s1 - b'0') * 10 + (s2 - b'0') > 59 {
                return false;
            }
            match tail {
                [b'Z'] => true,
                [b'.', fraction @ .., b'Z'] => {
                    !fraction.is_empty() && fraction.iter().all(u8::is_ascii_digit)
                }
                _ => false,
            }
        }
        _ => false,
    }
}

/// The zod `email()` rule (case-insensitive):
/// `^(?!\.)(?!.*\.\.)([A-Z0-9_'+\-\.]*)[A-Z0-9_+-]@([A-Z0-9][A-Z0-9\-]*\.)+[A-Z]{2,}$`.
pub fn is_email(text: &str) -> bool {
    if text.starts_with('.') || text.contains("..") {
        return false;
    }
    // The local part cannot contain '@', so the first '@' separates the parts.
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    let local_ok = match local.as_bytes() {
        [] => false,
        [body @ .., last] => {
            (last.is_ascii_alphanumeric() || matches!(last, b'_' | b'+' | b'-'))
                && body.iter().all(|byte| {
                    byte.is_ascii_alphanumeric()
                        || matches!(byte, b'_' | b'\'' | b'+' | b'-' | b'.')
                })
        }
    };
    if !local_ok {
        return false;
    }
    // One or more labels each followed by '.', then a final label of >= 2 letters.
    let Some((labels, tld)) = domain.rsplit_once('.') else {
        return false;
    };
    tld.len() >= 2
        && tld.bytes().all(|byte| byte.is_ascii_alphabetic())
        && labels.split('.').all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && bytes[0].is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|byte| byte.is_ascii_alphanumeric() || *byte == b'-')
        })
}

/// The zod `url()` rule: the WHATWG URL parser accepts the string as an absolute URL.
pub fn is_url(text: &str) -> bool {
    url::Url::parse(text).is_ok()
}

/// Whether `code` is one of the 160 currency codes the reference accepts.
pub fn is_currency(code: &str) -> bool {
    CURRENCIES.binary_search(&code).is_ok()
}

/// The reference's currency list, exactly (sorted, for binary search).
pub const CURRENCIES: [&str; 160] = [
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "FOK", "GBP", "GEL", "GGP", "GHS", "GIP", "GMD",
    "GNF", "GTQ", "GYD", "HKD", "HNL", "HRK", "HTG", "HUF", "IDR", "ILS", "IMP", "INR", "IQD",
    "IRR", "ISK", "JEP", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KID", "KMF", "KRW", "KWD",
    "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK",
    "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK",
    "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD",
    "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLL", "SOS", "SRD", "SSP",
    "STN", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TVD", "TWD", "TZS",
    "UAH", "UGX", "USD", "UYU", "UZS", "VES", "VND", "VUV", "WST", "XAF", "XCD", "XOF", "XPF",
    "YER", "ZAR", "ZMW", "ZWL",
];

/// Milliseconds since the Unix epoch of a datetime accepted by [`is_datetime`]
/// (digits below the millisecond are dropped); `None` for any other text. Pure
/// arithmetic: no clock, no time zone database.
pub fn datetime_millis(text: &str) -> Option<i64> {
    if !is_datetime(text) {
        return None;
    }
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> i64 {
        bytes[range]
            .iter()
            .fold(0, |value, digit| value * 10 + i64::from(digit - b'0'))
    };
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    let (hour, minute) = (number(11..13), number(14..16));
    // `is_datetime` guarantees ":SS" (and maybe ".f+") or nothing before the `Z`.
    let (second, millis) = if bytes[16] == b':' {
        let fraction = bytes.get(20..bytes.len() - 1).unwrap_or(&[]);
        let millis = (0..3).fold(0, |value, index| {
            value * 10
                + fraction
                    .get(index)
                    .map_or(0, |digit| i64::from(digit - b'0'))
        });
        (number(17..19), millis)
    } else {
        (0, 0)
    };
    // Days from 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
    // `days_from_civil`).
    let shifted = if month <= 2 { year - 1 } else { year };
    let era = shifted.div_euclid(400);
    let year_of_era = shifted - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some((((days * 24 + hour) * 60 + minute) * 60 + second) * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_millis_counts_from_the_epoch() {
        assert_eq!(datetime_millis("1970-01-01T00:00Z"), Some(0));
        assert_eq!(datetime_millis("1970-01-01T00:00:00.001Z"), Some(1));
        assert_eq!(
            datetime_millis("2000-01-01T00:00:00Z"),
            Some(946_684_800_000)
        );
        assert_eq!(
            datetime_millis("2025-01-15T10:30:00.123456Z"),
            Some(1_736_937_000_123)
        );
        assert_eq!(
            datetime_millis("2024-02-29T23:59:59.9Z"),
            Some(1_709_251_199_900)
        );
        assert_eq!(
            datetime_millis("9999-12-31T23:59:59.999Z"),
            Some(253_402_300_799_999)
        );
        assert_eq!(
            datetime_millis("0000-01-01T00:00:00Z"),
            Some(-62_167_219_200_000)
        );
        assert_eq!(datetime_millis("2025-02-30T00:00:00Z"), None);
        assert_eq!(datetime_millis("yesterday"), None);
    }

    #[test]
    fn datetime_examples_of_the_spec() {
        for good in [
            "2025-01-15T10:30:00.000Z",
            "2025-01-15T10:30Z",
            "2025-01-01T00:00:00.123456789Z",
            "2024-02-29T00:00:00Z",
            "2000-02-29T23:59:59Z",
        ] {
            assert!(is_datetime(good), "{good}");
        }
        for bad in [
            "2025-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2025-01-15T10:30:00+00:00",
            "2025-01-15 10:30:00Z",
            "2025-01-15t10:30:00Z",
            "2025-01-15T10:30:00z",
            "2025-1-01T00:00:00Z",
            "2025-01-15T24:00:00Z",
            "2025-01-15T10:30:60Z",
            "2025-01-15T10:30.5Z",
            "2025-01-15T10:30:00.Z",
            "2025-04-31T10:30:00Z",
            "2025-01-15T10:30:00.000Z\n",
            "２０２５-01-15T10:30:00Z",
        ] {
            assert!(!is_datetime(bad), "{bad}");
        }
    }

    #[test]
    fn email_rule() {
        for good in [
            "billing@vendor.com",
            "a.b'c+d-e_f@x-y.example.org",
            "A@B.CO",
        ] {
            assert!(is_email(good), "{good}");
        }
        for bad in [
            ".a@b.co",
            "a..b@c.co",
            "a.@b.co",
            "a@b.c",
            "a@-b.co",
            "a@b..co",
            "a@b.c0",
            "ab.co",
            "a@b@c.co",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }

    #[test]
    fn currencies_are_sorted_and_known() {
        assert!(CURRENCIES.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(
            is_currency("AUD") && is_currency("ZWL") && !is_currency("XDR") && !is_currency("aud")
        );
    }

    #[test]
    fn urls() {
        assert!(is_url("https://x.example/a") && is_url("mailto:a@b.c") && is_url("urn:x"));
        assert!(!is_url("/relative") && !is_url("x.example"));
    }
}
