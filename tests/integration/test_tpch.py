"""TPC-H: the 22 queries of benches/tpch/queries through Floe (cluster_sql:
coordinator + 2 executor processes, SQLite SqlCatalog, SeaweedFS S3), each
checked against DuckDB over the same generated Parquet files.

Data: `tpchgen-cli parquet` (PyPI tpchgen-cli, tests/requirements.txt) at
scale factor FLOE_TPCH_SF (default 0.1) into a temp dir, then written with
pyiceberg into namespace `tpch` of the SQL catalog the `cluster_sql` fixture
serves (Floe lists the catalog per query, so no restart).  Column types are
kept as generated (decimal(15,2) money/quantities, date32 dates, int64 keys,
int32 small ints); only string_view is cast to string (the same Iceberg type
`string`; pyarrow's filter kernel used by partitioned writes has no
string_view support).  Layout: lineitem in 3 appends, orders in 2 appends
partitioned by month(o_orderdate), the other tables one file each.

Comparison (compare.assert_close): same column count, same rows; numbers
compared by value with relative tolerance 1e-6 (sums of decimals may come back
as decimal or double, with different scales); rows compared in ORDER BY order,
runs of tied ORDER BY keys as multisets, and a LIMIT that cuts through a tie
only on the ordering columns.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.transforms import MonthTransform

import floe_cluster
from compare import assert_close, fetch, plan_text
from tpch_queries import ORDER_KEYS, QUERY_NUMBERS, query_limit, query_text, tpchgen_bin  # noqa: F401

NAMESPACE = "tpch"
SCALE_FACTOR = os.environ.get("FLOE_TPCH_SF", "0.1")
TABLES = ["region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem"]
APPENDS = {"lineitem": 3, "orders": 2}


def generate(out_dir: Path, scale_factor: str) -> dict[str, Path]:
    subprocess.run(
        [tpchgen_bin(), "parquet", "--scale-factor", scale_factor, "--output-dir", str(out_dir),
         "--no-progress", "--quiet"],
        check=True, timeout=300,
    )
    files = {t: out_dir / f"{t}.parquet" for t in TABLES}
    missing = [str(p) for p in files.values() if not p.is_file()]
    assert not missing, f"tpchgen-cli did not write {missing}"
    return files


def _plain_strings(table: pa.Table) -> pa.Table:
    fields = [
        pa.field(f.name, pa.string() if f.type == pa.string_view() else f.type, f.nullable, f.metadata)
        for f in table.schema
    ]
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))


def load_into_iceberg(catalog, files: dict[str, Path]) -> None:
    catalog.create_namespace_if_not_exists(NAMESPACE)
    for name in TABLES:
        ident = f"{NAMESPACE}.{name}"
        if catalog.table_exists(ident):
            catalog.drop_table(ident)
        data = _plain_strings(pq.read_table(files[name]))
        table = catalog.create_table(ident, data.schema)
        if name == "orders":
            with table.update_spec() as spec:
                spec.add_field("o_orderdate", MonthTransform(), "o_orderdate_month")
        n = APPENDS.get(name, 1)
        step = -(-data.num_rows // n)
        for k in range(n):
            table.append(data.slice(k * step, step))


class TpchData:
    def __init__(self, files: dict[str, Path]):
        import duckdb

        self.files = files
        self.rows = {t: pq.read_metadata(p).num_rows for t, p in files.items()}
        self.duck = duckdb.connect()
        self.duck.execute(f"CREATE SCHEMA {NAMESPACE}")
        for t, p in files.items():
            self.duck.execute(f"CREATE VIEW {NAMESPACE}.{t} AS SELECT * FROM read_parquet('{p}')")

    def oracle(self, sql: str) -> pa.Table:
        return self.duck.sql(sql).to_arrow_table()


@pytest.fixture(scope="module")
def tpch(sql_data, tmp_path_factory):
    t0 = time.monotonic()
    out = tmp_path_factory.mktemp("tpch")
    files = generate(out, SCALE_FACTOR)
    load_into_iceberg(sql_data.catalog, files)
    data = TpchData(files)
    print(f"\nTPC-H SF {SCALE_FACTOR}: generated and loaded in {time.monotonic() - t0:.1f}s; rows {data.rows}")
    try:
        yield data
    finally:
        data.duck.close()


@pytest.fixture(scope="module")
def floe_conn(cluster_sql, tpch):
    yield from floe_cluster.connection(cluster_sql)


def test_tpch_table_row_counts(floe_conn, tpch):
    sql = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {NAMESPACE}.{t}" for t in TABLES)
    got = {r["t"]: r["n"] for r in fetch(floe_conn, sql).to_pylist()}
    assert got == tpch.rows


@pytest.mark.parametrize("n", QUERY_NUMBERS, ids=[f"q{n:02d}" for n in QUERY_NUMBERS])
def test_tpch_query(floe_conn, tpch, n, request, cluster_sql):
    sql = query_text(n)
    expected = tpch.oracle(sql)
    assert expected.num_rows > 0, f"q{n:02d}: DuckDB returned no rows (data or query text problem)"
    try:
        actual = fetch(floe_conn, sql)
        assert_close(actual, expected, order_keys=ORDER_KEYS[n], limit=query_limit(sql), context=f"q{n:02d}")
    except BaseException:
        request.node.add_report_section("call", "Floe logs (cluster_sql)", cluster_sql.describe())
        raise


# ------------------------------------------------------------ memory limit and spilling

SPILL_RE = re.compile(r"\bexecutor_spill_count=(\d+)")
SPILLED_BYTES_RE = re.compile(r"\bspilled_bytes=(\d+)")


def _limited_floe(seaweed, workdir, limit: str, executors: int = 2):
    """`floe standalone` whose coordinator and executors may each hold only `limit`."""
    import catalogs

    cfg = floe_cluster.CatalogConfig(
        warehouse=seaweed.sql_warehouse,
        kind="sql",
        catalog_uri=catalogs.floe_sqlite_uri(workdir),
        storage_args=seaweed.floe_storage_args() + ["--memory-limit", limit],
    )
    return floe_cluster.start_standalone(f"standalone_{limit}", cfg, workdir / f"logs-{limit}",
                                         executors=executors)


@pytest.fixture(scope="module")
def small_memory_floe(seaweed, sql_data, workdir, tpch):
    """Each process of `floe standalone` may hold 24 MiB: a self-join's build side cannot fit."""
    dep = _limited_floe(seaweed, workdir, "24MiB")
    try:
        yield dep
    finally:
        dep.stop()


@pytest.fixture(scope="module")
def spilling_floe(seaweed, sql_data, workdir, tpch):
    """3 executors (one of lineitem's 3 sort tasks each) that may hold 16 MiB: each sort keeps
    DataFusion's 10 MiB back for merging its spills, so its ~11 MiB of rows must spill."""
    dep = _limited_floe(seaweed, workdir, "16MiB", executors=3)
    try:
        yield dep
    finally:
        dep.stop()


def test_sort_larger_than_memory_spills_and_is_right(spilling_floe, tpch):
    from compare import plan_text

    sql = (
        "SELECT l_orderkey, l_linenumber, l_comment FROM tpch.lineitem "
        "ORDER BY l_comment, l_orderkey, l_linenumber"
    )
    conn = spilling_floe.connect()
    try:
        got = fetch(conn, sql)
        text = plan_text(fetch(conn, f"EXPLAIN ANALYZE {sql}"))
    finally:
        conn.close()
    want = tpch.oracle(sql)
    assert got.num_rows == want.num_rows == tpch.rows["lineitem"]
    # the order is total (orderkey, linenumber is unique), so compare exactly, in order
    assert got.column(0).to_pylist() == want.column(0).to_pylist()
    assert got.column(1).to_pylist() == want.column(1).to_pylist()
    assert got.column(2).to_pylist() == want.column(2).to_pylist()
    spills = [int(x) for x in SPILL_RE.findall(text)]
    assert spills and sum(spills) > 0, f"no spilling reported under a 16 MiB limit:\n{text}"
    assert any(int(x) > 0 for x in SPILLED_BYTES_RE.findall(text)), text


# ------------------------------------------------------------ stages: shuffles and broadcasts

TASK_RE = re.compile(r"t(\d+)@(executor-[0-9a-f]+)([^;\]]*)")


def _stage_lines(text: str) -> list[str]:
    return [l for l in text.splitlines() if "ShuffleExchangeExec" in l or "RemoteStageExec" in l]


def _first_gather_depth(text: str) -> int:
    lines = text.splitlines()
    for i, l in enumerate(lines):
        if "RemoteStageExec" in l:
            return i
    raise AssertionError(f"no RemoteStageExec in the plan:\n{text}")


def test_large_join_is_hash_shuffled_between_executors(floe_conn, tpch):
    """lineitem joined with itself (600,000 rows a side at SF 0.1): a copy of
    either side for each of the 4 tasks would move 2.4 M rows, shuffling both
    1.2 M, so both sides are hash-shuffled on the join key into buckets read
    executor to executor, the join and the final aggregation run in the
    executors' tasks (below the coordinator's gather), and the answer equals
    DuckDB's. (orders joined with lineitem is broadcast now: 4 copies of
    150,000 orders move less than shuffling both.)"""
    sql = ("SELECT a.l_returnflag, count(*) AS n, sum(b.l_quantity) AS q "
           "FROM tpch.lineitem a JOIN tpch.lineitem b "
           "ON a.l_orderkey = b.l_orderkey AND a.l_linenumber = b.l_linenumber "
           "GROUP BY a.l_returnflag ORDER BY a.l_returnflag")
    text = plan_text(fetch(floe_conn, f"EXPLAIN {sql}"))
    shuffles = [l for l in _stage_lines(text) if "ShuffleExchangeExec" in l and "hash([l_orderkey" in l]
    assert len(shuffles) >= 2, text
    gather = _first_gather_depth(text)
    joins = [i for i, l in enumerate(text.splitlines()) if "HashJoinExec" in l]
    assert joins and all(i > gather for i in joins), f"the join runs on the coordinator:\n{text}"
    assert "mode=Partitioned" in text, text

    assert_close(fetch(floe_conn, sql), tpch.oracle(sql), order_keys=["l_returnflag"], context="hash join")

    analyzed = plan_text(fetch(floe_conn, f"EXPLAIN ANALYZE {sql}"))
    exchange_lines = [l for l in analyzed.splitlines() if "ShuffleExchangeExec" in l]
    assert exchange_lines, analyzed
    for line in exchange_lines:
        tasks = TASK_RE.findall(line)
        assert tasks, f"no per-task report on a shuffle stage:\n{line}"
        written = sum(int(m) for m in re.findall(r"shuffle_written=(\d+)", line))
        assert written > 0, f"a shuffle stage reports no bytes written:\n{line}"
    executors = {ex for line in exchange_lines for _, ex, _ in TASK_RE.findall(line)}
    assert len(executors) == 2, f"shuffle tasks did not spread over both executors: {executors}"
    reads = [int(m) for m in re.findall(r"shuffle_read=(\d+)", analyzed)]
    assert reads and sum(reads) > 0, f"no task reports shuffle bytes read:\n{analyzed}"


def test_small_build_side_is_broadcast(floe_conn, tpch):
    """nation (25 rows, known from Iceberg's manifests) joined with supplier:
    DataFusion collects the small side, and Floe broadcasts it to every
    supplier-scan task instead of shuffling supplier; EXPLAIN says so with the
    row estimate behind the choice."""
    sql = ("SELECT n_name, count(*) AS suppliers, sum(s_acctbal) AS bal "
           "FROM tpch.supplier JOIN tpch.nation ON s_nationkey = n_nationkey "
           "GROUP BY n_name ORDER BY n_name")
    text = plan_text(fetch(floe_conn, f"EXPLAIN {sql}"))
    broadcasts = [l for l in _stage_lines(text) if "broadcast to" in l]
    assert broadcasts, f"no broadcast in:\n{text}"
    assert any("≈25 rows" in l for l in broadcasts), broadcasts
    assert "mode=CollectLeft" in text, text
    gather = _first_gather_depth(text)
    joins = [i for i, l in enumerate(text.splitlines()) if "HashJoinExec" in l]
    assert joins and all(i > gather for i in joins), f"the join runs on the coordinator:\n{text}"
    assert_close(fetch(floe_conn, sql), tpch.oracle(sql), order_keys=["n_name"], context="broadcast join")


def test_a_string_equality_keeps_one_of_the_columns_values(floe_conn, tpch):
    """Q08's `p_type = 'ECONOMY ANODIZED STEEL'` keeps one part type of 150. DataFusion
    assumes 20 % of the parts; Floe reads from the manifests how many bytes each part type
    takes, which says about 150 values, and estimates 1 %: the parts are broadcast as a
    hundredth of the table and the small join of them with lineitem, not orders, is the side
    the orders join builds on — orders is read where it lies, not copied to every task. The
    answer is DuckDB's."""
    sql = query_text(8)
    text = plan_text(fetch(floe_conn, f"EXPLAIN {sql}"))
    lines = text.splitlines()
    parts = fetch(floe_conn, "SELECT count(*) AS n FROM tpch.part").column("n")[0].as_py()
    [at] = [i for i, l in enumerate(lines) if "FilterExec: p_type@" in l]
    broadcast = lines[at - 1]
    assert "broadcast to" in broadcast, text
    estimate = int(re.search(r"build side ≈(\d+) rows", broadcast).group(1))
    assert estimate <= parts // 50, f"{estimate} of {parts} parts estimated:\n{text}"
    # The orders of the two years are read where they lie: no broadcast above them.
    [orders] = [i for i, l in enumerate(lines) if "FilterExec: o_orderdate@" in l]
    assert "ShuffleExchangeExec" not in lines[orders - 1], text
    assert_close(fetch(floe_conn, sql), tpch.oracle(sql), order_keys=ORDER_KEYS.get(8),
                 context="Q08")


def _stage_rows(analyzed: str, scan: str) -> tuple[int, int]:
    """(rows read, rows sent on) over the tasks of the stage whose own scan is of table
    `scan`, in EXPLAIN ANALYZE."""
    lines = analyzed.splitlines()
    for i, line in enumerate(lines):
        if "ShuffleExchangeExec: stage=" not in line or "rows_read=" not in line:
            continue
        depth = len(line) - len(line.lstrip())
        for below in lines[i + 1:]:
            if len(below) - len(below.lstrip()) <= depth or "ShuffleExchangeExec" in below:
                break
            if f"IcebergScanExec: table=tpch.{scan}," in below:
                return (sum(int(n) for n in re.findall(r"\brows_read=(\d+)", line)),
                        sum(int(n) for n in re.findall(r"\brows_out=(\d+)", line)))
    raise AssertionError(f"no stage of its own scans {scan}:\n{analyzed}")


def test_a_dimensions_keys_cut_the_broadcasts_under_its_join(floe_conn, tpch):
    """Q05 joins the ASIA region last, the nations above the suppliers, and those above the
    customers (DataFusion keeps the FROM order). The region's key reaches the nations' broadcast,
    and the five nations' keys reach the suppliers' and — two stages down, under the broadcast of
    customers ⋈ orders — the customers': each stage broadcasts only ASIA's rows, counted here
    by DuckDB. The answer is DuckDB's."""
    sql = query_text(5)
    analyzed = plan_text(fetch(floe_conn, f"EXPLAIN ANALYZE {sql}"))
    asia = "tpch.nation JOIN tpch.region ON n_regionkey = r_regionkey AND r_name = 'ASIA'"
    in_asia = {
        table: tpch.oracle(f"SELECT count(*) AS n FROM {rows}").column("n")[0].as_py()
        for table, rows in [
            ("nation", asia),
            ("supplier", f"tpch.supplier JOIN ({asia}) ON s_nationkey = n_nationkey"),
            ("customer", f"tpch.customer JOIN ({asia}) ON c_nationkey = n_nationkey"),
        ]
    }
    for table in ("nation", "supplier", "customer"):
        read, sent = _stage_rows(analyzed, table)
        assert read == tpch.rows[table] and sent == in_asia[table], (table, read, sent, analyzed)
    assert_close(fetch(floe_conn, sql), tpch.oracle(sql), order_keys=ORDER_KEYS.get(5),
                 context="Q05")


def _lineitem_files_read(analyzed: str) -> tuple[int, int]:
    """(files the stages scanning lineitem opened over all their tasks, each stage counted
    once however many places read it; lineitem's data files)."""
    opened: dict[str, int] = {}
    total = 0
    lines = analyzed.splitlines()
    for i, line in enumerate(lines):
        m = re.search(r"ShuffleExchangeExec: stage=(\d+)", line)
        if not m:
            continue
        depth = len(line) - len(line.lstrip())
        for below in lines[i + 1:]:
            if len(below) - len(below.lstrip()) <= depth:
                break
            scan = re.search(r"IcebergScanExec: table=tpch\.lineitem, .*?files=(\d+)/(\d+)", below)
            if scan and "ShuffleExchangeExec" not in below:
                total = int(scan.group(2))
                opened[m.group(1)] = sum(int(f) for f in re.findall(r" files=(\d+)", line))
                break
    return sum(opened.values()), total


def test_a_cte_read_twice_is_computed_once(floe_conn, tpch):
    """TPC-H Q15 reads its CTE revenue0 twice (joined with the suppliers, and for its
    maximum): DataFusion plans it twice, and Floe runs the two identical lineitem
    aggregations as one shuffle stage that both parts read (EXPLAIN says so on both
    exchanges), so lineitem's files are opened once in all, not twice — though the
    coordinator's join reads the maximum's side to its end before the other side, which
    waits in the stage's kept copy. The same for a CTE joined with itself on the
    executors. Answers equal DuckDB's."""
    q15 = query_text(15)
    text = plan_text(fetch(floe_conn, f"EXPLAIN {q15}"))
    shared = [l for l in text.splitlines() if "read by 2 parts of the plan" in l]
    assert len(shared) == 2, text
    assert len({re.search(r"stage=(\d+)", l).group(1) for l in shared}) == 1, shared
    assert sorted(re.search(r"reader (\d+)\)", l).group(1) for l in shared) == ["0", "1"], shared
    assert_close(fetch(floe_conn, q15), tpch.oracle(q15), order_keys=ORDER_KEYS[15], context="Q15 shared")
    analyzed = plan_text(fetch(floe_conn, f"EXPLAIN ANALYZE {q15}"))
    opened, files = _lineitem_files_read(analyzed)
    assert files > 0 and opened == files, f"lineitem's {files} files opened {opened} times:\n{analyzed}"

    self_join = ("WITH per_supplier AS (SELECT l_suppkey AS s, sum(l_quantity) AS q, count(*) AS n "
                 "FROM tpch.lineitem GROUP BY l_suppkey) "
                 "SELECT count(*) AS pairs, sum(a.q - b.q) AS dq, sum(a.n * b.n) AS nn "
                 "FROM per_supplier a JOIN per_supplier b ON a.s = b.s + 1")
    text = plan_text(fetch(floe_conn, f"EXPLAIN {self_join}"))
    assert len([l for l in text.splitlines() if "read by 2 parts of the plan" in l]) == 2, text
    assert_close(fetch(floe_conn, self_join), tpch.oracle(self_join), order_keys=[], context="CTE self-join")
    analyzed = plan_text(fetch(floe_conn, f"EXPLAIN ANALYZE {self_join}"))
    opened, files = _lineitem_files_read(analyzed)
    assert files > 0 and opened == files, f"lineitem's {files} files opened {opened} times:\n{analyzed}"


def test_join_that_cannot_fit_fails_with_resource_exhausted_naming_the_operator(small_memory_floe, tpch):
    """A hash join's build side cannot spill: joining lineitem with itself on its
    comment under 24 MiB fails with gRPC RESOURCE_EXHAUSTED whose message names
    the join's memory consumer, and the same deployment answers the next query."""
    from adbc_driver_manager import Error

    sql = ("SELECT count(*) AS n, max(a.l_shipinstruct) AS s FROM tpch.lineitem a JOIN tpch.lineitem b "
           "ON a.l_comment = b.l_comment AND a.l_shipmode = b.l_shipmode")
    conn = small_memory_floe.connect()
    try:
        with pytest.raises(Error) as info:
            fetch(conn, sql)
        message = str(info.value)
        print(f"\n{message}")
        assert "ResourceExhausted" in message, message
        assert "HashJoin" in message, message
        assert fetch(conn, "SELECT count(*) AS n FROM tpch.lineitem").column(0)[0].as_py() == tpch.rows["lineitem"]
    finally:
        conn.close()
