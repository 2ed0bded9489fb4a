"""A rogue on the cluster's network: it speaks Floe's control-plane and task
protocol (floe_wire.py) but, first, does not hold the cluster secret; then,
holding it, tries to make an executor read outside its storage roots.

Without the secret it gets nothing: no registration, no task, no storage key,
no shuffle data, and the real executors keep answering (an id cannot be taken
over, a flood of fake registrations changes nothing).  With the secret it is a
member: it receives tasks, which carry no storage credentials; and a task it
forges (a captured real task with its file swapped for a local file outside
the warehouse) is refused by a real executor with PERMISSION_DENIED, while the
same task unchanged runs (positive control).
"""

from __future__ import annotations

import os
import re
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

import floe_cluster
import floe_wire as w
from compare import fetch, rows

# A join with shuffles and an aggregation: every executor gets tasks.
QUERY = ("SELECT a.account_id % 7 AS k, count(*) AS n FROM demo.accounts a "
         "JOIN demo.events e ON a.account_id = e.user_id GROUP BY 1 ORDER BY 1")


@pytest.fixture
def own_cluster(seaweed, sql_data, workdir):
    floe_cluster.floe_bin()
    cfg = floe_cluster.sql_catalog_config(seaweed, workdir)
    dep = floe_cluster.start_cluster(f"rogue{time.monotonic_ns()}", cfg, workdir / "logs")
    try:
        yield dep
    finally:
        dep.stop()


class RecordingFlight(flight.FlightServerBase):
    """A Flight server that records every ticket sent to it and answers nothing."""

    def __init__(self):
        super().__init__("grpc://127.0.0.1:0")
        self.tickets: list[bytes] = []

    def do_get(self, context, ticket):
        self.tickets.append(ticket.ticket)
        raise flight.FlightServerError("rogue executor: refusing to run anything")


def _expected(conn) -> list:
    return rows(fetch(conn, QUERY))


def test_without_the_secret_a_rogue_gets_nothing_and_disturbs_nothing(own_cluster, sql_data):
    dep = own_cluster
    conn = dep.connect()
    rogue = RecordingFlight()
    cp = w.ControlPlane(dep.coordinator_port)
    try:
        expected = _expected(conn)
        assert expected, "the query returns rows"
        real_ids = [i for i, _ in dep.registrations()]
        endpoint = f"http://127.0.0.1:{rogue.port}"
        wrong = b"not-the-cluster-secret-0000"

        def refused(call):
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, info.value
            assert "secret" not in info.value.details().replace("cluster secret", ""), info.value.details()

        # A proof with the wrong secret, for a new id and for the real executors' ids.
        for executor_id in ["rogue-1", *real_ids]:
            cn, en = cp.challenge(), os.urandom(32)
            refused(lambda: cp.register(executor_id, endpoint, cn, en,
                                        w.register_proof(wrong, cn, en, executor_id, endpoint)))
        # No proof, a nonce the coordinator never issued, a replayed challenge.
        refused(lambda: cp.register("rogue-2", endpoint, cp.challenge(), os.urandom(32), b""))
        refused(lambda: cp.register("rogue-3", endpoint, os.urandom(32), os.urandom(32), os.urandom(32)))
        # 20 fake executors at a dead address.
        for i in range(20):
            cn, en = cp.challenge(), os.urandom(32)
            refused(lambda: cp.register(f"rogue-dead-{i}", "http://127.0.0.1:9", cn, en, os.urandom(32)))
        # Heartbeats for the real executors without their session key.
        for executor_id in real_ids:
            refused(lambda: cp.heartbeat(executor_id, os.urandom(32), sequence=10**9))

        assert [i for i, _ in dep.registrations()] == real_ids, "a rogue was registered"
        for _ in range(5):
            assert _expected(conn) == expected
        assert rogue.tickets == [], "the rogue received a task"

        # Shuffle data and tasks straight from a real executor: refused without the keys.
        for _, ep in dep.registrations():
            client = flight.connect(re.sub(r"^https?://", "grpc://", ep))
            try:
                for ticket in (w.shuffle_ticket(w.shuffle_read(), os.urandom(32)),
                               w.task_ticket(w.task_definition(), os.urandom(32))):
                    with pytest.raises(flight.FlightUnauthorizedError):
                        client.do_get(flight.Ticket(ticket)).read_all()
            finally:
                client.close()
        assert _expected(conn) == expected
    finally:
        cp.close()
        rogue.shutdown()
        conn.close()


def _reencode(fields: dict[int, list], varint_fields: set[int]) -> bytes:
    out = b""
    for number in sorted(fields):
        for value in fields[number]:
            out += w.pb_uint(number, value) if number in varint_fields else w.pb_bytes(number, value)
    return out


TASK_VARINTS = {1, 4, 5}          # TaskDefinition: protocol_version, stage_id, partition
DATA_FILE_VARINTS = {2, 3, 4, 5}  # DataFileTask: sizes, offsets, record count


def _with_files(task: dict[int, list], paths: list[str]) -> dict[int, list]:
    """A copy of a decoded TaskDefinition whose FileGroup names `paths`."""
    out = dict(task)
    group = w.pb_decode(task.get(7, [b""])[0])
    files = [w.pb_decode(f) for f in group.get(1, [])]
    assert files, "the captured task reads files"
    replaced = []
    for path, f in zip(paths, files):
        f = dict(f)
        f[1] = [path.encode()]
        replaced.append(_reencode(f, DATA_FILE_VARINTS))
    out[7] = [b"".join(w.pb_bytes(1, f) for f in replaced)]
    return out


class FakeCoordinator:
    """A control plane in Python that admits executors proving `secret` (and
    proves it back), so that the test knows each executor's session key."""

    def __init__(self, secret: bytes, accept_any: bool = False):
        self.secret = secret
        self.accept_any = accept_any
        self.nonces: set[bytes] = set()
        self.keys: dict[str, tuple[str, bytes]] = {}
        self.registered = threading.Event()
        handlers = {
            "Challenge": grpc.unary_unary_rpc_method_handler(self._challenge),
            "Register": grpc.unary_unary_rpc_method_handler(self._register),
            "Heartbeat": grpc.unary_unary_rpc_method_handler(self._heartbeat),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("floe.v1.ControlPlane", handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _challenge(self, request, context):
        nonce = os.urandom(32)
        self.nonces.add(nonce)
        return w.pb_bytes(1, nonce) + w.pb_uint(2, w.PROTOCOL_VERSION)

    def _register(self, request, context):
        f = w.pb_decode(request)
        executor_id, endpoint = f[1][0].decode(), f[2][0].decode()
        cn, en, proof = f[5][0], f[6][0], f[7][0]
        slots = f.get(8, [0])[0]
        valid = proof == w.register_proof(self.secret, cn, en, executor_id, endpoint, task_slots=slots)
        if cn not in self.nonces or not (valid or self.accept_any):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "no")
        self.nonces.discard(cn)
        self.keys[executor_id] = (endpoint, w.session_key(self.secret, cn, en, executor_id))
        self.registered.set()
        return (w.pb_uint(2, 200) + w.pb_uint(3, w.PROTOCOL_VERSION)
                + w.pb_bytes(4, w.coordinator_proof(self.secret, cn, en, executor_id)))

    def _heartbeat(self, request, context):
        return w.pb_uint(1, 1)

    def stop(self):
        self.server.stop(grace=None)


def _start_executor(dep_like: floe_cluster.Deployment, coordinator_port: int, name: str, secret: str,
                    log_dir: Path) -> floe_cluster.FloeProcess:
    return floe_cluster.FloeProcess(
        name,
        [str(floe_cluster.floe_bin()), "executor", "--coordinator", f"http://127.0.0.1:{coordinator_port}",
         "--port", "0", *dep_like.catalog.executor_args()],
        log_dir,
        env={"FLOE_CLUSTER_SECRET": secret},
    )


def test_with_the_secret_tasks_carry_no_keys_and_paths_stay_in_the_roots(own_cluster, seaweed, tmp_path,
                                                                          workdir):
    dep = own_cluster
    secret = dep.secret.encode()
    conn = dep.connect()
    member = RecordingFlight()
    cp = w.ControlPlane(dep.coordinator_port)
    fake = FakeCoordinator(secret)
    victim = None
    try:
        # 1. A member with the secret is admitted and gets tasks; none carries a storage key.
        endpoint = f"http://127.0.0.1:{member.port}"
        cp.admit(secret, "member-1", endpoint)
        for _ in range(3):
            try:
                fetch(conn, QUERY)
            except Exception:  # noqa: BLE001 - its tasks fail; the query may be re-run or fail
                pass
        assert member.tickets, "the admitted member received no task"
        for ticket in member.tickets:
            assert seaweed.secret_key.encode() not in ticket, "a task carries the S3 secret key"
            for prop in (b"s3.access-key-id", b"s3.secret-access-key", b"s3.endpoint"):
                assert prop not in ticket, f"a task carries storage settings ({prop!r})"
        captured = next(t for t in (w.pb_decode(w.pb_decode(w.pb_decode(x)[1][0])[1][0]) for x in member.tickets)
                        if w.pb_decode(t.get(7, [b""])[0]).get(1))

        # 2. A real executor run by a coordinator the test controls (so it knows its key).
        victim = _start_executor(dep, fake.port, "victim", dep.secret, workdir / "logs")
        victim.wait_for(floe_cluster.EXECUTOR_READY_RE, what="FLOE_EXECUTOR_READY")
        assert fake.registered.wait(30)
        (victim_id, (victim_ep, key)), = fake.keys.items()
        client = flight.connect(re.sub(r"^https?://", "grpc://", victim_ep))

        def send(task: dict[int, list]):
            body = _reencode(task, TASK_VARINTS)
            return client.do_get(flight.Ticket(w.task_ticket(body, w.task_mac(key, body)))).read_all()

        task = dict(captured)
        task[10] = [victim_id.encode()]
        task.pop(8, None)  # stream the output back instead of into shuffle buckets
        task.pop(9, None)

        # The captured task, re-addressed to the victim: a positive control (it reads S3).
        ok = dict(task)
        ok[11] = [os.urandom(32)]
        try:
            table = send(ok)
            print(f"\npositive control: the re-addressed task returned {table.num_rows} row(s)")
        except flight.FlightUnauthorizedError as e:
            pytest.fail(f"a valid task was refused: {e}")
        except pa.ArrowException as e:  # the fragment may need its shuffle inputs; not a refusal
            print(f"\npositive control: the task ran and failed on its own terms: {e}")
            assert "storage roots" not in str(e), str(e)

        # Replayed: refused.
        with pytest.raises(flight.FlightUnauthorizedError) as info:
            send(ok)
        assert "replayed" in str(info.value), str(info.value)

        # Its file swapped for a local file outside the warehouse: refused, nothing read.
        canary = tmp_path / "canary.parquet"
        pq.write_table(pa.table({"secret": ["floe-canary-data"]}), canary)
        for outside in (f"file://{canary}", f"{dep.catalog.warehouse}/../escape/a.parquet",
                        "s3://another-bucket/wh/x.parquet", str(canary)):
            bad = _with_files(task, [outside])
            bad[11] = [os.urandom(32)]
            with pytest.raises(flight.FlightUnauthorizedError) as info:
                send(bad)
            msg = str(info.value)
            assert "outside this executor's storage roots" in msg, msg
            assert "floe-canary-data" not in msg

        # For another executor, or from another protocol version: refused.
        other = dict(task)
        other[10], other[11] = [b"executor-someone-else"], [os.urandom(32)]
        with pytest.raises(flight.FlightUnauthorizedError):
            send(other)
        old = dict(task)
        old[1], old[11] = [w.PROTOCOL_VERSION - 1], [os.urandom(32)]
        with pytest.raises(pa.ArrowInvalid) as info:
            send(old)
        assert "protocol version" in str(info.value)
        client.close()
    finally:
        fake.stop()
        cp.close()
        member.shutdown()
        conn.close()
        if victim is not None:
            victim.stop()


def test_an_executor_refuses_a_coordinator_without_the_secret(own_cluster, workdir):
    """A fake coordinator that admits anyone but cannot prove the secret back: the
    executor does not take it for its coordinator (it never becomes ready, so it
    never runs a task from it)."""
    fake = FakeCoordinator(b"a-coordinator-that-guesses-0000", accept_any=True)
    victim = _start_executor(own_cluster, fake.port, "victim2", own_cluster.secret, workdir / "logs")
    try:
        assert fake.registered.wait(30), "the executor never tried to register"
        time.sleep(2)
        assert not victim.matches(floe_cluster.EXECUTOR_READY_RE), "the executor accepted the fake coordinator"
        assert "did not prove" in victim.stderr_path.read_text(errors="replace")
    finally:
        victim.stop()
        fake.stop()
