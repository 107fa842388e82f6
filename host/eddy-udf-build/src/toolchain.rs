//! Finds the pieces of the guest toolchain (see README.md, "Setup").

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

/// The programs and libraries a guest build needs.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// A rustc with wasm targets built in (Debian's `rustc-web`).
    pub rustc: PathBuf,
    /// A cargo new enough for `-Zbuild-std` with that rustc.
    pub cargo: PathBuf,
    /// `rust-lld`, the wasm linker.
    pub linker: PathBuf,
    /// Directory holding wasi-libc's `libc.a`.
    pub wasi_libc: PathBuf,
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).map(PathBuf::from)
}

fn require(path: PathBuf, what: &str) -> Result<PathBuf> {
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::ToolchainMissing(format!(
            "{what} not found at {}",
            path.display()
        )))
    }
}

/// rustup's `rust-lld`, which Debian's rustc lacks.
fn find_rust_lld() -> Result<PathBuf> {
    let sysroot = Command::new("rustup")
        .args(["run", "stable", "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .or_else(|| {
            Command::new("rustc")
                .args(["--print", "sysroot"])
                .output()
                .ok()
                .filter(|o| o.status.success())
        })
        .ok_or_else(|| Error::ToolchainMissing("no rustup/rustc to locate rust-lld".into()))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    require(
        sysroot.join("lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"),
        "rust-lld",
    )
}

impl Toolchain {
    /// Locates the toolchain; `EDDY_GUEST_RUSTC`, `EDDY_GUEST_CARGO`, `EDDY_RUST_LLD` and
    /// `EDDY_WASI_LIBC` override the defaults.
    pub fn detect() -> Result<Toolchain> {
        let rustc = require(
            env_path("EDDY_GUEST_RUSTC").unwrap_or_else(|| "/usr/bin/rustc".into()),
            "Debian's rustc (package rustc-web)",
        )?;
        let cargo = require(
            env_path("EDDY_GUEST_CARGO").unwrap_or_else(|| "/usr/bin/cargo".into()),
            "Debian's cargo (package cargo-web)",
        )?;
        require(
            PathBuf::from("/usr/lib/rustlib/src/rust/library"),
            "the std sources (package rust-web-src)",
        )
        .or_else(|e| {
            // A rustc other than Debian's carries its sources elsewhere; let it try.
            if env_path("EDDY_GUEST_RUSTC").is_some() {
                Ok(PathBuf::new())
            } else {
                Err(e)
            }
        })?;
        let linker = match env_path("EDDY_RUST_LLD") {
            Some(p) => require(p, "rust-lld")?,
            None => find_rust_lld()?,
        };
        let wasi_libc = env_path("EDDY_WASI_LIBC").unwrap_or_else(|| "/usr/lib/wasm32-wasi".into());
        require(wasi_libc.join("libc.a"), "wasi-libc (package wasi-libc)")?;
        Ok(Toolchain {
            rustc,
            cargo,
            linker,
            wasi_libc,
        })
    }

    /// `cargo build --release` of one guest crate, with JSON artifact messages on stdout.
    pub fn cargo_build(&self, manifest: &Path) -> Command {
        let mut cmd = Command::new(&self.cargo);
        cmd.arg("build")
            .arg("--release")
            .arg("--manifest-path")
            .arg(manifest)
            .args(["-Zbuild-std=std,panic_abort", "--target", "wasm32-wasip1"])
            .arg("--message-format=json-render-diagnostics")
            .env("RUSTC_BOOTSTRAP", "1")
            .env("RUSTC", &self.rustc)
            .env("CARGO_TARGET_WASM32_WASIP1_LINKER", &self.linker)
            .env(
                "RUSTFLAGS",
                // simd128 (standard since wasm 2.0, on by default in wasmtime) lets tract and
                // LLVM's autovectoriser use 128-bit lanes instead of scalar fallbacks. Four
                // vectors per loop iteration instead of one: wasmtime checks the epoch deadline
                // at every loop header, and a column loop then pays that check per 8 rows
                // rather than per 2 (`eddy-bench swap`: 0.69x -> 0.94x with checks, and
                // `eddy-bench udf` 2.2 -> 1.4 ns per row).
                format!(
                    "-C link-self-contained=no -C target-feature=+simd128 \
                     -C llvm-args=-force-vector-interleave=4 -L native={}",
                    self.wasi_libc.display()
                ),
            );
        // Whatever the host build set up (its target dir, flags, jobserver) is not the guest's.
        for var in [
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET_DIR",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_BUILD_RUSTFLAGS",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "RUSTUP_TOOLCHAIN",
            "CARGO_MAKEFLAGS",
            "MAKEFLAGS",
            "MFLAGS",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }
}
