use eddy_udf::udf;

/// The length of a text.
#[udf]
fn length(text: &str) -> usize {
    text.len()
}

eddy_udf::export!(length);

fn main() {}
