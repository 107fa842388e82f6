//! Builds a UDF crate into a WebAssembly component, so no user types the toolchain recipe.
//!
//! The rustup toolchain on our machines has no wasm standard library, so guests build with
//! Debian's `rustc-web` (which has every wasm target) plus `-Zbuild-std` over its `rust-web-src`,
//! linked by rustup's `rust-lld` against Debian's `wasi-libc`. The resulting `wasm32-wasip1`
//! core module becomes a component with the WASI preview1 adapter, via `wit-component`.
//!
//! A directory with `udf.py` or `udf.js` instead is a Python or JavaScript UDF, built by
//! componentize-py or ComponentizeJS against the same WIT world (`polyglot`).

pub mod polyglot;
mod toolchain;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

pub use toolchain::Toolchain;

/// What can go wrong building a UDF.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A toolchain piece is missing.
    #[error(
        "the wasm toolchain is incomplete: {0} — run the setup command in README.md (./setup.sh)"
    )]
    ToolchainMissing(String),
    /// The directory holds no UDF.
    #[error("{0} is not a UDF: no Cargo.toml, udf.py or udf.js there")]
    NotACrate(PathBuf),
    /// Running a tool failed.
    #[error("could not run {tool}: {source}")]
    Spawn {
        /// The program.
        tool: String,
        /// Why.
        source: std::io::Error,
    },
    /// The guest did not compile.
    #[error("compiling {0} failed (compiler output above)")]
    Compile(PathBuf),
    /// The crate produced no wasm module (not a `cdylib`?).
    #[error("{0} produced no .wasm file; is its crate-type [\"cdylib\"]?")]
    NoArtifact(PathBuf),
    /// `--out` names one file but the build made several components.
    #[error("{0} built {1} components; --out needs a single crate")]
    ManyArtifacts(PathBuf, usize),
    /// Turning the core module into a component failed.
    #[error("making a component of {path}: {message}")]
    Componentize {
        /// The core module.
        path: PathBuf,
        /// wit-component's explanation.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Where to write the component; default `<target>/components/<crate>.wasm`.
    pub out: Option<PathBuf>,
    /// Parallel compile jobs (`cargo -j`).
    pub jobs: Option<usize>,
    /// Silence cargo's progress output.
    pub quiet: bool,
}

/// A built component.
#[derive(Debug, Clone)]
pub struct Built {
    /// The component file.
    pub component: PathBuf,
    /// The core module it was made from (for Python and JavaScript, the `udf.py`/`udf.js`).
    pub module: PathBuf,
}

/// Builds the UDF in `dir`: a Python (`udf.py`) or JavaScript (`udf.js`) UDF, a Rust crate, or
/// a workspace of them (each `cdylib` and each Python or JavaScript member directory).
pub fn build(dir: &Path, options: &BuildOptions) -> Result<Vec<Built>> {
    if let Some(language) = polyglot::Language::detect(dir) {
        return Ok(vec![polyglot::build(dir, language, options)?]);
    }
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(Error::NotACrate(dir.to_path_buf()));
    }
    let members = polyglot::members(dir);
    if options.out.is_some() && !members.is_empty() {
        return Err(Error::ManyArtifacts(dir.to_path_buf(), members.len() + 1));
    }
    let mut built = build_rust(dir, &manifest, options)?;
    for (member, language) in members {
        built.push(polyglot::build(&member, language, options)?);
    }
    Ok(built)
}

/// Compiles the UDF crate in `dir` (or every crate, for a workspace) for `wasm32-wasip1` and
/// writes a component per `cdylib`.
fn build_rust(dir: &Path, manifest: &Path, options: &BuildOptions) -> Result<Vec<Built>> {
    let toolchain = Toolchain::detect()?;
    let mut cmd = toolchain.cargo_build(manifest);
    if let Some(jobs) = options.jobs {
        cmd.arg("-j").arg(jobs.to_string());
    }
    if options.quiet {
        cmd.arg("--quiet");
    }
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        tool: toolchain.cargo.display().to_string(),
        source,
    })?;

    // Cargo names its artifacts in JSON messages; each .wasm is one crate's cdylib.
    let mut modules = Vec::new();
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" {
            if let Some(files) = msg["filenames"].as_array() {
                for f in files.iter().filter_map(|f| f.as_str()) {
                    if f.ends_with(".wasm") {
                        modules.push(PathBuf::from(f));
                    }
                }
            }
        }
    }
    let status = child.wait().map_err(|source| Error::Spawn {
        tool: toolchain.cargo.display().to_string(),
        source,
    })?;
    if !status.success() {
        return Err(Error::Compile(dir.to_path_buf()));
    }
    if modules.is_empty() {
        return Err(Error::NoArtifact(dir.to_path_buf()));
    }
    if options.out.is_some() && modules.len() > 1 {
        return Err(Error::ManyArtifacts(dir.to_path_buf(), modules.len()));
    }
    modules
        .into_iter()
        .map(|module| {
            let component = component_path(&module, options.out.as_deref());
            componentize_file(&module, &component)?;
            Ok(Built { component, module })
        })
        .collect()
}

/// Where the component of `module` goes.
fn component_path(module: &Path, out: Option<&Path>) -> PathBuf {
    match out {
        Some(out) => out.to_path_buf(),
        None => {
            // <target>/wasm32-wasip1/release/x.wasm → <target>/components/x.wasm
            let target = module
                .parent()
                .and_then(Path::parent)
                .and_then(Path::parent)
                .unwrap_or(Path::new("."));
            target
                .join("components")
                .join(module.file_name().expect("artifact has a file name"))
        }
    }
}

/// Turns a `wasm32-wasip1` core module into a component with the WASI preview1 adapter.
pub fn componentize(module: &[u8]) -> std::result::Result<Vec<u8>, String> {
    wit_component::ComponentEncoder::default()
        .module(module)
        .and_then(|e| {
            e.adapter(
                "wasi_snapshot_preview1",
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
        })
        .map(|e| e.validate(true))
        .and_then(|mut e| e.encode())
        .map_err(|e| format!("{e:#}"))
}

/// [`componentize`] from file to file, creating the output's directory.
pub fn componentize_file(module: &Path, out: &Path) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let bytes = std::fs::read(module).map_err(io(module))?;
    let component = componentize(&bytes).map_err(|message| Error::Componentize {
        path: module.to_path_buf(),
        message,
    })?;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    // Write then rename, so a concurrent loader never sees half a component.
    let tmp = out.with_extension(format!("wasm.{}.tmp", std::process::id()));
    std::fs::write(&tmp, component).map_err(io(&tmp))?;
    std::fs::rename(&tmp, out).map_err(io(out))?;
    tracing::info!(component = %out.display(), "built UDF component");
    Ok(())
}
