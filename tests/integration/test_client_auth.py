"""Client authentication and roles on the Flight SQL port (`--users FILE`).

Users are written with `floe passwd`; clients sign in with HTTP Basic (ADBC with a user
name and password, pyarrow's Basic → Bearer handshake by hand, Basic on every call as the
JDBC driver does) and then carry a bearer token. Wrong or missing credentials and
expired or altered tokens are UNAUTHENTICATED; a `reader` may query but not write (its
CTAS, INSERT and DROP are PERMISSION_DENIED, the table untouched), also through a ticket
it crafted itself. A coordinator bound beyond loopback without users refuses to start.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path

import grpc
import pyarrow.flight as flight
import pytest

import floe_cluster
from compare import fetch
import floe_wire as w
from floe_wire import forged_statement_ticket, statement_command

PASSWORDS = {"ada": "analytical engines", "wes": "w-r-i-t-e-r", "rui": "r3ad only!"}
ROLES = {"ada": "admin", "wes": "writer", "rui": "reader"}


def passwd(user: str, role: str, password: str) -> str:
    out = subprocess.run([str(floe_cluster.floe_bin()), "passwd", "--user", user, "--role", role],
                         input=password + "\n", capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def _start(base, name, extra, host_args=()):
    dep = floe_cluster.Deployment(name, "local", base / "logs", secret="")
    dep._start_head([str(floe_cluster.floe_bin()), "standalone", "--warehouse", str(base / "wh"), "--port", "0",
                     "--executors", "2", *host_args, *extra])
    dep.coordinator.wait_for(floe_cluster.REGISTERED_RE, count=2, what="FLOE_EXECUTOR_REGISTERED")
    return dep


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    floe_cluster.floe_bin()
    base = tmp_path_factory.mktemp("client-auth")
    lines = [passwd(u, ROLES[u], p) for u, p in PASSWORDS.items()]
    users = base / "users.txt"
    users.write_text("# Floe users\n" + "\n".join(lines) + "\n")
    dep = _start(base, "auth", ["--users", str(users), "--token-ttl-secs", "3600"])
    try:
        yield dep, base, lines
    finally:
        dep.stop()


def _client(dep) -> flight.FlightClient:
    return flight.connect(dep.uri)


def _bearer(dep, user: str, password: str) -> tuple[bytes, bytes]:
    client = _client(dep)
    try:
        return client.authenticate_basic_token(user.encode(), password.encode())
    finally:
        client.close()


def _query(dep, sql: str, headers) -> "pyarrow.Table":  # noqa: F821
    client = _client(dep)
    try:
        options = flight.FlightCallOptions(headers=headers, timeout=60)
        info = client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(sql)), options)
        return client.do_get(info.endpoints[0].ticket, options).read_all()
    finally:
        client.close()


def test_passwd_writes_a_slow_hash_not_the_password(secured):
    _, _, lines = secured
    for line, (user, password) in zip(lines, PASSWORDS.items()):
        name, hash_, role = line.split(":")
        assert (name, role) == (user, ROLES[user])
        assert hash_.startswith("$argon2id$"), hash_
        assert password not in line


def test_basic_then_bearer_by_hand_with_pyarrow(secured):
    dep, _, _ = secured
    key, value = _bearer(dep, "wes", PASSWORDS["wes"])
    assert key.lower() == b"authorization" and value.startswith(b"Bearer floe1."), (key, value)
    headers = [(key, value)]
    t = _query(dep, "SELECT 40 + 2 AS answer", headers)
    assert t.column(0).to_pylist() == [42]


@pytest.mark.parametrize("case", ["no credentials", "wrong password", "unknown user", "altered token",
                                  "foreign token", "garbage scheme", "malformed basic", "basic without colon",
                                  "huge token"])
def test_who_cannot_prove_who_they_are_is_unauthenticated(secured, case):
    dep, _, _ = secured
    _, good = _bearer(dep, "rui", PASSWORDS["rui"])
    if case in ("wrong password", "unknown user"):
        user, password = ("rui", "guess") if case == "wrong password" else ("mallory", "x")
        with pytest.raises(flight.FlightUnauthenticatedError):
            _bearer(dep, user, password)
        return
    headers = {
        "no credentials": [],
        # A reader's token with its claims changed to admin keeps its old MAC.
        "altered token": [(b"authorization", good.replace(
            good.split(b".")[1], base64.urlsafe_b64encode(b"admin\nrui\n99999999999").rstrip(b"=")))],
        # Signed by another cluster's key (another standalone run).
        "foreign token": [(b"authorization", b"Bearer floe1.YWRtaW4KcnVpCjk5OTk5OTk5OTk5.AAAA")],
        "garbage scheme": [(b"authorization", b"Negotiate abc")],
        "malformed basic": [(b"authorization", b"Basic !!!not base64!!!")],
        "basic without colon": [(b"authorization", b"Basic " + base64.b64encode(b"justauser"))],
        "huge token": [(b"authorization", b"Bearer floe1." + b"A" * 6000 + b".B")],
    }[case]
    with pytest.raises(flight.FlightUnauthenticatedError):
        _query(dep, "SELECT 1", headers)


def test_a_burst_of_wrong_passwords_is_bounded_and_the_server_stays_up(secured):
    """Every Basic sign-in costs an Argon2 check (~19 MiB, tens of ms): 40 wrong guesses at
    once run a few at a time; each is refused (UNAUTHENTICATED, or UNAVAILABLE when it waited
    too long for a check), and a right password works right after."""
    import concurrent.futures

    dep, _, _ = secured

    def guess(i: int) -> str:
        try:
            _bearer(dep, "rui", f"guess {i}")
            return "signed in"
        except flight.FlightUnauthenticatedError:
            return "unauthenticated"
        except flight.FlightUnavailableError:
            return "unavailable"

    with concurrent.futures.ThreadPoolExecutor(max_workers=40) as pool:
        outcomes = list(pool.map(guess, range(40)))
    assert "signed in" not in outcomes and outcomes.count("unauthenticated") >= 1, outcomes
    key, value = _bearer(dep, "rui", PASSWORDS["rui"])
    assert _query(dep, "SELECT 1 AS one", [(key, value)]).column(0).to_pylist() == [1]


def test_basic_on_every_call_padded_or_not(secured):
    """The JDBC driver and Tableau send Basic credentials on the call itself; ADBC sends
    base64 without `=` padding."""
    dep, _, _ = secured
    raw = base64.b64encode(f"ada:{PASSWORDS['ada']}".encode())
    assert raw.endswith(b"="), "the test needs credentials whose base64 is padded"
    for encoded in (raw, raw.rstrip(b"=")):
        t = _query(dep, "SELECT 7 AS n", [(b"authorization", b"Basic " + encoded)])
        assert t.column(0).to_pylist() == [7]


def test_adbc_with_a_user_name_and_password(secured):
    dep, _, _ = secured
    conn = dep.connect(db_kwargs={"username": "rui", "password": PASSWORDS["rui"]})
    try:
        assert fetch(conn, "SELECT 1 + 1 AS two").column(0).to_pylist() == [2]
    finally:
        conn.close()
    from adbc_driver_manager import AdbcStatusCode, Error
    with pytest.raises(Error) as info:
        conn = dep.connect(db_kwargs={"username": "rui", "password": "nope"})
        try:
            fetch(conn, "SELECT 1")
        finally:
            conn.close()
    assert info.value.status_code == AdbcStatusCode.UNAUTHENTICATED, info.value


def test_a_reader_queries_but_cannot_change_anything(secured):
    dep, _, _ = secured
    writer = [_bearer(dep, "wes", PASSWORDS["wes"])]
    reader = [_bearer(dep, "rui", PASSWORDS["rui"])]
    _query(dep, "CREATE SCHEMA IF NOT EXISTS roles", writer)
    _query(dep, "CREATE TABLE roles.kept AS SELECT * FROM (VALUES (1), (2), (3)) AS v(k)", writer)
    assert _query(dep, "SELECT sum(k) AS s FROM roles.kept", reader).column(0).to_pylist() == [6]
    for sql, kind in [("CREATE TABLE roles.mine AS SELECT 1 AS k", "CREATE TABLE"),
                      ("INSERT INTO roles.kept VALUES (4)", "INSERT INTO"),
                      ("DROP TABLE roles.kept", "DROP TABLE"),
                      ("CREATE SCHEMA other", "CREATE SCHEMA"),
                      ("ALTER TABLE roles.kept RENAME COLUMN k TO j", "ALTER TABLE")]:
        with pytest.raises(flight.FlightError) as info:
            _query(dep, sql, reader)
        assert "may not run" in str(info.value) and kind in str(info.value) and "rui" in str(info.value), info.value
    # A ticket the reader writes itself (skipping GetFlightInfo) is refused the same way.
    client = _client(dep)
    try:
        options = flight.FlightCallOptions(headers=reader, timeout=60)
        with pytest.raises(flight.FlightError) as info:
            client.do_get(flight.Ticket(forged_statement_ticket("DROP TABLE roles.kept")), options).read_all()
        assert "may not run" in str(info.value), info.value
    finally:
        client.close()
    # Untouched: same rows, same schema, still there.
    t = _query(dep, "SELECT k FROM roles.kept ORDER BY k", reader)
    assert t.column_names == ["k"] and t.column(0).to_pylist() == [1, 2, 3]
    tables = _query(dep, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'roles'", reader)
    assert tables.column(0).to_pylist() == ["kept"]


def test_the_permission_is_denied_with_the_right_status(secured):
    """Over plain gRPC: the status codes themselves."""
    dep, _, _ = secured
    _, token = _bearer(dep, "rui", PASSWORDS["rui"])
    channel = grpc.insecure_channel(f"127.0.0.1:{dep.flight_port}")
    call = channel.unary_unary("/arrow.flight.protocol.FlightService/GetFlightInfo",
                               request_serializer=None, response_deserializer=None)

    def code_of(sql: str, metadata) -> grpc.StatusCode:
        descriptor = w.pb_uint(1, 2) + w.pb_bytes(2, statement_command(sql))  # CMD descriptor
        try:
            call(descriptor, metadata=metadata, timeout=60)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()

    try:
        assert code_of("DROP TABLE roles.kept", [("authorization", token.decode())]) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of("SELECT 1", [("authorization", token.decode())]) == grpc.StatusCode.OK
        assert code_of("SELECT 1", []) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of("SELECT 1", [("authorization", "Bearer nonsense")]) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        channel.close()


def test_tokens_expire(tmp_path_factory):
    base = tmp_path_factory.mktemp("client-auth-ttl")
    users = base / "users.txt"
    users.write_text(passwd("ada", "admin", "pw") + "\n")
    dep = _start(base, "auth-ttl", ["--users", str(users), "--token-ttl-secs", "1"])
    try:
        headers = [_bearer(dep, "ada", "pw")]
        assert _query(dep, "SELECT 1 AS one", headers).column(0).to_pylist() == [1]
        time.sleep(2.1)
        with pytest.raises(flight.FlightUnauthenticatedError) as info:
            _query(dep, "SELECT 1 AS one", headers)
        assert "expired" in str(info.value), info.value
    finally:
        dep.stop()


def test_no_users_beyond_loopback_refuses_to_start_unless_anonymity_is_asked_for(tmp_path_factory):
    base = tmp_path_factory.mktemp("client-auth-open")
    args = [str(floe_cluster.floe_bin()), "standalone", "--warehouse", str(base / "wh"), "--port", "0",
            "--executors", "0", "--host", "0.0.0.0"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "without client authentication" in out.stderr and "--users" in out.stderr, out.stderr
    dep = floe_cluster.Deployment("auth-open", "local", base / "logs", secret="")
    dep._start_head(args + ["--allow-anonymous"])
    try:
        assert _query(dep, "SELECT 3 AS n", []).column(0).to_pylist() == [3]
    finally:
        dep.stop()


def test_without_users_on_loopback_anyone_is_admin_and_credentials_still_work(tmp_path_factory):
    base = tmp_path_factory.mktemp("client-auth-off")
    dep = _start(base, "auth-off", [])
    try:
        assert _query(dep, "SELECT 5 AS n", []).column(0).to_pylist() == [5]
        headers = [_bearer(dep, "anyone", "anything")]
        assert _query(dep, "CREATE SCHEMA s", headers).num_rows == 1
        conn = dep.connect(db_kwargs={"username": "anyone", "password": "anything"})
        try:
            assert fetch(conn, "SELECT 6 AS n").column(0).to_pylist() == [6]
        finally:
            conn.close()
    finally:
        dep.stop()


def test_the_floe_sql_shell_signs_in(secured):
    dep, _, _ = secured
    import os

    def shell(password: str):
        env = dict(os.environ, FLOE_PASSWORD=password)
        return subprocess.run([str(floe_cluster.floe_bin()), "sql", "--uri", dep.uri, "--user", "rui", "-e",
                               "SELECT 6 * 7 AS answer"], capture_output=True, text=True, timeout=60, env=env)

    ok = shell(PASSWORDS["rui"])
    assert ok.returncode == 0 and "42" in ok.stdout, ok.stdout + ok.stderr
    bad = shell("wrong")
    assert bad.returncode != 0 and "signing in as rui" in bad.stderr, bad.stderr


def _flightsql_python() -> str:
    """The Python of the flightsql-dbapi venv (scripts/test.sh makes it: .venv-flightsql)."""
    root = Path(__file__).resolve().parents[2]
    python = os.environ.get("FLOE_FLIGHTSQL_PYTHON", str(root / ".venv-flightsql" / "bin" / "python"))
    assert Path(python).exists(), f"{python} is missing: run scripts/test.sh, which makes it"
    return python


def test_superset_lists_and_queries_through_flightsql_dbapi(secured):
    """Superset's path: the `datafusion+flightsql://user:password@host:port` SQLAlchemy URL,
    the inspector's schema, table and column listings, a query; and flightsql-dbapi's own
    Flight SQL metadata calls. Run in flightsql-dbapi's venv (SQLAlchemy < 2)."""
    dep, _, _ = secured
    conn = dep.connect(db_kwargs={"username": "wes", "password": PASSWORDS["wes"]})
    try:
        cur = conn.cursor()
        cur.execute("CREATE SCHEMA IF NOT EXISTS superset")
        cur.execute("CREATE TABLE superset.sales AS SELECT * FROM (VALUES (1, 'north', 10.5), "
                    "(2, 'south', 4.5), (3, 'north', 1.0)) AS v(id, region, amount)")
        cur.close()
    finally:
        conn.close()
    url = f"datafusion+flightsql://rui:{PASSWORDS['rui'].replace('!', '%21')}@127.0.0.1:{dep.flight_port}?insecure=true"
    sql = "SELECT region, sum(amount) AS total FROM superset.sales GROUP BY region ORDER BY region"
    probe = Path(__file__).with_name("superset_probe.py")
    out = subprocess.run([_flightsql_python(), str(probe), url, "superset", "sales", sql],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert "superset" in got["schemas"] and "superset" in got["raw_schemas"]
    assert got["tables"] == ["sales"] and got["raw_tables"] == ["sales"]
    assert got["columns"] == ["id", "region", "amount"]
    assert got["rows"] == [["north", 11.5], ["south", 4.5]] == got["raw_rows"]
    assert got["raw_primary_keys"] == []
    assert got["raw_server_name"] == "Floe"
