//! Integration tests in Rust, for what `.slt` files cannot express: versions, hashes, caches,
//! counters, logs, concurrency, and components made on the fly.

mod anomaly;
mod components;
mod functions;
mod hot_swap;
mod kafka;
mod kafka_streams;
mod kafka_tables;
mod mqtt;
mod pipelines;
mod polyglot;
mod rollout;
mod sandbox;
