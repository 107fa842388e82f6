//! Eddy's SQL session: DataFusion for queries and expressions, plus the statements DataFusion
//! lacks — `CREATE [OR REPLACE] FUNCTION … FROM … [WITH (limits)]`, `DROP FUNCTION`, `SHOW FUNCTIONS`,
//! `DESCRIBE FUNCTION` — and the built-in `car_sensor(rows, seed, cars)` source.

mod generator;
mod session;
mod split;
mod statement;
mod udf_dir;

pub use session::{Output, Session};
pub use split::split_statements;
pub use statement::{parse, LimitOverrides, Statement};
pub use udf_dir::{DirLoad, UdfDir};

/// What can go wrong running a statement.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The statement does not parse.
    #[error("syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line within the statement.
        line: u64,
        /// 1-based column.
        column: u64,
        /// What was expected.
        message: String,
    },
    /// A function statement failed.
    #[error("{0}")]
    Function(String),
    /// Loading a UDF component failed.
    #[error(transparent)]
    Udf(#[from] eddy_udf_host::Error),
    /// Building a UDF crate failed.
    #[error(transparent)]
    Build(#[from] eddy_udf_build::Error),
    /// DataFusion planning or execution failed.
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
