//! Incremental aggregation: one set of DataFusion accumulators per group and window, fed each
//! batch as it arrives, so state grows with groups × open windows and never with events.
//!
//! The aggregation is DataFusion's own: the query's physical plan is built once, its
//! `AggregateExec` supplies the group expressions and the aggregate functions (every one
//! DataFusion has, `COUNT(DISTINCT …)` included), the plan below it turns window rows into
//! aggregate input, and the plan above it (`HAVING`, the `SELECT` list) runs over the groups
//! being emitted, with the `AggregateExec` swapped for those rows.
//!
//! Groups are emitted as changes (after each batch, every group that changed, once) or final
//! (each window once, when it closes). A change that no longer passes `HAVING`, and a session
//! whose bounds moved, first retracts the row it emitted before: a tombstone row, whose user
//! columns are null and whose hidden `__eddy_k…`/`__eddy_ws`/`__eddy_we` name the group.

mod checkpoint;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, BooleanArray, RecordBatch, TimestampMillisecondArray,
    UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Accumulator, LogicalPlan};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::aggregates::{aggregate_expressions, AggregateExec, AggregateMode};
use datafusion::physical_plan::{collect, ExecutionPlan, PhysicalExpr};
use datafusion::prelude::SessionContext;

use crate::provider::Slot;
use crate::query::HIDDEN;
use crate::window::{Closed, WindowId};
use crate::{Error, Result};

/// One group's key and accumulators in one window.
struct Group {
    /// The group expressions' values, in the `AggregateExec`'s order (window columns too, as
    /// the rows named the window).
    keys: Vec<ScalarValue>,
    accumulators: Vec<Box<dyn Accumulator>>,
    /// The window bounds of the row it last emitted as a change, while that row stands.
    emitted: Option<(i64, i64)>,
    /// Whether it changed since changes were last emitted.
    changed: bool,
}

/// The name of the column that marks a tombstone row in an aggregation's output.
pub(crate) const DELETED: &str = "__eddy_deleted";

/// A group in a batch: its window, key bytes and first row.
type Member = (WindowId, Vec<u8>, usize);

/// A group as an output row names it: window bounds and key bytes.
type Identity = ((i64, i64), Vec<u8>);

/// A window id for aggregations without a window: everything is in one.
const NO_WINDOW: WindowId = (0, 0);

/// The state and plans of one windowed aggregation.
pub(crate) struct Aggregation {
    /// Window rows (set into `rows`) to aggregate input, as the plan below the aggregate has it.
    input: Arc<dyn ExecutionPlan>,
    rows: Arc<Slot>,
    /// The group expressions over aggregate input, and which of them are the window columns.
    group: Vec<Arc<dyn PhysicalExpr>>,
    /// Positions of `windowstart` and `windowend` among the group expressions, if windowed.
    window: Option<(usize, usize)>,
    key_columns: Vec<usize>,
    converter: Option<RowConverter>,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    /// The plan above the aggregate, reading emitted groups from `emitted`.
    upper: Arc<dyn ExecutionPlan>,
    emitted: Arc<Slot>,
    /// The output: the upper plan's columns, all nullable, then [`DELETED`].
    out_schema: SchemaRef,
    /// Where the hidden group columns start in the output.
    hidden: usize,
    /// Groups by window, then by key.
    groups: HashMap<WindowId, HashMap<Vec<u8>, Group>>,
    /// Groups changed since changes were last emitted, in first-changed order (only when
    /// emitting changes).
    changed: Vec<(WindowId, Vec<u8>)>,
    /// Whether changes are emitted, so worth tracking.
    track_changes: bool,
    /// Rows to retract at the next emission: a group's key values and its emitted bounds.
    retract: Vec<(Vec<ScalarValue>, (i64, i64))>,
}

impl Aggregation {
    /// Builds the plans of `plan`, an aggregation over the rows `rows` will hold (window rows,
    /// with `windowstart` and `windowend`, when `windowed`).
    pub(crate) async fn new(
        ctx: &SessionContext,
        plan: &LogicalPlan,
        rows: Arc<Slot>,
        windowed: bool,
        track_changes: bool,
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
        let top = top.ok_or_else(|| Error::Plan("an aggregation without an aggregate".into()))?;
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
        let window = if windowed {
            Some((position("windowstart")?, position("windowend")?))
        } else {
            None
        };
        let key_columns: Vec<usize> = (0..named.len())
            .filter(|&i| window.is_none_or(|(s, e)| i != s && i != e))
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
        let upper_schema = upper.schema();
        let hidden = upper_schema
            .fields()
            .iter()
            .position(|f| f.name().starts_with(HIDDEN))
            .unwrap_or(upper_schema.fields().len());
        let mut fields: Vec<Field> = upper_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        fields.push(Field::new(DELETED, DataType::Boolean, false));
        Ok(Aggregation {
            input: exec.input().clone(),
            rows,
            group: named.into_iter().map(|(e, _)| e).collect(),
            window,
            key_columns,
            converter,
            aggregates,
            arguments,
            upper,
            emitted,
            out_schema: Arc::new(Schema::new(fields)),
            hidden,
            groups: HashMap::new(),
            changed: Vec::new(),
            track_changes,
            retract: Vec::new(),
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
        let bounds = match self.window {
            Some((s, e)) => Some((timestamps(&values[s])?, timestamps(&values[e])?)),
            None => None,
        };
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
        let mut members: Vec<(Member, Vec<u32>)> = Vec::new();
        for row in 0..n {
            let key: &[u8] = keys.as_ref().map_or(&[], |k| k.row(row).data());
            let window = bounds
                .as_ref()
                .map_or(NO_WINDOW, |(s, e)| (s.value(row), e.value(row)));
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
            let group = match self.groups.entry(window).or_default().entry(key.clone()) {
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
                    emitted: None,
                    changed: false,
                }),
            };
            if self.track_changes && !group.changed {
                group.changed = true;
                self.changed.push((window, key));
            }
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
            if let Some(bounds) = group.emitted.take() {
                self.retract
                    .push((key_values(&self.key_columns, &group), bounds));
            }
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
                    if let Some((s, e)) = self.window {
                        group.keys[s] = window_value(into.0);
                        group.keys[e] = window_value(into.1);
                    }
                    if self.track_changes {
                        group.changed = true;
                        self.changed.push((into, key.clone()));
                    }
                    target.insert(key, group);
                }
            }
        }
        Ok(())
    }

    /// Whether it holds no group.
    pub(crate) fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The output schema: the upper plan's columns, then [`DELETED`].
    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.out_schema
    }

    /// Where the hidden group columns start in the output.
    pub(crate) fn hidden(&self) -> usize {
        self.hidden
    }

    /// Emits every group that changed since the last call, with tombstones for the rows they
    /// retract; `bounds` gives an open window's current bounds.
    pub(crate) async fn emit_changes(
        &mut self,
        ctx: &SessionContext,
        bounds: impl Fn(WindowId) -> (i64, i64),
    ) -> Result<Vec<RecordBatch>> {
        let changed = std::mem::take(&mut self.changed);
        let mut columns = self.columns();
        let mut order: Vec<(WindowId, Vec<u8>, (i64, i64))> = Vec::new();
        for (window, key) in changed {
            let Some(group) = self.groups.get_mut(&window).and_then(|g| g.get_mut(&key)) else {
                continue;
            };
            if !group.changed {
                continue;
            }
            group.changed = false;
            let span = bounds(window);
            if let Some((s, e)) = self.window {
                group.keys[s] = window_value(span.0);
                group.keys[e] = window_value(span.1);
            }
            push_group(&mut columns, group, self.group.len())?;
            order.push((window, key, span));
        }
        let mut out = Vec::new();
        let present = if order.is_empty() {
            std::collections::HashSet::new()
        } else {
            let batches = self.run_upper(ctx, columns).await?;
            let present = self.identities(&batches)?;
            out.extend(batches);
            present
        };
        for (window, key, span) in order {
            let group = self
                .groups
                .get_mut(&window)
                .and_then(|g| g.get_mut(&key))
                .expect("emitted above");
            let now = present.contains(&(span, key)).then_some(span);
            if let Some(old) = group.emitted.filter(|old| Some(*old) != now) {
                self.retract
                    .push((key_values(&self.key_columns, group), old));
            }
            group.emitted = now;
        }
        if !self.retract.is_empty() {
            // Retractions go first: a row that replaces one retracted here must win.
            out.insert(0, self.tombstones()?);
        }
        Ok(out)
    }

    /// Emits the closed windows' groups (final results), and frees them.
    pub(crate) async fn emit_final(
        &mut self,
        ctx: &SessionContext,
        closed: &[Closed],
    ) -> Result<Vec<RecordBatch>> {
        let mut columns = self.columns();
        for window in closed {
            let Some(groups) = self.groups.remove(&window.id) else {
                continue;
            };
            for (_, mut group) in groups {
                if let Some((s, e)) = self.window {
                    group.keys[s] = window_value(window.start);
                    group.keys[e] = window_value(window.end);
                }
                push_group(&mut columns, &mut group, self.group.len())?;
            }
        }
        if columns[0].is_empty() {
            return Ok(Vec::new());
        }
        self.run_upper(ctx, columns).await
    }

    /// Frees closed windows' state (their changes were emitted as they happened).
    pub(crate) fn forget(&mut self, closed: &[Closed]) {
        for window in closed {
            self.groups.remove(&window.id);
        }
    }

    fn columns(&self) -> Vec<Vec<ScalarValue>> {
        vec![Vec::new(); self.group.len() + self.aggregates.len()]
    }

    /// Runs groups' values through the plan above the aggregate; the rows that pass come out
    /// in the output schema, not deleted.
    async fn run_upper(
        &mut self,
        ctx: &SessionContext,
        columns: Vec<Vec<ScalarValue>>,
    ) -> Result<Vec<RecordBatch>> {
        if columns.is_empty() || columns[0].is_empty() {
            return Ok(Vec::new());
        }
        let schema: SchemaRef = self.emitted.schema();
        let arrays: Vec<ArrayRef> = columns
            .into_iter()
            .zip(schema.fields())
            .map(|(values, field)| to_array(values, field.data_type()))
            .collect::<Result<_>>()?;
        let batch = RecordBatch::try_new(schema, arrays)?;
        self.emitted.set(vec![batch]);
        let out = collect(self.upper.clone(), ctx.task_ctx()).await;
        self.emitted.set(Vec::new());
        out?.into_iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| {
                let mut columns = b.columns().to_vec();
                columns.push(Arc::new(BooleanArray::from(vec![false; b.num_rows()])));
                Ok(RecordBatch::try_new(self.out_schema.clone(), columns)?)
            })
            .collect()
    }

    /// The (window bounds, key bytes) of every row of `batches`, from their hidden columns.
    fn identities(&self, batches: &[RecordBatch]) -> Result<std::collections::HashSet<Identity>> {
        let mut out = std::collections::HashSet::new();
        let keys = self.key_columns.len();
        for b in batches {
            let rows = match &self.converter {
                Some(c) => Some(c.convert_columns(&b.columns()[self.hidden..self.hidden + keys])?),
                None => None,
            };
            let bounds = match self.window {
                Some(_) => Some((
                    timestamps(b.column(self.hidden + keys))?.clone(),
                    timestamps(b.column(self.hidden + keys + 1))?.clone(),
                )),
                None => None,
            };
            for i in 0..b.num_rows() {
                let span = bounds
                    .as_ref()
                    .map_or(NO_WINDOW, |(s, e)| (s.value(i), e.value(i)));
                let key = rows
                    .as_ref()
                    .map_or_else(Vec::new, |r| r.row(i).data().to_vec());
                out.insert((span, key));
            }
        }
        Ok(out)
    }

    /// The pending retractions as tombstone rows.
    fn tombstones(&mut self) -> Result<RecordBatch> {
        let retract = std::mem::take(&mut self.retract);
        let n = retract.len();
        let keys = self.key_columns.len();
        let fields = self.out_schema.fields();
        let mut columns: Vec<ArrayRef> = (0..self.hidden)
            .map(|i| new_null_array(fields[i].data_type(), n))
            .collect();
        for k in 0..keys {
            let values = retract.iter().map(|(v, _)| v[k].clone()).collect();
            columns.push(to_array(values, fields[self.hidden + k].data_type())?);
        }
        if self.window.is_some() {
            columns.push(Arc::new(TimestampMillisecondArray::from_iter_values(
                retract.iter().map(|(_, b)| b.0),
            )));
            columns.push(Arc::new(TimestampMillisecondArray::from_iter_values(
                retract.iter().map(|(_, b)| b.1),
            )));
        }
        columns.push(Arc::new(BooleanArray::from(vec![true; n])));
        Ok(RecordBatch::try_new(self.out_schema.clone(), columns)?)
    }
}

/// A group's GROUP BY values (its window bounds left out).
fn key_values(key_columns: &[usize], group: &Group) -> Vec<ScalarValue> {
    key_columns.iter().map(|&i| group.keys[i].clone()).collect()
}

/// Appends a group's key values and current aggregate values to `columns`.
fn push_group(columns: &mut [Vec<ScalarValue>], group: &mut Group, keys: usize) -> Result<()> {
    for (i, key) in group.keys.iter().enumerate() {
        columns[i].push(key.clone());
    }
    for (j, accumulator) in group.accumulators.iter_mut().enumerate() {
        columns[keys + j].push(accumulator.evaluate()?);
    }
    Ok(())
}

/// An array of `values`, of type `to` (an aggregate's declared type wins over what a NULL
/// scalar happens to be).
fn to_array(values: Vec<ScalarValue>, to: &DataType) -> Result<ArrayRef> {
    if values.is_empty() {
        return Ok(arrow::array::new_empty_array(to));
    }
    let array = ScalarValue::iter_to_array(values)?;
    if array.data_type() != to {
        return Ok(arrow::compute::cast(&array, to)?);
    }
    Ok(array)
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
