"""Eddy's Python UDF SDK: a decorated, type-hinted function becomes a SQL function.

```python
from eddy_udf import udf

@udf
def celsius_to_fahrenheit(c: float) -> float:
    \"\"\"Converts degrees Celsius to degrees Fahrenheit.\"\"\"
    return c * 9 / 5 + 32
```

`eddy udf build DIR` compiles `DIR/udf.py` with componentize-py against `wit/udf.wit`. The SDK
implements the `scalar` export: it describes every decorated function and runs one call per
Arrow batch, converting whole columns (the canonical ABI hands over a column as one list or one
`bytes`, never row by row).

- Types: `float` (DOUBLE), `int` (BIGINT), `bool` (BOOLEAN), `str` (VARCHAR),
  `list[float]` (DOUBLE[]). A SQL NULL in a plain argument gives NULL without calling the
  function; `Optional[T]` (or `T | None`) arguments see `None`. Returning `None` gives NULL.
- An exception makes that row NULL and is reported to the host as a row error, which counts and
  logs it like a Rust `Err`.
- The doc string is the description; `@udf(name=..., volatility="stable"|"volatile")`.
- `@udf(batch=True)`: the function gets whole columns (lists, `None` for nulls) and returns a list
  as long as them; an exception then fails the whole batch.
"""

import inspect
import itertools
import types as _pytypes
import typing

from componentize_py_types import Err
from wit_world.imports import host_log
from wit_world.imports import types as wit

__all__ = ["udf", "log"]

_TYPES = {
    float: wit.DataType.FLOAT64,
    int: wit.DataType.INT64,
    bool: wit.DataType.BOOLEAN,
    str: wit.DataType.UTF8,
}
_VOLATILITY = {
    "immutable": wit.Volatility.IMMUTABLE,
    "stable": wit.Volatility.STABLE,
    "volatile": wit.Volatility.VOLATILE,
}
# Row i's validity bit is bit (i & 7) of byte i >> 3; this table unpacks a byte at once.
_BITS = [tuple(bool(b >> k & 1) for k in range(8)) for b in range(256)]

_FUNCTIONS = {}


class _Function:
    """One registered UDF: its WIT signature and how to run it over a batch."""

    def __init__(self, func, name, volatility, batch):
        hints = typing.get_type_hints(func)
        params = list(inspect.signature(func).parameters)
        missing = [p for p in params + ["return"] if p not in hints]
        if missing:
            raise TypeError(f"@udf {func.__name__}: add type hints for {', '.join(missing)}")
        self.func = func
        self.name = (name or func.__name__).lower()
        self.batch = batch
        self.kinds = []
        self.optional = []
        for p in params:
            kind, optional = _data_type(hints[p], f"{func.__name__}({p})")
            self.kinds.append(kind)
            self.optional.append(optional)
        self.returns, _ = _data_type(hints["return"], f"{func.__name__} -> ")
        if volatility not in _VOLATILITY:
            raise ValueError(f"@udf {func.__name__}: volatility must be one of {', '.join(_VOLATILITY)}")
        doc = inspect.getdoc(func) or ""
        self.signature = wit.FunctionSignature(
            name=self.name,
            params=[wit.Param(name=p, data_type=k) for p, k in zip(params, self.kinds)],
            returns=self.returns,
            volatility=_VOLATILITY[volatility],
            doc=" ".join(doc.split()),
        )

    def call(self, args, rows):
        if len(args) != len(self.kinds):
            raise Err(f"{self.name} takes {len(self.kinds)} arguments, got {len(args)}")
        columns = [_read(col, kind) for col, kind in zip(args, self.kinds)]
        errors = []
        if self.batch:
            try:
                out = list(self.func(*columns))
            except Exception as e:  # the batch form has no per-row result: fail the batch
                raise Err(f"{self.name}: {_describe(e)}")
            if len(out) != rows:
                raise Err(f"{self.name} returned {len(out)} rows for {rows}")
        else:
            func = self.func
            required = [i for i, (col, opt) in enumerate(zip(args, self.optional))
                        if not opt and col.validity is not None]
            if required:
                # A NULL in a plain argument is NULL out, without calling the function.
                def func(*row, _f=self.func, _req=required):
                    for i in _req:
                        if row[i] is None:
                            return None
                    return _f(*row)
            out = _map_rows(func, columns, rows, errors)
        return wit.ScalarResult(column=_write(out, self.returns), row_errors=errors)


def _map_rows(func, columns, rows, errors):
    """`func` over every row; an exception makes its row None and a row error, once per row."""
    out = []
    rows_iter = zip(*columns) if columns else itertools.repeat((), rows)
    while True:
        try:
            # One tight loop over all rows; an exception leaves this loop, is recorded, and the
            # loop resumes with the next row (the iterator keeps its place).
            for row in rows_iter:
                out.append(func(*row))
            return out
        except Exception as e:
            errors.append(wit.RowError(row=len(out), message=_describe(e)))
            out.append(None)


def _describe(e):
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _data_type(hint, where):
    """The WIT data type of a type hint, and whether it admits None."""
    optional = False
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, _pytypes.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            hint, optional = rest[0], True
    if hint in _TYPES:
        return _TYPES[hint], optional
    if typing.get_origin(hint) in (list, typing.List) and typing.get_args(hint) == (float,):
        return wit.DataType.LIST_FLOAT64, optional
    raise TypeError(f"@udf {where}: unsupported type {hint!r}; use float, int, bool, str or list[float]")


def _validity(col):
    """Per-row validity as a list of bools, or None when the column has no nulls."""
    if col.validity is None:
        return None
    return list(itertools.chain.from_iterable(_BITS[b] for b in col.validity))[: col.len]


def _read(col, kind):
    """A WIT column as a Python list, None for null rows."""
    values = col.values
    n = col.len
    if kind == wit.DataType.FLOAT64 or kind == wit.DataType.INT64:
        out = values.value
        if not isinstance(out, list):
            out = list(out)
    elif kind == wit.DataType.BOOLEAN:
        out = list(itertools.chain.from_iterable(_BITS[b] for b in values.value))[:n]
    elif kind == wit.DataType.UTF8:
        offsets, data = values.value.offsets, values.value.data
        text = data.decode("utf-8")
        if len(text) == len(data):  # ASCII: byte offsets are character offsets
            out = [text[a:b] for a, b in zip(offsets, offsets[1:])]
        else:
            out = [data[a:b].decode("utf-8") for a, b in zip(offsets, offsets[1:])]
    elif kind == wit.DataType.LIST_FLOAT64:
        offsets, floats = values.value.offsets, values.value.values
        out = [floats[a:b] for a, b in zip(offsets, offsets[1:])]
    else:
        raise Err(f"unsupported column type {kind}")
    valid = _validity(col)
    if valid is not None:
        out = [v if ok else None for v, ok in zip(out, valid)]
    return out


def _write(out, kind):
    """A Python list (None for null) as a WIT column of `kind`."""
    n = len(out)
    nulls = [i for i, v in enumerate(out) if v is None]
    validity = None
    if nulls:
        bitmap = bytearray(b"\xff" * ((n + 7) >> 3))
        for i in nulls:
            bitmap[i >> 3] &= ~(1 << (i & 7)) & 0xFF
        validity = bytes(bitmap)
    if kind == wit.DataType.FLOAT64:
        if nulls or any(type(v) is not float for v in out):
            out = [0.0 if v is None else float(v) for v in out]
        values = wit.ColumnValues_Float64(out)
    elif kind == wit.DataType.INT64:
        if nulls:
            out = [0 if v is None else v for v in out]
        values = wit.ColumnValues_Int64([int(v) for v in out])
    elif kind == wit.DataType.BOOLEAN:
        bits = 0
        for i, v in enumerate(out):
            if v:
                bits |= 1 << i
        values = wit.ColumnValues_Boolean(bits.to_bytes((n + 7) >> 3, "little"))
    elif kind == wit.DataType.UTF8:
        parts = [b"" if v is None else str(v).encode("utf-8") for v in out]
        offsets = list(itertools.accumulate(map(len, parts), initial=0))
        values = wit.ColumnValues_Utf8(wit.Utf8Values(offsets=offsets, data=b"".join(parts)))
    else:
        lists = [() if v is None else v for v in out]
        offsets = list(itertools.accumulate(map(len, lists), initial=0))
        floats = [float(x) for x in itertools.chain.from_iterable(lists)]
        values = wit.ColumnValues_ListFloat64(wit.ListFloat64Values(offsets=offsets, values=floats))
    return wit.Column(len=n, validity=validity, values=values)


def udf(func=None, *, name=None, volatility="immutable", batch=False):
    """Registers `func` as a SQL function; usable bare (`@udf`) or with options (`@udf(...)`)."""

    def register(f):
        function = _Function(f, name, volatility, batch)
        if function.name in _FUNCTIONS:
            raise ValueError(f"@udf: two functions named {function.name}")
        _FUNCTIONS[function.name] = function
        return f

    return register(func) if func is not None else register


class _Log:
    """Lines into the host's log, tagged with the function (`eddy_udf.log.info("...")`)."""

    def trace(self, message):
        host_log.log(host_log.Level.TRACE, str(message))

    def debug(self, message):
        host_log.log(host_log.Level.DEBUG, str(message))

    def info(self, message):
        host_log.log(host_log.Level.INFO, str(message))

    def warn(self, message):
        host_log.log(host_log.Level.WARN, str(message))

    def error(self, message):
        host_log.log(host_log.Level.ERROR, str(message))


log = _Log()


class Scalar:
    """The `scalar` export componentize-py looks for: every function registered with `@udf`."""

    def describe(self):
        return [f.signature for f in _FUNCTIONS.values()]

    def call(self, function, args, rows):
        f = _FUNCTIONS.get(function)
        if f is None:
            raise Err(f"this component has no function named '{function}'")
        return f.call(args, rows)
