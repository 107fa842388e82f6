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
mod groups;

use foldhash::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, BooleanArray, RecordBatch, TimestampMillisecondArray,
    UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator, LogicalPlan};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::GroupsAccumulatorAdapter;
use datafusion::physical_plan::aggregates::{aggregate_expressions, AggregateExec, AggregateMode};
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use datafusion::prelude::SessionContext;

use self::groups::{GroupId, Groups};
use crate::provider::Slot;
use crate::query::HIDDEN;
use crate::reused_plan::ReusedPlan;
use crate::window::{Closed, WindowId};
use crate::{Error, Result};

/// The name of the column that marks a tombstone row in an aggregation's output.
pub(crate) const DELETED: &str = "__eddy_deleted";

/// A row to retract: a group's key values, its emitted bounds, and the tombstone's rowtime
/// when known (a session that moved: its old end, as Kafka Streams times it; otherwise the
/// time the tombstone is written).
type Retraction = (Vec<ScalarValue>, (i64, i64), Option<i64>);

/// A group as an output row names it: window bounds and key bytes.
type Identity = ((i64, i64), Vec<u8>);

/// A window id for aggregations without a window: everything is in one.
const NO_WINDOW: WindowId = (0, 0);

/// The state and plans of one windowed aggregation.
pub(crate) struct Aggregation {
    /// Window rows (set into `rows`) to aggregate input, as the plan below the aggregate has it.
    input: ReusedPlan,
    rows: Arc<Slot>,
    /// The group expressions over aggregate input, and which of them are the window columns.
    group: Vec<Arc<dyn PhysicalExpr>>,
    /// Positions of `windowstart` and `windowend` among the group expressions, if windowed.
    window: Option<(usize, usize)>,
    key_columns: Vec<usize>,
    converter: Option<RowConverter>,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// How many state fields each aggregate has.
    widths: Vec<usize>,
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    /// The plan above the aggregate, reading emitted groups from `emitted`.
    upper: ReusedPlan,
    emitted: Arc<Slot>,
    /// The output: the upper plan's columns, all nullable, then [`DELETED`].
    out_schema: SchemaRef,
    /// Where the hidden group columns start in the output.
    hidden: usize,
    /// The groups and their state.
    groups: Groups,
    /// Groups changed since changes were last emitted, in first-changed order (only when
    /// emitting changes).
    changed: Vec<GroupId>,
    /// Whether changes are emitted, so worth tracking.
    track_changes: bool,
    /// Rows to retract at the next emission.
    retract: Vec<Retraction>,
    /// The latest event time added: when a row that HAVING drops is deleted.
    latest: Option<i64>,
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
        let widths = aggregates
            .iter()
            .map(|a| Ok(a.state_fields()?.len()))
            .collect::<Result<Vec<_>>>()?;
        let groups = Groups::new(state_schema(&emitted.schema(), named.len(), &aggregates)?);
        Ok(Aggregation {
            input: ReusedPlan::new(exec.input().clone()),
            rows,
            group: named.into_iter().map(|(e, _)| e).collect(),
            window,
            key_columns,
            converter,
            aggregates,
            widths,
            arguments,
            upper: ReusedPlan::new(upper),
            emitted,
            out_schema: Arc::new(Schema::new(fields)),
            hidden,
            groups,
            changed: Vec::new(),
            track_changes,
            retract: Vec::new(),
            latest: None,
        })
    }

    /// Folds window rows into their groups' state, after merging the state of sessions that
    /// merged.
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
        self.latest = self
            .latest
            .max(crate::format::common::latest_rowtime(&rows));
        self.rows.set(vec![rows]);
        let input = self.input.collect(ctx.task_ctx()).await;
        self.rows.set(Vec::new());
        for batch in input? {
            self.update(&batch)?;
        }
        Ok(())
    }

    /// A fresh accumulator for aggregate `j` over any number of groups.
    fn accumulator(&self, j: usize) -> Result<Box<dyn GroupsAccumulator>> {
        let a = &self.aggregates[j];
        if a.groups_accumulator_supported() {
            return Ok(a.create_groups_accumulator()?);
        }
        let a = a.clone();
        Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
            a.create_accumulator()
        })))
    }

    /// Where aggregate `j`'s state fields are in a state row.
    fn state_range(&self, j: usize) -> std::ops::Range<usize> {
        let start = self.group.len() + self.widths[..j].iter().sum::<usize>();
        start..start + self.widths[j]
    }

    /// Updates the groups of `batch`'s rows: each group's prior state and its new rows go
    /// through one fresh accumulator per aggregate, whose state becomes the group's new state
    /// row.
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
        // As in ksqlDB, a row with a NULL GROUP BY value is left out of every group.
        if self.key_columns.iter().any(|&i| values[i].null_count() > 0) {
            let mut keep = arrow::array::BooleanArray::from(vec![true; n]);
            for &i in &self.key_columns {
                keep = arrow::compute::and(&keep, &arrow::compute::is_not_null(&values[i])?)?;
            }
            return self.update(&arrow::compute::filter_record_batch(batch, &keep)?);
        }
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
        // The batch's groups in first-seen order, each row's among them, and each one's first
        // row (for its GROUP BY values).
        let mut local: HashMap<(WindowId, &[u8]), usize> = HashMap::default();
        let mut members: Vec<(WindowId, &[u8])> = Vec::new();
        let mut firsts: Vec<u32> = Vec::new();
        let mut indices: Vec<usize> = Vec::with_capacity(n);
        for row in 0..n {
            let key: &[u8] = keys.as_ref().map_or(&[], |k| k.row(row).data());
            let window = bounds
                .as_ref()
                .map_or(NO_WINDOW, |(s, e)| (s.value(row), e.value(row)));
            let at = *local.entry((window, key)).or_insert_with(|| {
                members.push((window, key));
                firsts.push(row as u32);
                members.len() - 1
            });
            indices.push(at);
        }
        let k = members.len();
        let mut ids = Vec::with_capacity(k);
        let (mut prior, mut prior_at) = (Vec::new(), Vec::new());
        for (g, (window, key)) in members.iter().enumerate() {
            match self.groups.lookup(*window, key) {
                Some(id) => {
                    prior.push(id);
                    prior_at.push(g);
                    ids.push(id);
                }
                None => ids.push(self.groups.insert(*window, key)),
            }
        }
        let prior = if prior.is_empty() {
            None
        } else {
            Some(self.groups.rows(&prior)?)
        };
        let firsts = UInt32Array::from(firsts);
        let mut columns: Vec<ArrayRef> = values
            .iter()
            .map(|v| arrow::compute::take(v, &firsts, None))
            .collect::<std::result::Result<_, _>>()?;
        for j in 0..self.aggregates.len() {
            let mut accumulator = self.accumulator(j)?;
            // The prior state first: some aggregates (LATEST_BY_OFFSET, COLLECT_LIST) depend on
            // the order they see rows in.
            if let Some(prior) = &prior {
                accumulator.merge_batch(&prior[self.state_range(j)], &prior_at, k)?;
            }
            let arguments = self.arguments[j]
                .iter()
                .map(|e| e.evaluate(batch)?.into_array(n))
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            accumulator.update_batch(&arguments, &indices, None, k)?;
            columns.extend(accumulator.state(EmitTo::All)?);
        }
        let chunk = RecordBatch::try_new(self.groups.schema().clone(), columns)?;
        self.groups.append(chunk, &ids)?;
        for id in ids {
            self.mark_changed(id);
        }
        Ok(())
    }

    /// Notes that group `id` changed, once until changes are next emitted (when they are
    /// emitted at all).
    fn mark_changed(&mut self, id: GroupId) {
        if !self.track_changes {
            return;
        }
        let meta = self.groups.meta_mut(id).expect("a live group");
        if !meta.changed {
            meta.changed = true;
            self.changed.push(id);
        }
    }

    /// Moves session `from`'s groups into session `into`, merging the state of keys in both.
    fn merge(&mut self, from: WindowId, into: WindowId) -> Result<()> {
        let moving = self.groups.take_window(from);
        // (the group in `into`, the one from `from`) for keys in both.
        let mut pairs: Vec<(GroupId, GroupId)> = Vec::new();
        for id in moving {
            if let Some(bounds) = self.groups.meta_mut(id).and_then(|m| m.emitted.take()) {
                let values = self.key_values(id)?;
                self.retract.push((values, bounds, Some(bounds.1)));
            }
            let key = self.groups.meta(id).expect("a live group").key.clone();
            match self.groups.lookup(into, &key) {
                Some(target) => pairs.push((target, id)),
                None => {
                    self.groups.rekey(id, into);
                    self.mark_changed(id);
                }
            }
        }
        if pairs.is_empty() {
            return Ok(());
        }
        let both: Vec<GroupId> = pairs.iter().flat_map(|&(t, f)| [t, f]).collect();
        let at: Vec<usize> = (0..both.len()).map(|i| i / 2).collect();
        let rows = self.groups.rows(&both)?;
        let targets = UInt32Array::from_iter_values((0..pairs.len() as u32).map(|i| 2 * i));
        let mut columns: Vec<ArrayRef> = rows[..self.group.len()]
            .iter()
            .map(|v| arrow::compute::take(v, &targets, None))
            .collect::<std::result::Result<_, _>>()?;
        for j in 0..self.aggregates.len() {
            let mut accumulator = self.accumulator(j)?;
            accumulator.merge_batch(&rows[self.state_range(j)], &at, pairs.len())?;
            columns.extend(accumulator.state(EmitTo::All)?);
        }
        let chunk = RecordBatch::try_new(self.groups.schema().clone(), columns)?;
        let (targets, froms): (Vec<GroupId>, Vec<GroupId>) = pairs.into_iter().unzip();
        self.groups.append(chunk, &targets)?;
        for id in froms {
            self.groups.release(id);
        }
        Ok(())
    }

    /// Group `id`'s GROUP BY values (its window bounds left out).
    fn key_values(&self, id: GroupId) -> Result<Vec<ScalarValue>> {
        let row = self.groups.rows(&[id])?;
        self.key_columns
            .iter()
            .map(|&i| Ok(ScalarValue::try_from_array(&row[i], 0)?))
            .collect()
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

    /// The aggregate's output rows of groups `ids` in windows `spans` (one each, for a windowed
    /// aggregation): their GROUP BY values and their aggregates' current values.
    fn evaluate(&self, ids: &[GroupId], spans: &[(i64, i64)]) -> Result<RecordBatch> {
        let rows = self.groups.rows(ids)?;
        let schema = self.emitted.schema();
        let n = ids.len();
        let mut columns = Vec::with_capacity(schema.fields().len());
        for (i, values) in rows[..self.group.len()].iter().enumerate() {
            let bound = match self.window {
                Some((s, _)) if i == s => Some(0),
                Some((_, e)) if i == e => Some(1),
                _ => None,
            };
            columns.push(match bound {
                Some(b) => Arc::new(TimestampMillisecondArray::from_iter_values(
                    spans.iter().map(|s| if b == 0 { s.0 } else { s.1 }),
                )) as ArrayRef,
                None => values.clone(),
            });
        }
        let at: Vec<usize> = (0..n).collect();
        for j in 0..self.aggregates.len() {
            let mut accumulator = self.accumulator(j)?;
            accumulator.merge_batch(&rows[self.state_range(j)], &at, n)?;
            columns.push(accumulator.evaluate(EmitTo::All)?);
        }
        let columns = columns
            .into_iter()
            .zip(schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    Ok(arrow::compute::cast(&c, f.data_type())?)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// Emits every group that changed since the last call, with tombstones for the rows they
    /// retract; `bounds` gives an open window's current bounds.
    pub(crate) async fn emit_changes(
        &mut self,
        ctx: &SessionContext,
        bounds: impl Fn(WindowId) -> (i64, i64),
    ) -> Result<Vec<RecordBatch>> {
        let changed = std::mem::take(&mut self.changed);
        let (mut ids, mut spans) = (Vec::new(), Vec::new());
        for id in changed {
            let Some(meta) = self.groups.meta_mut(id) else {
                continue;
            };
            if !meta.changed {
                continue;
            }
            meta.changed = false;
            ids.push(id);
            spans.push(bounds(meta.window));
        }
        let mut out = Vec::new();
        // Which groups have a row now: all of them, unless HAVING dropped some.
        let mut present = None;
        if !ids.is_empty() {
            let rows = self.evaluate(&ids, &spans)?;
            let batches = self.run_upper(ctx, rows).await?;
            if batches.iter().map(RecordBatch::num_rows).sum::<usize>() < ids.len() {
                present = Some(self.identities(&batches)?);
            }
            out.extend(batches);
        }
        for (id, span) in ids.into_iter().zip(spans) {
            let meta = self.groups.meta(id).expect("emitted above");
            let now = present
                .as_ref()
                .is_none_or(|p| p.contains(&(span, meta.key.to_vec())))
                .then_some(span);
            if let Some(old) = meta.emitted.filter(|old| Some(*old) != now) {
                let values = self.key_values(id)?;
                // Bounds that moved are a session's, timed by its old end; a row HAVING
                // dropped goes when the latest event came, as the change that dropped it.
                let time = now.map(|_| old.1).or(self.latest);
                self.retract.push((values, old, time));
            }
            self.groups.meta_mut(id).expect("emitted above").emitted = now;
        }
        self.groups.recycle();
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
        let (mut ids, mut spans) = (Vec::new(), Vec::new());
        for window in closed {
            for id in self.groups.take_window(window.id) {
                ids.push(id);
                spans.push((window.start, window.end));
            }
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.evaluate(&ids, &spans)?;
        for id in ids {
            self.groups.release(id);
        }
        self.groups.recycle();
        self.run_upper(ctx, rows).await
    }

    /// Frees closed windows' state (their changes were emitted as they happened).
    pub(crate) fn forget(&mut self, closed: &[Closed]) {
        for window in closed {
            for id in self.groups.take_window(window.id) {
                self.groups.release(id);
            }
        }
        self.groups.recycle();
    }

    /// Runs groups' rows through the plan above the aggregate; the rows that pass come out in
    /// the output schema, not deleted.
    async fn run_upper(
        &mut self,
        ctx: &SessionContext,
        rows: RecordBatch,
    ) -> Result<Vec<RecordBatch>> {
        if rows.num_rows() == 0 {
            return Ok(Vec::new());
        }
        self.emitted.set(vec![rows]);
        let out = self.upper.collect(ctx.task_ctx()).await;
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
    fn identities(&self, batches: &[RecordBatch]) -> Result<HashSet<Identity>> {
        let mut out = HashSet::default();
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
            .map(|i| match fields[i].data_type() {
                DataType::Timestamp(TimeUnit::Millisecond, None)
                    if fields[i].name() == "rowtime" =>
                {
                    Arc::new(TimestampMillisecondArray::from_iter(
                        retract.iter().map(|(_, _, t)| *t),
                    )) as ArrayRef
                }
                other => new_null_array(other, n),
            })
            .collect();
        for k in 0..keys {
            let values = retract.iter().map(|(v, _, _)| v[k].clone()).collect();
            columns.push(to_array(values, fields[self.hidden + k].data_type())?);
        }
        if self.window.is_some() {
            columns.push(Arc::new(TimestampMillisecondArray::from_iter_values(
                retract.iter().map(|(_, b, _)| b.0),
            )));
            columns.push(Arc::new(TimestampMillisecondArray::from_iter_values(
                retract.iter().map(|(_, b, _)| b.1),
            )));
        }
        columns.push(Arc::new(BooleanArray::from(vec![true; n])));
        Ok(RecordBatch::try_new(self.out_schema.clone(), columns)?)
    }
}

/// The schema of a group's state row: the GROUP BY values (named after the columns of
/// `emitted`, the aggregate's output), then each aggregate's state fields.
fn state_schema(
    emitted: &Schema,
    groups: usize,
    aggregates: &[Arc<AggregateFunctionExpr>],
) -> Result<SchemaRef> {
    let mut fields = Vec::new();
    for i in 0..groups {
        let f = emitted.field(i);
        fields.push(Field::new(
            format!("group_{i}_{}", f.name()),
            f.data_type().clone(),
            true,
        ));
    }
    for (j, a) in aggregates.iter().enumerate() {
        for (k, f) in a.state_fields()?.iter().enumerate() {
            fields.push(Field::new(
                format!("state_{j}_{k}_{}", f.name()),
                f.data_type().clone(),
                true,
            ));
        }
    }
    Ok(Arc::new(Schema::new(fields)))
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
