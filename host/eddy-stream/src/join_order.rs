//! The order a join reads its two inputs in: by event time, as Kafka Streams does, so that a
//! backlog on both sides (a restart, or topics filled before the query starts) joins as the
//! same events arriving live would. Each side's next step waits as [`Pending`]; the side whose
//! first row is earlier goes on, up to the other side's first row.

use std::collections::BTreeMap;

use arrow::array::{Array, TimestampMillisecondArray};

use crate::input::{InputBatch, NullValues};

/// A step read from one side of a join and not yet processed in full.
pub(crate) struct Pending {
    /// What is left of it. Its `first` holds, per partition, the offset of its first
    /// unprocessed message: where a checkpoint or commit of that side must stop.
    pub step: InputBatch,
    /// For an in-memory side, where it read from before this step: until the step is
    /// processed, `settle` must not see the side as read up.
    pub memory_from: Vec<u64>,
    /// When it was read: how long it has waited for the other side.
    pub read_at: std::time::Instant,
}

/// The event time of the step's first row; `None` when it has no rows (only bad events or
/// records without a value), which nothing needs to wait for.
fn head(step: &InputBatch) -> Option<i64> {
    times(step).and_then(|t| (!t.is_empty() && t.is_valid(0)).then(|| t.value(0)))
}

fn times(step: &InputBatch) -> Option<&TimestampMillisecondArray> {
    step.batch
        .column_by_name("rowtime")
        .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>())
}

/// Which of the two steps goes on, and how many of its leading rows: those not later than the
/// other's first row (on a tie the left side goes first). A step without rows goes on whole.
pub(crate) fn next_of(steps: [&InputBatch; 2]) -> (usize, usize) {
    let rows = |side: usize| steps[side].batch.num_rows();
    let (Some(left), Some(right)) = (head(steps[0]), head(steps[1])) else {
        let side = usize::from(head(steps[0]).is_some());
        return (side, rows(side));
    };
    let (side, until) = if left <= right {
        (0, right)
    } else {
        (1, left - 1)
    };
    let times = times(steps[side]).expect("a step with a head has times");
    let n = (0..times.len())
        .take_while(|&i| times.is_null(i) || times.value(i) <= until)
        .count();
    (side, n)
}

/// Takes the first `n` rows of `step` out as a step of their own; `step` keeps the rest. Bad
/// events go with the first part, and each part's `first` says where its messages start.
pub(crate) fn take(step: &mut InputBatch, n: usize) -> InputBatch {
    let rows = step.batch.num_rows();
    let rest_from = step.rows_from.as_ref().filter(|from| from.len() == rows);
    // Where the rest starts in each partition; without row positions, conservatively where
    // the whole step started.
    let rest_first = match rest_from {
        Some(from) => {
            let mut first = BTreeMap::new();
            for (p, o) in &from[n..] {
                first.entry(*p).or_insert(*o);
            }
            first
        }
        None => step.first.clone(),
    };
    let (nulls_taken, nulls_left) = match step.nulls.take() {
        Some(nulls) => split_nulls(nulls, n),
        None => (None, None),
    };
    let taken = InputBatch {
        batch: step.batch.slice(0, n),
        bad: std::mem::take(&mut step.bad),
        first: std::mem::replace(&mut step.first, rest_first),
        side: step.side,
        partition: step.partition,
        nulls: nulls_taken,
        rows_from: step
            .rows_from
            .as_ref()
            .map(|f| f[..n.min(f.len())].to_vec()),
    };
    step.batch = step.batch.slice(n, rows - n);
    step.nulls = nulls_left;
    if let Some(from) = step.rows_from.as_mut() {
        from.drain(..n.min(from.len()));
    }
    taken
}

/// Records without a value placed before row `n` go with the first part.
fn split_nulls(nulls: NullValues, n: usize) -> (Option<NullValues>, Option<NullValues>) {
    let before = nulls.at.iter().take_while(|at| **at < n).count();
    let part = |from: usize, len: usize, shift: usize| {
        (len > 0).then(|| NullValues {
            rows: nulls.rows.slice(from, len),
            at: nulls.at[from..from + len]
                .iter()
                .map(|at| at - shift)
                .collect(),
        })
    };
    let total = nulls.at.len();
    (part(0, before, 0), part(before, total - before, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn step(side: usize, rows: &[(i64, i64)]) -> InputBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, true),
            Field::new(
                "rowtime",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.1),
                )),
            ],
        )
        .unwrap();
        InputBatch {
            rows_from: Some((0..rows.len() as i64).map(|o| (0, 10 + o)).collect()),
            first: BTreeMap::from([(0, 10)]),
            batch,
            bad: Vec::new(),
            side,
            partition: None,
            nulls: None,
        }
    }

    fn values(step: &InputBatch) -> Vec<i64> {
        let v = step.batch.column(0).as_any().downcast_ref::<Int64Array>();
        v.unwrap().values().to_vec()
    }

    #[test]
    fn the_earlier_side_goes_on_up_to_the_other_sides_first_row() {
        let mut left = step(0, &[(1, 0), (2, 11_000), (3, 13_000), (4, 17_000)]);
        let right = step(1, &[(5, 10_000), (6, 15_000)]);
        assert_eq!(next_of([&left, &right]), (0, 1));
        let taken = take(&mut left, 1);
        assert_eq!((values(&taken), values(&left)), (vec![1], vec![2, 3, 4]));
        // The rest starts at the second message; the part taken where the step did.
        assert_eq!(taken.first, BTreeMap::from([(0, 10)]));
        assert_eq!(left.first, BTreeMap::from([(0, 11)]));
        // Now the right side is earlier, up to (not including) the left's 11 000.
        assert_eq!(next_of([&left, &right]), (1, 1));
    }

    #[test]
    fn on_a_tie_the_left_side_goes_first_and_late_rows_stay_in_their_place() {
        let left = step(0, &[(1, 5_000), (2, 1_000), (3, 6_000)]);
        let right = step(1, &[(4, 5_000)]);
        assert_eq!(next_of([&left, &right]), (0, 2));
        let right = step(1, &[(4, 4_000)]);
        assert_eq!(next_of([&left, &right]), (1, 1));
    }

    #[test]
    fn records_without_a_value_go_with_the_rows_before_them() {
        let mut left = step(0, &[(1, 0), (2, 10)]);
        let nulls = step(0, &[(9, 5), (8, 20)]).batch;
        left.nulls = Some(NullValues {
            rows: nulls,
            at: vec![0, 2],
        });
        let taken = take(&mut left, 1);
        assert_eq!(taken.nulls.as_ref().map(|n| n.at.clone()), Some(vec![0]));
        assert_eq!(left.nulls.as_ref().map(|n| n.at.clone()), Some(vec![1]));
    }
}
