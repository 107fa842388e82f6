//! The catalog: streams and tables, the queries running over them, and dropping either.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use eddy_connector::Options;
use eddy_generator::GeneratorConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::task::Stats;
use super::{Engine, Output};
use crate::log::Log;
use crate::pipeline::HistogramSnapshot;
use crate::provider::TableState;
use crate::statement::Kind;
use crate::{Error, Result};

/// How long TERMINATE and shutdown wait for a query to flush, checkpoint and stop before
/// aborting its task: a query stuck on a sink or source that stopped answering must not hold
/// up the engine, and its state resumes from its last checkpoint.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A stream or table, as `SHOW STREAMS`/`DESCRIBE` describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationInfo {
    /// Its name.
    pub name: String,
    /// Stream or table.
    pub kind: Kind,
    /// Where its rows come from: `memory`, `kafka:topic`, `mqtt:filters`, `generator:car_sensor`
    /// or `query ID`.
    pub source: String,
    /// The Kafka topic it reads or writes, if any.
    pub topic: Option<String>,
    /// The value format (`JSON`, `DELIMITED` or `KAFKA`).
    pub value_format: String,
    /// Columns and their SQL types, `rowtime` included for streams.
    pub columns: Vec<(String, String)>,
    /// Its columns as Arrow fields (`columns` as types, for DESCRIBE's nested schemas).
    pub schema: SchemaRef,
    /// Names of its KEY / PRIMARY KEY columns.
    pub keys: Vec<String>,
    /// Whether it is a windowed table written by a query.
    pub windowed: bool,
    /// The statement that created it.
    pub sql: String,
    /// The query writing it, for derived relations.
    pub writer: Option<String>,
}

/// A running query, as `SHOW QUERIES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryInfo {
    /// Its id, for `TERMINATE`.
    pub id: String,
    /// The statement.
    pub sql: String,
    /// What it writes (`None` for push queries).
    pub sink: Option<String>,
    /// The streams and tables it reads (its source, joined tables, both streams of a join).
    pub reads: Vec<String>,
    /// Events read.
    pub events_in: u64,
    /// Rows written.
    pub rows_out: u64,
    /// Events that could not be decoded.
    pub bad_events: u64,
    /// Events dropped because their windows had closed.
    pub late_events: u64,
    /// Events in batches that failed (a UDF trapped, a cast failed).
    pub failed_events: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Messages waiting in its source (Kafka consumer lag; unread batches of an in-memory
    /// stream), as of its last step; `None` when the source cannot tell.
    pub lag: Option<u64>,
    /// Wall time to run each input batch through its plans (decoding and writing output
    /// excluded; retries isolating failed rows included).
    pub batch_duration: HistogramSnapshot,
}

#[derive(Debug, Clone)]
pub(super) enum Spec {
    Memory,
    Kafka {
        topic: String,
    },
    Mqtt {
        filters: Vec<String>,
    },
    Generator {
        config: GeneratorConfig,
        rate: Option<f64>,
    },
    Derived {
        query: String,
    },
}

pub(super) struct Relation {
    pub(super) kind: Kind,
    pub(super) keys: Vec<String>,
    pub(super) schema: SchemaRef,
    pub(super) spec: Spec,
    pub(super) options: Options,
    pub(super) log: Option<Arc<Log>>,
    pub(super) table: Option<Arc<TableState>>,
    pub(super) timestamp: Option<usize>,
    pub(super) sql: String,
    /// Whether it is a table of windows (keyed by key and window).
    pub(super) windowed: bool,
    /// For a table a query writes: whether its log carries deletions (rows with only their
    /// key), so that queries can follow its changes as a topic's.
    pub(super) logs_deletions: bool,
    /// `CREATE SOURCE STREAM|TABLE`: no INSERT into it, and no CREATE OR REPLACE of it.
    pub(super) read_only: bool,
}

pub(super) struct Running {
    pub(super) sql: String,
    /// Scalar functions its plans call, so a function in use is not dropped by mistake.
    pub(super) functions: std::collections::BTreeSet<String>,
    pub(super) sink: Option<String>,
    pub(super) reads: Vec<String>,
    pub(super) stats: Arc<Stats>,
    pub(super) stop: watch::Sender<bool>,
    pub(super) handle: JoinHandle<()>,
    /// The in-memory logs it reads, which `settle` waits for it to consume.
    pub(super) logs: Vec<Arc<Log>>,
    pub(super) tables: Vec<String>,
}

/// ksqlDB's refusal to replace a `SOURCE` stream or table, or to replace one by it.
pub(super) fn replacing_a_source(kind: Kind, name: &str) -> Error {
    Error::Catalog(format!(
        "Cannot add {0} '{1}': CREATE OR REPLACE is not supported on source {0}s.",
        kind.as_str(),
        name.to_uppercase()
    ))
}

impl Engine {
    /// Forgets queries that ended by themselves (push queries past their LIMIT, bounded inputs).
    pub(super) fn reap(&mut self) {
        let done: Vec<String> = self
            .queries
            .iter()
            .filter(|(_, q)| q.handle.is_finished() && q.sink.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in done {
            if let Some(q) = self.queries.remove(&id) {
                self.drop_tables(&q.tables);
            }
        }
    }

    /// Removes a stream or table from the catalog and from SQL.
    pub(super) fn forget(&mut self, name: &str) -> Result<()> {
        if self.relations.remove(name).is_some() {
            self.sync_writers();
            self.ctx().deregister_table(name)?;
        }
        Ok(())
    }

    pub(super) fn drop_tables(&self, tables: &[String]) {
        for t in tables {
            let _ = self.ctx().deregister_table(t.as_str());
        }
    }

    pub(super) fn check_new_name(&self, name: &str, or_replace: bool) -> Result<()> {
        if let Some(existing) = self.relations.get(name) {
            if existing.read_only && or_replace {
                return Err(replacing_a_source(existing.kind, name));
            }
            if !or_replace {
                return Err(Error::Catalog(format!(
                    "'{name}' already exists: DROP it first, or use CREATE OR REPLACE"
                )));
            }
            if let Some((id, _)) = self
                .queries
                .iter()
                .find(|(_, q)| q.reads.iter().any(|r| r == name) || q.sink.as_deref() == Some(name))
            {
                return Err(Error::Catalog(format!(
                    "cannot replace '{name}': query {id} uses it; TERMINATE {id} first"
                )));
            }
        } else if self.ctx().table_exist(name).unwrap_or(false) {
            return Err(Error::Catalog(format!(
                "'{name}' is already a table of the SQL session"
            )));
        }
        Ok(())
    }

    pub(super) fn new_id(&mut self, prefix: &str, name: &str) -> String {
        let id = format!("{prefix}_{}_{}", name.to_uppercase(), self.next_id);
        self.next_id += 1;
        id
    }

    pub(super) async fn terminate(&mut self, id: Option<String>) -> Result<Output> {
        let ids: Vec<String> = match &id {
            Some(id) => {
                let found = self
                    .queries
                    .keys()
                    .find(|k| k.eq_ignore_ascii_case(id))
                    .cloned();
                match found {
                    Some(k) if k.starts_with("SOURCE_") => {
                        return Err(Error::Catalog(format!(
                            "{k} keeps a table up to date: DROP the table instead"
                        )))
                    }
                    Some(k) => vec![k],
                    None => {
                        return Err(Error::NotFound(format!(
                            "query '{id}' does not exist (SHOW QUERIES lists them)"
                        )))
                    }
                }
            }
            None => self.queries.keys().cloned().collect(),
        };
        for id in &ids {
            if let Some(mut q) = self.queries.remove(id) {
                let _ = q.stop.send(true);
                if tokio::time::timeout(STOP_WAIT, &mut q.handle)
                    .await
                    .is_err()
                {
                    tracing::warn!(query = %id, "did not stop within {STOP_WAIT:?}: aborted");
                    q.handle.abort();
                }
                self.drop_tables(&q.tables);
            }
        }
        Ok(Output::Message(format!(
            "terminated {}",
            if ids.is_empty() {
                "nothing".to_string()
            } else {
                ids.join(", ")
            }
        )))
    }

    pub(super) fn drop_relation(
        &mut self,
        kind: Kind,
        name: &str,
        if_exists: bool,
    ) -> Result<Output> {
        let Some(r) = self.relations.get(name) else {
            if if_exists {
                return Ok(Output::Message(format!(
                    "{} {name} does not exist",
                    kind.as_str()
                )));
            }
            return Err(Error::NotFound(format!(
                "{} '{name}' does not exist (SHOW {}S lists them)",
                kind.as_str(),
                kind.as_str().to_uppercase()
            )));
        };
        if r.kind != kind {
            return Err(Error::Catalog(format!(
                "'{name}' is a {}: DROP {} {name}",
                r.kind.as_str(),
                r.kind.as_str().to_uppercase()
            )));
        }
        if let Some((id, _)) = self.queries.iter().find(|(id, q)| {
            !id.starts_with("SOURCE_")
                && (q.reads.iter().any(|r| r == name) || q.sink.as_deref() == Some(name))
        }) {
            return Err(Error::Catalog(format!(
                "cannot drop '{name}': query {id} uses it; TERMINATE {id} first"
            )));
        }
        let sources: Vec<String> = self
            .queries
            .iter()
            .filter(|(id, q)| id.starts_with("SOURCE_") && q.sink.as_deref() == Some(name))
            .map(|(id, _)| id.clone())
            .collect();
        for id in sources {
            if let Some(q) = self.queries.remove(&id) {
                let _ = q.stop.send(true);
                q.handle.abort();
            }
        }
        self.forget(name)?;
        Ok(Output::Message(format!("{} {name} dropped", kind.as_str())))
    }
}

/// The schema a source's events decode into: the relation's (streams end in `rowtime`).
impl crate::query::Changelog {
    /// The columns of table `r`, whose rows a query reads as changes.
    pub(super) fn of(r: &Relation) -> crate::query::Changelog {
        crate::query::Changelog {
            keys: r.keys.clone(),
            values: r
                .schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                // A table written by a query has its rowtime, which is not part of its value.
                .filter(|n| !r.keys.contains(n) && n != "rowtime")
                .collect(),
        }
    }
}

pub(super) fn decoded_schema(r: &Relation) -> SchemaRef {
    // A table written by a query has its rowtime already.
    if r.kind == Kind::Table && !matches!(r.spec, Spec::Derived { .. }) {
        let mut fields: Vec<Field> = r
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(
            "rowtime",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ));
        Arc::new(Schema::new(fields))
    } else {
        r.schema.clone()
    }
}

pub(super) fn describe_source(r: &Relation) -> String {
    match &r.spec {
        Spec::Memory => "memory".to_string(),
        Spec::Kafka { topic } => format!("kafka:{topic}"),
        Spec::Mqtt { filters } => format!("mqtt:{}", filters.join(",")),
        Spec::Generator { .. } => "generator:car_sensor".to_string(),
        Spec::Derived { query } => match r.options.get("kafka_topic") {
            Some(t) => format!("query {query} -> kafka:{t}"),
            None => format!("query {query}"),
        },
    }
}
