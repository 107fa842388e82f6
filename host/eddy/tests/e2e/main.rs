//! The `eddy` binary end to end: one test binary, because each one links the whole host
//! (DataFusion, wasmtime, tract, rdkafka) and five of them filled CI's disk.

mod cli;
mod kafka_restart;
mod mqtt_direct;
mod mqtt_guard;
mod mqtt_proxy;
mod mqtt_scale;
mod reaped;
mod rebalance;
mod s3;
// `eddy sql`'s prompt helpers, tested here: the `eddy` bin has no test binary of its own.
#[allow(dead_code)]
#[path = "../../src/repl.rs"]
mod repl;
mod security;
mod server;
mod server_http;
mod training;
