//! Errors of loading and calling UDF components.

use std::path::PathBuf;

/// What can go wrong with a UDF component.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The bytes are not a valid WebAssembly component.
    #[error("{origin} is not a valid WebAssembly component: {message}")]
    NotAComponent {
        /// Where the bytes came from.
        origin: String,
        /// wasmtime's explanation.
        message: String,
    },
    /// The component does not implement Eddy's UDF world.
    #[error("{origin} does not implement the eddy:udf/scalar-udf@0.1.0 world: {message}")]
    WrongWorld {
        /// Where the bytes came from.
        origin: String,
        /// wasmtime's explanation.
        message: String,
    },
    /// The component could not be instantiated, e.g. its initial memory exceeds its limit.
    #[error("{origin} cannot start: {message}")]
    Instantiate {
        /// Where the bytes came from.
        origin: String,
        /// What stopped it.
        message: String,
    },
    /// The component's self-description is unusable.
    #[error("{origin}: bad function description: {message}")]
    BadDescription {
        /// Where the bytes came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A capture file or directory could not be used.
    #[error("capture {path}: {message}")]
    Capture {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Setting up the wasm engine failed.
    #[error("wasm engine: {0}")]
    Engine(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
