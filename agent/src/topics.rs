//! The outlet's topics, all under one prefix (`outlet/<outlet_id>` unless
//! configured), as DESIGN.md's MQTT table lists them, and HQ's view of
//! every outlet's topics ([`PrefixPattern`], for `fleet` and the
//! dashboard).
//!
//! Plain names and rules: the config validates prefixes with them, the
//! MQTT link, the messages and HQ's tools build topics with them. It must
//! not import any other module of the agent.
//!
//! Requests are read from this outlet's own `<prefix>/request/+` only: a
//! broker ACL can then give each outlet (and each dashboard) exactly its
//! own subtree, and a typo in another outlet's id never reaches this one.

use std::fmt;

/// Why a prefix cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("must not be empty")]
    Empty,
    #[error("{0:?}: wildcards (+, #) and NUL are not allowed in a topic")]
    Wildcard(String),
    #[error("{0:?}: no empty levels (leading, trailing or double '/')")]
    EmptyLevel(String),
    #[error("{0:?}: topics starting with '$' are reserved for the broker")]
    Reserved(String),
    #[error("longer than {MAX_PREFIX} bytes")]
    TooLong,
}

/// Room is left for the suffixes within MQTT's 65535-byte topic limit;
/// real prefixes are a few dozen bytes.
const MAX_PREFIX: usize = 1024;

/// Checks a prefix (ours or Home Assistant's discovery prefix).
pub fn validate_prefix(prefix: &str) -> Result<(), TopicError> {
    if prefix.is_empty() {
        return Err(TopicError::Empty);
    }
    if prefix.len() > MAX_PREFIX {
        return Err(TopicError::TooLong);
    }
    if prefix.contains(['+', '#', '\0']) {
        return Err(TopicError::Wildcard(prefix.to_string()));
    }
    if prefix.split('/').any(str::is_empty) {
        return Err(TopicError::EmptyLevel(prefix.to_string()));
    }
    if prefix.starts_with('$') {
        return Err(TopicError::Reserved(prefix.to_string()));
    }
    Ok(())
}

/// Where `mqtt.topic_prefix` puts the outlet id.
pub const OUTLET_ID: &str = "{outlet_id}";

/// Every topic of one outlet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    /// `template` with `{outlet_id}` replaced, validated.
    pub fn new(template: &str, outlet_id: &str) -> Result<Self, TopicError> {
        let prefix = template.replace(OUTLET_ID, outlet_id);
        validate_prefix(&prefix)?;
        Ok(Self { prefix })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Retained `online` / `offline` (also the last will).
    pub fn availability(&self) -> String {
        format!("{}/availability", self.prefix)
    }

    /// Retained health snapshot.
    pub fn state(&self) -> String {
        format!("{}/state", self.prefix)
    }

    /// One message per state transition.
    pub fn event(&self) -> String {
        format!("{}/event", self.prefix)
    }

    /// Retained resource figures.
    pub fn telemetry(&self) -> String {
        format!("{}/telemetry", self.prefix)
    }

    /// Inbound messages, QoS 1, not retained: contents and full numbers,
    /// for HQ alone (the broker's ACL).
    pub fn message_in(&self) -> String {
        format!("{}/message/in", self.prefix)
    }

    /// Send statuses, QoS 1, not retained.
    pub fn message_status(&self) -> String {
        format!("{}/message/status", self.prefix)
    }

    /// A received file's announcement (or why it cannot be had), QoS 1,
    /// not retained, before its first chunk.
    pub fn message_media(&self) -> String {
        format!("{}/message/media", self.prefix)
    }

    /// Chunk `index` (0-based) of the file `sha256`, QoS 1, not retained.
    pub fn media_chunk(&self, sha256: &str, index: u32) -> String {
        format!("{}/media/{sha256}/{index}", self.prefix)
    }

    /// What the link subscribes to for commands.
    pub fn request_filter(&self) -> String {
        format!("{}/request/+", self.prefix)
    }

    /// The command HA's buttons (and anyone else) publish to.
    pub fn request(&self, command: &str) -> String {
        format!("{}/request/{command}", self.prefix)
    }

    pub fn response(&self, command: &str) -> String {
        format!("{}/response/{command}", self.prefix)
    }

    /// The command name of a request topic of this outlet, if it is one.
    pub fn request_name<'a>(&self, topic: &'a str) -> Option<&'a str> {
        let rest = topic.strip_prefix(self.prefix.as_str())?;
        let name = rest.strip_prefix("/request/")?;
        (!name.is_empty() && !name.contains('/')).then_some(name)
    }
}

impl fmt::Display for Topics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.prefix)
    }
}

/// Where the outlets publish: the topic around `{outlet_id}`, which may
/// be a whole level (`outlet/{outlet_id}`) or part of one (`wa-{outlet_id}`),
/// as the agent's `mqtt.topic_prefix` allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixPattern {
    /// Whole levels before the id's level, with the trailing `/`.
    levels_before: String,
    /// Text of the id's level before the id.
    id_prefix: String,
    /// Text of the id's level after the id.
    id_suffix: String,
    /// Whole levels after the id's level, with the leading `/`.
    levels_after: String,
}

impl PrefixPattern {
    /// `outlet` (the levels above the ids) or a `mqtt.topic_prefix`-style
    /// template such as `shops/{outlet_id}/wa`.
    pub fn parse(prefix: &str) -> Result<Self, String> {
        let template = if prefix.contains(OUTLET_ID) {
            prefix.to_string()
        } else {
            format!("{prefix}/{OUTLET_ID}")
        };
        validate_prefix(&template).map_err(|e| e.to_string())?;
        let Some((before, after)) = template.split_once(OUTLET_ID) else {
            return Err(format!("{prefix:?}: no {OUTLET_ID}"));
        };
        if after.contains(OUTLET_ID) {
            return Err(format!("{prefix:?}: {OUTLET_ID} more than once"));
        }
        let (levels_before, id_prefix) = match before.rfind('/') {
            Some(i) => before.split_at(i + 1),
            None => ("", before),
        };
        let (id_suffix, levels_after) = match after.find('/') {
            Some(i) => after.split_at(i),
            None => (after, ""),
        };
        Ok(Self {
            levels_before: levels_before.to_string(),
            id_prefix: id_prefix.to_string(),
            id_suffix: id_suffix.to_string(),
            levels_after: levels_after.to_string(),
        })
    }

    /// The subscription for one leaf of every outlet (`leaf` may itself
    /// hold levels and wildcards: `response/+`).
    pub fn filter(&self, leaf: &str) -> String {
        format!("{}+{}/{leaf}", self.levels_before, self.levels_after)
    }

    /// One outlet's topic for `leaf` (`outlet/jkt-01/request/pause`).
    pub fn topic(&self, id: &str, leaf: &str) -> String {
        format!(
            "{}{}{id}{}{}/{leaf}",
            self.levels_before, self.id_prefix, self.id_suffix, self.levels_after
        )
    }

    /// The outlet id and the one-level leaf of a topic under the pattern.
    pub fn split<'t>(&self, topic: &'t str) -> Option<(&'t str, &'t str)> {
        self.split_leaves(topic)
            .filter(|(_, leaf)| !leaf.contains('/'))
    }

    /// The outlet id and the rest of a topic under the pattern, which may
    /// span levels (`response/pause`).
    pub fn split_leaves<'t>(&self, topic: &'t str) -> Option<(&'t str, &'t str)> {
        let rest = topic.strip_prefix(self.levels_before.as_str())?;
        let (level, rest) = rest.split_once('/')?;
        let id = level
            .strip_prefix(self.id_prefix.as_str())?
            .strip_suffix(self.id_suffix.as_str())?;
        let leaf = match self.levels_after.strip_prefix('/') {
            None => rest,
            Some(after) => rest.strip_prefix(after)?.strip_prefix('/')?,
        };
        (!id.is_empty() && !leaf.is_empty()).then_some((id, leaf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_prefix_names_the_outlet() {
        let topics = Topics::new("outlet/{outlet_id}", "jkt-01").expect("valid");
        assert_eq!(topics.availability(), "outlet/jkt-01/availability");
        assert_eq!(topics.request_filter(), "outlet/jkt-01/request/+");
        assert_eq!(topics.response("status"), "outlet/jkt-01/response/status");
    }

    #[test]
    fn request_names_come_only_from_our_own_prefix() {
        let topics = Topics::new("outlet/{outlet_id}", "a").expect("valid");
        assert_eq!(
            topics.request_name("outlet/a/request/status"),
            Some("status")
        );
        assert_eq!(topics.request_name("outlet/ab/request/status"), None);
        assert_eq!(topics.request_name("outlet/b/request/status"), None);
        assert_eq!(topics.request_name("outlet/a/request/"), None);
        assert_eq!(topics.request_name("outlet/a/request/x/y"), None);
        assert_eq!(topics.request_name("outlet/a/response/status"), None);
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for bad in ["", "a/+/b", "a/#", "/a", "a/", "a//b", "$SYS/x"] {
            assert!(validate_prefix(bad).is_err(), "{bad:?}");
        }
        assert!(validate_prefix("homeassistant").is_ok());
    }

    #[test]
    fn prefixes_may_be_templates_like_the_agents_topic_prefix() {
        let plain = PrefixPattern::parse("outlet").expect("plain");
        assert_eq!(
            plain,
            PrefixPattern::parse("outlet/{outlet_id}").expect("same")
        );
        assert_eq!(plain.filter("state"), "outlet/+/state");

        let shops = PrefixPattern::parse("shops/{outlet_id}/wa").expect("template");
        assert_eq!(shops.filter("state"), "shops/+/wa/state");
        assert_eq!(
            shops.split("shops/jkt-01/wa/state"),
            Some(("jkt-01", "state"))
        );
        assert_eq!(shops.split("shops/jkt-01/state"), None);
        assert_eq!(shops.split("shops/jkt-01/wa/x/state"), None);

        let first = PrefixPattern::parse("{outlet_id}/wa").expect("id first");
        assert_eq!(first.filter("availability"), "+/wa/availability");
        assert_eq!(
            first.split("a/wa/availability"),
            Some(("a", "availability"))
        );

        // Part of a level, as the agent allows.
        let part = PrefixPattern::parse("shops/wa-{outlet_id}.v1/x").expect("partial level");
        assert_eq!(part.filter("state"), "shops/+/x/state");
        assert_eq!(
            part.split("shops/wa-jkt.v1/x/state"),
            Some(("jkt", "state"))
        );
        assert_eq!(part.split("shops/jkt.v1/x/state"), None);
        assert_eq!(part.split("shops/wa-.v1/x/state"), None);

        for bad in ["{outlet_id}/{outlet_id}", "shops/+", "", "a//b"] {
            assert!(PrefixPattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
