//! Hostile and broken UDFs; the host's tests assert it survives each of them.
use eddy_udf::udf;

/// Panics when `x` is negative (a trap in wasm), else returns `x`.
#[udf]
fn panic_if_negative(x: f64) -> f64 {
    if x < 0.0 {
        panic!("negative input {x}");
    }
    x
}

/// Never returns.
#[udf]
fn spin(x: f64) -> f64 {
    let mut n = x;
    loop {
        n = std::hint::black_box(n + 1.0);
    }
}

/// Allocates until memory runs out.
#[udf]
fn hog(x: f64) -> f64 {
    let mut keep: Vec<Vec<u8>> = Vec::new();
    loop {
        keep.push(vec![1; 16 << 20]);
        std::hint::black_box(&keep);
        if x.is_nan() {
            return keep.len() as f64;
        }
    }
}

/// Logs its input to the host log and returns it.
#[udf]
fn chatty(x: f64) -> f64 {
    eddy_udf::log::info(&format!("chatty saw {x}"));
    x
}

eddy_udf::export!(panic_if_negative, spin, hog, chatty);
