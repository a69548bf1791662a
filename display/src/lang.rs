//! The words on the screen, in the outlet's language.
//!
//! Staff read the screen in a hurry at the counter: they should read their
//! own language. Each language is one file of strings in `display/lang/`
//! (`en.toml`, `id.toml`, …), embedded at build time by `build.rs`, so a
//! third language is one more file and no code. Every file has every key
//! (a test checks they parse and that every screen fits in each). `{name}`
//! placeholders are filled with [`fill`].

use std::sync::OnceLock;

use serde::Deserialize;

mod files {
    include!(concat!(env!("OUT_DIR"), "/languages.rs"));
}

/// Every word the screens show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Strings {
    /// The language's code (the file name), set when loaded.
    #[serde(skip)]
    pub code: String,
    /// The language's own name for itself.
    pub name: String,
    /// Short month names, January first.
    pub months: [String; 12],
    pub starting: String,
    pub version: String,
    pub waiting_for_clock: String,
    pub waiting_for_clock_why: String,
    pub waiting_for_clock_check: String,
    pub connecting: String,
    pub connecting_to: String,
    pub attempt: String,
    pub scan: String,
    pub scan_again: String,
    pub scan_hint: String,
    pub scan_hint_short: String,
    pub qr_of: String,
    pub qr_alone: String,
    pub expires_in: String,
    pub screen_too_small: String,
    pub qr_too_long: String,
    pub qr_too_long_advice: String,
    pub unlinked: String,
    pub unlinked_why: String,
    pub unlinked_advice: String,
    pub link_code: String,
    pub link_code_advice: String,
    pub codes_expired: String,
    pub codes_expired_advice: String,
    pub new_code_in: String,
    pub connected: String,
    pub since: String,
    pub last_message: String,
    pub just_now: String,
    pub minutes_ago: String,
    pub hours_ago: String,
    pub one_day_ago: String,
    pub days_ago: String,
    pub reconnecting: String,
    pub next_try_in: String,
    pub reconnect_reason: String,
    pub replaced: String,
    pub replaced_why: String,
    pub replaced_hq: String,
    pub one_retry_in: String,
    pub banned: String,
    pub banned_until: String,
    pub banned_for_now: String,
    pub banned_code: String,
    pub ask_hq: String,
    pub outdated: String,
    pub outdated_why: String,
    pub outdated_advice: String,
    pub paused: String,
    pub paused_why: String,
    pub fault: String,
    pub fault_disk_full: String,
    pub fault_disk_full_advice: String,
    pub fault_store: String,
    pub fault_store_advice: String,
    pub mark_up: String,
    pub mark_down: String,
    pub network: String,
    pub mqtt: String,
}

/// A language file that does not parse (caught by the tests; at run time
/// the language is left out and reported).
#[derive(Debug, thiserror::Error)]
#[error("display/lang/{code}.toml: {message}")]
pub struct LangError {
    pub code: String,
    pub message: String,
}

fn table() -> &'static [Strings] {
    static TABLE: OnceLock<Vec<Strings>> = OnceLock::new();
    TABLE.get_or_init(|| {
        files::FILES
            .iter()
            .filter_map(|(code, text)| match parse(code, text) {
                Ok(strings) => Some(strings),
                Err(e) => {
                    tracing::error!(error = %e, "a screen language is unusable");
                    None
                }
            })
            .collect()
    })
}

fn parse(code: &str, text: &str) -> Result<Strings, LangError> {
    let mut strings: Strings = toml::from_str(text).map_err(|e| LangError {
        code: code.to_string(),
        message: e.to_string(),
    })?;
    strings.code = code.to_string();
    Ok(strings)
}

/// Every embedded language file, parsed: for tests that check them all.
pub fn parse_all() -> Vec<Result<Strings, LangError>> {
    files::FILES
        .iter()
        .map(|(code, text)| parse(code, text))
        .collect()
}

/// The codes of the languages there are (`en`, `id`, …), sorted.
pub fn codes() -> Vec<&'static str> {
    table().iter().map(|s| s.code.as_str()).collect()
}

/// The language `code`, if there is one.
pub fn lookup(code: &str) -> Option<&'static Strings> {
    table().iter().find(|s| s.code == code)
}

/// English: the built-in default, and what an unknown code falls back to.
pub fn english() -> &'static Strings {
    static EMPTY: OnceLock<Strings> = OnceLock::new();
    lookup("en")
        .or_else(|| table().first())
        .unwrap_or_else(|| EMPTY.get_or_init(Strings::default))
}

/// `template` with each `{name}` replaced by its value.
pub fn fill(template: &str, args: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (name, value) in args {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_file_parses_with_every_key() {
        let all = parse_all();
        assert!(all.len() >= 2, "English and Bahasa Indonesia at least");
        for parsed in all {
            let strings = parsed.unwrap_or_else(|e| panic!("{e}"));
            assert!(!strings.name.is_empty());
            assert!(
                strings.months.iter().all(|m| !m.is_empty()),
                "{}",
                strings.code
            );
        }
        assert_eq!(codes(), ["en", "id"]);
    }

    #[test]
    fn placeholders_are_filled_by_name() {
        let id = lookup("id").expect("id");
        assert_eq!(fill(&id.attempt, &[("n", "3")]), "Percobaan 3");
        assert_eq!(
            fill(&english().qr_of, &[("index", "2"), ("count", "5")]),
            "QR 2 of 5"
        );
    }

    #[test]
    fn every_placeholder_of_english_is_in_every_language() {
        // A translation that drops `{time}` would show no time at all.
        let en = toml::from_str::<toml::Table>(files::FILES[0].1).expect("en");
        for (code, text) in files::FILES {
            let other = toml::from_str::<toml::Table>(text).expect("parses");
            for (key, value) in &en {
                let (Some(a), Some(b)) = (value.as_str(), other.get(key).and_then(|v| v.as_str()))
                else {
                    continue;
                };
                for name in [
                    "{n}",
                    "{time}",
                    "{index}",
                    "{count}",
                    "{code}",
                    "{dir}",
                    "{free}",
                    "{version}",
                    "{ago}",
                ] {
                    // `reconnect_reason` may say it plainly instead.
                    if a.contains(name) && !b.contains(name) && key != "reconnect_reason" {
                        panic!("{code}.toml: {key} lacks {name}");
                    }
                }
            }
        }
    }
}
