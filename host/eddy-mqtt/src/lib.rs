//! MQTT source for Eddy.
//!
//! [`MqttSource`] subscribes to topic filters on one broker and hands the engine every publish
//! it receives, numbered in arrival order. QoS 1 and 2 publishes are acknowledged to the broker
//! only once the engine commits them, and the session is persistent (a stable client id with
//! `clean_session = false`), so a message whose output never became durable is delivered again
//! after a crash, a restart or a lost connection. Built on rumqttc (MQTT 3.1.1).

mod config;
mod source;

pub use config::{parse_broker, MqttConfig};
pub use source::MqttSource;

/// The MQTT client this crate is built on, so tests and tools publish with the same version.
pub use rumqttc;
