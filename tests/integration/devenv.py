"""Bring up the integration-test environment by hand, for debugging Floe.

    .venv/bin/python tests/integration/devenv.py [--dir DIR] [--fixed-ports]

Starts SeaweedFS, writes the demo.* tables into both catalogs (SQLite
SqlCatalog "floe" and SeaweedFS's REST catalog), prints the Floe command lines
and environment that the fixtures use, then waits until Ctrl-C / SIGTERM and
stops SeaweedFS.  With --fixed-ports SeaweedFS uses its default ports
(S3 8333, REST 8181).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import catalogs  # noqa: E402
import datasets  # noqa: E402
from seaweed import Seaweed  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", help="work directory (default: a new temp dir)")
    ap.add_argument("--fixed-ports", action="store_true", help="use SeaweedFS default ports (8333/8181/...)")
    ap.add_argument("--no-wait", action="store_true", help="print, stop SeaweedFS and exit (smoke test)")
    opts = ap.parse_args()
    if opts.fixed_ports:
        os.environ["FLOE_TEST_SEAWEED_FIXED_PORTS"] = "1"
    work = Path(opts.dir) if opts.dir else Path(tempfile.mkdtemp(prefix="floe-devenv-"))
    work.mkdir(parents=True, exist_ok=True)

    sw = Seaweed.start(work / "seaweed")
    try:
        sql_cat = catalogs.sql_catalog(sw, work)
        datasets.create_tables(sql_cat)
        rest_cat = catalogs.rest_catalog(sw)
        datasets.create_tables(rest_cat)

        storage = " ".join(shlex.quote(a) for a in sw.floe_storage_args())
        sql_flags = (
            f"--warehouse {sw.sql_warehouse} --catalog sql "
            f"--catalog-uri {shlex.quote(catalogs.floe_sqlite_uri(work))} {storage}"
        )
        rest_flags = (
            f"--warehouse s3://{sw.rest_bucket} --catalog rest --catalog-uri {sw.rest_uri} "
            f"--rest-warehouse {sw.rest_warehouse} --rest-credential {sw.rest_credential} {storage}"
        )
        print(
            f"""
work dir        {work}
SeaweedFS log   {sw.log_path}
S3              {sw.s3_endpoint}   keys {sw.access_key} / {sw.secret_key}   region {sw.region}
                buckets: {sw.sql_bucket} (SQL catalog tables), {sw.rest_bucket} (S3 Tables bucket of the REST catalog)
SQL catalog     {catalogs.floe_sqlite_uri(work)}   (catalog name "floe", warehouse {sw.sql_warehouse})
REST catalog    {sw.rest_uri}   warehouse={sw.rest_warehouse}   credential={sw.rest_credential}
tables          demo.events, demo.accounts, demo.fragile in both catalogs

floe standalone {sql_flags} --port 0 --executors 2
floe coordinator {sql_flags} --port 0
floe coordinator {rest_flags} --port 0
floe executor --coordinator http://127.0.0.1:PORT --port 0

Python:  import adbc_driver_flightsql.dbapi as d; c = d.connect("grpc://127.0.0.1:PORT", autocommit=True)
""",
            flush=True,
        )
        if not opts.no_wait:
            stop = threading.Event()
            for s in (signal.SIGINT, signal.SIGTERM):
                signal.signal(s, lambda *_: stop.set())
            print("Ctrl-C to stop SeaweedFS.", flush=True)
            while not stop.wait(1.0):
                if sw.proc.poll() is not None:
                    print(f"SeaweedFS exited ({sw.proc.returncode}); log:\n{sw.log_tail()}", flush=True)
                    return 1
    finally:
        sw.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
