//! What a query tells the UDF calls it makes, carried in its DataFusion config (the config a
//! call's `ScalarFunctionArgs` hold): its deadline, and the id of the continuous query.

use std::any::Any;
use std::time::Instant;

use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::common::{plan_err, Result};

/// A query's deadline: a call stops at whichever comes first, its own `timeout` or this.
#[derive(Debug, Clone, Copy)]
pub struct QueryDeadline(pub Instant);

/// The continuous query a call runs in (`CSAS_OUT_1`), so a shadow counts per query.
#[derive(Debug, Clone)]
pub struct QueryId(pub String);

/// Set by the engine only: not settings SQL can change, and not ones SHOW lists.
macro_rules! set_by_the_engine {
    ($type:ty, $prefix:literal) => {
        impl ConfigExtension for $type {
            const PREFIX: &'static str = $prefix;
        }

        impl ExtensionOptions for $type {
            fn as_any(&self) -> &dyn Any {
                self
            }

            fn as_any_mut(&mut self) -> &mut dyn Any {
                self
            }

            fn cloned(&self) -> Box<dyn ExtensionOptions> {
                Box::new(self.clone())
            }

            fn set(&mut self, key: &str, _value: &str) -> Result<()> {
                plan_err!("{key} is not a setting")
            }

            fn entries(&self) -> Vec<ConfigEntry> {
                Vec::new()
            }
        }
    };
}

set_by_the_engine!(QueryDeadline, "eddy_query_deadline");
set_by_the_engine!(QueryId, "eddy_query_id");
