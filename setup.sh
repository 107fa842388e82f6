#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine (with rustup's stable Rust) lacks to build and test Eddy:
# the wasm guest toolchain (Debian's rustc-web with wasm targets, its std sources for
# -Zbuild-std, wasi-libc) and the brokers the tests talk to. Safe to run again.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

packages=(rustc-web cargo-web rust-web-src wasi-libc)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

# Guests link with rustup's rust-lld; host code builds with rustup's stable cargo.
sysroot=$(rustup run stable rustc --print sysroot)
test -x "$sysroot/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"
test -d /usr/lib/rustlib/src/rust/library
test -f /usr/lib/wasm32-wasi/libc.a
echo "setup: wasm guest toolchain ready ($(/usr/bin/rustc --version))"
