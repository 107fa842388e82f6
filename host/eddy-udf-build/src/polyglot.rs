//! Builds Python (`udf.py`, componentize-py) and JavaScript (`udf.js`, ComponentizeJS) UDFs.
//!
//! Both tools take a WIT world and a program and emit a component with their language's runtime
//! inside; neither downloads anything at build time (ComponentizeJS in its default, non-AOT
//! mode). The SDKs and the WIT contract are compiled into this crate and written next to the
//! user's files in a staging directory, so a UDF directory needs nothing but its own source and
//! the SDK always matches the host that loads the component. Only the toolchains come from the
//! checkout, where `setup.sh` installs them.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{BuildOptions, Built, Error, Result};

/// The host/guest contract both tools build against.
const WIT: &str = include_str!("../../../wit/udf.wit");
/// Python SDK: the `@udf` decorator and the `Scalar` export.
const PY_SDK: &str = include_str!("../../../sdk/python/eddy_udf.py");
/// The module componentize-py builds: imports `udf` and the SDK's export.
const PY_MAIN: &str = include_str!("../../../sdk/python/eddy_udf_main.py");
/// JavaScript SDK: `udf(spec, fn)` and the `scalar` export.
const JS_SDK: &str = include_str!("../../../sdk/js/eddy-udf.js");
/// The module ComponentizeJS builds: the user's module, then the SDK's export.
const JS_MAIN: &str = "import './udf.js';\nexport { scalar } from './eddy-udf.js';\n";
/// The pinned ComponentizeJS CLI, relative to the checkout (installed by `npm ci` in setup.sh).
const COMPONENTIZE_JS: &str = "sdk/js/node_modules/@bytecodealliance/componentize-js/src/cli.js";
/// componentize-py in the checkout's venv (setup.sh).
const COMPONENTIZE_PY: &str = ".tools/venv/bin/componentize-py";

/// A UDF language other than Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    /// `udf.py`, built with componentize-py.
    Python,
    /// `udf.js`, built with ComponentizeJS.
    JavaScript,
}

impl Language {
    /// The language of the UDF in `dir`, if it is a Python or JavaScript one.
    pub fn detect(dir: &Path) -> Option<Language> {
        if dir.join("udf.py").is_file() {
            Some(Language::Python)
        } else if dir.join("udf.js").is_file() {
            Some(Language::JavaScript)
        } else {
            None
        }
    }

    fn extensions(self) -> &'static [&'static str] {
        match self {
            Language::Python => &["py"],
            Language::JavaScript => &["js", "mjs"],
        }
    }
}

/// The Eddy checkout the toolchains live in: `$EDDY_HOME`, else the one this binary was built
/// from.
pub fn eddy_home() -> PathBuf {
    std::env::var_os("EDDY_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .to_path_buf()
        })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a UDF directory's component goes when `--out` is not given: beside the Rust
/// components of the workspace it sits in (`udfs/x_py` → `udfs/target/components/x_py.wasm`),
/// else under its own `target/`.
fn target_dir(dir: &Path) -> PathBuf {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    let in_workspace = parent
        .map(|p| p.join("Cargo.toml"))
        .and_then(|m| std::fs::read_to_string(m).ok())
        .is_some_and(|text| text.contains("[workspace]"));
    match parent {
        Some(parent) if in_workspace => parent.join("target"),
        _ => dir.join("target"),
    }
}

/// The user's source files: the top level of `dir` only, so `target/` never ends up inside.
fn sources(dir: &Path, language: Language) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if path.is_file() && language.extensions().contains(&ext) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Builds the Python or JavaScript UDF in `dir`; skipped when the component is newer in content
/// than everything it is made of (sources, SDK, WIT).
pub fn build(dir: &Path, language: Language, options: &BuildOptions) -> Result<Built> {
    let name = dir
        .canonicalize()
        .map_err(io(dir))?
        .file_name()
        .map(|n| n.to_string_lossy().replace('-', "_"))
        .unwrap_or_else(|| "udf".into());
    let target = target_dir(dir);
    let component = options
        .out
        .clone()
        .unwrap_or_else(|| target.join("components").join(format!("{name}.wasm")));
    let staging = target.join("eddy-build").join(&name);
    let sources = sources(dir, language)?;

    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (language, WIT, PY_SDK, PY_MAIN, JS_SDK, JS_MAIN).hash(&mut hasher);
    for file in &sources {
        file.file_name().hash(&mut hasher);
        std::fs::read(file).map_err(io(file))?.hash(&mut hasher);
    }
    let stamp = format!("{:016x} {}\n", hasher.finish(), component.display());
    let stamp_file = staging.join("stamp");
    let main = dir.join(match language {
        Language::Python => "udf.py",
        Language::JavaScript => "udf.js",
    });
    if component.is_file() && std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(&stamp) {
        return Ok(Built {
            component,
            module: main,
        });
    }

    // A fresh staging directory: the user's files, the SDK and the WIT, nothing else.
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(staging.join("wit")).map_err(io(&staging))?;
    let write = |rel: &str, text: &str| -> Result<()> {
        let path = staging.join(rel);
        std::fs::write(&path, text).map_err(io(&path))
    };
    write("wit/udf.wit", WIT)?;
    for file in &sources {
        let text = std::fs::read_to_string(file).map_err(io(file))?;
        let text = match language {
            // The SDK is a sibling file in staging; ComponentizeJS resolves relative imports only.
            Language::JavaScript => text
                .replace("from 'eddy-udf'", "from './eddy-udf.js'")
                .replace("from \"eddy-udf\"", "from './eddy-udf.js'"),
            Language::Python => text,
        };
        write(&file.file_name().unwrap().to_string_lossy(), &text)?;
    }
    if let Some(parent) = component.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    // Write then rename, so a concurrent loader never sees half a component.
    let tmp = component.with_extension(format!("wasm.{}.tmp", std::process::id()));
    let home = eddy_home();
    let mut cmd = match language {
        Language::Python => {
            write("eddy_udf.py", PY_SDK)?;
            write("eddy_udf_main.py", PY_MAIN)?;
            let tool = std::env::var_os("EDDY_COMPONENTIZE_PY")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(COMPONENTIZE_PY));
            if !tool.is_file() {
                return Err(Error::ToolchainMissing(format!(
                    "componentize-py (Python UDFs) not found at {}; ./setup.sh installs it into .tools/venv",
                    tool.display()
                )));
            }
            let mut cmd = Command::new(&tool);
            cmd.arg("-d")
                .arg(staging.join("wit"))
                .args(["-w", "scalar-udf", "componentize", "-p"])
                .arg(&staging)
                .arg("eddy_udf_main")
                .arg("-o")
                .arg(&tmp);
            cmd
        }
        Language::JavaScript => {
            write("eddy-udf.js", JS_SDK)?;
            write("main.js", JS_MAIN)?;
            let cli = std::env::var_os("EDDY_COMPONENTIZE_JS")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(COMPONENTIZE_JS));
            if !cli.is_file() {
                return Err(Error::ToolchainMissing(format!(
                    "ComponentizeJS (JavaScript UDFs) not found at {}; ./setup.sh installs it with npm ci in sdk/js",
                    cli.display()
                )));
            }
            let mut cmd = Command::new("node");
            // No wasi:http or fetch-event: the host links neither, and a UDF has no network.
            cmd.arg(&cli)
                .arg("--wit")
                .arg(staging.join("wit"))
                .args(["-n", "scalar-udf", "-d", "http", "fetch-event", "-o"])
                .arg(&tmp)
                .arg(staging.join("main.js"));
            cmd
        }
    };
    let tool = cmd.get_program().to_string_lossy().into_owned();
    if options.quiet {
        cmd.stdout(Stdio::null());
    }
    let status = cmd.status().map_err(|source| Error::Spawn {
        tool: tool.clone(),
        source,
    })?;
    if !status.success() || !tmp.is_file() {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Compile(main));
    }
    std::fs::rename(&tmp, &component).map_err(io(&component))?;
    std::fs::write(&stamp_file, stamp).map_err(io(&stamp_file))?;
    tracing::info!(component = %component.display(), "built UDF component");
    Ok(Built {
        component,
        module: main,
    })
}

/// Every Python or JavaScript UDF directly inside `dir` (a workspace like `udfs/`), sorted.
pub fn members(dir: &Path) -> Vec<(PathBuf, Language)> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter_map(|p| Language::detect(&p).map(|l| (p, l)))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}
