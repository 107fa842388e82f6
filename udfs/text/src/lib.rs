//! Strings, integers, booleans and nulls: a UDF that sees nulls itself and one that fails per row.
use eddy_udf::udf;

/// Shouts a car id: upper case, with `!` repeated `times` times.
#[udf]
fn shout(text: &str, times: i64) -> String {
    format!(
        "{}{}",
        text.to_uppercase(),
        "!".repeat(times.clamp(0, 16) as usize)
    )
}

/// True when the label is present and not empty; null labels are false, not null.
#[udf]
fn has_label(label: Option<&str>) -> bool {
    label.is_some_and(|l| !l.is_empty())
}

/// Parses a car id like `car-0042` into its number; anything else is a row error.
#[udf]
fn car_number(car: &str) -> Result<i64, String> {
    car.strip_prefix("car-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("not a car id: {car:?}"))
}

/// Negates a flag; null stays null.
#[udf]
fn flip(flag: bool) -> bool {
    !flag
}

eddy_udf::export!(shout, has_label, car_number, flip);
