"""Writes: DDL, CREATE TABLE … AS SELECT, INSERT INTO, through Flight SQL
against a coordinator + 2 executor processes on SeaweedFS, once with the
SQLite SQL catalog and once with SeaweedFS's Iceberg REST catalog.

Every result is checked independently: pyiceberg (pinned) loads the tables
Floe wrote from the same catalog and reads them itself; file statistics are
checked against the data; partition specs, schemas and snapshot histories
are read from the catalog by pyiceberg.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from decimal import Decimal

import pyarrow.compute as pc
import pytest
from adbc_driver_manager import Error
from pyiceberg.expressions import EqualTo
from pyiceberg.transforms import BucketTransform, DayTransform, IdentityTransform, TruncateTransform

from compare import execute_update, fetch, plan_text, rows, scalar

NS = "wt"


class Writes:
    def __init__(self, kind, dep, data, conn):
        self.kind, self.dep, self.data, self.conn = kind, dep, data, conn

    @property
    def catalog(self):
        return self.data.catalog

    def load(self, name: str):
        return self.catalog.load_table(f"{NS}.{name}")


@pytest.fixture(scope="module", params=["sql", "rest"])
def w(request):
    dep = request.getfixturevalue(f"cluster_{request.param}")
    data = request.getfixturevalue(f"{request.param}_data")
    conn = dep.connect()
    fetch(conn, f"DROP SCHEMA IF EXISTS {NS} CASCADE")
    fetch(conn, f"CREATE SCHEMA {NS}")
    try:
        yield Writes(request.param, dep, data, conn)
    finally:
        try:
            fetch(conn, f"DROP SCHEMA IF EXISTS {NS} CASCADE")
        finally:
            conn.close()


def error_of(conn, sql: str) -> str:
    with pytest.raises(Error) as info:
        fetch(conn, sql)
    return str(info.value)


def test_create_table_with_hidden_partitioning_is_seen_by_pyiceberg(w):
    fetch(w.conn, f"""
        CREATE TABLE {NS}.spec_demo (ts TIMESTAMP, user_id BIGINT, city VARCHAR, amount DECIMAL(12, 2))
        PARTITIONED BY (day(ts), bucket(16, user_id), truncate(4, city), city)
        WITH ('write.target-file-size-bytes' = '1048576', 'owner' = 'dwd-team')""")
    t = w.load("spec_demo")
    names = [f.name for f in t.schema().fields]
    assert names == ["ts", "user_id", "city", "amount"]
    assert str(t.schema().find_field("amount").field_type) == "decimal(12, 2)"
    by_source = {t.schema().find_column_name(f.source_id): f.transform for f in t.spec().fields}
    assert isinstance(by_source["ts"], DayTransform)
    assert by_source["user_id"] == BucketTransform(16)
    assert len(t.spec().fields) == 4
    transforms = [f.transform for f in t.spec().fields]
    assert TruncateTransform(4) in transforms and IdentityTransform() in transforms
    assert t.properties.get("owner") == "dwd-team"
    assert t.properties.get("write.target-file-size-bytes") == "1048576"

    assert "already exists" in error_of(w.conn, f"CREATE TABLE {NS}.spec_demo (a INT)")
    fetch(w.conn, f"CREATE TABLE IF NOT EXISTS {NS}.spec_demo (a INT)")  # no-op
    assert [f.name for f in w.load("spec_demo").schema().fields] == names


SOURCE_COLUMNS = "event_id, user_id, city, ts, amount, event_date"


def test_ctas_into_partitioned_table_is_read_back_exactly_by_pyiceberg(w):
    n = fetch(w.conn, f"""
        CREATE TABLE {NS}.events_by_day PARTITIONED BY (day(ts), city)
        AS SELECT {SOURCE_COLUMNS} FROM demo.events""")
    source = w.data.arrow("events").select([c.strip() for c in SOURCE_COLUMNS.split(",")])
    assert n.column("count").to_pylist() == [source.num_rows]

    t = w.load("events_by_day")
    assert len(t.snapshots()) == 1
    assert t.current_snapshot().summary.operation.value == "append"
    got = t.scan().to_arrow()
    assert got.num_rows == source.num_rows
    key = lambda tbl: sorted(rows(tbl.select(source.column_names)), key=lambda r: r[0])  # noqa: E731
    assert key(got) == key(source)
    # ... and Floe reads back the same.
    floe = fetch(w.conn, f"SELECT {SOURCE_COLUMNS} FROM {NS}.events_by_day")
    assert key(floe) == key(source)


def test_ctas_file_statistics_are_present_and_right(w):
    t = w.load("events_by_day")
    files = t.inspect.files().to_pylist()
    source = w.data.arrow("events")
    assert sum(f["record_count"] for f in files) == source.num_rows
    assert len(files) >= 10  # one or more per (day, city) partition
    event_id_field = t.schema().find_field("event_id").field_id
    amount_field = t.schema().find_field("amount").field_id
    lows, highs = [], []
    null_amounts = 0
    for f in files:
        for k in ("value_counts", "column_sizes", "null_value_counts"):
            f[k] = dict(f[k] or [])  # Arrow maps come back as (key, value) lists
        assert f["file_format"] == "PARQUET" and f["file_size_in_bytes"] > 0
        assert f["value_counts"][event_id_field] == f["record_count"], f
        assert f["column_sizes"][event_id_field] > 0, f
        m = f["readable_metrics"]
        assert m["event_id"]["lower_bound"] <= m["event_id"]["upper_bound"]
        # identity partition column: every row of the file has the partition's city
        assert m["city"]["lower_bound"] == m["city"]["upper_bound"] == f["partition"]["city"], f
        lows.append(m["event_id"]["lower_bound"])
        highs.append(m["event_id"]["upper_bound"])
        null_amounts += f["null_value_counts"].get(amount_field, 0)
    assert min(lows) == pc.min(source["event_id"]).as_py()
    assert max(highs) == pc.max(source["event_id"]).as_py()
    assert null_amounts == source["amount"].null_count


def test_floe_prunes_the_table_it_wrote(w):
    t = w.load("events_by_day")
    expected_files = len(list(t.scan(row_filter=EqualTo("city", "Oslo")).plan_files()))
    total = len(t.inspect.files())
    assert 0 < expected_files < total
    sql = f"SELECT count(*) AS n, sum(amount) AS s FROM {NS}.events_by_day WHERE city = 'Oslo'"
    text = plan_text(fetch(w.conn, f"EXPLAIN {sql}"))
    assert f"files={expected_files}/{total}" in text, text
    src = w.data.arrow("events").filter(pc.equal(w.data.arrow("events")["city"], "Oslo"))
    got = fetch(w.conn, sql).to_pylist()[0]
    assert got["n"] == src.num_rows
    assert Decimal(got["s"]) == pc.sum(src["amount"]).as_py()


def test_insert_appends_one_snapshot_per_statement_and_reports_rows(w):
    fetch(w.conn, f"CREATE TABLE {NS}.log (id BIGINT, note VARCHAR)")
    # the update path (DoPut CommandStatementUpdate) returns the row count
    assert execute_update(w.conn, f"INSERT INTO {NS}.log VALUES (1, 'a'), (2, 'b'), (3, NULL)") == 3
    # the query path returns it as a one-row result
    got = fetch(w.conn, f"INSERT INTO {NS}.log SELECT event_id + 100, city FROM demo.events WHERE event_id < 5")
    want_more = w.data.arrow("events").filter(pc.less(w.data.arrow("events")["event_id"], 5)).num_rows
    assert got.column(0).to_pylist() == [want_more]
    t = w.load("log")
    snaps = sorted(t.snapshots(), key=lambda s: s.sequence_number)
    assert len(snaps) == 2
    assert snaps[1].parent_snapshot_id == snaps[0].snapshot_id
    assert all(s.summary.operation.value == "append" for s in snaps)
    assert t.scan().to_arrow().num_rows == 3 + want_more
    assert sorted(rows(fetch(w.conn, f"SELECT id, note FROM {NS}.log WHERE id <= 3"))) == [
        (1, "a"), (2, "b"), (3, None)]


def test_alter_table_evolves_the_schema_by_field_id(w):
    fetch(w.conn, f"CREATE TABLE {NS}.evolve (id BIGINT, note VARCHAR)")
    fetch(w.conn, f"INSERT INTO {NS}.evolve VALUES (1, 'old')")
    before = w.load("evolve").schema()
    fetch(w.conn, f"ALTER TABLE {NS}.evolve ADD COLUMN device VARCHAR")
    after = w.load("evolve").schema()
    device = after.find_field("device")
    assert device.field_id > before.highest_field_id
    assert after.find_field("id").field_id == before.find_field("id").field_id
    fetch(w.conn, f"INSERT INTO {NS}.evolve VALUES (2, 'new', 'ios')")
    assert sorted(rows(fetch(w.conn, f"SELECT id, note, device FROM {NS}.evolve"))) == [
        (1, "old", None), (2, "new", "ios")]
    fetch(w.conn, f"ALTER TABLE {NS}.evolve DROP COLUMN note")
    t = w.load("evolve")
    assert [f.name for f in t.schema().fields] == ["id", "device"]
    assert sorted(rows(fetch(w.conn, f"SELECT * FROM {NS}.evolve"))) == [(1, None), (2, "ios")]
    assert sorted(rows(t.scan().to_arrow())) == [(1, None), (2, "ios")]
    fetch(w.conn, f"ALTER TABLE {NS}.evolve SET TBLPROPERTIES ('layer' = 'dwd')")
    assert w.load("evolve").properties.get("layer") == "dwd"


def test_a_failing_insert_or_ctas_leaves_everything_as_it_was(w):
    fetch(w.conn, f"CREATE TABLE IF NOT EXISTS {NS}.stable (id BIGINT, city VARCHAR)")
    fetch(w.conn, f"INSERT INTO {NS}.stable VALUES (1, 'x')")
    before = w.load("stable").current_snapshot().snapshot_id
    # the cast fails on the executors, while other tasks may already have written files
    bad = f"SELECT event_id, city FROM demo.events UNION ALL SELECT CAST(city AS BIGINT), city FROM demo.events"
    message = error_of(w.conn, f"INSERT INTO {NS}.stable {bad}")
    assert "cast" in message.lower(), message
    t = w.load("stable")
    assert t.current_snapshot().snapshot_id == before
    assert t.scan().to_arrow().num_rows == 1
    error_of(w.conn, f"CREATE TABLE {NS}.never AS {bad}")
    assert not w.catalog.table_exists(f"{NS}.never")


def test_eight_concurrent_writers_lose_nothing_and_leave_one_chain(w):
    fetch(w.conn, f"CREATE TABLE {NS}.concurrent (client INT, seq INT)")
    clients, statements, per = 8, 3, 5
    errors = []

    def writer(c: int) -> None:
        conn = w.dep.connect()
        try:
            for s in range(statements):
                values = ", ".join(f"({c}, {s * per + i})" for i in range(per))
                assert execute_update(conn, f"INSERT INTO {NS}.concurrent VALUES {values}") == per
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=writer, args=(c,)) for c in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(300)
    assert not errors, errors
    got = sorted(rows(fetch(w.conn, f"SELECT client, seq FROM {NS}.concurrent")))
    assert got == sorted((c, s) for c in range(clients) for s in range(statements * per))
    t = w.load("concurrent")
    snaps = sorted(t.snapshots(), key=lambda s: s.sequence_number)
    assert len(snaps) == clients * statements
    for prev, nxt in zip(snaps, snaps[1:]):
        assert nxt.parent_snapshot_id == prev.snapshot_id, "snapshot history is not a single chain"
    assert sorted(rows(t.scan().to_arrow())) == got


def test_write_statement_errors(w):
    assert "write.data.path" in error_of(
        w.conn, f"CREATE TABLE {NS}.elsewhere (a INT) WITH ('write.data.path' = 'file:///tmp/x')")
    assert "LOCATION" in error_of(w.conn, f"CREATE TABLE {NS}.elsewhere (a INT) LOCATION '/etc'")
    assert not w.catalog.table_exists(f"{NS}.elsewhere")
    assert "CASCADE" in error_of(w.conn, f"DROP SCHEMA {NS}")
    assert f"{NS}.nope" in error_of(w.conn, f"INSERT INTO {NS}.nope VALUES (1)")
    assert "no_such" in error_of(w.conn, f"CREATE TABLE {NS}.p (a INT) PARTITIONED BY (day(no_such))")
    assert "not found" in error_of(w.conn, f"DROP TABLE {NS}.nope")
    fetch(w.conn, f"DROP TABLE IF EXISTS {NS}.nope")


def _partition_rows(conn, table: str) -> list[tuple]:
    return sorted(rows(fetch(conn, f"SELECT dt, k, v FROM {NS}.{table}")))


def test_insert_overwrite_replaces_only_the_partitions_it_touches(w):
    fetch(w.conn, f"CREATE TABLE {NS}.daily (dt DATE, k INT, v VARCHAR) PARTITIONED BY (dt)")
    fetch(w.conn, f"""INSERT INTO {NS}.daily VALUES
        (DATE '2024-01-01', 1, 'a'), (DATE '2024-01-01', 2, 'b'),
        (DATE '2024-01-02', 1, 'c'), (DATE '2024-01-03', 1, 'd')""")
    rebuild = (f"INSERT OVERWRITE {NS}.daily VALUES "
               "(DATE '2024-01-02', 7, 'new'), (DATE '2024-01-02', 8, 'new')")
    # the nightly rebuild of one dt, run twice: exactly one copy of that partition
    assert execute_update(w.conn, rebuild) == 2
    assert execute_update(w.conn, rebuild) == 2
    want = [(dt.date(2024, 1, 1), 1, "a"), (dt.date(2024, 1, 1), 2, "b"),
            (dt.date(2024, 1, 2), 7, "new"), (dt.date(2024, 1, 2), 8, "new"),
            (dt.date(2024, 1, 3), 1, "d")]
    assert _partition_rows(w.conn, "daily") == want
    t = w.load("daily")
    assert sorted(rows(t.scan().to_arrow().select(["dt", "k", "v"]))) == want
    snaps = sorted(t.snapshots(), key=lambda s: s.sequence_number)
    assert [s.summary.operation.value for s in snaps] == ["append", "overwrite", "overwrite"]
    for prev, nxt in zip(snaps, snaps[1:]):
        assert nxt.parent_snapshot_id == prev.snapshot_id
    assert t.current_snapshot().summary["total-records"] == "5"
    assert t.current_snapshot().summary["deleted-data-files"] == "1"
    # an unpartitioned table is replaced whole
    fetch(w.conn, f"CREATE TABLE {NS}.flat (k INT)")
    fetch(w.conn, f"INSERT INTO {NS}.flat VALUES (1), (2), (3)")
    fetch(w.conn, f"INSERT OVERWRITE {NS}.flat SELECT k * 10 FROM {NS}.flat WHERE k > 1")
    assert sorted(rows(fetch(w.conn, f"SELECT k FROM {NS}.flat"))) == [(20,), (30,)]
    assert sorted(rows(w.load("flat").scan().to_arrow())) == [(20,), (30,)]


def test_rename_column_keeps_the_field_id_and_old_files_read_right(w):
    fetch(w.conn, f"CREATE TABLE {NS}.renamed (id BIGINT, city VARCHAR)")
    fetch(w.conn, f"INSERT INTO {NS}.renamed VALUES (1, 'Oslo'), (2, 'Rome')")
    city_id = w.load("renamed").schema().find_field("city").field_id
    fetch(w.conn, f"ALTER TABLE {NS}.renamed RENAME COLUMN city TO town")
    t = w.load("renamed")
    assert [f.name for f in t.schema().fields] == ["id", "town"]
    assert t.schema().find_field("town").field_id == city_id
    assert sorted(rows(fetch(w.conn, f"SELECT id, town FROM {NS}.renamed"))) == [(1, "Oslo"), (2, "Rome")]
    assert sorted(rows(t.scan().to_arrow())) == [(1, "Oslo"), (2, "Rome")]
    assert "city" in error_of(w.conn, f"SELECT city FROM {NS}.renamed")


def test_prepared_insert_with_bound_parameters(w):
    fetch(w.conn, f"CREATE TABLE {NS}.params (id BIGINT, note VARCHAR)")
    cur = w.conn.cursor()
    try:
        # DB-API execute: prepared statement, parameters bound, run through the query path
        cur.execute(f"INSERT INTO {NS}.params VALUES ($1, $2)", parameters=(1, "one"))
        assert cur.fetch_arrow_table().column(0).to_pylist() == [1]
        # executemany: the update path with one row of parameters per statement
        cur.executemany(f"INSERT INTO {NS}.params VALUES ($1, $2)", [(2, "two"), (3, "three")])
    finally:
        cur.close()
    assert sorted(rows(fetch(w.conn, f"SELECT id, note FROM {NS}.params"))) == [
        (1, "one"), (2, "two"), (3, "three")]
    assert sorted(rows(w.load("params").scan().to_arrow())) == [(1, "one"), (2, "two"), (3, "three")]


def test_concurrent_overwrites_of_one_partition_leave_exactly_one_writers_rows(w):
    """Two clients rebuild the same partition at once, several times: each
    statement either commits or fails with ABORTED naming the conflict; the
    partition always ends up holding exactly one statement's rows, and the
    other partitions are untouched."""
    fetch(w.conn, f"CREATE TABLE {NS}.contended (dt DATE, writer INT, k INT) PARTITIONED BY (dt)")
    fetch(w.conn, f"INSERT INTO {NS}.contended VALUES (DATE '2024-01-01', 0, 1), (DATE '2024-01-02', 0, 1)")
    outcomes = []

    def rebuild(writer: int, rounds: int) -> None:
        conn = w.dep.connect()
        try:
            for r in range(rounds):
                values = ", ".join(f"(DATE '2024-01-02', {writer}, {k})" for k in range(writer + 2))
                try:
                    execute_update(conn, f"INSERT OVERWRITE {NS}.contended VALUES {values}")
                    outcomes.append((writer, "ok"))
                except Error as e:
                    outcomes.append((writer, str(e)))
        finally:
            conn.close()

    threads = [threading.Thread(target=rebuild, args=(wr, 4)) for wr in (1, 2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(300)
    failures = [o for o in outcomes if o[1] != "ok"]
    assert all("conflict" in msg.lower() for _, msg in failures), failures
    assert len(outcomes) == 8 and len(failures) < 8, outcomes
    day2 = sorted(rows(fetch(w.conn, f"SELECT writer, k FROM {NS}.contended WHERE dt = DATE '2024-01-02'")))
    writers = {wr for wr, _ in day2}
    assert len(writers) == 1, f"rows of two overwrites mixed: {day2}"
    (wr,) = writers
    assert day2 == [(wr, k) for k in range(wr + 2)], day2
    assert rows(fetch(w.conn, f"SELECT writer, k FROM {NS}.contended WHERE dt = DATE '2024-01-01'")) == [(0, 1)]
    print(f"\noverwrite outcomes: {outcomes}")


def test_writers_roll_files_at_the_target_size(w):
    """write.target-file-size-bytes set on the table: a CTAS of 20,000 rows into
    an unpartitioned table rolls to a new file each time one passes 64 KiB."""
    target = 64 * 1024
    n = fetch(w.conn, f"""
        CREATE TABLE {NS}.rolled WITH ('write.target-file-size-bytes' = '{target}')
        AS SELECT event_id, user_id, city, ts, amount FROM demo.events""")
    assert n.column(0).to_pylist() == [w.data.arrow("events").num_rows]
    t = w.load("rolled")
    assert t.properties.get("write.target-file-size-bytes") == str(target)
    files = t.inspect.files().to_pylist()
    sizes = sorted(f["file_size_in_bytes"] for f in files)
    assert sum(f["record_count"] for f in files) == w.data.arrow("events").num_rows
    tasks = len(t.scan().plan_files())  # == files
    assert tasks == len(files) > 4, f"expected rolled files, got sizes {sizes}"
    # every file but each task's last reached the target before rolling; none is far past it
    assert sizes[-1] < 4 * target, sizes
    assert sum(1 for s in sizes if s >= target * 0.5) >= len(sizes) // 2, sizes


def test_writers_keep_small_dictionaries_and_write_many_distinct_values_plain(w):
    """A column of few distinct values is dictionary-encoded; one of many distinct values
    stops growing its dictionary at 64 KiB and goes on plain (the Parquet writer's default,
    1 MiB, cost a third of a CTAS's time and wrote bigger files). Every value reads back."""
    import pyarrow.parquet as pq

    # Eight rows per event, so that every writer task (up to 16) gets enough rows to
    # pass the dictionary limit whatever the cluster's task count.
    fetch(w.conn, f"""
        CREATE TABLE {NS}.dictionaries AS
        SELECT event_id, CAST(event_id % 5 AS VARCHAR) AS few,
               md5(CAST(event_id AS VARCHAR) || '/' || CAST(copy AS VARCHAR)) AS many
        FROM demo.events
        CROSS JOIN (SELECT 0 AS copy UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3
                    UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6
                    UNION ALL SELECT 7) AS copies""")
    t = w.load("dictionaries")
    checked = 0
    for task in t.scan().plan_files():
        with t.io.new_input(task.file.file_path).open() as f:
            meta = pq.ParquetFile(f).metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            columns = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
            few, many = columns["few"], columns["many"]
            # five values: a dictionary, and the data pages hold only its small indices
            assert few.has_dictionary_page and few.total_uncompressed_size < group.num_rows, few
            if group.num_rows * 32 < 2 * 64 * 1024:
                continue  # too few values to pass the limit
            # 32 distinct bytes per row: at most 64 KiB (plus a page header) in the
            # dictionary, the rest of the values in plain pages after it
            dictionary_bytes = many.data_page_offset - many.dictionary_page_offset
            assert many.has_dictionary_page and 0 < dictionary_bytes <= 65 * 1024, many
            assert many.total_uncompressed_size > group.num_rows * 32, many
            checked += 1
    assert checked > 0
    source = w.data.arrow("events")
    got = fetch(w.conn, f"SELECT count(*) AS n, count(DISTINCT many) AS d, "
                        f"count(DISTINCT few) AS f FROM {NS}.dictionaries").to_pylist()[0]
    assert got == {"n": 8 * source.num_rows, "d": 8 * source.num_rows, "f": 5}


def test_a_statement_runs_when_the_client_executes_it_and_once(w):
    """`cursor.execute("CREATE …")` takes effect without reading the result (DBAPI,
    JDBC and orchestrators expect execute to execute), and a ticket read twice
    hands out the same count without running the statement again."""
    import pyarrow.flight as flight

    from floe_wire import statement_command

    cur = w.conn.cursor()
    try:
        cur.execute(f"CREATE SCHEMA {NS}_exec")           # never fetched
        cur.execute(f"CREATE TABLE {NS}_exec.t AS SELECT 1 AS k UNION ALL SELECT 2")  # never fetched
        cur.execute(f"INSERT INTO {NS}_exec.t VALUES (3)")  # never fetched
    finally:
        cur.close()
    table = w.catalog.load_table(f"{NS}_exec.t")
    assert sorted(table.scan().to_arrow().column("k").to_pylist()) == [1, 2, 3]
    snapshots = len(table.metadata.snapshots)

    client = flight.connect(w.dep.uri)
    try:
        info = client.get_flight_info(flight.FlightDescriptor.for_command(
            statement_command(f"INSERT INTO {NS}_exec.t VALUES (4)")))
        # Ran at GetFlightInfo, before any DoGet.
        table = w.catalog.load_table(f"{NS}_exec.t")
        assert len(table.metadata.snapshots) == snapshots + 1
        first = client.do_get(info.endpoints[0].ticket).read_all()
        second = client.do_get(info.endpoints[0].ticket).read_all()
        assert first.column(0).to_pylist() == second.column(0).to_pylist() == [1]
    finally:
        client.close()
    table = w.catalog.load_table(f"{NS}_exec.t")
    assert len(table.metadata.snapshots) == snapshots + 1, "reading the ticket ran the INSERT again"
    assert sorted(table.scan().to_arrow().column("k").to_pylist()) == [1, 2, 3, 4]
    fetch(w.conn, f"DROP SCHEMA {NS}_exec CASCADE")


def test_time_travel_to_an_expired_snapshot_is_not_found(w):
    """pyiceberg expires the first snapshot: Floe names it as missing, by id and by a time
    at which it was current, and still reads the snapshot that remains."""
    fetch(w.conn, f"CREATE TABLE {NS}.aging (k INT)")
    fetch(w.conn, f"INSERT INTO {NS}.aging VALUES (1)")
    time.sleep(0.05)
    fetch(w.conn, f"INSERT INTO {NS}.aging VALUES (2)")
    t = w.load("aging")
    first, second = sorted(t.snapshots(), key=lambda s: s.sequence_number)
    t.maintenance.expire_snapshots().by_id(first.snapshot_id).commit()
    assert w.load("aging").snapshot_by_id(first.snapshot_id) is None
    message = error_of(w.conn, f"SELECT * FROM {NS}.aging FOR VERSION AS OF {first.snapshot_id}")
    assert str(first.snapshot_id) in message, message
    assert scalar(fetch(w.conn, f"SELECT count(*) FROM {NS}.aging FOR VERSION AS OF {second.snapshot_id}")) == 2
    between = first.timestamp_ms + (second.timestamp_ms - first.timestamp_ms) // 2
    assert first.timestamp_ms < between < second.timestamp_ms
    # the snapshot log may still name the first snapshot (then it is reported as expired) or not
    message = error_of(w.conn, f"SELECT * FROM {NS}.aging FOR TIMESTAMP AS OF {between}")
    assert f"snapshot {first.snapshot_id}" in message or "no snapshot at or before" in message, message


def test_category_strings_are_planned_as_views_and_reach_clients_and_tables_as_strings(w):
    """A string column of a few values repeated (under one compressed byte per value in its
    manifest) is planned as Utf8View, a column of unique text as Utf8. Clients and tables see
    plain strings all the same: query results, a bound parameter, a join with a plain string
    column, GetTables' schema, and tables written from it — partitioned by the column itself,
    by bucket and by truncate, which pyiceberg then prunes by (so the partition values Floe
    computed from the views must be Iceberg's)."""
    import pyarrow as pa
    from pyiceberg.expressions import EqualTo

    cities = ["Berlin", "Lagos", "Lima", "Osaka", "Pune", "Quito", "Riga", "Sofia"]
    n = 30_000
    src = pa.table({
        "id": pa.array(range(n), pa.int64()),
        "city": pa.array([cities[(i * 7) % 8] for i in range(n)], pa.string()),
        "note": pa.array([f"note {i:06d}/{i * 7919 % 100003}" for i in range(n)], pa.string()),
    })
    w.catalog.create_table(f"{NS}.cats", schema=src.schema).append(src)
    per_city = {c: sum(1 for x in src.column("city").to_pylist() if x == c) for c in cities}

    plan = plan_text(fetch(w.conn, f"EXPLAIN SELECT count(*) FROM {NS}.cats WHERE city = 'Lima' AND note <> 'x'"))
    assert 'Utf8View("Lima")' in plan and 'Utf8("x")' in plan, plan

    got = fetch(w.conn, f"SELECT city, count(*) AS n, max(note) AS last FROM {NS}.cats GROUP BY city ORDER BY city")
    assert got.schema.field("city").type == pa.string() and got.schema.field("last").type == pa.string()
    last = {c: max(s for x, s in zip(src.column("city").to_pylist(), src.column("note").to_pylist()) if x == c)
            for c in cities}
    assert rows(got) == [(c, per_city[c], last[c]) for c in cities]

    bound = fetch(w.conn, f"SELECT city, count(*) AS n FROM {NS}.cats WHERE city = $1 GROUP BY city", ["Lima"])
    assert rows(bound) == [("Lima", per_city["Lima"])] and bound.schema.field("city").type == pa.string()

    fetch(w.conn, f"CREATE TABLE {NS}.cat_names (city VARCHAR, country VARCHAR)")
    fetch(w.conn, f"INSERT INTO {NS}.cat_names VALUES ('Lima', 'Peru'), ('Quito', 'Ecuador'), ('Riga', 'Latvia')")
    joined = fetch(w.conn, f"""SELECT n.country, c.city, count(*) AS k FROM {NS}.cats c
        JOIN {NS}.cat_names n ON c.city = n.city GROUP BY n.country, c.city ORDER BY n.country""")
    assert rows(joined) == [("Ecuador", "Quito", per_city["Quito"]), ("Latvia", "Riga", per_city["Riga"]),
                            ("Peru", "Lima", per_city["Lima"])]

    schema = w.conn.adbc_get_table_schema("cats", db_schema_filter=NS)
    assert schema.field("city").type == pa.string(), schema

    fetch(w.conn, f"""CREATE TABLE {NS}.cats_parts PARTITIONED BY (city, bucket(4, city), truncate(2, city))
        AS SELECT id, city, note FROM {NS}.cats""")
    fetch(w.conn, f"INSERT INTO {NS}.cats_parts SELECT id, city, note FROM {NS}.cats WHERE city = 'Lima'")
    t = w.load("cats_parts")
    assert str(t.schema().find_field("city").field_type) == "string"
    back = t.scan().to_arrow()
    assert back.num_rows == n + per_city["Lima"]
    lima = t.scan(row_filter=EqualTo("city", "Lima")).to_arrow()
    assert lima.num_rows == 2 * per_city["Lima"] and set(lima.column("city").to_pylist()) == {"Lima"}
    from pyiceberg.types import StringType

    bucket = BucketTransform(4).transform(StringType())
    files = t.inspect.files().to_pylist()
    assert len({tuple(sorted(f["partition"].items())) for f in files}) == len(cities)
    for f in files:
        p = f["partition"]
        assert p["city_trunc"] == p["city"][:2] and p["city_bucket"] == bucket(p["city"]), p
