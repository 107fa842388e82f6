//! Numeric functions where ksqlDB's differ from DataFusion's: `SIGN` (an `INTEGER`), `ROUND`
//! (halves go towards positive infinity; one argument gives a `BIGINT`), `LOG` (natural, or of
//! a base) and `SQRT` (NaN below 0), and ksqlDB's `GEO_DISTANCE`. `ABS`, `CEIL` and `FLOOR` are DataFusion's.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int32Array, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::Result;

use super::scalar::{returns, Ksql};
use super::string::{ints, strings};

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
        // ksqlDB's LOG is the natural logarithm (DataFusion's is base 10); LOG(base, x).
        Ksql::new("log", vec![vec![D], vec![D, D]], returns!(D), |a, _| {
            let values = doubles(&a[a.len() - 1])?;
            let out: Float64Array = match a.len() {
                1 => values.iter().map(|v| v.map(f64::ln)).collect(),
                _ => {
                    let bases = doubles(&a[0])?;
                    bases
                        .iter()
                        .zip(values.iter())
                        .map(|(b, v)| match (b?, v?) {
                            (b, _) if b <= 0.0 || b == 1.0 => Some(f64::NAN),
                            (b, v) => Some(v.ln() / b.ln()),
                        })
                        .collect()
                }
            };
            Ok(Arc::new(out))
        }),
        // NaN for a negative number, as Java's Math.sqrt.
        Ksql::new("sqrt", vec![vec![D]], returns!(D), |a, _| {
            let out: Float64Array = doubles(&a[0])?.iter().map(|v| v.map(f64::sqrt)).collect();
            Ok(Arc::new(out))
        }),
        Ksql::new(
            "geo_distance",
            vec![vec![D, D, D, D], vec![D, D, D, D, DataType::Utf8]],
            returns!(D),
            geo_distance,
        ),
    ]
}

/// ksqlDB's `GEO_DISTANCE(lat1, lon1, lat2, lon2[, unit])`: the great-circle distance, by the
/// haversine formula, in kilometres (`'KM'`, the default, or a NULL unit) or miles (`'MI'`).
/// NULL for a latitude or longitude out of range or another unit (ksqlDB fails the row).
fn geo_distance(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let coords = a[..4].iter().map(doubles).collect::<Result<Vec<_>>>()?;
    let units = a.get(4).map(strings).transpose()?;
    let out: Float64Array = (0..rows)
        .map(|i| {
            if coords.iter().any(|c| c.is_null(i)) {
                return None;
            }
            let radius = match &units {
                Some(u) if u.is_valid(i) => earth_radius(u.value(i))?,
                _ => earth_radius("KM")?,
            };
            let [lat1, lon1, lat2, lon2] = [0, 1, 2, 3].map(|c| coords[c].value(i));
            haversine(lat1, lon1, lat2, lon2, radius)
        })
        .collect();
    Ok(Arc::new(out))
}

/// The earth's radius in `unit`, as ksqlDB takes it.
fn earth_radius(unit: &str) -> Option<f64> {
    match unit.trim().to_ascii_uppercase().as_str() {
        "KM" | "KILOMETER" | "KILOMETERS" | "KILOMETRE" | "KILOMETRES" => Some(6371.0),
        "MI" | "MILE" | "MILES" => Some(3959.0),
        _ => None,
    }
}

fn haversine(lat1: f64, lon1: f64, lat2: f64, lon2: f64, radius: f64) -> Option<f64> {
    let lat_ok = |l: f64| (-90.0..=90.0).contains(&l);
    let lon_ok = |l: f64| (-180.0..=180.0).contains(&l);
    if !(lat_ok(lat1) && lat_ok(lat2) && lon_ok(lon1) && lon_ok(lon2)) {
        return None;
    }
    let d_lat = (lat2 - lat1).to_radians();
    let d_lon = (lon2 - lon1).to_radians();
    let h = (d_lat / 2.0).sin().powi(2)
        + (d_lon / 2.0).sin().powi(2) * lat1.to_radians().cos() * lat2.to_radians().cos();
    Some(2.0 * h.sqrt().asin() * radius)
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
    use super::{haversine, round_to};

    #[test]
    fn geo_distance_matches_ksqldb() {
        let (lat1, lon1, lat2, lon2) = (37.4439, -122.1663, 51.5257, -0.1122);
        let km = haversine(lat1, lon1, lat2, lon2, 6371.0).unwrap();
        assert!((km - 8634.6598).abs() < 1e-3, "{km}");
        assert_eq!(haversine(91.0, 0.0, 0.0, 0.0, 6371.0), None);
    }

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
