-- hello.sql: load a wasm UDF and use it on the built-in car-sensor source.
-- Run from the repository root: cargo run -p eddy -- run queries/hello.sql
-- A directory path builds the UDF crate first; a .wasm path loads a built component.
CREATE OR REPLACE FUNCTION celsius_to_fahrenheit FROM 'udfs/temperature';

DESCRIBE FUNCTION celsius_to_fahrenheit;

-- car_sensor(rows, seed, cars): deterministic generated events, no broker needed.
SELECT car,
       timestamp,
       round(coolant_temp, 1) AS coolant_c,
       round(celsius_to_fahrenheit(coolant_temp), 1) AS coolant_f
FROM car_sensor(8, 42, 4)
ORDER BY event_id;

SHOW FUNCTIONS;
