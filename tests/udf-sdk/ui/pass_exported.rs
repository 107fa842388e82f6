//! Every kind of argument and result the SDK supports, each function listed in `export!`; the
//! component's `describe` and `call` exports then work on the host too.
use eddy_udf::__private::{Column, ColumnValues, Guest};
use eddy_udf::bindings::eddy::udf::types::Utf8Values;
use eddy_udf::udf;

/// Converts degrees Celsius to degrees Fahrenheit.
#[udf]
fn celsius_to_fahrenheit(c: f64) -> f64 {
    c * 9.0 / 5.0 + 32.0
}

/// Upper-cases text; a NULL stays NULL.
#[udf(name = "shout", volatility = "stable")]
pub fn shout_it(text: Option<&str>) -> Option<String> {
    text.map(str::to_uppercase)
}

/// Parses an integer; a bad one is a row error.
#[udf(volatility = "volatile")]
fn parse(text: String, strict: bool) -> Result<i64, std::num::ParseIntError> {
    if strict {
        text.parse()
    } else {
        text.trim().parse()
    }
}

/// Euclidean norm of each vector, one call per batch.
#[udf(batch)]
fn norms(vectors: Vec<&[f64]>) -> Vec<f64> {
    vectors
        .iter()
        .map(|v| v.iter().map(|x| x * x).sum::<f64>().sqrt())
        .collect()
}

/// An alias of a supported type is accepted.
type Celsius = f64;

/// The temperature in Celsius and in Kelvin.
#[udf]
pub(crate) fn both_scales(c: Celsius, _unused: Vec<f64>) -> Vec<f64> {
    vec![c, c + 273.15]
}

/// As in `udfs/anomaly`: text in, one result or row error per row, a batch per call.
#[udf(batch)]
fn all_digits(texts: Vec<&str>) -> Vec<Result<bool, String>> {
    texts
        .into_iter()
        .map(|t| match t.is_empty() {
            true => Err("empty".to_string()),
            false => Ok(t.bytes().all(|b| b.is_ascii_digit())),
        })
        .collect()
}

/// A function in another module, exported through a `use`.
mod inner {
    use eddy_udf::udf;

    /// Doubles an integer.
    #[udf]
    pub fn twice(x: i64) -> i64 {
        x * 2
    }
}
use inner::twice;

eddy_udf::export!(
    celsius_to_fahrenheit,
    shout_it,
    parse,
    norms,
    both_scales,
    all_digits,
    twice,
);

fn main() {
    let names: Vec<String> = __EddyUdfComponent::describe()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(
        names,
        [
            "celsius_to_fahrenheit",
            "shout",
            "parse",
            "norms",
            "both_scales",
            "all_digits",
            "twice"
        ]
    );

    // Row 1 is NULL: the function is not called and the result is NULL.
    let celsius = Column {
        len: 2,
        validity: Some(vec![0b01]),
        values: ColumnValues::Float64(vec![100.0, 0.0]),
    };
    let out = __EddyUdfComponent::call("celsius_to_fahrenheit".into(), vec![celsius], 2).unwrap();
    assert_eq!(out.column.validity, Some(vec![0xfd]));
    assert!(matches!(out.column.values, ColumnValues::Float64(v) if v[0] == 212.0));

    let text = Column {
        len: 2,
        validity: None,
        values: ColumnValues::Utf8(Utf8Values {
            offsets: vec![0, 2, 4],
            data: b"42x1".to_vec(),
        }),
    };
    let strict = Column {
        len: 2,
        validity: None,
        values: ColumnValues::Boolean(vec![0b11]),
    };
    let out = __EddyUdfComponent::call("parse".into(), vec![text, strict], 2).unwrap();
    assert_eq!(out.row_errors.len(), 1);
    assert_eq!(out.row_errors[0].row, 1);
    assert!(matches!(out.column.values, ColumnValues::Int64(v) if v[0] == 42));
}
