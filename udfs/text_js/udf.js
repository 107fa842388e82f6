// Strings, integers, booleans and nulls in JavaScript, like udfs/text: a function that sees nulls
// itself ('utf8?'), and one that fails per row.
import { udf } from 'eddy-udf';

udf({ params: { text: 'utf8', times: 'int64' }, returns: 'utf8',
      doc: 'Shouts a car id: upper case, with `!` repeated `times` times.' },
  function shout(text, times) { return text.toUpperCase() + '!'.repeat(Math.max(0, Math.min(times, 16))); });

udf({ params: { label: 'utf8?' }, returns: 'boolean',
      doc: 'True when the label is present and not empty; null labels are false, not null.' },
  function has_label(label) { return label !== null && label.length > 0; });

udf({ params: { car: 'utf8' }, returns: 'int64',
      doc: 'Parses a car id like `car-0042` into its number; anything else is a row error.' },
  function car_number(car) {
    const m = /^car-(\d+)$/.exec(car);
    if (m === null) throw new Error(`not a car id: ${JSON.stringify(car)}`);
    return Number(m[1]);
  });

udf({ params: { flag: 'boolean' }, returns: 'boolean', doc: 'Negates a flag; null stays null.' },
  function flip(flag) { return !flag; });
