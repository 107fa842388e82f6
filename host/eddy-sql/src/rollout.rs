//! Safe rollout statements: a shadow version beside the serving one (`CREATE OR REPLACE
//! FUNCTION … WITH (shadow = true)`), `ALTER FUNCTION … PROMOTE | ROLLBACK | DROP SHADOW`, and
//! what `DESCRIBE FUNCTION … EXTENDED` adds.

use std::sync::atomic::Ordering;

use eddy_udf_host::{FunctionStats, WasmScalarUdf};

use crate::session::short;
use crate::statement::{AlterAction, LimitOverrides, ShadowOptions};
use crate::{Error, Output, Result, Session};

impl Session {
    /// Loads `path` as the shadow of `name`, which must exist and keeps serving.
    pub(crate) async fn create_shadow(
        &mut self,
        name: &str,
        path: &str,
        limits: &LimitOverrides,
        options: &ShadowOptions,
    ) -> Result<Output> {
        self.access().check_build(std::path::Path::new(path))?;
        let udf = self.functions.get(name).cloned().ok_or_else(|| {
            Error::Function(format!(
                "function '{name}' does not exist: a shadow runs beside a serving version, so \
                 CREATE FUNCTION {name} first"
            ))
        })?;
        let limits = limits.apply(self.runtime.limits());
        let component = self.load(path, limits).await?;
        if component.function(name).is_none() {
            let provided: Vec<&str> = component
                .functions
                .iter()
                .map(|f| f.name.as_str())
                .collect();
            return Err(Error::Function(format!(
                "{path} does not provide a function named '{name}'; it provides: {}",
                provided.join(", ")
            )));
        }
        if component.hash == udf.component().hash {
            return Err(Error::Function(format!(
                "{path} is version {}, the one serving '{name}': a shadow must be another version",
                short(&component.hash)
            )));
        }
        let config = options.config();
        udf.set_shadow(component.clone(), config.clone())
            .map_err(Error::Function)?;
        Ok(Output::Message(format!(
            "Shadowing {name} (version {}) with {path} (version {}): {} of batches, tolerance \
             {}, keeping {} differing rows",
            short(&udf.component().hash),
            short(&component.hash),
            percent(config.sample),
            config.tolerance,
            config.keep
        )))
    }

    /// `ALTER FUNCTION name PROMOTE | ROLLBACK | DROP SHADOW`.
    pub(crate) fn alter_function(&mut self, name: &str, action: AlterAction) -> Result<Output> {
        let udf = self.functions.get(name).cloned().ok_or_else(|| {
            Error::Function(format!(
                "function '{name}' does not exist (see SHOW FUNCTIONS)"
            ))
        })?;
        let before = udf.component();
        let message = match action {
            AlterAction::Promote => {
                let promoted = udf.promote().map_err(Error::Function)?;
                format!(
                    "Promoted {name} to version {} from {}; version {} is kept for ROLLBACK",
                    short(&promoted.hash),
                    promoted.source,
                    short(&before.hash)
                )
            }
            AlterAction::Rollback => {
                let back = udf.rollback().map_err(Error::Function)?;
                format!(
                    "Rolled {name} back to version {} from {}; version {} is kept for ROLLBACK",
                    short(&back.hash),
                    back.source,
                    short(&before.hash)
                )
            }
            AlterAction::DropShadow => {
                let shadow = udf
                    .drop_shadow()
                    .ok_or_else(|| Error::Function(format!("function '{name}' has no shadow")))?;
                format!(
                    "Stopped the shadow of {name} (version {})",
                    short(&shadow.component.hash)
                )
            }
        };
        Ok(Output::Message(message))
    }
}

/// How long `DESCRIBE … EXTENDED` waits for a shadow to catch up.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

fn percent(fraction: f64) -> String {
    format!("{}%", (fraction * 1e4).round() / 1e2)
}

/// `calls`, `rows`, … of one version's counters, prefixed, as `DESCRIBE … EXTENDED` rows.
fn counter_rows(prefix: &str, stats: &FunctionStats) -> Vec<(String, String)> {
    let duration = stats.call_duration.snapshot();
    let mean_ms = if duration.count == 0 {
        0.0
    } else {
        duration.sum_seconds() * 1e3 / duration.count as f64
    };
    let limits: Vec<String> = stats
        .limit_hits_by_kind()
        .iter()
        .map(|(kind, n)| format!("{}={n}", kind.label()))
        .collect();
    vec![
        (
            format!("{prefix}calls"),
            stats.calls.load(Ordering::Relaxed).to_string(),
        ),
        (
            format!("{prefix}rows"),
            stats.rows.load(Ordering::Relaxed).to_string(),
        ),
        (
            format!("{prefix}row_errors"),
            stats.row_errors.load(Ordering::Relaxed).to_string(),
        ),
        (
            format!("{prefix}traps"),
            stats.traps.load(Ordering::Relaxed).to_string(),
        ),
        (format!("{prefix}limit_hits"), limits.join(", ")),
        (
            format!("{prefix}call_time"),
            format!(
                "{:.3} s in all, {mean_ms:.3} ms per call",
                duration.sum_seconds()
            ),
        ),
    ]
}

/// The rows `EXTENDED` adds: the serving version's counters, the previous version, and the
/// shadow with its comparison so far and the first differing rows.
pub(crate) fn extended_rows(udf: &WasmScalarUdf) -> Vec<(String, String)> {
    let mut rows = counter_rows("", &udf.stats());
    let none = || "none".to_string();
    match udf.previous() {
        Some(p) => {
            rows.push(("previous_version".into(), p.hash.clone()));
            rows.push(("previous_source".into(), p.source.clone()));
        }
        None => rows.push(("previous_version".into(), none())),
    }
    let Some(shadow) = udf.shadow() else {
        rows.push(("shadow_version".into(), none()));
        return rows;
    };
    // The shadow runs behind the queries: give it a moment to finish the batches already
    // offered, so a DESCRIBE after a query reports that query (a busy shadow shows what it has).
    shadow.wait_idle(SETTLE);
    let report = shadow.report();
    let config = &shadow.config;
    rows.extend([
        ("shadow_version".to_string(), shadow.component.hash.clone()),
        ("shadow_source".into(), shadow.component.source.clone()),
        ("shadow_sample".into(), percent(config.sample)),
        ("shadow_tolerance".into(), config.tolerance.to_string()),
        ("shadow_keep".into(), config.keep.to_string()),
        (
            "shadow_rows_compared".into(),
            report.rows_compared.to_string(),
        ),
        (
            "shadow_rows_differing".into(),
            report.rows_differing.to_string(),
        ),
        (
            "shadow_rows_skipped".into(),
            report.rows_skipped.to_string(),
        ),
        (
            "shadow_rows_not_sampled".into(),
            report.rows_not_sampled.to_string(),
        ),
    ]);
    // Per continuous query: `shadow_rows_compared CSAS_OUT_1` and its differing rows.
    for (query, compared) in &report.per_query {
        rows.push((
            format!("shadow_rows_compared {query}"),
            compared.rows.to_string(),
        ));
        rows.push((
            format!("shadow_rows_differing {query}"),
            compared.differing.to_string(),
        ));
    }
    rows.extend(counter_rows("shadow_", &shadow.stats()));
    rows.push((
        "shadow_last_error".into(),
        report.last_error.unwrap_or_else(none),
    ));
    for (i, d) in report.differences.iter().enumerate() {
        rows.push((format!("shadow_difference_{}", i + 1), d.display()));
    }
    rows
}
