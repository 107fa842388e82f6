//! A component's function as a DataFusion scalar UDF: one guest call per Arrow batch.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use datafusion::arrow::array::new_empty_array;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::common::{exec_datafusion_err, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

use crate::call::call_counted;
use crate::capture::Role;
use crate::shadow::{Shadow, ShadowConfig};
use crate::{Component, FunctionSignature, Histogram, LimitKind};

/// Counters per function version, for `SHOW FUNCTIONS` and metrics.
#[derive(Debug, Default)]
pub struct FunctionStats {
    /// Guest calls (batches).
    pub calls: AtomicU64,
    /// Rows passed in.
    pub rows: AtomicU64,
    /// Rows the guest reported as failed (returned as null).
    pub row_errors: AtomicU64,
    /// Calls that trapped or hit a limit.
    pub traps: AtomicU64,
    /// Wall time of each guest call, from taking an instance to its result; argument and
    /// result conversion excluded.
    pub call_duration: Histogram,
    /// Calls stopped by a limit, indexed like [`LimitKind::ALL`].
    limit_hits: [AtomicU64; LimitKind::ALL.len()],
}

impl FunctionStats {
    /// Calls stopped by the limit `kind`.
    pub fn limit_hits(&self, kind: LimitKind) -> u64 {
        self.limit_hits[kind as usize].load(Ordering::Relaxed)
    }

    /// Calls stopped by each limit, in the order of [`LimitKind::ALL`].
    pub fn limit_hits_by_kind(&self) -> [(LimitKind, u64); LimitKind::ALL.len()] {
        LimitKind::ALL.map(|kind| (kind, self.limit_hits(kind)))
    }

    pub(crate) fn limit_hit(&self, kind: LimitKind) {
        self.limit_hits[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// How many versions of one function keep their counters after being replaced.
const VERSIONS_KEPT: usize = 16;

/// A version of a function and its counters.
#[derive(Debug, Clone)]
struct Serving {
    component: Arc<Component>,
    stats: Arc<FunctionStats>,
}

/// How long a failed call with constant arguments is remembered: long enough that planning one
/// statement (whose optimizer passes each try to fold it) pays for it once, short enough that a
/// passing failure (a busy machine's time limit) is not remembered for good.
const FAILED_CONSTANT_KEPT: std::time::Duration = std::time::Duration::from_secs(5);

/// How many results of constant calls a function keeps.
const CONSTANTS_KEPT: usize = 64;

/// A call with constant arguments, by version and arguments, and what it gave.
#[derive(Debug)]
struct Constant {
    version: String,
    args: Vec<ScalarValue>,
    result: Result<ScalarValue, String>,
    at: Instant,
}

/// A wasm function registered with DataFusion.
///
/// The component behind it sits in a shared slot: replacing the slot's content swaps the
/// version for every query using the function, at the next batch, since each batch reads the
/// slot exactly once. Each version counts its own calls.
#[derive(Debug)]
pub struct WasmScalarUdf {
    function: FunctionSignature,
    signature: Signature,
    slot: Arc<RwLock<Serving>>,
    /// Versions replaced in this slot, oldest first, so their counters stay reported.
    retired: Arc<std::sync::Mutex<Vec<Serving>>>,
    /// The version served before the current one, kept loaded for `ROLLBACK`.
    previous: Arc<std::sync::Mutex<Option<Arc<Component>>>>,
    /// A candidate running beside the serving version, compared and never used.
    shadow: Arc<RwLock<Option<Arc<Shadow>>>>,
    /// Results of immutable calls with constant arguments: DataFusion folds such a call while
    /// planning, once per optimizer pass, and a failing one is tried again at every pass.
    constants: Arc<std::sync::Mutex<Vec<Constant>>>,
}

impl PartialEq for WasmScalarUdf {
    fn eq(&self, other: &Self) -> bool {
        self.function == other.function && Arc::ptr_eq(&self.slot, &other.slot)
    }
}

impl Eq for WasmScalarUdf {}

impl Hash for WasmScalarUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.function.hash(state);
    }
}

impl WasmScalarUdf {
    /// The function `name` of `component`, or `None` if the component lacks it.
    pub fn new(component: Arc<Component>, name: &str) -> Option<WasmScalarUdf> {
        let function = component.function(name)?.clone();
        let types = function
            .params
            .iter()
            .map(|(_, t)| t.arrow_type())
            .collect();
        let signature = Signature::new(TypeSignature::Exact(types), function.volatility);
        Some(WasmScalarUdf {
            function,
            signature,
            slot: Arc::new(RwLock::new(Serving {
                component,
                stats: Arc::default(),
            })),
            retired: Arc::default(),
            previous: Arc::default(),
            shadow: Arc::default(),
            constants: Arc::default(),
        })
    }

    /// The component currently serving this function.
    pub fn component(&self) -> Arc<Component> {
        self.serving().component
    }

    fn serving(&self) -> Serving {
        self.slot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What the serving component declares about this function (its doc may change on swap).
    pub fn description(&self) -> FunctionSignature {
        let component = self.component();
        component
            .function(&self.function.name)
            .cloned()
            .unwrap_or_else(|| self.function.clone())
    }

    /// Whether `component` can serve this function without replanning: same name and types.
    pub fn compatible(&self, component: &Component) -> bool {
        component.function(&self.function.name).is_some_and(|f| {
            f.params
                .iter()
                .map(|p| p.1)
                .eq(self.function.params.iter().map(|p| p.1))
                && f.returns == self.function.returns
                && f.volatility == self.function.volatility
        })
    }

    /// Swaps in another version; every query using the function sees it from its next batch.
    pub fn replace(&self, component: Arc<Component>) -> Result<(), String> {
        if !self.compatible(&component) {
            return Err(format!(
                "{} does not provide {} with the same types",
                component.source,
                self.function.display()
            ));
        }
        let mut slot = self.slot.write().unwrap_or_else(|e| e.into_inner());
        if slot.component.hash == component.hash {
            // The same version again (a reloaded file, say) keeps counting where it was.
            slot.component = component;
            return Ok(());
        }
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        // A version coming back (v1, v2, v1 again) continues its own counters.
        let stats = match retired
            .iter()
            .position(|s| s.component.hash == component.hash)
        {
            Some(i) => retired.remove(i).stats,
            None => Arc::default(),
        };
        let old = std::mem::replace(&mut *slot, Serving { component, stats });
        drop(slot);
        *self.previous.lock().unwrap_or_else(|e| e.into_inner()) = Some(old.component.clone());
        retired.push(old);
        if retired.len() > VERSIONS_KEPT {
            retired.remove(0);
        }
        Ok(())
    }

    /// The version served before this one, if any: what `ROLLBACK` returns to.
    pub fn previous(&self) -> Option<Arc<Component>> {
        self.previous
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The shadow running beside the serving version, if any.
    pub fn shadow(&self) -> Option<Arc<Shadow>> {
        self.shadow
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Starts `component` as this function's shadow, replacing any shadow there was: it runs on
    /// the batches the serving version runs on, off the query's path, and its results are
    /// only compared.
    pub fn set_shadow(
        &self,
        component: Arc<Component>,
        config: ShadowConfig,
    ) -> Result<(), String> {
        if !self.compatible(&component) {
            return Err(format!(
                "{} does not provide {} with the same types, so it cannot shadow it",
                component.source,
                self.function.display()
            ));
        }
        let shadow = Shadow::start(component, self.function.clone(), config, Arc::default());
        *self.shadow.write().unwrap_or_else(|e| e.into_inner()) = Some(shadow);
        Ok(())
    }

    /// Stops the shadow; returns it, if there was one.
    pub fn drop_shadow(&self) -> Option<Arc<Shadow>> {
        self.shadow
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Makes the shadow the serving version, at the next batch of every query; the version
    /// serving until now becomes the previous one. Returns the promoted component.
    pub fn promote(&self) -> Result<Arc<Component>, String> {
        // Taken first, so no batch compares the promoted version with itself.
        let shadow = self.drop_shadow().ok_or_else(|| {
            format!(
                "function '{}' has no shadow to promote; load one with CREATE OR REPLACE FUNCTION {} FROM '…' WITH (shadow = true)",
                self.function.name, self.function.name
            )
        })?;
        self.replace(shadow.component.clone())?;
        Ok(shadow.component.clone())
    }

    /// Returns to the previous version, at the next batch of every query; the version serving
    /// until now becomes the previous one, so a second rollback undoes the first.
    pub fn rollback(&self) -> Result<Arc<Component>, String> {
        let previous = self.previous().ok_or_else(|| {
            format!(
                "function '{}' has no previous version to roll back to",
                self.function.name
            )
        })?;
        self.replace(previous.clone())?;
        Ok(previous)
    }

    /// Call counters of the version serving now.
    pub fn stats(&self) -> Arc<FunctionStats> {
        self.serving().stats
    }

    /// Every version this function has had (up to the last 16 replaced, then the one serving
    /// now), with its counters: a version's calls stay under its own label after a swap.
    pub fn version_stats(&self) -> Vec<(Arc<Component>, Arc<FunctionStats>)> {
        let mut versions: Vec<(Arc<Component>, Arc<FunctionStats>)> = self
            .retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|s| (s.component.clone(), s.stats.clone()))
            .collect();
        let now = self.serving();
        versions.push((now.component, now.stats));
        versions
    }
}

impl ScalarUDFImpl for WasmScalarUdf {
    fn name(&self) -> &str {
        &self.function.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.function.returns.arrow_type())
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> DfResult<datafusion::logical_expr::ColumnarValue> {
        let constant = self.function.volatility == Volatility::Immutable
            && args.number_rows > 0
            && args
                .args
                .iter()
                .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        if constant {
            return self.invoke_constant(args);
        }
        self.invoke_batch(args)
    }
}

impl WasmScalarUdf {
    /// An immutable call whose arguments are all constants: its result is the same for every
    /// row and every call to this version, so the guest runs once, on one row.
    fn invoke_constant(&self, mut args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let values: Vec<ScalarValue> = args
            .args
            .iter()
            .map(|a| match a {
                ColumnarValue::Scalar(v) => v.clone(),
                ColumnarValue::Array(_) => unreachable!("checked by the caller"),
            })
            .collect();
        // The same bytes under other limits are another version: a call may succeed in one.
        let version = {
            let component = self.component();
            format!("{}/{:?}", component.hash, component.limits)
        };
        let found = |constants: &mut Vec<Constant>| {
            constants.retain(|c| c.result.is_ok() || c.at.elapsed() < FAILED_CONSTANT_KEPT);
            constants
                .iter()
                .find(|c| c.version == version && c.args == values)
                .map(|c| c.result.clone())
        };
        let lock = || self.constants.lock().unwrap_or_else(|e| e.into_inner());
        // The guard must be gone before the call below takes the lock again.
        let cached = found(&mut lock());
        let result = match cached {
            Some(result) => result,
            None => {
                args.number_rows = 1;
                let result = self
                    .invoke_batch(args)
                    .and_then(|out| match out {
                        ColumnarValue::Array(a) => ScalarValue::try_from_array(&a, 0),
                        ColumnarValue::Scalar(v) => Ok(v),
                    })
                    .map_err(|e| match e {
                        datafusion::error::DataFusionError::Execution(m) => m,
                        other => other.strip_backtrace(),
                    });
                let mut constants = lock();
                if constants.len() >= CONSTANTS_KEPT {
                    constants.remove(0);
                }
                constants.push(Constant {
                    version,
                    args: values,
                    result: result.clone(),
                    at: Instant::now(),
                });
                result
            }
        };
        result
            .map(ColumnarValue::Scalar)
            .map_err(|message| exec_datafusion_err!("{message}"))
    }

    /// One guest call for the batch; the shadow, if any, gets the batch afterwards.
    fn invoke_batch(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let name = &self.function.name;
        let rows = args.number_rows;
        if rows == 0 {
            let empty = new_empty_array(&self.function.returns.arrow_type());
            return Ok(ColumnarValue::Array(empty));
        }
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<DfResult<Vec<_>>>()?;
        // Read the slot once: this whole batch runs on one version, and counts there.
        let Serving { component, stats } = self.serving();
        // A pull query's deadline bounds its calls too (see `QueryDeadline`).
        let deadline = args
            .config_options
            .extensions
            .get::<crate::QueryDeadline>()
            .map(|d| d.0);
        let called = match call_counted(&component, &self.function, &arrays, rows, &stats, deadline)
        {
            Ok(called) => called,
            Err(e) => {
                if !matches!(e, crate::call::CallError::Argument { .. }) {
                    crate::capture::record(
                        &component,
                        &self.function,
                        Role::Serving,
                        &arrays,
                        rows,
                        &e,
                    );
                }
                return Err(exec_datafusion_err!("{}", e.message(name)));
            }
        };
        if let Some((row, message)) = called.row_errors.first() {
            tracing::warn!(
                target: "eddy::udf",
                udf = %name,
                failed_rows = called.row_errors.len(),
                "row {row} of the batch: {message} (failed rows are null)",
            );
            crate::capture::record_row_errors(
                &component,
                &self.function,
                Role::Serving,
                &arrays,
                rows,
                &called.row_errors,
            );
        }
        if let Some(shadow) = self.shadow() {
            let query = args.config_options.extensions.get::<crate::QueryId>();
            shadow.offer(&arrays, rows, &called.array, query.map(|q| q.0.as_str()));
        }
        Ok(ColumnarValue::Array(called.array))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_hits_are_counted_per_kind() {
        let stats = FunctionStats::default();
        stats.limit_hit(LimitKind::Time);
        stats.limit_hit(LimitKind::Memory);
        stats.limit_hit(LimitKind::Memory);
        let hits: Vec<u64> = LimitKind::ALL
            .iter()
            .map(|&k| stats.limit_hits(k))
            .collect();
        assert_eq!(hits, [1, 2, 0, 0]);
        assert_eq!(stats.call_duration.snapshot().count, 0);
    }
}
