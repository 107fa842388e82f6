//! A loaded UDF component: compiled code, its self-description, and a pool of instances.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::logical_expr::Volatility;
use sha2::{Digest, Sha256};
use wasmtime::component::Linker;
use wasmtime::{Store, Trap};

use crate::bindings::eddy::udf::types as wit;
use crate::bindings::{ScalarUdf, ScalarUdfPre};
use crate::runtime::{State, EPOCH_TICK};
use crate::sleep::SleepPastDeadline;
use crate::{Error, Limits, Result, UdfRuntime};

/// A SQL type a UDF can take or return (`data-type` in the WIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlType {
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

impl SqlType {
    /// The Arrow type of columns of this type.
    pub fn arrow_type(self) -> DataType {
        match self {
            SqlType::Float64 => DataType::Float64,
            SqlType::Int64 => DataType::Int64,
            SqlType::Boolean => DataType::Boolean,
            SqlType::Utf8 => DataType::Utf8,
            SqlType::ListFloat64 => {
                DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true)))
            }
        }
    }

    /// The name users see, as in ksqlDB.
    pub fn sql_name(self) -> &'static str {
        match self {
            SqlType::Float64 => "DOUBLE",
            SqlType::Int64 => "BIGINT",
            SqlType::Boolean => "BOOLEAN",
            SqlType::Utf8 => "VARCHAR",
            SqlType::ListFloat64 => "ARRAY<DOUBLE>",
        }
    }
}

impl From<wit::DataType> for SqlType {
    fn from(t: wit::DataType) -> Self {
        match t {
            wit::DataType::Float64 => SqlType::Float64,
            wit::DataType::Int64 => SqlType::Int64,
            wit::DataType::Boolean => SqlType::Boolean,
            wit::DataType::Utf8 => SqlType::Utf8,
            wit::DataType::ListFloat64 => SqlType::ListFloat64,
        }
    }
}

/// One function as its component describes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FunctionSignature {
    /// SQL name.
    pub name: String,
    /// Parameter names and types.
    pub params: Vec<(String, SqlType)>,
    /// Result type.
    pub returns: SqlType,
    /// Whether results depend only on arguments.
    pub volatility: Volatility,
    /// The author's description.
    pub doc: String,
}

impl FunctionSignature {
    /// `name(a DOUBLE, b VARCHAR) -> DOUBLE`.
    pub fn display(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(n, t)| format!("{n} {}", t.sql_name()))
            .collect();
        format!(
            "{}({}) -> {}",
            self.name,
            params.join(", "),
            self.returns.sql_name()
        )
    }

    fn from_wit(f: wit::FunctionSignature) -> FunctionSignature {
        FunctionSignature {
            name: f.name,
            params: f
                .params
                .into_iter()
                .map(|p| (p.name, p.data_type.into()))
                .collect(),
            returns: f.returns.into(),
            volatility: match f.volatility {
                wit::Volatility::Immutable => Volatility::Immutable,
                wit::Volatility::Stable => Volatility::Stable,
                wit::Volatility::Volatile => Volatility::Volatile,
            },
            doc: f.doc,
        }
    }
}

/// A live instance with its store; used by one call at a time.
struct Instance {
    store: Store<State>,
    bindings: ScalarUdf,
}

/// A resource limit that can stop a guest call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// The per-call wall-time limit (the epoch deadline).
    Time,
    /// Linear memory per instance.
    Memory,
    /// Table elements per table.
    Table,
    /// The wasm stack (a stack-overflow trap).
    Stack,
}

impl LimitKind {
    /// Every kind, in the order metrics list them.
    pub const ALL: [LimitKind; 4] = [
        LimitKind::Time,
        LimitKind::Memory,
        LimitKind::Table,
        LimitKind::Stack,
    ];

    /// The metric label value: `time`, `memory`, `table` or `stack`.
    pub fn label(self) -> &'static str {
        match self {
            LimitKind::Time => "time",
            LimitKind::Memory => "memory",
            LimitKind::Table => "table",
            LimitKind::Stack => "stack",
        }
    }

    /// Which limit the resource limiter recorded, from the message it set on the hit.
    ///
    /// The limiter (`runtime::Limiter`) keeps only its message; the two prefixes are its own.
    fn of_limiter_hit(hit: &str) -> Option<LimitKind> {
        if hit.starts_with("exceeded its memory limit") {
            Some(LimitKind::Memory)
        } else if hit.starts_with("exceeded its table limit") {
            Some(LimitKind::Table)
        } else {
            None
        }
    }

    /// Which limit stopped a call that failed with `e`, given what the limiter recorded.
    fn of_failure(e: &wasmtime::Error, limiter_hit: Option<&str>) -> Option<LimitKind> {
        if let Some(hit) = limiter_hit {
            return LimitKind::of_limiter_hit(hit);
        }
        if e.downcast_ref::<SleepPastDeadline>().is_some() {
            return Some(LimitKind::Time);
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Some(LimitKind::Time),
            Some(Trap::StackOverflow) => Some(LimitKind::Stack),
            _ => None,
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone)]
pub(crate) enum CallFailure {
    /// The guest returned an error for the whole batch.
    Guest(String),
    /// The guest trapped or hit a limit; its instance was discarded.
    Trap {
        /// What happened, for the error message.
        message: String,
        /// The limit that stopped it, if one did.
        limit: Option<LimitKind>,
    },
}

/// A compiled, validated UDF component.
pub struct Component {
    /// SHA-256 of the component bytes: the version.
    pub hash: String,
    /// Where it was loaded from.
    pub source: String,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// The functions it provides.
    pub functions: Vec<FunctionSignature>,
    /// Limits for its instances.
    pub limits: Limits,
    /// Whether every function is immutable, so instances get a fixed clock and random source.
    pub deterministic: bool,
    /// Where failing calls are captured, if anywhere (the runtime's capture directory).
    pub(crate) captures: Option<Arc<crate::capture::Captures>>,
    pre: ScalarUdfPre<State>,
    idle: Mutex<Vec<Instance>>,
}

impl std::fmt::Debug for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Component")
            .field("hash", &self.hash)
            .field("source", &self.source)
            .field("functions", &self.functions)
            .finish()
    }
}

/// Instances kept warm per component; more run concurrently but are dropped afterwards.
const MAX_IDLE: usize = 8;

impl Component {
    pub(crate) fn load(
        runtime: &UdfRuntime,
        bytes: &[u8],
        source: &str,
        limits: Limits,
    ) -> Result<Arc<Component>> {
        let hash = hex::encode(Sha256::digest(bytes));
        let compiled = runtime.compile(bytes, &hash, source)?;
        let linker: &Linker<State> = &runtime.linker;
        let wrong_world = |e: wasmtime::Error| Error::WrongWorld {
            origin: source.to_string(),
            message: format!("{e:#}"),
        };
        let pre = linker.instantiate_pre(&compiled).map_err(wrong_world)?;
        let pre = ScalarUdfPre::new(pre).map_err(wrong_world)?;
        let mut component = Component {
            hash,
            source: source.to_string(),
            loaded_at: SystemTime::now(),
            functions: Vec::new(),
            limits,
            // describe() runs before anything is declared; its instance is not kept if the
            // functions turn out immutable.
            deterministic: false,
            captures: runtime.captures.clone(),
            pre,
            idle: Mutex::new(Vec::new()),
        };
        let mut instance = component.instantiate().map_err(|e| Error::Instantiate {
            origin: source.to_string(),
            message: format!("{e:#}"),
        })?;
        component.arm(&mut instance.store, None);
        let described = outside_async(|| {
            instance
                .bindings
                .eddy_udf_scalar()
                .call_describe(&mut instance.store)
        });
        let output = {
            let state = instance.store.data();
            state.output.drain(&state.label)
        };
        let described = described.map_err(|e| Error::BadDescription {
            origin: source.to_string(),
            message: format!(
                "describe() {}",
                component.explain_trap(
                    &e,
                    instance.store.data().limiter.hit.clone(),
                    &output,
                    false
                )
            ),
        })?;
        component.functions = described
            .into_iter()
            .map(FunctionSignature::from_wit)
            .collect();
        component.validate_description()?;
        component.deterministic = component
            .functions
            .iter()
            .all(|f| f.volatility == Volatility::Immutable);
        if !component.deterministic {
            component.release(instance);
        }
        Ok(Arc::new(component))
    }

    fn validate_description(&self) -> Result<()> {
        let bad = |message: String| Error::BadDescription {
            origin: self.source.clone(),
            message,
        };
        if self.functions.is_empty() {
            return Err(bad("it describes no functions".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for f in &self.functions {
            let valid = !f.name.is_empty()
                && f.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !f.name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(bad(format!(
                    "function name {:?} is not a lower-case SQL identifier",
                    f.name
                )));
            }
            if !seen.insert(&f.name) {
                return Err(bad(format!("function {:?} is described twice", f.name)));
            }
        }
        Ok(())
    }

    /// The description of `name`, if this component provides it.
    pub fn function(&self, name: &str) -> Option<&FunctionSignature> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// `function@version` in log lines.
    fn label(&self, function: &str) -> String {
        format!("{function}@{}", &self.hash[..12])
    }

    /// Starts the time limit of the next call: the epoch deadline for running code, the
    /// instant guest waits may not pass. The limit is the call's `timeout`, or less if the
    /// query it runs in must end sooner; returns whether that query's deadline is the one.
    fn arm(&self, store: &mut Store<State>, query_deadline: Option<std::time::Instant>) -> bool {
        let now = std::time::Instant::now();
        let (limit, by_query) = match query_deadline {
            Some(d) if d.saturating_duration_since(now) < self.limits.timeout => {
                (d.saturating_duration_since(now), true)
            }
            _ => (self.limits.timeout, false),
        };
        // Clamped so an absurd `timeout` set in SQL cannot overflow the engine's epoch counter
        // (u32::MAX ticks is over 200 days).
        let ticks = (limit.as_micros() / EPOCH_TICK.as_micros()).clamp(1, u32::MAX.into());
        store.set_epoch_deadline(ticks as u64 + 1);
        store.data_mut().deadline = now.checked_add(limit);
        by_query
    }

    fn instantiate(&self) -> wasmtime::Result<Instance> {
        let mut store = Store::new(
            self.pre.engine(),
            State::new(self.label("describe"), &self.limits, self.deterministic),
        );
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        self.arm(&mut store, None);
        match self.pre.instantiate(&mut store) {
            Ok(bindings) => Ok(Instance { store, bindings }),
            // A limit hit while creating memories says more than wasmtime's generic error.
            Err(e) => match store.data_mut().limiter.hit.take() {
                Some(hit) => Err(wasmtime::Error::msg(hit)),
                None => Err(e),
            },
        }
    }

    fn acquire(&self) -> wasmtime::Result<Instance> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(i) => Ok(i),
            None => self.instantiate(),
        }
    }

    /// Instantiates now and parks the instance idle (up to the pool's size), so that a burst of
    /// calls does not wait for instantiation; also how `eddy bench swap` times a warm instantiate.
    pub fn prewarm(&self) -> Result<()> {
        let instance = self.instantiate().map_err(|e| Error::Instantiate {
            origin: self.source.clone(),
            message: format!("{e:#}"),
        })?;
        self.release(instance);
        Ok(())
    }

    fn release(&self, instance: Instance) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(instance);
        }
    }

    /// Runs `function` over one batch in a pooled instance, stopped at its `timeout` or at
    /// `query_deadline`, whichever comes first.
    pub(crate) fn call(
        &self,
        function: &str,
        args: &[wit::ColumnParam<'_>],
        rows: u32,
        query_deadline: Option<std::time::Instant>,
    ) -> std::result::Result<wit::ScalarResult, CallFailure> {
        let mut instance = self.acquire().map_err(|e| CallFailure::Trap {
            message: format!("could not be instantiated: {e:#}"),
            limit: None,
        })?;
        let by_query = self.arm(&mut instance.store, query_deadline);
        {
            let state = instance.store.data_mut();
            state.log_budget = self.limits.max_log_lines_per_call;
            state.limiter.hit = None;
            state.label = self.label(function);
        }
        let result = outside_async(|| {
            instance
                .bindings
                .eddy_udf_scalar()
                .call_call(&mut instance.store, function, args, rows)
        });
        let output = {
            let state = instance.store.data();
            state.output.drain(&state.label)
        };
        let dropped = std::mem::take(&mut instance.store.data_mut().logs_dropped);
        if dropped > 0 {
            tracing::warn!(
                target: "eddy::udf",
                udf = instance.store.data().label.as_str(),
                dropped,
                max_log_lines = self.limits.max_log_lines_per_call,
                "log lines over the limit were dropped"
            );
        }
        match result {
            Ok(Ok(r)) => {
                self.release(instance);
                Ok(r)
            }
            Ok(Err(message)) => {
                self.release(instance);
                Err(CallFailure::Guest(message))
            }
            // A trapped instance may be left inconsistent: drop it, the next call gets a fresh one.
            Err(e) => {
                let hit = instance.store.data().limiter.hit.clone();
                Err(CallFailure::Trap {
                    limit: LimitKind::of_failure(&e, hit.as_deref()),
                    message: self.explain_trap(&e, hit, &output, by_query),
                })
            }
        }
    }

    fn explain_trap(
        &self,
        e: &wasmtime::Error,
        limit: Option<String>,
        output: &str,
        by_query: bool,
    ) -> String {
        let over_time = if by_query {
            "was stopped at its query's time limit".to_string()
        } else {
            format!(
                "exceeded its time limit of {:?} per batch",
                self.limits.timeout
            )
        };
        let mut message = if let Some(limit) = limit {
            limit
        } else if let Some(sleep) = e.downcast_ref::<SleepPastDeadline>() {
            format!("{over_time}: {sleep}")
        } else {
            match e.downcast_ref::<Trap>() {
                Some(Trap::Interrupt) => over_time,
                Some(Trap::StackOverflow) => "exhausted its stack".to_string(),
                Some(trap) => format!("trapped: {trap}"),
                None => format!("failed: {e:#}"),
            }
        };
        // The guest's last words (a Rust panic message, say) explain more than the trap code.
        let tail: Vec<&str> = output
            .lines()
            .filter(|l| !l.trim().is_empty())
            .rev()
            .take(3)
            .collect();
        if !tail.is_empty() {
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            message.push_str(&format!("; guest output: {}", tail.join(" | ")));
        }
        message
    }
}

/// Runs a guest call where WASI's synchronous host functions may block.
///
/// wasmtime-wasi's sync bindings drive their I/O (a guest writing to stdout, say) with
/// `Handle::block_on`, which panics on a thread that is running async tasks — as DataFusion's
/// operators are. Leave the async context for the call.
fn outside_async<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Err(_) => f(),
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        Ok(_) => std::thread::scope(|s| {
            s.spawn(f)
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }),
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::ResourceLimiter;

    use super::*;

    #[test]
    fn limits_are_classified_from_the_limiter_and_the_trap_code() {
        let limits = Limits {
            max_memory: 1 << 20,
            max_table_elements: 10,
            ..Limits::default()
        };
        let other = wasmtime::Error::msg("limit exceeded");
        let mut state = State::new("f@0".into(), &limits, false);
        assert!(state.limiter.memory_growing(0, 2 << 20, None).is_err());
        let hit = state.limiter.hit.take();
        assert_eq!(
            LimitKind::of_failure(&other, hit.as_deref()),
            Some(LimitKind::Memory)
        );
        assert!(state.limiter.table_growing(0, 11, None).is_err());
        let hit = state.limiter.hit.take();
        assert_eq!(
            LimitKind::of_failure(&other, hit.as_deref()),
            Some(LimitKind::Table)
        );
        let trap = |t: Trap| wasmtime::Error::new(t);
        assert_eq!(
            LimitKind::of_failure(&trap(Trap::Interrupt), None),
            Some(LimitKind::Time)
        );
        assert_eq!(
            LimitKind::of_failure(&trap(Trap::StackOverflow), None),
            Some(LimitKind::Stack)
        );
        assert_eq!(
            LimitKind::of_failure(&trap(Trap::UnreachableCodeReached), None),
            None
        );
        assert_eq!(LimitKind::of_failure(&other, None), None);
        let labels: Vec<_> = LimitKind::ALL.iter().map(|k| k.label()).collect();
        assert_eq!(labels, ["time", "memory", "table", "stack"]);
    }
}
