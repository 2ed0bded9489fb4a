"""What a client (or anyone on the network) must not be able to do.

1. Client SQL cannot touch local files or URLs, nor change anything: DDL, DML,
   COPY, SET and file-reading table references fail with an error (never
   data), and no file appears.  Checked through ADBC (which prepares first)
   and through forged Flight SQL tickets (statement handles are
   self-contained, so a client can put any SQL into a DoGet ticket).
2. Executors run tasks only from their coordinator: a direct DoGet with a
   garbage ticket, a task or shuffle read without a valid MAC, or another
   protocol version is refused, and every other Flight method is
   UNIMPLEMENTED.
3. The control plane (gRPC floe.v1.ControlPlane on the coordinator port)
   checks the protocol version and admits only executors that prove the
   cluster secret (test_rogue_executor.py goes further).

Protobuf messages are encoded by hand (floe_wire.py), so the tests depend on
the .proto field numbers only, not on generated code.

How pyarrow.flight 26 surfaces gRPC codes (checked against Floe's executor):
    INVALID_ARGUMENT    -> pyarrow.ArrowInvalid, "Flight returned invalid argument error"
    FAILED_PRECONDITION -> pyarrow.ArrowInvalid, "gRPC returned precondition failed error"
    PERMISSION_DENIED   -> pyarrow.flight.FlightUnauthorizedError
    UNIMPLEMENTED       -> pyarrow.ArrowNotImplementedError
"""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest
from adbc_driver_manager import AdbcStatusCode, Error, ProgrammingError

import floe_cluster
from compare import fetch, rows, scalar

SECRET = "floe-security-canary-7f3a91"


from floe_wire import (PROTOCOL_VERSION, ControlPlane, forged_statement_ticket, runtime_filter_keys,
                       runtime_filter_ticket, shuffle_read,
                       shuffle_ticket, statement_command, task_definition, task_ticket)


# ------------------------------------------------------------ 1. client SQL


@pytest.fixture
def canary_files(tmp_path) -> dict[str, Path]:
    """Real, readable local files holding SECRET, so a query that did read local
    files would have something to return."""
    d = tmp_path / "canary"
    d.mkdir()
    t = pa.table({"secret": [SECRET, SECRET], "n": [1, 2]})
    pq.write_table(t, d / "canary.parquet")
    (d / "canary.csv").write_text(f"secret,n\n{SECRET},1\n{SECRET},2\n")
    return {"dir": d, "parquet": d / "canary.parquet", "csv": d / "canary.csv"}


# (id, SQL with {tmp} = a fresh folder, files (relative to {tmp}) that must not exist afterwards)
REFUSED_STATEMENTS = [
    ("create_external_table_etc_passwd", "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'", []),
    ("create_external_table_parquet", "CREATE EXTERNAL TABLE canary STORED AS PARQUET LOCATION '{canary}'", []),
    ("copy_query_to_file", "COPY (SELECT 1 AS a) TO '{tmp}/leak.csv'", ["leak.csv"]),
    ("copy_table_to_file", "COPY demo.accounts TO '{tmp}/accounts.parquet' STORED AS PARQUET",
     ["accounts.parquet"]),
    ("copy_select_to_dir", "COPY (SELECT * FROM demo.events LIMIT 5) TO '{tmp}/leakdir/' STORED AS CSV", ["leakdir"]),
    ("create_view", "CREATE VIEW v AS SELECT 1", []),
    ("delete", "DELETE FROM demo.accounts WHERE account_id > 0", []),
    ("set_batch_size", "SET datafusion.execution.batch_size = 1", []),
    ("set_timezone", "SET datafusion.execution.time_zone = '+05:00'", []),
]

# Table references that name a local file or URL: they must fail (NOT_FOUND or
# INVALID_ARGUMENT) without reading anything.
FILE_READS = [
    ("etc_passwd_path", "SELECT * FROM '/etc/passwd'"),
    ("etc_passwd_url", "SELECT * FROM 'file:///etc/passwd'"),
    ("read_parquet_fn", "SELECT * FROM read_parquet('/etc/x.parquet')"),
    ("read_csv_fn", "SELECT * FROM read_csv('/etc/passwd')"),
    ("canary_parquet_path", "SELECT * FROM '{parquet}'"),
    ("canary_parquet_url", "SELECT * FROM 'file://{parquet}'"),
    ("canary_csv_path", "SELECT secret FROM '{csv}'"),
    ("read_parquet_canary", "SELECT * FROM read_parquet('{parquet}')"),
    ("parquet_metadata_fn", "SELECT * FROM parquet_metadata('{parquet}')"),
    ("describe_file", "DESCRIBE '{parquet}'"),
    ("http_url", "SELECT * FROM 'http://127.0.0.1:1/x.parquet'"),
    ("s3_url", "SELECT * FROM 's3://warehouse/wh/demo/events/metadata/x.parquet'"),
]


def _fill(sql: str, tmp: Path, canary: dict) -> str:
    return sql.format(tmp=tmp, canary=canary["dir"], parquet=canary["parquet"], csv=canary["csv"])


def _error_of(conn, sql: str) -> Error:
    with pytest.raises(Error) as info:
        t = fetch(conn, sql)
        pytest.fail(f"{sql!r} returned data instead of failing: {t.num_rows} rows {t.to_pylist()[:3]}")
    return info.value


@pytest.mark.parametrize("case", REFUSED_STATEMENTS, ids=lambda c: c[0])
def test_ddl_dml_and_set_are_refused(target, conn, tmp_path, canary_files, case):
    _, template, must_not_exist = case
    out = tmp_path / "out"
    out.mkdir()
    sql = _fill(template, out, canary_files)
    err = _error_of(conn, sql)
    msg = str(err)
    assert SECRET not in msg and "root:" not in msg, msg
    for rel in must_not_exist:
        assert not (out / rel).exists(), f"{sql!r} failed ({msg}) but created {out / rel}"
    assert list(out.iterdir()) == [], f"{sql!r} created files: {list(out.iterdir())}"
    # A refusal of the statement kind: INVALID_ARGUMENT naming why.
    assert isinstance(err, ProgrammingError), repr(err)
    assert err.status_code == AdbcStatusCode.INVALID_ARGUMENT, f"{sql!r}: expected INVALID_ARGUMENT, got {msg}"
    assert re.search(r"not supported|queries only|read[- ]only", msg, re.I), f"{sql!r}: unhelpful message: {msg}"


@pytest.mark.parametrize("case", FILE_READS, ids=lambda c: c[0])
def test_client_sql_cannot_read_files_or_urls(target, conn, tmp_path, canary_files, case):
    _, template = case
    sql = _fill(template, tmp_path, canary_files)
    err = _error_of(conn, sql)
    msg = str(err)
    assert SECRET not in msg and "root:" not in msg, f"{sql!r} leaked file contents: {msg}"
    assert isinstance(err, ProgrammingError), repr(err)
    assert err.status_code in (AdbcStatusCode.INVALID_ARGUMENT, AdbcStatusCode.NOT_FOUND), f"{sql!r}: {msg}"


# Writes to the catalog's own tables are Floe's job (test_writes.py); a coordinator started
# with --read-only refuses them all.
WRITES = [
    ("create_table_as", "CREATE TABLE t AS SELECT 1"),
    ("create_table_as_into_ns", "CREATE TABLE demo.t2 AS SELECT * FROM demo.accounts"),
    ("create_table", "CREATE TABLE demo.t3 (a INT)"),
    ("create_schema", "CREATE SCHEMA sneaky"),
    ("drop_table", "DROP TABLE demo.accounts"),
    ("drop_schema", "DROP SCHEMA demo CASCADE"),
    ("alter_table", "ALTER TABLE demo.accounts ADD COLUMN x INT"),
    ("insert_values", "INSERT INTO demo.events (event_id, city) VALUES (999999, 'Nowhere')"),
    ("insert_select", "INSERT INTO demo.accounts SELECT * FROM demo.accounts"),
    ("explain_analyze_insert", "EXPLAIN ANALYZE INSERT INTO demo.accounts SELECT * FROM demo.accounts"),
]


@pytest.fixture(scope="module")
def read_only_floe(seaweed, sql_data, workdir):
    """`floe standalone --read-only` over the SQL catalog."""
    import catalogs

    cfg = floe_cluster.CatalogConfig(
        warehouse=seaweed.sql_warehouse,
        kind="sql",
        catalog_uri=catalogs.floe_sqlite_uri(workdir),
        storage_args=seaweed.floe_storage_args() + ["--read-only"],
    )
    dep = floe_cluster.start_standalone("standalone_read_only", cfg, workdir / "logs-read-only")
    try:
        yield dep
    finally:
        dep.stop()


@pytest.mark.parametrize("case", WRITES, ids=lambda c: c[0])
def test_read_only_coordinator_refuses_writes(read_only_floe, sql_data, case):
    _, sql = case
    conn = read_only_floe.connect()
    try:
        err = _error_of(conn, sql)
        assert isinstance(err, ProgrammingError), repr(err)
        assert err.status_code == AdbcStatusCode.INVALID_ARGUMENT, str(err)
        assert "read-only" in str(err), str(err)
        # still answers queries
        assert scalar(fetch(conn, "SELECT count(*) FROM demo.accounts")) == sql_data.arrow("accounts").num_rows
    finally:
        conn.close()
    assert not sql_data.catalog.table_exists("demo.t2")
    assert not sql_data.catalog.table_exists("demo.t3")
    assert "accounts" in {t[-1] for t in sql_data.catalog.list_tables("demo")}


def test_data_unchanged_after_refused_statements(target, conn):
    """Runs after the refusals (file order): the tables are what pyiceberg says."""
    assert scalar(fetch(conn, "SELECT count(*) FROM demo.accounts")) == target.data.arrow("accounts").num_rows
    assert scalar(fetch(conn, "SELECT count(*) FROM demo.events")) == target.data.arrow("events").num_rows
    assert scalar(fetch(conn, "SELECT count(*) FROM demo.events WHERE city = 'Nowhere'")) == 0
    # and the session settings are per query: a refused SET changed nothing
    assert rows(fetch(conn, "SELECT value FROM information_schema.df_settings "
                            "WHERE name = 'datafusion.execution.batch_size'")) != [("1",)]


def _coordinator_client(target) -> flight.FlightClient:
    return flight.connect(target.floe.uri)


def test_forged_ticket_runs_only_queries(target, tmp_path):
    """Statement handles carry their SQL, so a client can forge a DoGet ticket
    with any SQL: the coordinator must check it exactly like a prepared one."""
    client = _coordinator_client(target)
    try:
        # positive control: a forged SELECT ticket is a valid way in
        t = client.do_get(flight.Ticket(forged_statement_ticket("SELECT count(*) AS n FROM demo.accounts"))).read_all()
        assert rows(t) == [(target.data.arrow("accounts").num_rows,)]

        leak = tmp_path / "forged.csv"
        for sql in (f"COPY (SELECT 1 AS a) TO '{leak}'",
                    f"COPY demo.accounts TO '{leak}' STORED AS CSV",
                    "SET datafusion.execution.batch_size = 1"):
            with pytest.raises(pa.ArrowException) as info:
                client.do_get(flight.Ticket(forged_statement_ticket(sql))).read_all()
            assert isinstance(info.value, pa.ArrowInvalid) and "invalid argument" in str(info.value).lower(), (
                f"DoGet {sql!r}: {type(info.value).__name__}: {info.value}"
            )
            with pytest.raises(pa.ArrowException) as info:
                client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(sql)))
            assert isinstance(info.value, pa.ArrowInvalid), f"GetFlightInfo {sql!r}: {info.value}"
            assert not leak.exists(), f"{sql!r} was refused but created {leak}"

        for sql in (f"SELECT * FROM '{tmp_path}'", "SELECT * FROM '/etc/passwd'"):
            with pytest.raises(pa.ArrowException) as info:
                client.do_get(flight.Ticket(forged_statement_ticket(sql))).read_all()
            assert "root:" not in str(info.value)
    finally:
        client.close()


# ------------------------------------------------------------ 2. executors


def _executor_endpoints(target) -> list[str]:
    eps = [ep for _, ep in target.floe.registrations()]
    assert eps, "no executor registered"
    return [re.sub(r"^https?://", "grpc://", ep) for ep in eps]


@pytest.fixture
def executor_client(target):
    client = flight.connect(_executor_endpoints(target)[0])
    try:
        yield client
    finally:
        client.close()


def test_executor_rejects_garbage_ticket(executor_client):
    with pytest.raises(pa.ArrowException) as info:
        executor_client.do_get(flight.Ticket(b"\xff\xff\xff\xff not a protobuf")).read_all()
    e = info.value
    assert isinstance(e, pa.ArrowInvalid) and "invalid argument" in str(e).lower(), f"{type(e).__name__}: {e}"
    assert "FloeTicket" in str(e), str(e)


@pytest.mark.parametrize("tag", [b"", b"\x00" * 32, b"x" * 32], ids=["empty", "zeros", "guess"])
def test_executor_rejects_tasks_without_the_coordinators_mac(target, tag):
    """Every executor refuses a task not MACed with its registration's key, before
    it decodes the plan (the plan bytes here are not a valid plan: a decode error
    would mean the MAC was checked too late)."""
    for ep in _executor_endpoints(target):
        client = flight.connect(ep)
        try:
            with pytest.raises(pa.ArrowException) as info:
                client.do_get(flight.Ticket(task_ticket(task_definition(), tag))).read_all()
            e = info.value
            assert isinstance(e, flight.FlightUnauthorizedError), f"{ep}: {type(e).__name__}: {e}"
            assert "MAC does not match" in str(e), str(e)
        finally:
            client.close()


@pytest.mark.parametrize("tag", [b"", b"\x00" * 32], ids=["empty", "zeros"])
def test_executor_serves_shuffle_buckets_only_to_cluster_members(target, tag):
    """Another executor's request for a shuffle bucket is MACed with a key only
    holders of the cluster secret can derive."""
    for ep in _executor_endpoints(target):
        client = flight.connect(ep)
        try:
            with pytest.raises(pa.ArrowException) as info:
                client.do_get(flight.Ticket(shuffle_ticket(shuffle_read(), tag))).read_all()
            e = info.value
            assert isinstance(e, flight.FlightUnauthorizedError), f"{ep}: {type(e).__name__}: {e}"
            assert "MAC does not match" in str(e), str(e)
        finally:
            client.close()


@pytest.mark.parametrize("tag", [b"", b"\x00" * 32], ids=["empty", "zeros"])
def test_executor_takes_runtime_filter_keys_only_from_cluster_members(target, tag):
    """A join's keys for another executor's shuffle producers (which drop the rows whose
    keys are not among them) are MACed with a key only holders of the cluster secret can
    derive: an outsider can neither make producers drop rows nor fill an executor's memory."""
    for ep in _executor_endpoints(target):
        client = flight.connect(ep)
        try:
            with pytest.raises(pa.ArrowException) as info:
                ticket = runtime_filter_ticket(runtime_filter_keys(), tag)
                client.do_get(flight.Ticket(ticket)).read_all()
            e = info.value
            assert isinstance(e, flight.FlightUnauthorizedError), f"{ep}: {type(e).__name__}: {e}"
            assert "MAC does not match" in str(e), str(e)
        finally:
            client.close()


METHODS = {
    "list_flights": lambda c: list(c.list_flights()),
    "get_flight_info": lambda c: c.get_flight_info(flight.FlightDescriptor.for_command(b"x")),
    "get_schema": lambda c: c.get_schema(flight.FlightDescriptor.for_path("demo", "events")),
    "list_actions": lambda c: c.list_actions(),
    "do_action": lambda c: list(c.do_action(flight.Action("run", b""))),  # an action it does not have
    "do_put": lambda c: _do_put(c),
}


def _do_put(c):
    schema = pa.schema([("a", pa.int64())])
    writer, reader = c.do_put(flight.FlightDescriptor.for_path("x"), schema)
    writer.write_table(pa.table({"a": [1]}, schema=schema))
    writer.close()


@pytest.mark.parametrize("method", list(METHODS))
def test_executor_refuses_other_flight_methods(executor_client, method):
    with pytest.raises(pa.ArrowException) as info:
        METHODS[method](executor_client)
    e = info.value
    assert isinstance(e, pa.ArrowNotImplementedError), f"{method}: {type(e).__name__}: {e}"
    assert "executors" in str(e), str(e)  # "executors take tasks only (DoGet)" or similar


# ------------------------------------------------------------ 3. control plane


@pytest.fixture
def lone_coordinator(tmp_path):
    """A coordinator with no executors over a fresh local warehouse (registering
    fakes with it cannot disturb the shared deployments)."""
    def start(*extra: str) -> floe_cluster.Deployment:
        dep = floe_cluster.Deployment(f"ctrl{len(started)}", "local", tmp_path / "logs")
        started.append(dep)
        dep._start_head([str(floe_cluster.floe_bin()), "coordinator", "--warehouse", str(tmp_path / "wh"),
                         "--port", "0", *extra])
        return dep

    started: list[floe_cluster.Deployment] = []
    try:
        yield start
    finally:
        for dep in started:
            dep.stop()


def test_control_plane_checks_protocol_version(lone_coordinator):
    dep = lone_coordinator()
    cp = ControlPlane(dep.coordinator_port)
    try:
        for version in (PROTOCOL_VERSION + 1, PROTOCOL_VERSION - 1, 0):
            with pytest.raises(grpc.RpcError) as info:
                cp.challenge(version)
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION, info.value
            assert f"protocol version {version}" in info.value.details(), info.value.details()
            with pytest.raises(grpc.RpcError) as info:
                cp.register("py-exec-old", "http://127.0.0.1:9", b"", b"", b"", version=version)
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION, info.value
        assert not dep.registrations(), "a refused executor was registered"

        secret = dep.secret.encode()
        key = cp.admit(secret, "py-exec-ok", "http://127.0.0.1:9")
        dep.coordinator.wait_for(floe_cluster.REGISTERED_RE, timeout=10, what="FLOE_EXECUTOR_REGISTERED py-exec-ok",
                                 predicate=lambda m: m["id"] == "py-exec-ok")
        # Each registration derives a fresh key (the coordinator's nonce is new).
        assert cp.admit(secret, "py-exec-ok", "http://127.0.0.1:9") != key
    finally:
        cp.close()


def test_coordinator_needs_a_cluster_secret(tmp_path):
    """A coordinator does not start without a secret: executors could not prove one."""
    dep = floe_cluster.Deployment("nosecret", "local", tmp_path / "logs", secret="")
    with pytest.raises(floe_cluster.FloeStartError):
        dep._start_head([str(floe_cluster.floe_bin()), "coordinator", "--warehouse", str(tmp_path / "wh"),
                         "--port", "0"])
    stderr = dep.coordinator.stderr_path.read_text(errors="replace")
    assert "a cluster secret is required" in stderr, stderr[:2000]
    dep.stop()
