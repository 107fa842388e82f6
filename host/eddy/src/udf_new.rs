//! `eddy udf new NAME --lang rust|python|js [DIR]`: a UDF project anywhere, ready to build.
//!
//! Python and JavaScript projects need no path to the SDK: `eddy udf build` writes the SDK
//! compiled into it next to the sources. A Rust project depends on `udf-sdk` by path in the Eddy
//! checkout (`$EDDY_HOME`, else the one this binary was built from), and gets that checkout's
//! `udfs/Cargo.lock` so it builds with the versions the examples were tested with.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use eddy_udf_build::polyglot::eddy_home;

/// The language of a new UDF project.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Lang {
    /// A `cdylib` crate using the `eddy-udf` crate's `#[udf]`.
    Rust,
    /// `udf.py` with the Python SDK's `@udf`.
    Python,
    /// `udf.js` with the JavaScript SDK's `udf(spec, fn)`.
    Js,
}

/// Writes the project for `name` into `dir` (default `./NAME`); returns the directory.
pub(crate) fn scaffold(name: &str, lang: Lang, dir: Option<PathBuf>) -> Result<PathBuf> {
    if name.is_empty()
        || !name.starts_with(|c: char| c.is_ascii_lowercase())
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        bail!("a UDF name is lower case letters, digits and '_', starting with a letter: {name:?}");
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && dir.read_dir()?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    let write = |rel: &str, text: &str| -> Result<()> {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    let readme = |what: &str| {
        format!(
            "# {name}\n\n{what} Build it with `eddy udf build .` and load it with \
             `CREATE FUNCTION {name} FROM '<this directory>'` (or the printed `.wasm`).\n"
        )
    };
    match lang {
        Lang::Rust => {
            let home = eddy_home();
            let sdk = home.join("udf-sdk");
            if !sdk.join("Cargo.toml").is_file() {
                bail!(
                    "no Eddy checkout at {}: set EDDY_HOME to the directory you cloned Eddy into",
                    home.display()
                );
            }
            let sdk = sdk.canonicalize()?;
            write(
                "Cargo.toml",
                &format!(
                    "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
                     [lib]\ncrate-type = [\"cdylib\"]\n\n\
                     [dependencies]\neddy-udf = {{ path = {sdk:?} }}\n\n\
                     [profile.release]\nopt-level = 3\nlto = \"thin\"\npanic = \"abort\"\nstrip = \"debuginfo\"\n\n\
                     # A workspace of its own, wherever it sits.\n[workspace]\n"
                ),
            )?;
            if let Ok(lock) = std::fs::read_to_string(home.join("udfs/Cargo.lock")) {
                write("Cargo.lock", &lock)?;
            }
            write(
                "src/lib.rs",
                &format!(
                    "use eddy_udf::udf;\n\n/// Converts degrees Celsius to degrees Fahrenheit.\n#[udf]\n\
                     fn {name}(c: f64) -> f64 {{\n    c * 9.0 / 5.0 + 32.0\n}}\n\neddy_udf::export!({name});\n"
                ),
            )?;
            write(
                "README.md",
                &readme("A Rust UDF: `src/lib.rs`, a `cdylib` on the `eddy-udf` crate."),
            )?;
        }
        Lang::Python => {
            write(
                "udf.py",
                &format!(
                    "from eddy_udf import udf\n\n\n@udf\ndef {name}(c: float) -> float:\n    \
                     \"\"\"Converts degrees Celsius to degrees Fahrenheit.\"\"\"\n    return c * 9 / 5 + 32\n"
                ),
            )?;
            write(
                "pyproject.toml",
                &format!("[project]\nname = \"{name}\"\nversion = \"0.1.0\"\ndescription = \"An Eddy UDF: eddy udf build . makes it a component\"\n"),
            )?;
            write(
                "README.md",
                &readme(
                    "A Python UDF: `udf.py`, with the SDK's `@udf` (componentize-py builds it).",
                ),
            )?;
        }
        Lang::Js => {
            write(
                "udf.js",
                &format!(
                    "import {{ udf }} from 'eddy-udf';\n\n\
                     udf({{ params: {{ c: 'float64' }}, returns: 'float64',\n      \
                     doc: 'Converts degrees Celsius to degrees Fahrenheit.' }},\n  \
                     function {name}(c) {{ return c * 9 / 5 + 32; }});\n"
                ),
            )?;
            write(
                "package.json",
                &format!(
                    "{{\n  \"name\": \"{}\",\n  \"version\": \"0.1.0\",\n  \"private\": true,\n  \"type\": \"module\",\n  \"main\": \"udf.js\"\n}}\n",
                    name.replace('_', "-")
                ),
            )?;
            write(
                "README.md",
                &readme("A JavaScript UDF: `udf.js`, with the SDK's `udf(spec, fn)` (ComponentizeJS builds it)."),
            )?;
        }
    }
    Ok(dir)
}
