//! ksqlDB's statistical aggregates: `HISTOGRAM(s)`, `CORRELATION(x, y)` and `STDDEV_SAMPLE(x)`
//! (also `STDDEV_SAMP`). `HISTOGRAM` counts each string, NULLs aside, in a MAP in order of first
//! arrival. Both keep running moments (Welford's), which merge exactly enough (Chan's),
//! and answer as ksqlDB does: a correlation of fewer than two points is NaN, a deviation of one
//! value is 0, of none NULL. Rows with a NULL input are skipped.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, Int64Builder, ListArray, MapBuilder, StringArray,
    StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
};

/// Which statistic an aggregate gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
enum Stat {
    #[default]
    Correlation,
    StddevSample,
}

/// A ksqlDB statistical aggregate.
#[derive(Debug, PartialEq, Eq, Hash)]
struct KsqlStat {
    name: &'static str,
    aliases: &'static [&'static str],
    stat: Stat,
    signature: Signature,
}

/// This family's functions.
pub(super) fn all() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::new_from_impl(Histogram {
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
        }),
        AggregateUDF::new_from_impl(KsqlStat {
            name: "correlation",
            aliases: &[],
            stat: Stat::Correlation,
            signature: Signature::any(2, Volatility::Immutable),
        }),
        AggregateUDF::new_from_impl(KsqlStat {
            name: "stddev_sample",
            aliases: &["stddev_samp"],
            stat: Stat::StddevSample,
            signature: Signature::any(1, Volatility::Immutable),
        }),
    ]
}

/// The names of the moments, in state order.
const MOMENTS: [&str; 6] = ["n", "mean_x", "mean_y", "m2_x", "m2_y", "c_xy"];

impl AggregateUDFImpl for KsqlStat {
    fn name(&self) -> &str {
        self.name
    }

    fn aliases(&self) -> &[String] {
        // `aliases` hands out `String`s; build them once per process.
        static STDDEV: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        if self.aliases.is_empty() {
            return &[];
        }
        STDDEV.get_or_init(|| self.aliases.iter().map(|a| a.to_string()).collect())
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        for t in arg_types {
            if !(t.is_numeric() || t.is_null()) {
                return plan_err!("{} takes numbers, not {t}", self.name.to_uppercase());
            }
        }
        Ok(DataType::Float64)
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Moments {
            stat: self.stat,
            ..Moments::default()
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(MOMENTS
            .iter()
            .map(|m| {
                Arc::new(Field::new(
                    format_state_name(args.name, m),
                    DataType::Float64,
                    true,
                ))
            })
            .collect())
    }
}

/// Running count, means, squared deviations and co-deviation of the pairs seen.
#[derive(Debug, Default, Clone, Copy)]
struct Moments {
    stat: Stat,
    n: f64,
    mean_x: f64,
    mean_y: f64,
    m2_x: f64,
    m2_y: f64,
    c_xy: f64,
}

impl Moments {
    fn add(&mut self, x: f64, y: f64) {
        self.n += 1.0;
        let dx = x - self.mean_x;
        let dy = y - self.mean_y;
        self.mean_x += dx / self.n;
        self.mean_y += dy / self.n;
        self.m2_x += dx * (x - self.mean_x);
        self.m2_y += dy * (y - self.mean_y);
        self.c_xy += dx * (y - self.mean_y);
    }

    fn merge(&mut self, o: &Moments) {
        if o.n == 0.0 {
            return;
        }
        if self.n == 0.0 {
            *self = Moments {
                stat: self.stat,
                ..*o
            };
            return;
        }
        let n = self.n + o.n;
        let dx = o.mean_x - self.mean_x;
        let dy = o.mean_y - self.mean_y;
        let w = self.n * o.n / n;
        self.m2_x += o.m2_x + dx * dx * w;
        self.m2_y += o.m2_y + dy * dy * w;
        self.c_xy += o.c_xy + dx * dy * w;
        self.mean_x += dx * o.n / n;
        self.mean_y += dy * o.n / n;
        self.n = n;
    }
}

fn doubles(a: &ArrayRef) -> Result<Vec<Option<f64>>> {
    let a = cast(a, &DataType::Float64)?;
    Ok(a.as_primitive::<Float64Type>().iter().collect())
}

impl Accumulator for Moments {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let x = doubles(&values[0])?;
        let y = match values.get(1) {
            Some(y) => doubles(y)?,
            None => vec![Some(0.0); x.len()],
        };
        for (x, y) in x.into_iter().zip(y) {
            if let (Some(x), Some(y)) = (x, y) {
                self.add(x, y);
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let columns = states.iter().map(doubles).collect::<Result<Vec<_>>>()?;
        let stat = self.stat;
        let parts: Vec<Moments> = (0..states[0].len())
            .map(|i| {
                let v = |c: usize| columns[c][i].unwrap_or(0.0);
                Moments {
                    stat,
                    n: v(0),
                    mean_x: v(1),
                    mean_y: v(2),
                    m2_x: v(3),
                    m2_y: v(4),
                    c_xy: v(5),
                }
            })
            .collect();
        for part in &parts {
            self.merge(part);
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok([
            self.n,
            self.mean_x,
            self.mean_y,
            self.m2_x,
            self.m2_y,
            self.c_xy,
        ]
        .map(|v| ScalarValue::Float64(Some(v)))
        .to_vec())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let value = match self.stat {
            Stat::Correlation if self.n < 2.0 => Some(f64::NAN),
            Stat::Correlation => Some(self.c_xy / (self.m2_x.sqrt() * self.m2_y.sqrt())),
            Stat::StddevSample if self.n == 0.0 => None,
            Stat::StddevSample if self.n == 1.0 => Some(0.0),
            Stat::StddevSample => Some((self.m2_x / (self.n - 1.0)).sqrt()),
        };
        Ok(ScalarValue::Float64(value))
    }

    fn size(&self) -> usize {
        size_of_val(self)
    }
}

/// ksqlDB's `HISTOGRAM`: how many times each string arrived.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Histogram {
    signature: Signature,
}

/// `HISTOGRAM`'s type: a `MAP<STRING, BIGINT>` as [`MapBuilder`] builds it.
fn histogram_type() -> DataType {
    let entries = Field::new_struct(
        "entries",
        vec![
            Field::new("keys", DataType::Utf8, false),
            Field::new("values", DataType::Int64, true),
        ],
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

impl AggregateUDFImpl for Histogram {
    fn name(&self) -> &str {
        "histogram"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(histogram_type())
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Counts::default()))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format_state_name(args.name, "keys"),
                DataType::new_list(DataType::Utf8, true),
                true,
            )),
            Arc::new(Field::new(
                format_state_name(args.name, "counts"),
                DataType::new_list(DataType::Int64, true),
                true,
            )),
        ])
    }
}

/// Each string and its count, in order of first arrival.
#[derive(Debug, Default)]
struct Counts(Vec<(String, i64)>);

impl Counts {
    fn add(&mut self, key: &str, n: i64) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 += n,
            None => self.0.push((key.to_string(), n)),
        }
    }
}

impl Accumulator for Counts {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = cast(&values[0], &DataType::Utf8)?;
        for v in values.as_string::<i32>().iter().flatten() {
            self.add(v, 1);
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (keys, counts) = (states[0].as_list::<i32>(), states[1].as_list::<i32>());
        for i in 0..keys.len() {
            if keys.is_null(i) || counts.is_null(i) {
                continue;
            }
            let (k, c) = (keys.value(i), counts.value(i));
            let k = k.as_string::<i32>();
            let c = c.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            for (k, c) in k.iter().zip(c.iter()) {
                if let (Some(k), Some(c)) = (k, c) {
                    self.add(k, c);
                }
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let keys: StringArray = self.0.iter().map(|(k, _)| Some(k.as_str())).collect();
        let counts: Int64Array = self.0.iter().map(|(_, c)| Some(*c)).collect();
        let list = |a: ArrayRef| ScalarValue::List(Arc::new(one_row_list(a)));
        Ok(vec![list(Arc::new(keys)), list(Arc::new(counts))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let mut out = MapBuilder::new(None, StringBuilder::new(), Int64Builder::new());
        for (k, c) in &self.0 {
            out.keys().append_value(k);
            out.values().append_value(*c);
        }
        out.append(true)?;
        ScalarValue::try_from_array(&out.finish(), 0)
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.0.iter().map(|(k, _)| k.capacity() + 32).sum::<usize>()
    }
}

/// A one-row list array holding `values`.
fn one_row_list(values: ArrayRef) -> ListArray {
    let field = Arc::new(Field::new_list_field(values.data_type().clone(), true));
    let offsets = datafusion::arrow::buffer::OffsetBuffer::from_lengths([values.len()]);
    ListArray::new(field, offsets, values, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Float64Array;

    fn run(stat: Stat, x: &[Option<f64>], y: &[Option<f64>]) -> Moments {
        let mut m = Moments {
            stat,
            ..Moments::default()
        };
        let x: ArrayRef = Arc::new(Float64Array::from(x.to_vec()));
        let y: ArrayRef = Arc::new(Float64Array::from(y.to_vec()));
        m.update_batch(&[x, y]).unwrap();
        m
    }

    #[test]
    fn answers_as_ksqldb_does() {
        let value = |mut m: Moments| match m.evaluate().unwrap() {
            ScalarValue::Float64(v) => v,
            other => panic!("{other}"),
        };
        assert!(value(run(Stat::Correlation, &[Some(1.0)], &[Some(2.0)]))
            .unwrap()
            .is_nan());
        let x = [Some(1.5), Some(-1.0), Some(-4.5), None];
        let y = [Some(8.0), Some(-2.0), Some(-1.0), Some(-6.0)];
        let r = value(run(Stat::Correlation, &x, &y)).unwrap();
        assert!((r - 0.7580764521133173).abs() < 1e-12, "{r}");
        assert_eq!(
            value(run(Stat::StddevSample, &[Some(3.0)], &[Some(0.0)])),
            Some(0.0)
        );
        assert_eq!(value(run(Stat::StddevSample, &[], &[])), None);
    }

    #[test]
    fn histogram_state_merges_back() {
        let mut whole = Counts::default();
        let input: ArrayRef = Arc::new(StringArray::from(vec![
            Some("a"),
            None,
            Some("b"),
            Some("a"),
        ]));
        whole.update_batch(&[input]).unwrap();
        let state: Vec<ArrayRef> = whole
            .state()
            .unwrap()
            .iter()
            .map(|v| v.to_array().unwrap())
            .collect();
        let mut merged = Counts::default();
        merged.merge_batch(&state).unwrap();
        merged.merge_batch(&state).unwrap();
        assert_eq!(merged.0, vec![("a".to_string(), 4), ("b".to_string(), 2)]);
        assert_eq!(whole.evaluate().unwrap().to_string(), "[{a:2,b:1}]");
    }

    #[test]
    fn merged_moments_match_one_pass() {
        let x = [Some(1.0), Some(4.0), Some(-2.0), Some(7.5)];
        let y = [Some(2.0), Some(3.0), Some(0.5), Some(-1.0)];
        let whole = run(Stat::Correlation, &x, &y);
        let mut merged = run(Stat::Correlation, &x[..1], &y[..1]);
        merged.merge(&run(Stat::Correlation, &x[1..], &y[1..]));
        assert!((merged.c_xy - whole.c_xy).abs() < 1e-9);
        assert!((merged.m2_x - whole.m2_x).abs() < 1e-9);
    }
}
