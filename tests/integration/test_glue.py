"""Floe on the AWS Glue Data Catalog, with moto's Glue standing in for AWS.

A moto server (moto_glue.py) holds the Glue databases and tables; the table
files live on the session SeaweedFS under s3://<sql bucket>/glue. A Floe
cluster (coordinator + 2 executor processes) runs with ``--catalog glue
--glue-endpoint <moto> --glue-region us-east-1``; its AWS credentials come
the standard way, from AWS_* in the coordinator's environment. pyiceberg's
own Glue catalog (boto3) is the independent reader and writer: whatever Floe
writes, pyiceberg reads back through Glue, and the other way round; Glue's
own records (database, table parameters, table versions) are read with boto3.
"""

from __future__ import annotations

import datetime as dt
import threading

import pyarrow as pa
import pytest
from adbc_driver_manager import Error
from pyiceberg.catalog.glue import GlueCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import DateType, LongType, NestedField, StringType

import floe_cluster
from compare import assert_same, execute_update, fetch, fetch_from, rows, scalar
from moto_glue import MotoGlue

NS = "glue_dwd"



@pytest.fixture(scope="module")
def moto(workdir):
    server = MotoGlue.start(workdir / "moto")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def warehouse(seaweed) -> str:
    return f"s3://{seaweed.sql_bucket}/glue"


@pytest.fixture(scope="module")
def glue_catalog(moto, seaweed, warehouse) -> GlueCatalog:
    return GlueCatalog("glue", warehouse=warehouse, **moto.pyiceberg_props(), **seaweed.s3_props())


@pytest.fixture(scope="module")
def glue_cluster(moto, seaweed, warehouse, workdir):
    config = floe_cluster.CatalogConfig(
        warehouse=warehouse,
        kind="glue",
        extra_args=["--glue-endpoint", moto.endpoint, "--glue-region", "us-east-1"],
        env=moto.env(),
        storage_args=seaweed.floe_storage_args(),
    )
    dep = floe_cluster.start_cluster("cluster_glue", config, workdir / "logs")
    try:
        yield dep
    finally:
        dep.stop()


@pytest.fixture
def conn(glue_cluster):
    yield from floe_cluster.connection(glue_cluster)


run = fetch_from


@pytest.fixture(scope="module")
def schema_ready(glue_cluster):
    """CREATE SCHEMA through Floe, once per module."""
    c = glue_cluster.connect()
    try:
        fetch(c, f"CREATE SCHEMA IF NOT EXISTS {NS}")
    finally:
        c.close()
    return NS


def test_create_schema_is_a_glue_database(glue_cluster, schema_ready, moto, glue_catalog):
    db = moto.client().get_database(Name=NS)["Database"]
    assert db["Name"] == NS
    assert (NS,) in glue_catalog.list_namespaces()


# A table pyiceberg writes through Glue: Floe reads it.
ORDERS_SCHEMA = Schema(
    NestedField(1, "id", LongType(), required=False),
    NestedField(2, "dt", DateType(), required=False),
    NestedField(3, "city", StringType(), required=False),
    NestedField(4, "amount", LongType(), required=False),
)
ORDERS_SPEC = PartitionSpec(PartitionField(2, 1000, IdentityTransform(), "dt"))


def _orders_batch(start: int, n: int) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "dt": pa.array([dt.date(2024, 1, 1 + i % 5) for i in ids], pa.date32()),
        "city": pa.array([["Oslo", "Rome", "Lima"][i % 3] for i in ids], pa.string()),
        "amount": pa.array([i * 7 % 100 for i in ids], pa.int64()),
    })


@pytest.fixture(scope="module")
def pyiceberg_orders(glue_catalog, schema_ready):
    name = f"{NS}.orders_py"
    t = glue_catalog.create_table(name, ORDERS_SCHEMA, partition_spec=ORDERS_SPEC)
    t.append(_orders_batch(0, 400))
    t.append(_orders_batch(400, 300))
    return glue_catalog.load_table(name)


def test_reads_a_table_pyiceberg_wrote_through_glue(glue_cluster, conn, pyiceberg_orders):
    expected = pyiceberg_orders.scan().to_arrow()
    import duckdb

    con = duckdb.connect()
    con.register("orders_py", expected)
    sql = "SELECT city, count(*) AS n, sum(amount) AS total FROM {t} WHERE dt >= DATE '2024-01-03' GROUP BY city"
    actual = run(glue_cluster, conn, sql.format(t=f"{NS}.orders_py"))
    assert_same(actual, con.sql(sql.format(t="orders_py")).to_arrow_table())
    listed = {r["table_name"] for r in run(glue_cluster, conn, "SHOW TABLES").to_pylist()
              if r["table_schema"] == NS}
    assert "orders_py" in listed
    # time travel and metadata tables read through Glue too
    first = sorted(pyiceberg_orders.snapshots(), key=lambda s: s.sequence_number)[0]
    assert scalar(run(glue_cluster, conn,
                      f"SELECT count(*) FROM {NS}.orders_py FOR VERSION AS OF {first.snapshot_id}")) == 400
    assert scalar(run(glue_cluster, conn, f'SELECT count(*) FROM {NS}."orders_py$snapshots"')) == 2


def test_ctas_insert_and_overwrite_read_back_through_glue(glue_cluster, conn, glue_catalog, moto,
                                                          pyiceberg_orders):
    name = f"{NS}.daily"
    run(glue_cluster, conn, f"DROP TABLE IF EXISTS {name}")
    run(glue_cluster, conn,
        f"CREATE TABLE {name} PARTITIONED BY (dt) AS "
        f"SELECT dt, city, sum(amount) AS total, count(*) AS n FROM {NS}.orders_py GROUP BY dt, city")
    glue = moto.client()
    created = glue.get_table(DatabaseName=NS, Name="daily")["Table"]
    assert created["Parameters"]["table_type"].upper() == "ICEBERG"
    first_location = created["Parameters"]["metadata_location"]
    assert first_location.startswith("s3://") and "/glue/" in first_location, first_location

    import duckdb

    con = duckdb.connect()
    con.register("src", pyiceberg_orders.scan().to_arrow())
    want_rows = sorted(con.execute(
        "SELECT dt, city, sum(amount)::BIGINT, count(*)::BIGINT FROM src GROUP BY dt, city").fetchall())
    back = glue_catalog.load_table(name).scan().to_arrow().select(["dt", "city", "total", "n"])
    assert sorted(rows(back)) == want_rows

    # INSERT: a new day, seen by pyiceberg through Glue
    assert execute_update(conn, f"INSERT INTO {name} VALUES (DATE '2024-02-01', 'Oslo', 5, 1)") == 1
    t = glue_catalog.load_table(name)
    assert sorted(rows(t.scan().to_arrow().select(["dt", "city", "total", "n"]))) == sorted(
        want_rows + [(dt.date(2024, 2, 1), "Oslo", 5, 1)])

    # INSERT OVERWRITE of one day: Floe's own metadata swap, with Glue's version
    before = glue.get_table(DatabaseName=NS, Name="daily")["Table"]["Parameters"]["metadata_location"]
    assert execute_update(
        conn, f"INSERT OVERWRITE {name} VALUES (DATE '2024-01-02', 'Nowhere', 0, 0)") == 1
    params = glue.get_table(DatabaseName=NS, Name="daily")["Table"]["Parameters"]
    assert params["previous_metadata_location"] == before
    assert params["metadata_location"] != before
    t = glue_catalog.load_table(name)
    assert t.metadata_location == params["metadata_location"]
    expected = sorted([r for r in want_rows if r[0] != dt.date(2024, 1, 2)]
                      + [(dt.date(2024, 2, 1), "Oslo", 5, 1), (dt.date(2024, 1, 2), "Nowhere", 0, 0)])
    assert sorted(rows(t.scan().to_arrow().select(["dt", "city", "total", "n"]))) == expected
    assert sorted(rows(run(glue_cluster, conn, f"SELECT dt, city, total, n FROM {name}"))) == expected
    ops = [s.summary.operation.value for s in sorted(t.snapshots(), key=lambda s: s.sequence_number)]
    assert ops == ["append", "append", "overwrite"], ops
    # the Glue table keeps its other fields across Floe's swap
    assert params["table_type"].upper() == "ICEBERG"
    assert len(glue.get_table_versions(DatabaseName=NS, TableName="daily")["TableVersions"]) >= 4

    # a rename goes through the same swap
    run(glue_cluster, conn, f"ALTER TABLE {name} RENAME COLUMN total TO amount_sum")
    t = glue_catalog.load_table(name)
    assert [f.name for f in t.schema().fields] == ["dt", "city", "amount_sum", "n"]
    assert scalar(run(glue_cluster, conn, f"SELECT sum(amount_sum) FROM {name}")) == sum(r[2] for r in expected)


def test_concurrent_writers_never_lose_a_commit(glue_cluster, conn, glue_catalog, schema_ready):
    """Four clients append to one Glue table at once, and a fifth overwrites
    another partition meanwhile: every statement commits, every row is there,
    and the snapshots form one chain."""
    name = f"{NS}.contended"
    run(glue_cluster, conn, f"DROP TABLE IF EXISTS {name}")
    run(glue_cluster, conn, f"CREATE TABLE {name} (dt DATE, writer INT, k INT) PARTITIONED BY (dt)")
    run(glue_cluster, conn, f"INSERT INTO {name} VALUES (DATE '2024-01-01', 0, 0)")
    errors: list[str] = []
    rounds = 3

    def append(writer: int) -> None:
        c = glue_cluster.connect()
        try:
            for r in range(rounds):
                execute_update(c, f"INSERT INTO {name} VALUES (DATE '2024-01-02', {writer}, {r})")
        except Error as e:
            errors.append(f"writer {writer}: {e}")
        finally:
            c.close()

    def overwrite() -> None:
        c = glue_cluster.connect()
        try:
            for r in range(rounds):
                execute_update(c, f"INSERT OVERWRITE {name} VALUES (DATE '2024-01-01', 9, {r})")
        except Error as e:
            errors.append(f"overwriter: {e}")
        finally:
            c.close()

    threads = [threading.Thread(target=append, args=(w,)) for w in range(1, 5)]
    threads.append(threading.Thread(target=overwrite))
    for th in threads:
        th.start()
    for th in threads:
        th.join(300)
    assert not any(th.is_alive() for th in threads), "a writer hung"
    assert not errors, errors
    want = sorted([(dt.date(2024, 1, 2), w, r) for w in range(1, 5) for r in range(rounds)]
                  + [(dt.date(2024, 1, 1), 9, rounds - 1)])
    assert sorted(rows(run(glue_cluster, conn, f"SELECT dt, writer, k FROM {name}"))) == want
    t = glue_catalog.load_table(name)
    assert sorted(rows(t.scan().to_arrow().select(["dt", "writer", "k"]))) == want
    snaps = sorted(t.snapshots(), key=lambda s: s.sequence_number)
    assert len(snaps) == 1 + 4 * rounds + rounds, [s.summary.operation.value for s in snaps]
    for prev, nxt in zip(snaps, snaps[1:]):
        assert nxt.parent_snapshot_id == prev.snapshot_id


def test_register_a_table_written_elsewhere(glue_cluster, conn, glue_catalog, pyiceberg_orders):
    """CALL system.register_table puts a table whose metadata already exists
    into Glue; pyiceberg then sees it there too."""
    run(glue_cluster, conn, f"DROP TABLE IF EXISTS {NS}.orders_again")
    location = pyiceberg_orders.metadata_location
    run(glue_cluster, conn, f"CALL system.register_table('{NS}', 'orders_again', '{location}')")
    assert glue_catalog.load_table(f"{NS}.orders_again").metadata_location == location
    assert scalar(run(glue_cluster, conn, f"SELECT count(*) FROM {NS}.orders_again")) == 700


def test_missing_table_and_database_are_named(glue_cluster, conn, schema_ready):
    with pytest.raises(Error) as info:
        fetch(conn, f"SELECT * FROM {NS}.no_such_table")
    assert "no_such_table" in str(info.value)
    with pytest.raises(Error) as info:
        fetch(conn, "SELECT * FROM no_such_db.t")
    assert "no_such_db" in str(info.value)
