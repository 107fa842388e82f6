//! Which Kafka topic an MQTT topic goes to: `kafka_topic:regex` rules, first match wins. In
//! direct mode the left-hand side names the host's target (an Eddy stream) instead.

use std::fmt;
use std::str::FromStr;

use regex::Regex;

use crate::Error;

/// One rule of a topic map, written `kafka_topic:regex` as in the Confluent MQTT Proxy's
/// `topic.regex.list`: MQTT topics the regex matches **in full** go to `kafka_topic`
/// (`temperature:.*temperature` sends `car/engine/temperature` to `temperature`).
#[derive(Clone)]
pub struct TopicRule {
    kafka_topic: String,
    pattern: String,
    regex: Regex,
}

impl TopicRule {
    /// A rule sending MQTT topics that `pattern` matches in full to `kafka_topic`.
    pub fn new(kafka_topic: &str, pattern: &str) -> Result<Self, Error> {
        let kafka_topic = kafka_topic.trim();
        if kafka_topic.is_empty() {
            return Err(Error::Config(format!(
                "topic rule {kafka_topic}:{pattern}: no Kafka topic before the ':'"
            )));
        }
        if !kafka_topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(Error::Config(format!(
                "topic rule {kafka_topic}:{pattern}: {kafka_topic:?} is not a valid Kafka topic \
                 name (letters, digits, '.', '_', '-')"
            )));
        }
        // Java's `Matcher.matches()` (what the Confluent proxy uses) matches the whole input.
        let regex = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
            Error::Config(format!(
                "topic rule {kafka_topic}:{pattern}: bad regex: {e}"
            ))
        })?;
        Ok(TopicRule {
            kafka_topic: kafka_topic.to_string(),
            pattern: pattern.to_string(),
            regex,
        })
    }

    /// The Kafka topic records go to.
    pub fn kafka_topic(&self) -> &str {
        &self.kafka_topic
    }

    /// The regex as written (matched against the whole MQTT topic).
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Whether `mqtt_topic` matches this rule's regex in full.
    pub fn matches(&self, mqtt_topic: &str) -> bool {
        self.regex.is_match(mqtt_topic)
    }
}

impl fmt::Debug for TopicRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for TopicRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kafka_topic, self.pattern)
    }
}

impl FromStr for TopicRule {
    type Err = Error;

    /// Parses `kafka_topic:regex`; the first `:` separates them (Kafka topic names have none).
    fn from_str(rule: &str) -> Result<Self, Error> {
        let (topic, pattern) = rule.split_once(':').ok_or_else(|| {
            Error::Config(format!(
                "topic rule {rule:?}: expected kafka_topic:regex, e.g. temperature:.*temperature"
            ))
        })?;
        TopicRule::new(topic, pattern)
    }
}

/// Parses a comma-separated `topic.regex.list` (`t1:re1,t2:re2`). A regex that itself contains a
/// `,` cannot be written this way; give such rules one by one ([`TopicRule::from_str`]).
pub fn parse_rule_list(list: &str) -> Result<Vec<TopicRule>, Error> {
    list.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::parse)
        .collect()
}

/// The Kafka topic for `mqtt_topic`: the first rule that matches, or none.
pub fn route<'a>(rules: &'a [TopicRule], mqtt_topic: &str) -> Option<&'a str> {
    rules
        .iter()
        .find(|r| r.matches(mqtt_topic))
        .map(TopicRule::kafka_topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_rule_wins_and_regexes_match_in_full() {
        let rules =
            parse_rule_list("temperature:.*temperature, brakes:car/.*/brake.*,all:.*").unwrap();
        assert_eq!(route(&rules, "car/engine/temperature"), Some("temperature"));
        assert_eq!(route(&rules, "car/1/brake/pressure"), Some("brakes"));
        // Not a full match for the first two rules.
        assert_eq!(route(&rules, "car/engine/temperature/x"), Some("all"));
        let rules = parse_rule_list("temperature:.*temperature").unwrap();
        assert_eq!(route(&rules, "temperature/x"), None);
        assert_eq!(rules[0].to_string(), "temperature:.*temperature");
    }

    #[test]
    fn bad_rules_are_config_errors() {
        for rule in ["no-colon", ":.*", "bad topic:.*", "t:(unclosed"] {
            let error = rule.parse::<TopicRule>().unwrap_err();
            assert!(matches!(error, Error::Config(_)), "{rule}: {error}");
        }
        // The regex may contain ':' itself.
        let rule: TopicRule = "t:a:b".parse().unwrap();
        assert!(rule.matches("a:b"));
    }
}
