// Eddy's JavaScript UDF SDK: `udf(spec, fn)` turns a plain function into a SQL function.
//
//   import { udf } from 'eddy-udf';
//
//   /** Converts degrees Celsius to degrees Fahrenheit. */
//   udf({ params: { c: 'float64' }, returns: 'float64',
//         doc: 'Converts degrees Celsius to degrees Fahrenheit.' },
//     function celsius_to_fahrenheit(c) { return c * 9 / 5 + 32; });
//
// `eddy udf build DIR` compiles `DIR/udf.js` with ComponentizeJS against `wit/udf.wit`; the
// import of 'eddy-udf' resolves to this file. The SDK implements the `scalar` export: one call per
// Arrow batch, whole columns at a time (numeric columns arrive as typed arrays, strings as one
// byte buffer with offsets), never a canonical-ABI call per row.
//
// - Types: 'float64' (DOUBLE), 'int64' (BIGINT, as a JS number), 'boolean', 'utf8' (VARCHAR),
//   'list-float64' (DOUBLE[], as a Float64Array). A SQL NULL in a plain argument gives NULL
//   without calling the function; a type ending in '?' sees `null`. Returning null or undefined
//   gives NULL.
// - A thrown exception makes that row NULL and is reported to the host as a row error, which
//   counts and logs it like a Rust `Err`.
// - `doc` is the description; `name` defaults to the function's name; `volatility` is
//   'immutable' (default), 'stable' or 'volatile'.
// - `batch: true`: the function gets whole columns (arrays, null for nulls) and returns an array
//   as long as them; a throw then fails the whole batch.

import { log as hostLog } from 'eddy:udf/host-log@0.1.0';

const TYPES = ['float64', 'int64', 'boolean', 'utf8', 'list-float64'];
const VOLATILITY = ['immutable', 'stable', 'volatile'];
const functions = new Map();
const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** Registers `fn` as a SQL function described by `spec`; returns `fn`. */
export function udf(spec, fn) {
  if (typeof fn !== 'function') throw new TypeError('udf(spec, fn): fn must be a function');
  const name = (spec.name ?? fn.name).toLowerCase();
  if (!name) throw new TypeError('udf: an anonymous function needs spec.name');
  const params = Object.entries(spec.params ?? {}).map(([pname, t]) => {
    const optional = t.endsWith('?');
    const dataType = optional ? t.slice(0, -1) : t;
    if (!TYPES.includes(dataType)) {
      throw new TypeError(`udf ${name}(${pname}): unsupported type '${t}'; use one of ${TYPES.join(', ')}`);
    }
    return { name: pname, dataType, optional };
  });
  const returns = spec.returns;
  if (!TYPES.includes(returns)) {
    throw new TypeError(`udf ${name}: unsupported return type '${returns}'; use one of ${TYPES.join(', ')}`);
  }
  const volatility = spec.volatility ?? 'immutable';
  if (!VOLATILITY.includes(volatility)) {
    throw new TypeError(`udf ${name}: volatility must be one of ${VOLATILITY.join(', ')}`);
  }
  if (functions.has(name)) throw new TypeError(`udf: two functions named ${name}`);
  functions.set(name, {
    fn,
    params,
    returns,
    batch: spec.batch === true,
    signature: {
      name,
      params: params.map(({ name, dataType }) => ({ name, dataType })),
      returns,
      volatility,
      doc: (spec.doc ?? '').split(/\s+/).filter(Boolean).join(' '),
    },
  });
  return fn;
}

/** Lines into the host's log, tagged with the function. */
export const log = {
  trace: (m) => hostLog('trace', String(m)),
  debug: (m) => hostLog('debug', String(m)),
  info: (m) => hostLog('info', String(m)),
  warn: (m) => hostLog('warn', String(m)),
  error: (m) => hostLog('error', String(m)),
};

function describeError(e) {
  if (e instanceof Error) return e.message ? `${e.name}: ${e.message}` : e.name;
  return String(e);
}

function isValid(validity, i) {
  return ((validity[i >> 3] >> (i & 7)) & 1) === 1;
}

// A WIT column as a JS array (or typed array when it has no nulls), null for null rows.
function read(col, dataType) {
  const n = col.len;
  const v = col.values.val;
  let out;
  switch (dataType) {
    case 'float64':
      out = v;
      break;
    case 'int64':
      out = Array.from(v, Number);
      break;
    case 'boolean':
      out = new Array(n);
      for (let i = 0; i < n; i++) out[i] = isValid(v, i);
      break;
    case 'utf8': {
      const { offsets, data } = v;
      const text = decoder.decode(data);
      out = new Array(n);
      if (text.length === data.length) {
        // ASCII: byte offsets are character offsets, so one decode serves every row.
        for (let i = 0; i < n; i++) out[i] = text.slice(offsets[i], offsets[i + 1]);
      } else {
        for (let i = 0; i < n; i++) out[i] = decoder.decode(data.subarray(offsets[i], offsets[i + 1]));
      }
      break;
    }
    case 'list-float64': {
      const { offsets, values } = v;
      out = new Array(n);
      for (let i = 0; i < n; i++) out[i] = values.subarray(offsets[i], offsets[i + 1]);
      break;
    }
  }
  if (col.validity != null) {
    const validity = col.validity;
    out = Array.from(out);
    for (let i = 0; i < n; i++) if (!isValid(validity, i)) out[i] = null;
  }
  return out;
}

// A JS array (null/undefined for null) as a WIT column of `dataType`.
function write(out, dataType) {
  const n = out.length;
  let validity;
  for (let i = 0; i < n; i++) {
    if (out[i] == null) {
      validity ??= new Uint8Array((n + 7) >> 3).fill(0xff);
      validity[i >> 3] &= ~(1 << (i & 7));
    }
  }
  let values;
  switch (dataType) {
    case 'float64': {
      const a = out instanceof Float64Array ? out : Float64Array.from(out, (x) => (x == null ? 0 : x));
      values = { tag: 'float64', val: a };
      break;
    }
    case 'int64':
      values = { tag: 'int64', val: BigInt64Array.from(out, (x) => (x == null ? 0n : BigInt(x))) };
      break;
    case 'boolean': {
      const bits = new Uint8Array((n + 7) >> 3);
      for (let i = 0; i < n; i++) if (out[i]) bits[i >> 3] |= 1 << (i & 7);
      values = { tag: 'boolean', val: bits };
      break;
    }
    case 'utf8': {
      const offsets = new Uint32Array(n + 1);
      let s = '';
      let ascii = true;
      for (let i = 0; i < n; i++) {
        const x = out[i] == null ? '' : String(out[i]);
        s += x;
        offsets[i + 1] = s.length;
        if (ascii && !/^[\x00-\x7f]*$/.test(x)) ascii = false;
      }
      let data = encoder.encode(s);
      if (!ascii) {
        // Offsets count bytes: measure each row's UTF-8 length.
        for (let i = 0; i < n; i++) {
          const x = out[i] == null ? '' : String(out[i]);
          offsets[i + 1] = offsets[i] + encoder.encode(x).length;
        }
      }
      values = { tag: 'utf8', val: { offsets, data } };
      break;
    }
    case 'list-float64': {
      const offsets = new Uint32Array(n + 1);
      for (let i = 0; i < n; i++) offsets[i + 1] = offsets[i] + (out[i] == null ? 0 : out[i].length);
      const flat = new Float64Array(offsets[n]);
      for (let i = 0; i < n; i++) if (out[i] != null) flat.set(out[i], offsets[i]);
      values = { tag: 'list-float64', val: { offsets, values: flat } };
      break;
    }
  }
  return { len: n, validity, values };
}

function callOne(f, args, rows) {
  if (args.length !== f.params.length) {
    throw `${f.signature.name} takes ${f.params.length} arguments, got ${args.length}`;
  }
  const cols = args.map((col, i) => read(col, f.params[i].dataType));
  const rowErrors = [];
  let out;
  if (f.batch) {
    try {
      out = Array.from(f.fn(...cols));
    } catch (e) {
      throw `${f.signature.name}: ${describeError(e)}`;
    }
    if (out.length !== rows) throw `${f.signature.name} returned ${out.length} rows for ${rows}`;
  } else {
    // Arguments that may be null and are not declared optional: a null there is null out.
    const required = f.params
      .map((p, i) => (!p.optional && args[i].validity != null ? i : -1))
      .filter((i) => i >= 0);
    const fn = f.fn;
    const k = cols.length;
    out = new Array(rows);
    const row = new Array(k);
    for (let r = 0; r < rows; r++) {
      let skip = false;
      for (const i of required) if (cols[i][r] === null) skip = true;
      if (skip) {
        out[r] = null;
        continue;
      }
      for (let i = 0; i < k; i++) row[i] = cols[i][r];
      try {
        out[r] = fn(...row);
      } catch (e) {
        out[r] = null;
        rowErrors.push({ row: r, message: describeError(e) });
      }
    }
  }
  return { column: write(out, f.returns), rowErrors };
}

/** The `scalar` export ComponentizeJS binds: every function registered with `udf`. */
export const scalar = {
  describe() {
    return Array.from(functions.values(), (f) => f.signature);
  },
  call(name, args, rows) {
    const f = functions.get(name);
    if (f === undefined) throw `this component has no function named '${name}'`;
    return callOne(f, args, rows);
  },
};
