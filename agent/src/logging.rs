//! Logs: readable text on a terminal, plain lines for journald.
//!
//! Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp or colour
//! (journald adds its own timestamp) and start with the syslog priority
//! (`<4>` for a warning), which journald strips and records, so
//! `journalctl -u outlet-agent -p warning` finds the agent's warnings. whatsapp-rust logs through the `log`
//! crate; tracing-subscriber picks those records up too. Secrets never
//! reach a log line above `debug` (see DESIGN.md): the code logs masked
//! phone numbers and never QR strings or keys.

use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{LogConfig, LogFormat};

/// whatsapp-rust writes the link code into `info` lines under these
/// targets ("Pair code generated: …"); the code is a pairing secret like the
/// QR, so they are held to warnings whatever the configured level.
const SECRET_TARGETS: &[&str] = &["Client/PairCode", "Bot/PairCode"];

pub fn init(config: &LogConfig) {
    let filter = filter(&config.level);
    let journald = match config.format {
        LogFormat::Journald => true,
        LogFormat::Text => false,
        LogFormat::Auto => std::env::var_os("JOURNAL_STREAM").is_some(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Redacting(std::io::stderr()))
        .with_target(false);
    let result = if journald {
        let line = tracing_subscriber::fmt::format()
            .without_time()
            .with_ansi(false)
            .with_target(false);
        builder
            .with_ansi(false)
            .event_format(SyslogPriority(line))
            .try_init()
    } else {
        builder.try_init()
    };
    if result.is_err() {
        // Already initialised (tests): keep the existing subscriber.
    }
}

/// Puts the syslog priority in front of each line, as sd-daemon(3)
/// describes (`SyslogLevelPrefix=` is on by default).
struct SyslogPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for SyslogPriority<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// syslog(3) priorities: err, warning, info, debug.
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// The configured filter (`RUST_LOG` first), with the secret-carrying
/// targets capped.
fn filter(level: &str) -> EnvFilter {
    let mut filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    for target in SECRET_TARGETS {
        if let Ok(directive) = format!("{target}=warn").parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

/// Masks phone numbers and JIDs in every log line, whoever wrote it:
/// whatsapp-rust logs JIDs at `info` and `warn`. A phone number keeps only
/// its last 4 digits (`6281234567890` → `*********7890`); what only looks
/// like one — a duration, a timestamp, a size, an id — stays readable (see
/// [`mask_phone_numbers`]).
pub struct Redacting<W>(pub W);

impl<W: std::io::Write> std::io::Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(&mask_phone_numbers(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
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
    fn the_library_lines_that_carry_a_link_code_are_never_written() {
        use tracing_subscriber::layer::SubscriberExt;
        let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(filter("debug")).with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || Sink(sink.clone()))
                .with_ansi(false),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "Client/PairCode", "Stage 1 complete. Code: SECR3TCD");
            tracing::info!(target: "Bot/PairCode", "Pair code generated: SECR3TCD");
            tracing::warn!(target: "Client/PairCode", "companion_finish went unanswered");
            tracing::info!(target: "Client/Other", "still logged");
        });
        let text = String::from_utf8(buffer.lock().expect("lock").clone()).expect("utf8");
        assert!(!text.contains("SECR3TCD"), "{text}");
        assert!(text.contains("companion_finish went unanswered"), "{text}");
        assert!(text.contains("still logged"), "{text}");
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
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
