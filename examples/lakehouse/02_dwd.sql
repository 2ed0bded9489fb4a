-- DWD: cleansed detail. Drops rows without a user or time, removes duplicate deliveries of the
-- same event, normalizes the event type, fills a missing city from the user's home city and a
-- missing device model with 'unknown', and joins the user's acquisition channel.
CREATE SCHEMA IF NOT EXISTS dwd;

CREATE TABLE dwd.events PARTITIONED BY (dt, city) AS
SELECT DISTINCT
    e.event_id,
    e.user_id,
    e.event_time,
    CAST(e.event_time AS DATE)                         AS dt,
    lower(trim(e.event_type))                          AS event_type,
    COALESCE(NULLIF(trim(e.city), ''), u.home_city)    AS city,
    COALESCE(e.device_model, 'unknown')                AS device_model,
    e.amount,
    u.acquisition_channel
FROM ods.events e
JOIN ods.users u ON e.user_id = u.user_id
WHERE e.user_id IS NOT NULL AND e.event_time IS NOT NULL;
