//! The wasm engine shared by every component: configuration, limits, compile cache, linker.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::eddy::udf::host_log;
use crate::bindings::ScalarUdf;
use crate::capture::{CaptureConfig, CaptureStats, Captures};
use crate::function_cache::FunctionCache;
use crate::output::GuestOutput;
use crate::sleep::GuestClock;
use crate::{Component, Error, Result};

/// How often the epoch advances; per-call timeouts are counted in these ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Resource limits applied to every instance of a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory per instance, in bytes.
    pub max_memory: usize,
    /// Wall time one call (one batch) may run.
    pub timeout: Duration,
    /// Table elements per table.
    pub max_table_elements: usize,
    /// Log lines a guest may write per call before the rest are dropped.
    pub max_log_lines_per_call: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // Large enough for an ONNX model plus a batch of tensors; small enough to stop a bomb.
        Limits {
            max_memory: 512 << 20,
            timeout: Duration::from_secs(10),
            max_table_elements: 100_000,
            max_log_lines_per_call: 100,
        }
    }
}

/// Per-instance host state: WASI with no authority, captured output, limits.
pub(crate) struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) output: GuestOutput,
    /// What the instance is running, `function@version`, for log lines.
    pub(crate) label: String,
    pub(crate) log_budget: usize,
    pub(crate) logs_dropped: usize,
    /// The monotonic clock the guest reads, to turn `subscribe-instant` into a wait.
    pub(crate) guest_clock: GuestClock,
    /// When the running call's time limit ends; guest waits past it are refused.
    pub(crate) deadline: Option<std::time::Instant>,
}

impl State {
    /// `deterministic`: clocks stand still at the Unix epoch and randomness is a fixed
    /// sequence, for components whose every function is declared immutable.
    pub(crate) fn new(label: String, limits: &Limits, deterministic: bool) -> State {
        let output = GuestOutput::default();
        // No preopened dirs, env, args or sockets: the builder grants nothing by default.
        let mut builder = wasmtime_wasi::WasiCtxBuilder::new();
        builder.stdout(output.clone()).stderr(output.clone());
        let guest_clock = if deterministic {
            GuestClock::Stopped
        } else {
            GuestClock::Real(std::time::Instant::now())
        };
        builder.monotonic_clock(guest_clock);
        if deterministic {
            builder
                .wall_clock(FixedClock)
                .secure_random(fixed_random())
                .insecure_random(fixed_random())
                .insecure_random_seed(0);
        }
        let wasi = builder.build();
        State {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter {
                max_memory: limits.max_memory,
                max_table_elements: limits.max_table_elements,
                hit: None,
            },
            output,
            label,
            log_budget: limits.max_log_lines_per_call,
            logs_dropped: 0,
            guest_clock,
            deadline: None,
        }
    }

    /// A pollable for a guest wait of `duration`; an error if it would outlast the call.
    pub(crate) fn sleep(
        &mut self,
        duration: Duration,
    ) -> wasmtime::Result<wasmtime::component::Resource<wasmtime_wasi::p2::DynPollable>> {
        crate::sleep::subscribe(&mut self.table, duration, self.deadline)
    }
}

/// A wall clock that never moves: the Unix epoch.
struct FixedClock;

impl wasmtime_wasi::HostWallClock for FixedClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

/// The same 256 bytes, over and over: a random source that gives every instance equal draws.
fn fixed_random() -> wasmtime_wasi::Deterministic {
    let mut x: u32 = 0x9e37_79b9;
    let bytes = (0..256)
        .map(|_| {
            // xorshift32: spread, not secret.
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    wasmtime_wasi::Deterministic::new(bytes)
}

/// Memory and table limits that remember which one stopped the guest, for the error message.
pub(crate) struct Limiter {
    max_memory: usize,
    max_table_elements: usize,
    /// Set when a limit was hit during the current call.
    pub(crate) hit: Option<String>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.hit = Some(format!(
                "exceeded its memory limit of {} (asked for {})",
                human_bytes(self.max_memory),
                human_bytes(desired)
            ));
            // A trap, not a failed grow: Rust guests abort on allocation failure anyway, and the
            // trap keeps the reason.
            wasmtime::bail!("memory limit exceeded");
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_table_elements {
            self.hit = Some(format!(
                "exceeded its table limit of {} elements (asked for {desired})",
                self.max_table_elements
            ));
            wasmtime::bail!("table limit exceeded");
        }
        Ok(true)
    }
}

/// `512 MiB` style sizes for messages, in the largest unit not above `n`; one decimal if inexact.
pub(crate) fn human_bytes(n: usize) -> String {
    let Some((unit, name)) = [(1usize << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
        .into_iter()
        .find(|(unit, _)| n >= *unit)
    else {
        return format!("{n} bytes");
    };
    if n.is_multiple_of(unit) {
        format!("{} {name}", n / unit)
    } else {
        format!("{:.1} {name}", n as f64 / unit as f64)
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl crate::bindings::eddy::udf::types::Host for State {}

impl host_log::Host for State {
    fn log(&mut self, level: host_log::Level, message: String) {
        if self.log_budget == 0 {
            self.logs_dropped += 1;
            return;
        }
        self.log_budget -= 1;
        let udf = self.label.as_str();
        match level {
            host_log::Level::Trace => tracing::trace!(target: "eddy::udf", udf, "{message}"),
            host_log::Level::Debug => tracing::debug!(target: "eddy::udf", udf, "{message}"),
            host_log::Level::Info => tracing::info!(target: "eddy::udf", udf, "{message}"),
            host_log::Level::Warn => tracing::warn!(target: "eddy::udf", udf, "{message}"),
            host_log::Level::Error => tracing::error!(target: "eddy::udf", udf, "{message}"),
        }
    }
}

/// The wasm engine, linker and compile cache every UDF component shares.
#[derive(Clone)]
pub struct UdfRuntime {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<State>>,
    cache_dir: Option<PathBuf>,
    /// Held while compiling. Compiles run one at a time, since each already uses every core:
    /// a second load of the same component (another session, another test) then reads the
    /// first one's result instead of compiling the same code beside it, and a second Python or
    /// JavaScript component finds the interpreter's functions in the function cache.
    compiling: Arc<Mutex<()>>,
    pub(crate) limits: Limits,
    /// Where components loaded from now on capture their failing calls.
    pub(crate) captures: Option<Arc<Captures>>,
}

impl std::fmt::Debug for UdfRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdfRuntime")
            .field("cache_dir", &self.cache_dir)
            .field("limits", &self.limits)
            .finish()
    }
}

impl UdfRuntime {
    /// A runtime caching compiled components in `cache_dir` (none: compile every load), and
    /// each compiled function too, so a component that shares code with one compiled before (a
    /// new version of a UDF, or another Python or JavaScript UDF) compiles only what differs.
    pub fn new(cache_dir: Option<PathBuf>, limits: Limits) -> Result<UdfRuntime> {
        UdfRuntime::build(cache_dir, limits, true)
    }

    /// A runtime whose compiled code has no epoch checks, so `timeout` is not enforced and a
    /// guest that loops never returns. Only for measuring what the checks cost (`eddy bench swap`).
    pub fn without_timeouts(cache_dir: Option<PathBuf>, limits: Limits) -> Result<UdfRuntime> {
        UdfRuntime::build(cache_dir, limits, false)
    }

    fn build(cache_dir: Option<PathBuf>, limits: Limits, epochs: bool) -> Result<UdfRuntime> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(epochs);
        config.max_wasm_stack(1 << 20);
        if let Some(dir) = &cache_dir {
            // Compiled functions are only valid for this configuration and Wasmtime version:
            // name their directory after the engine's compatibility hash.
            let probe = Engine::new(&config).map_err(|e| Error::Engine(format!("{e:#}")))?;
            let functions = dir.join(format!("functions-{:016x}", engine_hash(&probe)));
            config
                .enable_incremental_compilation(Arc::new(FunctionCache::new(functions)))
                .map_err(|e| Error::Engine(format!("{e:#}")))?;
        }
        let engine = Engine::new(&config).map_err(|e| Error::Engine(format!("{e:#}")))?;

        // One ticker per engine; it stops when the last clone of the engine is gone.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("eddy-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            })
            .map_err(|e| Error::Engine(format!("epoch thread: {e}")))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| Error::Engine(format!("{e:#}")))?;
        ScalarUdf::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| Error::Engine(format!("{e:#}")))?;
        crate::sleep::add_to_linker(&mut linker).map_err(|e| Error::Engine(format!("{e:#}")))?;
        Ok(UdfRuntime {
            engine,
            linker: Arc::new(linker),
            cache_dir,
            compiling: Arc::default(),
            limits,
            captures: None,
        })
    }

    /// The same runtime, whose components loaded from now on write a capture file into
    /// `config.dir` for each failing call (trap, limit, batch error, row errors).
    pub fn with_captures(mut self, config: CaptureConfig) -> Result<UdfRuntime> {
        self.captures = Some(Arc::new(Captures::open(config)?));
        Ok(self)
    }

    /// Captures written and dropped, if this runtime captures.
    pub fn capture_stats(&self) -> Option<Arc<CaptureStats>> {
        self.captures.as_ref().map(|c| c.stats.clone())
    }

    /// The default limits new components get.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Loads a component file under the default limits and reads its functions' descriptions.
    pub fn load_file(&self, path: impl Into<PathBuf>) -> Result<Arc<Component>> {
        self.load_file_with_limits(path, self.limits.clone())
    }

    /// Loads a component file whose instances run under `limits` instead of the defaults.
    pub fn load_file_with_limits(
        &self,
        path: impl Into<PathBuf>,
        limits: Limits,
    ) -> Result<Arc<Component>> {
        let path = path.into();
        let bytes = std::fs::read(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        self.load_with_limits(&bytes, &path.display().to_string(), limits)
    }

    /// Loads a component from bytes; `source` names it in errors and `SHOW FUNCTIONS`.
    pub fn load(&self, bytes: &[u8], source: &str) -> Result<Arc<Component>> {
        self.load_with_limits(bytes, source, self.limits.clone())
    }

    /// Loads a component from bytes whose instances run under `limits` instead of the defaults.
    pub fn load_with_limits(
        &self,
        bytes: &[u8],
        source: &str,
        limits: Limits,
    ) -> Result<Arc<Component>> {
        Component::load(self, bytes, source, limits)
    }

    /// Compiles, or fetches from the on-disk cache, keyed by content and engine configuration.
    pub(crate) fn compile(
        &self,
        bytes: &[u8],
        hash: &str,
        source: &str,
    ) -> Result<wasmtime::component::Component> {
        let not_a_component = |e: wasmtime::Error| Error::NotAComponent {
            origin: source.to_string(),
            message: format!("{e:#}"),
        };
        let Some(dir) = &self.cache_dir else {
            return wasmtime::component::Component::new(&self.engine, bytes)
                .map_err(not_a_component);
        };
        let path = dir.join(format!("{hash}-{:016x}.cwasm", engine_hash(&self.engine)));
        if let Some(cached) = self.cached(&path) {
            return Ok(cached);
        }
        let _compiling = self.compiling.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cached) = self.cached(&path) {
            return Ok(cached);
        }
        let component =
            wasmtime::component::Component::new(&self.engine, bytes).map_err(not_a_component)?;
        if let Ok(serialized) = component.serialize() {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let written = std::fs::create_dir_all(dir)
                .and_then(|_| std::fs::write(&tmp, serialized))
                .and_then(|_| std::fs::rename(&tmp, &path));
            if let Err(e) = written {
                tracing::warn!(path = %path.display(), "cannot cache compiled component: {e}");
            }
        }
        Ok(component)
    }

    /// The compiled component cached at `path`, if there is a good one.
    fn cached(&self, path: &Path) -> Option<wasmtime::component::Component> {
        // Read, not mmap (`deserialize_file`): anyone rewriting the file in place while it is
        // mapped would crash the host with SIGBUS.
        let bytes = std::fs::read(path).ok()?;
        // SAFETY: only Eddy writes this directory, whole files via rename, from `serialize`
        // of an engine with this configuration (its hash is in the name); wasmtime also
        // rejects artifacts of another version or configuration by their header.
        match unsafe { wasmtime::component::Component::deserialize(&self.engine, &bytes) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring bad cache entry: {e:#}");
                None
            }
        }
    }
}

/// Which engine configurations (and Wasmtime versions) can share compiled code.
fn engine_hash(engine: &Engine) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_read_in_the_largest_unit() {
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(64 << 10), "64 KiB");
        assert_eq!(human_bytes(1_153_434), "1.1 MiB");
        assert_eq!(human_bytes(128 << 20), "128 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(4 << 30), "4 GiB");
    }
}
