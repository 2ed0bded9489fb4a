"""Errors reach the ADBC client with the right gRPC status and a useful message,
and a broken table fails fast instead of hanging.

How adbc-driver-flightsql 1.13 surfaces a gRPC error (checked against a
pyarrow.flight server): the DB-API always prepares first (Flight SQL action
CreatePreparedStatement), and a failure there raises
adbc_driver_manager.ProgrammingError with .status_code = AdbcStatusCode.<X> and
str(e) == "<X>: [FlightSQL] <grpc message> (<GrpcCode>; Prepare)", e.g.
"INVALID_ARGUMENT: [FlightSQL] ... (InvalidArgument; Prepare)".
gRPC InvalidArgument -> INVALID_ARGUMENT, NotFound -> NOT_FOUND (both
ProgrammingError); Internal -> InternalError; Unavailable/Unknown -> OperationalError.
"""

from __future__ import annotations

import re
import time

import pytest
from adbc_driver_manager import AdbcStatusCode, Error, ProgrammingError

from compare import fetch, rows, scalar


def _error_of(conn, sql: str) -> Error:
    with pytest.raises(Error) as info:
        fetch(conn, sql)
    return info.value


def test_syntax_error_has_position_and_invalid_argument(target, conn):
    err = _error_of(conn, "SELECT * FORM demo.events")
    assert isinstance(err, ProgrammingError), repr(err)
    assert err.status_code == AdbcStatusCode.INVALID_ARGUMENT, str(err)
    assert re.search(r"Line: 1, Column: \d+", str(err)), str(err)


def test_unknown_table_is_not_found(target, conn):
    err = _error_of(conn, "SELECT * FROM demo.nope")
    assert isinstance(err, ProgrammingError), repr(err)
    assert err.status_code == AdbcStatusCode.NOT_FOUND, str(err)
    assert "demo.nope" in str(err), str(err)


def test_unknown_column_names_the_column(target, conn):
    err = _error_of(conn, "SELECT no_such_column FROM demo.events")
    assert "no_such_column" in str(err), str(err)
    assert err.status_code in (AdbcStatusCode.INVALID_ARGUMENT, AdbcStatusCode.NOT_FOUND), str(err)


def test_connection_usable_after_errors(target, conn):
    _error_of(conn, "SELEC 1")
    _error_of(conn, "SELECT * FROM demo.nope")
    assert rows(fetch(conn, "SELECT count(*) AS n FROM demo.accounts")) == [(target.data.arrow("accounts").num_rows,)]


@pytest.mark.timeout(300)
def test_missing_data_file_fails_fast_and_names_it(target):
    """Delete one data file of demo.fragile from S3 behind the catalog's back:
    reading the table must fail with an error naming the object, within the
    RPC timeout (no hang), and the deployment keeps serving other queries."""
    path = target.data.delete_data_file("fragile")   # s3://bucket/key, idempotent
    key = path.split("/", 3)[3]
    conn = target.floe.connect(timeout_s=90)
    try:
        t0 = time.monotonic()
        with pytest.raises(Error) as info:
            fetch(conn, "SELECT k, sum(v) AS total, count(s) AS n FROM demo.fragile GROUP BY k")
        elapsed = time.monotonic() - t0
        msg = str(info.value)
        assert key.rsplit("/", 1)[-1] in msg, f"error does not name the missing object {path}: {msg}"
        assert info.value.status_code != AdbcStatusCode.TIMEOUT, f"timed out instead of failing: {msg}"
        assert "deadline exceeded" not in msg.lower(), f"timed out instead of failing: {msg}"
        assert elapsed < 80, f"took {elapsed:.0f}s to fail"
        # the deployment is still healthy
        n = scalar(fetch(conn, "SELECT count(*) FROM demo.events"))
        assert n == target.data.arrow("events").num_rows
    finally:
        conn.close()


def test_non_ascii_sql_is_answered(target, conn):
    """Statements are scanned for PARTITIONED BY before parsing; text outside quotes that is
    not ASCII (an identifier, a comment) must neither panic nor confuse that scan."""
    t = fetch(conn, "SELECT 1 AS größe /* Straße */")
    assert t.column_names == ["größe"] and rows(t) == [(1,)]
    err = _error_of(conn, "SELECT * FROM demo.städte")
    assert err.status_code == AdbcStatusCode.NOT_FOUND and "städte" in str(err), str(err)
