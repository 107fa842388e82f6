//! What a query task is given: its input (restored from a checkpoint when state is durable),
//! its dead-letter sink, and its place among the running queries.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use eddy_connector::Sink;
use eddy_generator::Generator;
use tokio::sync::watch;

use super::catalog::{decoded_schema, Running, Spec};
use super::task::{OnError, Stats, Task, TaskOutput};
use super::Engine;
use crate::checkpoint::QueryState;
use crate::connectors;
use crate::format::{KeyFormat, KeyWindow, ValueDecoder, ValueFormat};
use crate::input::Input;
use crate::pipeline::Processor;
use crate::provider::TableState;
use crate::repartition::{Forward, Repartition, Router};
use crate::{Error, Result};

impl Engine {
    /// An input reading `relation` for query `id`: a persistent query (`transient` is `None`)
    /// reads from the beginning, a transient one from the end unless `Some(true)`.
    pub(super) async fn input(
        &self,
        relation: &str,
        id: &str,
        transient: Option<bool>,
    ) -> Result<Input> {
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
                    format!(
                        "{}-{id}-{}",
                        self.config.service_id,
                        crate::format::common::now_ms()
                    )
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
                    )?
                    .with_timestamp_format(r.timestamp, &r.options),
                    next: BTreeMap::new(),
                    hold: true,
                    split: false,
                    later: Vec::new(),
                    repartition: None,
                    nulls_apart: r.kind == crate::statement::Kind::Stream,
                    positions: false,
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
                    )?
                    .with_timestamp_format(r.timestamp, &r.options),
                    next: BTreeMap::new(),
                    hold: matches!(r.spec, Spec::Kafka { .. }),
                    split: false,
                    later: Vec::new(),
                    repartition: None,
                    nulls_apart: false,
                    positions: false,
                }
            }
        })
    }

    /// What query `parsed` reads: its source, or for a stream–stream or table–table join both
    /// inputs, in event-time order (`transient` as for [`Engine::input`]).
    pub(super) async fn query_input(
        &self,
        parsed: &crate::query::Parsed,
        id: &str,
        transient: Option<bool>,
    ) -> Result<Input> {
        let mut left = self.input(&parsed.source, id, transient).await?;
        // Both streams of a stream–stream join, both tables of a table–table join.
        if parsed.within.is_none() && parsed.joined_changelog.is_none() {
            return Ok(left);
        }
        let other = &parsed.joined[0];
        // Its own consumer group and MQTT client id: one per input.
        let mut right = self.input(other, &format!("{id}-right"), transient).await?;
        left.keep_positions();
        right.keep_positions();
        Ok(Input::Join {
            schemas: [
                decoded_schema(&self.relations[&parsed.source]),
                decoded_schema(&self.relations[other]),
            ],
            sides: Box::new([left, right]),
            turn: 0,
            ended: [false; 2],
            pending: Box::new([None, None]),
            started: std::time::Instant::now(),
        })
    }

    /// For an aggregation over a Kafka topic that is not grouped by the topic's key: an input
    /// that forwards the topic's messages to an internal topic of as many partitions, each to
    /// the partition its group hashes to (`_eddy-<service id>-<query id>-repartition`), and
    /// reads that topic. `None` when the source is not a Kafka topic, or a group cannot be
    /// computed from the source's columns alone (an expression over a joined table).
    pub(super) async fn repartitioned_input(
        &self,
        parsed: &crate::query::Parsed,
        id: &str,
    ) -> Result<Option<Input>> {
        let relation = &self.relations[&parsed.source];
        let Spec::Kafka { topic } = &relation.spec else {
            return Ok(None);
        };
        let settings = self.kafka("a repartition topic")?;
        let service = &self.config.service_id;
        let internal = format!("_eddy-{service}-{id}-repartition");
        connectors::ensure_topic(
            settings,
            &internal,
            connectors::partition_count(settings, topic).await?,
        )
        .await?;
        // The topic's own count: it may have been made before the source grew.
        let partitions = connectors::partition_count(settings, &internal).await?;
        let schema = decoded_schema(relation);
        let qualifier = parsed.alias.as_deref().unwrap_or(&parsed.source);
        let router = match Router::new(
            &self.query_ctx(id),
            &schema,
            qualifier,
            &parsed.group_exprs(),
            partitions,
        ) {
            Ok(router) => router,
            Err(e) => {
                tracing::info!(query = id, "not repartitioned: {e}");
                return Ok(None);
            }
        };
        let Input::Source {
            source,
            decoder,
            nulls_apart,
            ..
        } = self.input(&parsed.source, id, None).await?
        else {
            unreachable!("a Kafka relation is read from a source");
        };
        let sink = connectors::kafka_sink(settings, &internal).await?;
        let group = format!("{service}-{id}-repartition");
        let reader = connectors::kafka_source(settings, &group, &internal, true).await?;
        Ok(Some(Input::Source {
            source: reader,
            decoder: decoder.clone(),
            next: BTreeMap::new(),
            hold: true,
            split: false,
            later: Vec::new(),
            repartition: Some(Box::new(Repartition::start(
                Forward::new(source, decoder, router, sink),
                topic,
                self.config.max_batch,
                self.config.commit_interval,
            ))),
            nulls_apart,
            positions: false,
        }))
    }

    /// For a stateful query over a source with offsets, when state is durable: its
    /// checkpoints, with the newest restored into `processor` and `table`, and `input` set to
    /// resume where that checkpoint left off.
    pub(super) async fn restore(
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
        let stateful = processor.as_ref().is_some_and(|p| p.is_stateful());
        if !input.resumable() || !(stateful || table.is_some()) {
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
            input.resume_sides(&checkpoint.offsets, checkpoint.right_offsets().as_ref());
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

    pub(super) async fn dead_letters(&self, relation: &str) -> Result<Option<Box<dyn Sink>>> {
        match self.relations[relation].options.get("dead_letter_topic") {
            Some(topic) => {
                let settings = self.kafka("dead_letter_topic")?;
                Ok(Some(connectors::kafka_sink(settings, topic).await?))
            }
            None => Ok(None),
        }
    }

    pub(super) async fn materialize(&mut self, name: &str) -> Result<()> {
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
            partitioned: None,
            whole: false,
        });
        Ok(())
    }

    /// Starts a query's task and records it as running.
    pub(super) fn spawn(&mut self, launch: Launch) {
        let source = &self.relations[&launch.source];
        // A query over in-memory streams is waited for by `settle`.
        let logs = launch.input.memory_logs();
        let input_schema = decoded_schema(source);
        let (functions, tables) = launch
            .processor
            .as_ref()
            .map(|p| (p.functions(), p.tables.clone()))
            .unwrap_or_default();
        let stats = Arc::new(Stats::default());
        let (stop, stop_rx) = watch::channel(false);
        let mut input = launch.input;
        // A stateful query's state is ahead of its committed offsets: partitions the group
        // hands back resume after what the state has counted. A join keeps one state over both
        // streams, read by two consumer groups, so it must hold every partition of each.
        let stateful = launch
            .processor
            .as_ref()
            .filter(|p| p.is_stateful() && input.resumable() && launch.partitioned.is_none());
        let progress: Vec<Arc<crate::progress::Progress>> = match stateful {
            None => Vec::new(),
            Some(p) => {
                let whole = launch.whole || !p.is_aggregate();
                let progress: Vec<_> = input
                    .offsets_each()
                    .iter()
                    .map(|offsets| {
                        let progress = match whole {
                            true => crate::progress::Progress::whole(),
                            false => crate::progress::Progress::default(),
                        };
                        progress.record(offsets);
                        Arc::new(progress)
                    })
                    .collect();
                input.watch_each(&progress);
                progress
            }
        };
        // A stream joined to tables waits for their filling queries (see `table_fill`).
        let joined_tables = match source.kind {
            crate::statement::Kind::Stream => launch
                .reads
                .iter()
                .filter(|r| **r != launch.source && Some(*r) != launch.sink.as_ref())
                .filter_map(|r| {
                    Some(super::task::JoinedTable {
                        name: r.clone(),
                        state: self.relations.get(r)?.table.clone()?,
                        warned: false,
                    })
                })
                .collect(),
            crate::statement::Kind::Table => Vec::new(),
        };
        let task = Task {
            id: launch.id.clone(),
            joined_tables,
            on_error: launch.on_error,
            input,
            input_schema,
            processor: launch.processor,
            table: launch.table,
            output: launch.output,
            dead: launch.dead,
            ctx: self.query_ctx(&launch.id),
            stats: stats.clone(),
            stop: stop_rx,
            commit_interval: self.config.commit_interval,
            max_batch: self.config.max_batch,
            limit: launch.limit,
            state: launch.state,
            progress,
            partitioned: launch.partitioned,
        };
        // A table's filling task starts behind its source, before any join can look.
        if let Some(filled) = task.fills() {
            filled.filled.begin();
        }
        let handle = tokio::spawn(report_panic(launch.id.clone(), stats.clone(), task.run()));
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
                logs,
                tables,
            },
        );
    }
}

/// What a new query task reads, computes and writes; see [`Engine::spawn`].
pub(super) struct Launch {
    pub(super) id: String,
    pub(super) sql: String,
    /// The relation it writes (`None` for push queries).
    pub(super) sink: Option<String>,
    /// The relation its input comes from.
    pub(super) source: String,
    /// Relations it depends on, which cannot be dropped while it runs.
    pub(super) reads: Vec<String>,
    pub(super) input: Input,
    /// The query's plans; `None` for the task keeping a table up to date.
    pub(super) processor: Option<Processor>,
    /// The table such a task keeps up to date.
    pub(super) table: Option<Arc<TableState>>,
    pub(super) output: TaskOutput,
    pub(super) dead: Option<Box<dyn Sink>>,
    pub(super) limit: Option<usize>,
    pub(super) on_error: OnError,
    /// Its checkpoints, when its state is durable.
    pub(super) state: Option<QueryState>,
    /// Its processors and checkpoints per input partition, when it keeps state that way.
    pub(super) partitioned: Option<super::partitioned::Partitioned>,
    /// Whether it is an aggregation whose state cannot be split by partition, so must not run
    /// in two processes at once.
    pub(super) whole: bool,
}

/// Runs a query's task; should it panic (a bug in Eddy, never the input's fault), the query
/// stops with the panic as its last error in `SHOW QUERIES`, and the engine goes on.
async fn report_panic(id: String, stats: Arc<Stats>, run: impl std::future::Future<Output = ()>) {
    use futures::FutureExt as _;
    if let Err(panic) = std::panic::AssertUnwindSafe(run).catch_unwind().await {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        tracing::error!(query = %id, "stopped by an internal error: {what}");
        stats.error(format!(
            "stopped by an internal error (a bug in Eddy; please report it): {what}"
        ));
        stats
            .finished
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
