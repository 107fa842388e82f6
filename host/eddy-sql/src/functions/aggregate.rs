//! ksqlDB's aggregates: `TOPK`, `TOPKDISTINCT`, `COLLECT_LIST`, `COLLECT_SET`,
//! `EARLIEST_BY_OFFSET`, `LATEST_BY_OFFSET`. Each keeps its values as a list, which is also its
//! state, so a checkpointed `state()` merges back exactly. `COUNT_DISTINCT` is DataFusion's
//! `COUNT(DISTINCT …)` under ksqlDB's name; its state is the list of values seen, too.
//!
//! Over a table's changes, `COLLECT_LIST` and `COLLECT_SET` also retract: the engine passes the
//! sign of each change (its hidden `__eddy_…` column) as a second argument, and a row leaving
//! its group takes its value back out, as ksqlDB's undo does (one occurrence from a list; the
//! value from a set).
//!
//! `EARLIEST_BY_OFFSET`/`LATEST_BY_OFFSET` take ksqlDB's four forms: `(col)`, `(col,
//! ignoreNulls)`, `(col, n)` and `(col, n, ignoreNulls)`; with `n` the result is an ARRAY of up to
//! `n` values, oldest first, and `ignoreNulls` is true unless given.

use std::cmp::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::functions_aggregate::count::Count;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::PhysicalExpr;

/// What an aggregate keeps of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// The `k` greatest non-null values, greatest first; with `distinct`, each value once.
    TopK { distinct: bool },
    /// Every value, nulls too, in arrival order.
    List,
    /// Every distinct value, nulls too, in order of first arrival.
    Set,
    /// The first `k` values (the first one, for the forms without `n`).
    Earliest,
    /// The last `k` values, oldest first.
    Latest,
}

/// A ksqlDB aggregate function.
#[derive(Debug, PartialEq, Eq, Hash)]
struct KsqlAggregate {
    name: &'static str,
    kind: Kind,
    signature: Signature,
}

/// This family's functions.
pub(super) fn all() -> Vec<AggregateUDF> {
    let one = || Signature::any(1, Volatility::Immutable);
    // The second argument is the engine's retraction sign, never a user's (see `accumulator`).
    let one_or_signed = || {
        Signature::one_of(
            vec![TypeSignature::Any(1), TypeSignature::Any(2)],
            Volatility::Immutable,
        )
    };
    let with_k = || Signature::one_of(vec![TypeSignature::Any(2)], Volatility::Immutable);
    let by_offset = || {
        Signature::one_of(
            (1..=3).map(TypeSignature::Any).collect(),
            Volatility::Immutable,
        )
    };
    [
        ("topk", Kind::TopK { distinct: false }, with_k()),
        ("topkdistinct", Kind::TopK { distinct: true }, with_k()),
        ("collect_list", Kind::List, one_or_signed()),
        ("collect_set", Kind::Set, one_or_signed()),
        ("earliest_by_offset", Kind::Earliest, by_offset()),
        ("latest_by_offset", Kind::Latest, by_offset()),
    ]
    .into_iter()
    .map(|(name, kind, signature)| {
        AggregateUDF::new_from_impl(KsqlAggregate {
            name,
            kind,
            signature,
        })
    })
    .chain(std::iter::once(AggregateUDF::new_from_impl(
        CountDistinct { signature: one() },
    )))
    .collect()
}

impl KsqlAggregate {
    /// Whether the result is a list (else the value itself), from the argument types: for
    /// `EARLIEST_BY_OFFSET`/`LATEST_BY_OFFSET`, whether `n` is given.
    fn returns_list(&self, arg_types: &[DataType]) -> Result<bool> {
        if !matches!(self.kind, Kind::Earliest | Kind::Latest) {
            return Ok(true);
        }
        let rest: Vec<&DataType> = arg_types[1..].iter().collect();
        match rest.as_slice() {
            [] => Ok(false),
            [DataType::Boolean] => Ok(false),
            [n] if n.is_integer() => Ok(true),
            [n, DataType::Boolean] if n.is_integer() => Ok(true),
            _ => plan_err!(
                "{} takes (col), (col, ignoreNulls), (col, n) or (col, n, ignoreNulls), not ({})",
                self.name.to_uppercase(),
                arg_types
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// The positive integer literal `expr` is, or a plan error naming `what` it should be.
    fn positive_literal(&self, expr: &Arc<dyn PhysicalExpr>, what: &str) -> Result<usize> {
        let k = expr
            .downcast_ref::<Literal>()
            .and_then(|l| l.value().cast_to(&DataType::Int64).ok())
            .and_then(|v| match v {
                ScalarValue::Int64(Some(k)) if k > 0 => Some(k as usize),
                _ => None,
            });
        match k {
            Some(k) => Ok(k),
            None => plan_err!(
                "{}: {what} must be a positive integer literal, not {expr}",
                self.name.to_uppercase()
            ),
        }
    }

    /// The boolean literal `expr` is, or a plan error.
    fn boolean_literal(&self, expr: &Arc<dyn PhysicalExpr>) -> Result<bool> {
        match expr.downcast_ref::<Literal>().map(|l| l.value()) {
            Some(ScalarValue::Boolean(Some(b))) => Ok(*b),
            _ => plan_err!(
                "{}: ignoreNulls must be TRUE or FALSE, not {expr}",
                self.name.to_uppercase()
            ),
        }
    }
}

impl AggregateUDFImpl for KsqlAggregate {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if let Kind::TopK { .. } = self.kind {
            if !arg_types[1].is_integer() {
                return plan_err!(
                    "{}: k must be a positive integer, not {}",
                    self.name.to_uppercase(),
                    arg_types[1]
                );
            }
        }
        Ok(if self.returns_list(arg_types)? {
            DataType::new_list(arg_types[0].clone(), true)
        } else {
            arg_types[0].clone()
        })
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let item = args.expr_fields[0].data_type().clone();
        let types: Vec<DataType> = args
            .expr_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let list = self.returns_list(&types)?;
        let (k, ignore_nulls) = match self.kind {
            Kind::TopK { .. } => (self.positive_literal(&args.exprs[1], "k")?, true),
            Kind::Earliest | Kind::Latest => {
                let k = if list {
                    self.positive_literal(&args.exprs[1], "n")?
                } else {
                    1
                };
                let ignore_nulls = match types.last() {
                    Some(DataType::Boolean) if types.len() > 1 => {
                        self.boolean_literal(&args.exprs[types.len() - 1])?
                    }
                    _ => true,
                };
                (k, ignore_nulls)
            }
            Kind::List | Kind::Set => (usize::MAX, false),
        };
        let signed = matches!(self.kind, Kind::List | Kind::Set) && args.exprs.len() == 2;
        if signed && !is_engine_sign(&args.exprs[1]) {
            return plan_err!("{} takes one argument", self.name.to_uppercase());
        }
        Ok(Box::new(Collected {
            kind: self.kind,
            k,
            ignore_nulls,
            list,
            signed,
            item,
            values: Vec::new(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let item = args.input_fields[0].data_type().clone();
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "values"),
            DataType::new_list(item, true),
            true,
        ))])
    }
}

/// Whether `expr` is a hidden column of the engine's (the retraction sign of a table's changes).
fn is_engine_sign(expr: &Arc<dyn PhysicalExpr>) -> bool {
    expr.downcast_ref::<datafusion::physical_expr::expressions::Column>()
        .is_some_and(|c| c.name().starts_with("__eddy_"))
}

/// The values an aggregate keeps, in the order its result lists them.
#[derive(Debug)]
struct Collected {
    kind: Kind,
    /// How many values `TopK`, `Earliest` and `Latest` keep.
    k: usize,
    /// Whether `Earliest` and `Latest` skip NULLs.
    ignore_nulls: bool,
    /// Whether the result is the list of values (else its only value, or NULL).
    list: bool,
    /// Whether input comes with a second column, the sign of a table's change: -1 retracts.
    signed: bool,
    item: DataType,
    values: Vec<ScalarValue>,
}

impl Collected {
    fn add(&mut self, value: ScalarValue) {
        match self.kind {
            Kind::List => self.values.push(value),
            Kind::Set => {
                if !self.values.contains(&value) {
                    self.values.push(value)
                }
            }
            Kind::Earliest | Kind::Latest if self.ignore_nulls && value.is_null() => {}
            Kind::Earliest => {
                if self.values.len() < self.k {
                    self.values.push(value)
                }
            }
            Kind::Latest => {
                self.values.push(value);
                if self.values.len() > self.k {
                    self.values.remove(0);
                }
            }
            Kind::TopK { distinct } => {
                if value.is_null() || (distinct && self.values.contains(&value)) {
                    return;
                }
                // Greatest first; among equals, the earlier stays first.
                let at = self.values.partition_point(|v| {
                    v.partial_cmp(&value).unwrap_or(Ordering::Equal) != Ordering::Less
                });
                if at < self.k {
                    self.values.insert(at, value);
                    self.values.truncate(self.k);
                }
            }
        }
    }

    /// Takes back a value a row that left the group had added: one occurrence of it from a
    /// list, the value from a set (even if another row added it too, as ksqlDB does).
    fn remove(&mut self, value: &ScalarValue) {
        if let Some(at) = self.values.iter().position(|v| v == value) {
            self.values.remove(at);
        }
    }

    fn add_all(&mut self, values: &ArrayRef) -> Result<()> {
        for i in 0..values.len() {
            self.add(ScalarValue::try_from_array(values, i)?);
        }
        Ok(())
    }

    fn list(&self) -> ScalarValue {
        ScalarValue::List(ScalarValue::new_list_nullable(&self.values, &self.item))
    }
}

impl Accumulator for Collected {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        if !self.signed {
            return self.add_all(&values[0]);
        }
        let signs = datafusion::arrow::compute::cast(&values[1], &DataType::Int64)?;
        let signs = signs.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        for i in 0..values[0].len() {
            let value = ScalarValue::try_from_array(&values[0], i)?;
            if signs.is_valid(i) && signs.value(i) < 0 {
                self.remove(&value);
            } else {
                self.add(value);
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists = states[0].as_list::<i32>();
        for i in 0..lists.len() {
            if lists.is_valid(i) {
                self.add_all(&lists.value(i))?;
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.list()])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.list {
            return Ok(self.list());
        }
        match self.values.first() {
            Some(v) => Ok(v.clone()),
            None => ScalarValue::try_from(&self.item),
        }
    }

    fn size(&self) -> usize {
        size_of_val(self) + ScalarValue::size_of_vec(&self.values) - size_of_val(&self.values)
    }
}

/// `COUNT_DISTINCT(col)`: how many distinct non-null values `col` has, counted by DataFusion's
/// `COUNT(DISTINCT col)`. ksqlDB estimates the number with HyperLogLog; this one is exact, which
/// ksqlDB's estimate approaches (and matches for small numbers).
#[derive(Debug, PartialEq, Eq, Hash)]
struct CountDistinct {
    signature: Signature,
}

impl AggregateUDFImpl for CountDistinct {
    fn name(&self) -> &str {
        "count_distinct"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Count::new().accumulator(AccumulatorArgs {
            is_distinct: true,
            ..args
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Count::new().state_fields(StateFieldsArgs {
            is_distinct: true,
            ..args
        })
    }

    // No values (a group of NULLs only) count 0, not NULL.
    fn default_value(&self, _data_type: &DataType) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    fn collected(kind: Kind, k: usize) -> Collected {
        Collected {
            kind,
            k,
            ignore_nulls: !matches!(kind, Kind::List | Kind::Set),
            list: true,
            signed: false,
            item: DataType::Int64,
            values: Vec::new(),
        }
    }

    fn single(kind: Kind, ignore_nulls: bool) -> Collected {
        Collected {
            ignore_nulls,
            list: false,
            ..collected(kind, 1)
        }
    }

    fn ints(values: &[Option<i64>]) -> ArrayRef {
        Arc::new(Int64Array::from(values.to_vec()))
    }

    #[test]
    fn state_merges_back_to_the_same_result() {
        for kind in [
            Kind::TopK { distinct: false },
            Kind::TopK { distinct: true },
            Kind::List,
            Kind::Set,
            Kind::Earliest,
            Kind::Latest,
        ] {
            let mut whole = collected(kind, 2);
            let mut first = collected(kind, 2);
            let mut second = collected(kind, 2);
            let a = ints(&[Some(3), None, Some(5)]);
            let b = ints(&[Some(5), Some(1), None]);
            whole.update_batch(std::slice::from_ref(&a)).unwrap();
            whole.update_batch(std::slice::from_ref(&b)).unwrap();
            first.update_batch(&[a]).unwrap();
            second.update_batch(&[b]).unwrap();
            let mut merged = collected(kind, 2);
            for part in [&mut first, &mut second] {
                let state = part.state().unwrap()[0].to_array().unwrap();
                merged.merge_batch(&[state]).unwrap();
            }
            assert_eq!(
                merged.evaluate().unwrap(),
                whole.evaluate().unwrap(),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn keeps_what_ksqldb_keeps() {
        let input = ints(&[Some(3), None, Some(5), Some(5), Some(1)]);
        let result = |kind, k| {
            let mut c = collected(kind, k);
            c.update_batch(std::slice::from_ref(&input)).unwrap();
            c.evaluate().unwrap().to_string()
        };
        assert_eq!(result(Kind::TopK { distinct: false }, 3), "[5, 5, 3]");
        assert_eq!(result(Kind::TopK { distinct: true }, 3), "[5, 3, 1]");
        assert_eq!(result(Kind::List, 0), "[3, , 5, 5, 1]");
        assert_eq!(result(Kind::Set, 0), "[3, , 5, 1]");
        assert_eq!(result(Kind::Earliest, 2), "[3, 5]");
        assert_eq!(result(Kind::Latest, 2), "[5, 1]");
    }

    #[test]
    fn signed_rows_take_their_values_back_out() {
        let values = ints(&[Some(3), Some(5), Some(3), Some(3), Some(5)]);
        let signs = ints(&[Some(1), Some(1), Some(1), Some(-1), Some(1)]);
        let result = |kind| {
            let mut c = Collected {
                signed: true,
                ..collected(kind, 0)
            };
            c.update_batch(&[values.clone(), signs.clone()]).unwrap();
            c.evaluate().unwrap().to_string()
        };
        assert_eq!(result(Kind::List), "[5, 3, 5]");
        assert_eq!(result(Kind::Set), "[5]");
    }

    #[test]
    fn by_offset_keeps_nulls_when_told() {
        let input = ints(&[None, Some(3), None]);
        let result = |mut c: Collected| {
            c.update_batch(std::slice::from_ref(&input)).unwrap();
            c.evaluate().unwrap().to_string()
        };
        assert_eq!(result(single(Kind::Earliest, true)), "3");
        assert_eq!(result(single(Kind::Earliest, false)), "NULL");
        assert_eq!(result(single(Kind::Latest, true)), "3");
        assert_eq!(result(single(Kind::Latest, false)), "NULL");
        let mut keep_nulls = collected(Kind::Latest, 2);
        keep_nulls.ignore_nulls = false;
        assert_eq!(result(keep_nulls), "[3, ]");
        assert_eq!(result(collected(Kind::Earliest, 5)), "[3]");
    }
}
