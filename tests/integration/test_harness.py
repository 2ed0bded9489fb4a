"""Self-checks of the test environment (no Floe binary needed):
SeaweedFS, the pyiceberg-written tables in both catalogs, and the oracles.

    .venv/bin/python -m pytest tests/integration -m harness
"""

from __future__ import annotations

import json
import urllib.request

import pyarrow as pa
import pytest

import cases
import datasets
from compare import assert_same, rows

pytestmark = pytest.mark.harness

KINDS = ["sql", "rest"]


@pytest.fixture(scope="module", params=KINDS)
def data(request, datasets_by_kind) -> datasets.CatalogData:
    return datasets_by_kind[request.param]


def test_seaweed_s3_and_rest(seaweed):
    s3 = seaweed.s3_client()
    names = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert {seaweed.sql_bucket, seaweed.rest_bucket} <= names
    req = urllib.request.Request(
        f"{seaweed.rest_uri}/v1/config?warehouse={seaweed.rest_warehouse}",
        headers={"Authorization": f"Bearer {seaweed.rest_token()}"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        cfg = json.load(resp)
    assert cfg["overrides"]["prefix"] == seaweed.rest_warehouse


def test_tables_written(data):
    ev = data.table("events")
    assert len(ev.snapshots()) == len(datasets.APPEND_WINDOWS_H) - 1
    assert [f.name for f in ev.schema().fields] == datasets.EVENTS_COLUMNS
    assert data.arrow("events").num_rows == datasets.ROWS_PER_APPEND * (len(datasets.APPEND_WINDOWS_H) - 1)
    assert data.arrow("accounts").num_rows == datasets.N_ACCOUNTS
    assert [f.name for f in ev.spec().fields] == ["ts_day", "city"]
    assert len(data.data_files("fragile")) == 3
    loc = ev.location()
    if data.kind == "sql":
        assert loc == f"{data.seaweed.sql_warehouse}/demo/events"
    else:
        assert loc.startswith(f"s3://{data.seaweed.rest_bucket}/")


def test_schema_evolution_visible(data):
    """Rows of the first appends read `channel` as NULL, later ones mostly not."""
    ev = data.arrow("events")
    first = (datasets.SCHEMA_CHANGE_AFTER) * datasets.ROWS_PER_APPEND
    t = data.oracle(
        f"SELECT count(*) FILTER (WHERE channel IS NOT NULL) AS c FROM demo.events WHERE event_id <= {first}"
    )
    assert rows(t) == [(0,)]
    t = data.oracle(
        f"SELECT count(*) FILTER (WHERE channel IS NOT NULL) AS c FROM demo.events WHERE event_id > {first}"
    )
    assert rows(t)[0][0] > 0
    assert ev.schema.field("channel").type == pa.string() or pa.types.is_large_string(ev.schema.field("channel").type)


def test_catalogs_hold_the_same_rows(datasets_by_kind):
    for name in ("events", "accounts"):
        assert_same(datasets_by_kind["sql"].arrow(name), datasets_by_kind["rest"].arrow(name), context=name)


def test_event_id_grows_with_ts(data):
    t = data.oracle(
        "SELECT count(*) AS bad FROM (SELECT ts, lag(ts) OVER (ORDER BY event_id) AS prev FROM demo.events) "
        "WHERE prev > ts"
    )
    assert rows(t) == [(0,)]


@pytest.mark.parametrize("case", cases.PRUNE_CASES, ids=str)
def test_pruning_oracle_is_meaningful(data, case):
    planned = data.planned_files("events", case.iceberg_filter)
    total = data.data_files("events")
    assert planned, "filter selects no file at all"
    if case.expect_pruning:
        assert len(planned) < len(total)
    else:
        assert len(planned) == len(total)
    # the pyiceberg expression and the SQL predicate agree on the rows
    via_iceberg = data.table("events").scan(row_filter=case.iceberg_filter).to_arrow().num_rows
    via_duck = rows(data.oracle(f"SELECT count(*) FROM demo.events WHERE {case.sql_predicate}"))[0][0]
    assert via_iceberg == via_duck > 0


def test_compare_normalization():
    import datetime as dt
    from decimal import Decimal

    a = pa.table(
        {
            "ts": pa.array([dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)], pa.timestamp("ns", tz="+00:00")),
            "d": pa.array([Decimal("1.50")], pa.decimal128(22, 2)),
            "s": pa.array(["x"], pa.large_string()),
            "n": pa.array([3], pa.int32()),
        }
    )
    b = pa.table(
        {
            "ts": pa.array([dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)], pa.timestamp("us", tz="UTC")),
            "d": pa.array([Decimal("1.5")], pa.decimal128(38, 1)),
            "s": pa.array(["x"], pa.string()),
            "n": pa.array([3], pa.int64()),
        }
    )
    assert_same(a, b)
    with pytest.raises(AssertionError):
        assert_same(a, b.set_column(3, "n", pa.array([4], pa.int64())))
