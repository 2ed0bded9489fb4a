-- The nightly job: rebuild one day of DWS from DWD. INSERT OVERWRITE replaces exactly the
-- partitions the new rows fall in (dt = that day), so running it twice leaves one copy.
INSERT OVERWRITE dws.user_daily
SELECT user_id, dt, city, device_model,
       count(*), sum(amount), count(DISTINCT event_type)
FROM dwd.events
WHERE dt = DATE '2024-06-14'
GROUP BY user_id, dt, city, device_model;
