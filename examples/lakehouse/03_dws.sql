-- DWS: one row per user, day, city and device model.
CREATE SCHEMA IF NOT EXISTS dws;

CREATE TABLE dws.user_daily PARTITIONED BY (dt) AS
SELECT user_id, dt, city, device_model,
       count(*)                AS events,
       sum(amount)             AS revenue,
       count(DISTINCT event_type) AS event_types
FROM dwd.events
GROUP BY user_id, dt, city, device_model;
