//! Logging into the host's log; each line is tagged there with the component's functions.

use crate::bindings::eddy::udf::host_log::{self, Level};

/// Logs at trace level.
pub fn trace(message: &str) {
    host_log::log(Level::Trace, message);
}

/// Logs at debug level.
pub fn debug(message: &str) {
    host_log::log(Level::Debug, message);
}

/// Logs at info level.
pub fn info(message: &str) {
    host_log::log(Level::Info, message);
}

/// Logs at warn level.
pub fn warn(message: &str) {
    host_log::log(Level::Warn, message);
}

/// Logs at error level.
pub fn error(message: &str) {
    host_log::log(Level::Error, message);
}
