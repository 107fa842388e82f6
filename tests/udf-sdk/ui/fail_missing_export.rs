use eddy_udf::udf;

/// Converts degrees Celsius to degrees Fahrenheit.
#[udf]
fn celsius_to_fahrenheit(c: f64) -> f64 {
    c * 9.0 / 5.0 + 32.0
}

/// Converts degrees Fahrenheit to degrees Celsius; the author forgot it in `export!`.
#[udf]
fn fahrenheit_to_celsius(f: f64) -> f64 {
    (f - 32.0) * 5.0 / 9.0
}

eddy_udf::export!(celsius_to_fahrenheit);

fn main() {}
