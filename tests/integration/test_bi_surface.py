"""The Flight SQL surface BI drivers call (JDBC, ODBC, ADBC), over TLS with a bearer token.

Every answer is checked for truth against what the engine really does: the identifier case
GetSqlInfo reports against a real quoted and unquoted query, the null ordering against a
real ORDER BY, the function lists against the engine's own `information_schema.routines`,
every XDBC type name by casting to it, read-only per caller (`--read-only`, `reader` users).
Table listing applies its patterns before loading any table's metadata (a broken table that
the pattern excludes is never opened). Unsupported commands are UNIMPLEMENTED by name.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest

import floe_cluster
import floe_wire as w
from compare import fetch

PASSWORDS = {"ana": "bi writer pass", "rita": "bi reader pass"}
ROLES = {"ana": "writer", "rita": "reader"}
SQL = "arrow.flight.protocol.sql."


def _passwd(user: str, role: str, password: str) -> str:
    return subprocess.run([str(floe_cluster.floe_bin()), "passwd", "--user", user, "--role", role],
                          input=password + "\n", capture_output=True, text=True, timeout=60,
                          check=True).stdout.strip()


@pytest.fixture(scope="module")
def bi(tmp_path_factory):
    import trustme

    base = tmp_path_factory.mktemp("bi")
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    ca_path, cert, key = base / "ca.pem", base / "cert.pem", base / "key.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    with open(cert, "wb") as f:
        for blob in leaf.cert_chain_pems:
            f.write(blob.bytes())
    leaf.private_key_pem.write_to_path(str(key))
    users = base / "users.txt"
    users.write_text("\n".join(_passwd(u, ROLES[u], p) for u, p in PASSWORDS.items()) + "\n")
    dep = floe_cluster.Deployment("bi", "local", base / "logs", secret="")
    wh = base / "wh"
    dep._start_head([str(floe_cluster.floe_bin()), "standalone", "--warehouse", str(wh), "--port", "0",
                     "--executors", "2", "--tls-cert", str(cert), "--tls-key", str(key),
                     "--users", str(users)])
    dep.coordinator.wait_for(floe_cluster.REGISTERED_RE, count=2, what="FLOE_EXECUTOR_REGISTERED")
    ctx = {"dep": dep, "ca": ca_path.read_text(), "base": base, "wh": wh}
    conn = _adbc(ctx, "ana")
    try:
        cur = conn.cursor()
        cur.execute("CREATE SCHEMA bi")
        cur.execute("CREATE SCHEMA other")
        cur.execute("CREATE TABLE bi.orders AS SELECT * FROM (VALUES "
                    "(1, 10, CAST(12.50 AS DECIMAL(12, 2)), DATE '2026-01-02', 'first'), "
                    "(2, 20, CAST(7.25 AS DECIMAL(12, 2)), DATE '2026-01-03', NULL), "
                    "(3, 10, CAST(1.00 AS DECIMAL(12, 2)), DATE '2026-02-01', 'third')) "
                    "AS v(o_orderkey, o_custkey, o_total, o_date, o_comment)")
        cur.execute("CREATE TABLE bi.order_lines AS SELECT * FROM (VALUES (1, 1), (1, 2), (3, 1)) "
                    "AS v(l_orderkey, l_line)")
        cur.execute("CREATE TABLE other.customers AS SELECT * FROM (VALUES (10, 'x'), (20, 'y')) "
                    "AS v(c_custkey, c_name)")
        cur.execute("CREATE TABLE bi.broken AS SELECT 1 AS x")
        cur.execute('CREATE TABLE bi.MixedCase AS SELECT 1 AS Unquoted, 2 AS "Quoted"')
        cur.close()
    finally:
        conn.close()
    # Break one table: its metadata files are gone, so loading it fails.
    for meta in (wh / "bi" / "broken" / "metadata").glob("*.metadata.json"):
        meta.unlink()
    try:
        yield ctx
    finally:
        dep.stop()


def _adbc(ctx, user: str, **db):
    import adbc_driver_flightsql

    return floe_cluster.connect(
        f"grpc+tls://localhost:{ctx['dep'].flight_port}",
        db_kwargs={"username": user, "password": PASSWORDS[user],
                   adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value: ctx["ca"], **db})


@pytest.fixture(scope="module")
def conn(bi):
    c = _adbc(bi, "ana")
    try:
        yield c
    finally:
        c.close()


class Raw:
    """pyarrow.flight over TLS, signed in by hand (Basic → Bearer)."""

    def __init__(self, ctx, user: str = "ana"):
        self.client = flight.connect(f"grpc+tls://localhost:{ctx['dep'].flight_port}",
                                     tls_root_certs=ctx["ca"].encode())
        header = self.client.authenticate_basic_token(user.encode(), PASSWORDS[user].encode())
        self.options = flight.FlightCallOptions(headers=[header], timeout=60)

    def info(self, command: bytes) -> flight.FlightInfo:
        return self.client.get_flight_info(flight.FlightDescriptor.for_command(command), self.options)

    def get(self, command: bytes) -> pa.Table:
        info = self.info(command)
        assert len(info.endpoints) == 1
        # Empty location: the client reads the result on the connection it already has.
        assert info.endpoints[0].locations == []
        table = self.client.do_get(info.endpoints[0].ticket, self.options).read_all()
        assert table.schema.equals(info.schema), (table.schema, info.schema)
        return table

    def action(self, kind: str, body: bytes = b"") -> list:
        return list(self.client.do_action(flight.Action(kind, body), self.options))

    def close(self):
        self.client.close()


@pytest.fixture(scope="module")
def raw(bi):
    r = Raw(bi)
    try:
        yield r
    finally:
        r.close()


def sql_info(raw: Raw, ids: list[int]) -> dict[int, object]:
    cmd = w._any(SQL + "CommandGetSqlInfo", b"".join(w.pb_uint(1, i) for i in ids))
    t = raw.get(cmd)
    return dict(zip(t.column("info_name").to_pylist(), t.column("value").to_pylist()))


# The ids the Flight SQL JDBC driver's DatabaseMetaData reads, all of them.
JDBC_IDS = list(range(0, 12)) + [100, 101] + list(range(500, 577))


def _cargo_lock_version(package: str) -> str:
    lock = (Path(__file__).resolve().parents[2] / "Cargo.lock").read_text()
    m = re.search(r'\[\[package\]\]\nname = "' + package + r'"\nversion = "([^"]+)"', lock)
    assert m, package
    return m.group(1)


def test_every_sql_info_a_jdbc_driver_reads_is_there_and_true(bi, raw, conn):
    info = sql_info(raw, JDBC_IDS)
    missing = [i for i in JDBC_IDS if i not in info]
    assert missing == []
    assert info[0] == "Floe"
    cargo_toml = (Path(__file__).resolve().parents[2] / "Cargo.toml").read_text()
    assert info[1] == re.search(r'^version = "([^"]+)"', cargo_toml, re.M).group(1)
    assert info[2] == _cargo_lock_version("arrow")
    assert info[3] is False  # a writer on a writable coordinator
    assert info[4] is True and info[5] is False  # SQL, no Substrait
    assert info[8] == 0  # transactions: none
    assert info[9] is True  # cancel
    assert info[563] is False  # SQL_TRANSACTIONS_SUPPORTED
    assert info[573] is False  # savepoints
    assert info[557] == 16 << 20  # max statement length: the planner's bound
    for limit in (541, 542, 543, 544, 546, 547, 548, 559, 560):
        assert info[limit] == 0, limit  # 0: no limit
    assert info[504] == '"'

    # Identifier case, checked against what the parser does: unquoted names are folded to
    # lower case (503 = LOWERCASE), quoted ones kept as written (505 = mixed case).
    assert info[503] == 3
    assert info[505] == 1
    t = fetch(conn, 'SELECT unquoted, "Quoted" FROM bi.mixedcase')
    assert t.column_names == ["unquoted", "Quoted"]
    t = fetch(conn, 'SELECT 1 AS Folded, 2 AS "Kept"')
    assert t.column_names == ["folded", "Kept"]

    # Null ordering against a real sort: NULL sorts as the largest value (0 = SORTED_HIGH).
    assert info[507] == 0
    asc = fetch(conn, "SELECT x FROM (VALUES (2), (NULL), (1)) AS v(x) ORDER BY x").column(0).to_pylist()
    desc = fetch(conn, "SELECT x FROM (VALUES (2), (NULL), (1)) AS v(x) ORDER BY x DESC").column(0).to_pylist()
    assert asc == [1, 2, None] and desc == [None, 2, 1]

    # Keywords from the parser; every function listed is one the engine has.
    assert {"SELECT", "FROM", "QUALIFY", "LATERAL"} <= set(info[508])
    routines = set(n.upper() for n in fetch(
        conn, "SELECT DISTINCT routine_name FROM information_schema.routines").column(0).to_pylist())
    for code, sample in ((509, "ABS"), (510, "UPPER"), (511, "COALESCE"), (512, "DATE_TRUNC")):
        assert sample in info[code], (code, sample)
        unknown = set(info[code]) - routines
        assert unknown == set(), (code, unknown)

    # Supported-feature bitmasks, checked by running the feature.
    assert info[522] & 0b11 == 0b11  # GROUP BY unrelated / beyond select
    fetch(conn, "SELECT o_custkey FROM bi.orders GROUP BY o_custkey, o_date")
    assert info[528] == 2  # full outer joins
    fetch(conn, "SELECT * FROM bi.orders o FULL OUTER JOIN other.customers c ON o.o_custkey = c.c_custkey")
    assert info[538] & 0b111 == 0b111  # subqueries in comparisons, EXISTS, IN
    t = fetch(conn, "SELECT count(*) AS n FROM bi.orders o WHERE o_total > (SELECT min(o_total) FROM bi.orders) "
                    "AND EXISTS (SELECT 1 FROM bi.order_lines l WHERE l.l_orderkey = o.o_orderkey) "
                    "AND o_custkey IN (SELECT c_custkey FROM other.customers)")
    assert t.column(0).to_pylist() == [1]
    assert info[540] == 0b11  # UNION and UNION ALL
    assert fetch(conn, "SELECT 1 AS x UNION SELECT 1 UNION ALL SELECT 1").num_rows == 2


def test_read_only_is_told_per_caller(bi, tmp_path):
    rita = Raw(bi, "rita")
    try:
        info = sql_info(rita, [3, 501, 502])
        assert info == {3: True, 501: False, 502: False}
    finally:
        rita.close()
    # A --read-only coordinator tells everyone, and refuses writes.
    dep = floe_cluster.Deployment("bi-ro", "local", tmp_path / "logs", secret="")
    dep._start_head([str(floe_cluster.floe_bin()), "standalone", "--warehouse", str(bi["wh"]), "--port", "0",
                     "--executors", "1", "--read-only"])
    dep.coordinator.wait_for(floe_cluster.REGISTERED_RE, count=1, what="FLOE_EXECUTOR_REGISTERED")
    try:
        client = flight.connect(dep.uri)
        try:
            cmd = w._any(SQL + "CommandGetSqlInfo", w.pb_uint(1, 3))
            info = client.get_flight_info(flight.FlightDescriptor.for_command(cmd),
                                          flight.FlightCallOptions(timeout=30))
            t = client.do_get(info.endpoints[0].ticket, flight.FlightCallOptions(timeout=30)).read_all()
            assert t.column("value").to_pylist() == [True]
        finally:
            client.close()
    finally:
        dep.stop()


def test_statement_results_are_read_on_the_same_connection(raw):
    """A statement's endpoint has no location (the client reads on the connection it has),
    never an executor's internal address."""
    t = raw.get(w.statement_command("SELECT o_custkey, count(*) AS n FROM bi.orders GROUP BY o_custkey "
                                    "ORDER BY o_custkey"))
    assert t.to_pylist() == [{"o_custkey": 10, "n": 2}, {"o_custkey": 20, "n": 1}]


def test_adbc_get_info_over_tls(conn):
    info = conn.adbc_get_info()
    assert info["vendor_name"] == "Floe"
    assert info["vendor_arrow_version"] == _cargo_lock_version("arrow")
    cargo_toml = (Path(__file__).resolve().parents[2] / "Cargo.toml").read_text()
    assert info["vendor_version"] == re.search(r'^version = "([^"]+)"', cargo_toml, re.M).group(1)


# name in the type table → (a CAST target, the Arrow type a result of that type carries)
XDBC_CASTS = {
    "BOOLEAN": ("BOOLEAN", pa.bool_()),
    "TINYINT": ("TINYINT", pa.int8()),
    "SMALLINT": ("SMALLINT", pa.int16()),
    "INTEGER": ("INTEGER", pa.int32()),
    "BIGINT": ("BIGINT", pa.int64()),
    "REAL": ("REAL", pa.float32()),
    "DOUBLE": ("DOUBLE", pa.float64()),
    "DECIMAL": ("DECIMAL(12, 2)", pa.decimal128(12, 2)),
    "VARCHAR": ("VARCHAR", None),
    "BYTEA": ("BYTEA", pa.binary()),
    "DATE": ("DATE", pa.date32()),
    "TIME": ("TIME", None),
    "TIMESTAMP": ("TIMESTAMP", None),
    "TIMESTAMP WITH TIME ZONE": ("TIMESTAMP WITH TIME ZONE", None),
}


def test_xdbc_type_info_names_types_the_engine_casts_to(raw, conn):
    t = raw.get(w._any(SQL + "CommandGetXdbcTypeInfo", b""))
    rows = t.to_pylist()
    names = [r["type_name"] for r in rows]
    assert sorted(names) == sorted(XDBC_CASTS)
    for row in rows:
        target, arrow_type = XDBC_CASTS[row["type_name"]]
        result = fetch(conn, f"SELECT CAST(NULL AS {target}) AS v")
        if arrow_type is not None:
            assert result.schema.field("v").type == arrow_type, row["type_name"]
        assert row["nullable"] == 1
    by_name = {r["type_name"]: r for r in rows}
    assert by_name["BIGINT"]["data_type"] == -5 and by_name["VARCHAR"]["data_type"] == 12
    assert by_name["DATE"]["data_type"] == 91 and by_name["TIMESTAMP"]["data_type"] == 93
    # Filtered by type: only BIGINT.
    one = raw.get(w._any(SQL + "CommandGetXdbcTypeInfo", w.pb_uint(1, (-5) & 0xFFFFFFFFFFFFFFFF)))
    assert one.column("type_name").to_pylist() == ["BIGINT"]


KEY_COMMANDS = {
    "CommandGetPrimaryKeys": (w.pb_bytes(2, "bi") + w.pb_bytes(3, "orders"),
                              ["catalog_name", "db_schema_name", "table_name", "column_name", "key_name",
                               "key_sequence"]),
    "CommandGetExportedKeys": (w.pb_bytes(2, "bi") + w.pb_bytes(3, "orders"), None),
    "CommandGetImportedKeys": (w.pb_bytes(2, "bi") + w.pb_bytes(3, "orders"), None),
    "CommandGetCrossReference": (w.pb_bytes(2, "bi") + w.pb_bytes(3, "orders") + w.pb_bytes(5, "bi")
                                 + w.pb_bytes(6, "order_lines"), None),
}
FOREIGN_KEY_COLUMNS = ["pk_catalog_name", "pk_db_schema_name", "pk_table_name", "pk_column_name",
                       "fk_catalog_name", "fk_db_schema_name", "fk_table_name", "fk_column_name",
                       "key_sequence", "fk_key_name", "pk_key_name", "update_rule", "delete_rule"]


@pytest.mark.parametrize("command", sorted(KEY_COMMANDS))
def test_key_calls_answer_no_rows_with_the_spec_schema(raw, command):
    body, columns = KEY_COMMANDS[command]
    t = raw.get(w._any(SQL + command, body))
    assert t.num_rows == 0
    assert t.column_names == (columns or FOREIGN_KEY_COLUMNS)
    if columns is None:
        assert t.schema.field("update_rule").type == pa.uint8()
        assert not t.schema.field("fk_table_name").nullable


def test_get_objects_at_every_depth_with_patterns(bi, conn):
    def objects(**kw):
        return conn.adbc_get_objects(**kw).read_all().to_pylist()

    catalogs = objects(depth="catalogs")
    assert [c["catalog_name"] for c in catalogs] == ["floe"]
    schemas = objects(depth="db_schemas", db_schema_filter="b_")
    assert [s["db_schema_name"] for s in schemas[0]["catalog_db_schemas"]] == ["bi"]
    tables = objects(depth="tables", db_schema_filter="%", table_name_filter="ord%")
    names = sorted((s["db_schema_name"], t["table_name"]) for c in tables
                   for s in c["catalog_db_schemas"] for t in (s["db_schema_tables"] or []))
    assert names == [("bi", "order_lines"), ("bi", "orders")]
    one = objects(depth="all", db_schema_filter="bi", table_name_filter="orders",
                  column_name_filter="o_%")
    cols = [col["column_name"] for c in one for s in c["catalog_db_schemas"]
            for t in s["db_schema_tables"] for col in t["table_columns"]]
    assert cols == ["o_orderkey", "o_custkey", "o_total", "o_date", "o_comment"]
    # `_` matches exactly one character.
    def listed(pattern):
        return sorted(t["table_name"] for c in objects(depth="tables", table_name_filter=pattern)
                      for s in c["catalog_db_schemas"] for t in (s["db_schema_tables"] or []))
    assert listed("order_") == ["orders"]
    assert listed("order_line") == []
    assert listed("order_line_") == ["order_lines"]


def test_table_patterns_apply_before_any_table_is_loaded(bi, conn):
    """bi.broken has no metadata: a listing whose pattern excludes it never opens it; a
    listing that includes it leaves it out with a warning and still lists the others."""
    log = bi["dep"].coordinator.stderr_path

    def broken_warnings() -> int:
        return len(re.findall(r"GetTables: cannot load.*broken", log.read_text(errors="replace")))

    before = broken_warnings()
    t = conn.adbc_get_table_schema("orders", db_schema_filter="bi")
    assert t.names == ["o_orderkey", "o_custkey", "o_total", "o_date", "o_comment"]
    conn.adbc_get_objects(depth="all", db_schema_filter="bi", table_name_filter="orders").read_all()
    assert broken_warnings() == before
    everything = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    listed = {t["table_name"] for c in everything for s in c["catalog_db_schemas"]
              for t in s["db_schema_tables"]}
    assert "broken" not in listed and {"orders", "order_lines", "customers"} <= listed
    deadline = time.monotonic() + 10
    while broken_warnings() == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert broken_warnings() == before + 1


def test_get_table_schema_and_table_types(conn):
    schema = conn.adbc_get_table_schema("customers", db_schema_filter="other")
    assert schema.field("c_custkey").type == pa.int64()
    assert schema.field("c_name").type in (pa.string(), pa.large_string(), pa.string_view())
    assert conn.adbc_get_table_types() == ["TABLE"]


def test_prepared_statement_parameter_types_and_null_parameters(conn):
    cur = conn.cursor()
    try:
        params = cur.adbc_prepare("SELECT o_comment FROM bi.orders WHERE o_orderkey = ? AND o_date >= ?")
        assert params is not None
        assert [f.type for f in params] == [pa.int64(), pa.date32()]
        cur.execute("SELECT o_orderkey FROM bi.orders WHERE o_orderkey = ?", (3,))
        assert cur.fetchall() == [(3,)]
        # A null parameter: compares as unknown, so no row (and no error).
        cur.execute("SELECT o_orderkey FROM bi.orders WHERE o_orderkey = ?", (None,))
        assert cur.fetchall() == []
        cur.execute("SELECT count(*) FROM bi.orders WHERE o_comment IS NOT DISTINCT FROM ?", (None,))
        assert cur.fetchall() == [(1,)]
    finally:
        cur.close()


def test_cancelling_a_running_query_over_tls(bi):
    """A 4-billion-row result: one batch read, then AdbcStatementCancel ends the stream with
    a cancellation (not its end), and the connection still answers."""
    conn = _adbc(bi, "ana")
    try:
        cur = conn.cursor()
        cur.execute("SELECT a.x, b.y FROM generate_series(1, 200000) AS a(x) "
                    "CROSS JOIN generate_series(1, 20000) AS b(y)")
        reader = cur.fetch_record_batch()
        assert reader.read_next_batch().num_rows > 0
        cur.adbc_cancel()
        rows = 0
        with pytest.raises(Exception, match="(?i)cancel"):
            for batch in reader:
                rows += batch.num_rows
        assert rows < 200000 * 20000
        assert fetch(conn, "SELECT 41 + 1 AS v").column(0).to_pylist() == [42]
    finally:
        conn.close()


@pytest.mark.parametrize("kind,body,named", [
    ("BeginTransaction", w._any(SQL + "ActionBeginTransactionRequest", b""), "transactions"),
    ("EndTransaction", w._any(SQL + "ActionEndTransactionRequest", w.pb_bytes(1, b"t")), "transactions"),
    ("BeginSavepoint", w._any(SQL + "ActionBeginSavepointRequest", w.pb_bytes(2, "s")), "savepoints"),
    ("EndSavepoint", w._any(SQL + "ActionEndSavepointRequest", w.pb_bytes(1, b"s")), "savepoints"),
    ("CreatePreparedSubstraitPlan", w._any(SQL + "ActionCreatePreparedSubstraitPlanRequest", b""), "Substrait"),
    ("NoSuchAction", b"", "NoSuchAction"),
])
def test_unsupported_actions_are_unimplemented_by_name(raw, kind, body, named):
    # gRPC UNIMPLEMENTED is pyarrow's ArrowNotImplementedError.
    with pytest.raises(pa.ArrowNotImplementedError) as e:
        raw.action(kind, body)
    assert named in str(e.value)


def test_substrait_plans_are_unimplemented_by_name(raw):
    with pytest.raises(pa.ArrowNotImplementedError) as e:
        raw.info(w._any(SQL + "CommandStatementSubstraitPlan", b""))
    assert "Substrait" in str(e.value)
