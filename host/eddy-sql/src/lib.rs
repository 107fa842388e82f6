//! Eddy's SQL session: DataFusion for queries and expressions, plus the statements DataFusion
//! lacks — `CREATE [OR REPLACE] FUNCTION … FROM … [WITH (limits | shadow)]`, `ALTER FUNCTION …
//! PROMOTE | ROLLBACK | DROP SHADOW`, `DROP FUNCTION`, `SHOW FUNCTIONS`, `DESCRIBE FUNCTION
//! [EXTENDED]` — and the built-in `car_sensor(rows, seed, cars)` source.

mod access;
mod functions;
mod generator;
mod query;
mod rollout;
mod session;
mod split;
mod statement;
mod udf_dir;

pub use access::{Access, FileAccess};
/// Set in a continuous query's config, so its UDF calls know the query (shadows count per query).
pub use eddy_udf_host::QueryId;
pub use functions::{explode_as_unnest, parse_timestamp, quote_time_units, rewrite_lambdas};
pub use query::{Budget, Query};
pub use session::{Output, Prepared, Session, WarmUp};
pub use split::split_statements;
pub use statement::{parse, parse_size, AlterAction, LimitOverrides, ShadowOptions, Statement};
pub use udf_dir::{DirLoad, DueLoad, UdfDir};

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
    /// The statement reaches further than this session allows (host files, settings, builds).
    #[error("{0}")]
    Refused(String),
    /// The query went over its memory or time budget and was cancelled.
    #[error("{0}")]
    Budget(String),
    /// DataFusion planning or execution failed.
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
