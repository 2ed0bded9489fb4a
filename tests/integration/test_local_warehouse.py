"""The embedded default: `floe standalone --warehouse DIR` with no S3 flags and
no --catalog-uri keeps an Iceberg SQL catalog at DIR/catalog.db (catalog name
"floe", the standard JDBC-catalog schema) over a file:// warehouse.

pyiceberg opens the very catalog.db Floe created and writes tables into it
while Floe runs; Floe must see every change at once (no restart) and answer
like DuckDB over pyiceberg's own scan of the same table.
"""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import DecimalType, DoubleType, LongType, NestedField, StringType, TimestamptzType

import floe_cluster
from compare import assert_same, fetch, scalar

NS = "lake"  # not "local": LOCAL is a keyword of the SQL parser (INSERT INTO LOCAL DIRECTORY)
UTC = dt.timezone.utc
CITIES = ["Porto", "Gent", "Turku", "Bergen"]

TRIPS_SCHEMA = Schema(
    NestedField(1, "trip_id", LongType(), required=False),
    NestedField(2, "ts", TimestamptzType(), required=False),
    NestedField(3, "city", StringType(), required=False),
    NestedField(4, "fare", DecimalType(10, 2), required=False),
    NestedField(5, "distance_km", DoubleType(), required=False),
    NestedField(6, "rider_id", LongType(), required=False),
)
TRIPS_SPEC = PartitionSpec(
    PartitionField(source_id=3, field_id=1000, transform=IdentityTransform(), name="city"),
    PartitionField(source_id=2, field_id=1001, transform=DayTransform(), name="ts_day"),
)
TRIPS_ARROW = pa.schema(
    [
        pa.field("trip_id", pa.int64()),
        pa.field("ts", pa.timestamp("us", tz="UTC")),
        pa.field("city", pa.string()),
        pa.field("fare", pa.decimal128(10, 2)),
        pa.field("distance_km", pa.float64()),
        pa.field("rider_id", pa.int64()),
    ]
)

RIDERS_SCHEMA = Schema(
    NestedField(1, "rider_id", LongType(), required=False),
    NestedField(2, "name", StringType(), required=False),
    NestedField(3, "home_city", StringType(), required=False),
)
RIDERS_ARROW = pa.schema(
    [pa.field("rider_id", pa.int64()), pa.field("name", pa.string()), pa.field("home_city", pa.string())]
)
N_RIDERS = 40


def _trips(seed: int, first_id: int, n: int, day0: dt.datetime, days: int) -> pa.Table:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        rows.append(
            {
                "trip_id": first_id + i,
                "ts": day0 + dt.timedelta(seconds=rng.randrange(days * 86400)),
                "city": rng.choice(CITIES),
                "fare": None if rng.random() < 0.05 else (Decimal(rng.randint(250, 9000)) / 100).quantize(Decimal("0.01")),
                "distance_km": round(rng.uniform(0.3, 40.0), 3),
                "rider_id": rng.randint(1, N_RIDERS + 5),  # a few riders without a riders row
            }
        )
    return pa.Table.from_pylist(rows, schema=TRIPS_ARROW)


def _riders() -> pa.Table:
    rng = random.Random(7)
    return pa.Table.from_pylist(
        [{"rider_id": i, "name": f"rider-{i:03d}", "home_city": rng.choice(CITIES)} for i in range(1, N_RIDERS + 1)],
        schema=RIDERS_ARROW,
    )


class _Oracle:
    """DuckDB over pyiceberg's current scan of lake.* tables."""

    def __init__(self, catalog: SqlCatalog):
        self.catalog = catalog

    def __call__(self, sql: str) -> pa.Table:
        con = duckdb.connect()
        con.execute("SET TimeZone='UTC'")
        con.execute(f"CREATE SCHEMA {NS}")
        for ident in self.catalog.list_tables(NS):
            name = ident[-1]
            data = self.catalog.load_table(f"{NS}.{name}").scan().to_arrow()
            con.register(f"__{name}", data)
            con.execute(f"CREATE VIEW {NS}.{name} AS SELECT * FROM __{name}")
        try:
            return con.sql(sql).to_arrow_table()
        finally:
            con.close()


def _start_embedded(tmp: Path) -> tuple[floe_cluster.Deployment, Path]:
    wh = tmp / "wh"
    dep = floe_cluster.Deployment("local_wh", "local", tmp / "logs")
    try:
        # Exactly the embedded default: no --catalog, --catalog-uri or S3 flags.
        dep._start_head(
            [str(floe_cluster.floe_bin()), "standalone", "--warehouse", str(wh), "--port", "0", "--executors", "2"]
        )
        dep.coordinator.wait_for(floe_cluster.REGISTERED_RE, count=2, what="FLOE_EXECUTOR_REGISTERED")
    except BaseException:
        dep.stop()
        raise
    return dep, wh


@pytest.fixture
def embedded(tmp_path):
    floe_cluster.floe_bin()
    dep, wh = _start_embedded(tmp_path)
    try:
        yield dep, wh
    finally:
        dep.stop()


def _listed(conn) -> set[tuple[str, str]]:
    t = fetch(conn, "SHOW TABLES")
    return {
        (r["table_schema"], r["table_name"])
        for r in t.to_pylist()
        if r["table_catalog"] == "floe" and r["table_schema"] != "information_schema"
    }


QUERIES = [
    ("count", "SELECT count(*) AS n FROM lake.trips"),
    ("by_city",
     "SELECT city, count(*) AS n, sum(fare) AS total, min(ts) AS first_ts, max(distance_km) AS longest "
     "FROM lake.trips GROUP BY city"),
    ("partition_filter",
     "SELECT trip_id, ts, fare FROM lake.trips "
     "WHERE city = 'Gent' AND ts >= TIMESTAMP '2024-05-02 00:00:00' AND ts < TIMESTAMP '2024-05-04 00:00:00'"),
    ("by_day",
     "SELECT date_trunc('day', ts) AS day, count(*) AS n, sum(distance_km) AS km FROM lake.trips GROUP BY 1"),
    ("select_star_filter", "SELECT * FROM lake.trips WHERE trip_id % 17 = 3"),
    ("fare_nulls", "SELECT count(*) AS n FROM lake.trips WHERE fare IS NULL"),
]


def _check_queries(conn, oracle: _Oracle, stage: str) -> None:
    for qid, sql in QUERIES:
        assert_same(fetch(conn, sql), oracle(sql), context=f"{stage}/{qid}")


@pytest.mark.timeout(300)
def test_embedded_catalog_shared_with_pyiceberg(embedded):
    dep, wh = embedded
    db = (wh / "catalog.db").resolve()

    # Floe created the catalog file at start, with the standard JDBC-catalog tables.
    assert db.is_file(), f"floe standalone did not create {db}"
    with sqlite3.connect(db) as sq:
        tables = {r[0] for r in sq.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"iceberg_tables", "iceberg_namespace_properties"} <= tables, tables
        cols = {r[1] for r in sq.execute("PRAGMA table_info(iceberg_tables)")}
        assert {"catalog_name", "table_namespace", "table_name", "metadata_location",
                "previous_metadata_location"} <= cols, cols

    cat = SqlCatalog("floe", uri=f"sqlite:///{db}", warehouse=f"file://{wh.resolve()}")
    oracle = _Oracle(cat)
    conn = dep.connect(timeout_s=90)
    try:
        assert _listed(conn) == set(), "a fresh warehouse should have no tables"

        cat.create_namespace(NS)
        trips = cat.create_table(f"{NS}.trips", TRIPS_SCHEMA, partition_spec=TRIPS_SPEC)
        assert trips.metadata_location.startswith(f"file://{wh.resolve()}/"), trips.metadata_location

        # pyiceberg registered the table in the same catalog.db rows Floe reads.
        with sqlite3.connect(db) as sq:
            rows = sq.execute("SELECT catalog_name, table_namespace, table_name FROM iceberg_tables").fetchall()
        assert rows == [("floe", NS, "trips")], rows

        # An empty table is visible and empty.
        assert _listed(conn) == {(NS, "trips")}
        assert scalar(fetch(conn, "SELECT count(*) FROM lake.trips")) == 0

        day0 = dt.datetime(2024, 5, 1, tzinfo=UTC)
        trips.append(_trips(1, 1, 1500, day0, 4))
        _check_queries(conn, oracle, "after append 1")

        trips.append(_trips(2, 1501, 900, day0 + dt.timedelta(days=2), 3))
        n_expected = cat.load_table(f"{NS}.trips").scan().to_arrow().num_rows
        assert n_expected == 2400
        assert scalar(fetch(conn, "SELECT count(*) FROM lake.trips")) == n_expected, "Floe missed the 2nd append"
        _check_queries(conn, oracle, "after append 2")

        # Partition pruning works on the local warehouse too: EXPLAIN's files=selected/total
        # matches pyiceberg's own planning.
        from pyiceberg.expressions import EqualTo

        planned = list(cat.load_table(f"{NS}.trips").scan(row_filter=EqualTo("city", "Gent")).plan_files())
        all_files = cat.load_table(f"{NS}.trips").inspect.files().num_rows
        plan = "\n".join(str(v) for r in fetch(conn, "EXPLAIN SELECT count(*) FROM lake.trips WHERE city = 'Gent'")
                         .to_pylist() for v in r.values())
        assert 0 < len(planned) < all_files, (len(planned), all_files)
        assert f"files={len(planned)}/{all_files}" in plan, plan

        # A second table created while Floe runs.
        riders = cat.create_table(f"{NS}.riders", RIDERS_SCHEMA)
        riders.append(_riders())
        assert _listed(conn) == {(NS, "trips"), (NS, "riders")}
        assert_same(fetch(conn, "SELECT * FROM lake.riders"), oracle("SELECT * FROM lake.riders"), context="riders")
        join = (
            "SELECT r.home_city, t.city, count(*) AS n, sum(t.fare) AS total "
            "FROM lake.trips t JOIN lake.riders r ON t.rider_id = r.rider_id GROUP BY r.home_city, t.city"
        )
        assert_same(fetch(conn, join), oracle(join), context="join")
        anti = "SELECT count(*) AS n FROM lake.trips WHERE rider_id NOT IN (SELECT rider_id FROM lake.riders)"
        assert_same(fetch(conn, anti), oracle(anti), context="anti-join")
    finally:
        conn.close()

    # Floe itself is still fine (no crash while the catalog changed under it).
    assert dep.coordinator.alive(), dep.describe()


KEYS_SCHEMA = Schema(NestedField(1, "k", LongType(), required=False))
KEYS_ARROW = pa.schema([pa.field("k", pa.int64())])


def _plan_text(conn, sql: str) -> str:
    return "\n".join(str(v) for r in fetch(conn, f"EXPLAIN {sql}").to_pylist() for v in r.values())


@pytest.mark.timeout(300)
def test_not_in_is_a_plain_anti_join_only_when_manifests_prove_no_nulls(embedded):
    """NOT IN over nullable columns: when every data file's manifest entry records zero NULLs
    on both sides Floe plans a plain (swappable, distributable) anti join; a NULL on either side
    keeps SQL's three-valued answer (no rows when the subquery holds a NULL; a NULL probe value
    never qualifies). Answers are DuckDB's over the same rows."""
    dep, wh = embedded
    cat = SqlCatalog("floe", uri=f"sqlite:///{(wh / 'catalog.db').resolve()}", warehouse=f"file://{wh.resolve()}")
    cat.create_namespace(NS)
    tables = {
        "probe": list(range(1, 2001)),
        "probe_nulls": list(range(1, 2001)) + [None, None],
        "sub": list(range(1, 2001, 7)),
        "sub_nulls": list(range(1, 2001, 7)) + [None],
    }
    for name, keys in tables.items():
        cat.create_table(f"{NS}.{name}", KEYS_SCHEMA).append(pa.table({"k": pa.array(keys, pa.int64())}, schema=KEYS_ARROW))
    oracle = _Oracle(cat)
    conn = dep.connect(timeout_s=90)
    try:
        for probe in ("probe", "probe_nulls"):
            for sub in ("sub", "sub_nulls"):
                sql = f"SELECT count(*) AS n, sum(k) AS s FROM lake.{probe} WHERE k NOT IN (SELECT k FROM lake.{sub})"
                assert_same(fetch(conn, sql), oracle(sql), context=f"{probe} NOT IN {sub}")
                plan = _plan_text(conn, sql)
                # A null-aware anti join is never swapped: the probe side stays the left input
                # of a LeftAnti join collected on one node.
                null_aware = "join_type=LeftAnti" in plan and "mode=CollectLeft" in plan
                proven = probe == "probe" and sub == "sub"
                assert null_aware != proven, f"{probe} NOT IN {sub}: proven={proven}\n{plan}"
        assert scalar(fetch(conn, "SELECT count(*) FROM lake.probe WHERE k NOT IN (SELECT k FROM lake.sub_nulls)")) == 0
    finally:
        conn.close()


@pytest.mark.timeout(300)
def test_a_one_file_table_is_read_in_pieces_by_rows_each_row_once(embedded):
    """A table of one large data file is read by several tasks, each a range of its rows (split
    inside a row group): every row is read exactly once, and EXPLAIN ANALYZE counts one file."""
    dep, wh = embedded
    cat = SqlCatalog("floe", uri=f"sqlite:///{(wh / 'catalog.db').resolve()}", warehouse=f"file://{wh.resolve()}")
    cat.create_namespace(NS)
    n = 4_000_000
    import pyarrow.compute as pc

    # Random 62-bit values: hardly compressible, so the one file is large enough to split.
    v = pc.cast(pc.multiply(pc.random(n, initializer=11), float(1 << 62)), pa.int64(), safe=False)
    data = pa.table({"k": pa.arange(0, n), "v": v})
    schema = Schema(NestedField(1, "k", LongType(), required=False), NestedField(2, "v", LongType(), required=False))
    table = cat.create_table(f"{NS}.wide", schema)
    table.append(data)
    files = table.inspect.files()
    assert files.num_rows == 1 and files.column("file_size_in_bytes")[0].as_py() > 16 << 20, files.to_pylist()
    conn = dep.connect(timeout_s=120)
    try:
        sql = "SELECT count(*) AS n, count(DISTINCT k) AS d, sum(k) AS sk, min(k) AS lo, max(k) AS hi FROM lake.wide"
        got = fetch(conn, sql).to_pylist()[0]
        assert got == {"n": n, "d": n, "sk": n * (n - 1) // 2, "lo": 0, "hi": n - 1}, got
        got_v = fetch(conn, "SELECT min(v) AS lo, max(v) AS hi, count(DISTINCT v) AS d FROM lake.wide").to_pylist()[0]
        want_v = {"lo": pc.min(v).as_py(), "hi": pc.max(v).as_py(), "d": pc.count_distinct(v).as_py()}
        assert got_v == want_v, (got_v, want_v)
        analyzed = _plan_text(conn, "ANALYZE SELECT count(*), sum(v) FROM lake.wide")
        import re

        stage = re.search(r"RemoteStageExec: stage=\d+, tasks=(\d+).*files_scanned=(\d+), rows_scanned=([\d.]+ M)", analyzed)
        assert stage, analyzed
        assert int(stage.group(1)) >= 2, analyzed
        assert (stage.group(2), stage.group(3)) == ("1", "4.00 M"), analyzed
    finally:
        conn.close()


@pytest.mark.timeout(300)
def test_counts_come_from_manifests_only_when_the_scan_returns_every_row(embedded):
    """`count(*)` and `count(column)` of a table without deletes are answered from the manifests'
    record and null counts (no scan in the plan); with a filter the files are read."""
    dep, wh = embedded
    cat = SqlCatalog("floe", uri=f"sqlite:///{(wh / 'catalog.db').resolve()}", warehouse=f"file://{wh.resolve()}")
    cat.create_namespace(NS)
    table = cat.create_table(f"{NS}.counted", KEYS_SCHEMA)
    table.append(pa.table({"k": pa.array([1, 2, None, 4], pa.int64())}, schema=KEYS_ARROW))
    table.append(pa.table({"k": pa.array([None, 6, 7], pa.int64())}, schema=KEYS_ARROW))
    oracle = _Oracle(cat)
    conn = dep.connect(timeout_s=90)
    try:
        whole = "SELECT count(*) AS n, count(k) AS nk FROM lake.counted"
        assert_same(fetch(conn, whole), oracle(whole), context="counts")
        assert fetch(conn, whole).to_pylist() == [{"n": 7, "nk": 5}]
        assert "IcebergScanExec" not in _plan_text(conn, whole), _plan_text(conn, whole)
        filtered = "SELECT count(*) AS n FROM lake.counted WHERE k > 3"
        assert_same(fetch(conn, filtered), oracle(filtered), context="filtered count")
        assert "IcebergScanExec" in _plan_text(conn, filtered)
    finally:
        conn.close()
