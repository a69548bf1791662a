//! Logs: readable text on a terminal, plain lines for journald.
//!
//! Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp or colour:
//! journald adds its own timestamp. whatsapp-rust logs through the `log`
//! crate; tracing-subscriber picks those records up too. Secrets never
//! reach a log line above `debug` (see DESIGN.md): the code logs masked
//! phone numbers and never QR strings or keys.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
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
        builder.without_time().with_ansi(false).try_init()
    } else {
        builder.try_init()
    };
    if result.is_err() {
        // Already initialised (tests): keep the existing subscriber.
    }
}

/// Masks phone numbers in every log line, whoever wrote it: whatsapp-rust
/// logs JIDs at `info` and `warn`. Any run of 8 or more digits keeps only
/// its last 4 (`6281234567890` → `*********7890`).
pub struct Redacting<W>(pub W);

impl<W: std::io::Write> std::io::Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(&mask_digit_runs(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Replaces all but the last 4 digits of every run of 8+ ASCII digits.
pub fn mask_digit_runs(input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    let mut i = 0;
    while i < out.len() {
        if out[i].is_ascii_digit() {
            let start = i;
            while i < out.len() && out[i].is_ascii_digit() {
                i += 1;
            }
            if i - start >= 8 {
                out[start..i - 4].fill(b'*');
            }
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_digit_runs_are_masked() {
        let line =
            b"paired 6281234567890:1@s.whatsapp.net at 2026-11-23T16:51:59.372956Z port 1883";
        let masked = String::from_utf8(mask_digit_runs(line)).expect("utf8");
        assert_eq!(
            masked,
            "paired *********7890:1@s.whatsapp.net at 2026-11-23T16:51:59.372956Z port 1883"
        );
    }
}
