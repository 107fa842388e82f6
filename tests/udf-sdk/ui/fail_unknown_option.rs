use eddy_udf::udf;

/// Doubles a number.
#[udf(nmae = "twice")]
fn double(x: f64) -> f64 {
    x * 2.0
}

eddy_udf::export!(double);

fn main() {}
