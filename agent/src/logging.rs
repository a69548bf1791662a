//! Logs: readable text on a terminal, plain lines for journald.
//!
//! Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp or colour
//! (journald adds its own timestamp) and start with the syslog priority
//! (`<4>` for a warning), which journald strips and records, so
//! `journalctl -u outlet-agent -p warning` finds the agent's warnings. whatsapp-rust logs through the `log`
//! crate; tracing-subscriber picks those records up too. Secrets never
//! reach a log line above `debug` (see DESIGN.md): the code logs masked
//! phone numbers and never QR strings or keys.
//!
//! A working part: it owns the log setup. It may use the config and `phone`
//! (every line passes its masking); it must not import the other working parts
//! or any entry point.

use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{LogConfig, LogFormat};
use crate::phone::mask_phone_numbers;

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
/// [`crate::phone::mask_phone_numbers`]).
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
}
