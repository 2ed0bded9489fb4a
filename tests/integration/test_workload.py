"""Many users at once: the admission limit (`--max-concurrent-queries`, a bounded queue with a
timeout) and a load test of 32 ADBC clients.

The admission test holds the only place with an unread result, and shows the queue filling
(RESOURCE_EXHAUSTED at once, naming the limit), a queued statement timing out (naming the
timeout), and the next statement running once the place is free.

The load test runs 32 concurrent ADBC clients for 60 s against a coordinator and two executor
processes on SeaweedFS with an admission limit of 8: point lookups (prepared), aggregates,
joins and metadata calls, every answer checked against values computed in Python from the
same generating formulas. It asserts no errors and right answers, and records the processes'
resident memory (sampled every 2 s) in `load-test.json` in the test's log folder; its timing is
reported, never asserted. Set FLOE_LOAD_SECONDS to run it longer or shorter.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

import pytest

import floe_cluster
from compare import fetch

# --------------------------------------------------------------------------- admission


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    base = tmp_path_factory.mktemp("admission")
    dep = floe_cluster.Deployment("admission", "local", base / "logs", secret="")
    dep._start_head([str(floe_cluster.floe_bin()), "standalone", "--warehouse", str(base / "wh"), "--port", "0",
                     "--executors", "1", "--max-concurrent-queries", "1", "--query-queue-size", "1",
                     "--query-queue-timeout-ms", "3000"])
    dep.coordinator.wait_for(floe_cluster.REGISTERED_RE, count=1, what="FLOE_EXECUTOR_REGISTERED")
    try:
        yield dep
    finally:
        dep.stop()


HUGE = "SELECT a.x, b.y FROM generate_series(1, 200000) AS a(x) CROSS JOIN generate_series(1, 20000) AS b(y)"


def test_the_queue_fills_times_out_and_drains(gated):
    holder = gated.connect()
    cur = holder.cursor()
    cur.execute(HUGE)
    reader = cur.fetch_record_batch()
    assert reader.read_next_batch().num_rows > 0  # the only place is taken while it streams
    queued_error: list[BaseException] = []
    queued_at: list[float] = []

    def queued():
        conn = gated.connect()
        try:
            queued_at.append(time.monotonic())
            fetch(conn, "SELECT 1 AS one")
        except BaseException as e:  # noqa: BLE001
            queued_error.append(e)
        finally:
            conn.close()

    waiter = threading.Thread(target=queued)
    waiter.start()
    time.sleep(1.0)  # the waiter is in the queue by now (its timeout is 3 s)
    full = gated.connect()
    try:
        with pytest.raises(Exception) as e:
            fetch(full, "SELECT 2 AS two")
        text = str(e.value)
        assert "RESOURCE_EXHAUSTED" in text or "ResourceExhausted" in text, text
        assert "--max-concurrent-queries 1" in text and "--query-queue-size 1" in text, text
    finally:
        full.close()
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    assert len(queued_error) == 1, queued_error
    assert "--query-queue-timeout-ms 3000" in str(queued_error[0]), queued_error[0]
    # Free the place: the next statement runs.
    cur.adbc_cancel()
    cur.close()
    holder.close()
    deadline = time.monotonic() + 30
    while True:
        conn = gated.connect()
        try:
            assert fetch(conn, "SELECT 40 + 2 AS v").column(0).to_pylist() == [42]
            break
        except Exception:  # noqa: BLE001
            assert time.monotonic() < deadline, "the place was never freed"
            time.sleep(0.2)
        finally:
            conn.close()


# --------------------------------------------------------------------------- load

CLIENTS = 32
ORDERS = 200_000
CUSTOMERS = 1_000
REGIONS = 5
LOAD_SECONDS = float(os.environ.get("FLOE_LOAD_SECONDS", "60"))
WARM_UP_SECONDS = min(15.0, LOAD_SECONDS / 4)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.fixture(scope="module")
def loaded(seaweed, workdir, tmp_path_factory):
    base = tmp_path_factory.mktemp("load")
    catalog = floe_cluster.sql_catalog_config(seaweed, workdir)
    dep = floe_cluster.Deployment("load", "sql", base / "logs", catalog=catalog)
    dep._start_head([str(floe_cluster.floe_bin()), "coordinator", *catalog.args(), "--port", "0",
                     "--max-concurrent-queries", "8", "--query-queue-size", "64",
                     "--query-queue-timeout-ms", "120000"])
    try:
        for _ in range(2):
            dep.start_executor()
        conn = dep.connect()
        try:
            cur = conn.cursor()
            cur.execute("CREATE SCHEMA IF NOT EXISTS load")
            cur.execute("DROP TABLE IF EXISTS load.orders")
            cur.execute("DROP TABLE IF EXISTS load.customers")
            cur.execute(f"CREATE TABLE load.orders AS SELECT x AS o_key, x % {CUSTOMERS} AS o_cust, "
                        f"x % 97 AS o_total FROM generate_series(1, {ORDERS}) AS g(x)")
            cur.execute(f"CREATE TABLE load.customers AS SELECT x AS c_key, x % {REGIONS} AS c_region "
                        f"FROM generate_series(0, {CUSTOMERS - 1}) AS g(x)")
            cur.close()
        finally:
            conn.close()
        yield dep, base
    finally:
        dep.stop()


def _expected():
    per_cust = [0] * CUSTOMERS
    per_region = [0] * REGIONS
    for k in range(1, ORDERS + 1):
        per_cust[k % CUSTOMERS] += k % 97
        per_region[(k % CUSTOMERS) % REGIONS] += 1
    return per_cust, per_region


def test_32_clients_for_a_minute(loaded):
    dep, base = loaded
    per_cust, per_region = _expected()
    stop_at = time.monotonic() + LOAD_SECONDS
    errors: list[str] = []
    wrong: list[str] = []
    done = [0] * CLIENTS
    lock = threading.Lock()

    def client(i: int):
        rng = random.Random(i)
        try:
            conn = dep.connect()
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(f"client {i} connect: {e}")
            return
        try:
            cur = conn.cursor()
            while time.monotonic() < stop_at:
                op = rng.randrange(4)
                try:
                    if op == 0:
                        k = rng.randrange(1, ORDERS + 1)
                        cur.execute("SELECT o_total FROM load.orders WHERE o_key = ?", (k,))
                        got, want = cur.fetchall(), [(k % 97,)]
                    elif op == 1:
                        c = rng.randrange(CUSTOMERS)
                        cur.execute("SELECT sum(o_total) FROM load.orders WHERE o_cust = ?", (c,))
                        got, want = cur.fetchall(), [(per_cust[c],)]
                    elif op == 2:
                        r = rng.randrange(REGIONS)
                        cur.execute("SELECT count(*) FROM load.orders o JOIN load.customers c "
                                    "ON o.o_cust = c.c_key WHERE c.c_region = ?", (r,))
                        got, want = cur.fetchall(), [(per_region[r],)]
                    else:
                        objects = conn.adbc_get_objects(depth="tables", db_schema_filter="load").read_all()
                        got = sorted(t["table_name"] for c in objects.to_pylist()
                                     for s in c["catalog_db_schemas"] for t in s["db_schema_tables"])
                        want = ["customers", "orders"]
                    if got != want:
                        with lock:
                            wrong.append(f"op {op}: {got} != {want}")
                    done[i] += 1
                except Exception as e:  # noqa: BLE001
                    with lock:
                        errors.append(f"client {i} op {op}: {e}")
            cur.close()
        finally:
            conn.close()

    pids = {"coordinator": dep.coordinator.pid, **{f"executor{n + 1}": e.pid for n, e in enumerate(dep.executors)}}
    samples: list[dict] = []
    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    started = time.monotonic()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        samples.append({"t": round(time.monotonic() - started, 1),
                        **{name: _rss_kib(pid) for name, pid in pids.items()}})
        time.sleep(2)
        assert time.monotonic() - started < LOAD_SECONDS + 300, "clients did not stop"
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    after = [s for s in samples if s["t"] >= WARM_UP_SECONDS]
    report = {
        "clients": CLIENTS, "seconds": round(elapsed, 1), "statements": sum(done),
        "statements_per_second": round(sum(done) / elapsed, 1), "errors": len(errors),
        "wrong": len(wrong),
        "rss_kib_after_warm_up": {name: {"first": after[0][name], "min": min(s[name] for s in after),
                                         "max": max(s[name] for s in after), "last": after[-1][name]}
                                  for name in pids} if after else {},
        "samples": samples,
    }
    (base / "logs").mkdir(exist_ok=True)
    (base / "logs" / "load-test.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1))
    assert errors == [], errors[:10]
    assert wrong == [], wrong[:10]
    assert min(done) > 0, done
