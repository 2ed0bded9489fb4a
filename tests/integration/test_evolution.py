"""Schema and partition evolution, read by field id.

pyiceberg writes a table and evolves it between appends: `id` promoted from int to long,
`city` renamed to `town`, `amount` dropped and a new `amount` (a new field id, a double)
added, and the partition spec changed from `day(ts)` to `hour(ts)` + `bucket(4, id)`. Floe's
answers equal pyiceberg's own scan of the table and DuckDB's aggregates over that scan, and a
filter on `ts` prunes files written under both specs exactly as pyiceberg's planner does.
"""

from __future__ import annotations

import datetime as dt
import re

import pyarrow as pa
import pytest

import floe_cluster
from compare import fetch, plan_text

DAYS = [dt.datetime(2024, 6, d) for d in (1, 2, 3)]


@pytest.fixture(scope="module")
def evolved(seaweed, workdir, cluster_sql):
    import catalogs
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import BucketTransform, DayTransform, HourTransform
    from pyiceberg.types import DoubleType, FloatType, IntegerType, LongType, NestedField, StringType, TimestampType

    catalog = catalogs.sql_catalog(seaweed, workdir)
    try:
        catalog.create_namespace("evo")
    except Exception:  # noqa: BLE001 (exists from an earlier run)
        pass
    try:
        catalog.drop_table("evo.events")
    except Exception:  # noqa: BLE001
        pass
    schema = Schema(
        NestedField(1, "id", IntegerType(), required=False),
        NestedField(2, "ts", TimestampType(), required=False),
        NestedField(3, "city", StringType(), required=False),
        NestedField(4, "amount", FloatType(), required=False),
    )
    spec = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=DayTransform(), name="ts_day"))
    table = catalog.create_table("evo.events", schema=schema, partition_spec=spec)

    def rows(start: int, n: int, hours: int):
        ids = list(range(start, start + n))
        ts = [DAYS[i % 3] + dt.timedelta(hours=(i * 7) % hours, minutes=i % 60) for i in ids]
        return ids, ts

    ids, ts = rows(0, 300, 24)
    table.append(pa.table({
        "id": pa.array(ids, pa.int32()), "ts": pa.array(ts, pa.timestamp("us")),
        "city": pa.array([["Paris", "Lyon", "Nice"][i % 3] for i in ids]),
        "amount": pa.array([float(i % 50) for i in ids], pa.float32()),
    }))
    with table.update_schema() as update:
        update.update_column("id", field_type=LongType())
        update.rename_column("city", "town")
        update.delete_column("amount")
    with table.update_schema() as update:
        update.add_column("amount", DoubleType())
    ids, ts = rows(300, 300, 24)
    table.append(pa.table({
        "id": pa.array(ids, pa.int64()), "ts": pa.array(ts, pa.timestamp("us")),
        "town": pa.array([["Paris", "Lyon", "Nice", "Lille"][i % 4] for i in ids]),
        "amount": pa.array([i * 1.5 for i in ids], pa.float64()),
    }))
    with table.update_spec() as update:
        update.remove_field("ts_day")
        update.add_field("ts", HourTransform(), "ts_hour")
        update.add_field("id", BucketTransform(4), "id_bucket")
    ids, ts = rows(600, 300, 24)
    table.append(pa.table({
        "id": pa.array(ids, pa.int64()), "ts": pa.array(ts, pa.timestamp("us")),
        "town": pa.array([["Paris", "Lyon"][i % 2] for i in ids]),
        "amount": pa.array([i * 0.5 for i in ids], pa.float64()),
    }))
    return catalog.load_table("evo.events")


@pytest.fixture(scope="module")
def conn(cluster_sql):
    yield from floe_cluster.connection(cluster_sql)


def test_rows_read_by_field_id_equal_pyicebergs(evolved, conn):
    theirs = evolved.scan().to_arrow().sort_by("id")
    ours = fetch(conn, "SELECT id, ts, town, amount FROM evo.events ORDER BY id")
    assert ours.schema.field("id").type == pa.int64()  # promoted
    assert ours.column("id").to_pylist() == theirs.column("id").to_pylist()
    assert ours.column("ts").to_pylist() == theirs.column("ts").to_pylist()
    assert ours.column("town").to_pylist() == theirs.column("town").to_pylist()
    # The dropped `amount` does not come back: the old files have no field of the new id.
    assert ours.column("amount").to_pylist() == theirs.column("amount").to_pylist()
    assert ours.column("amount").to_pylist()[:300] == [None] * 300


def test_aggregates_equal_duckdbs_over_the_same_rows(evolved, conn):
    import duckdb

    events = evolved.scan().to_arrow()  # noqa: F841 (DuckDB reads it by name)
    sql = ("SELECT town, date_trunc('day', ts) AS day, count(*) AS n, sum(id) AS ids, "
           "round(sum(amount), 3) AS amount FROM {t} GROUP BY town, date_trunc('day', ts) ORDER BY town, day")
    want = duckdb.sql(sql.format(t="events")).fetch_arrow_table().to_pylist()
    got = fetch(conn, sql.format(t="evo.events")).to_pylist()
    assert [(r["town"], r["n"], r["ids"], r["amount"]) for r in got] == \
        [(r["town"], r["n"], r["ids"], r["amount"]) for r in want]


@pytest.mark.parametrize("lo,hi", [("2024-06-02 00:00:00", "2024-06-02 23:59:59"),
                                   ("2024-06-01 03:00:00", "2024-06-01 03:59:59")])
def test_pruning_under_both_specs_matches_pyicebergs_planner(evolved, conn, lo, hi):
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThanOrEqual

    filt = And(GreaterThanOrEqual("ts", lo.replace(" ", "T")), LessThanOrEqual("ts", hi.replace(" ", "T")))
    planned = list(evolved.scan(row_filter=filt).plan_files())
    # Files of both specs survive: the old day files and the new hour/bucket files.
    assert {t.file.spec_id for t in planned} == {0, 1}
    sql = f"SELECT count(*) FROM evo.events WHERE ts >= TIMESTAMP '{lo}' AND ts <= TIMESTAMP '{hi}'"
    plan = plan_text(fetch(conn, f"EXPLAIN {sql}"))
    m = re.search(r"files=(\d+)/(\d+)", plan)
    assert m, plan
    selected, total = int(m.group(1)), int(m.group(2))
    assert selected == len(planned) and selected < total, (plan, len(planned))
    want = evolved.scan(row_filter=filt).to_arrow().num_rows
    assert fetch(conn, sql).column(0).to_pylist() == [want]
