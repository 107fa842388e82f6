-- anomaly.sql: flag anomalous car-sensor events with an autoencoder (ONNX, run by tract in wasm).
-- Run from the repository root: cargo run -p eddy -- run queries/anomaly.sql
-- The model and its quality: udfs/anomaly/model/README.md. The first build takes a few minutes.
CREATE OR REPLACE FUNCTION detect_anomaly FROM 'udfs/anomaly';

-- The model takes the 17 sensor values as one array, in eddy_generator::FEATURES order.
CREATE OR REPLACE VIEW events AS
SELECT *,
       make_array(coolant_temp, intake_air_temp, intake_air_flow_speed, battery_percentage,
                  battery_voltage, current_draw, speed, engine_vibration_amplitude, throttle_pos,
                  tire_pressure_11, tire_pressure_12, tire_pressure_21, tire_pressure_22,
                  accelerometer_11_value, accelerometer_12_value, accelerometer_21_value,
                  accelerometer_22_value) AS features
FROM car_sensor(20000, 3, 50);

-- Flagged events, with the generator's label (NULL label = a false positive).
SELECT car, timestamp, round(anomaly_score(features), 3) AS score, anomaly
FROM events
WHERE detect_anomaly(features)
ORDER BY timestamp, car
LIMIT 15;

-- Per label: events and how many the model flagged.
SELECT coalesce(anomaly, 'normal') AS label,
       count(*) AS events,
       sum(CASE WHEN detect_anomaly(features) THEN 1 ELSE 0 END) AS detected
FROM events
GROUP BY 1
ORDER BY 1;
