-- continuous.sql: the connected-car demo as continuous queries, on the built-in generator.
-- Run from the repository root: cargo run -p eddy -- run queries/continuous.sql
-- It runs until Ctrl-C; add --duration 30s or --max-events 100000 for a bounded run.
CREATE OR REPLACE FUNCTION detect_anomaly FROM 'udfs/anomaly';

-- 2,000 events/s from 50 cars; about 2% carry an injected, labelled anomaly.
CREATE STREAM car_sensor WITH (generator='car_sensor', rate=2000, seed=4, cars=50);

-- Score every event inside the wasm sandbox; keep the ones the model flags.
CREATE STREAM anomalies AS
SELECT car, timestamp, round(anomaly_score(features), 3) AS score, anomaly AS label
FROM (SELECT *, make_array(coolant_temp, intake_air_temp, intake_air_flow_speed,
                           battery_percentage, battery_voltage, current_draw, speed,
                           engine_vibration_amplitude, throttle_pos, tire_pressure_11,
                           tire_pressure_12, tire_pressure_21, tire_pressure_22,
                           accelerometer_11_value, accelerometer_12_value,
                           accelerometer_21_value, accelerometer_22_value) AS features
      FROM car_sensor)
WHERE detect_anomaly(features);

-- Cars with repeated anomalies per minute of event time, updated as anomalies come
-- (the table has windowstart and windowend columns).
CREATE TABLE suspicious_cars AS
SELECT car, COUNT(*) AS anomalies, MAX(score) AS worst
FROM anomalies
WINDOW TUMBLING (SIZE 1 MINUTE)
GROUP BY car
HAVING COUNT(*) >= 2;

-- The first flagged events, as they happen (a push query).
SELECT car, timestamp, score, label FROM anomalies EMIT CHANGES LIMIT 5;

SHOW QUERIES;
