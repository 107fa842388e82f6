use eddy_udf::udf;

/// A type of the author's own: #[udf] cannot tell from its name, the trait bounds can.
pub struct Point {
    pub x: f64,
    pub y: f64,
}

/// The point's distance from the origin.
#[udf]
fn norm(p: Point) -> f64 {
    p.x.hypot(p.y)
}

eddy_udf::export!(norm);

fn main() {}
