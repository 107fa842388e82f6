//! The instant a DataFusion query must end by, carried to its UDF calls in the query's config:
//! a call then stops at whichever comes first, its own `timeout` or the query's deadline.

use std::any::Any;
use std::time::Instant;

use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::common::{plan_err, Result};

/// A query's deadline, set in its `ConfigOptions::extensions` before it is planned.
#[derive(Debug, Clone, Copy)]
pub struct QueryDeadline(pub Instant);

impl ConfigExtension for QueryDeadline {
    const PREFIX: &'static str = "eddy_query_deadline";
}

impl ExtensionOptions for QueryDeadline {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(*self)
    }

    // Set by the engine only: not a setting SQL can change, and not one SHOW lists.
    fn set(&mut self, key: &str, _value: &str) -> Result<()> {
        plan_err!("{key} is not a setting")
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        Vec::new()
    }
}
