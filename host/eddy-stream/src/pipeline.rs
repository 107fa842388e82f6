//! One continuous query's processing: its DataFusion plans and window state.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;

use crate::aggregate::Aggregation;
use crate::provider::Slot;
use crate::query::Parsed;
use crate::window::WindowState;
use crate::{Error, Result};

pub(crate) use eddy_udf_host::{Histogram, HistogramSnapshot};

/// A query's plans, ready to run batch after batch.
pub(crate) struct Processor {
    input: Arc<Slot>,
    plan: LogicalPlan,
    window: Option<Windowed>,
    /// Output columns in order, `rowtime` last.
    order: Vec<usize>,
    schema: SchemaRef,
    appended_rowtime: bool,
    /// Temporary tables registered for this query, removed when it stops.
    pub tables: Vec<String>,
}

struct Windowed {
    /// The aggregation's logical plan, for the functions it calls.
    plan: LogicalPlan,
    aggregation: Aggregation,
    state: WindowState,
    /// Per window end, the earliest source offsets whose rows it holds.
    held: BTreeMap<i32, i64>,
}

impl Processor {
    /// Plans `parsed` reading rows of `input` (a stream schema ending in `rowtime`).
    pub(crate) async fn plan(
        ctx: &SessionContext,
        parsed: &Parsed,
        input: SchemaRef,
        id: &str,
    ) -> Result<Processor> {
        let in_table = format!("__eddy_{}_in", id.to_lowercase());
        let slot = Slot::new(input);
        ctx.register_table(in_table.as_str(), slot.clone())?;
        let mut tables = vec![in_table.clone()];
        let result = Self::plan_inner(ctx, parsed, &in_table, slot, id, &mut tables).await;
        if result.is_err() {
            for t in &tables {
                let _ = ctx.deregister_table(t.as_str());
            }
        }
        result
    }

    async fn plan_inner(
        ctx: &SessionContext,
        parsed: &Parsed,
        in_table: &str,
        slot: Arc<Slot>,
        id: &str,
        tables: &mut Vec<String>,
    ) -> Result<Processor> {
        let Some(window) = parsed.window else {
            if parsed.grouped {
                return Err(Error::Unsupported(
                    "GROUP BY without WINDOW: a continuous aggregation needs a window, e.g. \
                     WINDOW TUMBLING (SIZE 1 MINUTE)"
                        .into(),
                ));
            }
            let (sql, appended_rowtime) = parsed.stateless_sql(in_table);
            let plan = ctx
                .sql(&sql)
                .await
                .map_err(plan_error)?
                .into_unoptimized_plan();
            if plan.exists(|p| Ok(matches!(p, LogicalPlan::Aggregate(_))))? {
                return Err(Error::Unsupported(
                    "aggregate functions without WINDOW: a continuous aggregation needs a window, \
                     e.g. WINDOW TUMBLING (SIZE 1 MINUTE)"
                        .into(),
                ));
            }
            let (order, schema) = output_order(&plan)?;
            return Ok(Processor {
                input: slot,
                plan,
                window: None,
                order,
                schema,
                appended_rowtime,
                tables: std::mem::take(tables),
            });
        };
        if !parsed.joined.is_empty() {
            return Err(Error::Unsupported(
                "a windowed aggregation over a join".into(),
            ));
        }
        let (filter_sql, keys) = parsed.filter_sql(in_table);
        let filter = ctx
            .sql(&filter_sql)
            .await
            .map_err(plan_error)?
            .into_unoptimized_plan();
        let filter_schema: SchemaRef = Arc::new(filter.schema().as_arrow().clone());
        let state = WindowState::new(window, &filter_schema, keys)?;
        let win_table = format!("__eddy_{}_window", id.to_lowercase());
        let win_slot = Slot::new(state.schema().clone());
        ctx.register_table(win_table.as_str(), win_slot.clone())?;
        tables.push(win_table.clone());
        let aggregate = ctx
            .sql(&parsed.aggregate_sql(&win_table))
            .await
            .map_err(plan_error)?
            .into_unoptimized_plan();
        let (order, schema) = output_order(&aggregate)?;
        let aggregation =
            Aggregation::new(ctx, &aggregate, win_slot)
                .await
                .map_err(|e| match e {
                    Error::DataFusion(e) => plan_error(e),
                    other => other,
                })?;
        Ok(Processor {
            input: slot,
            plan: filter,
            window: Some(Windowed {
                plan: aggregate,
                aggregation,
                state,
                held: BTreeMap::new(),
            }),
            order,
            schema,
            appended_rowtime: true,
            tables: std::mem::take(tables),
        })
    }

    /// The output schema, `rowtime` last.
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
        let plans = std::iter::once(&self.plan).chain(self.window.as_ref().map(|w| &w.plan));
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

    /// Whether this query keeps windows.
    pub(crate) fn is_windowed(&self) -> bool {
        self.window.is_some()
    }

    /// Rows dropped as late so far.
    pub(crate) fn late(&self) -> u64 {
        self.window.as_ref().map_or(0, |w| w.state.late)
    }

    /// Per partition, the earliest offset still needed by an open window.
    pub(crate) fn held(&self) -> BTreeMap<i32, i64> {
        match &self.window {
            Some(w) if !w.state.is_empty() => w.held.clone(),
            _ => BTreeMap::new(),
        }
    }

    /// Runs one batch through; returns what it emits.
    pub(crate) async fn process(
        &mut self,
        ctx: &SessionContext,
        batch: RecordBatch,
        first: &BTreeMap<i32, i64>,
    ) -> Result<Vec<RecordBatch>> {
        self.input.set(vec![batch]);
        let out = ctx
            .execute_logical_plan(self.plan.clone())
            .await?
            .collect()
            .await;
        self.input.set(Vec::new());
        let out = out?;
        let Some(w) = &mut self.window else {
            return out
                .iter()
                .map(|b| reorder(b, &self.order, &self.schema))
                .collect();
        };
        if w.state.is_empty() {
            w.held.clear();
        }
        let mut added = false;
        for b in &out {
            let assigned = w.state.assign(b)?;
            added |= assigned.rows.num_rows() > 0;
            w.aggregation
                .add(ctx, assigned.rows, &assigned.merges)
                .await?;
        }
        if added {
            for (p, o) in first {
                w.held.entry(*p).or_insert(*o);
            }
        }
        let closed = w.state.close();
        if closed.is_empty() {
            return Ok(Vec::new());
        }
        w.aggregation
            .emit(ctx, &closed)
            .await?
            .iter()
            .map(|b| reorder(b, &self.order, &self.schema))
            .collect()
    }
}

/// DataFusion's planning errors, with the `Error during planning:` prefix and similar noise off.
fn plan_error(e: datafusion::error::DataFusionError) -> Error {
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

/// Output column order with `rowtime` last, and the resulting schema.
fn output_order(plan: &LogicalPlan) -> Result<(Vec<usize>, SchemaRef)> {
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
    let mut order: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| i != rowtime)
        .collect();
    order.push(rowtime);
    let fields: Vec<_> = order
        .iter()
        .map(|&i| schema.field(i).clone().with_nullable(true))
        .collect();
    Ok((order, Arc::new(Schema::new(fields))))
}

fn reorder(batch: &RecordBatch, order: &[usize], schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = order.iter().map(|&i| batch.column(i).clone()).collect();
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}
