// Temperature conversions in JavaScript: the same functions as udfs/temperature, plus the SDK's
// batch form.
import { udf } from 'eddy-udf';

udf({ params: { c: 'float64' }, returns: 'float64',
      doc: 'Converts degrees Celsius to degrees Fahrenheit.' },
  function celsius_to_fahrenheit(c) { return c * 9 / 5 + 32; });

udf({ params: { f: 'float64' }, returns: 'float64',
      doc: 'Converts degrees Fahrenheit to degrees Celsius.' },
  function fahrenheit_to_celsius(f) { return (f - 32) * 5 / 9; });

// Batch form: `c` is the whole column (null for nulls); return an array as long as it.
udf({ params: { c: 'float64' }, returns: 'float64', batch: true,
      doc: 'Converts degrees Celsius to kelvin, a whole column per call.' },
  function celsius_to_kelvin(c) { return Array.from(c, (x) => (x === null ? null : x + 273.15)); });
