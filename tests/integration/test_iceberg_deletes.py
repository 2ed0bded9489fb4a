"""Tables with merge-on-read deletes, written by Spark and pyiceberg (`tests/fixtures/iceberg/`,
copied as given from the shared fixtures): v2 position deletes, v3 deletion vectors, and v2
equality deletes whose snapshots add rows and deletes in the same commit.

The fixture folder is uploaded to SeaweedFS (bucket `fixtures`, prefix `a/`, the paths its
metadata names), each table is registered with `CALL system.register_table`, and every query
of its `EXPECTED.json` (Spark's answers) is run through ADBC against a coordinator and two
executors, as is the row count at every snapshot, by snapshot id and by timestamp (time
travel reads each snapshot with its own schema).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
from pathlib import Path

import pyarrow as pa
import pytest

import floe_cluster
from compare import fetch, plan_text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "iceberg"
TABLES = sorted(p.name for p in FIXTURES.iterdir() if (p / "EXPECTED.json").exists())
BUCKET, PREFIX = "fixtures", "a"


def _expected(table: str) -> dict:
    return json.loads((FIXTURES / table / "EXPECTED.json").read_text())


@pytest.fixture(scope="module")
def lakehouse(seaweed, workdir):
    s3 = seaweed.s3_client()
    try:
        s3.create_bucket(Bucket=BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    for path in FIXTURES.rglob("*"):
        if path.is_file() and path.name not in ("README.md", "EXPECTED.json"):
            s3.upload_file(str(path), BUCKET, f"{PREFIX}/{path.relative_to(FIXTURES).as_posix()}")
    catalog = floe_cluster.sql_catalog_config(seaweed, workdir)
    catalog.storage_args = list(catalog.storage_args) + ["--storage-root", f"s3://{BUCKET}/{PREFIX}"]
    dep = floe_cluster.start_cluster("deletes", catalog, workdir / "logs")
    try:
        conn = dep.connect()
        try:
            cur = conn.cursor()
            cur.execute("CREATE SCHEMA IF NOT EXISTS spark")
            for table in TABLES:
                cur.execute(f"DROP TABLE IF EXISTS spark.{table}")
                cur.execute(f"CALL system.register_table('spark', '{table}', "
                            f"'{_expected(table)['latest_metadata_uri']}')")
            cur.close()
        finally:
            conn.close()
        yield dep
    finally:
        dep.stop()


@pytest.fixture(scope="module")
def conn(lakehouse):
    c = lakehouse.connect()
    try:
        yield c
    finally:
        c.close()


def _plain(value):
    """Floe's Python values as Spark's EXPECTED.json writes them."""
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


CASES = [(t, q) for t in TABLES for q in _expected(t)["queries"]]


@pytest.mark.parametrize("table,query", CASES, ids=[f"{t}-{q['name']}" for t, q in CASES])
def test_spark_answers(conn, table, query):
    sql = query["sql"].replace("{table}", f"spark.{table}")
    t = fetch(conn, sql)
    assert t.column_names == query["columns"]
    rows = [[_plain(v) for v in row.values()] for row in t.to_pylist()]
    assert rows == query["rows"], sql


@pytest.mark.parametrize("table", TABLES)
def test_explain_names_the_delete_files(conn, table):
    expected = _expected(table)["live_files_current_snapshot"]
    plan = plan_text(fetch(conn, f"EXPLAIN SELECT count(*) FROM spark.{table}"))
    m = re.search(r"files=(\d+)/(\d+)", plan)
    assert m and int(m.group(1)) == expected["data"]["count"], plan
    deletes = re.search(r"deletes=\[([^\]]*)\]", plan)
    assert deletes, plan
    kinds = dict(part.split(":") for part in deletes.group(1).split())
    want = {"position_delete_files": "position", "equality_delete_files": "equality",
            "deletion_vectors": "dv"}
    for key, kind in want.items():
        if key in expected:
            assert int(kinds.get(kind, 0)) == expected[key]["count"], (kind, plan)


def _metadata(table: str) -> dict:
    """The table's latest metadata JSON, read from the fixture folder (not through Floe)."""
    uri = _expected(table)["latest_metadata_uri"]
    return json.loads((FIXTURES / table / uri.split(f"/{table}/", 1)[1]).read_text())


def _utc(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@pytest.mark.parametrize("table", TABLES)
def test_row_count_at_every_snapshot_by_id_and_by_time(conn, table):
    times = {s["snapshot-id"]: s["timestamp-ms"] for s in _metadata(table)["snapshots"]}
    for snap in _expected(table)["snapshots"]:
        sid, want = snap["snapshot_id"], snap["row_count"]
        by_id = fetch(conn, f"SELECT count(*) AS n FROM spark.{table} FOR VERSION AS OF {sid}")
        assert by_id.column(0).to_pylist() == [want], (table, sid)
        at = _utc(times[sid])
        by_time = fetch(conn, f"SELECT count(*) AS n FROM spark.{table} FOR TIMESTAMP AS OF TIMESTAMP '{at}'")
        assert by_time.column(0).to_pylist() == [want], (table, sid, at)
        # Spark's placement, without FOR.
        spark = fetch(conn, f"SELECT count(*) AS n FROM spark.{table} VERSION AS OF {sid}")
        assert spark.column(0).to_pylist() == [want]


def test_time_travel_reads_that_snapshot_schema_and_joins(conn):
    meta = _metadata("orders_pos_deletes")
    first = meta["snapshots"][0]
    schema = next(s for s in meta["schemas"] if s["schema-id"] == first["schema-id"])
    t = fetch(conn, f"SELECT * FROM spark.orders_pos_deletes FOR VERSION AS OF {first['snapshot-id']} LIMIT 1")
    assert t.column_names == [f["name"] for f in schema["fields"]]
    assert "qty" in t.column_names and "channel" not in t.column_names
    now = fetch(conn, "SELECT * FROM spark.orders_pos_deletes LIMIT 1")
    assert "quantity" in now.column_names and "channel" in now.column_names
    # A table joined with itself at one snapshot (order ids are unique in it).
    first_dv = _expected("orders_dv")["snapshots"][0]
    sid = first_dv["snapshot_id"]
    joined = fetch(conn, f"SELECT count(*) AS n FROM spark.orders_dv FOR VERSION AS OF {sid} a "
                         f"JOIN spark.orders_dv FOR VERSION AS OF {sid} b ON a.order_id = b.order_id")
    assert joined.column(0).to_pylist() == [first_dv["row_count"]]
    # The same table now and then, side by side.
    both = fetch(conn, f"SELECT (SELECT count(*) FROM spark.orders_dv) AS now, "
                       f"(SELECT count(*) FROM spark.orders_dv FOR VERSION AS OF {sid}) AS then")
    assert both.to_pylist() == [{"now": _expected("orders_dv")["row_count"], "then": first_dv["row_count"]}]
    # The branch every table has.
    main = fetch(conn, "SELECT count(*) AS n FROM spark.orders_dv FOR VERSION AS OF 'main'")
    assert main.column(0).to_pylist() == [_expected("orders_dv")["row_count"]]


def test_time_travel_to_what_does_not_exist_names_it(conn):
    first_ms = _metadata("orders_dv")["snapshot-log"][0]["timestamp-ms"]
    cases = [
        ("SELECT count(*) FROM spark.orders_dv FOR VERSION AS OF 12345", "has no snapshot 12345"),
        ("SELECT count(*) FROM spark.orders_dv FOR VERSION AS OF 'nope'", "no tag or branch 'nope'"),
        (f"SELECT count(*) FROM spark.orders_dv FOR TIMESTAMP AS OF TIMESTAMP '{_utc(first_ms - 1000)}'",
         "no snapshot at or before"),
    ]
    for sql, message in cases:
        with pytest.raises(Exception) as e:
            fetch(conn, sql)
        text = str(e.value)
        assert message in text and "spark.orders_dv" in text, text
        assert "NOT_FOUND" in text or "NotFound" in text, text
    with pytest.raises(Exception, match="(?i)not a timestamp"):
        fetch(conn, "SELECT count(*) FROM spark.orders_dv FOR TIMESTAMP AS OF 'yesterday'")


def test_registering_from_outside_the_storage_roots_is_refused(conn):
    cur = conn.cursor()
    try:
        with pytest.raises(Exception) as e:
            cur.execute("CALL system.register_table('spark', 'stolen', 'file:///etc/floe/v1.metadata.json')")
        text = str(e.value)
        assert "PERMISSION_DENIED" in text or "Unauthorized" in text or "outside the storage roots" in text, text
        with pytest.raises(Exception, match="(?i)already exists"):
            cur.execute(f"CALL system.register_table('spark', '{TABLES[0]}', "
                        f"'{_expected(TABLES[0])['latest_metadata_uri']}')")
        with pytest.raises(Exception, match="(?i)usage"):
            cur.execute("CALL system.register_table('spark')")
    finally:
        cur.close()


def _objects(seaweed, table: str, suffix: str) -> list[str]:
    s3 = seaweed.s3_client()
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/{table}/data/")
    return sorted(o["Key"] for o in listed.get("Contents", []) if o["Key"].endswith(suffix))


def test_a_missing_delete_file_is_data_loss_naming_it(seaweed, conn):
    """Rows a delete file removes must never come back: without the file, the scan fails."""
    s3 = seaweed.s3_client()
    keys = _objects(seaweed, "orders_pos_deletes", "-deletes.parquet")
    assert keys, "the fixture has position delete files"
    saved = {k: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}
    try:
        for k in keys:
            s3.delete_object(Bucket=BUCKET, Key=k)
        with pytest.raises(Exception) as e:
            fetch(conn, "SELECT count(*) FROM spark.orders_pos_deletes")
        text = str(e.value)
        assert "DATA_LOSS" in text or "DataLoss" in text or "data loss" in text.lower(), text
        assert any(k.rsplit("/", 1)[1] in text for k in keys), text
    finally:
        for k, body in saved.items():
            s3.put_object(Bucket=BUCKET, Key=k, Body=body)
    assert fetch(conn, "SELECT count(*) AS n FROM spark.orders_pos_deletes").column(0).to_pylist() == [3188]


def test_a_missing_equality_delete_file_is_data_loss_naming_it(seaweed, conn):
    s3 = seaweed.s3_client()
    paths = [r["file_path"] for r in fetch(
        conn, 'SELECT file_path FROM spark."users_eq_deletes$files" WHERE content = 2').to_pylist()]
    assert paths, "the fixture has equality delete files"
    keys = [p.split(f"s3://{BUCKET}/", 1)[1] for p in paths]
    saved = {k: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}
    try:
        s3.delete_object(Bucket=BUCKET, Key=keys[0])
        with pytest.raises(Exception) as e:
            fetch(conn, "SELECT count(*) FROM spark.users_eq_deletes")
        text = str(e.value)
        assert "DATA_LOSS" in text or "DataLoss" in text or "data loss" in text.lower(), text
        assert keys[0].rsplit("/", 1)[1] in text and "equality delete" in text, text
    finally:
        for k, body in saved.items():
            s3.put_object(Bucket=BUCKET, Key=k, Body=body)
    assert fetch(conn, "SELECT count(*) AS n FROM spark.users_eq_deletes").column(0).to_pylist() == [1379]


def test_a_corrupt_deletion_vector_is_a_clear_error(seaweed, conn):
    s3 = seaweed.s3_client()
    keys = _objects(seaweed, "orders_dv", ".puffin")
    assert keys, "the fixture has Puffin files"
    saved = {k: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}
    try:
        for k, body in saved.items():
            damaged = bytearray(body)
            damaged[4 + 12] ^= 0xFF  # inside the first blob's bitmap: its CRC no longer matches
            s3.put_object(Bucket=BUCKET, Key=k, Body=bytes(damaged))
        with pytest.raises(Exception) as e:
            fetch(conn, "SELECT count(*) FROM spark.orders_dv")
        text = str(e.value)
        assert "deletion vector" in text and "corrupt" in text and ".puffin" in text, text
        assert "DATA_LOSS" in text or "DataLoss" in text or "data loss" in text.lower(), text
    finally:
        for k, body in saved.items():
            s3.put_object(Bucket=BUCKET, Key=k, Body=body)
    assert fetch(conn, "SELECT count(*) AS n FROM spark.orders_dv").column(0).to_pylist() == [2216]


# ------------------------------------------------------------------ metadata tables


@pytest.fixture(scope="module")
def pyiceberg_tables(seaweed, workdir, lakehouse):
    import catalogs

    catalog = catalogs.sql_catalog(seaweed, workdir)
    return {t: catalog.load_table(f"spark.{t}") for t in TABLES}


def _ms(value) -> int:
    """A timestamp (datetime from Floe, or epoch ms from pyiceberg) as epoch milliseconds."""
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    return int(value)


@pytest.mark.parametrize("table", TABLES)
def test_snapshots_and_history_match_pyiceberg(conn, pyiceberg_tables, table):
    inspect = pyiceberg_tables[table].inspect
    theirs = sorted(inspect.snapshots().to_pylist(), key=lambda r: _ms(r["committed_at"]))
    ours = fetch(conn, f'SELECT * FROM spark."{table}$snapshots" ORDER BY committed_at').to_pylist()
    assert [r["snapshot_id"] for r in ours] == [r["snapshot_id"] for r in theirs]
    assert [r["parent_id"] for r in ours] == [r["parent_id"] for r in theirs]
    assert [r["operation"] for r in ours] == [r["operation"] for r in theirs]
    assert [r["manifest_list"] for r in ours] == [r["manifest_list"] for r in theirs]
    assert [_ms(r["committed_at"]) for r in ours] == [_ms(r["committed_at"]) for r in theirs]
    for a, b in zip(ours, theirs):
        assert dict(a["summary"]) == dict(b["summary"]), a["snapshot_id"]
    # The row counts the summaries give agree with time travel.
    for snap in _expected(table)["snapshots"]:
        summary = dict(next(r for r in ours if r["snapshot_id"] == snap["snapshot_id"])["summary"])
        live = int(summary["total-records"]) - int(summary.get("total-position-deletes", 0)) \
            - int(summary.get("total-equality-deletes", 0))
        if "total-equality-deletes" not in summary or int(summary["total-equality-deletes"]) == 0:
            assert live == snap["row_count"], snap
    history_theirs = inspect.history().to_pylist()
    history_ours = fetch(conn, f'SELECT * FROM spark."{table}$history"').to_pylist()
    assert [(r["snapshot_id"], r["parent_id"], r["is_current_ancestor"], _ms(r["made_current_at"]))
            for r in history_ours] == \
        [(r["snapshot_id"], r["parent_id"], r["is_current_ancestor"], _ms(r["made_current_at"]))
         for r in history_theirs]


@pytest.mark.parametrize("table", TABLES)
def test_manifests_refs_and_properties_match_pyiceberg(conn, pyiceberg_tables, table):
    inspect = pyiceberg_tables[table].inspect
    theirs = {r["path"]: r for r in inspect.manifests().to_pylist()}
    ours = {r["path"]: r for r in fetch(conn, f'SELECT * FROM spark."{table}$manifests"').to_pylist()}
    assert set(ours) == set(theirs)
    for path, mine in ours.items():
        other = theirs[path]
        assert mine["length"] == other["length"]
        assert mine["partition_spec_id"] == other["partition_spec_id"]
        assert mine["added_snapshot_id"] == other["added_snapshot_id"]
        if other["content"] == 0:
            assert (mine["added_data_files_count"], mine["existing_data_files_count"],
                    mine["deleted_data_files_count"]) == \
                (other["added_data_files_count"], other["existing_data_files_count"],
                 other["deleted_data_files_count"])
        else:
            assert (mine["added_delete_files_count"], mine["existing_delete_files_count"],
                    mine["deleted_delete_files_count"]) == \
                (other["added_delete_files_count"], other["existing_delete_files_count"],
                 other["deleted_delete_files_count"])
    refs_theirs = sorted((r["name"], r["type"].upper(), r["snapshot_id"]) for r in inspect.refs().to_pylist())
    refs_ours = sorted((r["name"], r["type"], r["snapshot_id"])
                       for r in fetch(conn, f'SELECT * FROM spark."{table}$refs"').to_pylist())
    assert refs_ours == refs_theirs
    props = {r["key"]: r["value"] for r in fetch(conn, f'SELECT * FROM spark."{table}$properties"').to_pylist()}
    assert props == dict(pyiceberg_tables[table].properties)


def test_metadata_tables_join_and_filter_like_tables(conn):
    """Each snapshot's row count by time travel, joined to $snapshots: a metadata table in a
    join, a filter and an aggregate."""
    t = fetch(conn, 'SELECT count(*) AS n, min(committed_at) AS first FROM spark."orders_dv$snapshots" s '
                    'JOIN spark."orders_dv$history" h ON s.snapshot_id = h.snapshot_id '
                    "WHERE h.is_current_ancestor AND s.operation <> 'append'")
    snaps = _expected("orders_dv")["snapshots"]
    assert t.column(0).to_pylist() == [sum(1 for s in snaps if s["operation"] != "append")]
    with pytest.raises(Exception, match="(?i)no metadata table \\$nope"):
        fetch(conn, 'SELECT * FROM spark."orders_dv$nope"')


@pytest.mark.parametrize("table", TABLES)
def test_files_and_partitions_match_pyiceberg(conn, pyiceberg_tables, table):
    inspect = pyiceberg_tables[table].inspect
    their_rows = inspect.files().to_pylist()
    our_rows = fetch(conn, f'SELECT * FROM spark."{table}$files"').to_pylist()
    # A Puffin file holds many deletion vectors: one row each, under one path.
    assert sorted(r["file_path"] for r in our_rows) == sorted(r["file_path"] for r in their_rows)
    assert sorted(r["record_count"] for r in our_rows) == sorted(r["record_count"] for r in their_rows)
    theirs = {r["file_path"]: r for r in their_rows if r["content"] == 0}
    ours = {r["file_path"]: r for r in our_rows if r["content"] == 0}
    for path, mine in ours.items():
        other = theirs[path]
        for column in ("content", "record_count", "file_size_in_bytes", "spec_id", "sort_order_id"):
            assert mine[column] == other[column], (path, column)
        assert mine["file_format"] == other["file_format"].upper(), path
        for column in ("column_sizes", "value_counts", "null_value_counts", "nan_value_counts"):
            assert dict(mine[column] or []) == dict(other[column] or []), (path, column)
        assert (mine["equality_ids"] or None) == (other["equality_ids"] or None), path
        assert {k: _plain(v) for k, v in (mine["partition"] or {}).items()} == \
            {k: _plain(v) for k, v in (other["partition"] or {}).items()}, path
    # Live files per kind, as the fixture's EXPECTED.json counts them.
    live = _expected(table)["live_files_current_snapshot"]
    by_content = {}
    for r in our_rows:
        by_content.setdefault(r["content"], []).append(r)
    assert len(by_content.get(0, [])) == live["data"]["count"]
    assert sum(r["record_count"] for r in by_content.get(0, [])) == live["data"]["records"]
    deletes = by_content.get(1, []) + by_content.get(2, [])
    kind = next(k for k in live if k != "data")
    assert len(deletes) == live[kind]["count"], kind
    assert sum(r["record_count"] for r in deletes) == live[kind]["records"], kind
    # Each deletion vector references a live data file, each its own.
    vectors = [r for r in our_rows if r["file_format"] == "PUFFIN"]
    assert len({r["referenced_data_file"] for r in vectors}) == len(vectors)
    assert all(r["referenced_data_file"] in ours and r["content_size_in_bytes"] > 0 for r in vectors)
    # $partitions: the data files grouped by partition.
    parts = fetch(conn, f'SELECT * FROM spark."{table}$partitions"').to_pylist()
    assert sum(p["file_count"] for p in parts) == live["data"]["count"]
    assert sum(p["record_count"] for p in parts) == live["data"]["records"]
    theirs_parts = {json.dumps({k: _plain(v) for k, v in (p.get("partition") or {}).items()}, sort_keys=True): p
                    for p in inspect.partitions().to_pylist()}
    for p in parts:
        key = json.dumps({k: _plain(v) for k, v in (p["partition"] or {}).items()}, sort_keys=True)
        assert key in theirs_parts, (key, list(theirs_parts))
        assert p["file_count"] == theirs_parts[key]["file_count"], key
        assert p["record_count"] == theirs_parts[key]["record_count"], key


@pytest.mark.parametrize("table", TABLES)
def test_explain_analyze_counts_the_rows_deletes_remove(conn, table):
    """Position deletes, equality deletes and deletion vectors: the rows they remove are the
    live data files' rows less Spark's row count."""
    expected = _expected(table)
    plan = plan_text(fetch(conn, f"EXPLAIN ANALYZE SELECT count(*) FROM spark.{table}"))
    removed = sum(int(n) for n in re.findall(r"rows_deleted=(\d+)", plan))
    live = expected["live_files_current_snapshot"]["data"]["records"]
    assert removed == live - int(expected["row_count"]), plan
    assert removed > 0


def test_get_tables_lists_metadata_tables_to_a_pattern_that_names_them(conn):
    """A driver looking `orders_dv$files` up by name (GetTables through ADBC's GetObjects)
    finds it with the columns a query returns; a plain listing holds the tables only."""
    def tables(**kw):
        found = {}
        for cat in conn.adbc_get_objects(depth="columns", db_schema_filter="spark", **kw).read_all().to_pylist():
            for schema in cat["catalog_db_schemas"] or []:
                for t in schema["db_schema_tables"] or []:
                    found[t["table_name"]] = [c["column_name"] for c in t["table_columns"] or []]
        return found

    plain = tables()
    assert set(TABLES) <= set(plain) and not any("$" in name for name in plain), plain
    files = tables(table_name_filter="orders_dv$files")
    queried = fetch(conn, 'SELECT * FROM spark."orders_dv$files" LIMIT 0').column_names
    assert files == {"orders_dv$files": queried}, files
    kinds = tables(table_name_filter="users_eq_deletes$%")
    assert set(kinds) == {f"users_eq_deletes${k}" for k in
                          ("snapshots", "history", "manifests", "files", "partitions", "refs", "properties")}


# ------------------------------------------------------------------ equality deletes and NULL


def test_equality_deletes_match_null_keys_as_the_spec_says(seaweed, workdir, conn):
    """An equality delete matches NULL to NULL and nothing else: a delete of name = 'a' keeps
    every row whose name is NULL (iceberg 0.10.1's reader dropped them), a delete of id NULL
    removes exactly the rows whose id is NULL, and rows appended after a delete survive it."""
    import catalogs
    from eq_deletes import add_equality_deletes
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField, StringType

    cat = catalogs.sql_catalog(seaweed, workdir)
    cat.create_namespace_if_not_exists("eqnull")
    if cat.table_exists("eqnull.t"):
        cat.drop_table("eqnull.t")
    schema = Schema(NestedField(1, "id", LongType(), required=False),
                    NestedField(2, "name", StringType(), required=False),
                    NestedField(3, "v", LongType(), required=False))
    t = cat.create_table("eqnull.t", schema, properties={"format-version": "2"})
    arrow = pa.schema([("id", pa.int64()), ("name", pa.string()), ("v", pa.int64())])
    t.append(pa.Table.from_pylist([
        {"id": 1, "name": "a", "v": 10}, {"id": 2, "name": "b", "v": 20}, {"id": None, "name": "c", "v": 30},
        {"id": 3, "name": None, "v": 40}, {"id": None, "name": None, "v": 50}, {"id": 4, "name": "d", "v": 60},
    ], schema=arrow))
    by_name = add_equality_deletes(cat.load_table("eqnull.t"), pa.table({"name": pa.array(["a"], pa.string())}))
    add_equality_deletes(cat.load_table("eqnull.t"), pa.table({"id": pa.array([2, None], pa.int64())}))
    cat.load_table("eqnull.t").append(pa.Table.from_pylist(
        [{"id": None, "name": "e", "v": 70}, {"id": 2, "name": "b", "v": 80}], schema=arrow))

    def values(sql):
        return sorted(r["v"] for r in fetch(conn, sql).to_pylist())

    assert values(f"SELECT v FROM eqnull.t FOR VERSION AS OF {by_name}") == [20, 30, 40, 50, 60]
    assert values("SELECT v FROM eqnull.t") == [40, 60, 70, 80]
    assert values("SELECT v FROM eqnull.t WHERE name IS NULL") == [40]
    assert fetch(conn, "SELECT count(*) AS n FROM eqnull.t").column(0).to_pylist() == [4]
    plan = plan_text(fetch(conn, "EXPLAIN ANALYZE SELECT count(*) FROM eqnull.t"))
    assert sum(int(n) for n in re.findall(r"rows_deleted=(\d+)", plan)) == 4, plan
