//! Vector inputs and outputs: sensor arrays as `DOUBLE[]`.
use eddy_udf::udf;

/// Euclidean norm of a vector; null for an empty one.
#[udf]
fn l2_norm(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().map(|x| x * x).sum::<f64>().sqrt())
}

/// Scales every element of a vector by `factor`.
#[udf]
fn scale(v: &[f64], factor: f64) -> Vec<f64> {
    v.iter().map(|x| x * factor).collect()
}

/// Dot product of two vectors of equal length, computed a whole batch per call.
#[udf(batch)]
fn dot(a: Vec<&[f64]>, b: Vec<&[f64]>) -> Vec<Result<f64, String>> {
    a.iter()
        .zip(&b)
        .map(|(a, b)| {
            if a.len() != b.len() {
                return Err(format!("lengths differ: {} and {}", a.len(), b.len()));
            }
            Ok(a.iter().zip(*b).map(|(x, y)| x * y).sum())
        })
        .collect()
}

eddy_udf::export!(l2_norm, scale, dot);
