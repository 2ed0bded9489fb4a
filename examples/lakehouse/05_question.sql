-- The question: daily active users per city and device model over the last 30 days,
-- excluding users acquired by marketing.
SELECT dt, city, device_model, COUNT(DISTINCT user_id) AS dau
FROM dwd.events
WHERE dt > DATE '2024-06-14' - INTERVAL '30' DAY
  AND user_id NOT IN (SELECT user_id FROM ods.users WHERE acquisition_channel = 'marketing')
GROUP BY dt, city, device_model
ORDER BY dt, city, device_model;
