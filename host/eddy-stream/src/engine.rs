//! The engine: a catalog of streams and tables, and the queries running over them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use eddy_connector::{Message, Options, Position, Sink};
use eddy_generator::{Generator, GeneratorConfig};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::checkpoint::{Checkpoint, QueryState, StateStore};
use crate::connectors;
use crate::format::{KeyFormat, KeyWindow, ValueDecoder, ValueFormat};
use crate::input::Input;
use crate::json::{display_name, encode, type_name};
use crate::log::{Log, DEFAULT_RETAINED_ROWS};
use crate::pipeline::{Histogram, HistogramSnapshot, Processor};
use crate::provider::{StreamProvider, TableProviderImpl, TableState};
use crate::query;
use crate::statement::{parse, Column, Kind, Statement};
use crate::{Error, Result};

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
    settle: Option<Vec<(Arc<Stats>, Arc<Log>)>>,
}

impl PullQuery {
    /// Its rows, as they are computed.
    pub async fn stream(self) -> Result<SendableRecordBatchStream> {
        if let Some(targets) = &self.settle {
            settle(targets, Duration::from_secs(10)).await;
        }
        Ok(self.query.stream().await?)
    }

    /// All its rows.
    pub async fn collect(self) -> Result<Output> {
        if let Some(targets) = &self.settle {
            settle(targets, Duration::from_secs(10)).await;
        }
        match self.query.collect().await? {
            eddy_sql::Output::Rows { schema, batches } => Ok(Output::Rows { schema, batches }),
            eddy_sql::Output::Message(m) => Ok(Output::Message(m)),
        }
    }
}

/// Waits until each query has processed what its input held when a round began (or `timeout`
/// passes); returns whether they had.
async fn settle(targets: &[(Arc<Stats>, Arc<Log>)], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    // Each round waits until every query reading memory has processed what its input held
    // when the round began; a query's output feeds the next round. Rounds are bounded, so
    // a stream that never stops growing cannot hold a statement up for long.
    for _ in 0..=targets.len() {
        let ends: Vec<u64> = targets.iter().map(|(_, log)| log.end()).collect();
        let done = || {
            targets.iter().zip(&ends).all(|((stats, _), end)| {
                stats.finished.load(Ordering::SeqCst)
                    || stats.position.load(Ordering::SeqCst) >= *end
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

#[derive(Debug, Default)]
struct Stats {
    events_in: AtomicU64,
    /// `u64::MAX` when the source cannot tell.
    lag: AtomicU64,
    rows_out: AtomicU64,
    bad_events: AtomicU64,
    late_events: AtomicU64,
    failed_events: AtomicU64,
    batch_duration: Histogram,
    last_error: Mutex<Option<String>>,
    /// For a query over an in-memory stream: the log position up to which input is processed
    /// and its output written.
    position: AtomicU64,
    finished: AtomicBool,
}

impl Stats {
    fn error(&self, message: String) {
        *self.last_error.lock().expect("stats lock") = Some(message);
    }
}

#[derive(Debug, Clone)]
enum Spec {
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

struct Relation {
    kind: Kind,
    keys: Vec<String>,
    schema: SchemaRef,
    spec: Spec,
    options: Options,
    log: Option<Arc<Log>>,
    table: Option<Arc<TableState>>,
    timestamp: Option<usize>,
    sql: String,
    /// Whether it is a table of windows (keyed by key and window).
    windowed: bool,
}

struct Running {
    sql: String,
    /// Scalar functions its plans call, so a function in use is not dropped by mistake.
    functions: std::collections::BTreeSet<String>,
    sink: Option<String>,
    reads: Vec<String>,
    stats: Arc<Stats>,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
    log: Option<Arc<Log>>,
    tables: Vec<String>,
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
        self.reap();
        let earliest = properties
            .unwrap_or(&self.properties)
            .get("auto.offset.reset")
            .is_some_and(|v| v.eq_ignore_ascii_case("earliest"));
        let output = match parse(sql)? {
            Statement::CreateSource {
                kind,
                name,
                or_replace,
                if_not_exists,
                columns,
                options,
            } => {
                if self.relations.contains_key(&name) && if_not_exists {
                    return Ok(Started::Done(Output::Message(format!(
                        "{} {name} already exists",
                        kind.as_str()
                    ))));
                }
                self.create_source(kind, &name, or_replace, columns, options, sql)
                    .await
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
                    .create_as(kind, &name, or_replace, options, &query, sql)
                    .await;
                if result.is_err() {
                    // Failed statements do not use up query ids.
                    self.next_id = next_id;
                }
                result
            }
            Statement::Push { query, limit } => {
                let next_id = self.next_id;
                let result = self.push(&query, limit, sql, earliest).await;
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
            Statement::Other(sql) => {
                let sql = match self.check_drop_function(&sql)? {
                    Some(forced) => forced,
                    None => sql,
                };
                let upper = sql.trim_start().to_uppercase();
                let show_functions = matches!(
                    upper
                        .split_whitespace()
                        .take(2)
                        .collect::<Vec<_>>()
                        .as_slice(),
                    ["SHOW" | "LIST", "FUNCTIONS" | "FUNCTIONS;"]
                );
                match self.session.prepare(&sql).await? {
                    eddy_sql::Prepared::Query(query) => {
                        // Statements of one session take effect in order: a pull query sees
                        // what the running queries made of earlier inserts, and an insert into
                        // a table reaches only the events inserted after it.
                        let settle = ["SELECT", "WITH", "INSERT"]
                            .iter()
                            .any(|k| upper.starts_with(k))
                            .then(|| self.settle_targets());
                        return Ok(Started::Pull(PullQuery { query, settle }));
                    }
                    eddy_sql::Prepared::Done(eddy_sql::Output::Rows { schema, batches })
                        if show_functions =>
                    {
                        self.with_users(schema, batches)
                    }
                    eddy_sql::Prepared::Done(eddy_sql::Output::Rows { schema, batches }) => {
                        Ok(Output::Rows { schema, batches })
                    }
                    eddy_sql::Prepared::Done(eddy_sql::Output::Message(m)) => {
                        Ok(Output::Message(m))
                    }
                }
            }
        };
        output.map(Started::Done)
    }
    /// Running queries that call `function`.
    fn users_of(&self, function: &str) -> Vec<String> {
        self.queries
            .iter()
            .filter(|(_, q)| q.functions.contains(function))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// `DROP FUNCTION name` while a running query calls it is refused; with `FORCE` it goes
    /// ahead (running queries keep the version they have). Returns the statement to run
    /// instead, without `FORCE`, when it was forced.
    fn check_drop_function(&self, sql: &str) -> Result<Option<String>> {
        let words: Vec<String> = sql
            .trim()
            .trim_end_matches(';')
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let upper: Vec<String> = words.iter().map(|w| w.to_uppercase()).collect();
        if upper.len() < 3 || upper[0] != "DROP" || upper[1] != "FUNCTION" {
            return Ok(None);
        }
        let forced = upper.last().is_some_and(|w| w == "FORCE");
        let name_at = if upper.get(2).is_some_and(|w| w == "IF") {
            4
        } else {
            2
        };
        let Some(name) = words.get(name_at) else {
            return Ok(None);
        };
        let name = name.trim_matches('"').to_lowercase();
        let users = self.users_of(&name);
        if forced {
            return Ok(Some(words[..words.len() - 1].join(" ")));
        }
        if !users.is_empty() {
            return Err(Error::Catalog(format!(
                "cannot drop function '{name}': running queries use it ({}); TERMINATE them \
                 first, or DROP FUNCTION {name} FORCE (they keep the version they have)",
                users.join(", ")
            )));
        }
        Ok(None)
    }

    /// SHOW FUNCTIONS with a `queries` column: the running queries that call each function.
    fn with_users(&self, schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<Output> {
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("queries", DataType::Utf8, false));
        let out_schema = Arc::new(Schema::new(fields));
        let mut out = Vec::new();
        for batch in batches {
            let names = batch
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| Error::Plan("SHOW FUNCTIONS: name is not text".into()))?;
            let users: StringArray = (0..batch.num_rows())
                .map(|i| Some(self.users_of(names.value(i)).join(", ")))
                .collect();
            let mut columns = batch.columns().to_vec();
            columns.push(Arc::new(users));
            out.push(RecordBatch::try_new(out_schema.clone(), columns)?);
        }
        Ok(Output::Rows {
            schema: out_schema,
            batches: out,
        })
    }

    /// Waits until every query reading an in-memory stream has read all of it (or `timeout`
    /// passes); returns whether they had. Queries over Kafka, MQTT or the generator never
    /// settle, so they are not waited for.
    pub async fn settle(&self, timeout: Duration) -> bool {
        settle(&self.settle_targets(), timeout).await
    }

    /// What [`settle`] waits on: each query reading memory, with its input.
    fn settle_targets(&self) -> Vec<(Arc<Stats>, Arc<Log>)> {
        self.queries
            .values()
            .filter_map(|q| q.log.as_ref().map(|log| (q.stats.clone(), log.clone())))
            .collect()
    }

    /// The streams and tables, by name.
    pub fn relations(&self) -> Vec<RelationInfo> {
        self.relations
            .iter()
            .map(|(name, r)| RelationInfo {
                name: name.clone(),
                kind: r.kind,
                source: describe_source(r),
                topic: match &r.spec {
                    Spec::Kafka { topic } => Some(topic.clone()),
                    _ => r.options.get("kafka_topic").cloned(),
                },
                value_format: r
                    .options
                    .get("value_format")
                    .map_or_else(|| "JSON".to_string(), |f| f.to_uppercase()),
                columns: r
                    .schema
                    .fields()
                    .iter()
                    .map(|f| (f.name().clone(), type_name(f.data_type())))
                    .collect(),
                keys: r.keys.clone(),
                windowed: r.windowed,
                sql: r.sql.clone(),
                writer: match &r.spec {
                    Spec::Derived { query } => Some(query.clone()),
                    _ => None,
                },
            })
            .collect()
    }

    /// The queries running now.
    pub fn queries(&self) -> Vec<QueryInfo> {
        self.queries
            .iter()
            .map(|(id, q)| QueryInfo {
                id: id.clone(),
                sql: q.sql.clone(),
                sink: q.sink.clone(),
                events_in: q.stats.events_in.load(Ordering::Relaxed),
                rows_out: q.stats.rows_out.load(Ordering::Relaxed),
                bad_events: q.stats.bad_events.load(Ordering::Relaxed),
                late_events: q.stats.late_events.load(Ordering::Relaxed),
                failed_events: q.stats.failed_events.load(Ordering::Relaxed),
                last_error: q.stats.last_error.lock().expect("stats lock").clone(),
                lag: Some(q.stats.lag.load(Ordering::Relaxed)).filter(|l| *l != u64::MAX),
                batch_duration: q.stats.batch_duration.snapshot(),
            })
            .collect()
    }

    /// Stops every query, flushing sinks and committing what they wrote.
    pub async fn shutdown(&mut self) {
        let _ = self.terminate(None).await;
    }

    /// Forgets queries that ended by themselves (push queries past their LIMIT, bounded inputs).
    fn reap(&mut self) {
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
    fn forget(&mut self, name: &str) -> Result<()> {
        if self.relations.remove(name).is_some() {
            self.sync_writers();
            self.ctx().deregister_table(name)?;
        }
        Ok(())
    }

    fn drop_tables(&self, tables: &[String]) {
        for t in tables {
            let _ = self.ctx().deregister_table(t.as_str());
        }
    }

    fn kafka(&self, what: &str) -> Result<&crate::KafkaSettings> {
        self.config.kafka.as_ref().ok_or_else(|| {
            Error::Catalog(format!(
                "{what} needs Kafka, and none is configured: start eddy with --bootstrap-servers \
                 host:port (or set EDDY_BOOTSTRAP_SERVERS)"
            ))
        })
    }

    async fn create_source(
        &mut self,
        kind: Kind,
        name: &str,
        or_replace: bool,
        columns: Vec<Column>,
        options: Options,
        sql: &str,
    ) -> Result<Output> {
        self.check_new_name(name, or_replace)?;
        for key in options.keys() {
            if !matches!(
                key.as_str(),
                "kafka_topic"
                    | "value_format"
                    | "timestamp"
                    | "partitions"
                    | "mqtt_topic"
                    | "mqtt_broker"
                    | "mqtt_client_id"
                    | "mqtt_qos"
                    | "mqtt_clean_session"
                    | "generator"
                    | "rate"
                    | "seed"
                    | "cars"
                    | "max_events"
                    | "anomaly_rate"
                    | "dead_letter_topic"
                    | "key_format"
                    | "value_delimiter"
                    | "window_type"
                    | "window_size"
            ) {
                return Err(Error::Catalog(format!(
                    "unknown option '{key}' in WITH: expected kafka_topic, value_format, value_delimiter, \
                     key_format (with window_type, window_size), timestamp, mqtt_topic, mqtt_broker, \
                     generator (with rate, seed, cars, max_events) or dead_letter_topic"
                )));
            }
        }
        let format = ValueFormat::from_options(&options)?;
        let sources = ["kafka_topic", "mqtt_topic", "generator"]
            .iter()
            .filter(|k| options.contains_key(**k))
            .count();
        if sources > 1 {
            return Err(Error::Catalog(
                "give one of kafka_topic, mqtt_topic or generator".into(),
            ));
        }
        let spec = if let Some(topic) = options.get("kafka_topic") {
            self.kafka(&format!("{} {name}", kind.as_str()))?;
            Spec::Kafka {
                topic: topic.clone(),
            }
        } else if let Some(filters) = options.get("mqtt_topic") {
            if !options.contains_key("mqtt_broker") {
                return Err(Error::Catalog(
                    "mqtt_topic needs mqtt_broker, e.g. mqtt_broker='tcp://127.0.0.1:1883'".into(),
                ));
            }
            Spec::Mqtt {
                filters: filters.split(',').map(|f| f.trim().to_string()).collect(),
            }
        } else if let Some(generator) = options.get("generator") {
            if generator != "car_sensor" {
                return Err(Error::Catalog(format!(
                    "unknown generator '{generator}': the built-in one is 'car_sensor'"
                )));
            }
            if kind == Kind::Table {
                return Err(Error::Catalog(
                    "the generator makes a stream: CREATE STREAM … WITH (generator='car_sensor')"
                        .into(),
                ));
            }
            if !columns.is_empty() {
                return Err(Error::Catalog(
                    "the generator's columns are fixed: remove the column list (DESCRIBE shows them)".into(),
                ));
            }
            let number = |key: &str| -> Result<Option<f64>> {
                options
                    .get(key)
                    .map(|v| {
                        v.parse::<f64>().map_err(|_| {
                            Error::Catalog(format!("{key} must be a number, found '{v}'"))
                        })
                    })
                    .transpose()
            };
            let config = GeneratorConfig {
                seed: number("seed")?.map_or(42, |v| v as u64),
                cars: number("cars")?.map_or(10, |v| v as u32),
                rows: number("max_events")?.map_or(u64::MAX, |v| v as u64),
                anomaly_rate: number("anomaly_rate")?.unwrap_or(0.02),
                batch_size: 1024,
                ..GeneratorConfig::default()
            };
            let rate = number("rate")?.filter(|r| *r > 0.0);
            // About 20 ms of events per batch: small enough for latency, big enough to amortise.
            let batch_size = rate.map_or(4096, |r| (r / 50.0).clamp(1.0, 4096.0) as usize);
            Spec::Generator {
                config: GeneratorConfig {
                    batch_size,
                    ..config
                },
                rate,
            }
        } else {
            Spec::Memory
        };
        let mut fields: Vec<Field> = if let Spec::Generator { .. } = spec {
            eddy_generator::schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect()
        } else {
            if columns.is_empty() {
                return Err(Error::Catalog(format!(
                    "{} {name} needs columns: CREATE {} {name} (col TYPE, …)",
                    kind.as_str(),
                    kind.as_str().to_uppercase()
                )));
            }
            columns.iter().map(Column::field).collect()
        };
        // With a key_format, the value holds only the columns that are not keys.
        let key_format = KeyFormat::from_options(&options)?;
        let value_fields: Vec<Field> = fields
            .iter()
            .zip(
                columns
                    .iter()
                    .map(|c| c.key)
                    .chain(std::iter::repeat(false)),
            )
            .filter(|(_, key)| key_format.is_none() || !key)
            .map(|(f, _)| f.clone())
            .collect();
        format.check(name, &value_fields)?;
        let timestamp = match (options.get("timestamp"), &spec) {
            (Some(col), _) => {
                let col = col.to_lowercase();
                let i = fields
                    .iter()
                    .position(|f| f.name() == &col)
                    .ok_or_else(|| {
                        Error::Catalog(format!(
                            "timestamp column '{col}' is not a column of {name}"
                        ))
                    })?;
                if !matches!(
                    fields[i].data_type(),
                    DataType::Int64 | DataType::Timestamp(..)
                ) {
                    return Err(Error::Catalog(format!(
                        "timestamp column '{col}' must be BIGINT (ms) or TIMESTAMP"
                    )));
                }
                Some(i)
            }
            (None, Spec::Generator { .. }) => Some(2),
            (None, _) => None,
        };
        let mut key_names: Vec<String> = columns
            .iter()
            .filter(|c| c.key)
            .map(|c| c.name.clone())
            .collect();
        let mut keys: Vec<usize> = columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.key)
            .map(|(i, _)| i)
            .collect();
        // A windowed key (a windowed table's topic) carries its window: the relation gets
        // windowstart and windowend, part of its key.
        if KeyWindow::from_options(&options)?.is_some() {
            if key_format.is_none() {
                return Err(Error::Catalog(
                    "window_type describes record keys: give key_format too".into(),
                ));
            }
            for name in ["windowstart", "windowend"] {
                keys.push(fields.len());
                key_names.push(name.to_string());
                fields.push(Field::new(
                    name,
                    DataType::Timestamp(TimeUnit::Millisecond, None),
                    true,
                ));
            }
        }
        if kind == Kind::Table && keys.is_empty() {
            return Err(Error::Catalog(format!(
                "table {name} needs a PRIMARY KEY column, e.g. CREATE TABLE {name} (id VARCHAR PRIMARY KEY, …)"
            )));
        }
        if let Some(key_format) = key_format {
            if !matches!(spec, Spec::Kafka { .. }) {
                return Err(Error::Catalog(
                    "key_format applies to a relation over a Kafka topic (kafka_topic='…')".into(),
                ));
            }
            let own = columns.iter().filter(|c| c.key).count();
            let key_fields: Vec<&Field> = keys[..own].iter().map(|&i| &fields[i]).collect();
            key_format.check(name, &key_fields)?;
        }
        if fields.iter().any(|f| f.name() == "rowtime") {
            return Err(Error::Catalog(
                "rowtime is every stream's event time; name the column something else".into(),
            ));
        }
        self.forget(name)?;
        let ctx = self.ctx();
        let (schema, log, table) = match kind {
            Kind::Stream => {
                fields.push(Field::new(
                    "rowtime",
                    DataType::Timestamp(TimeUnit::Millisecond, None),
                    true,
                ));
                let schema = Arc::new(Schema::new(fields));
                let log = matches!(spec, Spec::Memory)
                    .then(|| Arc::new(Log::new(schema.clone(), self.config.retained_rows)));
                let inserter = log.clone().map(|log| {
                    Arc::new(LogInserter { log, timestamp }) as Arc<dyn crate::provider::Inserter>
                });
                let external = match &spec {
                    Spec::Kafka { topic } => Some(format!("Kafka topic '{topic}'")),
                    Spec::Mqtt { filters } => Some(format!("MQTT topics '{}'", filters.join(","))),
                    Spec::Generator { .. } => Some("the built-in generator".into()),
                    _ => None,
                };
                ctx.register_table(
                    name,
                    Arc::new(StreamProvider {
                        name: name.to_string(),
                        log: log.clone(),
                        external,
                        inserter,
                        schema: schema.clone(),
                    }),
                )?;
                (schema, log, None)
            }
            Kind::Table => {
                let schema = Arc::new(Schema::new(fields));
                let state = TableState::new(schema.clone(), keys);
                ctx.register_table(
                    name,
                    Arc::new(TableProviderImpl {
                        state: state.clone(),
                        insertable: matches!(spec, Spec::Memory),
                        name: name.to_string(),
                    }),
                )?;
                (schema, None, Some(state))
            }
        };
        let relation = Relation {
            kind,
            keys: key_names,
            schema,
            spec: spec.clone(),
            options,
            log,
            table,
            timestamp,
            sql: sql.to_string(),
            windowed: false,
        };
        self.relations.insert(name.to_string(), relation);
        self.sync_writers();
        if kind == Kind::Table && !matches!(spec, Spec::Memory) {
            // A table read from outside is kept up to date by a query of its own.
            if let Err(e) = self.materialize(name).await {
                // The table's own error is the one to report.
                let _ = self.forget(name);
                return Err(e);
            }
        }
        Ok(Output::Message(format!("{} {name} created", kind.as_str())))
    }

    fn check_new_name(&self, name: &str, or_replace: bool) -> Result<()> {
        if self.relations.contains_key(name) {
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

    fn new_id(&mut self, prefix: &str, name: &str) -> String {
        let id = format!("{prefix}_{}_{}", name.to_uppercase(), self.next_id);
        self.next_id += 1;
        id
    }

    /// An input reading `relation` for query `id`: a persistent query (`transient` is `None`)
    /// reads from the beginning, a transient one from the end unless `Some(true)`.
    async fn input(&self, relation: &str, id: &str, transient: Option<bool>) -> Result<Input> {
        let earliest = transient.unwrap_or(true);
        let transient = transient.is_some();
        let r = &self.relations[relation];
        Ok(match &r.spec {
            Spec::Memory | Spec::Derived { .. } => {
                let log = r.log.clone().expect("memory streams have a log");
                Input::Memory {
                    next: if earliest { 0 } else { log.end() },
                    log,
                }
            }
            Spec::Generator { config, rate } => Input::Generator {
                generator: Box::new(Generator::new(config.clone())),
                rate: *rate,
                started: Instant::now(),
                emitted: 0,
                schema: r.schema.clone(),
                pending: None,
            },
            Spec::Kafka { topic } => {
                let settings = self.kafka("a Kafka source")?;
                let group = if transient {
                    format!("{}-{id}-{}", self.config.service_id, crate::json::now_ms())
                } else {
                    format!("{}-{id}", self.config.service_id)
                };
                let source = connectors::kafka_source(settings, &group, topic, earliest).await?;
                let schema = decoded_schema(r);
                let keys: Vec<usize> = r
                    .keys
                    .iter()
                    .map(|k| schema.index_of(k))
                    .collect::<std::result::Result<_, _>>()?;
                Input::Source {
                    source,
                    decoder: ValueDecoder::with_key(
                        ValueFormat::from_options(&r.options)?,
                        KeyFormat::from_options(&r.options)?,
                        schema,
                        &keys,
                        r.timestamp,
                        KeyWindow::from_options(&r.options)?,
                    )?,
                    next: BTreeMap::new(),
                    hold: true,
                }
            }
            Spec::Mqtt { filters } => {
                let client_id = format!("{}-{id}", self.config.service_id);
                let source = connectors::mqtt_source(&r.options, filters, &client_id).await?;
                Input::Source {
                    source,
                    decoder: ValueDecoder::new(
                        ValueFormat::from_options(&r.options)?,
                        decoded_schema(r),
                        r.timestamp,
                    )?,
                    next: BTreeMap::new(),
                    hold: matches!(r.spec, Spec::Kafka { .. }),
                }
            }
        })
    }

    /// For a stateful query over a source with offsets, when state is durable: its
    /// checkpoints, with the newest restored into `processor` and `table`, and `input` set to
    /// resume where that checkpoint left off.
    async fn restore(
        &self,
        id: &str,
        (statement, source): (&str, &str),
        input: &mut Input,
        processor: Option<&mut Processor>,
        table: Option<&TableState>,
    ) -> Result<Option<QueryState>> {
        let Some(store) = &self.config.state else {
            return Ok(None);
        };
        let aggregates = processor.as_ref().is_some_and(|p| p.is_aggregate());
        if !input.resumable() || !(aggregates || table.is_some()) {
            return Ok(None);
        }
        let source = self.relations.get(source).map_or("", |r| r.sql.as_str());
        let mut state = store.query(id, &format!("{statement} {source}"));
        let started = Instant::now();
        if let Some(checkpoint) = state.load().await? {
            let loaded = started.elapsed();
            let restored = (|| {
                if let Some(p) = processor {
                    p.restore(&checkpoint)?;
                }
                if let Some(t) = table {
                    t.restore("table", &checkpoint)?;
                }
                Ok::<_, Error>(())
            })();
            if let Err(e) = restored {
                return Err(Error::State(format!(
                    "restoring query {id} from {}: {e}",
                    state.location()
                )));
            }
            input.resume(&checkpoint.offsets);
            tracing::info!(
                query = id,
                location = state.location(),
                offsets = ?checkpoint.offsets,
                ?loaded,
                restored = ?(started.elapsed() - loaded),
                "restored state from a checkpoint"
            );
        }
        Ok(Some(state))
    }

    async fn dead_letters(&self, relation: &str) -> Result<Option<Box<dyn Sink>>> {
        match self.relations[relation].options.get("dead_letter_topic") {
            Some(topic) => {
                let settings = self.kafka("dead_letter_topic")?;
                Ok(Some(connectors::kafka_sink(settings, topic).await?))
            }
            None => Ok(None),
        }
    }

    async fn materialize(&mut self, name: &str) -> Result<()> {
        let id = self.new_id("SOURCE", name);
        let mut input = self.input(name, &id, None).await?;
        let state = self.relations[name]
            .table
            .clone()
            .expect("tables have state");
        let sql = self.relations[name].sql.clone();
        let durable = self
            .restore(&id, (&sql, ""), &mut input, None, Some(&state))
            .await?;
        let dead = self.dead_letters(name).await?;
        self.spawn(Launch {
            id,
            sql: self.relations[name].sql.clone(),
            sink: Some(name.to_string()),
            source: name.to_string(),
            // Its own table is what it writes, not something it reads from.
            reads: Vec::new(),
            input,
            processor: None,
            table: Some(state),
            output: TaskOutput::default(),
            dead,
            limit: None,
            on_error: OnError::Skip,
            state: durable,
        });
        Ok(())
    }

    /// Plans a continuous query; `table` when its output is a table (which shows the window
    /// bounds of a windowed aggregation).
    async fn plan(
        &self,
        query_sql: &str,
        id: &str,
        table: bool,
    ) -> Result<(query::Parsed, Processor)> {
        let parsed = query::parse(query_sql)?;
        let Some(source) = self.relations.get(&parsed.source) else {
            return Err(Error::NotFound(format!(
                "stream '{}' does not exist (SHOW STREAMS lists them)",
                parsed.source
            )));
        };
        // A table written by a query has a change stream to follow; other tables do not.
        let changes_of_table = source.kind == Kind::Table;
        if changes_of_table && !matches!(source.spec, Spec::Derived { .. }) {
            return Err(Error::Unsupported(format!(
                "a continuous query over table '{}': read a stream, and JOIN the table to it",
                parsed.source
            )));
        }
        for j in &parsed.joined {
            match self.relations.get(j) {
                Some(r) if r.kind == Kind::Table && r.table.is_some() => {}
                Some(_) => {
                    return Err(Error::Unsupported(format!(
                        "joining stream '{}' to '{j}', which is not a table with a PRIMARY KEY: \
                         stream–stream joins are not supported yet",
                        parsed.source
                    )))
                }
                None => {
                    return Err(Error::NotFound(format!(
                        "table '{j}' does not exist (SHOW TABLES lists them)"
                    )))
                }
            }
        }
        let processor =
            Processor::plan(&self.ctx(), &parsed, source.schema.clone(), id, table).await?;
        if changes_of_table && (processor.is_aggregate() || !parsed.joined.is_empty()) {
            self.drop_tables(&processor.tables);
            return Err(Error::Unsupported(format!(
                "aggregating or joining the changes of table '{}': a query over a table \
                 follows its changes row by row",
                parsed.source
            )));
        }
        Ok((parsed, processor))
    }

    async fn create_as(
        &mut self,
        kind: Kind,
        name: &str,
        or_replace: bool,
        options: Options,
        query_sql: &str,
        sql: &str,
    ) -> Result<Output> {
        self.check_new_name(name, or_replace)?;
        for key in options.keys() {
            if !matches!(
                key.as_str(),
                "kafka_topic"
                    | "value_format"
                    | "value_delimiter"
                    | "key_format"
                    | "partitions"
                    | "on_error"
            ) {
                return Err(Error::Catalog(format!(
                    "unknown option '{key}' in WITH: a query takes kafka_topic, value_format, value_delimiter, key_format, partitions and on_error"
                )));
            }
        }
        let format = ValueFormat::from_options(&options)?;
        let on_error = match options.get("on_error").map(|v| v.to_lowercase()).as_deref() {
            None | Some("skip") => OnError::Skip,
            Some("fail") => OnError::Fail,
            Some(other) => {
                return Err(Error::Catalog(format!(
                    "on_error must be 'skip' (skip and count failing rows) or 'fail' (stop the \
                     query), found '{other}'"
                )))
            }
        };
        let prefix = match kind {
            Kind::Stream => "CSAS",
            Kind::Table => "CTAS",
        };
        let id = self.new_id(prefix, name);
        let (parsed, processor) = self.plan(query_sql, &id, kind == Kind::Table).await?;
        let aggregate = processor.is_aggregate();
        let windowed = parsed.window.is_some();
        let fail = |this: &Self, processor: &Processor, message: &str| {
            this.drop_tables(&processor.tables);
            Err(Error::Plan(message.to_string()))
        };
        if kind == Kind::Stream && aggregate {
            return fail(
                self,
                &processor,
                "your SELECT query produces a TABLE (it aggregates): use CREATE TABLE … AS SELECT",
            );
        }
        if kind == Kind::Table && !aggregate {
            return fail(self, &processor, "your SELECT query produces a STREAM: use CREATE STREAM … AS SELECT (tables come from aggregations: GROUP BY, or a WINDOW)");
        }
        // A table written to Kafka is keyed by its GROUP BY, a stream by its PARTITION BY; the
        // value holds the rest.
        let keyed = kind == Kind::Table || parsed.partition_by.is_some();
        let records = match (keyed, options.contains_key("kafka_topic")) {
            (true, true) => {
                let layout = KeyFormat::from_options(&options)
                    .and_then(|key_format| processor.table_records(&parsed, name, key_format));
                match layout {
                    Ok(layout) => Some(layout),
                    Err(e) => return fail(self, &processor, &e.to_string()),
                }
            }
            _ => {
                if options.contains_key("key_format") {
                    return fail(
                        self,
                        &processor,
                        "key_format applies to records with a key written to Kafka \
                         (kafka_topic): a table's, or a stream's with PARTITION BY",
                    );
                }
                None
            }
        };
        let fields = processor.schema().fields();
        let value_fields: Vec<Field> = match &records {
            Some(layout) => layout
                .value_columns
                .iter()
                .map(|&i| fields[i].as_ref().clone())
                .collect(),
            None => fields.iter().map(|f| f.as_ref().clone()).collect(),
        };
        if let Err(e) = format.check(name, &value_fields) {
            return fail(self, &processor, &e.to_string());
        }
        let sink = match options.get("kafka_topic") {
            Some(topic) => {
                let settings = match self.kafka(&format!("{} {name}", kind.as_str())) {
                    Ok(s) => s.clone(),
                    Err(e) => {
                        self.drop_tables(&processor.tables);
                        return Err(e);
                    }
                };
                let partitions = options
                    .get("partitions")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(1);
                let sink = async {
                    connectors::ensure_topic(&settings, topic, partitions).await?;
                    connectors::kafka_sink(&settings, topic).await
                }
                .await;
                match sink {
                    Ok(s) => Some(s),
                    Err(e) => {
                        self.drop_tables(&processor.tables);
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        let mut input = match self.input(&parsed.source, &id, None).await {
            Ok(i) => i,
            Err(e) => {
                self.drop_tables(&processor.tables);
                return Err(e);
            }
        };
        let dead = self.dead_letters(&parsed.source).await?;
        let schema = processor.schema().clone();
        // A table's key columns, as DESCRIBE shows them: the selected GROUP BY columns, and the
        // window bounds of a windowed table.
        let processor_keys: Vec<String> = parsed
            .key_names()
            .into_iter()
            .filter_map(|(_, name)| name)
            .chain(
                windowed
                    .then(|| ["windowstart".to_string(), "windowend".to_string()])
                    .into_iter()
                    .flatten(),
            )
            .filter(|name| schema.index_of(name).is_ok())
            .collect();
        let log = Arc::new(Log::new(schema.clone(), self.config.retained_rows));
        self.forget(name)?;
        // A table holds the latest row per key (and window); its log is the change stream.
        let table = (kind == Kind::Table).then(|| TableState::new(schema.clone(), Vec::new()));
        let mut processor = processor;
        let durable = match self
            .restore(
                &id,
                (sql, &parsed.source),
                &mut input,
                Some(&mut processor),
                table.as_deref(),
            )
            .await
        {
            Ok(d) => d,
            Err(e) => {
                self.drop_tables(&processor.tables);
                return Err(e);
            }
        };
        let provider: Arc<dyn datafusion::catalog::TableProvider> = match &table {
            Some(state) => Arc::new(TableProviderImpl {
                state: state.clone(),
                insertable: false,
                name: name.to_string(),
            }),
            None => Arc::new(StreamProvider {
                name: name.to_string(),
                log: Some(log.clone()),
                external: None,
                inserter: None,
                schema: schema.clone(),
            }),
        };
        self.ctx().register_table(name, provider)?;
        self.relations.insert(
            name.to_string(),
            Relation {
                kind,
                keys: match kind {
                    Kind::Table => processor_keys,
                    Kind::Stream => Vec::new(),
                },
                schema: schema.clone(),
                spec: Spec::Derived { query: id.clone() },
                options,
                log: Some(log.clone()),
                table: table.clone(),
                timestamp: None,
                sql: sql.to_string(),
                windowed,
            },
        );
        self.sync_writers();
        self.spawn(Launch {
            id: id.clone(),
            sql: sql.to_string(),
            sink: Some(name.to_string()),
            reads: parsed.relations(),
            source: parsed.source,
            input,
            processor: Some(processor),
            table: None,
            output: TaskOutput {
                strip_rowtime: false,
                format,
                log: Some(log),
                sink,
                channel: None,
                table,
                records,
            },
            dead,
            limit: None,
            on_error,
            state: durable,
        });
        Ok(Output::Message(format!(
            "{} {name} created; query {id} is running",
            kind.as_str()
        )))
    }

    /// Starts a query's task and records it as running.
    fn spawn(&mut self, launch: Launch) {
        let source = &self.relations[&launch.source];
        // A query over an in-memory stream is waited for by `settle`.
        let log = source.log.clone();
        let input_schema = decoded_schema(source);
        let (functions, tables) = launch
            .processor
            .as_ref()
            .map(|p| (p.functions(), p.tables.clone()))
            .unwrap_or_default();
        let stats = Arc::new(Stats::default());
        let (stop, stop_rx) = watch::channel(false);
        let task = Task {
            id: launch.id.clone(),
            on_error: launch.on_error,
            input: launch.input,
            input_schema,
            processor: launch.processor,
            table: launch.table,
            output: launch.output,
            dead: launch.dead,
            ctx: self.ctx(),
            stats: stats.clone(),
            stop: stop_rx,
            commit_interval: self.config.commit_interval,
            max_batch: self.config.max_batch,
            limit: launch.limit,
            state: launch.state,
        };
        let handle = tokio::spawn(task.run());
        self.queries.insert(
            launch.id,
            Running {
                sql: launch.sql,
                functions,
                sink: launch.sink,
                reads: launch.reads,
                stats,
                stop,
                handle,
                log,
                tables,
            },
        );
    }

    async fn push(
        &mut self,
        query_sql: &str,
        limit: Option<usize>,
        sql: &str,
        earliest: bool,
    ) -> Result<Output> {
        let id = self.new_id("TRANSIENT", "QUERY");
        let (parsed, processor) = self.plan(query_sql, &id, false).await?;
        let input = match self.input(&parsed.source, &id, Some(earliest)).await {
            Ok(i) => i,
            Err(e) => {
                self.drop_tables(&processor.tables);
                return Err(e);
            }
        };
        let strip_rowtime = processor.appended_rowtime();
        let mut schema = processor.schema().as_ref().clone();
        if strip_rowtime {
            schema = Schema::new(schema.fields()[..schema.fields().len() - 1].to_vec());
        }
        let schema = Arc::new(schema);
        let (tx, rx) = mpsc::channel(16);
        self.spawn(Launch {
            id: id.clone(),
            sql: sql.to_string(),
            sink: None,
            reads: parsed.relations(),
            source: parsed.source,
            input,
            processor: Some(processor),
            table: None,
            output: TaskOutput {
                strip_rowtime,
                log: None,
                sink: None,
                format: ValueFormat::Json,
                channel: Some(tx),
                table: None,
                records: None,
            },
            dead: None,
            limit,
            on_error: OnError::Skip,
            state: None,
        });
        Ok(Output::Push(PushQuery {
            id,
            schema,
            rows: rx,
        }))
    }

    /// `PRINT topic`: the topic's records (time, partition, offset, key, value) as they come,
    /// read by a consumer group of its own so it takes nothing from running queries.
    async fn print(
        &mut self,
        topic: &str,
        from_beginning: bool,
        limit: Option<usize>,
    ) -> Result<Output> {
        // A stream's name works too: its topic, or the rows of a stream kept in memory.
        let mut topic = topic.to_string();
        if let Some(r) = self.relations.get(&topic.to_lowercase()) {
            match (&r.spec, &r.log) {
                (Spec::Kafka { topic: t }, _) => topic = t.clone(),
                (_, Some(log)) => {
                    let format = ValueFormat::from_options(&r.options)?;
                    return Ok(print_log(
                        &topic,
                        log.clone(),
                        format,
                        from_beginning,
                        limit,
                    ));
                }
                _ => {
                    return Err(Error::Unsupported(format!(
                        "PRINT {topic}: it reads {}, which PRINT cannot show; PRINT takes a \
                         Kafka topic or a stream kept in memory",
                        describe_source(r)
                    )))
                }
            }
        }
        let topic = topic.as_str();
        let settings = self.kafka("PRINT")?;
        let group = format!("{}-print-{}", self.config.service_id, crate::json::now_ms());
        let mut source = connectors::kafka_source(settings, &group, topic, from_beginning).await?;
        let schema = print_schema();
        let (tx, rx) = mpsc::channel(16);
        let out_schema = schema.clone();
        let limit = limit.unwrap_or(usize::MAX);
        tokio::spawn(async move {
            let mut sent = 0;
            while sent < limit && !tx.is_closed() {
                let messages = match source
                    .poll((limit - sent).min(1000), Duration::from_millis(200))
                    .await
                {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("PRINT: {e}");
                        break;
                    }
                };
                if messages.is_empty() {
                    continue;
                }
                sent += messages.len();
                let batch = print_batch(&out_schema, &messages);
                if tx.send(batch).await.is_err() {
                    break;
                }
            }
        });
        Ok(Output::Push(PushQuery {
            id: format!("PRINT_{}", topic.to_uppercase()),
            schema,
            rows: rx,
        }))
    }

    fn show(&self, kind: Kind) -> Output {
        let rows: Vec<(&String, &Relation)> = self
            .relations
            .iter()
            .filter(|(_, r)| r.kind == kind)
            .collect();
        let source = describe_source;
        let name = match kind {
            Kind::Stream => "stream",
            Kind::Table => "table",
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new(name, DataType::Utf8, false),
            Field::new("source", DataType::Utf8, false),
            Field::new("columns", DataType::Utf8, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(n, _)| display_name(n)),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(_, r)| source(r)),
            )),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|(_, r)| {
                r.schema
                    .fields()
                    .iter()
                    .map(|f| format!("{} {}", display_name(f.name()), type_name(f.data_type())))
                    .collect::<Vec<_>>()
                    .join(", ")
            }))),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).expect("columns match");
        Output::Rows {
            schema,
            batches: vec![batch],
        }
    }

    fn show_queries(&self) -> Output {
        let q = self.queries();
        let schema = Arc::new(Schema::new(vec![
            Field::new("query_id", DataType::Utf8, false),
            Field::new("sink", DataType::Utf8, true),
            Field::new("events_in", DataType::UInt64, false),
            Field::new("rows_out", DataType::UInt64, false),
            Field::new("bad_events", DataType::UInt64, false),
            Field::new("late_events", DataType::UInt64, false),
            Field::new("failed_events", DataType::UInt64, false),
            Field::new("last_error", DataType::Utf8, true),
        ]));
        let u = |f: fn(&QueryInfo) -> u64| -> ArrayRef {
            Arc::new(UInt64Array::from_iter_values(q.iter().map(f)))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                q.iter().map(|i| i.id.as_str()),
            )),
            Arc::new(StringArray::from_iter(
                q.iter().map(|i| i.sink.as_deref().map(display_name)),
            )),
            u(|i| i.events_in),
            u(|i| i.rows_out),
            u(|i| i.bad_events),
            u(|i| i.late_events),
            u(|i| i.failed_events),
            Arc::new(StringArray::from_iter(
                q.iter().map(|i| i.last_error.as_deref()),
            )),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).expect("columns match");
        Output::Rows {
            schema,
            batches: vec![batch],
        }
    }

    async fn terminate(&mut self, id: Option<String>) -> Result<Output> {
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
            if let Some(q) = self.queries.remove(id) {
                let _ = q.stop.send(true);
                let _ = q.handle.await;
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

    fn drop_relation(&mut self, kind: Kind, name: &str, if_exists: bool) -> Result<Output> {
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

impl Drop for Engine {
    fn drop(&mut self) {
        for q in self.queries.values() {
            let _ = q.stop.send(true);
            q.handle.abort();
        }
    }
}

/// The schema a source's events decode into: the relation's (streams end in `rowtime`).
fn decoded_schema(r: &Relation) -> SchemaRef {
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

/// The columns PRINT shows, for a topic or a stream.
fn print_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "rowtime",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("key", DataType::Utf8, true),
        Field::new("value", DataType::Utf8, true),
    ]))
}

/// PRINT's rows for `messages`: time, partition, offset, and key and value as text.
fn print_batch(schema: &SchemaRef, messages: &[Message]) -> RecordBatch {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMillisecondArray::from(
            messages.iter().map(|m| m.timestamp_ms).collect::<Vec<_>>(),
        )),
        Arc::new(Int32Array::from_iter_values(
            messages.iter().map(|m| m.position.partition),
        )),
        Arc::new(Int64Array::from_iter_values(
            messages.iter().map(|m| m.position.offset),
        )),
        Arc::new(StringArray::from_iter(
            messages.iter().map(|m| m.key.as_deref().map(text)),
        )),
        Arc::new(StringArray::from_iter_values(
            messages.iter().map(|m| text(&m.payload)),
        )),
    ];
    RecordBatch::try_new(schema.clone(), columns).expect("columns match")
}

/// `PRINT` over a stream kept in memory: its rows encoded in the stream's value format, as
/// they would be written to a topic; `offset` counts rows from where printing started.
fn print_log(
    name: &str,
    log: Arc<Log>,
    format: ValueFormat,
    from_beginning: bool,
    limit: Option<usize>,
) -> Output {
    let schema = print_schema();
    let (tx, rx) = mpsc::channel(16);
    let out_schema = schema.clone();
    let limit = limit.unwrap_or(usize::MAX);
    tokio::spawn(async move {
        let mut next = if from_beginning { 0 } else { log.end() };
        let mut sent = 0usize;
        while sent < limit && !tx.is_closed() {
            let read = log.read(next, 64);
            next = read.next;
            if read.batches.is_empty() {
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), log.wait_beyond(next)).await;
                continue;
            }
            for batch in read.batches {
                let records = match format.encode(&batch) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!("PRINT: {e}");
                        return;
                    }
                };
                let take = records.len().min(limit - sent);
                let messages: Vec<Message> = records
                    .into_iter()
                    .take(take)
                    .zip(sent as i64..)
                    .map(|(r, offset)| Message {
                        key: r.key,
                        payload: r.payload.unwrap_or_default(),
                        timestamp_ms: r.timestamp_ms,
                        position: Position {
                            partition: 0,
                            offset,
                        },
                        origin: String::new(),
                    })
                    .collect();
                sent += take;
                let batch = print_batch(&out_schema, &messages);
                if tx.send(batch).await.is_err() || sent >= limit {
                    return;
                }
            }
        }
    });
    Output::Push(PushQuery {
        id: format!("PRINT_{}", name.to_uppercase()),
        schema,
        rows: rx,
    })
}

fn describe_source(r: &Relation) -> String {
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

#[derive(Debug)]
struct LogInserter {
    log: Arc<Log>,
    timestamp: Option<usize>,
}

impl crate::provider::Inserter for LogInserter {
    fn insert(&self, batch: RecordBatch) -> datafusion::error::Result<()> {
        let batch = crate::json::fill_rowtime(batch, self.timestamp)
            .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
        self.log.append(batch);
        Ok(())
    }
}

/// What a query does when a batch fails (a UDF traps, a cast fails): `WITH (on_error=…)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnError {
    /// Find the failing rows by splitting the batch, skip and count them (and dead-letter them
    /// when the source has a dead-letter topic); the other rows go through. The default.
    Skip,
    /// Stop the query, keeping the error in `SHOW QUERIES`.
    Fail,
}

/// Runs `batch`; when it fails, isolates the failing rows by bisection (stateless queries; an
/// aggregation skips the whole batch). Returns the output, the failed rows with their
/// reasons, and the error that stops the query under `on_error='fail'`.
async fn process_isolating(
    processor: &mut Processor,
    ctx: &SessionContext,
    batch: RecordBatch,
    first: &BTreeMap<i32, i64>,
    on_error: OnError,
) -> (Vec<RecordBatch>, Vec<(RecordBatch, String)>, Option<String>) {
    let mut out = Vec::new();
    let mut failed = Vec::new();
    let mut pending = vec![batch];
    while let Some(piece) = pending.pop() {
        match processor.process(ctx, piece.clone(), first).await {
            Ok(o) => out.extend(o),
            Err(e) if on_error == OnError::Fail => return (out, failed, Some(e.to_string())),
            Err(e) if piece.num_rows() <= 1 || processor.is_aggregate() => {
                failed.push((piece, e.to_string()))
            }
            Err(_) => {
                // Halves go back on the stack second-half first, so rows keep their order.
                let half = piece.num_rows() / 2;
                pending.push(piece.slice(half, piece.num_rows() - half));
                pending.push(piece.slice(0, half));
            }
        }
    }
    (out, failed, None)
}

/// What a new query task reads, computes and writes; see [`Engine::spawn`].
struct Launch {
    id: String,
    sql: String,
    /// The relation it writes (`None` for push queries).
    sink: Option<String>,
    /// The relation its input comes from.
    source: String,
    /// Relations it depends on, which cannot be dropped while it runs.
    reads: Vec<String>,
    input: Input,
    /// The query's plans; `None` for the task keeping a table up to date.
    processor: Option<Processor>,
    /// The table such a task keeps up to date.
    table: Option<Arc<TableState>>,
    output: TaskOutput,
    dead: Option<Box<dyn Sink>>,
    limit: Option<usize>,
    on_error: OnError,
    /// Its checkpoints, when its state is durable.
    state: Option<QueryState>,
}

#[derive(Default)]
struct TaskOutput {
    /// Push queries show `rowtime` only when the query selected it.
    strip_rowtime: bool,
    log: Option<Arc<Log>>,
    sink: Option<Box<dyn Sink>>,
    /// How `sink` gets its records.
    format: ValueFormat,
    channel: Option<mpsc::Sender<RecordBatch>>,
    /// The table an aggregation keeps: the latest row per group.
    table: Option<Arc<TableState>>,
    /// How a table's changes are written to `sink`: keyed, with tombstones.
    records: Option<crate::changes::TableRecords>,
}

struct Task {
    id: String,
    on_error: OnError,
    input: Input,
    input_schema: SchemaRef,
    processor: Option<Processor>,
    table: Option<Arc<TableState>>,
    output: TaskOutput,
    dead: Option<Box<dyn Sink>>,
    ctx: SessionContext,
    stats: Arc<Stats>,
    stop: watch::Receiver<bool>,
    commit_interval: Duration,
    max_batch: usize,
    limit: Option<usize>,
    /// Where it checkpoints its state at each commit, if it does.
    state: Option<QueryState>,
}

impl Task {
    async fn run(mut self) {
        let mut last_commit = Instant::now();
        let mut dirty = false;
        let mut sent = 0usize;
        loop {
            if *self.stop.borrow() {
                break;
            }
            // A push query whose client went away ends now, not when its next row finds the
            // channel closed: an idle stream would keep it in SHOW QUERIES forever.
            if self.output.channel.as_ref().is_some_and(|c| c.is_closed()) {
                break;
            }
            // Everything read so far is processed and its output written: what `settle` waits on.
            if let Some(position) = self.input.memory_position() {
                self.stats.position.store(position, Ordering::SeqCst);
            }
            let step = tokio::select! {
                _ = self.stop.changed() => break,
                step = self.input.next(&self.input_schema, self.max_batch, Duration::from_millis(100)) => step,
            };
            let step = match step {
                Ok(Some(step)) => step,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(query = %self.id, "input failed: {e}");
                    self.stats.error(format!("input: {e}"));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            self.stats
                .lag
                .store(self.input.lag().unwrap_or(u64::MAX), Ordering::Relaxed);
            if step.is_idle() {
                if dirty {
                    dirty = !self.commit().await;
                    last_commit = Instant::now();
                }
                continue;
            }
            dirty = true;
            let events = step.batch.num_rows() + step.bad.len();
            tracing::trace!(query = %self.id, events, "step");
            self.stats
                .events_in
                .fetch_add(events as u64, Ordering::Relaxed);
            if !step.bad.is_empty() {
                self.bad_events(step.bad).await;
            }
            if let Some(table) = &self.table {
                if let Err(e) = table.upsert(&step.batch) {
                    self.stats.error(e.to_string());
                }
                self.stats
                    .rows_out
                    .fetch_add(step.batch.num_rows() as u64, Ordering::Relaxed);
            } else if let Some(processor) = &mut self.processor {
                let started = Instant::now();
                let (out, failed, fatal) =
                    process_isolating(processor, &self.ctx, step.batch, &step.first, self.on_error)
                        .await;
                self.stats.batch_duration.observe(started.elapsed());
                self.stats
                    .late_events
                    .store(processor.late(), Ordering::Relaxed);
                let expired = processor.take_expired();
                if !failed.is_empty() {
                    self.failed_rows(failed).await;
                }
                if let Some(e) = fatal {
                    tracing::error!(query = %self.id, "query failed (on_error='fail'): {e}");
                    self.stats
                        .error(format!("query stopped (on_error='fail'): {e}"));
                    break;
                }
                if let (Some(cutoff), Some(table)) = (expired, &self.output.table) {
                    if let Ok(end) = table.schema().index_of("windowend") {
                        table.retain(|row| match &row[end] {
                            ScalarValue::TimestampMillisecond(Some(t), _) => *t <= cutoff,
                            _ => false,
                        });
                    }
                }
                let mut done = false;
                for mut batch in out {
                    if let Some(limit) = self.limit {
                        let left = limit - sent;
                        if batch.num_rows() >= left {
                            batch = batch.slice(0, left);
                            done = true;
                        }
                    }
                    sent += batch.num_rows();
                    if !self.write(batch).await {
                        done = true;
                    }
                    if done {
                        break;
                    }
                }
                if done {
                    break;
                }
            }
            if last_commit.elapsed() >= self.commit_interval {
                dirty = !self.commit().await;
                last_commit = Instant::now();
            }
        }
        if dirty {
            self.commit().await;
        }
        self.stats.finished.store(true, Ordering::SeqCst);
    }

    /// Writes one output batch; false when the reader of a push query has gone. An
    /// aggregation's batch carries its group columns and tombstone flag after the visible ones:
    /// the table is upserted by group, and the other outputs get the rows that stand.
    async fn write(&mut self, batch: RecordBatch) -> bool {
        if batch.num_rows() == 0 {
            return true;
        }
        self.stats
            .rows_out
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        let visible = self
            .processor
            .as_ref()
            .map_or(batch.num_columns(), |p| p.schema().fields().len());
        let (batch, records) = if visible < batch.num_columns() {
            let changes = match crate::changes::split(&batch, visible) {
                Ok(c) => c,
                Err(e) => {
                    self.stats.error(format!("output: {e}"));
                    return true;
                }
            };
            if let Some(table) = &self.output.table {
                if let Err(e) = table.apply(&changes) {
                    self.stats.error(format!("table: {e}"));
                }
            }
            let records = match (&self.output.sink, &self.output.records) {
                (Some(_), Some(layout)) => Some(layout.encode(&changes, &self.output.format)),
                _ => None,
            };
            match changes.standing() {
                Ok(b) => (b, records),
                Err(e) => {
                    self.stats.error(format!("output: {e}"));
                    return true;
                }
            }
        } else {
            (batch, None)
        };
        if let Some(sink) = &mut self.output.sink {
            let records = records.unwrap_or_else(|| self.output.format.encode(&batch));
            match records {
                Ok(records) => {
                    if let Err(e) = sink.send(records).await {
                        tracing::warn!(query = %self.id, "sink failed: {e}");
                        self.stats.error(format!("sink: {e}"));
                    }
                }
                Err(e) => self.stats.error(format!("encoding: {e}")),
            }
        }
        if batch.num_rows() == 0 {
            return true;
        }
        if let Some(log) = &self.output.log {
            log.append(batch.clone());
        }
        if let Some(channel) = &self.output.channel {
            let mut batch = batch;
            if self.output.strip_rowtime {
                batch.remove_column(batch.num_columns() - 1);
            }
            return channel.send(batch).await.is_ok();
        }
        true
    }

    async fn bad_events(&mut self, bad: Vec<crate::BadEvent>) {
        self.stats
            .bad_events
            .fetch_add(bad.len() as u64, Ordering::Relaxed);
        let first = &bad[0];
        tracing::warn!(query = %self.id, count = bad.len(), "bad event from {}: {}", first.origin, first.reason);
        self.stats
            .error(format!("bad event from {}: {}", first.origin, first.reason));
        if let Some(dead) = &mut self.dead {
            let records = bad
                .into_iter()
                .map(|b| eddy_connector::Record {
                    key: None,
                    payload: Some(
                        serde_json::to_vec(&serde_json::json!({
                            "query": self.id,
                            "origin": b.origin,
                            "reason": b.reason,
                            "payload": String::from_utf8_lossy(&b.payload),
                        }))
                        .expect("JSON encodes"),
                    ),
                    timestamp_ms: Some(crate::json::now_ms()),
                })
                .collect();
            if let Err(e) = dead.send(records).await {
                self.stats.error(format!("dead-letter sink: {e}"));
            }
        }
    }

    /// Rows a UDF (or a cast) failed on: counted, logged and dead-lettered with the reason.
    async fn failed_rows(&mut self, failed: Vec<(RecordBatch, String)>) {
        let rows: usize = failed.iter().map(|(b, _)| b.num_rows()).sum();
        self.stats
            .failed_events
            .fetch_add(rows as u64, Ordering::Relaxed);
        let (_, first) = &failed[0];
        tracing::warn!(query = %self.id, rows, "rows failed: {first}");
        self.stats.error(first.clone());
        if let Some(dead) = &mut self.dead {
            let mut records = Vec::new();
            for (batch, reason) in &failed {
                for row in encode(batch).unwrap_or_default() {
                    records.push(eddy_connector::Record {
                        key: None,
                        payload: Some(
                            serde_json::to_vec(&serde_json::json!({
                                "query": self.id,
                                "origin": "query",
                                "reason": reason,
                                "payload": String::from_utf8_lossy(
                                    row.payload.as_deref().unwrap_or_default(),
                                ),
                            }))
                            .expect("JSON encodes"),
                        ),
                        timestamp_ms: row.timestamp_ms,
                    });
                }
            }
            if let Err(e) = dead.send(records).await {
                self.stats.error(format!("dead-letter sink: {e}"));
            }
        }
    }

    /// Writes the query's state, with the input offsets it reflects, as its newest checkpoint.
    async fn checkpoint(&mut self) -> Result<()> {
        let Some(state) = &mut self.state else {
            return Ok(());
        };
        let started = Instant::now();
        let mut checkpoint = Checkpoint {
            offsets: self.input.offsets(),
            ..Checkpoint::default()
        };
        if let Some(p) = &mut self.processor {
            p.save(&mut checkpoint)?;
        }
        if let Some(t) = self.output.table.as_ref().or(self.table.as_ref()) {
            t.save("table", &mut checkpoint)?;
        }
        state.save(&mut checkpoint).await?;
        tracing::debug!(query = %self.id, elapsed = ?started.elapsed(), "checkpointed");
        Ok(())
    }

    /// Flushes the sinks, then commits the input; false if anything failed (try again later).
    async fn commit(&mut self) -> bool {
        tracing::debug!(query = %self.id, "flushing before commit");
        let flush_started = Instant::now();
        if let Some(sink) = &mut self.output.sink {
            if let Err(e) = sink.flush().await {
                tracing::warn!(query = %self.id, "sink flush failed, not committing: {e}");
                self.stats.error(format!("sink: {e}"));
                return false;
            }
        }
        if let Some(dead) = &mut self.dead {
            if let Err(e) = dead.flush().await {
                self.stats.error(format!("dead-letter sink: {e}"));
                return false;
            }
        }
        tracing::debug!(query = %self.id, elapsed = ?flush_started.elapsed(), "flushed");
        // With its state checkpointed, a query commits everything it read: a restart restores
        // the state and resumes there. Without, the commit stays behind open windows' events.
        let hold = if self.state.is_some() {
            if let Err(e) = self.checkpoint().await {
                tracing::warn!(query = %self.id, "checkpoint failed, not committing: {e}");
                self.stats.error(e.to_string());
                return false;
            }
            BTreeMap::new()
        } else {
            self.processor
                .as_ref()
                .map(|p| p.held())
                .unwrap_or_default()
        };
        let started = Instant::now();
        let committed = self.input.commit(&hold).await;
        tracing::debug!(query = %self.id, elapsed = ?started.elapsed(), "committed");
        if let Err(e) = committed {
            tracing::warn!(query = %self.id, "commit failed: {e}");
            self.stats.error(format!("commit: {e}"));
            return false;
        }
        true
    }
}
