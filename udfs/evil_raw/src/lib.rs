//! Guests that break the contract in ways `#[udf]` cannot express: the host must check what
//! comes back, not trust the declaration.
use eddy_udf::__private::{Column, ColumnValues, FunctionSignature, Guest, Param, ScalarResult};
use eddy_udf::bindings::eddy::udf::types::{DataType, Utf8Values, Volatility};

struct EvilRaw;

fn signature(name: &str, returns: DataType, doc: &str) -> FunctionSignature {
    FunctionSignature {
        name: name.to_string(),
        params: vec![Param {
            name: "x".to_string(),
            data_type: DataType::Int64,
        }],
        returns,
        volatility: Volatility::Immutable,
        doc: doc.to_string(),
    }
}

impl Guest for EvilRaw {
    fn describe() -> Vec<FunctionSignature> {
        vec![
            signature(
                "too_many_rows",
                DataType::Int64,
                "Returns one row more than it was given.",
            ),
            signature(
                "wrong_type",
                DataType::Float64,
                "Declares DOUBLE, returns its BIGINT argument.",
            ),
            signature(
                "bad_offsets",
                DataType::Utf8,
                "Returns strings whose offsets point past their data.",
            ),
        ]
    }

    fn call(function: String, args: Vec<Column>, rows: u32) -> Result<ScalarResult, String> {
        let arg = args.into_iter().next().ok_or("no argument")?;
        let column = match function.as_str() {
            "too_many_rows" => Column {
                len: rows + 1,
                validity: None,
                values: ColumnValues::Int64((0..=i64::from(rows)).collect()),
            },
            "wrong_type" => arg,
            "bad_offsets" => Column {
                len: rows,
                validity: None,
                values: ColumnValues::Utf8(Utf8Values {
                    offsets: (0..=rows).map(|i| i * 1000).collect(),
                    data: b"short".to_vec(),
                }),
            },
            other => return Err(format!("no function named '{other}'")),
        };
        Ok(ScalarResult {
            column,
            row_errors: Vec::new(),
        })
    }
}

eddy_udf::bindings::_export!(EvilRaw with_types_in eddy_udf::bindings);
