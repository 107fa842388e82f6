//! The fixed versions of two of `evil`'s functions, with the same names and types: what a
//! capture of `evil` replays clean on, and a serving version for a hostile shadow to run beside.
use eddy_udf::udf;

/// Clamps negative input to 0 instead of panicking: the fix for `evil`'s `panic_if_negative`.
#[udf]
fn panic_if_negative(x: f64) -> f64 {
    x.max(0.0)
}

/// Returns `x`; `evil`'s `spin` never returns.
#[udf]
fn spin(x: f64) -> f64 {
    x
}

eddy_udf::export!(panic_if_negative, spin);
