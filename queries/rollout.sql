-- Safe UDF rollout: tag_v2 runs as a shadow beside tag_v1, its results compared and never used;
-- then it is promoted, and rolled back. Build the components first: eddy udf build udfs
CREATE FUNCTION tag FROM 'udfs/target/components/tag_v1.wasm';
CREATE OR REPLACE FUNCTION tag FROM 'udfs/target/components/tag_v2.wasm'
  WITH (shadow = true, shadow_keep = 2);
SELECT count(t) AS tagged FROM (SELECT tag(CASE WHEN event_id % 4 = 0 THEN NULL ELSE event_id END) AS t FROM car_sensor(1000, 1));
DESCRIBE FUNCTION tag EXTENDED;
ALTER FUNCTION tag PROMOTE;
SELECT tag(event_id) AS t FROM car_sensor(2, 1);
ALTER FUNCTION tag ROLLBACK;
SELECT tag(event_id) AS t FROM car_sensor(2, 1);
SHOW FUNCTIONS;
