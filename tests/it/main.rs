//! Integration tests in Rust, for what `.slt` files cannot express: versions, hashes, caches,
//! counters, and components made on the fly.

mod components;
mod functions;
