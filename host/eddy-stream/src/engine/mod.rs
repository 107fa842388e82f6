//! The engine: a catalog of streams and tables, and the queries running over them.
//!
//! Each job lives in a module of its own: the catalog (`catalog`), sources created with
//! columns (`source`), queries created from a SELECT (`create_as`), what a query task is given
//! (`launch`) and how it runs (`task`), dead letters, PRINT, SHOW, and the checks on functions
//! in use. This module dispatches statements to them.

mod catalog;
mod create_as;
mod dead_letters;
mod functions;
mod insert;
mod launch;
mod options;
mod partitioned;
mod print;
mod show;
mod source;
mod task;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use tokio::sync::mpsc;

use crate::checkpoint::StateStore;
use crate::log::{Log, DEFAULT_RETAINED_ROWS};
use crate::statement::{parse, Kind, Statement};
use crate::{Error, Result};
use catalog::{describe_source, Relation, Running, Spec};
pub use catalog::{QueryInfo, RelationInfo};
use task::Stats;

/// How to reach Kafka.
#[derive(Debug, Clone, Default)]
pub struct KafkaSettings {
    /// `host:port[,host:port]`.
    pub bootstrap_servers: String,
    /// More librdkafka properties for every client.
    pub extra: BTreeMap<String, String>,
}

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Kafka, when streams use `kafka_topic`.
    pub kafka: Option<KafkaSettings>,
    /// Names this deployment: processes with the same id share consumer groups, and so split
    /// a query's partitions between them.
    pub service_id: String,
    /// How often a query flushes its sink and commits its source.
    pub commit_interval: Duration,
    /// Rows an in-memory stream keeps for pull queries and readers.
    pub retained_rows: usize,
    /// Most messages a query takes from a source in one step.
    pub max_batch: usize,
    /// Where stateful queries over Kafka or MQTT checkpoint their state; `None` keeps state in
    /// memory only (a restart then replays Kafka from the oldest offset open windows need).
    pub state: Option<StateStore>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            kafka: None,
            service_id: "eddy".into(),
            commit_interval: Duration::from_secs(1),
            retained_rows: DEFAULT_RETAINED_ROWS,
            max_batch: 8192,
            state: None,
        }
    }
}

/// What a statement produced.
pub enum Output {
    /// A result table.
    Rows {
        /// Its schema.
        schema: SchemaRef,
        /// Its rows.
        batches: Vec<RecordBatch>,
    },
    /// A confirmation.
    Message(String),
    /// A push query's rows, as they come.
    Push(PushQuery),
}

/// A statement made ready by [`Engine::start`].
pub enum Started {
    /// It ran.
    Done(Output),
    /// A DataFusion statement, to be run without the engine.
    Pull(PullQuery),
}

/// A pull query (or other DataFusion statement) that no longer needs the engine.
pub struct PullQuery {
    query: eddy_sql::Query,
    /// Queries whose in-memory input must be consumed first, so that the statements of one
    /// session take effect in order.
    settle: Vec<Settle>,
}

impl PullQuery {
    /// Its rows, as they are computed.
    pub async fn stream(self) -> Result<SendableRecordBatchStream> {
        settle(&self.settle, Duration::from_secs(10)).await;
        let stream = self.query.stream().await;
        stream.map_err(|e| without_planning_prefix(e.into()))
    }

    /// All its rows.
    pub async fn collect(self) -> Result<Output> {
        settle(&self.settle, Duration::from_secs(10)).await;
        let collected = self.query.collect().await;
        match collected.map_err(|e| without_planning_prefix(e.into()))? {
            eddy_sql::Output::Rows { schema, batches } => Ok(Output::Rows { schema, batches }),
            eddy_sql::Output::Message(m) => Ok(Output::Message(m)),
        }
    }
}

/// Waits until each query has processed what its input held when a round began (or `timeout`
/// passes); returns whether they had.
/// A query reading an in-memory log, the how-manieth of its inputs that log is, and the log.
type Settle = (Arc<Stats>, usize, Arc<Log>);

async fn settle(targets: &[Settle], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    // Each round waits until every query reading memory has processed what its input held
    // when the round began; a query's output feeds the next round. Rounds are bounded, so
    // a stream that never stops growing cannot hold a statement up for long.
    for _ in 0..=targets.len() {
        let ends: Vec<u64> = targets.iter().map(|(_, _, log)| log.end()).collect();
        let done = || {
            targets.iter().zip(&ends).all(|((stats, i, _), end)| {
                stats.finished.load(Ordering::SeqCst)
                    || stats.positions[*i].load(Ordering::SeqCst) >= *end
            })
        };
        if done() {
            return true;
        }
        while !done() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    true
}

/// A running push query; dropping it terminates the query.
pub struct PushQuery {
    /// Its id in `SHOW QUERIES`.
    pub id: String,
    /// The schema of its rows (`rowtime` last).
    pub schema: SchemaRef,
    /// Its rows; closed when the query ends (LIMIT reached, terminated, or input ended).
    pub rows: mpsc::Receiver<RecordBatch>,
}

/// Streams, tables and the queries over them, in one SQL session.
pub struct Engine {
    session: eddy_sql::Session,
    config: EngineConfig,
    relations: BTreeMap<String, Relation>,
    queries: BTreeMap<String, Running>,
    properties: BTreeMap<String, String>,
    next_id: u64,
    /// Direct writers into in-memory streams, refreshed whenever a relation is added or removed.
    writers: crate::direct::StreamWriters,
}

/// A statement DataFusion refused to plan (an `INSERT … VALUES` into a relation that takes
/// none, say) is told as continuous queries' planning errors are, without DataFusion's
/// `Error during planning:` prefix. Pull queries and inserts plan as they run, so their
/// errors pass here too.
fn without_planning_prefix(e: Error) -> Error {
    use datafusion::error::DataFusionError;
    match e {
        Error::Sql(eddy_sql::Error::DataFusion(e))
            if matches!(
                e.find_root(),
                DataFusionError::Plan(_) | DataFusionError::SchemaError(..)
            ) =>
        {
            crate::pipeline::plan_error(e)
        }
        other => other,
    }
}

impl Engine {
    /// An engine over `session`, whose functions its queries may call.
    pub fn new(session: eddy_sql::Session, config: EngineConfig) -> Engine {
        Engine {
            session,
            config,
            relations: BTreeMap::new(),
            queries: BTreeMap::new(),
            properties: BTreeMap::new(),
            next_id: 0,
            writers: Default::default(),
        }
    }

    /// A handle writing raw event payloads into this engine's in-memory streams without
    /// holding the engine; it follows streams as they are created and dropped.
    pub fn stream_writers(&self) -> crate::direct::StreamWriters {
        self.writers.clone()
    }

    /// Points the direct writers at the streams as they are now; called wherever a relation
    /// is added or removed (a relation does not change once in the catalog).
    fn sync_writers(&self) {
        let targets = self
            .relations
            .iter()
            .filter(|(_, r)| r.kind == Kind::Stream)
            .map(|(name, r)| {
                let target = match (&r.spec, &r.log) {
                    (Spec::Memory, Some(log)) => crate::direct::Target::memory(
                        log.clone(),
                        &r.options,
                        r.schema.clone(),
                        r.timestamp,
                    ),
                    _ => crate::direct::Target::Refused(format!(
                        "stream '{name}' takes no direct writes: its rows come from {}; only \
                         streams without a source (fed by INSERT INTO) do",
                        describe_source(r)
                    )),
                };
                (name.clone(), target)
            })
            .collect();
        self.writers.replace(targets);
    }

    /// The SQL session, for functions and settings.
    pub fn session(&mut self) -> &mut eddy_sql::Session {
        &mut self.session
    }

    fn ctx(&self) -> SessionContext {
        self.session.context().clone()
    }

    /// The session as continuous query `id` plans and runs in: its UDF calls know the query
    /// (a shadow version counts per query). Tables, functions and settings stay shared.
    fn query_ctx(&self, id: &str) -> SessionContext {
        let mut state = self.session.context().state();
        let options = state.config_mut().options_mut();
        options.extensions.insert(eddy_sql::QueryId(id.to_string()));
        state.mark_start_execution();
        SessionContext::new_with_state(state)
    }

    /// Runs one statement.
    pub async fn execute(&mut self, sql: &str) -> Result<Output> {
        match self.start(sql, None).await? {
            Started::Done(output) => Ok(output),
            Started::Pull(query) => query.collect().await,
        }
    }

    /// Runs one statement, except that a DataFusion statement (a pull query, say) comes back
    /// ready to run without the engine: a caller sharing the engine lets go of it first, so one
    /// slow query holds up nobody else. `properties` (e.g. `auto.offset.reset`) override the
    /// engine's own for this statement only.
    pub async fn start(
        &mut self,
        sql: &str,
        properties: Option<&BTreeMap<String, String>>,
    ) -> Result<Started> {
        let started = self.start_statement(sql, properties).await;
        started.map_err(|e| self.steady_suggestion(without_planning_prefix(e)))
    }

    /// DataFusion suggests the known function nearest a misspelt name, but of several equally
    /// near it takes whichever its hash map lists first, so one typo got another suggestion at
    /// each run: of those, suggest the first in alphabetical order.
    fn steady_suggestion(&self, e: Error) -> Error {
        const INVALID: &str = "Invalid function '";
        let Error::Plan(text) = &e else {
            return e;
        };
        let Some((head, _)) = text.split_once(" Did you mean '") else {
            return e;
        };
        let Some(name) = head
            .find(INVALID)
            .and_then(|at| head[at + INVALID.len()..].strip_suffix("'."))
        else {
            return e;
        };
        let state = self.session.context().state();
        let target = name.to_lowercase();
        let nearest = state
            .scalar_functions()
            .keys()
            .chain(state.higher_order_functions().keys())
            .chain(state.aggregate_functions().keys())
            .min_by_key(|n| {
                let distance = datafusion::common::utils::datafusion_strsim::levenshtein(
                    &n.to_lowercase(),
                    &target,
                );
                (distance, n.to_string())
            });
        match nearest {
            Some(nearest) => Error::Plan(format!("{head} Did you mean '{nearest}'?")),
            None => e,
        }
    }

    async fn start_statement(
        &mut self,
        sql: &str,
        properties: Option<&BTreeMap<String, String>>,
    ) -> Result<Started> {
        self.reap();
        let earliest = properties
            .unwrap_or(&self.properties)
            .get("auto.offset.reset")
            .is_some_and(|v| v.eq_ignore_ascii_case("earliest"));
        let each_record = emits_each_record(properties.unwrap_or(&self.properties));
        let output = match parse(sql)? {
            Statement::CreateSource {
                kind,
                name,
                or_replace,
                if_not_exists,
                read_only,
                columns,
                options,
            } => {
                if self.relations.contains_key(&name) && if_not_exists {
                    return Ok(Started::Done(Output::Message(format!(
                        "{} {name} already exists",
                        kind.as_str()
                    ))));
                }
                let declared = source::Declared {
                    kind,
                    or_replace,
                    read_only,
                    columns,
                    options,
                };
                self.create_source(&name, declared, sql).await
            }
            Statement::CreateAs {
                kind,
                name,
                or_replace,
                options,
                query,
            } => {
                let next_id = self.next_id;
                let result = self
                    .create_as(kind, &name, or_replace, options, &query, sql, each_record)
                    .await;
                if result.is_err() {
                    // Failed statements do not use up query ids.
                    self.next_id = next_id;
                }
                result
            }
            Statement::InsertQuery { target, query } => {
                let next_id = self.next_id;
                let result = self.insert_query(&target, &query, sql).await;
                if result.is_err() {
                    self.next_id = next_id;
                }
                result
            }
            Statement::Push { query, limit } => {
                let next_id = self.next_id;
                let result = self.push(&query, limit, sql, earliest, each_record).await;
                if result.is_err() {
                    self.next_id = next_id;
                }
                result
            }
            Statement::Print {
                topic,
                from_beginning,
                limit,
            } => self.print(&topic, from_beginning, limit).await,
            Statement::ShowStreams => Ok(self.show(Kind::Stream)),
            Statement::ShowTables => Ok(self.show(Kind::Table)),
            Statement::ShowQueries => Ok(self.show_queries()),
            Statement::Terminate(id) => self.terminate(id).await,
            Statement::Drop {
                kind,
                name,
                if_exists,
            } => self.drop_relation(kind, &name, if_exists),
            Statement::Set { key, value } => {
                self.properties.insert(key.clone(), value.clone());
                Ok(Output::Message(format!("set '{key}' to '{value}'")))
            }
            Statement::ShowProperties => Ok(self.show_properties()),
            Statement::Define { .. } | Statement::Undefine(_) | Statement::ShowVariables => {
                Err(Error::Unsupported(
                    "session variables (DEFINE, UNDEFINE, SHOW VARIABLES) live in one request to \
                     `eddy server`"
                        .into(),
                ))
            }
            Statement::ShowTopics { .. } => Err(Error::Unsupported(
                "SHOW TOPICS lists a broker's topics: ask `eddy server` (GET it over /ksql)".into(),
            )),
            Statement::Function(function) => {
                let show_functions = matches!(function, eddy_sql::Statement::ShowFunctions);
                if let eddy_sql::Statement::DropFunction {
                    name, force: false, ..
                } = &function
                {
                    self.check_drop_function(name)?;
                }
                return self.run_sql(sql, show_functions).await;
            }
            // The parsed text: `->` dereferences are rewritten for DataFusion, and unaliased
            // expressions named as ksqlDB names them.
            // Refused for its types as a continuous query is (a query DataFusion cannot plan
            // is left to the session, for its message).
            Statement::Query(text) => {
                let text = crate::query::ksql_names(&text);
                crate::type_check::check_query_literals(&text)?;
                let state = self.session.context().state();
                if let Ok(plan) = state.create_logical_plan(&text).await {
                    crate::type_check::check_plan(&plan)?;
                }
                return self.run_sql(&text, false).await;
            }
            Statement::Other(text) => return self.run_sql(&text, false).await,
            Statement::Describe { .. } => return self.run_sql(sql, false).await,
        };
        output.map(Started::Done)
    }

    /// A statement for the SQL session (DataFusion's, or a function statement): a query comes
    /// back ready to run without the engine.
    async fn run_sql(&mut self, sql: &str, show_functions: bool) -> Result<Started> {
        Ok(Started::Done(match self.session.prepare(sql).await? {
            eddy_sql::Prepared::Query(query) => {
                // Statements of one session take effect in order: a pull query sees what the
                // running queries made of earlier inserts, and an insert into a table reaches
                // only the events inserted after it.
                let settle = self.settle_targets();
                return Ok(Started::Pull(PullQuery { query, settle }));
            }
            eddy_sql::Prepared::Done(eddy_sql::Output::Rows { schema, batches })
                if show_functions =>
            {
                self.with_users(schema, batches)?
            }
            eddy_sql::Prepared::Done(eddy_sql::Output::Rows { schema, batches }) => {
                Output::Rows { schema, batches }
            }
            eddy_sql::Prepared::Done(eddy_sql::Output::Message(m)) => Output::Message(m),
        }))
    }

    /// Waits until every query reading an in-memory stream has read all of it (or `timeout`
    /// passes); returns whether they had. Queries over Kafka, MQTT or the generator never
    /// settle, so they are not waited for.
    pub async fn settle(&self, timeout: Duration) -> bool {
        settle(&self.settle_targets(), timeout).await
    }

    /// What [`settle`] waits on: each query reading memory, with its input.
    fn settle_targets(&self) -> Vec<Settle> {
        self.queries
            .values()
            .flat_map(|q| {
                q.logs
                    .iter()
                    .enumerate()
                    .map(|(i, log)| (q.stats.clone(), i, log.clone()))
            })
            .collect()
    }

    /// Stops every query, flushing sinks and committing what they wrote.
    pub async fn shutdown(&mut self) {
        let _ = self.terminate(None).await;
    }

    fn kafka(&self, what: &str) -> Result<&crate::KafkaSettings> {
        self.config.kafka.as_ref().ok_or_else(|| {
            Error::Catalog(format!(
                "{what} needs Kafka, and none is configured: start eddy with --bootstrap-servers \
                 host:port (or set EDDY_BOOTSTRAP_SERVERS)"
            ))
        })
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for q in self.queries.values() {
            let _ = q.stop.send(true);
            q.handle.abort();
        }
    }
}

/// Whether `properties` turn ksqlDB's record cache off (`cache.max.bytes.buffering` 0, also
/// under its `ksql.streams.` name), so that an aggregation writes a change for every record.
fn emits_each_record(properties: &BTreeMap<String, String>) -> bool {
    [
        "cache.max.bytes.buffering",
        "ksql.streams.cache.max.bytes.buffering",
    ]
    .iter()
    .any(|key| properties.get(*key).is_some_and(|v| v.trim() == "0"))
}
