//! ksqlDB's aggregates: `TOPK`, `TOPKDISTINCT`, `COLLECT_LIST`, `COLLECT_SET`,
//! `EARLIEST_BY_OFFSET`, `LATEST_BY_OFFSET`. Each keeps its values as a list, which is also its
//! state, so a checkpointed `state()` merges back exactly.

use std::cmp::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;

/// What an aggregate keeps of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// The `k` greatest non-null values, greatest first; with `distinct`, each value once.
    TopK { distinct: bool },
    /// Every value, nulls too, in arrival order.
    List,
    /// Every distinct value, nulls too, in order of first arrival.
    Set,
    /// The first non-null value.
    Earliest,
    /// The last non-null value.
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
    let with_k = || Signature::one_of(vec![TypeSignature::Any(2)], Volatility::Immutable);
    [
        ("topk", Kind::TopK { distinct: false }, with_k()),
        ("topkdistinct", Kind::TopK { distinct: true }, with_k()),
        ("collect_list", Kind::List, one()),
        ("collect_set", Kind::Set, one()),
        ("earliest_by_offset", Kind::Earliest, one()),
        ("latest_by_offset", Kind::Latest, one()),
    ]
    .into_iter()
    .map(|(name, kind, signature)| {
        AggregateUDF::new_from_impl(KsqlAggregate {
            name,
            kind,
            signature,
        })
    })
    .collect()
}

impl KsqlAggregate {
    /// Whether the result is a list (else the value itself).
    fn returns_list(&self) -> bool {
        !matches!(self.kind, Kind::Earliest | Kind::Latest)
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
        Ok(if self.returns_list() {
            DataType::new_list(arg_types[0].clone(), true)
        } else {
            arg_types[0].clone()
        })
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let item = args.expr_fields[0].data_type().clone();
        let k = match self.kind {
            Kind::TopK { .. } => {
                let k = args.exprs[1]
                    .downcast_ref::<Literal>()
                    .and_then(|l| l.value().cast_to(&DataType::Int64).ok())
                    .and_then(|v| match v {
                        ScalarValue::Int64(Some(k)) if k > 0 => Some(k as usize),
                        _ => None,
                    });
                match k {
                    Some(k) => k,
                    None => {
                        return plan_err!(
                            "{}: k must be a positive integer literal, not {}",
                            self.name.to_uppercase(),
                            args.exprs[1]
                        )
                    }
                }
            }
            _ => usize::MAX,
        };
        Ok(Box::new(Collected {
            kind: self.kind,
            k,
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

/// The values an aggregate keeps, in the order its result lists them.
#[derive(Debug)]
struct Collected {
    kind: Kind,
    k: usize,
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
            Kind::Earliest => {
                if self.values.is_empty() && !value.is_null() {
                    self.values.push(value)
                }
            }
            Kind::Latest => {
                if !value.is_null() {
                    self.values = vec![value]
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
        self.add_all(&values[0])
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
        match self.kind {
            Kind::Earliest | Kind::Latest => match self.values.first() {
                Some(v) => Ok(v.clone()),
                None => ScalarValue::try_from(&self.item),
            },
            _ => Ok(self.list()),
        }
    }

    fn size(&self) -> usize {
        size_of_val(self) + ScalarValue::size_of_vec(&self.values) - size_of_val(&self.values)
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
            item: DataType::Int64,
            values: Vec::new(),
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
        assert_eq!(result(Kind::Earliest, 0), "3");
        assert_eq!(result(Kind::Latest, 0), "1");
    }
}
