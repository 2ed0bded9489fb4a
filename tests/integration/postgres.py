"""A throw-away PostgreSQL server for the integration tests.

Binaries: $FLOE_TEST_PG_BIN (a folder holding initdb / pg_ctl / postgres), else
the newest /usr/lib/postgresql/<version>/bin, else initdb/pg_ctl on PATH.
Missing binaries are an error (PostgresError), never a skip.

initdb refuses to run as root, so when the tests run as root every server
command runs as the `postgres` OS user (`runuser -u postgres --`) and the
temporary folder (made with tempfile, not under pytest's 0700 basetemp, so that
user can reach it) is handed to that user.

The server:  initdb -A trust -U floe (superuser `floe`, no password),
listen_addresses=127.0.0.1 on a free port, unix socket in the temp folder,
fsync off.  All waits are bounded; stop() is `pg_ctl stop -m immediate`, then
SIGKILL of the postmaster if that did not work, then the folder is removed
(server.log is first copied to `keep_log` if given).
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

PG_USER = "floe"            # database superuser created by initdb -U
PG_DATABASE = "postgres"
OS_USER = "postgres"        # OS user that runs the server when we are root
STARTUP_TIMEOUT_S = float(os.environ.get("FLOE_TEST_PG_STARTUP_TIMEOUT", "60"))

_LIVE: "set[Postgres]" = set()


class PostgresError(RuntimeError):
    pass


def find_pg_bin() -> Path:
    """The folder with initdb, pg_ctl and postgres; PostgresError if none."""
    tried = []
    explicit = os.environ.get("FLOE_TEST_PG_BIN")
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    else:
        def version(p: str) -> tuple:
            m = re.search(r"/postgresql/(\d+)(?:\.(\d+))?/bin$", p)
            return (int(m[1]), int(m[2] or 0)) if m else (0, 0)

        candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
        on_path = shutil.which("pg_ctl")
        if on_path:
            candidates.append(Path(on_path).parent)
    for c in candidates:
        tried.append(str(c))
        if all(os.access(c / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres")):
            return c
    raise PostgresError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found "
        f"(looked in: {tried or ['/usr/lib/postgresql/*/bin', 'PATH']}); install the PostgreSQL server "
        "(e.g. apt-get install postgresql) or set FLOE_TEST_PG_BIN to its bin folder"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(eq=False)
class Postgres:
    """A running PostgreSQL server. Use ``Postgres.start()`` and ``stop()``."""

    bin_dir: Path
    root: Path                  # temp folder: data/, server.log, the unix socket
    port: int
    run_as: Optional[str]       # OS user for server commands (None: ourselves)
    keep_log: Optional[Path] = None  # server.log is copied here by stop()
    _stopped: bool = field(default=False, repr=False)

    # ------------------------------------------------------------ addresses
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def sqlalchemy_uri(self, database: str = PG_DATABASE) -> str:
        """For pyiceberg's SqlCatalog (SQLAlchemy + psycopg2)."""
        return f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def sqlx_uri(self, database: str = PG_DATABASE) -> str:
        """For Floe's --catalog-uri (sqlx)."""
        return f"postgres://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = PG_DATABASE):
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user=PG_USER, dbname=database, connect_timeout=5
        )

    def query(self, sql: str, params=None) -> list[tuple]:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    # ------------------------------------------------------------ helpers
    def _cmd(self, exe: str, *args: str) -> list[str]:
        cmd = [str(self.bin_dir / exe), *args]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        return cmd

    def _run(self, exe: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
        # Output goes to a file, never a pipe: the postmaster that `pg_ctl start`
        # leaves behind would otherwise hold the pipe open and hang the read.
        out_path = self.root / f"{exe}.out"
        with open(out_path, "ab") as out:
            try:
                cp = subprocess.run(
                    self._cmd(exe, *args), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=self.root, timeout=timeout, check=False,
                )
            except subprocess.TimeoutExpired:
                raise self._fail(f"`{exe} {' '.join(args)}` did not finish within {timeout:.0f}s") from None
        if cp.returncode != 0:
            raise self._fail(f"`{exe} {' '.join(args)}` exited with {cp.returncode}:\n{self._tail(out_path)}")
        return cp

    @staticmethod
    def _tail(path: Path, n: int = 30) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return f"<no {path.name}>"

    def log_tail(self, n: int = 30) -> str:
        return self._tail(self.log_path, n)

    def _fail(self, what: str) -> PostgresError:
        return PostgresError(f"PostgreSQL: {what}\n--- {self.log_path}:\n{self.log_tail()}")

    # ------------------------------------------------------------ lifecycle
    @classmethod
    def start(cls, keep_log: Optional[Path] = None, timeout: float = STARTUP_TIMEOUT_S) -> "Postgres":
        bin_dir = find_pg_bin()
        run_as: Optional[str] = None
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam(OS_USER)
            except KeyError:
                raise PostgresError(
                    f"running as root but there is no OS user {OS_USER!r} to run PostgreSQL as "
                    "(initdb refuses root)"
                ) from None
            if shutil.which("runuser") is None:
                raise PostgresError("running as root but `runuser` is missing (needed to run initdb as postgres)")
            run_as = OS_USER
        root = Path(tempfile.mkdtemp(prefix="floe-pg-"))
        if run_as:
            os.chown(root, pw.pw_uid, pw.pw_gid)
        os.chmod(root, 0o700)
        pg = cls(bin_dir=bin_dir, root=root, port=_free_port(), run_as=run_as, keep_log=keep_log)
        _LIVE.add(pg)
        try:
            pg._run(
                "initdb", "-D", str(pg.data_dir), "-A", "trust", "-U", PG_USER,
                "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
                timeout=timeout,
            )
            opts = (
                f"-c listen_addresses=127.0.0.1 -p {pg.port} -k {pg.root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            pg._run(
                "pg_ctl", "-D", str(pg.data_dir), "-l", str(pg.log_path), "-o", opts,
                "-w", "-t", str(int(timeout)), "start",
                timeout=timeout + 10,
            )
            pg._wait_ready(timeout)
        except BaseException:
            pg.stop()
            raise
        return pg

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "not tried"
        while True:
            try:
                if self.query("SELECT 1") == [(1,)]:
                    return
            except Exception as e:  # noqa: BLE001
                last = f"{type(e).__name__}: {e}"
            if time.monotonic() > deadline:
                raise self._fail(f"not accepting connections on 127.0.0.1:{self.port} after {timeout:.0f}s; last: {last}")
            time.sleep(0.2)

    def _postmaster_pid(self) -> Optional[int]:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        _LIVE.discard(self)
        try:
            if (self.data_dir / "postmaster.pid").exists():
                pid = self._postmaster_pid()
                try:
                    subprocess.run(
                        self._cmd("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "-t", "20", "stop"),
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                        cwd=self.root, timeout=30, check=False,
                    )
                except subprocess.TimeoutExpired:
                    pass
                if pid is not None:
                    try:
                        os.kill(pid, 0)
                    except ProcessLookupError:
                        pass
                    else:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
        finally:
            if self.keep_log is not None:
                try:
                    Path(self.keep_log).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(self.log_path, self.keep_log)
                except OSError:
                    pass
            shutil.rmtree(self.root, ignore_errors=True)


@atexit.register
def _stop_leftovers() -> None:
    for pg in list(_LIVE):
        try:
            pg.stop()
        except Exception:  # noqa: BLE001
            pass


# ------------------------------------------------------------------ fixture

import pytest  # noqa: E402  (only the fixture needs pytest)


@pytest.fixture(scope="session")
def postgres_server(workdir):
    """A PostgreSQL server for the session (import this fixture into a test
    module).  Missing binaries or a failed start fail the test - never skip."""
    error: Optional[str] = None
    try:
        pg = Postgres.start(keep_log=Path(workdir) / "postgres" / "server.log")
    except PostgresError as e:
        error = str(e)
    if error is not None:
        pytest.fail(error, pytrace=False)
    try:
        yield pg
    finally:
        pg.stop()
