//! The words and numbers of each screen, independent of pixels.
//!
//! A [`Screen`] plus "now" becomes a [`Content`]: title, body lines, countdown, QR, icon and
//! tone. The graphic layout and the terminal driver both draw from it, so the two never
//! disagree about what a state says, and wording lives in one place.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::UtcOffset;
use crate::lang::{Strings, fill};
use crate::screen::{Mark, Qr, QrPayload, Screen, State};

/// Colour family of a screen: tells staff at a glance whether to worry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    /// Nothing to do (paused).
    Neutral,
    /// Work in progress (starting, connecting, pairing).
    Info,
    /// All good (connected).
    Good,
    /// Needs attention soon (reconnecting, replaced, unlinked).
    Warn,
    /// Needs someone (banned, outdated, fault).
    Bad,
}

/// A small drawing above the title.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icon {
    /// The agent's mark: a speech bubble.
    Logo,
    /// Eight dots, one lit; `step` advances once a second.
    Spinner(u8),
    /// A clock face.
    Clock,
    /// A tick.
    Check,
    /// A triangle with "!".
    Warning,
    /// A circle with a cross.
    Cross,
    /// Two bars.
    Pause,
    /// An upward arrow.
    Update,
    /// A phone handset-like rounded rectangle with a code.
    Code,
}

/// How big a headline is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadlineSize {
    /// The title font (about 16×29 px per character).
    Large,
    /// Twice the title font, for codes read from across the counter.
    Huge,
}

/// A countdown to an instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Countdown {
    /// What happens at the end, e.g. "Next try in".
    pub label: &'static str,
    /// Whole seconds left, rounded up (shows 0:01 during the last second).
    pub remaining: u64,
    /// Length of the whole period in seconds, when a progress bar makes sense.
    pub total: Option<u64>,
}

impl Countdown {
    /// `m:ss`, or `h:mm:ss` from an hour on.
    pub fn text(&self) -> String {
        format_duration(self.remaining)
    }

    /// Fraction of the period left, 0.0–1.0.
    pub fn fraction(&self) -> Option<f32> {
        self.total
            .filter(|t| *t > 0)
            .map(|t| (self.remaining.min(t) as f32) / (t as f32))
    }
}

/// The QR part of a pairing screen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QrContent {
    /// The secret string to encode.
    pub payload: QrPayload,
    /// "Code n of m" numbers (m = 0: unknown).
    pub index: u32,
    /// Codes in the round.
    pub count: u32,
}

/// Everything a screen says at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content {
    /// Colour family.
    pub tone: Tone,
    /// Drawing above the title (not on QR screens).
    pub icon: Option<Icon>,
    /// The state in a few words.
    pub title: String,
    /// A prominent value: outlet name, link code.
    pub headline: Option<(String, HeadlineSize)>,
    /// Explanations and details, one paragraph per entry (wrapped by the layout).
    pub body: Vec<String>,
    /// Time left until something happens.
    pub countdown: Option<Countdown>,
    /// The pairing QR, on pairing screens.
    pub qr: Option<QrContent>,
    /// Where to tap on the phone (QR screens).
    pub hint: Option<&'static str>,
    /// Network mark.
    pub network: Mark,
    /// MQTT mark.
    pub mqtt: Mark,
    /// When the passage of time alone changes this content (countdown or spinner step).
    pub next_change: Option<SystemTime>,
    /// The language it is in (for words drawn later: QR titles, marks).
    pub strings: &'static Strings,
}

impl Content {
    /// The content of `screen` at `now` in the language `t`, with times shown at `offset`
    /// from UTC.
    pub fn of(screen: &Screen, now: SystemTime, offset: UtcOffset, t: &'static Strings) -> Self {
        let time = |at: SystemTime| format_time(at, offset, &t.months);
        let mut c = Content {
            tone: Tone::Info,
            icon: None,
            title: String::new(),
            headline: None,
            body: Vec::new(),
            countdown: None,
            qr: None,
            hint: None,
            network: screen.network,
            mqtt: screen.mqtt,
            next_change: None,
            strings: t,
        };
        match &screen.state {
            State::Starting { version } => {
                c.icon = Some(Icon::Logo);
                c.title = t.starting.clone();
                c.body = vec![
                    "outlet-agent".into(),
                    fill(&t.version, &[("version", version)]),
                ];
            }
            State::WaitingForClock => {
                c.icon = Some(Icon::Clock);
                c.title = t.waiting_for_clock.clone();
                c.body = vec![
                    t.waiting_for_clock_why.clone(),
                    t.waiting_for_clock_check.clone(),
                ];
            }
            State::Connecting { attempt } => {
                c.icon = Some(spinner(now, &mut c.next_change));
                c.title = t.connecting.clone();
                c.body = vec![
                    t.connecting_to.clone(),
                    fill(&t.attempt, &[("n", &attempt.to_string())]),
                ];
            }
            State::Pairing(qr) => {
                c.title = t.scan.clone();
                pairing(&mut c, qr, now);
            }
            State::LoggedOut { qr: Some(qr) } => {
                c.tone = Tone::Warn;
                c.title = t.scan_again.clone();
                pairing(&mut c, qr, now);
            }
            State::LoggedOut { qr: None } => {
                c.tone = Tone::Warn;
                c.icon = Some(Icon::Warning);
                c.title = t.unlinked.clone();
                c.body = vec![t.unlinked_why.clone(), t.unlinked_advice.clone()];
            }
            State::PairingCode { code, expires_at } => {
                c.icon = Some(Icon::Code);
                c.title = t.link_code.clone();
                c.headline = Some((format_code(code), HeadlineSize::Huge));
                c.body = vec![t.link_code_advice.clone()];
                if let Some(at) = expires_at {
                    c.countdown =
                        Some(countdown(&t.expires_in, now, None, *at, &mut c.next_change));
                }
            }
            State::PairingIdle { next_round_at } => {
                c.icon = Some(Icon::Code);
                c.title = t.codes_expired.clone();
                c.body = vec![t.codes_expired_advice.clone()];
                if let Some(at) = next_round_at {
                    c.countdown = Some(countdown(
                        &t.new_code_in,
                        now,
                        None,
                        *at,
                        &mut c.next_change,
                    ));
                }
            }
            State::Connected {
                outlet_name,
                phone,
                since,
                last_message_at,
            } => {
                c.tone = Tone::Good;
                c.icon = Some(Icon::Check);
                c.title = t.connected.clone();
                c.headline = Some((outlet_name.clone(), HeadlineSize::Large));
                c.body = vec![phone.clone(), fill(&t.since, &[("time", &time(*since))])];
                if let Some(at) = last_message_at {
                    let ago = ago(t, now, *at, &mut c.next_change);
                    c.body.push(fill(&t.last_message, &[("ago", &ago)]));
                }
            }
            State::Reconnecting {
                reason,
                attempt,
                next_retry_at,
            } => {
                c.tone = Tone::Warn;
                c.icon = Some(Icon::Warning);
                c.title = t.reconnecting.clone();
                c.body = vec![
                    fill(&t.reconnect_reason, &[("reason", reason)]),
                    fill(&t.attempt, &[("n", &attempt.to_string())]),
                ];
                c.body.retain(|line| !line.is_empty());
                c.countdown = Some(countdown(
                    &t.next_try_in,
                    now,
                    None,
                    *next_retry_at,
                    &mut c.next_change,
                ));
            }
            State::Replaced { retry_at } => {
                c.tone = Tone::Warn;
                c.icon = Some(Icon::Warning);
                c.title = t.replaced.clone();
                c.body = vec![t.replaced_why.clone(), t.replaced_hq.clone()];
                if let Some(at) = retry_at {
                    c.countdown = Some(countdown(
                        &t.one_retry_in,
                        now,
                        None,
                        *at,
                        &mut c.next_change,
                    ));
                }
            }
            State::Banned { code, until } => {
                c.tone = Tone::Bad;
                c.icon = Some(Icon::Cross);
                c.title = t.banned.clone();
                c.body = vec![match until {
                    Some(at) => fill(&t.banned_until, &[("time", &time(*at))]),
                    None => t.banned_for_now.clone(),
                }];
                c.body.push(match code {
                    Some(code) => fill(&t.banned_code, &[("code", &code.to_string())]),
                    None => t.ask_hq.clone(),
                });
            }
            State::Outdated => {
                c.tone = Tone::Bad;
                c.icon = Some(Icon::Update);
                c.title = t.outdated.clone();
                c.body = vec![t.outdated_why.clone(), t.outdated_advice.clone()];
            }
            State::Paused => {
                c.tone = Tone::Neutral;
                c.icon = Some(Icon::Pause);
                c.title = t.paused.clone();
                c.body = vec![t.paused_why.clone()];
            }
            State::Fault { what, action } => {
                c.tone = Tone::Bad;
                c.icon = Some(Icon::Cross);
                c.title = t.fault.clone();
                c.body = vec![what.clone(), action.clone()];
            }
        }
        c
    }
}

fn pairing(c: &mut Content, qr: &Qr, now: SystemTime) {
    c.qr = Some(QrContent {
        payload: qr.payload.clone(),
        index: qr.index,
        count: qr.count,
    });
    let t = c.strings;
    c.hint = Some(&t.scan_hint);
    c.countdown = Some(countdown(
        &t.expires_in,
        now,
        Some(qr.issued_at),
        qr.expires_at,
        &mut c.next_change,
    ));
}

/// "QR 2 of 5", or "QR 2" when the round size is unknown.
pub fn code_number(index: u32, count: u32, t: &Strings) -> String {
    let index = index.to_string();
    if count > 0 {
        fill(
            &t.qr_of,
            &[("index", &index), ("count", &count.to_string())],
        )
    } else {
        fill(&t.qr_alone, &[("index", &index)])
    }
}

fn countdown(
    label: &'static str,
    now: SystemTime,
    start: Option<SystemTime>,
    end: SystemTime,
    next_change: &mut Option<SystemTime>,
) -> Countdown {
    let left = end.duration_since(now).unwrap_or(Duration::ZERO);
    let remaining = ceil_secs(left);
    if remaining > 0 {
        // The shown number drops when `left` crosses the next whole second below it.
        let at = end - Duration::from_secs(remaining - 1);
        *next_change = Some(earliest(*next_change, at));
    }
    let total = start.map(|s| ceil_secs(end.duration_since(s).unwrap_or(Duration::ZERO)));
    Countdown {
        label,
        remaining,
        total,
    }
}

/// "just now", "5 min ago", "3 h ago", "2 days ago"; schedules the redraw
/// for when the words change.
fn ago(
    t: &Strings,
    now: SystemTime,
    at: SystemTime,
    next_change: &mut Option<SystemTime>,
) -> String {
    let age = now.duration_since(at).unwrap_or(Duration::ZERO).as_secs();
    let n = |unit: u64| (age / unit).to_string();
    let (text, unit) = match age {
        0..60 => (t.just_now.clone(), 60),
        60..3600 => (fill(&t.minutes_ago, &[("n", &n(60))]), 60),
        3600..86_400 => (fill(&t.hours_ago, &[("n", &n(3600))]), 3600),
        _ if age < 2 * 86_400 => (t.one_day_ago.clone(), 86_400),
        _ => (fill(&t.days_ago, &[("n", &n(86_400))]), 86_400),
    };
    let next = at + Duration::from_secs((age / unit + 1) * unit);
    *next_change = Some(earliest(*next_change, next));
    text
}

fn spinner(now: SystemTime, next_change: &mut Option<SystemTime>) -> Icon {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let next = UNIX_EPOCH + Duration::from_secs(since.as_secs() + 1);
    *next_change = Some(earliest(*next_change, next));
    Icon::Spinner((since.as_secs() % 8) as u8)
}

fn earliest(a: Option<SystemTime>, b: SystemTime) -> SystemTime {
    a.map_or(b, |a| a.min(b))
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `m:ss` below an hour, `h:mm:ss` above.
pub fn format_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// Link codes are easier to copy in two groups: `ABCD1234` → `ABCD-1234`.
pub fn format_code(code: &str) -> String {
    let clean: String = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    if clean.chars().count() == 8 {
        let (a, b) = clean.split_at(clean.char_indices().nth(4).map_or(0, |(i, _)| i));
        format!("{a}-{b}")
    } else {
        clean
    }
}

/// `23 Nov 08:00` in local time (fixed offset), with `months`' names.
pub fn format_time(t: SystemTime, offset: UtcOffset, months: &[String; 12]) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    } + i64::from(offset.minutes()) * 60;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (_, month, day) = civil_from_days(days);
    format!(
        "{day} {} {:02}:{:02}",
        months[(month - 1) as usize],
        sod / 3600,
        sod / 60 % 60
    )
}

/// Howard Hinnant's days-to-civil conversion (proleptic Gregorian), to avoid a date crate.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lang::english;

    #[test]
    fn formats_times_and_durations() {
        // 2026-11-23T08:00:00Z
        let t = UNIX_EPOCH + Duration::from_secs(1_795_420_800);
        assert_eq!(
            format_time(t, UtcOffset::UTC, &english().months),
            "23 Nov 08:00"
        );
        assert_eq!(
            format_time(t, UtcOffset::from_minutes(7 * 60), &english().months),
            "23 Nov 15:00"
        );
        assert_eq!(
            format_time(t, UtcOffset::from_minutes(-9 * 60), &english().months),
            "22 Nov 23:00"
        );
        assert_eq!(format_duration(42), "0:42");
        assert_eq!(format_duration(3 * 3600 + 5), "3:00:05");
        assert_eq!(format_code("abcd1234"), "abcd-1234");
        assert_eq!(format_code("ABCD-1234"), "ABCD-1234");
    }

    #[test]
    fn the_last_message_is_told_as_an_age_that_redraws_when_it_changes() {
        let at = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut next = None;
        assert_eq!(
            ago(english(), at + Duration::from_secs(30), at, &mut next),
            "just now"
        );
        assert_eq!(next, Some(at + Duration::from_secs(60)));
        let mut next = None;
        assert_eq!(
            ago(english(), at + Duration::from_secs(150), at, &mut next),
            "2 min ago"
        );
        assert_eq!(next, Some(at + Duration::from_secs(180)));
        let mut next = None;
        assert_eq!(
            ago(english(), at + Duration::from_secs(7300), at, &mut next),
            "2 h ago"
        );
        assert_eq!(
            ago(english(), at + Duration::from_secs(90_000), at, &mut next),
            "1 day ago"
        );
        assert_eq!(
            ago(english(), at + Duration::from_secs(300_000), at, &mut next),
            "3 days ago"
        );
    }

    #[test]
    fn countdown_rounds_up_and_schedules_the_next_second() {
        let end = UNIX_EPOCH + Duration::from_secs(1000);
        let mut next = None;
        let now = end - Duration::from_millis(41_300);
        let c = countdown(
            "x",
            now,
            Some(end - Duration::from_secs(60)),
            end,
            &mut next,
        );
        assert_eq!(c.remaining, 42);
        assert_eq!(c.total, Some(60));
        assert_eq!(next, Some(end - Duration::from_secs(41)));
        let mut next = None;
        let c = countdown("x", end + Duration::from_secs(3), None, end, &mut next);
        assert_eq!(c.remaining, 0);
        assert_eq!(next, None);
    }
}
