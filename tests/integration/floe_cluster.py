"""Start, watch and stop Floe processes for the integration tests.

Binary: $FLOE_BIN, default $CARGO_TARGET_DIR/debug/floe with CARGO_TARGET_DIR
defaulting to ~/.cache/floe-target.

Readiness contract (stdout lines, one per line, anywhere in the output):
    FLOE_READY flight_sql=127.0.0.1:PORT [coordinator=127.0.0.1:PORT2]
    FLOE_EXECUTOR_REGISTERED id=<id> endpoint=<url>      (coordinator/standalone)
    FLOE_EXECUTOR_READY flight=127.0.0.1:PORT            (executor)
Executors are pointed at ``--coordinator http://127.0.0.1:PORT`` where PORT is
the ``coordinator=`` field of FLOE_READY if present, else the flight_sql port.

Every process runs in its own session/process group; stop() sends SIGTERM to
the group, then SIGKILL.  stdout is read by a thread (kept in memory and
copied to <log_dir>/<name>.stdout.log); stderr goes to <name>.stderr.log.
All waits are bounded (FLOE_TEST_STARTUP_TIMEOUT, default 60 s).
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

STARTUP_TIMEOUT_S = float(os.environ.get("FLOE_TEST_STARTUP_TIMEOUT", "60"))
QUERY_TIMEOUT_S = float(os.environ.get("FLOE_TEST_QUERY_TIMEOUT", "120"))

READY_RE = re.compile(r"^FLOE_READY flight_sql=(?P<host>[\w.\-]+):(?P<port>\d+)(?:.*?\bcoordinator=(?P<chost>[\w.\-]+):(?P<cport>\d+))?")
REGISTERED_RE = re.compile(r"^FLOE_EXECUTOR_REGISTERED id=(?P<id>\S+) endpoint=(?P<endpoint>\S+)")
EXECUTOR_READY_RE = re.compile(r"^FLOE_EXECUTOR_READY flight=(?P<host>[\w.\-]+):(?P<port>\d+)")

_LIVE: "set[FloeProcess]" = set()


class FloeStartError(RuntimeError):
    pass


def floe_bin() -> Path:
    explicit = os.environ.get("FLOE_BIN")
    if explicit:
        p = Path(explicit)
    else:
        target = os.environ.get("CARGO_TARGET_DIR") or str(Path.home() / ".cache" / "floe-target")
        p = Path(target) / "debug" / "floe"
    if not p.is_file() or not os.access(p, os.X_OK):
        raise FloeStartError(
            f"Floe binary not found or not executable at {p} "
            "(build it with `cargo build`, or set FLOE_BIN / CARGO_TARGET_DIR)"
        )
    return p


def _clean_env(extra: Optional[dict] = None) -> dict:
    """The parent's environment without FLOE_* and AWS_* (the harness passes
    everything as explicit flags, so a developer's shell can't leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOE_", "AWS_"))}
    env.setdefault("RUST_BACKTRACE", "1")
    env.setdefault("RUST_LOG", os.environ.get("FLOE_TEST_RUST_LOG", "info"))
    env["NO_COLOR"] = "1"
    if extra:
        env.update(extra)
    return env


class FloeProcess:
    """One Floe process with a stdout reader thread."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: Optional[dict] = None):
        self.name = name
        self.args = [str(a) for a in args]
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = self.log_dir / f"{name}.stdout.log"
        self.stderr_path = self.log_dir / f"{name}.stderr.log"
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self.flight_port: Optional[int] = None  # executors: from FLOE_EXECUTOR_READY
        stderr = open(self.stderr_path, "wb")
        try:
            self.proc = subprocess.Popen(
                self.args,
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                env=_clean_env(env),
                cwd=self.log_dir,
                start_new_session=True,
            )
        finally:
            stderr.close()
        _LIVE.add(self)
        self._reader = threading.Thread(target=self._read, name=f"floe-stdout-{name}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        with open(self.stdout_path, "wb") as log:
            for raw in iter(self.proc.stdout.readline, b""):
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self._cond:
                    self._lines.append(line)
                    self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def matches(self, regex: re.Pattern) -> list[re.Match]:
        return [m for m in (regex.search(l) for l in self.lines()) if m]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for(self, regex: re.Pattern, count: int = 1, timeout: Optional[float] = None,
                 what: Optional[str] = None, predicate=None) -> list[re.Match]:
        """Wait until `count` stdout lines match `regex` (and `predicate`).
        Raises FloeStartError (with log tails) on exit or timeout
        (default timeout: STARTUP_TIMEOUT_S)."""
        what = what or regex.pattern
        timeout = STARTUP_TIMEOUT_S if timeout is None else timeout
        deadline = time.monotonic() + timeout
        exited_at: Optional[float] = None
        with self._cond:
            while True:
                found = [m for m in (regex.search(l) for l in self._lines) if m and (predicate is None or predicate(m))]
                if len(found) >= count:
                    return found
                if self._eof or self.proc.poll() is not None:
                    # give the reader a bounded moment to drain the pipe
                    if exited_at is None:
                        exited_at = time.monotonic()
                    if not self._eof and time.monotonic() - exited_at < 2.0:
                        self._cond.wait(timeout=0.2)
                        continue
                    raise FloeStartError(
                        f"{self.name} exited (code {self.proc.poll()}) before printing {what!r}\n" + self.describe()
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FloeStartError(
                        f"{self.name}: no {what!r} within {timeout:.0f}s (found {len(found)}/{count})\n" + self.describe()
                    )
                self._cond.wait(timeout=min(left, 0.5))

    def describe(self, n: int = 30) -> str:
        try:
            err = self.stderr_path.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            err = []
        out = self.lines()[-n:]
        return (
            f"  command: {' '.join(self.args)}\n"
            f"  --- last stdout ({self.stdout_path}):\n    " + "\n    ".join(out) + "\n"
            f"  --- last stderr ({self.stderr_path}):\n    " + "\n    ".join(err)
        )

    def stop(self, sig: int = signal.SIGTERM, grace: float = 10.0) -> Optional[int]:
        """Stop the process group: `sig`, then SIGKILL after `grace` seconds."""
        try:
            if self.proc.poll() is None:
                for s, wait in ((sig, grace), (signal.SIGKILL, 10.0)):
                    try:
                        os.killpg(self.proc.pid, s)
                    except ProcessLookupError:
                        break
                    try:
                        self.proc.wait(timeout=wait)
                        break
                    except subprocess.TimeoutExpired:
                        continue
            else:
                # the leader is gone; make sure no child of it lingers
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        finally:
            _LIVE.discard(self)
            self._reader.join(timeout=5)
        return self.proc.poll()

    def kill(self) -> Optional[int]:
        """Hard kill (SIGKILL) - simulates a crash."""
        return self.stop(sig=signal.SIGKILL, grace=10.0)


@atexit.register
def _kill_leftovers() -> None:
    for p in list(_LIVE):
        try:
            p.stop(grace=3.0)
        except Exception:  # noqa: BLE001
            pass


# --------------------------------------------------------------- deployments


@dataclass
class CatalogConfig:
    """Catalog + storage flags shared by coordinator and standalone."""

    warehouse: str
    kind: str = "sql"                    # "sql" | "rest" | "glue"
    catalog_uri: Optional[str] = None
    rest_warehouse: Optional[str] = None
    rest_credential: Optional[str] = None
    storage_args: list[str] = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)   # e.g. the --glue-* flags
    env: dict[str, str] = field(default_factory=dict)      # e.g. AWS_* for Glue (coordinator only)

    def args(self) -> list[str]:
        a = ["--warehouse", self.warehouse, "--catalog", self.kind]
        if self.catalog_uri:
            a += ["--catalog-uri", self.catalog_uri]
        if self.rest_warehouse:
            a += ["--rest-warehouse", self.rest_warehouse]
        if self.rest_credential:
            a += ["--rest-credential", self.rest_credential]
        return a + list(self.extra_args) + list(self.storage_args)


    def executor_args(self) -> list[str]:
        """The flags an executor needs: its own storage settings and roots."""
        return ["--warehouse", self.warehouse] + list(self.storage_args)


def sql_catalog_config(seaweed, workdir: Path) -> CatalogConfig:
    """The session's SQLite SQL catalog over SeaweedFS, as Floe's flags."""
    import catalogs

    return CatalogConfig(
        warehouse=seaweed.sql_warehouse,
        kind="sql",
        catalog_uri=catalogs.floe_sqlite_uri(workdir),
        storage_args=seaweed.floe_storage_args(),
    )


# The secret every test cluster's coordinator and executors share (passed in the
# environment, as the README recommends, never on the command line).
CLUSTER_SECRET = "floe-test-cluster-secret-3b9e51c2"


def connection(dep):
    """For fixtures: yields an ADBC connection to deployment `dep`, closed afterwards."""
    c = dep.connect()
    try:
        yield c
    finally:
        try:
            c.close()
        except Exception:  # noqa: BLE001
            pass


def connect(uri: str, timeout_s: float = QUERY_TIMEOUT_S, **kwargs):
    """ADBC DB-API connection to a Flight SQL endpoint, with RPC timeouts so a
    stuck query fails instead of hanging the test run."""
    import adbc_driver_flightsql
    import adbc_driver_flightsql.dbapi as flight_dbapi

    t = str(timeout_s)
    db_kwargs = {
        adbc_driver_flightsql.DatabaseOptions.TIMEOUT_QUERY.value: t,
        adbc_driver_flightsql.DatabaseOptions.TIMEOUT_FETCH.value: t,
        adbc_driver_flightsql.DatabaseOptions.TIMEOUT_UPDATE.value: t,
    }
    db_kwargs.update(kwargs.pop("db_kwargs", {}) or {})
    kwargs.setdefault("autocommit", True)
    return flight_dbapi.connect(uri, db_kwargs=db_kwargs, **kwargs)


class Deployment:
    """A running Floe deployment (cluster or standalone)."""

    def __init__(self, name: str, catalog_kind: str, log_dir: Path,
                 catalog: Optional["CatalogConfig"] = None, secret: str = CLUSTER_SECRET):
        self.name = name
        self.catalog = catalog
        self.secret = secret
        self.catalog_kind = catalog_kind      # which dataset it serves: "sql" | "rest"
        self.log_dir = Path(log_dir)
        self.coordinator: Optional[FloeProcess] = None
        self.executors: list[FloeProcess] = []
        self.flight_port: Optional[int] = None
        self.coordinator_port: Optional[int] = None
        self._n_exec_started = 0

    def __repr__(self) -> str:
        return f"<Deployment {self.name} {self.uri if self.flight_port else '(not started)'}>"

    @property
    def uri(self) -> str:
        return f"grpc://127.0.0.1:{self.flight_port}"

    @property
    def coordinator_url(self) -> str:
        return f"http://127.0.0.1:{self.coordinator_port}"

    def connect(self, **kwargs):
        return connect(self.uri, **kwargs)

    def registrations(self) -> list[tuple[str, str]]:
        return [(m["id"], m["endpoint"]) for m in self.coordinator.matches(REGISTERED_RE)]

    def describe(self) -> str:
        procs = [self.coordinator] + self.executors
        return "\n".join(f"[{p.name}] pid={p.pid} alive={p.alive()}\n{p.describe()}" for p in procs if p)

    # -- starting
    def _secret_env(self) -> dict:
        return {"FLOE_CLUSTER_SECRET": self.secret} if self.secret else {}

    def _start_head(self, args: list[str]) -> None:
        env = {**self._secret_env(), **(self.catalog.env if self.catalog else {})}
        self.coordinator = FloeProcess(f"{self.name}-head", args, self.log_dir, env=env)
        m = self.coordinator.wait_for(READY_RE, what="FLOE_READY")[0]
        self.flight_port = int(m["port"])
        self.coordinator_port = int(m["cport"]) if m["cport"] else self.flight_port

    def start_executor(self, timeout: Optional[float] = None) -> FloeProcess:
        """Start one more executor process and wait until the coordinator has
        registered it (matched by its Flight port)."""
        self._n_exec_started += 1
        name = f"{self.name}-exec{self._n_exec_started}"
        storage = self.catalog.executor_args() if self.catalog else []
        ex = FloeProcess(
            name,
            [str(floe_bin()), "executor", "--coordinator", self.coordinator_url, "--port", "0",
             *storage],
            self.log_dir,
            env=self._secret_env(),
        )
        self.executors.append(ex)
        port = int(ex.wait_for(EXECUTOR_READY_RE, what="FLOE_EXECUTOR_READY", timeout=timeout)[0]["port"])
        ex.flight_port = port
        try:
            self.coordinator.wait_for(
                REGISTERED_RE,
                what=f"FLOE_EXECUTOR_REGISTERED for executor port {port}",
                timeout=timeout,
                predicate=lambda m: re.search(rf":{port}(?!\d)", m["endpoint"]) is not None,
            )
        except FloeStartError as e:
            raise FloeStartError(f"{e}\n[{name}]\n{ex.describe()}") from None
        return ex

    def kill_executor(self, index: int = 0) -> FloeProcess:
        """SIGKILL one executor (simulated crash); returns it."""
        ex = self.executors[index]
        ex.kill()
        return ex

    def stop(self) -> None:
        for ex in reversed(self.executors):
            ex.stop()
        if self.coordinator is not None:
            self.coordinator.stop()


def start_cluster(name: str, catalog: CatalogConfig, log_dir: Path, executors: int = 2) -> Deployment:
    """`floe coordinator` + `executors` separate `floe executor` processes."""
    dep = Deployment(name, catalog.kind, log_dir, catalog=catalog)
    try:
        dep._start_head([str(floe_bin()), "coordinator", *catalog.args(), "--port", "0"])
        for _ in range(executors):
            dep.start_executor()
    except BaseException:
        dep.stop()
        raise
    return dep


def start_standalone(name: str, catalog: CatalogConfig, log_dir: Path, executors: int = 2,
                     wait_registrations: bool = True) -> Deployment:
    """`floe standalone --executors N`; waits for FLOE_READY and (by default)
    N FLOE_EXECUTOR_REGISTERED lines."""
    dep = Deployment(name, catalog.kind, log_dir, catalog=catalog, secret="")
    try:
        dep._start_head(
            [str(floe_bin()), "standalone", *catalog.args(), "--port", "0", "--executors", str(executors)]
        )
        if wait_registrations and executors > 0:
            dep.coordinator.wait_for(REGISTERED_RE, count=executors, what="FLOE_EXECUTOR_REGISTERED")
    except BaseException:
        dep.stop()
        raise
    return dep
