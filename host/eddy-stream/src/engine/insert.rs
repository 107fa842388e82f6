//! `INSERT INTO`: rows into a relation read from a Kafka topic (`… VALUES`), and persistent
//! queries writing into an existing stream (`… SELECT`), as ksqlDB has them.

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use eddy_connector::Sink;

use super::catalog::Spec;
use super::launch::Launch;
use super::task::{OnError, TaskOutput};
use super::{Engine, KafkaSettings, Output};
use crate::connectors;
use crate::format::common::type_name;
use crate::format::records::StreamRecords;
use crate::provider::Inserter;
use crate::statement::{Kind, Statement};
use crate::{Error, Result};

/// `INSERT INTO … VALUES` into a relation read from a Kafka topic: the rows are produced to
/// the topic, as in ksqlDB, and reach the relation (and every query reading it) from there.
pub(super) struct TopicInserter {
    pub(super) settings: KafkaSettings,
    pub(super) topic: String,
    pub(super) records: StreamRecords,
    /// The event-time column, for rows inserted without `rowtime`; `None` for a table, whose
    /// schema has no `rowtime`.
    pub(super) timestamp: Option<Option<usize>>,
    /// The Java pattern a VARCHAR `timestamp` column is read with (`timestamp_format`).
    pub(super) pattern: Option<String>,
    /// Made at the first insert: a relation nobody inserts into needs no producer.
    pub(super) sink: tokio::sync::Mutex<Option<Box<dyn Sink>>>,
}

impl TopicInserter {
    /// Produces rows to `topic` as `records` encodes them, each row's `rowtime` taken as
    /// `timestamp` and `pattern` say; the producer is made at the first insert.
    pub(super) fn new(
        settings: &KafkaSettings,
        topic: &str,
        records: StreamRecords,
        timestamp: Option<Option<usize>>,
        pattern: Option<String>,
    ) -> TopicInserter {
        TopicInserter {
            settings: settings.clone(),
            topic: topic.to_string(),
            records,
            timestamp,
            pattern,
            sink: tokio::sync::Mutex::new(None),
        }
    }
}

impl fmt::Debug for TopicInserter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicInserter({})", self.topic)
    }
}

#[async_trait::async_trait]
impl Inserter for TopicInserter {
    async fn insert(&self, batch: RecordBatch) -> datafusion::error::Result<()> {
        let fail = |e: Error| DataFusionError::Execution(e.to_string());
        let batch = match self.timestamp {
            Some(timestamp) => {
                crate::format::common::stamp(batch, timestamp, self.pattern.as_deref())
                    .map_err(fail)?
            }
            None => batch,
        };
        let records = self.records.encode(&batch).map_err(fail)?;
        let mut sink = self.sink.lock().await;
        if sink.is_none() {
            *sink = Some(
                connectors::kafka_sink(&self.settings, &self.topic)
                    .await
                    .map_err(fail)?,
            );
        }
        let sink = sink.as_mut().expect("made above");
        // The statement returns once the broker has the rows: a query started next sees them.
        let sent = async {
            sink.send(records).await?;
            sink.flush().await
        }
        .await;
        sent.map_err(|e| DataFusionError::Execution(format!("producing to {}: {e}", self.topic)))
    }
}

/// `INSERT INTO … VALUES` into a stream a query writes to Kafka: the rows go to its topic, as
/// the query's do, and into its log, where queries and pull queries read it.
pub(super) struct TeeInserter {
    pub(super) log: Arc<super::source::LogInserter>,
    pub(super) topic: TopicInserter,
}

impl fmt::Debug for TeeInserter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TeeInserter({})", self.topic.topic)
    }
}

#[async_trait::async_trait]
impl Inserter for TeeInserter {
    async fn insert(&self, batch: RecordBatch) -> datafusion::error::Result<()> {
        // Stamped once, so the record and the row carry the same time.
        let batch = crate::format::common::stamp(batch, self.log.timestamp, None)
            .map_err(|e| DataFusionError::Execution(e.to_string()))?;
        self.topic.insert(batch.clone()).await?;
        self.log.insert(batch).await
    }
}

impl Engine {
    /// What `INSERT INTO … VALUES` does with a relation read from `topic`.
    pub(super) fn topic_inserter(
        &self,
        topic: &str,
        options: &eddy_connector::Options,
        schema: &arrow::datatypes::Schema,
        keys: &[String],
        timestamp: Option<Option<usize>>,
    ) -> Result<Arc<dyn Inserter>> {
        Ok(Arc::new(TopicInserter::new(
            self.kafka("INSERT INTO a Kafka topic")?,
            topic,
            StreamRecords::of(options, schema, keys)?,
            timestamp,
            options.get("timestamp_format").cloned(),
        )))
    }

    /// `INSERT INTO target SELECT …`: a persistent query appending to an existing stream,
    /// whose columns it must produce, in order, with their types.
    pub(super) async fn insert_query(
        &mut self,
        target: &str,
        query_sql: &str,
        sql: &str,
    ) -> Result<Output> {
        let Some(sink) = self.relations.get(target) else {
            return Err(Error::NotFound(format!(
                "Sink '{target}' does not exist for the INSERT INTO statement."
            )));
        };
        if sink.kind == Kind::Table {
            return Err(Error::Catalog(format!(
                "INSERT INTO can only be used to insert into a stream. {} is a table.",
                target.to_uppercase()
            )));
        }
        if sink.read_only {
            return Err(Error::Catalog(format!(
                "Cannot insert into read-only stream: {}",
                target.to_uppercase()
            )));
        }
        let sink_schema = sink.schema.clone();
        // A stream in memory has no topic: its rows go to its log, not encoded.
        let (topic, encoding) = match &sink.spec {
            Spec::Memory => (None, StreamRecords::default()),
            Spec::Kafka { topic } => (
                Some(topic.clone()),
                StreamRecords::of(&sink.options, &sink_schema, &sink.keys)?,
            ),
            Spec::Derived { .. } => {
                if partitioned(&sink.sql) {
                    return Err(Error::Unsupported(format!(
                        "INSERT INTO '{target}', which a query writes with PARTITION BY: its \
                         records are keyed by that query; insert into its source instead"
                    )));
                }
                // Keyed as the query writing it keys its records (its source's key, or a
                // join's column), so that both writers' records agree, as in ksqlDB.
                (
                    sink.options.get("kafka_topic").cloned(),
                    StreamRecords::of(&sink.options, &sink_schema, &sink.keys)?,
                )
            }
            Spec::Mqtt { .. } | Spec::Generator { .. } => {
                return Err(Error::Unsupported(format!(
                    "INSERT INTO '{target}', which reads {}: Eddy writes only to Kafka topics \
                     and to streams in memory",
                    super::catalog::describe_source(sink)
                )))
            }
        };
        let log = sink.log.clone();
        let id = self.new_id("INSERTQUERY", target);
        let (parsed, processor) = self.plan(query_sql, &id, false).await?;
        let refuse = |this: &Self, message: String| {
            this.drop_tables(&processor.tables);
            Err(Error::Plan(message))
        };
        // Over a table, its rows are a table's too, as ksqlDB says.
        if processor.is_aggregate() || parsed.changelog.is_some() {
            return refuse(
                self,
                format!(
                    "Incompatible data sink and query result. Data sink ({}) type is STREAM but \
                     select query result is TABLE.",
                    target.to_uppercase()
                ),
            );
        }
        if !parsed.partition_by.is_empty() {
            return refuse(
                self,
                "PARTITION BY in INSERT INTO: the records take the target stream's key".into(),
            );
        }
        if let Err(e) = compatible(processor.schema(), &sink_schema) {
            return refuse(self, e);
        }
        let sink = match &topic {
            Some(topic) => {
                let made = match self.kafka(&format!("INSERT INTO {target}")) {
                    Ok(settings) => connectors::kafka_sink(settings, topic).await,
                    Err(e) => Err(e),
                };
                Some(self.unplan_on_error(&processor.tables, made)?)
            }
            None => None,
        };
        let input = self.query_input(&parsed, &id, None).await;
        let input = self.unplan_on_error(&processor.tables, input)?;
        let dead = self.dead_letters(&parsed.source).await;
        let dead = self.unplan_on_error(&processor.tables, dead)?;
        let null_values = parsed.passes_null_values();
        let mut reads = parsed.relations();
        reads.push(target.to_string());
        self.spawn(Launch {
            id: id.clone(),
            sql: sql.to_string(),
            sink: Some(target.to_string()),
            reads,
            source: parsed.source,
            input,
            processor: Some(processor),
            table: None,
            output: TaskOutput {
                conform: Some(sink_schema),
                log,
                sink,
                encoding,
                null_values,
                ..TaskOutput::default()
            },
            dead,
            limit: None,
            on_error: OnError::Skip,
            state: None,
            partitioned: None,
            whole: false,
        });
        Ok(Output::Message(format!(
            "inserting into {target}; query {id} is running"
        )))
    }
}

/// Whether `sql`, a relation's statement, is a query written with `PARTITION BY`.
fn partitioned(sql: &str) -> bool {
    match crate::statement::parse(sql) {
        Ok(Statement::CreateAs { query, .. }) => {
            crate::query::parse(&query).is_ok_and(|p| !p.partition_by.is_empty())
        }
        _ => false,
    }
}

/// Checks that a query's rows (`result`, ending in `rowtime`) fit a stream's (`sink`): the same
/// columns, names and types, in order; otherwise ksqlDB's message, naming both.
fn compatible(result: &SchemaRef, sink: &SchemaRef) -> std::result::Result<(), String> {
    let show = |schema: &SchemaRef| {
        schema
            .fields()
            .iter()
            .filter(|f| f.name() != "rowtime")
            .map(|f| format!("`{}` {}", f.name().to_uppercase(), type_name(f.data_type())))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let same = result.fields().len() == sink.fields().len()
        && result.fields().iter().zip(sink.fields()).all(|(r, s)| {
            r.name().eq_ignore_ascii_case(s.name()) && r.data_type() == s.data_type()
        });
    if same {
        Ok(())
    } else {
        Err(format!(
            "Incompatible schema between results and sink. Result schema is {}, but the sink \
             schema is {}.",
            show(result),
            show(sink)
        ))
    }
}
