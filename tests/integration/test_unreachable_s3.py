"""An S3 endpoint that does not answer: a clear error naming the object, fast, and the
coordinator keeps serving."""

from __future__ import annotations

import socket
import time

import pytest
from adbc_driver_manager import AdbcStatusCode, Error

import catalogs
import floe_cluster
from compare import fetch


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: nothing listens there


@pytest.fixture(scope="module")
def dead_s3_floe(seaweed, sql_data, workdir):
    args = [a for a in seaweed.floe_storage_args()]
    i = args.index("--s3-endpoint")
    args[i + 1] = f"http://127.0.0.1:{_dead_port()}"
    cfg = floe_cluster.CatalogConfig(
        warehouse=seaweed.sql_warehouse,
        kind="sql",
        catalog_uri=catalogs.floe_sqlite_uri(workdir),
        storage_args=args,
    )
    dep = floe_cluster.start_standalone("standalone_dead_s3", cfg, workdir / "logs-dead-s3")
    try:
        yield dep
    finally:
        dep.stop()


def test_unreachable_s3_names_the_object_and_does_not_hang(dead_s3_floe, sql_data):
    conn = dead_s3_floe.connect()
    try:
        started = time.monotonic()
        with pytest.raises(Error) as info:
            fetch(conn, "SELECT count(*) FROM demo.events")
        elapsed = time.monotonic() - started
        err = info.value
        # the table's metadata file lives on the unreachable S3: the error names it
        metadata = sql_data.table("events").metadata_location
        assert metadata in str(err), str(err)
        assert err.status_code == AdbcStatusCode.IO and "Unavailable" in str(err), str(err)
        assert elapsed < 120, f"took {elapsed:.0f}s"
        # the catalog itself (SQLite) still answers: listing tables works
        names = [r["table_name"] for r in fetch(conn, "SHOW TABLES").to_pylist()]
        assert "events" in names, names
    finally:
        conn.close()
