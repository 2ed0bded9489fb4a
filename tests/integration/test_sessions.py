"""Per-connection settings: USE, SET TIME ZONE, SET target_file_size, SET memory_limit, and
Flight SQL's SetSessionOptions / GetSessionOptions / CloseSession (what ADBC sends for
`adbc.connection.db_schema` and `adbc.flight.sql.session.option.*`).

The settings travel in the connection's signed bearer token (the server returns a new one
when they change), so each connection keeps its own and another connection never sees them.
Every setting is checked by its effect: unqualified names resolve in the USE'd schema, a
timestamp literal is read in the session's time zone (checked against Python's zoneinfo), a
smaller target file size writes more data files, a lower memory limit makes a query that
needs more memory fail with RESOURCE_EXHAUSTED naming the limit (and the same query pass
without it). A session can lower the operator's per-query memory limit, never raise it.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from zoneinfo import ZoneInfo

import pyarrow.flight as flight
import pytest

import floe_cluster
from compare import fetch

USER, PASSWORD = "sam", "session pass"
QUERY_MEMORY = "512MiB"


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    base = tmp_path_factory.mktemp("sessions")
    line = subprocess.run([str(floe_cluster.floe_bin()), "passwd", "--user", USER, "--role", "writer"],
                          input=PASSWORD + "\n", capture_output=True, text=True, timeout=60,
                          check=True).stdout.strip()
    (base / "users.txt").write_text(line + "\n")
    dep = floe_cluster.Deployment("sessions", "local", base / "logs", secret="")
    wh = base / "wh"
    dep._start_head([str(floe_cluster.floe_bin()), "standalone", "--warehouse", str(wh), "--port", "0",
                     "--executors", "2", "--users", str(base / "users.txt"),
                     "--query-memory-limit", QUERY_MEMORY])
    dep.coordinator.wait_for(floe_cluster.REGISTERED_RE, count=2, what="FLOE_EXECUTOR_REGISTERED")
    conn = _connect(dep)
    try:
        cur = conn.cursor()
        cur.execute("CREATE SCHEMA sales")
        cur.execute("CREATE TABLE sales.orders AS SELECT * FROM (VALUES (1, 'a'), (2, 'b'), (3, 'c')) AS v(k, s)")
        cur.execute("CREATE SCHEMA default")
        cur.execute("CREATE TABLE default.orders AS SELECT * FROM (VALUES (100, 'z')) AS v(k, s)")
        # 3 million distinct keys, spread over the executors' tasks.
        cur.execute("CREATE TABLE sales.big AS SELECT x AS k FROM generate_series(1, 3000000) AS g(x)")
        cur.close()
    finally:
        conn.close()
    try:
        yield {"dep": dep, "wh": wh}
    finally:
        dep.stop()


def _connect(dep, **db):
    return floe_cluster.connect(dep.uri, db_kwargs={"username": USER, "password": PASSWORD, **db})


def _run(conn, sql: str):
    cur = conn.cursor()
    try:
        cur.execute(sql)
        cur.fetchall()
    finally:
        cur.close()


def test_use_changes_where_names_resolve_for_this_connection_only(sessions):
    dep = sessions["dep"]
    a, b = _connect(dep), _connect(dep)
    try:
        assert fetch(a, "SELECT k FROM orders").column(0).to_pylist() == [100]
        _run(a, "USE sales")
        assert sorted(fetch(a, "SELECT k FROM orders").column(0).to_pylist()) == [1, 2, 3]
        # Qualified names still reach everything.
        assert fetch(a, "SELECT k FROM default.orders").column(0).to_pylist() == [100]
        # DDL and CTAS create unqualified tables in the session's schema.
        _run(a, "CREATE TABLE copied AS SELECT k FROM orders WHERE k > 1")
        assert sorted(fetch(b, "SELECT k FROM sales.copied").column(0).to_pylist()) == [2, 3]
        # The other connection is untouched.
        assert fetch(b, "SELECT k FROM orders").column(0).to_pylist() == [100]
        _run(a, "USE default")
        assert fetch(a, "SELECT k FROM orders").column(0).to_pylist() == [100]
    finally:
        a.close()
        b.close()


def test_use_of_a_missing_schema_is_not_found_and_changes_nothing(sessions):
    conn = _connect(sessions["dep"])
    try:
        _run(conn, "USE sales")
        with pytest.raises(Exception, match="(?i)schema 'nowhere' not found"):
            _run(conn, "USE nowhere")
        assert sorted(fetch(conn, "SELECT k FROM orders").column(0).to_pylist()) == [1, 2, 3]
    finally:
        conn.close()


def test_adbc_db_schema_option_is_a_session_option(sessions):
    conn = _connect(sessions["dep"])
    try:
        conn.adbc_connection.set_options(**{"adbc.connection.db_schema": "sales"})
        assert conn.adbc_connection.get_option("adbc.connection.db_schema") == "sales"
        assert sorted(fetch(conn, "SELECT k FROM orders").column(0).to_pylist()) == [1, 2, 3]
        with pytest.raises(Exception, match="(?i)not found"):
            conn.adbc_connection.set_options(**{"adbc.connection.db_schema": "nowhere"})
        with pytest.raises(Exception, match="(?i)catalog 'other' not found"):
            conn.adbc_connection.set_options(**{"adbc.connection.catalog": "other"})
        conn.adbc_connection.set_options(**{"adbc.flight.sql.session.option.time_zone": "+05:30"})
        import json
        options = json.loads(conn.adbc_connection.get_option("adbc.flight.sql.session.options"))
        assert options == {"schema": "sales", "time_zone": "+05:30"}
    finally:
        conn.close()


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "America/New_York", "+02:00"])
def test_time_zone_reads_timestamp_literals_in_the_session_zone(sessions, zone):
    conn = _connect(sessions["dep"])
    try:
        _run(conn, f"SET TIME ZONE '{zone}'")
        t = fetch(conn, "SELECT CAST(TIMESTAMP '2026-07-01 12:00:00' AS TIMESTAMP WITH TIME ZONE) AS ts")
        got = t.column(0).to_pylist()[0]
        if zone.startswith("+"):
            tz = dt.timezone(dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
        else:
            tz = ZoneInfo(zone)
        expected = dt.datetime(2026, 7, 1, 12, 0, tzinfo=tz)
        assert got == expected, (got, expected)
        _run(conn, "SET TIME ZONE 'UTC'")
        t = fetch(conn, "SELECT CAST(TIMESTAMP '2026-07-01 12:00:00' AS TIMESTAMP WITH TIME ZONE) AS ts")
        assert t.column(0).to_pylist()[0] == dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.timezone.utc)
        with pytest.raises(Exception, match="(?i)time zone 'Mars/Olympus' is not valid"):
            _run(conn, "SET TIME ZONE 'Mars/Olympus'")
    finally:
        conn.close()


def _data_files(wh, table: str) -> int:
    return sum(1 for _ in (wh / "sales" / table / "data").rglob("*.parquet"))


def test_target_file_size_splits_written_files(sessions):
    conn = _connect(sessions["dep"])
    source = ("SELECT x, md5(CAST(x AS VARCHAR)) AS h, md5(CAST(x * 7 AS VARCHAR)) AS h2 "
              "FROM generate_series(1, 200000) AS g(x)")
    try:
        _run(conn, f"CREATE TABLE sales.wide_default AS {source}")
        _run(conn, "SET target_file_size = '1MiB'")
        _run(conn, f"CREATE TABLE sales.wide_small AS {source}")
        default_files = _data_files(sessions["wh"], "wide_default")
        small_files = _data_files(sessions["wh"], "wide_small")
        assert small_files >= default_files + 4, (default_files, small_files)
        # Same rows either way.
        for name in ("wide_default", "wide_small"):
            t = fetch(conn, f"SELECT count(*) AS n, count(DISTINCT h) AS d FROM sales.{name}")
            assert t.to_pylist() == [{"n": 200000, "d": 200000}]
        with pytest.raises(Exception, match="(?i)target_file_size"):
            _run(conn, "SET target_file_size = '10'")
    finally:
        conn.close()


# A hash join's build side cannot spill: it needs its memory.
BIG_DISTINCT = "SELECT count(*) AS d FROM sales.big a JOIN sales.big b ON a.k = b.k"


def test_memory_limit_lowers_a_query_share_and_cannot_raise_it(sessions):
    conn = _connect(sessions["dep"])
    try:
        assert fetch(conn, BIG_DISTINCT).column(0).to_pylist() == [3000000]
        _run(conn, "SET memory_limit = '16MiB'")
        with pytest.raises(Exception) as e:
            fetch(conn, BIG_DISTINCT)
        assert "RESOURCE_EXHAUSTED" in str(e.value) or "ResourceExhausted" in str(e.value), e.value
        assert "memory limit of 16777216 bytes" in str(e.value), e.value
        # Small queries still run under the lower limit.
        assert fetch(conn, "SELECT count(*) AS n FROM sales.orders").column(0).to_pylist() == [3]
        with pytest.raises(Exception, match="(?i)above the operator's per-query limit"):
            _run(conn, "SET memory_limit = '1GiB'")
        _run(conn, "SET memory_limit = DEFAULT")
        assert fetch(conn, BIG_DISTINCT).column(0).to_pylist() == [3000000]
    finally:
        conn.close()


def test_unknown_settings_and_engine_knobs_are_refused(sessions):
    conn = _connect(sessions["dep"])
    try:
        for sql in ("SET datafusion.execution.batch_size = 1", "SET work_mem = '1GB'",
                    "SET datafusion.runtime.memory_limit = '100TB'",
                    "SET datafusion.execution.time_zone = '+05:00'"):
            with pytest.raises(Exception, match="(?i)unknown setting") as e:
                _run(conn, sql)
            assert "INVALID_ARGUMENT" in str(e.value) or "InvalidArgument" in str(e.value)
    finally:
        conn.close()


def test_close_session_and_raw_session_actions(sessions):
    """pyarrow.flight by hand: SetSessionOptions answers with a new bearer token carrying the
    options; GetSessionOptions with that token reports them; CloseSession answers CLOSED."""
    dep = sessions["dep"]
    client = flight.connect(dep.uri)
    try:
        header = client.authenticate_basic_token(USER.encode(), PASSWORD.encode())
        options = flight.FlightCallOptions(headers=[header], timeout=30)
        # SetSessionOptionsRequest { map<string, SessionOptionValue> session_options = 1 }:
        # entry { key = 1: "schema", value = 2: SessionOptionValue { string_value = 1: "sales" } }
        import floe_wire as w
        entry = w.pb_bytes(1, "schema") + w.pb_bytes(2, w.pb_bytes(1, "sales"))
        results = list(client.do_action(flight.Action("SetSessionOptions", w.pb_bytes(1, entry)), options))
        assert [r.body.to_pybytes() for r in results] == [b""]  # no errors
        # pyarrow does not take the token the server returns; the session is remembered
        # for the token it signed in with too.
        got = list(client.do_action(flight.Action("GetSessionOptions", b""), options))
        assert [r.body.to_pybytes() for r in got] == [w.pb_bytes(1, entry)]
        closed = list(client.do_action(flight.Action("CloseSession", b""), options))
        assert [r.body.to_pybytes() for r in closed] == [b"\x08\x01"]
        got = list(client.do_action(flight.Action("GetSessionOptions", b""), options))
        assert [r.body.to_pybytes() for r in got] == [b""]
        # A value the server refuses: the whole request fails, naming it.
        bad = w.pb_bytes(1, w.pb_bytes(1, "memory_limit") + w.pb_bytes(2, w.pb_bytes(1, "100TB")))
        with pytest.raises(flight.FlightUnauthorizedError, match="per-query limit"):
            list(client.do_action(flight.Action("SetSessionOptions", bad), options))
    finally:
        client.close()


def test_sessions_without_authentication(tmp_path):
    """A standalone without users still keeps settings per connection (it hands the
    connection a token for them)."""
    dep = floe_cluster.Deployment("sessions-anon", "local", tmp_path / "logs", secret="")
    dep._start_head([str(floe_cluster.floe_bin()), "standalone", "--warehouse", str(tmp_path / "wh"),
                     "--port", "0", "--executors", "1"])
    dep.coordinator.wait_for(floe_cluster.REGISTERED_RE, count=1, what="FLOE_EXECUTOR_REGISTERED")
    try:
        a, b = dep.connect(), dep.connect()
        try:
            _run(a, "CREATE SCHEMA s")
            _run(a, "CREATE TABLE s.t AS SELECT 7 AS v")
            _run(a, "USE s")
            assert fetch(a, "SELECT v FROM t").column(0).to_pylist() == [7]
            with pytest.raises(Exception, match="(?i)not found"):
                fetch(b, "SELECT v FROM t")
        finally:
            a.close()
            b.close()
    finally:
        dep.stop()
