//! The keys a `WITH (…)` clause takes, checked when the statement is created: an unknown key,
//! a key of another connector or a malformed value is refused then, and an unknown key's error
//! names every key that is accepted. One table per statement kind serves the check and the
//! error, so the two cannot drift apart.

use eddy_connector::Options;

use crate::{Error, Result};

/// What a source's `WITH` key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Connector {
    /// Any source: formats, event time, dead letters.
    Any,
    /// A source reading a Kafka topic.
    Kafka,
    /// A source subscribed to MQTT topics.
    Mqtt,
    /// The built-in generator.
    Generator,
}

impl Connector {
    fn describe(self) -> &'static str {
        match self {
            Connector::Any => "any source",
            Connector::Kafka => "Kafka (kafka_topic)",
            Connector::Mqtt => "MQTT (mqtt_topic)",
            Connector::Generator => "the generator (generator)",
        }
    }
}

/// The keys `CREATE STREAM|TABLE name (columns) WITH (…)` takes, with what they belong to.
/// `format` is taken apart first (see [`split_format`]).
pub(super) const SOURCE_KEYS: &[(&str, Connector)] = &[
    ("value_format", Connector::Any),
    ("value_delimiter", Connector::Any),
    ("wrap_single_value", Connector::Any),
    ("timestamp", Connector::Any),
    ("timestamp_format", Connector::Any),
    ("dead_letter_topic", Connector::Any),
    ("kafka_topic", Connector::Kafka),
    ("partitions", Connector::Kafka),
    ("key_format", Connector::Kafka),
    ("key_delimiter", Connector::Kafka),
    ("window_type", Connector::Kafka),
    ("window_size", Connector::Kafka),
    ("mqtt_topic", Connector::Mqtt),
    ("mqtt_broker", Connector::Mqtt),
    ("mqtt_client_id", Connector::Mqtt),
    ("mqtt_qos", Connector::Mqtt),
    ("mqtt_clean_session", Connector::Mqtt),
    ("generator", Connector::Generator),
    ("rate", Connector::Generator),
    ("seed", Connector::Generator),
    ("cars", Connector::Generator),
    ("max_events", Connector::Generator),
    ("anomaly_rate", Connector::Generator),
];

/// The keys `CREATE STREAM|TABLE name WITH (…) AS SELECT …` takes, `format` taken apart.
pub(super) const QUERY_KEYS: &[&str] = &[
    "kafka_topic",
    "partitions",
    "value_format",
    "value_delimiter",
    "wrap_single_value",
    "key_format",
    "key_delimiter",
    "timestamp",
    "on_error",
];

/// Takes ksqlDB's `format` apart into `value_format` and, when `keyed` (the relation has key
/// columns), `key_format`; refused beside either, with ksqlDB's message.
pub(super) fn split_format(options: &mut Options, keyed: bool) -> Result<()> {
    let Some(format) = options.remove("format") else {
        return Ok(());
    };
    for (given, name) in [
        ("key_format", "KEY_FORMAT"),
        ("value_format", "VALUE_FORMAT"),
    ] {
        if options.contains_key(given) {
            return Err(Error::Catalog(format!(
                "Cannot supply both '{name}' and 'FORMAT' properties, as 'FORMAT' sets both key \
                 and value formats. Either use just 'FORMAT', or use 'KEY_FORMAT' and \
                 'VALUE_FORMAT'."
            )));
        }
    }
    if keyed {
        options.insert("key_format".into(), format.clone());
    }
    options.insert("value_format".into(), format);
    Ok(())
}

/// Which connector a source's options choose; refuses unknown keys, keys of another connector
/// and more than one connector.
pub(super) fn source_connector(options: &Options) -> Result<Connector> {
    let chosen: Vec<Connector> = [
        ("kafka_topic", Connector::Kafka),
        ("mqtt_topic", Connector::Mqtt),
        ("generator", Connector::Generator),
    ]
    .into_iter()
    .filter(|(key, _)| options.contains_key(*key))
    .map(|(_, c)| c)
    .collect();
    if chosen.len() > 1 {
        return Err(Error::Catalog(
            "give one of kafka_topic, mqtt_topic or generator".into(),
        ));
    }
    // Without one of them, rows come from INSERT INTO: only the keys of any source apply.
    let chosen = chosen.first().copied().unwrap_or(Connector::Any);
    for key in options.keys() {
        let Some((_, belongs)) = SOURCE_KEYS.iter().find(|(k, _)| k == key) else {
            return Err(unknown(
                key,
                "a stream or table with columns",
                &source_key_list(),
            ));
        };
        if *belongs != Connector::Any && *belongs != chosen {
            return Err(Error::Catalog(format!(
                "option '{key}' applies to {}, and this relation reads {}",
                belongs.describe(),
                match chosen {
                    Connector::Any => "memory (rows come from INSERT INTO)",
                    other => other.describe(),
                }
            )));
        }
    }
    Ok(chosen)
}

/// Refuses keys a query's `WITH` does not take, and `partitions` without a topic to create.
pub(super) fn check_query(options: &Options) -> Result<()> {
    for key in options.keys() {
        if !QUERY_KEYS.contains(&key.as_str()) {
            return Err(unknown(key, "a query", &QUERY_KEYS.join(", ")));
        }
    }
    if options.contains_key("partitions") && !options.contains_key("kafka_topic") {
        return Err(Error::Catalog(
            "option 'partitions' sets how many partitions the output topic is created with: give \
             kafka_topic too"
                .into(),
        ));
    }
    partitions(options)?;
    Ok(())
}

/// `partitions`: how many partitions a topic Eddy creates gets, a whole number of at least 1.
pub(super) fn partitions(options: &Options) -> Result<Option<i32>> {
    options
        .get("partitions")
        .map(|v| match v.trim().parse::<i32>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(Error::Catalog(format!(
                "option 'partitions' must be a whole number of at least 1, found '{v}'"
            ))),
        })
        .transpose()
}

fn unknown(key: &str, what: &str, accepted: &str) -> Error {
    Error::Catalog(format!(
        "unknown option '{key}' in WITH: {what} takes {accepted}"
    ))
}

/// Every source key, grouped by what it belongs to.
fn source_key_list() -> String {
    [
        Connector::Any,
        Connector::Kafka,
        Connector::Mqtt,
        Connector::Generator,
    ]
    .iter()
    .map(|c| {
        let keys: Vec<&str> = SOURCE_KEYS
            .iter()
            .filter(|(_, b)| b == c)
            .map(|(k, _)| *k)
            .collect();
        format!("{} for {}", keys.join(", "), c.describe())
    })
    .collect::<Vec<_>>()
    .join("; ")
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

    #[test]
    fn an_unknown_source_key_names_every_accepted_key() {
        let e = source_connector(&options(&[("kafka_topc", "x")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "unknown option 'kafka_topc' in WITH: a stream or table with columns takes \
             value_format, value_delimiter, wrap_single_value, timestamp, timestamp_format, \
             dead_letter_topic for any source; \
             kafka_topic, partitions, key_format, key_delimiter, window_type, window_size for Kafka \
             (kafka_topic); \
             mqtt_topic, mqtt_broker, mqtt_client_id, mqtt_qos, mqtt_clean_session for MQTT \
             (mqtt_topic); generator, rate, seed, cars, max_events, anomaly_rate for the \
             generator (generator)"
        );
        for (key, _) in SOURCE_KEYS {
            assert!(e.contains(key), "{key} missing from: {e}");
        }
    }

    #[test]
    fn a_key_of_another_connector_is_refused() {
        let e = source_connector(&options(&[("kafka_topic", "t"), ("rate", "10")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "option 'rate' applies to the generator (generator), and this relation reads Kafka \
             (kafka_topic)"
        );
        let e = source_connector(&options(&[("partitions", "2")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "option 'partitions' applies to Kafka (kafka_topic), and this relation reads memory \
             (rows come from INSERT INTO)"
        );
        assert_eq!(
            source_connector(&options(&[("value_format", "json"), ("mqtt_topic", "a")])).unwrap(),
            Connector::Mqtt
        );
    }

    #[test]
    fn query_options_are_checked() {
        let e = check_query(&options(&[("kafka_topik", "t")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "unknown option 'kafka_topik' in WITH: a query takes kafka_topic, partitions, \
             value_format, value_delimiter, wrap_single_value, key_format, key_delimiter, timestamp, \
             on_error"
        );
        for bad in ["0", "-1", "two", "1.5", ""] {
            let e = check_query(&options(&[("kafka_topic", "t"), ("partitions", bad)]))
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                format!("option 'partitions' must be a whole number of at least 1, found '{bad}'")
            );
        }
        assert!(check_query(&options(&[("partitions", "2")]))
            .unwrap_err()
            .to_string()
            .contains("give kafka_topic too"));
        check_query(&options(&[("kafka_topic", "t"), ("partitions", " 3 ")])).unwrap();
    }
}
