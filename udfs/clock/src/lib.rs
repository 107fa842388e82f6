//! A function declared volatile: its component's instances read the host's real clock.
//! (Components whose functions are all immutable see a clock stopped at the Unix epoch.)
use eddy_udf::udf;

/// Milliseconds since the Unix epoch by the guest's wall clock.
#[udf(volatility = "volatile")]
fn now_ms(_x: i64) -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(-1, |d| d.as_millis() as i64)
}

eddy_udf::export!(now_ms);
