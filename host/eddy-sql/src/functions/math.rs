//! Numeric functions where ksqlDB's differ from DataFusion's: `SIGN` (an `INTEGER`) and `ROUND`
//! (halves go towards positive infinity; one argument gives a `BIGINT`). `ABS`, `CEIL` and
//! `FLOOR` are DataFusion's.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int32Array, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::Result;

use super::scalar::{returns, Ksql};
use super::string::ints;

const D: DataType = DataType::Float64;
const I: DataType = DataType::Int64;

/// This family's functions.
pub(super) fn all() -> Vec<Ksql> {
    vec![
        Ksql::new("sign", vec![vec![D]], returns!(DataType::Int32), |a, _| {
            let out: Int32Array = doubles(&a[0])?
                .iter()
                .map(|v| {
                    v.map(|v| {
                        if v > 0.0 {
                            1
                        } else if v < 0.0 {
                            -1
                        } else {
                            0
                        }
                    })
                })
                .collect();
            Ok(Arc::new(out))
        }),
        Ksql::new(
            "round",
            vec![vec![I], vec![D], vec![D, I]],
            |t| Ok(if t.len() == 2 { D } else { I }),
            round,
        ),
    ]
}

fn round(a: &[ArrayRef], _: usize) -> Result<ArrayRef> {
    if a[0].data_type().is_integer() && a.len() == 1 {
        return Ok(Arc::new(ints(&a[0])?));
    }
    let x = doubles(&a[0])?;
    if a.len() == 1 {
        let out: Int64Array = x
            .iter()
            .map(|v| {
                v.filter(|v| v.is_finite())
                    .map(|v| (v + 0.5).floor() as i64)
            })
            .collect();
        return Ok(Arc::new(out));
    }
    let scale = ints(&a[1])?;
    let out: Float64Array = (0..x.len())
        .map(|i| {
            if x.is_null(i) || scale.is_null(i) {
                return None;
            }
            Some(round_to(x.value(i), scale.value(i)))
        })
        .collect();
    Ok(Arc::new(out))
}

/// Rounds `x` to `scale` decimal places as ksqlDB does, on its shortest decimal form (so
/// 1.005 is 1.01, as written, not 1.00 as stored); halves go towards positive infinity.
fn round_to(x: f64, scale: i64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    // Display never uses an exponent, and gives the shortest digits that read back as x.
    let text = format!("{}", x.abs());
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let digits = format!("{whole}{fraction}");
    let places = fraction.len() as i64;
    let drop = places - scale;
    if drop <= 0 {
        return x;
    }
    let (Ok(value), Some(divisor)) = (
        digits.parse::<i128>(),
        u32::try_from(drop).ok().and_then(|d| 10i128.checked_pow(d)),
    ) else {
        // More digits than an i128 holds: rounding in binary is as good as it gets.
        let f = 10f64.powi(scale as i32);
        return (x * f + 0.5).floor() / f;
    };
    let (mut q, r) = (value / divisor, value % divisor);
    let half = divisor / 2;
    if (x >= 0.0 && r >= half) || (x < 0.0 && r > half) {
        q += 1;
    }
    let signed = if x < 0.0 { -q } else { q };
    format!("{signed}e{}", -scale).parse().unwrap_or(x)
}

fn doubles(a: &ArrayRef) -> Result<Float64Array> {
    Ok(cast(a, &D)?.as_primitive::<Float64Type>().clone())
}

#[cfg(test)]
mod tests {
    use super::round_to;

    #[test]
    fn rounds_halves_up_on_the_written_digits() {
        assert_eq!(round_to(1.005, 2), 1.01);
        assert_eq!(round_to(-2.5, 0), -2.0);
        assert_eq!(round_to(2.5, 0), 3.0);
        assert_eq!(round_to(-1.235, 2), -1.23);
        assert_eq!(round_to(1234.5, -2), 1200.0);
        assert_eq!(round_to(1.2, 3), 1.2);
    }
}
