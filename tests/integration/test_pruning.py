"""File pruning, observed through EXPLAIN / EXPLAIN ANALYZE.

Contract with Floe's plan text (rows of plan_type, plan):
  * the scan prints   IcebergScanExec: table=demo.events, files=<selected>/<total>, bytes=<selected>/<total>, ...
    where files/bytes are counted from the manifests after pruning
    (bytes = sum of file_size_in_bytes);
  * EXPLAIN ANALYZE additionally shows the executed scan's metrics
    files_scanned=<n> and bytes_scanned=<n> (if they appear on several
    lines, e.g. once per remote stage/executor, they are summed).
Expected numbers are independent: pyiceberg's own scan planning
(table.scan(row_filter).plan_files()) and table.inspect.files().
"""

from __future__ import annotations

import re

import pytest

import cases
from compare import fetch, plan_text, scalar

SCAN_RE = re.compile(r"IcebergScanExec:[^\n]*?\bfiles=(\d+)/(\d+)")
SCAN_BYTES_RE = re.compile(r"IcebergScanExec:[^\n]*?\bbytes=(\d+)/(\d+)")
FILES_SCANNED_RE = re.compile(r"\bfiles_scanned=(\d+)")
BYTES_SCANNED_RE = re.compile(r"\bbytes_scanned=(\d+)")


def _expected(target, case):
    planned = target.data.planned_files("events", case.iceberg_filter)
    total = target.data.data_files("events")
    return planned, total


def _scan_counts(text: str):
    m = SCAN_RE.findall(text)
    assert m, f"no 'IcebergScanExec: ... files=N/M' in plan:\n{text}"
    assert len(m) == 1, f"expected one IcebergScanExec for demo.events, found {len(m)}:\n{text}"
    return int(m[0][0]), int(m[0][1])


@pytest.mark.parametrize("case", cases.PRUNE_CASES, ids=str)
def test_explain_shows_selected_files(target, conn, case):
    planned, total = _expected(target, case)
    text = plan_text(fetch(conn, f"EXPLAIN SELECT count(*) FROM demo.events WHERE {case.sql_predicate}"))
    selected, all_files = _scan_counts(text)
    assert all_files == len(total), f"total files: floe {all_files}, iceberg {len(total)}\n{text}"
    assert selected == len(planned), f"selected files: floe {selected}, pyiceberg plan_files {len(planned)}\n{text}"


@pytest.mark.parametrize("case", cases.PRUNE_CASES, ids=str)
def test_explain_analyze_files_scanned(target, conn, case):
    planned, total = _expected(target, case)
    sql = f"SELECT count(*) FROM demo.events WHERE {case.sql_predicate}"
    text = plan_text(fetch(conn, f"EXPLAIN ANALYZE {sql}"))

    selected, all_files = _scan_counts(text)
    assert all_files == len(total), f"total files: floe {all_files}, iceberg {len(total)}\n{text}"
    assert selected == len(planned), f"selected files: floe {selected}, pyiceberg {len(planned)}\n{text}"
    if case.expect_pruning:
        assert selected < all_files, text
    else:
        assert selected == all_files, text

    b = SCAN_BYTES_RE.findall(text)
    assert b, f"no 'bytes=N/M' on the IcebergScanExec line:\n{text}"
    sel_bytes, total_bytes = int(b[0][0]), int(b[0][1])
    assert sel_bytes == sum(t.file.file_size_in_bytes for t in planned), text
    assert total_bytes == sum(f["file_size_in_bytes"] for f in total), text

    scanned = [int(x) for x in FILES_SCANNED_RE.findall(text)]
    assert scanned, f"no files_scanned=N metric in EXPLAIN ANALYZE:\n{text}"
    assert sum(scanned) == len(planned), f"files_scanned {scanned} != pyiceberg plan_files {len(planned)}\n{text}"
    bytes_scanned = [int(x) for x in BYTES_SCANNED_RE.findall(text)]
    assert bytes_scanned and sum(bytes_scanned) > 0, f"no positive bytes_scanned metric:\n{text}"

    # and the query itself is right
    n = scalar(fetch(conn, sql))
    expected_rows = target.data.table("events").scan(row_filter=case.iceberg_filter).to_arrow().num_rows
    assert n == expected_rows


def test_limit_without_filter_opens_only_enough_files(target, conn):
    text = plan_text(fetch(conn, "EXPLAIN SELECT event_id FROM demo.events LIMIT 5"))
    selected, all_files = _scan_counts(text)
    total = target.data.data_files("events")
    assert all_files == len(total), text
    # the first file already holds 5 records: no other file is planned
    assert selected == 1 and min(f["record_count"] for f in total) >= 5, text
    assert "limit=5" in text, text

    got = fetch(conn, "SELECT event_id FROM demo.events LIMIT 5").column(0).to_pylist()
    every_id = set(target.data.arrow("events").column("event_id").to_pylist())
    assert len(got) == 5 and len(set(got)) == 5 and set(got) <= every_id, got


STATS_RE = re.compile(r"IcebergScanExec:[^\n]*statistics=\[Rows=Inexact\((\d+)\), Bytes=Absent, \[(.*)\]\]")


def test_scan_statistics_carry_column_bounds_of_the_selected_files(target, conn):
    """The optimizer sees each column's min/max/null count from the manifests of the files the
    scan reads (what orders joins and picks broadcast sides), shown by EXPLAIN VERBOSE; the
    expected values are read from those files' rows with pyarrow."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    case = next(c for c in cases.PRUNE_CASES if c.id == "city_identity")
    rows = fetch(conn, f"EXPLAIN VERBOSE SELECT event_id, user_id FROM demo.events WHERE {case.sql_predicate}")
    plans = {r["plan_type"]: r["plan"] for r in rows.to_pylist()}
    text = plans.get("physical_plan_with_stats", "")
    m = STATS_RE.search(text)
    assert m, f"no scan statistics in:\n{text}"
    planned = target.data.planned_files("events", case.iceberg_filter)
    assert int(m.group(1)) == sum(t.file.record_count for t in planned), text
    values = {"event_id": [], "user_id": []}
    table = target.data.tables["events"]
    for task in planned:
        with table.io.new_input(task.file.file_path).open() as f:
            data = pq.read_table(f, columns=list(values))
        for c in values:
            values[c].append(data.column(c))
    shown = dict(re.findall(r"Col\[(\d+)\]:(.*?)(?=,\(Col\[|$)", m.group(2)))
    projection = re.search(r"IcebergScanExec:[^\n]*?projection=\[([^\]]*)\]", text).group(1).split(", ")
    for c in values:
        i = projection.index(c)
        col = pa.chunked_array([chunk for arr in values[c] for chunk in arr.chunks])
        lo, hi = pc.min(col).as_py(), pc.max(col).as_py()
        assert f"Min=Inexact(Int64({lo}))" in shown[str(i)] and f"Max=Inexact(Int64({hi}))" in shown[str(i)], (
            f"{c}: expected min {lo} max {hi}, plan shows {shown[str(i)]}")
        assert f"Null=Inexact({col.null_count})" in shown[str(i)], shown[str(i)]


def test_a_table_of_many_small_appends_has_column_bounds_in_its_first_plan(target, conn):
    """A table appended to 20 times by pyiceberg has 20 manifests of one file each: more than
    the 16 read for statistics whatever their size, few enough files to read at once. Its
    very first plan carries each column's bounds (the manifests' 0 and 199), not only the
    plans after a background read filled the cache."""
    import uuid

    import pyarrow as pa

    catalog = target.data.catalog
    catalog.create_namespace_if_not_exists("appended")
    name = f"appended.t_{uuid.uuid4().hex[:8]}"
    table = catalog.create_table(name, pa.schema([pa.field("k", pa.int64())]))
    for i in range(20):
        table.append(pa.table({"k": pa.array(range(i * 10, i * 10 + 10), pa.int64())}))
    assert len(catalog.load_table(name).current_snapshot().manifests(table.io)) == 20
    rows = fetch(conn, f"EXPLAIN VERBOSE SELECT k FROM {name}")
    plans = {r["plan_type"]: r["plan"] for r in rows.to_pylist()}
    text = plans.get("physical_plan_with_stats", "")
    m = re.search(r"IcebergScanExec:[^\n]*statistics=\[Rows=Exact\(200\), Bytes=Absent, \[(.*)\]\]", text)
    assert m, text
    assert "Min=Inexact(Int64(0))" in m.group(1) and "Max=Inexact(Int64(199))" in m.group(1), text
    assert scalar(fetch(conn, f"SELECT sum(k) FROM {name}")) == sum(range(200))
