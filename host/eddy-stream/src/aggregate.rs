//! Incremental aggregation: one set of DataFusion accumulators per group and window, fed each
//! batch as it arrives, so state grows with groups × open windows and never with events.
//!
//! The aggregation is DataFusion's own: the query's physical plan is built once, its
//! `AggregateExec` supplies the group expressions and the aggregate functions (every one
//! DataFusion has, `COUNT(DISTINCT …)` included), the plan below it turns window rows into
//! aggregate input, and the plan above it (`HAVING`, the `SELECT` list) runs over the rows a
//! closing window emits, with the `AggregateExec` swapped for those rows.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, TimestampMillisecondArray, UInt32Array};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Accumulator, LogicalPlan};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::aggregates::{aggregate_expressions, AggregateExec, AggregateMode};
use datafusion::physical_plan::{collect, ExecutionPlan, PhysicalExpr};
use datafusion::prelude::SessionContext;

use crate::provider::Slot;
use crate::window::{Closed, WindowId};
use crate::{Error, Result};

/// One group's key and accumulators in one window.
struct Group {
    /// The group expressions' values, in the `AggregateExec`'s order (window columns too, as
    /// the rows named the window).
    keys: Vec<ScalarValue>,
    accumulators: Vec<Box<dyn Accumulator>>,
}

/// The state and plans of one windowed aggregation.
pub(crate) struct Aggregation {
    /// Window rows (set into `rows`) to aggregate input, as the plan below the aggregate has it.
    input: Arc<dyn ExecutionPlan>,
    rows: Arc<Slot>,
    /// The group expressions over aggregate input, and which of them are the window columns.
    group: Vec<Arc<dyn PhysicalExpr>>,
    window_start: usize,
    window_end: usize,
    key_columns: Vec<usize>,
    converter: Option<RowConverter>,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    /// The plan above the aggregate, reading emitted groups from `emitted`.
    upper: Arc<dyn ExecutionPlan>,
    emitted: Arc<Slot>,
    /// Groups by window, then by key.
    groups: HashMap<WindowId, HashMap<Vec<u8>, Group>>,
}

/// A group met in a batch: its window, its key (row-encoded) and the first row that has it.
type GroupFirstSeen = (WindowId, Vec<u8>, usize);

impl Aggregation {
    /// Builds the plans of `plan`, an aggregation over the rows `rows` will hold (window rows,
    /// with `windowstart` and `windowend`).
    pub(crate) async fn new(
        ctx: &SessionContext,
        plan: &LogicalPlan,
        rows: Arc<Slot>,
    ) -> Result<Aggregation> {
        // One partition: a single-phase aggregate whose input is the raw rows.
        // A copy of the session's state (a new one built from it would replace the shared
        // default catalog with an empty one).
        let mut state = ctx.state();
        state.config_mut().options_mut().execution.target_partitions = 1;
        let physical = state.create_physical_plan(plan).await?;
        let mut top: Option<Arc<dyn ExecutionPlan>> = None;
        physical.apply(|node| {
            if node.downcast_ref::<AggregateExec>().is_some() {
                top = Some(node.clone());
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        let top = top.ok_or_else(|| Error::Plan("a windowed query without an aggregate".into()))?;
        let exec = top
            .downcast_ref::<AggregateExec>()
            .expect("found as an AggregateExec");
        if !matches!(
            exec.mode(),
            AggregateMode::Single | AggregateMode::SinglePartitioned
        ) {
            return Err(Error::Plan(format!(
                "unexpected aggregate mode {:?} in a windowed query",
                exec.mode()
            )));
        }
        if !exec.group_expr().is_single() {
            return Err(Error::Unsupported(
                "GROUPING SETS, CUBE and ROLLUP in a continuous query".into(),
            ));
        }
        if exec.filter_expr().iter().any(Option::is_some) {
            return Err(Error::Unsupported(
                "aggregate FILTER (WHERE …) in a continuous query: filter the rows in WHERE".into(),
            ));
        }
        let named: Vec<(Arc<dyn PhysicalExpr>, String)> = exec.group_expr().expr().to_vec();
        let position = |name: &str| {
            named
                .iter()
                .position(|(_, n)| n == name)
                .ok_or_else(|| Error::Plan(format!("the aggregate lost its {name}")))
        };
        let (window_start, window_end) = (position("windowstart")?, position("windowend")?);
        let key_columns: Vec<usize> = (0..named.len())
            .filter(|&i| i != window_start && i != window_end)
            .collect();
        let input_schema = exec.input().schema();
        let converter = if key_columns.is_empty() {
            None
        } else {
            let fields = key_columns
                .iter()
                .map(|&i| Ok(SortField::new(named[i].0.data_type(&input_schema)?)))
                .collect::<Result<Vec<_>>>()?;
            Some(RowConverter::new(fields)?)
        };
        let aggregates = exec.aggr_expr().to_vec();
        let arguments = aggregate_expressions(&aggregates, exec.mode(), 0)?;
        let emitted = Slot::new(exec.schema());
        let source_exec: Arc<dyn ExecutionPlan> = Arc::new(
            datafusion::physical_plan::streaming::StreamingTableExec::try_new(
                exec.schema(),
                vec![emitted.partition()],
                None,
                Vec::new(),
                false,
                None,
            )?,
        );
        let upper = physical
            .transform_down(|node| {
                if Arc::ptr_eq(&node, &top) {
                    Ok(Transformed::new(
                        source_exec.clone(),
                        true,
                        TreeNodeRecursion::Jump,
                    ))
                } else {
                    Ok(Transformed::no(node))
                }
            })?
            .data;
        Ok(Aggregation {
            input: exec.input().clone(),
            rows,
            group: named.into_iter().map(|(e, _)| e).collect(),
            window_start,
            window_end,
            key_columns,
            converter,
            aggregates,
            arguments,
            upper,
            emitted,
            groups: HashMap::new(),
        })
    }

    /// Folds window rows into their groups' accumulators, after moving the state of sessions
    /// that merged.
    pub(crate) async fn add(
        &mut self,
        ctx: &SessionContext,
        rows: RecordBatch,
        merges: &[(WindowId, WindowId)],
    ) -> Result<()> {
        for (from, into) in merges {
            self.merge(*from, *into)?;
        }
        if rows.num_rows() == 0 {
            return Ok(());
        }
        self.rows.set(vec![rows]);
        let input = collect(self.input.clone(), ctx.task_ctx()).await;
        self.rows.set(Vec::new());
        for batch in input? {
            self.update(&batch)?;
        }
        Ok(())
    }

    fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let values: Vec<ArrayRef> = self
            .group
            .iter()
            .map(|e| e.evaluate(batch)?.into_array(n))
            .collect::<datafusion::error::Result<_>>()?;
        let starts = timestamps(&values[self.window_start])?;
        let ends = timestamps(&values[self.window_end])?;
        let keys = match &self.converter {
            Some(c) => {
                let columns: Vec<ArrayRef> = self
                    .key_columns
                    .iter()
                    .map(|&i| values[i].clone())
                    .collect();
                Some(c.convert_columns(&columns)?)
            }
            None => None,
        };
        // Rows by group, in first-seen order; then each argument is taken once in that order
        // and every group gets one contiguous slice.
        let mut local: HashMap<(WindowId, &[u8]), usize> = HashMap::new();
        let mut members: Vec<(GroupFirstSeen, Vec<u32>)> = Vec::new();
        for row in 0..n {
            let key: &[u8] = keys.as_ref().map_or(&[], |k| k.row(row).data());
            let window = (starts.value(row), ends.value(row));
            let at = *local.entry((window, key)).or_insert_with(|| {
                members.push(((window, key.to_vec(), row), Vec::new()));
                members.len() - 1
            });
            members[at].1.push(row as u32);
        }
        let order = UInt32Array::from_iter_values(members.iter().flat_map(|m| m.1.iter().copied()));
        let arguments: Vec<Vec<ArrayRef>> = self
            .arguments
            .iter()
            .map(|exprs| {
                exprs
                    .iter()
                    .map(|e| {
                        let values = e.evaluate(batch)?.into_array(n)?;
                        Ok(arrow::compute::take(&values, &order, None)?)
                    })
                    .collect::<datafusion::error::Result<Vec<_>>>()
            })
            .collect::<datafusion::error::Result<_>>()?;
        let mut offset = 0;
        for ((window, key, first), rows) in members {
            let group = match self.groups.entry(window).or_default().entry(key) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => v.insert(Group {
                    keys: values
                        .iter()
                        .map(|a| ScalarValue::try_from_array(a, first))
                        .collect::<datafusion::error::Result<_>>()?,
                    accumulators: self
                        .aggregates
                        .iter()
                        .map(|a| a.create_accumulator())
                        .collect::<datafusion::error::Result<_>>()?,
                }),
            };
            for (accumulator, args) in group.accumulators.iter_mut().zip(&arguments) {
                let slices: Vec<ArrayRef> =
                    args.iter().map(|a| a.slice(offset, rows.len())).collect();
                accumulator.update_batch(&slices)?;
            }
            offset += rows.len();
        }
        Ok(())
    }

    /// Moves session `from`'s groups into session `into`, merging accumulators key by key.
    fn merge(&mut self, from: WindowId, into: WindowId) -> Result<()> {
        let Some(moving) = self.groups.remove(&from) else {
            return Ok(());
        };
        let target = self.groups.entry(into).or_default();
        for (key, mut group) in moving {
            match target.get_mut(&key) {
                Some(existing) => {
                    for (to, from) in existing
                        .accumulators
                        .iter_mut()
                        .zip(&mut group.accumulators)
                    {
                        let state: Vec<ArrayRef> = from
                            .state()?
                            .into_iter()
                            .map(|s| s.to_array())
                            .collect::<datafusion::error::Result<_>>()?;
                        to.merge_batch(&state)?;
                    }
                }
                None => {
                    group.keys[self.window_start] = window_value(into.0);
                    group.keys[self.window_end] = window_value(into.1);
                    target.insert(key, group);
                }
            }
        }
        Ok(())
    }

    /// Emits the closed windows' groups through the plan above the aggregate, and frees them.
    pub(crate) async fn emit(
        &mut self,
        ctx: &SessionContext,
        closed: &[Closed],
    ) -> Result<Vec<RecordBatch>> {
        let mut columns: Vec<Vec<ScalarValue>> =
            vec![Vec::new(); self.group.len() + self.aggregates.len()];
        for window in closed {
            let Some(groups) = self.groups.remove(&window.id) else {
                continue;
            };
            for (_, mut group) in groups {
                group.keys[self.window_start] = window_value(window.start);
                group.keys[self.window_end] = window_value(window.end);
                for (i, key) in group.keys.into_iter().enumerate() {
                    columns[i].push(key);
                }
                for (j, accumulator) in group.accumulators.iter_mut().enumerate() {
                    columns[self.group.len() + j].push(accumulator.evaluate()?);
                }
            }
        }
        if columns[0].is_empty() {
            return Ok(Vec::new());
        }
        let schema: SchemaRef = self.emitted.schema();
        let arrays: Vec<ArrayRef> = columns
            .into_iter()
            .zip(schema.fields())
            .map(|(values, field)| {
                let array = ScalarValue::iter_to_array(values)?;
                // An aggregate's declared type wins over what a NULL scalar happens to be.
                if array.data_type() != field.data_type() {
                    return Ok(arrow::compute::cast(&array, field.data_type())?);
                }
                Ok(array)
            })
            .collect::<Result<_>>()?;
        let batch = RecordBatch::try_new(schema, arrays)?;
        self.emitted.set(vec![batch]);
        let out = collect(self.upper.clone(), ctx.task_ctx()).await;
        self.emitted.set(Vec::new());
        Ok(out?)
    }
}

fn window_value(ms: i64) -> ScalarValue {
    ScalarValue::TimestampMillisecond(Some(ms), None)
}

fn timestamps(array: &ArrayRef) -> Result<&TimestampMillisecondArray> {
    array
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .ok_or_else(|| {
            Error::Plan(format!(
                "window bounds are {}, not {:?}",
                array.data_type(),
                DataType::Timestamp(TimeUnit::Millisecond, None)
            ))
        })
}
