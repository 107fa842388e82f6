//! One counted guest call over Arrow arrays: what the serving version, a shadow and a replay
//! all do with a batch.

use std::sync::atomic::Ordering;
use std::time::Instant;

use datafusion::arrow::array::ArrayRef;

use crate::component::CallFailure;
use crate::convert::Argument;
use crate::{convert, Component, FunctionSignature, FunctionStats, LimitKind};

/// A call's result column (failed rows are null) and the rows the guest said failed.
pub(crate) struct Called {
    pub(crate) array: ArrayRef,
    pub(crate) row_errors: Vec<(u32, String)>,
}

/// Why a call produced no result.
#[derive(Debug, Clone)]
pub(crate) enum CallError {
    /// An argument could not be passed as its declared type; the guest was not called.
    Argument { param: String, message: String },
    /// The guest failed the batch, trapped or hit a limit.
    Call {
        failure: CallFailure,
        limit: Option<LimitKind>,
    },
    /// The guest's result broke the contract (wrong length, type, offsets).
    BadResult(String),
}

impl CallError {
    /// The error text a query sees for function `name`.
    pub(crate) fn message(&self, name: &str) -> String {
        match self {
            CallError::Argument { param, message } => {
                format!("UDF '{name}': argument '{param}': {message}")
            }
            CallError::Call {
                failure: CallFailure::Guest(message),
                ..
            } => format!("UDF '{name}' failed: {message}"),
            CallError::Call {
                failure: CallFailure::Trap { message, .. },
                ..
            } => format!("UDF '{name}' {message}"),
            CallError::BadResult(e) => format!("UDF '{name}' returned a bad result: {e}"),
        }
    }
}

/// Runs `function` of `component` over `args` (`rows` rows), counting in `stats`.
pub(crate) fn call_counted(
    component: &Component,
    function: &FunctionSignature,
    args: &[ArrayRef],
    rows: usize,
    stats: &FunctionStats,
    deadline: Option<Instant>,
) -> Result<Called, CallError> {
    let mut arguments = Vec::with_capacity(args.len());
    for (array, (param, ty)) in args.iter().zip(&function.params) {
        let argument = Argument::new(array, *ty).map_err(|message| CallError::Argument {
            param: param.clone(),
            message,
        })?;
        arguments.push(argument);
    }
    let columns: Vec<_> = arguments.iter().map(Argument::column).collect();
    stats.calls.fetch_add(1, Ordering::Relaxed);
    stats.rows.fetch_add(rows as u64, Ordering::Relaxed);
    let started = Instant::now();
    let result = component.call(&function.name, &columns, rows as u32, deadline);
    stats.call_duration.observe(started.elapsed());
    let result = result.map_err(|failure| {
        let limit = match &failure {
            CallFailure::Guest(_) => None,
            CallFailure::Trap { limit, .. } => {
                stats.traps.fetch_add(1, Ordering::Relaxed);
                if let Some(kind) = limit {
                    stats.limit_hit(*kind);
                }
                *limit
            }
        };
        CallError::Call { failure, limit }
    })?;
    if !result.row_errors.is_empty() {
        stats
            .row_errors
            .fetch_add(result.row_errors.len() as u64, Ordering::Relaxed);
    }
    let array = convert::from_wit(result.column, &result.row_errors, function.returns, rows)
        .map_err(CallError::BadResult)?;
    Ok(Called {
        array,
        row_errors: result
            .row_errors
            .into_iter()
            .map(|e| (e.row, e.message))
            .collect(),
    })
}
