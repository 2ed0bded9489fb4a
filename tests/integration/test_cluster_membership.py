"""Executors joining and leaving a running cluster.

Each test starts its own `floe coordinator` + 2 `floe executor` processes over
the SQL-catalog data (like `cluster_sql`), so killing executors cannot disturb
the shared session deployments.

Contract with Floe:
  * executors heartbeat every second and are dropped after 5 s of silence; the
    coordinator logs (stderr) a line containing "dropped" and the executor id;
  * FLOE_EXECUTOR_REGISTERED id=<id> endpoint=<url> (coordinator stdout) names
    each executor; the endpoint's port is the executor's FLOE_EXECUTOR_READY port;
  * EXPLAIN ANALYZE prints per RemoteStageExec
    executed=[p0@<executor-id> files=.. bytes=.. rows_read=.. rows_out=.. time=..ms; ...];
  * partition p of a stage goes to live executor p mod n;
  * with no live executor a query fails fast with UNAVAILABLE naming executors.
"""

from __future__ import annotations

import itertools
import re
import time

import pytest
from adbc_driver_manager import Error

import floe_cluster
from compare import assert_same, fetch, plan_text

DROP_DEADLINE_S = 12.0      # 5 s expiry + 1 s reaper period, with slack for a loaded machine
FAIL_FAST_S = 15.0
TASK_RE = re.compile(r"\bt(\d+)@(\S+?) files=")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")

QUERIES = [
    "SELECT count(*) AS n FROM demo.events",
    "SELECT city, count(*) AS n, sum(amount) AS total, min(ts) AS first_ts FROM demo.events GROUP BY city",
    "SELECT event_id, city, amount FROM demo.events WHERE city = 'Oslo' AND user_id < 30",
    "SELECT a.region, count(*) AS n FROM demo.events e JOIN demo.accounts a ON e.user_id = a.account_id "
    "GROUP BY a.region",
]
ANALYZE_SQL = "SELECT city, count(*) AS n FROM demo.events GROUP BY city"

_counter = itertools.count(1)


@pytest.fixture
def own_cluster(seaweed, sql_data, workdir):
    floe_cluster.floe_bin()
    cfg = floe_cluster.sql_catalog_config(seaweed, workdir)
    dep = floe_cluster.start_cluster(f"membership{next(_counter)}", cfg, workdir / "logs")
    try:
        yield dep
    finally:
        dep.stop()


def _executor_id(dep: floe_cluster.Deployment, ex: floe_cluster.FloeProcess) -> str:
    ids = [i for i, ep in dep.registrations() if re.search(rf":{ex.flight_port}/?$", ep)]
    assert ids, f"no FLOE_EXECUTOR_REGISTERED for {ex.name} (port {ex.flight_port}): {dep.registrations()}"
    return ids[-1]


def _coordinator_log(dep: floe_cluster.Deployment) -> str:
    return ANSI_RE.sub("", dep.coordinator.stderr_path.read_text(errors="replace"))


def _dropped_lines(dep: floe_cluster.Deployment, executor_id: str) -> list[str]:
    return [l for l in _coordinator_log(dep).splitlines() if "dropped" in l and executor_id in l]


def _wait_dropped(dep: floe_cluster.Deployment, executor_id: str, since: float) -> float:
    """Seconds from `since` until the coordinator logged that it dropped `executor_id`."""
    while True:
        if _dropped_lines(dep, executor_id):
            return time.monotonic() - since
        if time.monotonic() - since > DROP_DEADLINE_S:
            pytest.fail(
                f"coordinator did not log dropping {executor_id} within {DROP_DEADLINE_S:.0f}s "
                f"of its SIGKILL\n{dep.describe()}"
            )
        assert dep.coordinator.alive(), dep.describe()
        time.sleep(0.2)


def _check_answers(conn, data, stage: str) -> None:
    for sql in QUERIES:
        assert_same(fetch(conn, sql), data.oracle(sql), context=f"{stage}: {sql}")


def _executed_on(conn) -> dict[int, str]:
    """{partition: executor id} of the tasks of EXPLAIN ANALYZE's remote stage(s)."""
    text = plan_text(fetch(conn, f"EXPLAIN ANALYZE {ANALYZE_SQL}"))
    tasks = TASK_RE.findall(text)
    assert tasks, f"no executed=[t<N>@<executor> files=...] in EXPLAIN ANALYZE:\n{text}"
    return {int(p): ex for p, ex in tasks}


@pytest.mark.timeout(300)
def test_crashed_executor_is_dropped_and_replaced(own_cluster, sql_data):
    dep = own_cluster
    ex_a, ex_b = dep.executors
    id_a, id_b = _executor_id(dep, ex_a), _executor_id(dep, ex_b)
    assert id_a != id_b
    conn = dep.connect(timeout_s=90)
    try:
        _check_answers(conn, sql_data, "2 executors")
        used = set(_executed_on(conn).values())
        assert used == {id_a, id_b}, f"tasks ran on {used}, executors are {id_a}, {id_b}"

        t0 = time.monotonic()
        dep.kill_executor(0)
        took = _wait_dropped(dep, id_a, t0)
        assert took <= 10.5, f"dropped only after {took:.1f}s"
        assert not _dropped_lines(dep, id_b), "the surviving executor was dropped too"

        # Only the survivor serves now, and answers stay right.
        _check_answers(conn, sql_data, f"after {id_a} crashed")
        used = set(_executed_on(conn).values())
        assert used == {id_b}, f"tasks ran on {used}, only {id_b} is alive"

        # A new executor joins the same coordinator and gets work.
        ex_c = dep.start_executor()
        id_c = _executor_id(dep, ex_c)
        assert id_c not in (id_a, id_b)
        placed = _executed_on(conn)
        assert set(placed.values()) == {id_b, id_c}, f"tasks ran on {placed}, live are {id_b}, {id_c}"
        _check_answers(conn, sql_data, f"{id_b} + new {id_c}")
        assert ex_b.alive() and ex_c.alive() and dep.coordinator.alive(), dep.describe()
    except BaseException:
        print(dep.describe())  # shown in the failure report
        raise
    finally:
        conn.close()


@pytest.mark.timeout(300)
def test_query_right_after_a_crash_fails_over(own_cluster, sql_data):
    """SIGKILL an executor and query at once (before its heartbeats are missed):
    tasks that cannot reach it go to the other executor; the answer is right."""
    dep = own_cluster
    id_a = _executor_id(dep, dep.executors[0])
    id_b = _executor_id(dep, dep.executors[1])
    conn = dep.connect(timeout_s=90)
    try:
        assert set(_executed_on(conn).values()) == {id_a, id_b}
        dep.kill_executor(0)
        t0 = time.monotonic()
        _check_answers(conn, sql_data, f"just after {id_a} crashed")
        assert time.monotonic() - t0 < 60
        assert set(_executed_on(conn).values()) == {id_b}
        assert _dropped_lines(dep, id_a), f"{id_a} not dropped after failing tasks\n{dep.describe()}"
    except BaseException:
        print(dep.describe())  # shown in the failure report
        raise
    finally:
        conn.close()


@pytest.mark.timeout(300)
def test_no_executors_fails_fast_then_recovers(own_cluster, sql_data):
    dep = own_cluster
    ids = [_executor_id(dep, ex) for ex in dep.executors]
    conn = dep.connect(timeout_s=90)
    try:
        _check_answers(conn, sql_data, "2 executors")
        t0 = time.monotonic()
        dep.kill_executor(0)
        dep.kill_executor(1)
        for executor_id in ids:
            _wait_dropped(dep, executor_id, t0)

        t1 = time.monotonic()
        with pytest.raises(Error) as info:
            t = fetch(conn, "SELECT city, count(*) AS n FROM demo.events GROUP BY city")
            pytest.fail(f"query without executors returned {t.num_rows} rows")
        elapsed = time.monotonic() - t1
        msg = str(info.value)
        assert elapsed < FAIL_FAST_S, f"took {elapsed:.1f}s to fail: {msg}"
        assert "executor" in msg.lower(), f"message does not mention executors: {msg}"
        # ADBC: "<CODE>: [FlightSQL] <message> (<GrpcCode>; DoGet...)"; checked after the
        # recovery below so that a wrong code does not hide a failure to recover.
        wrong_code = None if "(Unavailable;" in msg else f"expected gRPC UNAVAILABLE, got: {msg}"

        # The coordinator itself is fine: catalog metadata needs no executor.
        assert dep.coordinator.alive(), dep.describe()
        listed = {r["table_name"] for r in fetch(conn, "SHOW TABLES").to_pylist() if r["table_schema"] == "demo"}
        assert {"events", "accounts"} <= listed, listed

        ex = dep.start_executor()
        new_id = _executor_id(dep, ex)
        assert new_id not in ids
        _check_answers(conn, sql_data, f"new executor {new_id}")
        assert set(_executed_on(conn).values()) == {new_id}
        assert wrong_code is None, wrong_code
    except BaseException:
        print(dep.describe())  # shown in the failure report
        raise
    finally:
        conn.close()
