"""Floe's Iceberg SQL catalog on PostgreSQL.

A throw-away PostgreSQL server (postgres.py) holds the JDBC-schema Iceberg
catalog "floe"; pyiceberg (SqlCatalog over SQLAlchemy/psycopg2) creates the
namespace ``pgdemo`` in it with

* ``pgdemo.events``  the demo.events data of datasets.py: partition day(ts),
  identity(city), 4 appends, a column added after the 2nd append;
* ``pgdemo.notes``   a tiny unpartitioned table (so SHOW TABLES lists a set);

data files and metadata on the session SeaweedFS under s3://<sql bucket>/pg.
A Floe cluster (coordinator + 2 executor processes) runs with
``--catalog sql --catalog-uri postgres://floe@127.0.0.1:PORT/postgres`` (sqlx,
``$1`` bind style) and every answer is compared with an independent one:
DuckDB over pyiceberg's read of the same tables, pyiceberg's filtered scans,
and pyiceberg's own scan planning for the pruned file counts.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

import catalogs
import cases
import datasets
import floe_cluster
from compare import assert_same, fetch_from, plan_text, scalar
from postgres import postgres_server  # noqa: F401  (session fixture)

NS = "pgdemo"
EVENTS = f"{NS}.events"
NOTES = f"{NS}.notes"
LATE = f"{NS}.late"
FLOE_CATALOG = catalogs.SQL_CATALOG_NAME  # "floe"

SCAN_RE = re.compile(r"IcebergScanExec:[^\n]*?\bfiles=(\d+)/(\d+)")

NOTES_SCHEMA = Schema(
    NestedField(1, "id", LongType(), required=False),
    NestedField(2, "note", StringType(), required=False),
)
NOTES_ARROW = pa.table(
    {"id": pa.array([1, 2, 3], pa.int64()), "note": pa.array(["a", None, "c"], pa.string())}
)


class PgData:
    """The pyiceberg side: catalog, tables and the DuckDB oracle."""

    def __init__(self, pg, catalog: SqlCatalog, warehouse: str):
        self.pg = pg
        self.catalog = catalog
        self.warehouse = warehouse
        self._arrow: dict[str, pa.Table] = {}
        self._duck = None

    def table(self, name: str = EVENTS):
        return self.catalog.load_table(name)

    def arrow(self, name: str = EVENTS) -> pa.Table:
        if name not in self._arrow:
            self._arrow[name] = self.table(name).scan().to_arrow()
        return self._arrow[name]

    def oracle(self, sql: str) -> pa.Table:
        """`sql` (DuckDB dialect) over views pgdemo.events / pgdemo.notes of pyiceberg's read."""
        if self._duck is None:
            import duckdb

            con = duckdb.connect()
            con.execute("SET TimeZone='UTC'")
            con.execute(f"CREATE SCHEMA {NS}")
            for name in (EVENTS, NOTES):
                short = name.split(".")[1]
                con.register(f"__arrow_{short}", self.arrow(name))
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM __arrow_{short}")
            self._duck = con
        return self._duck.sql(sql).to_arrow_table()

    def data_files(self, name: str = EVENTS) -> list[dict]:
        return [f for f in self.table(name).inspect.files().to_pylist() if f["content"] == 0]

    def planned_files(self, row_filter, name: str = EVENTS) -> list:
        return list(self.table(name).scan(row_filter=row_filter).plan_files())


def _create_events(cat: SqlCatalog) -> None:
    t = cat.create_table(EVENTS, datasets.EVENTS_SCHEMA, partition_spec=datasets.EVENTS_SPEC)
    for k, batch in enumerate(datasets.events_batches()):
        if k == datasets.SCHEMA_CHANGE_AFTER:
            with t.update_schema() as upd:
                upd.add_column("channel", StringType())
        t.append(batch)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def pg_data(postgres_server, seaweed) -> PgData:  # noqa: F811
    warehouse = f"s3://{seaweed.sql_bucket}/pg"
    cat = SqlCatalog(
        FLOE_CATALOG,
        uri=postgres_server.sqlalchemy_uri(),
        warehouse=warehouse,
        **seaweed.s3_props(),
    )
    cat.create_namespace_if_not_exists(NS)
    for name in (EVENTS, NOTES, LATE):
        if cat.table_exists(name):
            cat.drop_table(name)
    _create_events(cat)
    cat.create_table(NOTES, NOTES_SCHEMA).append(NOTES_ARROW)
    return PgData(postgres_server, cat, warehouse)


@pytest.fixture(scope="module")
def pg_cluster(postgres_server, pg_data, seaweed, workdir):  # noqa: F811
    config = floe_cluster.CatalogConfig(
        warehouse=pg_data.warehouse,
        kind="sql",
        catalog_uri=postgres_server.sqlx_uri(),
        storage_args=seaweed.floe_storage_args(),
    )
    dep = floe_cluster.start_cluster("cluster_pg", config, workdir / "logs")
    try:
        yield dep
    finally:
        dep.stop()


@pytest.fixture
def pg_conn(pg_cluster):
    yield from floe_cluster.connection(pg_cluster)


run = fetch_from


# ------------------------------------------------------------------ environment


def test_catalog_lives_in_postgres(postgres_server, pg_data):  # noqa: F811
    """The pyiceberg tables really are rows of the PostgreSQL catalog."""
    rows = postgres_server.query(
        "SELECT catalog_name, table_namespace, table_name, metadata_location FROM iceberg_tables "
        "ORDER BY table_name"
    )
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (FLOE_CATALOG, NS, "events"),
        (FLOE_CATALOG, NS, "notes"),
    ], rows
    for r in rows:
        assert r[3].startswith(f"{pg_data.warehouse}/"), r
    events = pg_data.table(EVENTS)
    assert len(events.history()) == len(datasets.APPEND_WINDOWS_H) - 1
    assert len(pg_data.data_files()) > 4 * len(datasets.CITIES)


# ------------------------------------------------------------------ Floe


def test_show_tables(pg_cluster, pg_conn, pg_data):
    t = run(pg_cluster, pg_conn, "SHOW TABLES")
    names = [c.lower() for c in t.column_names]
    assert {"table_catalog", "table_schema", "table_name"} <= set(names), t.column_names
    listed = {
        r["table_name"]
        for r in t.to_pylist()
        if r["table_schema"] == NS and r["table_catalog"] == FLOE_CATALOG
    }
    expected = {ident[-1] for ident in pg_data.catalog.list_tables(NS)}
    assert {"events", "notes"} <= expected
    assert listed == expected, f"SHOW TABLES: floe {sorted(listed)}, pyiceberg {sorted(expected)}\n{t}"


QUERIES = {
    "count_all": "SELECT count(*) AS n FROM pgdemo.events",
    "partition_filter_rows": (
        "SELECT event_id, ts, city, device, amount, channel FROM pgdemo.events "
        "WHERE city = 'Lisbon' AND ts >= TIMESTAMP '2024-03-03 00:00:00' AND ts < TIMESTAMP '2024-03-05 00:00:00'"
    ),
    "partition_filter_count": "SELECT count(*) AS n FROM pgdemo.events WHERE city IN ('Oslo', 'Berlin')",
    "group_by_city": (
        "SELECT city, count(*) AS n, sum(amount) AS total, min(ts) AS first_ts, max(ts) AS last_ts, "
        "count(channel) AS with_channel FROM pgdemo.events GROUP BY city"
    ),
    "group_by_channel_filtered": (
        "SELECT channel, count(*) AS n, sum(amount) AS total FROM pgdemo.events "
        "WHERE ts >= TIMESTAMP '2024-03-06 00:00:00' GROUP BY channel"
    ),
    "unpartitioned_table": "SELECT id, note FROM pgdemo.notes",
}


@pytest.mark.parametrize("qid", list(QUERIES))
def test_query_matches_oracle(pg_cluster, pg_conn, pg_data, qid):
    sql = QUERIES[qid]
    actual = run(pg_cluster, pg_conn, sql)
    assert_same(actual, pg_data.oracle(sql), context=qid)


def test_partition_filter_count_matches_pyiceberg_scan(pg_cluster, pg_conn, pg_data):
    """Independent of DuckDB: pyiceberg's own filtered scan."""
    row_filter = And(
        EqualTo("city", "Amsterdam"),
        GreaterThanOrEqual("ts", "2024-03-02T00:00:00+00:00"),
        LessThan("ts", "2024-03-04T00:00:00+00:00"),
    )
    expected = pg_data.table().scan(row_filter=row_filter).to_arrow().num_rows
    assert expected > 0
    n = scalar(run(
        pg_cluster, pg_conn,
        "SELECT count(*) FROM pgdemo.events WHERE city = 'Amsterdam' "
        "AND ts >= TIMESTAMP '2024-03-02 00:00:00' AND ts < TIMESTAMP '2024-03-04 00:00:00'",
    ))
    assert n == expected


@pytest.mark.parametrize("case", cases.PRUNE_CASES, ids=str)
def test_explain_prunes_files(pg_cluster, pg_conn, pg_data, case):
    planned = pg_data.planned_files(case.iceberg_filter)
    total = pg_data.data_files()
    text = plan_text(run(pg_cluster, pg_conn, f"EXPLAIN SELECT count(*) FROM pgdemo.events WHERE {case.sql_predicate}"))
    found = SCAN_RE.findall(text)
    assert len(found) == 1, f"expected one 'IcebergScanExec: ... files=N/M' in the plan:\n{text}"
    assert "table=pgdemo.events" in text, text
    selected, all_files = int(found[0][0]), int(found[0][1])
    assert all_files == len(total), f"total files: floe {all_files}, iceberg {len(total)}\n{text}"
    assert selected == len(planned), f"selected files: floe {selected}, pyiceberg plan_files {len(planned)}\n{text}"
    if case.expect_pruning:
        assert selected < all_files, text
    else:
        assert selected == all_files, text


def test_sees_catalog_changes_after_start(pg_cluster, pg_conn, pg_data):
    """Each query reads the PostgreSQL catalog as it is now: a table created
    and appended to after Floe started is listed and read in full."""
    cat = pg_data.catalog
    if cat.table_exists(LATE):
        cat.drop_table(LATE)
    late = cat.create_table(LATE, NOTES_SCHEMA)
    try:
        late.append(NOTES_ARROW)
        assert scalar(run(pg_cluster, pg_conn, f"SELECT count(*) FROM {LATE}")) == NOTES_ARROW.num_rows
        late.append(NOTES_ARROW)  # a second snapshot, committed through PostgreSQL
        assert scalar(run(pg_cluster, pg_conn, f"SELECT count(*) FROM {LATE}")) == 2 * NOTES_ARROW.num_rows
        listed = {r["table_name"] for r in run(pg_cluster, pg_conn, "SHOW TABLES").to_pylist()
                  if r["table_schema"] == NS}
        assert "late" in listed, listed
    finally:
        cat.drop_table(LATE)
