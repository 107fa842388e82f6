//! The `eddy` binary end to end: one test binary, because each one links the whole host
//! (DataFusion, wasmtime, tract, rdkafka) and five of them filled CI's disk.

mod cli;
mod kafka_restart;
mod mqtt_proxy;
mod server;
mod training;
