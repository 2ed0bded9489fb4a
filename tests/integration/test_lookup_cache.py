"""Lookups answered from the executors' memory (`engine/src/scan/hot.rs`): a small data file
that lookups read again and again has its decoded columns kept, by path and size, and the
answers stay exact. A coordinator and two executor processes on SeaweedFS; tables written by
pyiceberg, two data files of 10,000 rows each; every answer is checked against the rows
pyarrow holds; EXPLAIN ANALYZE tells a file answered from memory (`files_from_memory`, no bytes
fetched) from one read from storage.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pytest

import catalogs
import floe_cluster
from compare import fetch, plan_text

ROWS_PER_FILE = 10_000
LOOKUP = "SELECT k, name, amount FROM lookups.{table} WHERE k = ?"
FROM_MEMORY_RE = re.compile(r"\bfiles_from_memory=(\d+)")
BYTES_RE = re.compile(r"\bbytes_scanned=(\d+)")


@pytest.fixture(scope="module")
def catalog(seaweed, workdir):
    cat = catalogs.sql_catalog(seaweed, workdir)
    cat.create_namespace_if_not_exists("lookups")
    return cat


@pytest.fixture(scope="module")
def cluster(seaweed, workdir, catalog):
    dep = floe_cluster.start_cluster("lookups", floe_cluster.sql_catalog_config(seaweed, workdir),
                                     workdir / "logs")
    try:
        yield dep
    finally:
        dep.stop()


@pytest.fixture(scope="module")
def conn(cluster):
    c = cluster.connect()
    try:
        yield c
    finally:
        c.close()


def _rows(first: int) -> pa.Table:
    """ROWS_PER_FILE rows with even keys from 2 * first (odd keys are missing)."""
    ks = list(range(first, first + ROWS_PER_FILE))
    return pa.table({
        "k": pa.array([2 * i for i in ks], pa.int64()),
        "name": pa.array([f"name-{i % 977}" for i in ks], pa.string()),
        "amount": pa.array([i * 0.25 for i in ks], pa.float64()),
    })


def _table(catalog, name: str):
    """A format-v2 table of two appends (one data file each); returns it and its rows."""
    if catalog.table_exists(f"lookups.{name}"):
        catalog.drop_table(f"lookups.{name}")
    first, second = _rows(0), _rows(ROWS_PER_FILE)
    t = catalog.create_table(f"lookups.{name}", first.schema, properties={"format-version": "2"})
    t.append(first)
    t.append(second)
    return catalog.load_table(f"lookups.{name}"), pa.concat_tables([first, second])


def _expected(rows: pa.Table, k: int, gone: set[int] = frozenset()) -> list[dict]:
    return [r for r in rows.to_pylist() if r["k"] == k and k not in gone]


def _explain(conn, table: str, k: int) -> tuple[int, int, str]:
    text = plan_text(fetch(conn, f"EXPLAIN ANALYZE {LOOKUP.format(table=table).replace('?', str(k))}"))
    memory = sum(int(n) for n in FROM_MEMORY_RE.findall(text))
    fetched = sum(int(n) for n in BYTES_RE.findall(text))
    return memory, fetched, text


def _look_until_kept(conn, table: str, rows: pa.Table, keys: list[int]) -> str:
    """Prepared lookups of `keys` (in one file), each answer checked, until EXPLAIN ANALYZE
    shows the file answered from memory; returns that plan. Each executor keeps a file after
    two lookups of it, so a handful of rounds is enough whichever executor a task lands on."""
    cur = conn.cursor()
    try:
        for attempt in range(8):
            for k in keys:
                cur.execute(LOOKUP.format(table=table), parameters=(k,))
                assert cur.fetch_arrow_table().to_pylist() == _expected(rows, k), k
            memory, fetched, text = _explain(conn, table, keys[attempt % len(keys)])
            if memory:
                assert fetched == 0, f"a file answered from memory fetched bytes:\n{text}"
                return text
    finally:
        cur.close()
    raise AssertionError(f"lookups of {table} never answered from memory:\n{text}")


def test_repeated_lookups_are_answered_from_memory_and_stay_right(conn, catalog):
    _, rows = _table(catalog, "served")
    _look_until_kept(conn, "served", rows, [10, 4_242, 19_998])
    # Kept: hits, misses inside the file's range, and keys of the other file are all right.
    cur = conn.cursor()
    try:
        for k in [0, 2, 3, 9_999, 12_346, 19_998, 20_000, 39_998, 40_000, -2]:
            cur.execute(LOOKUP.format(table="served"), parameters=(k,))
            assert cur.fetch_arrow_table().to_pylist() == _expected(rows, k), k
    finally:
        cur.close()
    # Any query reading the kept file is answered from it, exactly.
    got = fetch(conn, "SELECT count(*) AS n, sum(amount) AS s FROM lookups.served "
                      "WHERE k BETWEEN 100 AND 300 AND name <> 'name-7'").to_pylist()[0]
    want = [r for r in rows.to_pylist() if 100 <= r["k"] <= 300 and r["name"] != "name-7"]
    assert got == {"n": len(want), "s": sum(r["amount"] for r in want)}
    got = fetch(conn, "SELECT k FROM lookups.served WHERE k < 20000 ORDER BY k DESC LIMIT 3").column(0).to_pylist()
    assert got == [19_998, 19_996, 19_994]


def test_deletes_committed_after_a_file_is_kept_apply_to_it(conn, catalog):
    """Position deletes and equality deletes reach the kept file: the rows they remove are gone
    from lookups and scans answered from memory, their neighbours stay."""
    from eq_deletes import add_equality_deletes, add_position_deletes

    table, rows = _table(catalog, "deleted")
    _look_until_kept(conn, "deleted", rows, [100, 2_000, 18_000])
    path = table.scan(row_filter="k == 0").plan_files()[0].file.file_path
    # Keys 100 and 2,000 are rows 50 and 1,000 of the first file; key 18,000 is row 9,000.
    add_position_deletes(catalog.load_table("lookups.deleted"), {path: [50, 1_000, 9_000]})
    add_equality_deletes(catalog.load_table("lookups.deleted"), pa.table({"k": pa.array([4_000], pa.int64())}))
    gone = {100, 2_000, 18_000, 4_000}
    cur = conn.cursor()
    try:
        for k in [98, 100, 102, 2_000, 4_000, 4_002, 18_000, 17_998]:
            cur.execute(LOOKUP.format(table="deleted"), parameters=(k,))
            assert cur.fetch_arrow_table().to_pylist() == _expected(rows, k, gone), k
    finally:
        cur.close()
    # Still answered from memory (the delete files themselves are fetched by every query).
    plans = [_explain(conn, "deleted", k) for k in (98, 102)]
    assert any(memory == 1 for memory, _, _ in plans), plans[-1][2]
    n = fetch(conn, "SELECT count(*) FROM lookups.deleted WHERE k < 20000").column(0).to_pylist()
    assert n == [ROWS_PER_FILE - 4]


def test_a_scan_keeps_nothing(conn, catalog):
    """Reads that keep most rows of a file are not lookups: however often they run, the file is
    read from storage."""
    _, rows = _table(catalog, "scanned")
    want = sum(r["amount"] for r in rows.to_pylist() if r["k"] >= 4)
    for _ in range(5):
        got = fetch(conn, "SELECT sum(amount) FROM lookups.scanned WHERE k >= 4").column(0).to_pylist()
        assert got == [want]
    text = plan_text(fetch(conn, "EXPLAIN ANALYZE SELECT sum(amount) FROM lookups.scanned WHERE k >= 4"))
    assert sum(int(n) for n in FROM_MEMORY_RE.findall(text)) == 0, text
    assert sum(int(n) for n in BYTES_RE.findall(text)) > 0, text
