-- ODS: raw data as ingested (an ingestion job appends to these tables every hour).
CREATE SCHEMA IF NOT EXISTS ods;

CREATE TABLE IF NOT EXISTS ods.events (
    event_id     BIGINT,
    user_id      BIGINT,
    event_time   TIMESTAMP,
    event_type   VARCHAR,
    city         VARCHAR,
    device_model VARCHAR,
    amount       DECIMAL(12, 2)
) PARTITIONED BY (day(event_time));

CREATE TABLE IF NOT EXISTS ods.users (
    user_id             BIGINT,
    signup_time         TIMESTAMP,
    acquisition_channel VARCHAR,
    home_city           VARCHAR
) PARTITIONED BY (bucket(8, user_id));
