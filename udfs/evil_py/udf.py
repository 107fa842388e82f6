"""Hostile Python guests for the sandbox tests: each must stop with a clear error while the host
keeps serving (tests/slt/errors/evil_polyglot.slt)."""

import sys

from eddy_udf import udf


@udf
def spin(x: float) -> float:
    """Never returns: the call's time limit stops it."""
    while True:
        x += 1.0


@udf
def hog(x: float) -> float:
    """Allocates without bound: the memory limit stops it."""
    chunks = []
    while True:
        chunks.append(bytearray(16 << 20))


@udf
def recurse(depth: int) -> int:
    """Recurses `depth` deep through C (`map` calls back into Python), so each level also takes
    wasm stack; Python's own limit is lifted, so the wasm stack limit is what stops it."""
    sys.setrecursionlimit(100_000_000)

    def down(n):
        return 0 if n == 0 else 1 + sum(map(down, (n - 1,)))

    return down(depth)


@udf
def read_passwd(x: int) -> str:
    """Tries to read a host file: there are no preopened directories."""
    try:
        with open("/etc/passwd") as f:
            return f.read()
    except OSError as e:
        return f"denied: {e}"
