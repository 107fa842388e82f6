use eddy_udf::udf;

/// Halves a number.
#[udf]
fn half(x: f32) -> f64 {
    f64::from(x) / 2.0
}

eddy_udf::export!(half);

fn main() {}
