//! Phone numbers and WhatsApp JIDs: how people write them, how the agent
//! stores them (E.164 digits), and how they are masked wherever they could
//! leave the device by accident (logs, `state`, the fleet view).
//!
//! Plain rules with no dependency inside the crate: the config validates
//! numbers with them, the supervisor and the message code parse with them,
//! the log writer and the MQTT redaction mask with them. It must not import
//! any other module of the agent.

/// Why a text is not a phone number; the text says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPhone(pub String);

/// Normalises a phone number written the way people write them to E.164
/// digits (no `+`): `0812-3456-7890` (Indonesian national format) →
/// `6281234567890`; `+62 812 3456 7890`, `62812…` and `(+62) 812…` too.
/// `default_country` is the calling code assumed for a leading `0`.
pub fn normalize_phone(input: &str, default_country: &str) -> Result<String, InvalidPhone> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(InvalidPhone("empty number".into()));
    }
    if let Some(bad) = trimmed
        .chars()
        .find(|c| !(c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '(' | ')')))
    {
        return Err(InvalidPhone(format!("unexpected character {bad:?}")));
    }
    let plus = trimmed.trim_start_matches('(').starts_with('+');
    if trimmed.matches('+').count() > 1 || (trimmed.contains('+') && !plus) {
        return Err(InvalidPhone("misplaced '+'".into()));
    }
    let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
    let e164 = if plus {
        digits
    } else if let Some(national) = digits.strip_prefix("00") {
        national.to_string()
    } else if let Some(national) = digits.strip_prefix('0') {
        format!("{default_country}{national}")
    } else {
        digits
    };
    // E.164: at most 15 digits, no leading zero; real numbers have at least
    // 8 (country code + subscriber number).
    if e164.starts_with('0') || !(8..=15).contains(&e164.len()) {
        return Err(InvalidPhone(format!(
            "{} digits is not a phone number",
            e164.len()
        )));
    }
    Ok(e164)
}

/// Masks all but the last four digits: `+6281234567890` → `+*********7890`.
/// Full numbers never go to logs (DESIGN.md, "Never in any payload or log").
pub fn mask_phone(phone: &str) -> String {
    let digits = phone.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    phone
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if seen + 4 <= digits { '*' } else { c }
            } else {
                c
            }
        })
        .collect()
}

/// The E.164 form of a JID's user part (`6281234567890` → `+6281234567890`).
pub fn phone_from_jid_user(user: &str) -> Option<String> {
    let digits: String = user.chars().take_while(char::is_ascii_digit).collect();
    (!digits.is_empty()).then(|| format!("+{digits}"))
}

/// Field names (`key=value` in a log line) whose digits are a number of
/// another kind, never a phone number. Anything else is treated as
/// possibly a phone number.
const NUMERIC_FIELDS: &[&str] = &[
    "at",
    "attempt",
    "bytes",
    "connection",
    "count",
    "delay",
    "elapsed",
    "expires",
    "generation",
    "len",
    "ms",
    "offset",
    "pid",
    "port",
    "rss",
    "secs",
    "seq",
    "size",
    "t",
    "time",
    "timeout",
    "timestamp",
    "ts",
    "until",
    "uptime",
    "version",
];

/// Endings of such field names (`at_ms`, `db_size`, `free_bytes`).
const NUMERIC_FIELD_ENDINGS: &[&str] = &[
    "_at", "_bytes", "_count", "_len", "_ms", "_secs", "_size", "_time", "_timeout",
];

/// Units that may follow a number (`12345678 bytes`, `123456789ms`).
const UNITS: &[&str] = &[
    "b", "bytes", "kb", "kib", "mb", "mib", "gb", "gib", "ns", "us", "µs", "ms", "s", "sec",
    "secs", "seconds", "min", "h",
];

/// Replaces all but the last 4 digits of every phone number and JID user.
///
/// A run of digits is a phone number when it is the user part of a JID
/// (`…@s.whatsapp.net`, `…:3@s.whatsapp.net`, `…@lid`), follows a `+`, or
/// has E.164's length (8 to 15 digits) and nothing says it is something
/// else. It is something else when it is part of a decimal (`1.123453832s`),
/// of a word or a hex id (`3EB0123456789ABC`), carries a unit
/// (`123456789 bytes`, `250000000ns`), is the value of a field named for a
/// quantity (`size=123456789`, `at_ms=1764590000000`), or is a Unix time
/// in seconds or milliseconds (10 or 13 digits from `1`: a number with a
/// country code beginning `1` — the North American plan — has 11).
pub fn mask_phone_numbers(input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    let mut i = 0;
    while i < input.len() {
        if !input[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < input.len() && input[i].is_ascii_digit() {
            i += 1;
        }
        if i - start >= 8 && is_phone_number(input, start, i) {
            out[start..i - 4].fill(b'*');
        }
    }
    out
}

fn is_phone_number(text: &[u8], start: usize, end: usize) -> bool {
    let len = end - start;
    let before = start.checked_sub(1).map(|b| text[b]);
    let after = text.get(end).copied();
    if is_jid_user(&text[end..]) || before == Some(b'+') {
        return true;
    }
    let digit_at = |index: Option<usize>| {
        index
            .and_then(|k| text.get(k))
            .is_some_and(u8::is_ascii_digit)
    };
    let decimal = (before == Some(b'.') && digit_at(start.checked_sub(2)))
        || (after == Some(b'.') && digit_at(Some(end + 1)));
    let in_a_word = before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        || after.is_some_and(|a| a.is_ascii_alphabetic() || a == b'_')
        || has_unit(&text[end..]);
    let unix_time = text[start] == b'1' && (len == 10 || len == 13);
    !(decimal || in_a_word || unix_time || len > 15 || is_numeric_field(&text[..start]))
}

/// `@…` or `:<device>@…` right after the digits: the user of a JID.
fn is_jid_user(rest: &[u8]) -> bool {
    match rest.first() {
        Some(b'@') => true,
        Some(b':') => {
            let device = rest[1..].iter().take_while(|b| b.is_ascii_digit()).count();
            device > 0 && rest.get(1 + device) == Some(&b'@')
        }
        _ => false,
    }
}

/// ` bytes`, ` ms`… after the digits (with at most one space).
fn has_unit(rest: &[u8]) -> bool {
    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
    let word: Vec<u8> = rest
        .iter()
        .take_while(|b| b.is_ascii_alphabetic() || **b >= 0x80)
        .map(u8::to_ascii_lowercase)
        .collect();
    !word.is_empty() && UNITS.iter().any(|unit| unit.as_bytes() == word.as_slice())
}

/// `size=` (or `size: `, `"size":`) right before the digits, for a field
/// named in [`NUMERIC_FIELDS`] or ending as in [`NUMERIC_FIELD_ENDINGS`].
fn is_numeric_field(before: &[u8]) -> bool {
    let before = before
        .strip_suffix(b"=")
        .or_else(|| before.strip_suffix(b": "))
        .or_else(|| before.strip_suffix(b"\":"));
    let Some(before) = before else {
        return false;
    };
    let before = before.strip_suffix(b"\"").unwrap_or(before);
    let key_start = before
        .iter()
        .rposition(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
        .map_or(0, |p| p + 1);
    let key = &before[key_start..];
    NUMERIC_FIELDS.iter().any(|field| key == field.as_bytes())
        || NUMERIC_FIELD_ENDINGS
            .iter()
            .any(|ending| key.ends_with(ending.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_formats_normalise_to_e164() {
        for input in [
            "081234567890",
            "0812-3456-7890",
            "6281234567890",
            "+62 812-3456-7890",
            "(+62) 812 3456 7890",
            "0062 812 3456 7890",
        ] {
            assert_eq!(
                normalize_phone(input, "62"),
                Ok("6281234567890".into()),
                "{input}"
            );
        }
    }

    #[test]
    fn impossible_numbers_are_invalid() {
        for input in [
            "",
            "abc",
            "12",
            "+62+812",
            "0",
            "1234567890123456",
            "62 812 x",
        ] {
            assert!(
                matches!(normalize_phone(input, "62"), Err(InvalidPhone(_))),
                "{input}"
            );
        }
    }

    #[test]
    fn phones_are_masked_to_the_last_four_digits() {
        assert_eq!(mask_phone("+6281234567890"), "+*********7890");
        assert_eq!(mask_phone("123"), "123");
    }

    fn masked(line: &str) -> String {
        String::from_utf8(mask_phone_numbers(line.as_bytes())).expect("utf8")
    }

    #[test]
    fn phone_numbers_and_jids_are_masked() {
        for (line, expected) in [
            (
                "paired 6281234567890:1@s.whatsapp.net",
                "paired *********7890:1@s.whatsapp.net",
            ),
            (
                "to 6281234567890@s.whatsapp.net",
                "to *********7890@s.whatsapp.net",
            ),
            ("lid 123456789012345@lid", "lid ***********2345@lid"),
            ("lid 12345678901234:7@lid", "lid **********1234:7@lid"),
            ("phone=+6281234567890", "phone=+*********7890"),
            (
                "number 6281234567890 refused",
                "number *********7890 refused",
            ),
            ("us 14155552671", "us *******2671"),
            ("\"phone\":\"6281234567890\"", "\"phone\":\"*********7890\""),
            (
                "group 6281234567890-1611111111@g.us",
                "group *********7890-******1111@g.us",
            ),
            ("chat=6281234567890", "chat=*********7890"),
            (
                "mapping 123456789012345 <-> 6281234567890",
                "mapping ***********2345 <-> *********7890",
            ),
        ] {
            assert_eq!(masked(line), expected, "{line}");
        }
    }

    #[test]
    fn durations_timestamps_sizes_and_ids_stay_readable() {
        for line in [
            "reconnecting in delay=1.123453832s",
            "took 0.000123456789 s",
            "backoff 12345678ms",
            "waited 250000000ns",
            "at 2026-11-23T16:51:59.372956123Z",
            "server time 1764590000",
            "t=1764590000123",
            "at_ms=98765432101",
            "size=123456789",
            "db_size=987654321",
            "wrote 123456789 bytes",
            "rss 23456789 B",
            "message 3EB0123456789ABCDEF0 sent",
            "id 3EB01234567890 acked",
            "generation=123456789",
            "pid=12345678",
            "a 16-digit key index 1234567890123456",
        ] {
            assert_eq!(masked(line), line, "{line}");
        }
    }
}
