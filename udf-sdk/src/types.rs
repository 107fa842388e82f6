//! The SQL types and volatility a UDF declares, mirrored from the WIT so authors need not import
//! the bindings.

use crate::bindings::eddy::udf::types as wit;

/// A SQL type a UDF can take or return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// `DOUBLE`.
    Float64,
    /// `BIGINT`.
    Int64,
    /// `BOOLEAN`.
    Boolean,
    /// `VARCHAR`.
    Utf8,
    /// `DOUBLE[]`.
    ListFloat64,
}

impl From<DataType> for wit::DataType {
    fn from(t: DataType) -> Self {
        match t {
            DataType::Float64 => wit::DataType::Float64,
            DataType::Int64 => wit::DataType::Int64,
            DataType::Boolean => wit::DataType::Boolean,
            DataType::Utf8 => wit::DataType::Utf8,
            DataType::ListFloat64 => wit::DataType::ListFloat64,
        }
    }
}

/// Whether a function's result depends only on its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Volatility {
    /// Same arguments, same result.
    Immutable,
    /// Same result within one query.
    Stable,
    /// May differ on every call.
    Volatile,
}

impl From<Volatility> for wit::Volatility {
    fn from(v: Volatility) -> Self {
        match v {
            Volatility::Immutable => wit::Volatility::Immutable,
            Volatility::Stable => wit::Volatility::Stable,
            Volatility::Volatile => wit::Volatility::Volatile,
        }
    }
}
