//! Where the broker is and how to hold a session with it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use eddy_connector::{Error, Options, Result};

/// The `WITH (…)` keys this crate reads, and `mqtt_topic` (the filters, which the caller
/// splits); any other `mqtt_` key is a typo worth reporting.
const KEYS: &[&str] = &[
    "mqtt_topic",
    "mqtt_broker",
    "mqtt_client_id",
    "mqtt_qos",
    "mqtt_clean_session",
];

/// How to reach an MQTT broker and what session to hold with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    /// The broker: `mqtt://host:port`, `tcp://host:port` or `host:port` (port 1883 if omitted).
    pub url: String,
    /// The client id; the broker keeps a persistent session under it.
    pub client_id: String,
    /// The QoS to subscribe with: 0, 1 or 2.
    pub qos: u8,
    /// Whether the broker drops the session on disconnect; `false` is what makes QoS 1 and 2
    /// survive reconnects and restarts.
    pub clean_session: bool,
}

impl Default for MqttConfig {
    /// A local broker, QoS 1, and a generated client id; the id is new on every call, so the
    /// session is clean: nobody could resume it, and the broker would keep it forever.
    fn default() -> Self {
        MqttConfig {
            url: "mqtt://127.0.0.1:1883".into(),
            client_id: generated_client_id(),
            qos: 1,
            clean_session: true,
        }
    }
}

impl MqttConfig {
    /// QoS 1 with a persistent session under `client_id`.
    pub fn new(url: impl Into<String>, client_id: impl Into<String>) -> Self {
        MqttConfig {
            url: url.into(),
            client_id: client_id.into(),
            qos: 1,
            clean_session: false,
        }
    }

    /// Reads `mqtt_broker` (required), `mqtt_client_id`, `mqtt_qos` (default 1) and
    /// `mqtt_clean_session` from a statement's options.
    ///
    /// Without `mqtt_client_id` the id is generated and the session clean, so delivery is only
    /// at-least-once while the connection holds; with it, and QoS 1 or 2, the session is
    /// persistent unless `mqtt_clean_session = 'true'`.
    pub fn from_options(options: &Options) -> Result<Self> {
        Self::parse(options, None)
    }

    /// Like [`from_options`](Self::from_options), but without `mqtt_client_id` uses
    /// `client_id`, which the caller keeps stable across restarts (e.g. derived from the query's
    /// name), so QoS 1 and 2 get a persistent session either way.
    pub fn from_options_or_client_id(options: &Options, client_id: &str) -> Result<Self> {
        Self::parse(options, Some(client_id))
    }

    fn parse(options: &Options, default_client_id: Option<&str>) -> Result<Self> {
        if let Some(key) = options
            .keys()
            .find(|k| k.starts_with("mqtt_") && !KEYS.contains(&k.as_str()))
        {
            return Err(Error::Config(format!(
                "unknown MQTT option '{key}' (known: {})",
                KEYS.join(", ")
            )));
        }
        let url = options
            .get("mqtt_broker")
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                Error::Config(
                    "missing option 'mqtt_broker' (the broker, e.g. 'mqtt://127.0.0.1:1883')"
                        .into(),
                )
            })?;
        parse_broker(&url)?;
        let qos = match options.get("mqtt_qos").map(|q| q.trim()) {
            None => 1,
            Some(q @ ("0" | "1" | "2")) => q.parse().expect("a digit"),
            Some(q) => {
                return Err(Error::Config(format!(
                    "option 'mqtt_qos' must be 0, 1 or 2, not '{q}'"
                )))
            }
        };
        let client_id = match options.get("mqtt_client_id").map(|c| c.trim()) {
            Some("") => {
                return Err(Error::Config(
                    "option 'mqtt_client_id' is empty; omit it to have one generated".into(),
                ))
            }
            Some(id) => Some(id.to_string()),
            None => default_client_id
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_string),
        };
        let clean_session = match options.get("mqtt_clean_session") {
            None => client_id.is_none() || qos == 0,
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(Error::Config(format!(
                        "option 'mqtt_clean_session' must be true or false, not '{v}'"
                    )))
                }
            },
        };
        if !clean_session && client_id.is_none() {
            return Err(Error::Config(
                "option 'mqtt_clean_session' = false needs 'mqtt_client_id': a session can only \
                 be resumed under a stable client id"
                    .into(),
            ));
        }
        Ok(MqttConfig {
            url,
            client_id: client_id.unwrap_or_else(generated_client_id),
            qos,
            clean_session,
        })
    }
}

/// The host and port in a broker URL: `mqtt://host:port`, `tcp://host:port`, `host:port` or
/// `host` (port 1883); IPv6 hosts go in brackets.
pub fn parse_broker(url: &str) -> Result<(String, u16)> {
    let bad = |why: &str| Error::Config(format!("bad MQTT broker '{url}': {why}"));
    let address = match url.split_once("://") {
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "mqtt" | "tcp" => rest,
            "mqtts" | "ssl" | "ws" | "wss" => {
                return Err(bad(&format!(
                    "'{scheme}://' is not supported yet, only plain TCP (mqtt://host:port)"
                )))
            }
            _ => return Err(bad(&format!("unknown scheme '{scheme}://'"))),
        },
        None => url,
    };
    let address = address.strip_suffix('/').unwrap_or(address);
    if address.contains(['/', '?', '@']) {
        return Err(bad(
            "expected host:port, with no path, query or credentials",
        ));
    }
    let (host, port) = if let Some(bracketed) = address.strip_prefix('[') {
        let (host, rest) = bracketed
            .split_once(']')
            .ok_or_else(|| bad("unclosed '[' around an IPv6 address"))?;
        match rest {
            "" => (host, None),
            _ => match rest.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(bad("expected ':port' after ']'")),
            },
        }
    } else {
        match address.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        None => 1883,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(bad(&format!("'{p}' is not a port"))),
        },
    };
    Ok((host.to_string(), port))
}

/// A client id no other source uses: process, clock and a counter.
fn generated_client_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "eddy-{}-{nanos:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> Options {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn config_error(pairs: &[(&str, &str)]) -> String {
        match MqttConfig::from_options(&options(pairs)) {
            Err(Error::Config(e)) => e,
            other => panic!("expected a config error for {pairs:?}, got {other:?}"),
        }
    }

    #[test]
    fn broker_urls() {
        let ok = |url: &str| parse_broker(url).unwrap();
        assert_eq!(ok("mqtt://127.0.0.1:1884"), ("127.0.0.1".into(), 1884));
        assert_eq!(ok("tcp://broker:1"), ("broker".into(), 1));
        assert_eq!(ok("broker"), ("broker".into(), 1883));
        assert_eq!(ok("mqtt://broker/"), ("broker".into(), 1883));
        assert_eq!(ok("[::1]:1885"), ("::1".into(), 1885));
        for bad in [
            "mqtts://b:8883",
            "http://b",
            "b:port",
            "b:0",
            ":1883",
            "b:1883/x",
            "[::1",
        ] {
            let e = parse_broker(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn options_with_a_client_id_hold_a_persistent_session() {
        let config = MqttConfig::from_options(&options(&[
            ("mqtt_broker", "mqtt://b:1"),
            ("mqtt_client_id", "q1"),
            ("format", "json"),
        ]))
        .unwrap();
        assert_eq!(config, MqttConfig::new("mqtt://b:1", "q1"));
        let qos0 = MqttConfig::from_options(&options(&[
            ("mqtt_broker", "b"),
            ("mqtt_client_id", "q1"),
            ("mqtt_qos", "0"),
        ]))
        .unwrap();
        assert!(qos0.clean_session);
    }

    #[test]
    fn a_default_client_id_holds_a_persistent_session_unless_one_is_given() {
        let broker = options(&[("mqtt_broker", "b"), ("mqtt_topic", "a/+,b/#")]);
        let config = MqttConfig::from_options_or_client_id(&broker, "eddy-7").unwrap();
        assert_eq!(config, MqttConfig::new("b", "eddy-7"));
        let mut given = broker.clone();
        given.insert("mqtt_client_id".into(), "mine".into());
        let config = MqttConfig::from_options_or_client_id(&given, "eddy-7").unwrap();
        assert_eq!(config, MqttConfig::new("b", "mine"));
    }

    #[test]
    fn options_without_a_client_id_get_a_fresh_one_and_a_clean_session() {
        let a = MqttConfig::from_options(&options(&[("mqtt_broker", "b")])).unwrap();
        let b = MqttConfig::from_options(&options(&[("mqtt_broker", "b")])).unwrap();
        assert!(a.clean_session);
        assert_eq!(a.qos, 1);
        assert_ne!(a.client_id, b.client_id);
    }

    #[test]
    fn bad_options_name_the_key() {
        assert!(config_error(&[]).contains("mqtt_broker"));
        assert!(config_error(&[("mqtt_broker", "b"), ("mqtt_qos", "3")]).contains("'mqtt_qos'"));
        assert!(config_error(&[("mqtt_broker", "b"), ("mqtt_qoss", "1")]).contains("mqtt_qoss"));
        assert!(
            config_error(&[("mqtt_broker", "b"), ("mqtt_client_id", " ")])
                .contains("mqtt_client_id")
        );
        assert!(
            config_error(&[("mqtt_broker", "b"), ("mqtt_clean_session", "false")])
                .contains("mqtt_client_id")
        );
        assert!(
            config_error(&[("mqtt_broker", "b"), ("mqtt_clean_session", "no")])
                .contains("mqtt_clean_session")
        );
        assert!(config_error(&[("mqtt_broker", "https://b")]).contains("https://b"));
    }
}
