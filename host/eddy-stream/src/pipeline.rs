//! One continuous query's processing: its DataFusion plans and window state.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{RecordBatch, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;

use crate::aggregate::Aggregation;
use crate::changes::{TableRecords, WindowKey};
use crate::checkpoint::Checkpoint;
use crate::format::KeyFormat;
use crate::join_within::JoinWithin;
use crate::provider::{Slot, TableState};
use crate::query::{Emit, Parsed, WindowKind, HIDDEN, SIGN};
use crate::reused_plan::ReusedPlan;
use crate::table_join::TableJoin;
use crate::window::WindowState;
use crate::{Error, Result};

pub(crate) use eddy_metrics::{Histogram, HistogramSnapshot};

/// A query's plans, ready to run batch after batch.
pub(crate) struct Processor {
    input: Arc<Slot>,
    /// The stateless plan, or an aggregation's first step (WHERE, and the GROUP BY keys).
    plan: LogicalPlan,
    aggregate: Option<Aggregating>,
    /// Output columns in order: the visible ones (`rowtime` last), then an aggregation's hidden
    /// group columns and its tombstone flag.
    order: Vec<usize>,
    /// What `process` returns.
    full: SchemaRef,
    /// The visible columns.
    schema: SchemaRef,
    /// Visible columns the engine added: a windowed table's `windowstart` and `windowend`.
    exposed: Vec<usize>,
    appended_rowtime: bool,
    /// Temporary tables registered for this query, removed when it stops.
    pub tables: Vec<String>,
    /// `plan`, optimised and planned once, for queries that read nothing but their input; a
    /// join plans each batch anew, as its table scans take the table as it is then.
    physical: Option<ReusedPlan>,
    /// Whether `physical` may be kept.
    reusable: bool,
    /// A stream–stream join's buffers and matching plan: batches go through it first.
    within: Option<Box<JoinWithin>>,
    /// For an aggregation over a table's changes, the table's rows: each change retracts the
    /// row it replaces before it adds its own (see [`crate::query::SIGN`]).
    retract: Option<Arc<TableState>>,
    /// A table–table join's tables: batches of either change them, then run the join.
    table_join: Option<Box<TableJoin>>,
}

/// The column that numbers a batch's events, where a join would lose their order.
const ORDINAL: &str = "__eddy_row";

struct Aggregating {
    /// The aggregation's logical plan, for the functions it calls.
    plan: LogicalPlan,
    aggregation: Aggregation,
    /// Window assignment, for a windowed aggregation.
    window: Option<WindowState>,
    emit: Emit,
    /// Per window end, the earliest source offsets whose rows it holds.
    held: BTreeMap<i32, i64>,
    /// Table rows of windows that ended at or before this time may go (see `RETENTION`).
    expired: Option<i64>,
}

/// How long a windowed table keeps a window's row after it closes, when the query does not say.
const DEFAULT_RETENTION_MS: i64 = 24 * 3_600_000;

impl Processor {
    /// Plans `parsed` reading rows of `input` (a stream schema ending in `rowtime`), and of
    /// `other` for a stream–stream join. A windowed aggregation writing a table shows
    /// `windowstart` and `windowend` when `expose_window`, as they are part of its key.
    pub(crate) async fn plan(
        ctx: &SessionContext,
        parsed: &Parsed,
        input: SchemaRef,
        other: Option<SchemaRef>,
        id: &str,
        expose_window: bool,
    ) -> Result<Processor> {
        if let (Some(other), Some(_)) = (&other, &parsed.joined_changelog) {
            let mut tables = Vec::new();
            let planned =
                crate::table_join::plan(ctx, parsed, [input, other.clone()], id, &mut tables)
                    .await
                    .and_then(|p| Ok((output_order(&p.plan)?, p)));
            let ((order, full, schema), planned) = unregister_on_error(ctx, &tables, planned)?;
            return Ok(Processor {
                input: Slot::new(Arc::new(Schema::empty())),
                plan: planned.plan,
                aggregate: None,
                order,
                full,
                exposed: Vec::new(),
                schema,
                appended_rowtime: planned.appended_rowtime,
                tables,
                physical: None,
                // The slots hold other rows at each batch: plan each anew.
                reusable: false,
                within: None,
                retract: None,
                table_join: Some(Box::new(planned.join)),
            });
        }
        if let Some(other) = other {
            let mut tables = Vec::new();
            let planned = crate::join_within::plan(ctx, parsed, [input, other], id, &mut tables)
                .await
                .and_then(|p| Ok((output_order(&p.plan)?, p)));
            let ((order, full, schema), planned) = unregister_on_error(ctx, &tables, planned)?;
            return Ok(Processor {
                input: planned.join.slots()[0].clone(),
                plan: planned.plan,
                aggregate: None,
                order,
                full,
                exposed: Vec::new(),
                schema,
                appended_rowtime: planned.appended_rowtime,
                tables,
                physical: None,
                // A hash join's physical plan keeps its first build side: plan each batch.
                reusable: false,
                within: Some(Box::new(planned.join)),
                retract: None,
                table_join: None,
            });
        }
        let in_table = format!("__eddy_{}_in", id.to_lowercase());
        // A join does not keep its input's order, and window assignment must see events in
        // the order they came: a windowed aggregation over a join numbers them.
        let ordinal = !parsed.joined.is_empty() && parsed.window.is_some();
        let input = if ordinal {
            let mut fields: Vec<Field> =
                input.fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.push(Field::new(ORDINAL, DataType::UInt64, false));
            Arc::new(Schema::new(fields))
        } else {
            input
        };
        // An aggregation over a table's changes reads them signed: see `query::SIGN`.
        let retract = match &parsed.changelog {
            Some(changelog) if parsed.grouped || parsed.window.is_some() => {
                if parsed.window.is_some() {
                    return Err(Error::Unsupported(format!(
                        "a WINDOW over table '{}': windows group a stream's events by time; \
                         aggregate the table without one",
                        parsed.source
                    )));
                }
                let keys = changelog
                    .keys
                    .iter()
                    .map(|k| input.index_of(k))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let rows = TableState::new(input.clone(), keys);
                let mut fields: Vec<Field> =
                    input.fields().iter().map(|f| f.as_ref().clone()).collect();
                fields.push(Field::new(SIGN, DataType::Int64, false));
                Some((rows, Arc::new(Schema::new(fields))))
            }
            _ => None,
        };
        let (retract, input) = match retract {
            Some((rows, signed)) => (Some(rows), signed),
            None => (None, input),
        };
        let slot = Slot::new(input);
        ctx.register_table(in_table.as_str(), slot.clone())?;
        let mut tables = vec![in_table.clone()];
        let result =
            Self::plan_inner(ctx, parsed, &in_table, slot, id, &mut tables, expose_window).await;
        let mut processor = unregister_on_error(ctx, &tables, result)?;
        // A table function makes rows of one row, which a table's later change of that row
        // could not take back: ksqlDB refuses them over tables, with this message.
        if parsed.changelog.is_some()
            && processor
                .plan
                .exists(|p| Ok(matches!(p, LogicalPlan::Unnest(_))))
                .unwrap_or(false)
        {
            let refused = Err(Error::Plan(
                "Table source is not supported with table functions".into(),
            ));
            unregister_on_error(ctx, &processor.tables, refused)?;
        }
        if let Some(rows) = retract {
            let refused = processor.refuse_unretractable(&parsed.source);
            unregister_on_error(ctx, &processor.tables, refused)?;
            processor.retract = Some(rows);
        }
        Ok(processor)
    }

    /// Refuses an aggregation over a table's changes that calls an aggregate it cannot
    /// retract (all but plain `COUNT`, `SUM` and `AVG`, rewritten to sums over the sign, and
    /// `COLLECT_LIST`/`COLLECT_SET`, which take the sign), with
    /// ksqlDB's message.
    fn refuse_unretractable(&self, source: &str) -> Result<()> {
        let mut names: Vec<String> = Vec::new();
        if let Some(a) = &self.aggregate {
            let _ = a.plan.apply(|node| {
                if let LogicalPlan::Aggregate(agg) = node {
                    for e in &agg.aggr_expr {
                        let _ = e.apply(|e| {
                            if let datafusion::logical_expr::Expr::AggregateFunction(f) = e {
                                let name = f.func.name().to_uppercase();
                                // The output's rowtime, the latest event time, needs no retraction.
                                let rowtime = matches!(
                                    f.params.args.as_slice(),
                                    [datafusion::logical_expr::Expr::Column(c)] if c.name == "rowtime"
                                );
                                // Rewritten aggregates read the sign; the others cannot retract.
                                let signed = f.params.args.iter().any(|a| {
                                    a.column_refs().iter().any(|c| c.name == SIGN)
                                });
                                if !signed && !rowtime && !names.contains(&name) {
                                    names.push(name);
                                }
                            }
                            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
                        });
                    }
                }
                Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
            });
        }
        let Some((last, first)) = names.split_last() else {
            return Ok(());
        };
        let listed = match first {
            [] => format!("function {last}"),
            _ => format!("functions {} and {last}", first.join(", ")),
        };
        Err(Error::Plan(format!(
            "The aggregation {listed} cannot be applied to a table source, only to a stream \
             source. ('{source}' is a table: its rows change, and only COUNT, SUM, AVG, \
             COLLECT_LIST and COLLECT_SET can take a changed row back out of its group.)"
        )))
    }

    async fn plan_inner(
        ctx: &SessionContext,
        parsed: &Parsed,
        in_table: &str,
        slot: Arc<Slot>,
        id: &str,
        tables: &mut Vec<String>,
        expose_window: bool,
    ) -> Result<Processor> {
        // An aggregate without GROUP BY (SELECT COUNT(*) FROM s) is told by its plan.
        let aggregates = |plan: &LogicalPlan| {
            plan.exists(|p| Ok(matches!(p, LogicalPlan::Aggregate(_))))
                .unwrap_or(false)
        };
        let global = parsed.window.is_none()
            && !parsed.grouped
            && ctx
                .sql(&parsed.plain_sql(in_table))
                .await
                .is_ok_and(|df| aggregates(df.logical_plan()));
        if global && parsed.changelog.is_some() {
            return Err(Error::Unsupported(format!(
                "an aggregation over table '{}' without GROUP BY: group its rows by a column",
                parsed.source
            )));
        }
        if parsed.window.is_none() && !parsed.grouped && !global {
            let (sql, appended_rowtime) = parsed.stateless_sql(in_table);
            let plan = ctx
                .sql(&sql)
                .await
                .map_err(plan_error)?
                .into_unoptimized_plan();
            let plan = crate::type_check::check(plan)?;
            if !aggregates(&plan) {
                if parsed.emit == Some(Emit::Final) {
                    return Err(Error::Unsupported(
                        "EMIT FINAL without an aggregation: use EMIT CHANGES".into(),
                    ));
                }
                let (order, full, schema) = output_order(&plan)?;
                return Ok(Processor {
                    input: slot,
                    plan,
                    aggregate: None,
                    order,
                    full,
                    exposed: Vec::new(),
                    schema,
                    appended_rowtime,
                    tables: std::mem::take(tables),
                    physical: None,
                    reusable: parsed.joined.is_empty(),
                    within: None,
                    retract: None,
                    table_join: None,
                });
            }
        }
        // Over a join, the rows to aggregate carry the joined tables' columns: by their own
        // names, or `__joined_<alias>_<column>` where the stream has that name too.
        let stream: Vec<String> = slot
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let mut carried = Vec::new();
        for (name, alias) in parsed.joined.iter().zip(&parsed.joined_aliases) {
            let table = ctx.table_provider(name.as_str()).await?;
            for field in table.schema().fields() {
                let column = field.name().clone();
                let taken = stream.iter().any(|s| s.eq_ignore_ascii_case(&column))
                    || carried.iter().any(|(_, _, n): &(String, String, String)| {
                        n.eq_ignore_ascii_case(&column)
                    });
                let as_name = if taken {
                    format!("__joined_{alias}_{column}")
                } else {
                    column.clone()
                };
                carried.push((alias.clone(), column, as_name));
            }
        }
        let (mut filter_sql, keys) = parsed.filter_sql(in_table, &stream, &carried);
        if stream.iter().any(|c| c == ORDINAL) {
            filter_sql.push_str(&format!(" ORDER BY \"{ORDINAL}\""));
        }
        let filter = ctx
            .sql(&filter_sql)
            .await
            .map_err(plan_error)?
            .into_unoptimized_plan();
        let filter = crate::type_check::check(filter)?;
        let filter_schema: SchemaRef = Arc::new(filter.schema().as_arrow().clone());
        let window = match parsed.window {
            Some(w) => Some(WindowState::new(w, &filter_schema, keys)?),
            None => None,
        };
        let rows_table = format!("__eddy_{}_window", id.to_lowercase());
        let rows_schema = window
            .as_ref()
            .map_or_else(|| filter_schema.clone(), |w| w.schema().clone());
        let rows_slot = Slot::new(rows_schema);
        ctx.register_table(rows_table.as_str(), rows_slot.clone())?;
        tables.push(rows_table.clone());
        let aggregate = ctx
            .sql(&parsed.aggregate_sql(&rows_table, &carried))
            .await
            .map_err(plan_error)?
            .into_unoptimized_plan();
        let aggregate = crate::type_check::check(aggregate)?;
        let emit = parsed.emit.unwrap_or(Emit::Changes);
        let aggregation = Aggregation::new(
            ctx,
            &aggregate,
            rows_slot,
            window.is_some(),
            emit == Emit::Changes,
        )
        .await
        .map_err(|e| match e {
            Error::DataFusion(e) => plan_error(e),
            other => other,
        })?;
        let (order, full, schema, exposed) = aggregate_order(
            aggregation.schema(),
            aggregation.hidden(),
            window.is_some() && expose_window,
        )?;
        Ok(Processor {
            input: slot,
            plan: filter,
            aggregate: Some(Aggregating {
                plan: aggregate,
                aggregation,
                window,
                emit,
                held: BTreeMap::new(),
                expired: None,
            }),
            order,
            full,
            schema,
            exposed,
            appended_rowtime: true,
            tables: std::mem::take(tables),
            physical: None,
            reusable: parsed.joined.is_empty(),
            within: None,
            retract: None,
            table_join: None,
        })
    }

    /// ksqlDB's message for a record key column selected more than once, under `names` (at
    /// least two, upper-cased, in the order to list them).
    pub(crate) fn key_selected_twice(key: &str, names: &[String]) -> String {
        let (last, init) = names.split_last().expect("selected twice");
        format!(
            "The projection contains a key column (`{}`) more than once, aliased as: {} and \
             {last}.",
            key.to_uppercase(),
            init.join(", ")
        )
    }

    /// How this query's rows are written to Kafka as `name`, with `key_format` from its
    /// options. A table's key is its GROUP BY, and every GROUP BY expression must be selected; a
    /// stream's is its PARTITION BY expression, a selected column or not. `passed_on` when that
    /// PARTITION BY is the engine's, passing on the source's key (or a join's column).
    pub(crate) fn table_records(
        &self,
        parsed: &Parsed,
        name: &str,
        key_format: Option<KeyFormat>,
        passed_on: bool,
    ) -> Result<TableRecords> {
        let mut keys = Vec::new();
        let stream = !parsed.partition_by.is_empty();
        // A key selected twice would be written twice, as ksqlDB refuses it, in its words. A
        // join's columns of one name from both sides are different columns: not checked here.
        let selections = match parsed.joined.is_empty() {
            true => parsed.key_selections(),
            false => Vec::new(),
        };
        // A query keyed by its source table's PRIMARY KEY is not checked here.
        let grouped = parsed.changelog.is_none();
        for (expr, names) in selections.into_iter().filter(|_| stream || grouped) {
            let shown: Vec<String> = names.iter().map(|n| n.to_uppercase()).collect();
            let Some((last, init)) = shown.split_last().filter(|(_, init)| !init.is_empty()) else {
                continue;
            };
            return Err(Error::Plan(if stream {
                Self::key_selected_twice(&expr, &shown)
            } else {
                format!(
                    "The projection contains a key column more than once: `{}` and `{last}`.",
                    init.join("`, `")
                )
            }));
        }
        let key_names = parsed.key_names();
        for (i, (expr, column)) in key_names.iter().cloned().enumerate() {
            let at = column.and_then(|c| self.schema.index_of(&c).ok());
            if stream && at.is_none() && !passed_on && !parsed.selects_all() && expr != "NULL" {
                let expr = parsed.qualified(&parsed.partition_by[i]);
                return Err(Error::Plan(format!(
                    "The query used to build `{name}` must include the partitioning expression \
                     {expr} in its projection (eg, SELECT {expr}...)."
                )));
            }
            if stream {
                keys.extend(at);
                continue;
            }
            let Some(at) = at else {
                let what = match parsed.changelog {
                    Some(_) => "its source's key column",
                    None => "its GROUP BY expression",
                };
                return Err(Error::Plan(format!(
                    "Key missing from projection: the query writing {name} to Kafka must select \
                     {what} {expr}, which becomes the record key (e.g. SELECT {expr}, …)"
                )));
            };
            keys.push(at);
        }
        let fields = self.schema.fields();
        let key_fields: Vec<Field> = if stream {
            // A selected key is named as its column; another after its expression.
            key_names
                .iter()
                .enumerate()
                .map(|(i, (expr, column))| {
                    let k = self.full.index_of(&format!("{HIDDEN}k{i}"))?;
                    let name = column.clone().unwrap_or_else(|| expr.clone());
                    Ok(self.full.field(k).clone().with_name(name))
                })
                .collect::<Result<_>>()?
        } else {
            keys.iter().map(|&i| fields[i].as_ref().clone()).collect()
        };
        let key_format = match (key_format, key_fields.len()) {
            (Some(f), _) => f,
            (None, 0) => KeyFormat::None,
            (None, _) => KeyFormat::Kafka,
        };
        let what = match (stream, &parsed.changelog) {
            (true, _) => "PARTITION BY",
            (false, Some(_)) => "PRIMARY KEY",
            (false, None) => "GROUP BY",
        };
        key_format.check(
            &format!("the {what} of {name}"),
            &key_fields.iter().collect::<Vec<_>>(),
        )?;
        let value_columns = (0..fields.len())
            .filter(|&i| !keys.contains(&i) && !self.exposed.contains(&i))
            .collect();
        Ok(TableRecords {
            key_format,
            key_names: key_fields.iter().map(|f| f.name().clone()).collect(),
            value_columns,
            keys: key_fields.len(),
            window: parsed.window.map(|w| match w.kind {
                WindowKind::Session { .. } => WindowKey::EndStart,
                _ => WindowKey::Start,
            }),
            all_null_is_no_key: !stream || passed_on,
        })
    }

    /// The visible output schema, `rowtime` last.
    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Whether `rowtime` is in the output only because the engine added it.
    pub(crate) fn appended_rowtime(&self) -> bool {
        self.appended_rowtime
    }

    /// Names of the scalar functions its plans call.
    pub(crate) fn functions(&self) -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::new();
        let plans = std::iter::once(&self.plan).chain(self.aggregate.as_ref().map(|a| &a.plan));
        for plan in plans {
            let _ = plan.apply_with_subqueries(|node| {
                node.apply_expressions(|e| {
                    e.apply(|e| {
                        if let datafusion::logical_expr::Expr::ScalarFunction(f) = e {
                            names.insert(f.func.name().to_string());
                        }
                        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
                    })
                })
            });
        }
        names
    }

    /// When windows closed in the last batch: the window end at or before which a windowed
    /// table's rows are past their retention.
    pub(crate) fn take_expired(&mut self) -> Option<i64> {
        self.aggregate.as_mut().and_then(|a| a.expired.take())
    }

    /// Whether this query aggregates (and so writes a table).
    pub(crate) fn is_aggregate(&self) -> bool {
        self.aggregate.is_some()
    }

    /// Whether a step writes each key it changed once (an aggregation, a table–table join), as
    /// ksqlDB's record cache does: with the cache off, each record runs as a step of its own.
    pub(crate) fn writes_once_per_key(&self) -> bool {
        self.aggregate.is_some() || self.table_join.is_some()
    }

    /// Whether it keeps state a failed batch may already have changed (an aggregation, a
    /// stream–stream join), so the batch cannot be split and run again.
    pub(crate) fn is_stateful(&self) -> bool {
        self.aggregate.is_some() || self.within.is_some() || self.table_join.is_some()
    }

    /// Rows dropped as late so far.
    pub(crate) fn late(&self) -> u64 {
        let joined = self.within.as_ref().map_or(0, |j| j.late);
        self.aggregate
            .as_ref()
            .and_then(|a| a.window.as_ref())
            .map_or(joined, |w| w.late)
    }

    /// Per partition, the earliest offset still needed by aggregation state.
    pub(crate) fn held(&self) -> BTreeMap<i32, i64> {
        match &self.aggregate {
            Some(a) if !a.is_empty() => a.held.clone(),
            _ => BTreeMap::new(),
        }
    }

    /// Adds an aggregation's state (groups, open windows) or a stream–stream join's buffers to
    /// `checkpoint`; false for a stateless query, which has none.
    pub(crate) fn save(&mut self, checkpoint: &mut Checkpoint) -> Result<bool> {
        if let Some(join) = &self.within {
            join.save(checkpoint)?;
        }
        if let Some(join) = &self.table_join {
            join.save(checkpoint)?;
            return Ok(true);
        }
        let Some(a) = &mut self.aggregate else {
            return Ok(self.within.is_some());
        };
        checkpoint
            .sections
            .insert("groups".into(), a.aggregation.snapshot()?);
        if let Some(rows) = &self.retract {
            rows.save("source", checkpoint)?;
        }
        if let Some(w) = &a.window {
            w.save(checkpoint)?;
        }
        Ok(true)
    }

    /// Restores the state [`Processor::save`] wrote.
    pub(crate) fn restore(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        if let Some(join) = &mut self.within {
            join.restore(checkpoint)?;
        }
        if let Some(join) = &self.table_join {
            join.restore(checkpoint)?;
        }
        let Some(a) = &mut self.aggregate else {
            return Ok(());
        };
        a.aggregation.restore(checkpoint.section("groups")?)?;
        if let Some(rows) = &self.retract {
            rows.restore("source", checkpoint)?;
        }
        if let Some(w) = &mut a.window {
            w.restore(checkpoint)?;
        }
        Ok(())
    }

    /// Runs one batch of input `side` (1 for a stream–stream join's right stream, else 0)
    /// through; returns what it emits: the visible columns, then an aggregation's hidden group
    /// columns and tombstone flag.
    pub(crate) async fn process(
        &mut self,
        ctx: &SessionContext,
        batch: RecordBatch,
        side: usize,
        first: &BTreeMap<i32, i64>,
    ) -> Result<Vec<RecordBatch>> {
        if let Some(join) = &self.table_join {
            let changed = join.apply(&batch, side)?;
            let out = async {
                ctx.execute_logical_plan(self.plan.clone())
                    .await?
                    .collect()
                    .await
            }
            .await;
            join.clear();
            let mut out = out?
                .iter()
                .map(|b| reorder(b, &self.order, &self.full))
                .collect::<Result<Vec<_>>>()?;
            out.extend(join.deleted(&out, &changed, &self.full)?);
            // A row (or tombstone) is as late as the change that made it, as in Kafka Streams:
            // a row that lost its joined row keeps the time of that row's deletion.
            let changed_at = crate::format::common::latest_rowtime(&batch);
            if let (Some(at), Ok(i)) = (changed_at, self.full.index_of("rowtime")) {
                out = out
                    .into_iter()
                    .map(|b| not_before(b, i, at))
                    .collect::<Result<_>>()?;
            }
            return Ok(out);
        }
        if let Some(join) = &mut self.within {
            let Some([left, right]) = join.step(ctx, batch, side).await? else {
                return Ok(Vec::new());
            };
            let slots = join.slots().clone();
            slots[0].set(vec![left]);
            slots[1].set(vec![right]);
            let out = async {
                ctx.execute_logical_plan(self.plan.clone())
                    .await?
                    .collect()
                    .await
            }
            .await;
            slots[0].set(Vec::new());
            slots[1].set(Vec::new());
            return out?
                .iter()
                .map(|b| reorder(b, &self.order, &self.full))
                .collect();
        }
        // Batches get their ordinal when the input was planned with one.
        let batch = if self.input.schema().index_of(ORDINAL).is_ok() {
            let mut columns = batch.columns().to_vec();
            columns.push(Arc::new(arrow::array::UInt64Array::from_iter_values(
                0..batch.num_rows() as u64,
            )));
            RecordBatch::try_new(self.input.schema(), columns)?
        } else {
            batch
        };
        if self.reusable && self.physical.is_none() {
            // One partition: a batch arrives as one, so more would add a RepartitionExec that
            // gains nothing and cannot run twice.
            let mut state = ctx.state();
            state.config_mut().options_mut().execution.target_partitions = 1;
            self.physical = Some(ReusedPlan::new(
                state.create_physical_plan(&self.plan).await?,
            ));
        }
        let batch = match &self.retract {
            Some(rows) => rows.changes(&batch, &self.input.schema())?,
            None => batch,
        };
        self.input.set(vec![batch]);
        let out = match &mut self.physical {
            Some(plan) => plan.collect(ctx.task_ctx()).await,
            None => {
                ctx.execute_logical_plan(self.plan.clone())
                    .await?
                    .collect()
                    .await
            }
        };
        self.input.set(Vec::new());
        let out = out?;
        let Some(a) = &mut self.aggregate else {
            return out
                .iter()
                .map(|b| reorder(b, &self.order, &self.full))
                .collect();
        };
        if a.is_empty() {
            a.held.clear();
        }
        let mut added = false;
        for b in out {
            match &mut a.window {
                Some(window) => {
                    let assigned = window.assign(&b)?;
                    added |= assigned.rows.num_rows() > 0;
                    a.aggregation
                        .add(ctx, assigned.rows, &assigned.merges)
                        .await?;
                }
                None => {
                    added |= b.num_rows() > 0;
                    a.aggregation.add(ctx, b, &[]).await?;
                }
            }
        }
        if added {
            for (p, o) in first {
                a.held.entry(*p).or_insert(*o);
            }
        }
        let (emitted, closed) = match a.emit {
            Emit::Changes => {
                let window = &a.window;
                let changes = a
                    .aggregation
                    .emit_changes(ctx, |id| window.as_ref().map_or(id, |w| w.bounds(id)))
                    .await?;
                let closed = a.window.as_mut().map(|w| w.close()).unwrap_or_default();
                a.aggregation.forget(&closed);
                (changes, closed)
            }
            Emit::Final => {
                let closed = a.window.as_mut().map(|w| w.close()).unwrap_or_default();
                (a.aggregation.emit_final(ctx, &closed).await?, closed)
            }
        };
        if let (false, Some(w)) = (closed.is_empty(), &a.window) {
            let spec = w.spec();
            let keep = spec.grace + spec.retention.unwrap_or(DEFAULT_RETENTION_MS);
            a.expired = Some(w.stream_time().saturating_sub(keep));
        }
        emitted
            .iter()
            .map(|b| reorder(b, &self.order, &self.full))
            .collect()
    }
}

impl Aggregating {
    /// Whether it holds no state.
    fn is_empty(&self) -> bool {
        match &self.window {
            Some(w) => w.is_empty(),
            None => self.aggregation.is_empty(),
        }
    }
}

/// `result`, after deregistering `tables` (those a plan registered) when it is an error.
fn unregister_on_error<T>(ctx: &SessionContext, tables: &[String], result: Result<T>) -> Result<T> {
    if result.is_err() {
        for t in tables {
            let _ = ctx.deregister_table(t.as_str());
        }
    }
    result
}

/// DataFusion's planning errors, with the `Error during planning:` prefix and similar noise off.
pub(crate) fn plan_error(e: datafusion::error::DataFusionError) -> Error {
    let text = e.strip_backtrace();
    let text = text
        .trim_start_matches("Error during planning: ")
        .trim_start_matches("Schema error: ")
        .to_string();
    if let Some(rest) =
        text.strip_prefix("Column in SELECT must be in GROUP BY or an aggregate function: ")
    {
        return Error::Plan(format!(
            "non-aggregate SELECT expression not part of GROUP BY: {rest}"
        ));
    }
    Error::Plan(text.replace(".\n", ". ").replace('\n', " "))
}

/// `batch` with column `i` (a rowtime) at least `at`, and `at` where it is NULL.
fn not_before(batch: RecordBatch, i: usize, at: i64) -> Result<RecordBatch> {
    let Some(times) = batch
        .column(i)
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
    else {
        return Ok(batch);
    };
    let moved: TimestampMillisecondArray = times
        .iter()
        .map(|t| Some(t.map_or(at, |t| t.max(at))))
        .collect();
    let mut columns = batch.columns().to_vec();
    columns[i] = Arc::new(moved);
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// Output column order with `rowtime` last, and the resulting schema.
/// Output column order of a stateless query: its visible columns with `rowtime` last, then the
/// hidden ones (a `PARTITION BY` key). Returns the order, the full and the visible schema.
fn output_order(plan: &LogicalPlan) -> Result<(Vec<usize>, SchemaRef, SchemaRef)> {
    let schema = plan.schema().as_arrow();
    let mut seen = std::collections::HashSet::new();
    for f in schema.fields() {
        if !seen.insert(f.name().to_lowercase()) {
            return Err(Error::Plan(format!(
                "the query's output has two columns named '{}': give one an alias (… AS other_name)",
                f.name()
            )));
        }
    }
    let rowtime = schema
        .index_of("rowtime")
        .map_err(|_| Error::Plan("the query's output lost its rowtime".into()))?;
    if schema.field(rowtime).data_type() != &DataType::Timestamp(TimeUnit::Millisecond, None) {
        return Err(Error::Plan("rowtime must be a TIMESTAMP".into()));
    }
    let hidden = |i: usize| schema.field(i).name().starts_with(HIDDEN);
    let mut order: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| i != rowtime && !hidden(i))
        .collect();
    order.push(rowtime);
    let visible = order.len();
    order.extend((0..schema.fields().len()).filter(|&i| hidden(i)));
    let fields: Vec<_> = order
        .iter()
        .map(|&i| schema.field(i).clone().with_nullable(true))
        .collect();
    let full = Arc::new(Schema::new(fields));
    let visible = Arc::new(full.project(&(0..visible).collect::<Vec<_>>())?);
    Ok((order, full, visible))
}

/// An aggregation's output order: its visible columns with `rowtime` last (and, when
/// `expose_window`, `windowstart` and `windowend` before it unless the query named columns so),
/// then the hidden ones. Returns the order, the full schema, the visible schema and the
/// visible columns the engine added.
fn aggregate_order(
    schema: &SchemaRef,
    hidden: usize,
    expose_window: bool,
) -> Result<(Vec<usize>, SchemaRef, SchemaRef, Vec<usize>)> {
    let fields = schema.fields();
    let names: std::collections::HashSet<String> = fields[..hidden]
        .iter()
        .map(|f| f.name().to_lowercase())
        .collect();
    if names.len() < hidden {
        let mut seen = std::collections::HashSet::new();
        let twice = fields[..hidden]
            .iter()
            .find(|f| !seen.insert(f.name().to_lowercase()))
            .expect("a name repeats");
        return Err(Error::Plan(format!(
            "the query's output has two columns named '{}': give one an alias (… AS other_name)",
            twice.name()
        )));
    }
    let rowtime = hidden - 1;
    let mut order: Vec<usize> = (0..rowtime).collect();
    let mut visible: Vec<Field> = order.iter().map(|&i| fields[i].as_ref().clone()).collect();
    let mut exposed = Vec::new();
    if expose_window {
        for (name, column) in [("windowstart", "ws"), ("windowend", "we")] {
            if !names.contains(name) {
                let at = schema.index_of(&format!("{HIDDEN}{column}"))?;
                exposed.push(order.len());
                order.push(at);
                visible.push(fields[at].as_ref().clone().with_name(name));
            }
        }
    }
    order.push(rowtime);
    visible.push(fields[rowtime].as_ref().clone());
    let visible = Arc::new(Schema::new(visible));
    let mut all: Vec<Field> = visible
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    for i in hidden..fields.len() {
        order.push(i);
        all.push(fields[i].as_ref().clone());
    }
    Ok((order, Arc::new(Schema::new(all)), visible, exposed))
}

fn reorder(batch: &RecordBatch, order: &[usize], schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = order.iter().map(|&i| batch.column(i).clone()).collect();
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}
