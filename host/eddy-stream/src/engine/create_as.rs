//! Queries from a SELECT: `CREATE STREAM|TABLE … AS SELECT` and push queries.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema};
use eddy_connector::Options;
use tokio::sync::mpsc;

use super::catalog::{Relation, Spec};
use super::launch::Launch;
use super::options;
use super::partitioned::Partitioned;
use super::task::{OnError, TaskOutput};
use super::{Engine, Output, PushQuery};
use crate::connectors;
use crate::format::records::StreamRecords;
use crate::format::{KeyFormat, ValueFormat};
use crate::log::Log;
use crate::pipeline::Processor;
use crate::provider::{StreamProvider, TableProviderImpl, TableState};
use crate::query;
use crate::statement::Kind;
use crate::{Error, Result};
use datafusion::sql::sqlparser::ast::Expr;

impl Engine {
    /// Plans a continuous query; `table` when its output is a table (which shows the window
    /// bounds of a windowed aggregation).
    pub(super) async fn plan(
        &self,
        query_sql: &str,
        id: &str,
        table: bool,
    ) -> Result<(query::Parsed, Processor)> {
        let mut parsed = query::parse(query_sql)?;
        match self.relations.get(&parsed.source) {
            // The user's PARTITION BY, not the one a keyed output is planned again with.
            Some(source)
                if !parsed.partition_by.is_empty()
                    && parsed.joined.is_empty()
                    && !source.keys.is_empty() =>
            {
                let columns: Vec<String> = source
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                parsed.star_after_repartition(&columns, &source.keys);
            }
            _ => {}
        }
        self.plan_parsed(parsed, id, table).await
    }

    /// [`Engine::plan`], for a query parsed already.
    async fn plan_parsed(
        &self,
        mut parsed: query::Parsed,
        id: &str,
        table: bool,
    ) -> Result<(query::Parsed, Processor)> {
        parsed.check_projection()?;
        let Some(source) = self.relations.get(&parsed.source) else {
            return Err(Error::NotFound(format!(
                "stream '{}' does not exist (SHOW STREAMS lists them)",
                parsed.source
            )));
        };
        // A table's changes: its topic's records, what is inserted into it in memory, or the
        // log of the query that writes it (with deletions when the query selects its keys).
        let changes_of_table = source.kind == Kind::Table;
        let mut input_schema = source.schema.clone();
        match &source.spec {
            _ if !changes_of_table => {}
            Spec::Derived { .. } if !source.logs_deletions => {}
            Spec::Kafka { .. } | Spec::Memory | Spec::Derived { .. } => {
                input_schema = super::catalog::decoded_schema(source);
                parsed.changelog = Some(query::Changelog::of(source));
            }
            _ => {
                return Err(Error::Unsupported(format!(
                    "a continuous query over table '{}', which has no changes to follow: read a \
                     stream, and JOIN the table to it",
                    parsed.source
                )))
            }
        }
        if !parsed.joined.is_empty() {
            let names = |relation: &str| -> Vec<String> {
                self.relations.get(relation).map_or_else(Vec::new, |r| {
                    r.schema.fields().iter().map(|f| f.name().clone()).collect()
                })
            };
            let mut columns = vec![(
                parsed
                    .alias
                    .clone()
                    .unwrap_or_else(|| parsed.source.clone()),
                names(&parsed.source),
            )];
            for (relation, alias) in parsed.joined.iter().zip(&parsed.joined_aliases) {
                columns.push((alias.clone(), names(relation)));
            }
            parsed.name_join_columns(&columns);
        }
        let mut other = None;
        let joined = parsed.joined.clone();
        for (index, j) in joined.iter().enumerate() {
            let relation = self.relations.get(j);
            if let Some(r) = relation {
                check_join_windows((&parsed.source, &self.relations[&parsed.source]), (j, r))?;
            }
            match relation {
                // Two tables with changes to follow: a table–table join.
                Some(r)
                    if parsed.changelog.is_some()
                        && r.kind == Kind::Table
                        && (matches!(r.spec, Spec::Kafka { .. } | Spec::Memory)
                            || r.logs_deletions) =>
                {
                    parsed.joined_changelog = Some(query::Changelog::of(r));
                    other = Some(super::catalog::decoded_schema(r));
                }
                Some(r) if r.kind == Kind::Table && r.table.is_some() => {
                    let alias = &parsed.joined_aliases[index];
                    parsed.check_stream_table_join(index, j, alias, &r.keys)?;
                    if parsed.within.is_some() {
                        return Err(Error::Plan(format!(
                            "A window definition was provided for a Stream-Table join: '{j}' is \
                             a table, and these joins are not windowed. Drop the WITHIN clause"
                        )));
                    }
                }
                Some(r) if r.kind == Kind::Stream && changes_of_table => {
                    return Err(Error::Unsupported(format!(
                        "joining the changes of table '{}' to stream '{j}'",
                        parsed.source
                    )))
                }
                Some(r) if r.kind == Kind::Stream => {
                    if parsed.within.is_none() {
                        return Err(Error::Plan(format!(
                            "Stream-Stream joins must have a WITHIN clause specified. None was \
                             provided: join '{j}' with e.g. JOIN {j} WITHIN 1 HOUR ON …"
                        )));
                    }
                    // Each row would come on both sides and pair with itself, as ksqlDB refuses.
                    if *j == parsed.source {
                        return Err(Error::Unsupported(format!(
                            "Can not join '{j}' to '{j}': self joins are not supported"
                        )));
                    }
                    other = Some(super::catalog::decoded_schema(r));
                }
                Some(_) => {
                    return Err(Error::Unsupported(format!(
                        "joining stream '{}' to '{j}', which is neither a stream nor a table \
                         with a PRIMARY KEY",
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
            Processor::plan(&self.query_ctx(id), &parsed, input_schema, other, id, table).await?;
        let followed = parsed.changelog.is_none() && processor.is_aggregate();
        let stream_joined = !parsed.joined.is_empty() && parsed.joined_changelog.is_none();
        if changes_of_table && (followed || stream_joined) {
            self.drop_tables(&processor.tables);
            return Err(Error::Unsupported(format!(
                "aggregating or joining table '{}', whose query does not select all its key \
                 columns (its GROUP BY columns, and windowstart and windowend for a windowed \
                 table): select them, so that its rows have keys to follow",
                parsed.source
            )));
        }
        Ok((parsed, processor))
    }

    /// `result`, after dropping the tables a planned query registered (its processor's
    /// `tables`) when it is an error: how a statement that fails after `plan` leaves the
    /// session as it found it.
    pub(super) fn unplan_on_error<T>(&self, tables: &[String], result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.drop_tables(tables);
        }
        result
    }

    /// The record key of a stream query that writes `name` to Kafka, as ksqlDB keys it, with
    /// the key format of its source: a projection (and filter) of a stream with `KEY` columns
    /// keeps those columns, which it must select once each; a stream–table or stream–stream
    /// join `ON a = b` is keyed by `a` or `b`, whichever it selects. ksqlDB's messages
    /// otherwise. `None` for every other query.
    fn record_key(
        &self,
        kind: Kind,
        parsed: &query::Parsed,
        aggregate: bool,
        name: &str,
        options: &Options,
    ) -> std::result::Result<Option<(Vec<Expr>, KeyFormat)>, String> {
        let source = &self.relations[&parsed.source];
        if kind != Kind::Stream
            || aggregate
            || !options.contains_key("kafka_topic")
            || source.kind != Kind::Stream
        {
            return Ok(None);
        }
        let format = KeyFormat::from_options(&source.options)
            .map_err(|e| e.to_string())?
            .filter(|f| *f != KeyFormat::None)
            .unwrap_or(KeyFormat::Kafka);
        let joined_stream_or_table = !parsed.joined.is_empty()
            && parsed.changelog.is_none()
            && !parsed.grouped
            && parsed.window.is_none()
            && parsed.partition_by.is_empty()
            && (parsed.within.is_some()
                || parsed.joined.iter().all(|joined| {
                    self.relations
                        .get(joined)
                        .is_some_and(|r| r.kind == Kind::Table)
                }));
        if joined_stream_or_table {
            let Some(keys) = parsed.join_keys() else {
                return Ok(None);
            };
            return match keys.iter().find(|e| parsed.selects(e)) {
                Some(key) => {
                    // Selected twice, as ksqlDB words it: the key as the join names it
                    // (`L_A` for `l.a`), then the names it is selected under, sorted.
                    let mut names: Vec<String> = parsed
                        .names_selecting(key)
                        .iter()
                        .map(|n| n.to_uppercase())
                        .collect();
                    if names.len() > 1 {
                        names.sort();
                        let shown = key.to_string().replace('.', "_");
                        return Err(Processor::key_selected_twice(&shown, &names));
                    }
                    Ok(Some((vec![key.clone()], format)))
                }
                None => {
                    let names: Vec<String> =
                        keys.iter().map(|k| k.to_string().to_uppercase()).collect();
                    let listed = match names.split_last() {
                        Some((last, [])) => last.clone(),
                        Some((last, init)) => format!("{} or {last}", init.join(", ")),
                        None => String::new(),
                    };
                    // ksqlDB's wording: plural for several candidates of several joins.
                    let noun = if parsed.joined.len() > 1 && names.len() > 1 {
                        "expressions"
                    } else {
                        "expression"
                    };
                    Err(format!(
                        "The query used to build `{name}` must include the join {noun} \
                         {listed} in its projection (eg, SELECT {}...).",
                        names[0]
                    ))
                }
            };
        }
        if !parsed.is_projection() || source.keys.is_empty() {
            return Ok(None);
        }
        let selections = parsed.selections_of(&source.keys);
        let missing: Vec<String> = source
            .keys
            .iter()
            .zip(&selections)
            .filter(|(_, s)| s.is_empty())
            .map(|(k, _)| k.to_uppercase())
            .collect();
        if !missing.is_empty() {
            let (what, listed) = match missing.as_slice() {
                [one] => ("key column", one.clone()),
                [init @ .., last] => ("key columns", format!("{} and {last}", init.join(", "))),
                [] => unreachable!("not empty"),
            };
            return Err(format!(
                "The query used to build `{name}` must include the {what} {listed} in its \
                 projection (eg, SELECT {}...).",
                missing.join(", ")
            ));
        }
        for (key, names) in source.keys.iter().zip(&selections) {
            if names.len() > 1 {
                let shown: Vec<String> = names.iter().map(|n| n.to_uppercase()).collect();
                return Err(Processor::key_selected_twice(key, &shown));
            }
        }
        let keys = source
            .keys
            .iter()
            .map(|c| Expr::Identifier(datafusion::sql::sqlparser::ast::Ident::with_quote('"', c)))
            .collect();
        Ok(Some((keys, format)))
    }

    // The statement's parts, as parsed, and how its properties say to emit.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn create_as(
        &mut self,
        kind: Kind,
        name: &str,
        or_replace: bool,
        options: Options,
        query_sql: &str,
        sql: &str,
        each_record: bool,
    ) -> Result<Output> {
        self.check_new_name(name, or_replace)?;
        // `format` sets the key format only of a relation with a key, known once planned.
        let mut options = options;
        let both_formats = options.get("format").cloned();
        options::split_format(&mut options, false)?;
        options::check_query(&options)?;
        ValueFormat::from_options(&options)?;
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
        // As in ksqlDB, what a query writes to Kafka is in its source's value format unless it
        // names one.
        if options.contains_key("kafka_topic") && !options.contains_key("value_format") {
            for option in ["value_format", "value_delimiter"] {
                if let Some(v) = self.relations[&parsed.source].options.get(option) {
                    options
                        .entry(option.to_string())
                        .or_insert_with(|| v.clone());
                }
            }
        }
        let format = match ValueFormat::from_options(&options) {
            Ok(format) => format,
            Err(e) => return fail(self, &processor, &e.to_string()),
        };
        if kind == Kind::Stream && aggregate {
            return fail(
                self,
                &processor,
                "your SELECT query produces a TABLE (it aggregates): use CREATE TABLE … AS SELECT",
            );
        }
        let over_table = parsed.changelog.is_some();
        if kind == Kind::Stream && over_table {
            return fail(
                self,
                &processor,
                &format!(
                    "Invalid result type. Your SELECT query produces a TABLE (it reads table \
                     '{}'). Please use CREATE TABLE AS SELECT statement instead.",
                    parsed.source
                ),
            );
        }
        if kind == Kind::Table && !aggregate && !over_table {
            return fail(self, &processor, "your SELECT query produces a STREAM: use CREATE STREAM … AS SELECT (tables come from aggregations: GROUP BY, or a WINDOW)");
        }
        // A stream written to Kafka is keyed as ksqlDB keys it (see `record_key`): planned
        // again with its key as its PARTITION BY, so that the key moves from the value to the
        // record key.
        let key = match self.record_key(kind, &parsed, aggregate, name, &options) {
            Ok(key) => key,
            Err(e) => return fail(self, &processor, &e),
        };
        let (parsed, processor, source_key_format) = match key {
            None => (parsed, processor, None),
            Some((exprs, format)) => {
                self.drop_tables(&processor.tables);
                let mut parsed = parsed;
                parsed.partition_by = exprs;
                let (parsed, processor) = self.plan_parsed(parsed, &id, false).await?;
                (parsed, processor, Some(format))
            }
        };
        let event_time = match options.get("timestamp") {
            None => None,
            Some(column) => match event_time_column(kind, processor.schema(), column) {
                Ok(i) => Some(i),
                Err(e) => return fail(self, &processor, &e),
            },
        };
        // A table written to Kafka is keyed by its GROUP BY, a stream by its PARTITION BY; the
        // value holds the rest.
        let keyed = kind == Kind::Table || !parsed.partition_by.is_empty();
        if let (true, Some(format)) = (keyed, &both_formats) {
            options.insert("key_format".into(), format.clone());
        }
        let records = match (keyed, options.contains_key("kafka_topic")) {
            (true, true) => {
                // As in ksqlDB, an output's key takes its source's key format unless the query
                // names one.
                let inherited = KeyFormat::from_options(&self.relations[&parsed.source].options)
                    .ok()
                    .flatten()
                    .filter(|f| *f != KeyFormat::None);
                let layout = KeyFormat::from_options(&options).and_then(|key_format| {
                    processor.table_records(
                        &parsed,
                        name,
                        key_format.or(source_key_format).or(inherited),
                        source_key_format.is_some(),
                    )
                });
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
                         (kafka_topic): a table's, a stream's with PARTITION BY, or one that \
                         keeps its source's KEY columns",
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
        // As in ksqlDB, a keyed output needs a value beside its key.
        if records.is_some() && value_fields.iter().all(|f| f.name() == "rowtime") {
            return fail(
                self,
                &processor,
                "The projection contains no value columns.",
            );
        }
        // A stream keyed as its source records its key columns and key format, so that what is
        // inserted into it, and queries over it, are keyed alike.
        let stream_keys: Vec<String> = match (&records, source_key_format) {
            (Some(layout), Some(_)) => {
                let source = &self.relations[&parsed.source];
                for option in ["key_format", "key_delimiter"] {
                    if let (false, Some(v)) =
                        (options.contains_key(option), source.options.get(option))
                    {
                        options.insert(option.to_string(), v.clone());
                    }
                }
                options
                    .entry("key_format".to_string())
                    .or_insert_with(|| "KAFKA".to_string());
                layout.key_names.clone()
            }
            _ => Vec::new(),
        };
        if let Err(e) = format.check_with(&options, name, &value_fields) {
            return fail(self, &processor, &e.to_string());
        }
        let sink = match options.get("kafka_topic") {
            Some(topic) => {
                let settings = self.kafka(&format!("{} {name}", kind.as_str())).cloned();
                let settings = self.unplan_on_error(&processor.tables, settings)?;
                let partitions = options::partitions(&options);
                let partitions = self
                    .unplan_on_error(&processor.tables, partitions)?
                    .unwrap_or(1);
                let sink = async {
                    connectors::ensure_topic(&settings, topic, partitions).await?;
                    connectors::kafka_sink(&settings, topic).await
                }
                .await;
                Some(self.unplan_on_error(&processor.tables, sink)?)
            }
            None => None,
        };
        // An aggregation over a table's changes is not split by partition: a row's retraction
        // belongs to its old group, which may hash elsewhere than its new one.
        let by_key = !over_table && parsed.groups_by_columns(&self.relations[&parsed.source].keys);
        // With durable state, an aggregation not grouped by its topic's key reads its rows
        // re-keyed through a repartition topic, so that its state too is kept per partition.
        let repartitioned = match self.config.state {
            Some(_) if aggregate && !by_key && !over_table && parsed.joined.is_empty() => {
                self.repartitioned_input(&parsed, &id).await
            }
            _ => Ok(None),
        };
        let input = match self.unplan_on_error(&processor.tables, repartitioned)? {
            Some(input) => Ok(input),
            None => self.query_input(&parsed, &id, None).await,
        };
        let mut input = self.unplan_on_error(&processor.tables, input)?;
        let dedupe = input.dedupe();
        let dead = self.dead_letters(&parsed.source).await;
        let dead = self.unplan_on_error(&processor.tables, dead)?;
        let schema = processor.schema().clone();
        // A table's key columns, as DESCRIBE shows them: the selected GROUP BY columns, and the
        // window bounds of a windowed table.
        // Each group column (the GROUP BY values, then a windowed table's bounds) and the
        // visible column that shows it, if the query selects one.
        let key_names = parsed.key_names();
        let shown: Vec<Option<usize>> = key_names
            .iter()
            .map(|(_, name)| name.clone())
            .chain(
                windowed
                    .then(|| ["windowstart".to_string(), "windowend".to_string()])
                    .into_iter()
                    .flatten()
                    .map(Some),
            )
            .map(|name| name.and_then(|n| schema.index_of(&n).ok()))
            .collect();
        let processor_keys: Vec<String> = shown
            .iter()
            .flatten()
            .map(|&i| schema.field(i).name().clone())
            .collect();
        // When every key column is selected, a table's log carries its deletions too, as rows
        // with only their key, so that queries over it follow it as they follow a topic's
        // records.
        let log_keys: Option<Vec<(usize, usize)>> = (kind == Kind::Table && !key_names.is_empty())
            .then(|| {
                shown
                    .iter()
                    .enumerate()
                    .map(|(group, visible)| Some(((*visible)?, group)))
                    .collect()
            })
            .flatten();
        let log = Arc::new(Log::new(schema.clone(), self.config.retained_rows));
        self.forget(name)?;
        // A table holds the latest row per key (and window); its log is the change stream.
        let table = (kind == Kind::Table).then(|| TableState::new(schema.clone(), Vec::new()));
        let mut processor = processor;
        let source = &self.relations[&parsed.source];
        // An aggregation over a topic keyed by its GROUP BY columns (or over its repartition
        // topic) finds each group's events in one partition: it keeps its state per partition,
        // so partitions can move between processes with it.
        let per_partition = match &self.config.state {
            Some(store)
                if processor.is_aggregate()
                    && matches!(source.spec, Spec::Kafka { .. })
                    && (by_key || dedupe.is_some()) =>
            {
                let base = store.query(&id, &format!("{sql} {}", source.sql));
                // State an earlier Eddy kept whole for this query is not split by partition:
                // starting without it would silently lose what it counted.
                if dedupe.is_some() {
                    let whole = base.holds_whole_state().await.and_then(|whole| {
                        if whole {
                            Err(Error::State(format!(
                                "the checkpoints in {} hold this query's state for all \
                                 partitions in one, as Eddy kept it before it repartitioned \
                                 such queries; move them away to start this query over from its \
                                 committed offsets",
                                base.location()
                            )))
                        } else {
                            Ok(())
                        }
                    });
                    self.unplan_on_error(&processor.tables, whole)?;
                }
                let parts = Partitioned::new(
                    base,
                    dedupe.clone(),
                    parsed.clone(),
                    source.schema.clone(),
                    &id,
                    kind == Kind::Table,
                );
                input.watch_partitions(parts.handover());
                input.split_partitions();
                Some(parts)
            }
            _ => None,
        };
        let durable = match per_partition {
            Some(_) => Ok(None),
            None => {
                self.restore(
                    &id,
                    (sql, &parsed.source),
                    &mut input,
                    Some(&mut processor),
                    table.as_deref(),
                )
                .await
            }
        };
        let durable = self.unplan_on_error(&processor.tables, durable)?;
        // INSERT … VALUES appends to the stream as the query does: to its log, and to its
        // topic when it writes one (not when it keys its records with PARTITION BY).
        let inserter = match (ends_in_rowtime(&schema), options.get("kafka_topic")) {
            (false, _) => None,
            (true, topic) => {
                let log = Arc::new(super::source::LogInserter {
                    log: log.clone(),
                    timestamp: event_time,
                    pattern: None,
                });
                match topic {
                    None => Some(log as Arc<dyn crate::provider::Inserter>),
                    Some(_) if !parsed.partition_by.is_empty() && stream_keys.is_empty() => None,
                    Some(topic) => {
                        let settings = self.kafka("INSERT INTO a Kafka topic");
                        let settings = self.unplan_on_error(&processor.tables, settings)?;
                        let records = StreamRecords::of(&options, &schema, &stream_keys);
                        let records = self.unplan_on_error(&processor.tables, records)?;
                        Some(Arc::new(super::insert::TeeInserter {
                            log,
                            topic: super::insert::TopicInserter::new(
                                settings,
                                topic,
                                records,
                                Some(event_time),
                                None,
                            ),
                        }) as _)
                    }
                }
            }
        };
        let provider: Arc<dyn datafusion::catalog::TableProvider> = match &table {
            Some(state) => Arc::new(TableProviderImpl {
                state: state.clone(),
                inserter: None,
                name: name.to_string(),
                read_only: false,
            }),
            None => Arc::new(StreamProvider {
                name: name.to_string(),
                log: Some(log.clone()),
                external: None,
                inserter,
                schema: schema.clone(),
                read_only: false,
            }),
        };
        self.ctx().register_table(name, provider)?;
        self.relations.insert(
            name.to_string(),
            Relation {
                kind,
                keys: match kind {
                    Kind::Table => processor_keys,
                    Kind::Stream => stream_keys,
                },
                schema: schema.clone(),
                spec: Spec::Derived { query: id.clone() },
                options,
                log: Some(log.clone()),
                table: table.clone(),
                timestamp: None,
                sql: sql.to_string(),
                windowed,
                logs_deletions: log_keys.is_some(),
                read_only: false,
            },
        );
        self.sync_writers();
        let null_values = kind == Kind::Stream && parsed.passes_null_values();
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
                encoding: StreamRecords::plain(format),
                log: Some(log),
                sink,
                channel: None,
                table,
                records,
                event_time,
                log_keys: log_keys.unwrap_or_default(),
                null_values,
                each_record,
                ..TaskOutput::default()
            },
            dead,
            limit: None,
            on_error,
            state: durable,
            partitioned: per_partition,
            whole: aggregate && !by_key && dedupe.is_none(),
        });
        Ok(Output::Message(format!(
            "{} {name} created; query {id} is running",
            kind.as_str()
        )))
    }

    pub(super) async fn push(
        &mut self,
        query_sql: &str,
        limit: Option<usize>,
        sql: &str,
        earliest: bool,
        each_record: bool,
    ) -> Result<Output> {
        let id = self.new_id("TRANSIENT", "QUERY");
        let (parsed, processor) = self.plan(query_sql, &id, false).await?;
        let input = self.query_input(&parsed, &id, Some(earliest)).await;
        let input = self.unplan_on_error(&processor.tables, input)?;
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
                channel: Some(tx),
                table: None,
                records: None,
                each_record,
                ..TaskOutput::default()
            },
            dead: None,
            limit,
            on_error: OnError::Skip,
            state: None,
            partitioned: None,
            whole: false,
        });
        Ok(Output::Push(PushQuery {
            id,
            schema,
            rows: rx,
        }))
    }
}

/// The column of a stream query's output whose value becomes each row's `rowtime`, as ksqlDB's
/// `WITH (timestamp=…)` on a query sets it: a BIGINT (ms) or TIMESTAMP column it selects.
/// Whether rows of `schema` carry their event time as `rowtime`, the last column.
fn ends_in_rowtime(schema: &arrow::datatypes::Schema) -> bool {
    schema
        .fields()
        .last()
        .is_some_and(|f| f.name() == "rowtime")
}

fn event_time_column(
    kind: Kind,
    schema: &arrow::datatypes::SchemaRef,
    column: &str,
) -> std::result::Result<usize, String> {
    if kind == Kind::Table {
        return Err(
            "option 'timestamp' on a table written by a query: its rowtime is the \
                    latest event time of the row's group (and window)"
                .into(),
        );
    }
    let fields = schema.fields();
    let Some(i) = fields
        .iter()
        .position(|f| f.name().eq_ignore_ascii_case(column.trim()))
    else {
        let names: Vec<String> = fields
            .iter()
            .filter(|f| f.name() != "rowtime")
            .map(|f| f.name().clone())
            .collect();
        return Err(format!(
            "timestamp column '{column}' is not in the query's output ({})",
            names.join(", ")
        ));
    };
    match fields[i].data_type() {
        arrow::datatypes::DataType::Int64 | arrow::datatypes::DataType::Timestamp(..)
            if fields.last().is_some_and(|f| f.name() == "rowtime") =>
        {
            Ok(i)
        }
        _ => Err(format!(
            "timestamp column '{column}' must be BIGINT (ms) or TIMESTAMP"
        )),
    }
}

/// Refuses, with ksqlDB's messages, a join of a windowed source (one read from a topic with
/// `window_type`) to an unwindowed one, or of a session-windowed source to a time-windowed one.
fn check_join_windows(left: (&str, &Relation), right: (&str, &Relation)) -> Result<()> {
    let window = |r: &Relation| {
        r.options
            .get("window_type")
            .map(|w| w.trim().to_uppercase())
    };
    let (l, r) = (window(left.1), window(right.1));
    let name = |n: &str| n.to_uppercase();
    match (&l, &r) {
        (Some(w), None) | (None, Some(w)) => {
            let (windowed, plain) = if l.is_some() {
                (left.0, right.0)
            } else {
                (right.0, left.0)
            };
            Err(Error::Plan(format!(
                "Can not join windowed source to non-windowed source.\n`{}` is {w} windowed\n`{}` \
                 is not windowed",
                name(windowed),
                name(plain)
            )))
        }
        (Some(a), Some(b)) if (a == "SESSION") != (b == "SESSION") => Err(Error::Plan(format!(
            "Incompatible windowed sources.\nLeft source: {a}\nRight source: {b}\nSession \
             windowed sources can only be joined to other session windowed sources, and may still \
             not result in expected behaviour as session bounds must be an exact match for the \
             join to work\nHopping and tumbling windowed sources can only be joined to other \
             hopping and tumbling windowed sources"
        ))),
        _ => Ok(()),
    }
}
