//! Where the broker is: `mqtt.broker`'s list of URLs and the address each
//! one names. Plain values, checked when the config loads; the MQTT link
//! and `fleet` connect to them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A broker URL that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mqtt.broker {url:?}: {reason}")]
pub struct BrokerUrlError {
    pub url: String,
    pub reason: String,
}

/// `mqtt.broker`: the URLs of one broker, as a TOML string or array.
///
/// Several URLs are meant as the nodes of one clustered broker (NATS,
/// EMQX, HiveMQ…), which share retained messages, sessions and wills: the
/// link stays on a node while it works and moves to the next when it
/// fails. Independent brokers would each hold a different truth. A string
/// may also list URLs separated by commas, which is what an environment
/// override (`OUTLET_AGENT__MQTT__BROKER=mqtt://a,mqtt://b`) can carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Brokers(Vec<String>);

impl Brokers {
    pub fn one(url: &str) -> Self {
        Self(vec![url.to_string()])
    }

    pub fn urls(&self) -> &[String] {
        &self.0
    }

    /// The first URL: where a one-shot client (`fleet`, the demo) goes.
    pub fn first(&self) -> &str {
        self.0.first().map(String::as_str).unwrap_or_default()
    }
}

impl std::fmt::Display for Brokers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

impl<'de> Deserialize<'de> for Brokers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let urls: Vec<String> = match Raw::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("expected a URL or a list of URLs (\"mqtt://host:1883\")")
        })? {
            Raw::One(text) => text.split(',').map(str::to_string).collect(),
            Raw::Many(urls) => urls,
        };
        Ok(Self(
            urls.into_iter()
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty())
                .collect(),
        ))
    }
}

impl Serialize for Brokers {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => serializer.serialize_str(one),
            many => many.serialize(serializer),
        }
    }
}

/// `mqtt://host[:port]` or `mqtts://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl BrokerAddress {
    pub fn parse(url: &str) -> Result<Self, BrokerUrlError> {
        let err = |reason: &str| BrokerUrlError {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(err("use mqtt://host[:port] or mqtts://host[:port]"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '@', '?', '#']) {
            return Err(err("only host and port: no path, user or query"));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| err("unclosed '['"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(err("expected ':' after ']'")),
            };
            (host, port)
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(err("no host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| err("the port must be 1-65535"))?,
            None => default_port,
        };
        Ok(Self {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

impl fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_with_default_ports() {
        let a = BrokerAddress::parse("mqtt://localhost").expect("valid");
        assert_eq!((a.host.as_str(), a.port, a.tls), ("localhost", 1883, false));
        let a = BrokerAddress::parse("mqtts://broker.example:9000").expect("valid");
        assert_eq!(
            (a.host.as_str(), a.port, a.tls),
            ("broker.example", 9000, true)
        );
        let a = BrokerAddress::parse("mqtts://[::1]").expect("valid");
        assert_eq!((a.host.as_str(), a.port), ("::1", 8883));
        assert_eq!(a.to_string(), "mqtts://[::1]:8883");
        for bad in [
            "localhost:1883",
            "tcp://x",
            "mqtt://",
            "mqtt://x:0",
            "mqtt://x:port",
            "mqtt://u:p@x",
            "mqtt://x/path",
        ] {
            assert!(BrokerAddress::parse(bad).is_err(), "{bad}");
        }
    }
}
