//! A function's versions over REST: serving, previous and shadow, with the shadow's comparison,
//! for `DESCRIBE FUNCTION … EXTENDED` over `/ksql` and `GET /functions/{name}`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::Json;
use eddy_udf_host::{FunctionStats, WasmScalarUdf};
use serde_json::{json, Value};

use crate::error::{code, ApiError};
use crate::AppState;

/// One version's counters.
fn counters(stats: &FunctionStats) -> Value {
    let duration = stats.call_duration.snapshot();
    let limit_hits: serde_json::Map<String, Value> = stats
        .limit_hits_by_kind()
        .iter()
        .map(|(kind, n)| (kind.label().to_string(), json!(n)))
        .collect();
    json!({
        "calls": stats.calls.load(Ordering::Relaxed),
        "rows": stats.rows.load(Ordering::Relaxed),
        "rowErrors": stats.row_errors.load(Ordering::Relaxed),
        "traps": stats.traps.load(Ordering::Relaxed),
        "limitHits": limit_hits,
        "callSeconds": duration.sum_seconds(),
    })
}

/// `{"serving": {…}, "previous": {…} | null, "shadow": {…} | null}`.
pub(crate) fn versions(udf: &WasmScalarUdf) -> Value {
    let serving = udf.component();
    let mut serving_json = counters(&udf.stats());
    serving_json["version"] = json!(serving.hash);
    serving_json["source"] = json!(serving.source);
    let previous = udf
        .previous()
        .map(|p| json!({"version": p.hash, "source": p.source}));
    let shadow = udf.shadow().map(|s| {
        let report = s.report();
        let mut shadow = counters(&s.stats());
        let extra = json!({
            "version": s.component.hash,
            "source": s.component.source,
            "sample": s.config.sample,
            "tolerance": s.config.tolerance,
            "keep": s.config.keep,
            "rowsCompared": report.rows_compared,
            "rowsDiffering": report.rows_differing,
            "rowsSkipped": report.rows_skipped,
            "rowsNotSampled": report.rows_not_sampled,
            "queries": report.per_query.iter().map(|(id, c)| json!({
                "queryId": id,
                "rowsCompared": c.rows,
                "rowsDiffering": c.differing,
            })).collect::<Vec<_>>(),
            "lastError": report.last_error,
            "differences": report.differences.iter().map(|d| json!({
                "arguments": d.arguments.iter().map(|(n, v)| (n.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "serving": d.serving,
                "shadow": d.shadow,
            })).collect::<Vec<_>>(),
        });
        if let (Some(target), Value::Object(extra)) = (shadow.as_object_mut(), extra) {
            target.extend(extra);
        }
        shadow
    });
    json!({"serving": serving_json, "previous": previous, "shadow": shadow})
}

/// `GET /functions/{name}`: the function's signature and its versions.
pub(crate) async fn describe(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let wanted = name.to_lowercase();
    let udf = state
        .engine
        .lock()
        .await
        .session()
        .functions()
        .get(&wanted)
        .cloned()
        .ok_or_else(|| {
            ApiError::generic(
                StatusCode::NOT_FOUND,
                code::NOT_FOUND,
                format!("function '{wanted}' does not exist (GET /functions lists them)"),
            )
        })?;
    let mut body = versions(&udf);
    body["name"] = json!(wanted);
    body["signature"] = json!(udf.description().display());
    Ok(Json(body))
}
