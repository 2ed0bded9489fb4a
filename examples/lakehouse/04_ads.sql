-- ADS: per-user features over the last 30 days, for the recommendation team.
CREATE SCHEMA IF NOT EXISTS ads;

CREATE TABLE ads.user_features AS
SELECT user_id,
       count(DISTINCT dt)  AS active_days_30d,
       sum(events)         AS events_30d,
       sum(revenue)        AS revenue_30d,
       max(dt)             AS last_active
FROM dws.user_daily
WHERE dt > DATE '2024-06-14' - INTERVAL '30' DAY
GROUP BY user_id;
