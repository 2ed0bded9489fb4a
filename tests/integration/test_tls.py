"""TLS on the Flight SQL port (`--tls-cert` / `--tls-key`).

Certificates come from a throw-away CA (trustme). A client that trusts the CA connects with
grpc+tls:// (pyarrow.flight and the ADBC driver, with a bearer token), a plain-text client is
refused, a client trusting another CA fails. `floe standalone` registers its own executors on
a loopback control port; a separate coordinator is joined by executors that hold the CA
(`--coordinator https://… --coordinator-ca`).
"""

from __future__ import annotations

import os
import subprocess

import pyarrow.flight as flight
import pytest

import floe_cluster
from compare import fetch
from floe_wire import statement_command


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    import trustme

    base = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    paths = {"ca": base / "ca.pem", "cert": base / "cert.pem", "key": base / "key.pem",
             "other_ca": base / "other-ca.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    with open(paths["cert"], "wb") as f:
        for blob in leaf.cert_chain_pems:
            f.write(blob.bytes())
    leaf.private_key_pem.write_to_path(str(paths["key"]))
    trustme.CA().cert_pem.write_to_path(str(paths["other_ca"]))
    return base, paths


def _passwd(user: str, role: str, password: str) -> str:
    return subprocess.run([str(floe_cluster.floe_bin()), "passwd", "--user", user, "--role", role],
                          input=password + "\n", capture_output=True, text=True, timeout=60,
                          check=True).stdout.strip()


@pytest.fixture(scope="module")
def tls_standalone(certs):
    base, paths = certs
    users = base / "users.txt"
    users.write_text(_passwd("ana", "writer", "tls pass") + "\n")
    dep = floe_cluster.Deployment("tls", "local", base / "logs", secret="")
    dep._start_head([str(floe_cluster.floe_bin()), "standalone", "--warehouse", str(base / "wh"), "--port", "0",
                     "--executors", "2", "--tls-cert", str(paths["cert"]), "--tls-key", str(paths["key"]),
                     "--users", str(users)])
    dep.coordinator.wait_for(floe_cluster.REGISTERED_RE, count=2, what="FLOE_EXECUTOR_REGISTERED")
    try:
        yield dep, paths
    finally:
        dep.stop()


def _tls_client(port: int, ca_path) -> flight.FlightClient:
    return flight.connect(f"grpc+tls://localhost:{port}", tls_root_certs=open(ca_path, "rb").read())


def test_a_client_that_trusts_the_ca_signs_in_and_queries(tls_standalone):
    dep, paths = tls_standalone
    client = _tls_client(dep.flight_port, paths["ca"])
    try:
        header = client.authenticate_basic_token(b"ana", b"tls pass")
        options = flight.FlightCallOptions(headers=[header], timeout=60)
        info = client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(
            "SELECT count(*) AS n FROM (VALUES (1), (2), (3)) AS v(x)")), options)
        t = client.do_get(info.endpoints[0].ticket, options).read_all()
        assert t.column(0).to_pylist() == [3]
    finally:
        client.close()


def test_adbc_over_tls_with_a_bearer_token_runs_on_the_executors(tls_standalone):
    dep, paths = tls_standalone
    import adbc_driver_flightsql

    conn = floe_cluster.connect(
        f"grpc+tls://localhost:{dep.flight_port}",
        db_kwargs={"username": "ana", "password": "tls pass",
                   adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value: open(paths["ca"]).read()})
    try:
        cur = conn.cursor()
        cur.execute("CREATE SCHEMA IF NOT EXISTS tls")
        cur.execute("CREATE TABLE tls.t AS SELECT * FROM (VALUES (1, 'a'), (2, 'b'), (3, 'c')) AS v(k, s)")
        t = fetch(conn, "SELECT sum(k) AS s, max(s) AS m FROM tls.t")
        assert t.to_pylist() == [{"s": 6, "m": "c"}]
    finally:
        conn.close()


def test_plain_text_and_a_wrong_ca_are_refused(tls_standalone):
    dep, paths = tls_standalone
    plain = flight.connect(f"grpc://127.0.0.1:{dep.flight_port}")
    try:
        with pytest.raises(flight.FlightError):
            plain.authenticate_basic_token(b"ana", b"tls pass", flight.FlightCallOptions(timeout=10))
    finally:
        plain.close()
    wrong = _tls_client(dep.flight_port, paths["other_ca"])
    try:
        with pytest.raises(flight.FlightError):
            wrong.authenticate_basic_token(b"ana", b"tls pass", flight.FlightCallOptions(timeout=10))
    finally:
        wrong.close()


def test_executors_join_a_tls_coordinator_with_its_ca(certs):
    """A coordinator process on TLS and an executor process that checks its certificate;
    an executor without the CA refuses to start and says why."""
    base, paths = certs
    dep = floe_cluster.Deployment("tls-cluster", "local", base / "cluster-logs")
    wh = base / "cluster-wh"
    dep._start_head([str(floe_cluster.floe_bin()), "coordinator", "--warehouse", str(wh), "--port", "0",
                     "--tls-cert", str(paths["cert"]), "--tls-key", str(paths["key"])])
    try:
        env = dict(os.environ, FLOE_CLUSTER_SECRET=dep.secret)
        url = f"https://localhost:{dep.flight_port}"
        refused = subprocess.run([str(floe_cluster.floe_bin()), "executor", "--coordinator", url, "--port", "0",
                                  "--warehouse", str(wh)], capture_output=True, text=True, timeout=60, env=env)
        assert refused.returncode != 0 and "--coordinator-ca" in refused.stderr, refused.stderr
        executor = floe_cluster.FloeProcess(
            "tls-cluster-exec1",
            [str(floe_cluster.floe_bin()), "executor", "--coordinator", url, "--coordinator-ca", str(paths["ca"]),
             "--port", "0", "--warehouse", str(wh)],
            base / "cluster-logs", env={"FLOE_CLUSTER_SECRET": dep.secret})
        dep.executors.append(executor)
        dep.coordinator.wait_for(floe_cluster.REGISTERED_RE, count=1, what="FLOE_EXECUTOR_REGISTERED")
        client = _tls_client(dep.flight_port, paths["ca"])
        try:
            options = flight.FlightCallOptions(timeout=60)

            def run(sql):
                info = client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(sql)), options)
                return client.do_get(info.endpoints[0].ticket, options).read_all()

            run("CREATE SCHEMA s")
            run("CREATE TABLE s.t AS SELECT * FROM (VALUES (20), (22)) AS v(x)")  # written by the executor
            assert run("SELECT sum(x) AS answer FROM s.t").column(0).to_pylist() == [42]
        finally:
            client.close()
    finally:
        dep.stop()
