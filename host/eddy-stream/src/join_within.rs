//! Stream–stream joins, ksqlDB's `a JOIN b WITHIN n UNIT [GRACE PERIOD m UNIT] ON …`.
//!
//! Each side keeps the rows it has read in a buffer. A new batch from one side is matched, with
//! the user's `ON` plus the time bounds, against the other side's buffer (rows that arrived
//! before it), so each pair is found once: when its second row arrives, whichever side that is.
//! The pairs are then run through the user's query, its `ON` replaced by "same pair", so WHERE,
//! the projection and an outer join's NULLs are DataFusion's. Rows leave a buffer once stream
//! time (the largest rowtime seen on either side) is past the time a partner could still come.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, TimestampMillisecondArray, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    Expr, Ident, JoinConstraint, JoinOperator, SelectItem, SetExpr, Statement as SqlStatement,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::provider::Slot;
use crate::query::{duration, Parsed};
use crate::{Error, Result};

/// A join's `WITHIN` clause: how far apart in event time two rows may be to join, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Within {
    /// How much earlier than the left row a right row may be.
    pub before: i64,
    /// How much later than the left row a right row may be.
    pub after: i64,
    /// `GRACE PERIOD`: how long past its window a row still finds partners; `None` when not
    /// given, which keeps ksqlDB's older eager outer joins.
    pub grace: Option<i64>,
}

/// How long rows are kept when the join names no grace period: ksqlDB's default (24 hours).
const DEFAULT_GRACE_MS: i64 = 24 * 3_600_000;

/// The column numbering rows in the join's slots, to name pairs.
const PAIR: &str = "__eddy_pair";

impl Within {
    fn grace_ms(&self) -> i64 {
        self.grace.unwrap_or(DEFAULT_GRACE_MS)
    }

    /// How long after its rowtime a row of `side` may still find a partner: its window.
    fn window_end(&self, side: usize) -> i64 {
        if side == 0 {
            self.after
        } else {
            self.before
        }
    }

    /// How long after its rowtime a row is kept: a row of the other side within its bounds may
    /// come until that row's own window closes.
    fn retention(&self) -> i64 {
        self.before
            .saturating_add(self.after)
            .saturating_add(self.grace_ms())
    }
}

/// Parses the `WITHIN …` clause whose keyword is `tokens[at]` (whitespace included): `n UNIT`
/// or `(before UNIT, after UNIT)`, then `GRACE PERIOD n UNIT`. Returns it and the index of the
/// first token after it; `None` when `WITHIN` is something else (`WITHIN GROUP`).
pub(crate) fn parse_within(tokens: &[TokenWithSpan], at: usize) -> Result<Option<(Within, usize)>> {
    // The tokens after WITHIN without whitespace, with their index in `tokens`.
    let (index, t): (Vec<usize>, Vec<TokenWithSpan>) = tokens
        .iter()
        .enumerate()
        .skip(at + 1)
        .filter(|(_, t)| !matches!(t.token, Token::Whitespace(_)))
        .map(|(i, t)| (i, t.clone()))
        .unzip();
    let word = |i: usize| match t.get(i).map(|t| &t.token) {
        Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_uppercase()),
        _ => None,
    };
    let err = |i: usize, expected: &str| Error::syntax_at(t.get(i), t.last(), expected);
    let (before, after, mut i) = match t.first().map(|t| &t.token) {
        Some(Token::Number(..)) => {
            let d = duration(&t, 0)?;
            (d, d, 2)
        }
        Some(Token::LParen) => {
            let before = duration(&t, 1)?;
            if t.get(3).map(|t| &t.token) != Some(&Token::Comma) {
                return Err(err(3, "',' between WITHIN's before and after durations"));
            }
            let after = duration(&t, 4)?;
            if t.get(6).map(|t| &t.token) != Some(&Token::RParen) {
                return Err(err(6, "')' closing WITHIN (before, after)"));
            }
            (before, after, 7)
        }
        _ => return Ok(None),
    };
    let mut grace = None;
    if word(i).as_deref() == Some("GRACE") {
        if word(i + 1).as_deref() != Some("PERIOD") {
            return Err(err(i + 1, "PERIOD after GRACE"));
        }
        grace = Some(duration(&t, i + 2)?);
        i += 4;
    }
    let end = index.get(i).copied().unwrap_or(tokens.len());
    Ok(Some((
        Within {
            before,
            after,
            grace,
        },
        end,
    )))
}

/// The outer rows a join keeps: ksqlDB's INNER, LEFT [OUTER] and FULL [OUTER].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoinKind {
    Inner,
    Left,
    Full,
}

impl JoinKind {
    /// Whether an unmatched row of `side` (0 left, 1 right) is emitted with NULLs.
    fn outer(self, side: usize) -> bool {
        match self {
            JoinKind::Inner => false,
            JoinKind::Left => side == 0,
            JoinKind::Full => true,
        }
    }
}

/// The rows one side has read and may still join.
struct Buffer {
    rows: RecordBatch,
    times: Vec<i64>,
    /// Whether the row has been in a pair, or emitted alone: an outer join's unmatched rows
    /// are the ones still `false` when their window closes.
    done: Vec<bool>,
}

/// A stream–stream join's state and its matching plan.
pub(crate) struct JoinWithin {
    within: Within,
    kind: JoinKind,
    /// The slots both plans read: each side's rows, numbered in `PAIR`.
    slots: [Arc<Slot>; 2],
    /// `SELECT left pair, right pair` over the slots, with the user's ON and the time bounds.
    matching: LogicalPlan,
    buffers: [Buffer; 2],
    stream_time: Option<i64>,
    /// Rows dropped because their window and grace had passed when they came.
    pub(crate) late: u64,
}

/// A stream–stream join planned: its state, and the user's query over the slots (its ON
/// replaced by pair equality), with whether `rowtime` was appended to its output.
pub(crate) struct Planned {
    /// The join's state.
    pub join: JoinWithin,
    /// The query the pairs go through.
    pub plan: LogicalPlan,
    /// Whether the engine added `rowtime` to the output.
    pub appended_rowtime: bool,
}

fn with_pair(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(PAIR, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Plans `parsed` (one JOIN with a WITHIN) over a left stream of schema `left` and a right one
/// of schema `right`, registering its slots as tables named after `id` (added to `tables`).
pub(crate) async fn plan(
    ctx: &SessionContext,
    parsed: &Parsed,
    [left, right]: [SchemaRef; 2],
    id: &str,
    tables: &mut Vec<String>,
) -> Result<Planned> {
    let within = parsed
        .within
        .ok_or_else(|| Error::Plan("a stream–stream join needs WITHIN".into()))?;
    let names = [
        format!("__eddy_{}_left", id.to_lowercase()),
        format!("__eddy_{}_right", id.to_lowercase()),
    ];
    let slots = [Slot::new(with_pair(&left)), Slot::new(with_pair(&right))];
    for (name, slot) in names.iter().zip(&slots) {
        ctx.register_table(name.as_str(), slot.clone())?;
        tables.push(name.clone());
    }
    let aliases = [
        parsed
            .alias
            .clone()
            .unwrap_or_else(|| parsed.source.clone()),
        parsed.joined_aliases[0].clone(),
    ];
    // The user's query, reading the slots, with ON replaced by pair equality.
    let (sql, appended_rowtime) = parsed.stateless_sql(&names[0]);
    let mut statements = Parser::parse_sql(&GenericDialect {}, &sql)
        .map_err(|e| Error::Plan(format!("rewriting the join: {e}")))?;
    let Some(SqlStatement::Query(query)) = statements.first_mut() else {
        return Err(Error::Plan("rewriting the join: not a query".into()));
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(Error::Plan("rewriting the join: not a SELECT".into()));
    };
    if select.projection.iter().any(|p| {
        matches!(
            p,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    }) {
        return Err(Error::Unsupported(
            "SELECT * over a stream–stream join: name the columns (a.col, b.col AS other)".into(),
        ));
    }
    let join = &mut select.from[0].joins[0];
    crate::query::rename(&mut join.relation, &names[1]);
    let pair = |alias: &str| {
        Expr::CompoundIdentifier(vec![
            Ident::with_quote('"', alias),
            Ident::with_quote('"', PAIR),
        ])
    };
    let same_pair = Expr::BinaryOp {
        left: Box::new(pair(&aliases[0])),
        op: datafusion::sql::sqlparser::ast::BinaryOperator::Eq,
        right: Box::new(pair(&aliases[1])),
    };
    let (kind, constraint) = match &mut join.join_operator {
        JoinOperator::Join(c) | JoinOperator::Inner(c) => (JoinKind::Inner, c),
        JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (JoinKind::Left, c),
        JoinOperator::FullOuter(c) => (JoinKind::Full, c),
        _ => {
            return Err(Error::Unsupported(
                "this kind of stream–stream join: use [INNER] JOIN, LEFT [OUTER] JOIN or FULL \
                 [OUTER] JOIN (for RIGHT JOIN, swap the streams and use LEFT JOIN)"
                    .into(),
            ))
        }
    };
    let JoinConstraint::On(on) = std::mem::replace(constraint, JoinConstraint::On(same_pair))
    else {
        return Err(Error::Unsupported(
            "a stream–stream join without ON: write JOIN b WITHIN … ON a.x = b.y".into(),
        ));
    };
    // Rows come out in the order of their pair numbers, which `step` gives in the order the
    // rows arrived; a hash join alone would put unmatched rows last.
    if query.order_by.is_none() {
        let [l, r] = aliases.clone().map(|a| quoted(&a));
        let ordered = format!(
            "SELECT 1 ORDER BY COALESCE({l}.{pair}, {r}.{pair})",
            pair = quoted(PAIR)
        );
        if let Some(SqlStatement::Query(q)) = Parser::parse_sql(&GenericDialect {}, &ordered)
            .map_err(|e| Error::Plan(format!("rewriting the join: {e}")))?
            .pop()
        {
            query.order_by = q.order_by;
        }
    }
    let plan = ctx
        .sql(&query.to_string())
        .await
        .map_err(crate::pipeline::plan_error)?
        .into_unoptimized_plan();
    let plan = crate::type_check::check(plan)?;
    // The pairs: ON and the time bounds, the right row's rowtime within [left - before,
    // left + after].
    let [l, r] = aliases.map(|a| quoted(&a));
    let matching_sql = format!(
        "SELECT {l}.{pair} AS l, {r}.{pair} AS r FROM {} AS {l} JOIN {} AS {r} ON ({on}) \
         AND {r}.rowtime >= {l}.rowtime - INTERVAL '{} milliseconds' \
         AND {r}.rowtime <= {l}.rowtime + INTERVAL '{} milliseconds'",
        quoted(&names[0]),
        quoted(&names[1]),
        within.before,
        within.after,
        pair = quoted(PAIR),
    );
    let matching = ctx
        .sql(&matching_sql)
        .await
        .map_err(crate::pipeline::plan_error)?
        .into_unoptimized_plan();
    // The ON equalities are only in this plan.
    crate::type_check::check_plan(&matching)?;
    let buffer = |schema: &SchemaRef| Buffer {
        rows: RecordBatch::new_empty(schema.clone()),
        times: Vec::new(),
        done: Vec::new(),
    };
    Ok(Planned {
        join: JoinWithin {
            within,
            kind,
            buffers: [buffer(&left), buffer(&right)],
            slots,
            matching,
            stream_time: None,
            late: 0,
        },
        plan,
        appended_rowtime,
    })
}

/// Each row's rowtime; `None` where it is NULL.
fn rowtimes(batch: &RecordBatch) -> Result<Vec<Option<i64>>> {
    let column = batch
        .column_by_name("rowtime")
        .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>())
        .ok_or_else(|| Error::Plan("a joined stream has no TIMESTAMP rowtime".into()))?;
    Ok(column.iter().collect())
}

/// `batch` with a `PAIR` column.
fn numbered(batch: &RecordBatch, schema: &SchemaRef, pairs: Vec<i64>) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(Int64Array::from(pairs)));
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The names of a join's buffers in a checkpoint, by side.
const BUFFERS: [&str; 2] = ["join_left", "join_right"];

impl JoinWithin {
    /// Adds both sides' buffered rows (with their times and whether each was paired or
    /// emitted) and the stream time to `checkpoint`.
    pub(crate) fn save(&self, checkpoint: &mut crate::checkpoint::Checkpoint) -> Result<()> {
        for (side, b) in self.buffers.iter().enumerate() {
            let mut fields: Vec<Field> = b
                .rows
                .schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.push(Field::new("__eddy_time", DataType::Int64, false));
            fields.push(Field::new("__eddy_done", DataType::Boolean, false));
            let mut columns = b.rows.columns().to_vec();
            columns.push(Arc::new(Int64Array::from(b.times.clone())));
            columns.push(Arc::new(BooleanArray::from(b.done.clone())));
            let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
            checkpoint.sections.insert(BUFFERS[side].into(), batch);
        }
        checkpoint.meta.insert(
            "join".into(),
            serde_json::json!({"stream_time": self.stream_time, "late": self.late}),
        );
        Ok(())
    }

    /// Refills the buffers [`JoinWithin::save`] wrote.
    pub(crate) fn restore(&mut self, checkpoint: &crate::checkpoint::Checkpoint) -> Result<()> {
        let bad = || Error::State("the checkpoint's join buffers are malformed".into());
        for (side, b) in self.buffers.iter_mut().enumerate() {
            let batch = checkpoint.section(BUFFERS[side])?;
            let n = batch.num_columns();
            if n != b.rows.num_columns() + 2 {
                return Err(bad());
            }
            let rows = batch.project(&(0..n - 2).collect::<Vec<_>>())?;
            let rows = RecordBatch::try_new(b.rows.schema(), rows.columns().to_vec())
                .map_err(|_| bad())?;
            let times = batch
                .column(n - 2)
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(bad)?;
            let done = batch
                .column(n - 1)
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(bad)?;
            b.times = times.values().to_vec();
            b.done = (0..done.len()).map(|i| done.value(i)).collect();
            b.rows = rows;
        }
        let meta = &checkpoint.meta["join"];
        self.stream_time = meta["stream_time"].as_i64();
        self.late = meta["late"].as_u64().ok_or_else(bad)?;
        Ok(())
    }

    /// The slots both its plans read, left then right.
    pub(crate) fn slots(&self) -> &[Arc<Slot>; 2] {
        &self.slots
    }

    /// Takes a batch of `side` (0 left, 1 right): matches it against the other side's buffer,
    /// buffers it, closes windows stream time has passed and forgets rows no partner can reach
    /// any more. Returns the rows for the user's query, left then right, numbered so that rows
    /// of a pair share a number and a row emitted alone has one of its own; `None` when there
    /// are none.
    pub(crate) async fn step(
        &mut self,
        ctx: &SessionContext,
        batch: RecordBatch,
        side: usize,
    ) -> Result<Option<[RecordBatch; 2]>> {
        let other = 1 - side;
        // Rows no longer reachable by any partner are late: dropped and counted.
        let times = rowtimes(&batch)?;
        let retention = self.within.retention();
        let floor = self.stream_time.unwrap_or(i64::MIN);
        let keep: BooleanArray = times
            .iter()
            .map(|t| Some(t.is_some_and(|t| t.saturating_add(retention) >= floor)))
            .collect();
        let batch = arrow::compute::filter_record_batch(&batch, &keep)?;
        let times: Vec<i64> = times
            .into_iter()
            .flatten()
            .filter(|t| t.saturating_add(retention) >= floor)
            .collect();
        self.late += (keep.len() - batch.num_rows()) as u64;
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        if let Some(&max) = times.iter().max() {
            self.stream_time = Some(self.stream_time.map_or(max, |t| t.max(max)));
        }
        let stream_time = self.stream_time.unwrap_or(i64::MIN);

        // Pairs of a new row and a buffered row of the other side, as (new, buffered).
        let mut pairs: Vec<(usize, usize)> = Vec::new();
        let buffered = &self.buffers[other].rows;
        if buffered.num_rows() > 0 {
            let new = numbered(
                &batch,
                &self.slots[side].schema(),
                (0..batch.num_rows() as i64).collect(),
            )?;
            let old = numbered(
                buffered,
                &self.slots[other].schema(),
                (0..buffered.num_rows() as i64).collect(),
            )?;
            self.slots[side].set(vec![new]);
            self.slots[other].set(vec![old]);
            let found = async {
                ctx.execute_logical_plan(self.matching.clone())
                    .await?
                    .collect()
                    .await
            }
            .await;
            self.slots[0].set(Vec::new());
            self.slots[1].set(Vec::new());
            for b in found? {
                let column = |i: usize| {
                    b.column(i)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .cloned()
                        .ok_or_else(|| Error::Plan("the join's pairs are not numbers".into()))
                };
                let (l, r) = (column(0)?, column(1)?);
                for k in 0..b.num_rows() {
                    let (l, r) = (l.value(k) as usize, r.value(k) as usize);
                    pairs.push(if side == 0 { (l, r) } else { (r, l) });
                }
            }
            pairs.sort_unstable();
        }

        // The new rows join their side's buffer; from here every row is named by its place
        // in a buffer.
        let start = self.buffers[side].rows.num_rows();
        {
            let b = &mut self.buffers[side];
            b.rows = arrow::compute::concat_batches(&b.rows.schema(), [&b.rows, &batch])?;
            b.times.extend(&times);
            b.done.resize(b.done.len() + times.len(), false);
        }
        // Per side, the buffered rows to emit, with their pair numbers: the new rows' pairs, and
        // without a grace period their unmatched outer rows, in the order the rows came.
        let mut emit: [(Vec<u32>, Vec<i64>); 2] = Default::default();
        let mut next = 0i64;
        let mut paired = pairs.iter().peekable();
        for new in 0..batch.num_rows() {
            let mine = start + new;
            while let Some(&(_, theirs)) = paired.next_if(|(n, _)| *n == new) {
                self.buffers[side].done[mine] = true;
                self.buffers[other].done[theirs] = true;
                emit[side].0.push(mine as u32);
                emit[side].1.push(next);
                emit[other].0.push(theirs as u32);
                emit[other].1.push(next);
                next += 1;
            }
            if self.within.grace.is_none()
                && self.kind.outer(side)
                && !self.buffers[side].done[mine]
            {
                // Without a grace period, ksqlDB emits an unmatched row at once.
                self.buffers[side].done[mine] = true;
                emit[side].0.push(mine as u32);
                emit[side].1.push(next);
                next += 1;
            }
        }
        for s in [0, 1] {
            if !self.kind.outer(s) {
                continue;
            }
            let close = self.within.window_end(s);
            let b = &mut self.buffers[s];
            for i in 0..b.times.len() {
                if b.done[i] {
                    continue;
                }
                // Without a grace period, unmatched rows went out with their batch, above.
                let alone = self
                    .within
                    .grace
                    .is_some_and(|grace| stream_time > b.times[i].saturating_add(close + grace));
                if alone {
                    b.done[i] = true;
                    emit[s].0.push(i as u32);
                    emit[s].1.push(next);
                    next += 1;
                }
            }
        }
        let out = if next == 0 {
            None
        } else {
            let mut out = Vec::with_capacity(2);
            for (s, (rows, numbers)) in emit.into_iter().enumerate() {
                let b = &self.buffers[s];
                let indices = UInt32Array::from(rows);
                let columns = b
                    .rows
                    .columns()
                    .iter()
                    .map(|c| arrow::compute::take(c.as_ref(), &indices, None))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let taken = RecordBatch::try_new(b.rows.schema(), columns)?;
                out.push(numbered(&taken, &self.slots[s].schema(), numbers)?);
            }
            let right = out.pop().expect("two sides");
            let left = out.pop().expect("two sides");
            Some([left, right])
        };

        // Forget rows no partner can reach any more.
        for b in &mut self.buffers {
            let keep: Vec<bool> = b
                .times
                .iter()
                .map(|t| t.saturating_add(retention) >= stream_time)
                .collect();
            if keep.iter().all(|k| *k) {
                continue;
            }
            let mask = BooleanArray::from(keep.clone());
            b.rows = arrow::compute::filter_record_batch(&b.rows, &mask)?;
            let mut k = keep.iter();
            b.times.retain(|_| *k.next().expect("same length"));
            let mut k = keep.iter();
            b.done.retain(|_| *k.next().expect("same length"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::StringArray;
    use arrow::datatypes::TimeUnit;

    use super::*;

    fn schema(value: &str) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new(value, DataType::Utf8, true),
            Field::new(
                "rowtime",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]))
    }

    fn rows(schema: &SchemaRef, rows: &[(&str, i64)]) -> RecordBatch {
        let keys: Vec<&str> = rows.iter().map(|(k, _)| *k).collect();
        let times: Vec<i64> = rows.iter().map(|(_, t)| *t).collect();
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(keys.clone())),
                Arc::new(StringArray::from(keys)),
                Arc::new(TimestampMillisecondArray::from(times)),
            ],
        )
        .unwrap()
    }

    fn held(join: &JoinWithin) -> [usize; 2] {
        [0, 1].map(|s| join.buffers[s].times.len())
    }

    #[tokio::test]
    async fn pairs_once_and_forgets_rows_no_partner_can_reach() {
        let ctx = SessionContext::new();
        let parsed = crate::query::parse(
            "SELECT a.k, b.v FROM a LEFT JOIN b WITHIN 10 SECONDS GRACE PERIOD 5 SECONDS \
             ON a.k = b.k",
        )
        .unwrap();
        let (left, right) = (schema("x"), schema("v"));
        let mut tables = Vec::new();
        let mut join = plan(
            &ctx,
            &parsed,
            [left.clone(), right.clone()],
            "t",
            &mut tables,
        )
        .await
        .unwrap()
        .join;
        // The right row first; the left one 4 s later pairs with it, once.
        assert!(join
            .step(&ctx, rows(&right, &[("a", 6_000)]), 1)
            .await
            .unwrap()
            .is_none());
        let [l, r] = join
            .step(&ctx, rows(&left, &[("a", 10_000), ("b", 10_000)]), 0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((l.num_rows(), r.num_rows()), (1, 1));
        assert_eq!(held(&join), [2, 1]);
        // Stream time 25 s passes b's window (10 + 10 + 5 s): b comes out alone.
        let [l, r] = join
            .step(&ctx, rows(&right, &[("z", 25_001)]), 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((l.num_rows(), r.num_rows()), (1, 0));
        // Past before + after + grace (25 s) from 10 s, every earlier row is gone.
        join.step(&ctx, rows(&right, &[("z", 35_001)]), 1)
            .await
            .unwrap();
        assert_eq!(held(&join), [0, 2]);
        // A row that old now is late: dropped and counted.
        assert!(join
            .step(&ctx, rows(&left, &[("a", 6_000)]), 0)
            .await
            .unwrap()
            .is_none());
        assert_eq!((join.late, held(&join)), (1, [0, 2]));
    }
}
