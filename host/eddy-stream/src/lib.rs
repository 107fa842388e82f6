//! Eddy's continuous-query engine: ksqlDB-style streams, tables, persistent and push queries,
//! windows, stream–table and stream–stream joins, on DataFusion, reading and writing through
//! [`eddy_connector`] sources and sinks.

mod aggregate;
mod changes;
mod checkpoint;
mod connectors;
mod direct;
mod engine;
mod format;
mod input;
mod join_order;
mod join_within;
mod log;
mod pipeline;
mod progress;
mod provider;
mod query;
mod repartition;
mod reused_plan;
#[cfg(test)]
mod robustness;
mod statement;
mod structs;
mod table_fill;
mod table_join;
mod type_check;
mod window;

pub use checkpoint::StateStore;
pub use direct::{StreamWriters, WriteError};
pub use engine::{
    Engine, EngineConfig, KafkaSettings, Output, PullQuery, PushQuery, QueryInfo, RelationInfo,
    Started,
};
pub use format::common::{display_name, type_name_in, Spelling};
pub use format::json::{encode, with_display_names, BadEvent, Decoder};
pub use log::{Log, DEFAULT_RETAINED_ROWS};
pub use statement::{parse, Column, Kind, Statement};
pub use type_check::TypeError;

/// What can go wrong running a statement or a query.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The statement does not parse.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// It parses but Eddy cannot run it (yet); the message says what to write instead.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// It names a stream, table or query that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It names something that already exists, or options that do not fit.
    #[error("{0}")]
    Catalog(String),
    /// Planning failed.
    #[error("{0}")]
    Plan(String),
    /// ksqlDB refuses it for its types: a comparison across type families, say.
    #[error(transparent)]
    Type(Box<TypeError>),
    /// A function statement or DataFusion query failed in the SQL session.
    #[error(transparent)]
    Sql(#[from] eddy_sql::Error),
    /// DataFusion failed.
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// Arrow failed.
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A source or sink failed.
    #[error(transparent)]
    Connector(#[from] eddy_connector::Error),
    /// Checkpointed state could not be written, read or restored.
    #[error("state: {0}")]
    State(String),
}

impl From<Box<TypeError>> for Error {
    fn from(e: Box<TypeError>) -> Error {
        Error::Type(e)
    }
}

impl Error {
    /// A syntax error at a token, in the one shape every Eddy statement's syntax errors have
    /// (`syntax error at line L, column C: expected X, found 'Y'`), so it is `eddy_sql`'s.
    pub(crate) fn syntax_at(
        token: Option<&datafusion::sql::sqlparser::tokenizer::TokenWithSpan>,
        last: Option<&datafusion::sql::sqlparser::tokenizer::TokenWithSpan>,
        expected: &str,
    ) -> Error {
        let ((line, column), found) = match (token, last) {
            (Some(t), _) => (
                (t.span.start.line, t.span.start.column),
                format!("'{}'", t.token),
            ),
            (None, Some(l)) => (
                (l.span.end.line, l.span.end.column),
                "the end of the statement".to_string(),
            ),
            (None, None) => ((1, 1), "an empty statement".to_string()),
        };
        Error::Sql(eddy_sql::Error::Syntax {
            line,
            column,
            message: format!("expected {expected}, found {found}"),
        })
    }
}

impl Error {
    /// A statement the tokenizer refused (an unterminated string, say), in the same shape.
    pub(crate) fn tokenizer(e: datafusion::sql::sqlparser::tokenizer::TokenizerError) -> Error {
        Error::Sql(eddy_sql::Error::Syntax {
            line: e.location.line.max(1),
            column: e.location.column.max(1),
            message: e.message,
        })
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
