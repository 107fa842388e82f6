//! `eddy-bench`: Eddy's benchmarks, one subcommand each, kept out of the `eddy` binary so that it
//! does not link tract, a second MQTT client or the test harness for them.
//!
//! Run them from a release build: `cargo run --release -p eddy-bench -- <benchmark> [flags]`.
//! Components default to `udfs/target/components/` of the checkout this was built from, and are
//! built from `udfs/` when missing. `stream` and `checkpoint` start the test harness's tansu
//! (`.tools/bin/tansu` from ./setup.sh, or `$EDDY_TANSU`) unless given `--bootstrap-servers`;
//! `mqtt` needs a Kafka at `--bootstrap-servers` and starts the harness's mosquitto.

mod anomaly;
mod checkpoint;
mod common;
mod fanout;
mod langs;
mod mqtt;
mod state;
mod stream;
mod swap;
mod udf;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use eddy_udf_host::{Limits, UdfRuntime};

/// Eddy's benchmarks.
#[derive(Parser)]
#[command(name = "eddy-bench", version)]
struct Cli {
    /// Where compiled components are cached (default: $EDDY_CACHE_DIR or ~/.cache/eddy, as for
    /// `eddy`).
    #[arg(long, global = true)]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The same f64 UDF, native and as a wasm component, over the same rows.
    Udf(udf::UdfBench),
    /// The same f64 UDF in Rust, Python and JavaScript against native DataFusion.
    Langs(langs::LangsBench),
    /// The anomaly model in wasm against tract run natively.
    Anomaly(anomaly::AnomalyBench),
    /// Events/s through a continuous query with a wasm UDF (generator, Kafka), and latency.
    Stream(stream::StreamBench),
    /// Hot-swap latency, warm instantiate time, and what timeouts cost in throughput.
    Swap(swap::SwapBench),
    /// QoS 1 publishes/s and latency through the MQTT endpoint into Kafka, against mosquitto.
    Mqtt(mqtt::MqttBench),
    /// Push-query fan-out over HTTP: rows/s per client and the p99 the HTTP hop adds.
    Fanout(fanout::FanoutBench),
    /// Memory and events/s of a windowed aggregation over many groups, against a filter.
    State(state::StateBench),
    /// Events/s with checkpoints against without, and restore time, for growing numbers of keys.
    Checkpoint(checkpoint::CheckpointBench),
}

/// The compile cache: the same default as `eddy`'s, so components compiled by one are cached
/// for the other.
fn cache_dir(cli: Option<PathBuf>) -> PathBuf {
    eddy_udf_host::cache_dir(cli)
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,eddy::udf=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let cache_dir = cache_dir(cli.cache_dir);
    let runtime = || UdfRuntime::new(Some(cache_dir.clone()), Limits::default());
    match cli.command {
        Command::Udf(ref args) => udf::run(args, runtime()?).await,
        Command::Langs(ref args) => langs::run(args).await,
        Command::Anomaly(ref args) => anomaly::run(args, runtime()?).await,
        Command::Stream(ref args) => stream::run(args, runtime()?).await,
        Command::Swap(ref args) => swap::run(args, cache_dir.clone()).await,
        Command::Mqtt(ref args) => mqtt::run(args).await,
        Command::Fanout(ref args) => fanout::run(args, runtime()?).await,
        Command::State(ref args) => state::run(args, runtime()?, &cache_dir).await,
        Command::Checkpoint(ref args) => checkpoint::run(args, runtime()?).await,
    }
}
