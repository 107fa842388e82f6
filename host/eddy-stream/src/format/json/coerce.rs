//! A JSON value read as a column's type, with ksqlDB's coercions (its `KsqlJsonDeserializer`):
//! numbers from their text, a fraction truncated to an integer, text from any value. Booleans
//! are only `true` and `false`, as in ksqlDB.

use serde_json::Value;

/// A BIGINT: an integer, a number truncated, or text holding an integer.
pub(crate) fn to_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// An INT: as [`to_i64`], within INT's range.
pub(crate) fn to_i32(v: &Value) -> Option<i32> {
    match v {
        Value::String(s) => s.parse().ok(),
        other => i32::try_from(to_i64(other)?).ok(),
    }
}

/// A DOUBLE: a number, or text holding one (`NaN` and the infinities as ksqlDB writes them).
pub(crate) fn to_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            // Java's spellings only: Rust would also read "nan" and "inf".
            s if s
                .bytes()
                .any(|b| b.is_ascii_alphabetic() && !b.eq_ignore_ascii_case(&b'e')) =>
            {
                None
            }
            s => s.parse().ok(),
        },
        _ => None,
    }
}

/// A VARCHAR: text as it is, a number or boolean as its text, an object as its JSON, an array
/// as `[a, b]` of its elements' text.
pub(crate) fn to_text(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|i| to_text(i).unwrap_or_else(|| "null".into()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_coerced_as_ksqldb_coerces_them() {
        assert_eq!(to_i64(&json!("12")), Some(12));
        assert_eq!(to_i64(&json!(2.9)), Some(2));
        assert_eq!(to_i64(&json!("2.9")), None);
        assert_eq!(to_i64(&json!(true)), None);
        assert_eq!(to_i32(&json!(2_147_483_648i64)), None);
        assert_eq!(to_i32(&json!("-7")), Some(-7));
        assert_eq!(to_f64(&json!("1.5")), Some(1.5));
        assert!(to_f64(&json!("NaN")).unwrap().is_nan());
        assert_eq!(to_f64(&json!("fast")), None);
        assert_eq!(to_f64(&json!("inf")), None);
        assert_eq!(to_f64(&json!("-2e3")), Some(-2000.0));
        assert_eq!(to_text(&json!(11)).as_deref(), Some("11"));
        assert_eq!(to_text(&json!(false)).as_deref(), Some("false"));
        assert_eq!(
            to_text(&json!([1, "a", null])).as_deref(),
            Some("[1, a, null]")
        );
        assert_eq!(to_text(&json!({"a": 1})).as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(to_text(&Value::Null), None);
    }
}
