//! The outlet's topics, all under one prefix (`outlet/<outlet_id>` unless
//! configured), as DESIGN.md's MQTT table lists them.
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
}
