//! `CREATE STREAM|TABLE name (columns) WITH (…)`: relations read from memory, Kafka, MQTT or
//! the generator.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use eddy_connector::Options;
use eddy_generator::GeneratorConfig;

use super::catalog::{Relation, Spec};
use super::options::{self, Connector};
use super::{Engine, Output};
use crate::connectors;
use crate::format::{KeyFormat, KeyWindow, ValueFormat};
use crate::log::Log;
use crate::provider::{StreamProvider, TableProviderImpl, TableState};
use crate::statement::{Column, Kind};
use crate::{Error, Result};

/// A stream or table as `CREATE [OR REPLACE] [SOURCE] STREAM|TABLE name (…) WITH (…)`
/// declares it.
pub(super) struct Declared {
    pub(super) kind: Kind,
    pub(super) or_replace: bool,
    /// `SOURCE`: read-only.
    pub(super) read_only: bool,
    pub(super) columns: Vec<Column>,
    pub(super) options: Options,
}

impl Engine {
    /// Creates the stream or table `name` that `sql` declares, read from outside (or kept in
    /// memory).
    pub(super) async fn create_source(
        &mut self,
        name: &str,
        declared: Declared,
        sql: &str,
    ) -> Result<Output> {
        let Declared {
            kind,
            or_replace,
            read_only,
            columns,
            mut options,
        } = declared;
        if read_only && or_replace {
            return Err(super::catalog::replacing_a_source(kind, name));
        }
        self.check_new_name(name, or_replace)?;
        let keyed = options.contains_key("kafka_topic") && columns.iter().any(|c| c.key);
        options::split_format(&mut options, keyed)?;
        // As in ksqlDB, the KEY columns of a relation over a topic are read from the record key,
        // in the KAFKA format unless key_format (or format) names another.
        if keyed && !options.contains_key("key_format") {
            options.insert("key_format".into(), "KAFKA".into());
        }
        // The options table decides which connector this is; each arm reads that one's keys.
        let connector = options::source_connector(&options)?;
        let partitions = options::partitions(&options)?;
        let format = ValueFormat::from_options(&options)?;
        let spec = match connector {
            Connector::Kafka => {
                let topic = &options["kafka_topic"];
                self.kafka(&format!("{} {name}", kind.as_str()))?;
                Spec::Kafka {
                    topic: topic.clone(),
                }
            }
            Connector::Mqtt => {
                let filters = &options["mqtt_topic"];
                if !options.contains_key("mqtt_broker") {
                    return Err(Error::Catalog(
                        "mqtt_topic needs mqtt_broker, e.g. mqtt_broker='tcp://127.0.0.1:1883'"
                            .into(),
                    ));
                }
                // The session options are read again when a query subscribes; checking them here
                // refuses a bad mqtt_qos at CREATE, not at the first query.
                eddy_mqtt::MqttConfig::from_options_or_client_id(&options, "eddy").map_err(
                    |e| {
                        Error::Catalog(match e {
                            eddy_connector::Error::Config(m) => m,
                            other => other.to_string(),
                        })
                    },
                )?;
                Spec::Mqtt {
                    filters: filters.split(',').map(|f| f.trim().to_string()).collect(),
                }
            }
            Connector::Generator => {
                let generator = &options["generator"];
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
            }
            // Nothing could ever write it.
            Connector::Any if read_only => {
                return Err(Error::Catalog(format!(
                    "a SOURCE {} is read from outside: give it kafka_topic (or mqtt_topic, or \
                     generator)",
                    kind.as_str().to_uppercase()
                )))
            }
            Connector::Any => Spec::Memory,
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
        format.check_with(&options, name, &value_fields)?;
        let pattern = options.get("timestamp_format");
        let timestamp =
            match (options.get("timestamp"), &spec) {
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
                    match (fields[i].data_type(), pattern) {
                        (DataType::Int64 | DataType::Timestamp(..), None) => {}
                        (DataType::Utf8, Some(_)) => {}
                        (_, None) => {
                            return Err(Error::Catalog(format!(
                                "timestamp column '{col}' must be BIGINT (ms) or TIMESTAMP, or \
                             VARCHAR read with timestamp_format"
                            )))
                        }
                        (other, Some(_)) => {
                            return Err(Error::Catalog(format!(
                                "timestamp_format reads a VARCHAR timestamp column: '{col}' is {}",
                                crate::format::common::type_name(other)
                            )))
                        }
                    }
                    Some(i)
                }
                (None, _) if pattern.is_some() => return Err(Error::Catalog(
                    "timestamp_format says how to read the timestamp column: give timestamp too"
                        .into(),
                )),
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
            // options::source_connector refused key_format on anything but Kafka.
            let own = columns.iter().filter(|c| c.key).count();
            let key_fields: Vec<&Field> = keys[..own].iter().map(|&i| &fields[i]).collect();
            key_format.check(name, &key_fields)?;
        }
        if fields.iter().any(|f| f.name() == "rowtime") {
            return Err(Error::Catalog(
                "rowtime is every stream's event time; name the column something else".into(),
            ));
        }
        // ksqlDB's pseudo-columns of a record's place in its topic, which Eddy does not have.
        if let Some(f) = fields
            .iter()
            .find(|f| crate::query::RECORD_PLACE.contains(&f.name().as_str()))
        {
            return Err(Error::Catalog(format!(
                "'{}' is a reserved column name. You cannot use it as a name for a column.",
                f.name().to_uppercase()
            )));
        }
        if let (Spec::Kafka { topic }, Some(partitions)) = (&spec, partitions) {
            // As in ksqlDB, `partitions` creates the topic when it does not exist yet (an
            // existing topic is read as it is).
            connectors::ensure_topic(self.kafka("partitions")?, topic, partitions).await?;
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
                let inserter: Option<Arc<dyn crate::provider::Inserter>> = match &spec {
                    Spec::Kafka { topic } => Some(self.topic_inserter(
                        topic,
                        &options,
                        &schema,
                        &key_names,
                        Some(timestamp),
                    )?),
                    _ => log.clone().map(|log| {
                        Arc::new(LogInserter {
                            log,
                            timestamp,
                            pattern: pattern.cloned(),
                        }) as _
                    }),
                };
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
                        read_only,
                    }),
                )?;
                (schema, log, None)
            }
            Kind::Table => {
                let schema = Arc::new(Schema::new(fields));
                let state = TableState::new(schema.clone(), keys);
                // A table in memory logs what is inserted, stamped with its rowtime: the
                // changes that queries over it follow, as they follow a topic's records.
                let log = matches!(spec, Spec::Memory).then(|| {
                    let mut stamped: Vec<Field> =
                        schema.fields().iter().map(|f| f.as_ref().clone()).collect();
                    stamped.push(Field::new(
                        "rowtime",
                        DataType::Timestamp(TimeUnit::Millisecond, None),
                        true,
                    ));
                    Arc::new(Log::new(
                        Arc::new(Schema::new(stamped)),
                        self.config.retained_rows,
                    ))
                });
                let inserter: Option<Arc<dyn crate::provider::Inserter>> = match &spec {
                    Spec::Memory => Some(Arc::new(TableLogInserter {
                        state: state.clone(),
                        log: LogInserter {
                            log: log.clone().expect("a table in memory has a log"),
                            timestamp,
                            pattern: pattern.cloned(),
                        },
                    })),
                    Spec::Kafka { topic } => {
                        Some(self.topic_inserter(topic, &options, &schema, &key_names, None)?)
                    }
                    _ => None,
                };
                ctx.register_table(
                    name,
                    Arc::new(TableProviderImpl {
                        state: state.clone(),
                        inserter,
                        name: name.to_string(),
                        read_only,
                    }),
                )?;
                (schema, log, Some(state))
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
            logs_deletions: false,
            read_only,
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
}

#[derive(Debug)]
pub(super) struct LogInserter {
    pub(super) log: Arc<Log>,
    pub(super) timestamp: Option<usize>,
    /// The Java pattern a VARCHAR `timestamp` column is read with (`timestamp_format`).
    pub(super) pattern: Option<String>,
}

/// Inserts into a table in memory: upserts its rows, and logs them as its changes.
#[derive(Debug)]
pub(super) struct TableLogInserter {
    pub(super) state: Arc<TableState>,
    pub(super) log: LogInserter,
}

#[async_trait::async_trait]
impl crate::provider::Inserter for TableLogInserter {
    async fn insert(&self, batch: RecordBatch) -> datafusion::error::Result<()> {
        self.state.upsert(&batch)?;
        // The table's rows have no rowtime; the log's do, stamped as a stream's are.
        let mut columns = batch.columns().to_vec();
        columns.push(arrow::array::new_null_array(
            &DataType::Timestamp(TimeUnit::Millisecond, None),
            batch.num_rows(),
        ));
        let batch = RecordBatch::try_new(self.log.log.schema().clone(), columns)?;
        self.log.insert(batch).await
    }
}

#[async_trait::async_trait]
impl crate::provider::Inserter for LogInserter {
    async fn insert(&self, batch: RecordBatch) -> datafusion::error::Result<()> {
        let batch = crate::format::common::stamp(batch, self.timestamp, self.pattern.as_deref())
            .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
        self.log.append(batch);
        Ok(())
    }
}
