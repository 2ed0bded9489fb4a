"""docker/: what can be checked without a Docker engine (this machine has none).

* the compose file parses, and every `floe` flag and `FLOE_` variable it passes exists in
  `floe <role> --help`;
* every file the Dockerfile copies from the build context exists and is not excluded by
  .dockerignore;
* docker/make-secrets.sh makes every secret the compose file mounts, and a coordinator and an
  executor started with the compose file's own commands and those secrets (paths under
  /run/secrets mapped to the files, a local warehouse instead of SeaweedFS, loopback instead of
  the containers' network) admit the executor over TLS and serve a signed-in ADBC client.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import floe_cluster

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
FLOE_SERVICES = ("coordinator", "executor-1", "executor-2")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _help(role: str) -> str:
    return subprocess.run([str(floe_cluster.floe_bin()), role, "--help"], capture_output=True,
                          text=True, timeout=60, check=True).stdout


def test_compose_runs_seaweedfs_a_coordinator_and_two_executors(compose):
    services = compose["services"]
    assert set(FLOE_SERVICES) <= set(services), services.keys()
    assert "seaweedfs" in services
    for name in FLOE_SERVICES:
        assert services[name]["image"] == "floe:dev"
    build = services["coordinator"]["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"


def test_every_flag_and_variable_compose_passes_exists(compose):
    helps = {}
    for name in FLOE_SERVICES:
        service = compose["services"][name]
        role, *args = service["command"]
        text = helps.setdefault(role, _help(role))
        flags = [a for a in args if a.startswith("--")]
        assert flags, name
        for flag in flags:
            assert re.search(rf"(^|\s){re.escape(flag)}[\s<=,]", text, re.M), \
                f"{name}: floe {role} has no {flag}"
        for var in service.get("environment", {}):
            assert f"[env: {var}=" in text, f"{name}: floe {role} reads no {var}"
        # Secrets and settings from the files make-secrets.sh writes.
        for var in ("FLOE_S3_ACCESS_KEY_ID", "FLOE_S3_SECRET_ACCESS_KEY"):
            assert f"[env: {var}" in text, f"{name}: floe {role} reads no {var}"


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [l.strip() for l in lines if l.strip() and not l.startswith("#")]


def test_every_file_the_dockerfile_copies_exists():
    ignored = _dockerignore()
    copies = 0
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("--from") for w in words):
            continue
        for source in words[1:-1]:
            copies += 1
            assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
            assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
    # Every workspace member is copied (a new crate must be added to the Dockerfile).
    members = re.search(r"members\s*=\s*\[(.*?)\]", (ROOT / "Cargo.toml").read_text(), re.S)[1]
    for member in re.findall(r'"([^"]+)"', members):
        assert re.search(rf"^COPY {re.escape(member)} ", (DOCKER / "Dockerfile").read_text(), re.M), \
            f"the Dockerfile does not copy workspace member {member}"
    assert copies >= 5


@pytest.mark.skipif(shutil.which("openssl") is None, reason="make-secrets.sh needs openssl")
def test_the_compose_commands_and_secrets_make_a_secure_cluster(compose, tmp_path):
    secrets_dir = tmp_path / "secrets"
    made = subprocess.run(["bash", str(DOCKER / "make-secrets.sh")], capture_output=True, text=True,
                          timeout=120, env={**floe_cluster._clean_env(),
                                            "FLOE_BIN": str(floe_cluster.floe_bin()),
                                            "FLOE_SECRETS_DIR": str(secrets_dir)})
    assert made.returncode == 0, made.stderr
    password = re.search(r"password: (\S+)", made.stdout)[1]
    mounted = {name: secrets_dir / Path(spec["file"]).name for name, spec in compose["secrets"].items()}
    for name, path in mounted.items():
        assert path.is_file() and path.stat().st_size > 0, f"make-secrets.sh made no {name}"

    def local(args: list[str]) -> list[str]:
        out = []
        for a in args:
            if a.startswith("/run/secrets/"):
                a = str(mounted[a.removeprefix("/run/secrets/")])
            elif a.startswith("sqlite:///var/lib/floe/"):
                a = f"sqlite://{tmp_path}/catalog.db"
            elif a == "0.0.0.0":
                a = "127.0.0.1"
            out.append(a)
        return out

    def env(service: dict) -> dict:
        e = {k: str(v) for k, v in service["environment"].items() if not k.startswith("FLOE_S3_")}
        e["FLOE_CLUSTER_SECRET_FILE"] = str(mounted["cluster_secret"])
        e["FLOE_WAREHOUSE"] = str(tmp_path / "warehouse")
        return e

    services = compose["services"]
    head = services["coordinator"]
    args = local(head["command"])
    args[args.index("--port") + 1] = "0"
    coordinator = floe_cluster.FloeProcess("compose-coordinator", [str(floe_cluster.floe_bin()), *args],
                                           tmp_path, env=env(head))
    executor = None
    try:
        port = int(coordinator.wait_for(floe_cluster.READY_RE, what="FLOE_READY")[0]["port"])
        worker = services["executor-1"]
        args = local(worker["command"])
        args[args.index("--coordinator") + 1] = f"https://localhost:{port}"
        args[args.index("--port") + 1] = "0"
        args[args.index("--advertise-host") + 1] = "127.0.0.1"
        executor = floe_cluster.FloeProcess("compose-executor", [str(floe_cluster.floe_bin()), *args],
                                            tmp_path, env=env(worker))
        coordinator.wait_for(floe_cluster.REGISTERED_RE, what="FLOE_EXECUTOR_REGISTERED")

        ca = mounted["ca"].read_text()
        with floe_cluster.connect(f"grpc+tls://localhost:{port}", db_kwargs={
                "username": "admin", "password": password,
                "adbc.flight.sql.client_option.tls_root_certs": ca}) as conn:
            cur = conn.cursor()
            cur.execute("CREATE SCHEMA compose")
            cur.execute("CREATE TABLE compose.t AS SELECT * FROM (VALUES (1), (2), (3)) AS v(x)")
            cur.execute("SELECT sum(x) FROM compose.t")
            assert cur.fetchall() == [(6,)]
        # A wrong password is refused.
        with pytest.raises(Exception, match="(?i)unauthenticated|password"):
            with floe_cluster.connect(f"grpc+tls://localhost:{port}", db_kwargs={
                    "username": "admin", "password": password + "x",
                    "adbc.flight.sql.client_option.tls_root_certs": ca}) as conn:
                conn.cursor().execute("SELECT 1")
    finally:
        if executor is not None:
            executor.stop()
        coordinator.stop()
