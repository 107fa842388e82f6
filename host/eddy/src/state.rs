//! Where `eddy run` and `eddy server` keep the checkpoints of stateful queries.

use anyhow::{Context, Result};
use eddy_stream::StateStore;

/// `--state-dir` and `--no-state`.
#[derive(clap::Args)]
pub(crate) struct StateArgs {
    /// Where stateful queries over Kafka or MQTT (aggregations, tables) checkpoint their state
    /// at each commit, with the offsets it reflects; a restart restores it from there. A local
    /// directory, or `s3://bucket/prefix` for an S3-compatible store (configured by the AWS_*
    /// environment variables: AWS_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_REGION, AWS_ALLOW_HTTP).
    #[arg(long, default_value = "eddy-state", env = "EDDY_STATE_DIR")]
    state_dir: String,
    /// Keep query state in memory only: after a restart, Kafka is replayed from the oldest
    /// offset that open windows need, and tables read from topics start empty.
    #[arg(long)]
    no_state: bool,
}

impl StateArgs {
    /// The store these arguments name, for deployment `service_id`.
    pub(crate) fn store(&self, service_id: &str) -> Result<Option<StateStore>> {
        if self.no_state {
            return Ok(None);
        }
        let store = StateStore::open(&self.state_dir, service_id)
            .with_context(|| format!("--state-dir {}", self.state_dir))?;
        Ok(Some(store))
    }
}
