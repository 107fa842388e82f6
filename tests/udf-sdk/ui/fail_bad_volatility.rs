use eddy_udf::udf;

/// Milliseconds since the Unix epoch.
#[udf(volatility = "sometimes")]
fn now_ms(_x: i64) -> i64 {
    0
}

eddy_udf::export!(now_ms);

fn main() {}
