"""A throw-away moto server for the Glue catalog tests.

moto (``moto[server,glue]``, from PyPI) runs as ``python -m moto.server`` on a
free loopback port; every AWS service it emulates answers there, Glue included.
Only Glue is used: the tables' files live on the session SeaweedFS, as they
would on S3 behind a real Glue catalog.

moto's Glue accepts any credentials and keeps every table version, but its
UpdateTable ignores the ``VersionId`` a writer read (moto 5.2.5,
moto/glue/responses.py), so it cannot show Glue's own guard against lost
commits between two processes. The tests show the guard Floe adds on top: a
coordinator's commits to one table never race each other.

All waits are bounded; stop() terminates the server, then kills it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REGION = "us-east-1"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"
STARTUP_TIMEOUT_S = 60.0


class MotoError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MotoGlue:
    port: int
    proc: subprocess.Popen
    log_path: Path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The standard AWS environment a Glue client reads its credentials from."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            # No instance-metadata probing on a machine that is not on EC2.
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self):
        import boto3

        return boto3.client(
            "glue",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def pyiceberg_props(self) -> dict[str, str]:
        return {
            "glue.endpoint": self.endpoint,
            "glue.region": REGION,
            "glue.access-key-id": ACCESS_KEY,
            "glue.secret-access-key": SECRET_KEY,
        }

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no moto log)"

    @classmethod
    def start(cls, log_dir: Path) -> "MotoGlue":
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / "moto.log"
        port = _free_port()
        log = open(log_path, "wb")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        moto = cls(port=port, proc=proc, log_path=log_path)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise MotoError(f"moto server exited with {proc.returncode}:\n{moto.log_tail()}")
            try:
                with urllib.request.urlopen(f"{moto.endpoint}/moto-api/", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                moto.stop()
                raise MotoError(f"moto server not ready in {STARTUP_TIMEOUT_S:.0f} s:\n{moto.log_tail()}")
            time.sleep(0.2)
        # The Glue API itself answers (not just the dashboard).
        moto.client().get_databases()
        return moto

    def stop(self) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode
