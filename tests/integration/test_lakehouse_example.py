"""examples/lakehouse/: the layer build (ODS → DWD → DWS → ADS) and the seed
question, run file by file through Flight SQL (ADBC) against a coordinator + 2
executor processes on SeaweedFS with the SQL catalog.

ODS rows are generated here (deterministic, with the dirt the DWD step cleans:
missing users and times, blank cities, missing device models, messy event
types, duplicate deliveries) and appended with pyiceberg into the tables
01_ods.sql created, as an ingestion job would.  Every layer Floe builds is
compared with DuckDB computing the same layer from the same ODS rows, and
read back by pyiceberg too.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from compare import assert_close, fetch, rows

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lakehouse"
FILES = ["01_ods.sql", "02_dwd.sql", "03_dws.sql", "03b_dws_rebuild_day.sql", "04_ads.sql"]
CITIES = ["Paris", "Berlin", "Oslo", "Rome"]
DEVICES = ["iphone-15", "pixel-8", "galaxy-s24"]
CHANNELS = ["organic", "marketing", "referral"]
LAST_DAY = dt.date(2024, 6, 14)
DAYS = 45


def statements(name: str) -> list[str]:
    text = "\n".join(l for l in (EXAMPLE / name).read_text().splitlines() if not l.strip().startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


def ods_rows(seed: int = 7) -> tuple[pa.Table, pa.Table]:
    rnd = random.Random(seed)
    users = []
    for uid in range(1, 301):
        users.append((uid, dt.datetime(2024, 1, 1) + dt.timedelta(hours=rnd.randrange(3000)),
                      rnd.choice(CHANNELS), rnd.choice(CITIES)))
    user_t = pa.table({
        "user_id": pa.array([u[0] for u in users], pa.int64()),
        "signup_time": pa.array([u[1] for u in users], pa.timestamp("us")),
        "acquisition_channel": [u[2] for u in users],
        "home_city": [u[3] for u in users],
    })
    events = []
    start = dt.datetime.combine(LAST_DAY - dt.timedelta(days=DAYS - 1), dt.time())
    for eid in range(1, 12001):
        uid = rnd.randrange(1, 321)  # 301..320 have no user row: the join drops them
        t = start + dt.timedelta(seconds=rnd.randrange(DAYS * 86400))
        city = rnd.choice(CITIES + ["  ", ""])
        events.append([
            eid,
            None if rnd.random() < 0.01 else uid,
            None if rnd.random() < 0.01 else t,
            rnd.choice(["view", " VIEW", "click", "Purchase "]),
            city,
            None if rnd.random() < 0.05 else rnd.choice(DEVICES),
            None if rnd.random() < 0.3 else Decimal(rnd.randrange(100, 50000)) / 100,
        ])
    events += [list(e) for e in rnd.sample(events, 200)]  # duplicate deliveries
    cols = list(zip(*events))
    event_t = pa.table({
        "event_id": pa.array(cols[0], pa.int64()),
        "user_id": pa.array(cols[1], pa.int64()),
        "event_time": pa.array(cols[2], pa.timestamp("us")),
        "event_type": pa.array(cols[3], pa.string()),
        "city": pa.array(cols[4], pa.string()),
        "device_model": pa.array(cols[5], pa.string()),
        "amount": pa.array(cols[6], pa.decimal128(12, 2)),
    })
    return event_t, user_t


@pytest.fixture(scope="module")
def pipeline(cluster_sql, sql_data):
    conn = cluster_sql.connect()
    for ns in ("ads", "dws", "dwd", "ods"):
        fetch(conn, f"DROP SCHEMA IF EXISTS {ns} CASCADE")
    try:
        yield conn, sql_data.catalog
    finally:
        for ns in ("ads", "dws", "dwd", "ods"):
            fetch(conn, f"DROP SCHEMA IF EXISTS {ns} CASCADE")
        conn.close()


def test_layer_build_and_question(pipeline):
    import duckdb

    conn, catalog = pipeline
    for sql in statements("01_ods.sql"):
        fetch(conn, sql)
    events, users = ods_rows()
    catalog.load_table("ods.users").append(users)
    ev = catalog.load_table("ods.events")
    half = events.num_rows // 2
    ev.append(events.slice(0, half))  # two ingestion batches
    ev.append(events.slice(half))

    duck = duckdb.connect()
    duck.execute("SET TimeZone='UTC'")
    duck.register("ods_events", events)
    duck.register("ods_users", users)

    def oracle(sql: str) -> pa.Table:
        return duck.sql(sql.replace("ods.events", "ods_events").replace("ods.users", "ods_users")
                        .replace("dwd.events", "dwd_events").replace("dws.user_daily", "dws_user_daily")
                        ).to_arrow_table()

    # DWD
    for sql in statements("02_dwd.sql"):
        fetch(conn, sql)
    dwd_sql = statements("02_dwd.sql")[-1].split(" AS\n", 1)[1]
    dwd_want = oracle(dwd_sql)
    duck.register("dwd_events", dwd_want)
    dwd_got = fetch(conn, "SELECT * FROM dwd.events")
    assert dwd_want.num_rows < events.num_rows  # the cleansing did something
    assert_close(dwd_got, dwd_want, context="dwd.events")
    assert_close(catalog.load_table("dwd.events").scan().to_arrow(), dwd_want, context="dwd.events by pyiceberg")

    # DWS, then the nightly rebuild of its last day, twice
    for sql in statements("03_dws.sql"):
        fetch(conn, sql)
    dws_sql = statements("03_dws.sql")[-1].split(" AS\n", 1)[1]
    dws_want = oracle(dws_sql)
    duck.register("dws_user_daily", dws_want)
    assert_close(fetch(conn, "SELECT * FROM dws.user_daily"), dws_want, context="dws.user_daily")
    for _ in range(2):
        for sql in statements("03b_dws_rebuild_day.sql"):
            fetch(conn, sql)
    assert_close(fetch(conn, "SELECT * FROM dws.user_daily"), dws_want, context="dws.user_daily after rebuilds")
    last_day = fetch(conn, f"SELECT count(*) AS n FROM dws.user_daily WHERE dt = DATE '{LAST_DAY}'")
    assert last_day.column(0)[0].as_py() == oracle(
        f"SELECT count(*) FROM ({dws_sql}) WHERE dt = DATE '{LAST_DAY}'").column(0)[0].as_py() > 0
    ops = [s.summary.operation.value for s in sorted(catalog.load_table("dws.user_daily").snapshots(),
                                                     key=lambda s: s.sequence_number)]
    assert ops == ["append", "overwrite", "overwrite"]

    # ADS
    for sql in statements("04_ads.sql"):
        fetch(conn, sql)
    ads_want = oracle(statements("04_ads.sql")[-1].split(" AS\n", 1)[1])
    assert_close(fetch(conn, "SELECT * FROM ads.user_features"), ads_want, context="ads.user_features")

    # the question
    question = statements("05_question.sql")[0]
    got = fetch(conn, question)
    want = oracle(question)
    assert want.num_rows > 100
    assert_close(got, want, order_keys=["dt", "city", "device_model"], context="the question")
    # and marketing users really are excluded (the answer would differ without NOT IN)
    with_marketing = oracle(question.replace("AND user_id NOT IN", "AND user_id NOT IN (-1) AND user_id IN"))
    assert rows(with_marketing) != rows(want)
