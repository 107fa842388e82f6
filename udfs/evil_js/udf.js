// Hostile JavaScript guests for the sandbox tests: each must stop with a clear error while the
// host keeps serving (tests/slt/errors/evil_polyglot.slt).
import { udf } from 'eddy-udf';

udf({ params: { x: 'float64' }, returns: 'float64', doc: 'Never returns.' },
  function spin(x) { for (;;) { x += 1; } });

udf({ params: { x: 'float64' }, returns: 'float64', doc: 'Allocates without bound.' },
  function hog(x) { const chunks = []; for (;;) chunks.push(new Float64Array(2 << 20).fill(x)); });

udf({ params: { depth: 'int64' }, returns: 'int64', doc: 'Recurses `depth` deep.' },
  function recurse(depth) { const down = (n) => (n === 0 ? 0 : 1 + down(n - 1)); return down(depth); });

// StarlingMonkey has no file API (no `require('fs')`, no `process`, no `Deno`), and the build
// leaves `fetch` out (no wasi:http): name what a script could have tried.
udf({ params: { x: 'int64' }, returns: 'utf8', doc: 'Tries to read a host file.' },
  function read_passwd(x) {
    const apis = ['require', 'process', 'Deno', 'Bun'].filter((n) => typeof globalThis[n] !== 'undefined');
    if (apis.length > 0) return `reachable: ${apis.join(', ')}`;
    try {
      fetch('file:///etc/passwd');
      return 'fetch accepted a file URL';
    } catch (e) {
      return `denied: ${e}`;
    }
  });
