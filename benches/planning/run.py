"""Planning benchmark (issue 11, P5): how long Floe takes to plan a query on a table of 10,000
data files in 100 manifests with a partition filter that keeps 1 % of them, warm and cold.

    bash benches/planning/run.sh --runs 10

The table, `bench_plan.events` in its own local warehouse (<cache>/planning/warehouse, a SQL
catalog), is written by pyiceberg once and reused: 100 appends of 100 rows each over 100 values
of `p` (identity partition), so every append adds one manifest of 100 files and every manifest
holds every partition (no manifest can be skipped by its partition summary). `WHERE p = 7`
keeps 100 of the 10,000 files.

Floe runs as `floe standalone --executors 2`. Timed is `EXPLAIN SELECT * FROM bench_plan.events
WHERE p = 7` through ADBC Flight SQL (plans, opens no data file; its plan must show
files=100/10000): cold is the first statement after the server started (--runs server starts),
warm the median of --runs statements after it. The peer is pyiceberg planning the same scan
(`plan_files()` with the same filter): cold in a fresh catalog object, warm again on the same
table object. Prints medians and ratios; writes benches/results/planning-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent / "tpch"))
sys.path.insert(0, str(REPO / "tests" / "integration"))

import run as tpch  # noqa: E402  (benches/tpch/run.py)

TABLE = "bench_plan.events"
APPENDS = 100
PARTITIONS = 100
ROWS_PER_FILE = 1
SQL = f"EXPLAIN SELECT * FROM {TABLE} WHERE p = 7"
SCAN_RE = re.compile(r"IcebergScanExec:[^\n]*?\bfiles=(\d+)/(\d+)")


def catalog(warehouse: Path):
    from pyiceberg.catalog.sql import SqlCatalog

    return SqlCatalog("floe", uri=f"sqlite:///{warehouse}/catalog.db", warehouse=f"file://{warehouse}")


def make_table(warehouse: Path) -> None:
    import pyarrow as pa
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import IdentityTransform
    from pyiceberg.types import IntegerType, LongType, NestedField, StringType

    marker = warehouse / "bench-planning.json"
    want = {"appends": APPENDS, "partitions": PARTITIONS, "rows_per_file": ROWS_PER_FILE}
    if marker.is_file() and json.loads(marker.read_text()) == want:
        tpch.log(f"planning: reusing {warehouse}")
        return
    warehouse.mkdir(parents=True, exist_ok=True)
    cat = catalog(warehouse)
    cat.create_namespace_if_not_exists("bench_plan")
    if cat.table_exists(TABLE):
        cat.purge_table(TABLE)
    schema = Schema(
        NestedField(1, "p", IntegerType(), required=False),
        NestedField(2, "id", LongType(), required=False),
        NestedField(3, "payload", StringType(), required=False),
    )
    spec = PartitionSpec(PartitionField(source_id=1, field_id=1000, transform=IdentityTransform(), name="p"))
    table = cat.create_table(TABLE, schema, partition_spec=spec)
    t0 = time.monotonic()
    arrow_schema = pa.schema([("p", pa.int32()), ("id", pa.int64()), ("payload", pa.string())])
    for a in range(APPENDS):
        n = PARTITIONS * ROWS_PER_FILE
        ids = list(range(a * n, (a + 1) * n))
        data = pa.table({"p": [i % PARTITIONS for i in ids], "id": ids, "payload": [f"row {i}" for i in ids]},
                        schema=arrow_schema)
        table.append(data)
        if a % 10 == 9:
            tpch.log(f"planning: {a + 1}/{APPENDS} appends ({time.monotonic() - t0:.0f}s)")
    files = table.inspect.files().num_rows
    manifests = table.inspect.manifests().num_rows
    if files != APPENDS * PARTITIONS or manifests != APPENDS:
        raise SystemExit(f"{TABLE}: {files} files in {manifests} manifests, expected "
                         f"{APPENDS * PARTITIONS} in {APPENDS}")
    marker.write_text(json.dumps(want))
    tpch.log(f"planning: {TABLE} written, {files} files in {manifests} manifests")


def explain(conn) -> float:
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute(SQL)
        rows = cur.fetch_arrow_table().to_pylist()
    elapsed = time.perf_counter() - t0
    text = "\n".join(str(v) for r in rows for v in r.values())
    m = SCAN_RE.search(text)
    want = (APPENDS, APPENDS * PARTITIONS)
    if not m or (int(m[1]), int(m[2])) != want:
        raise SystemExit(f"plan does not show files={want[0]}/{want[1]}:\n{text}")
    return elapsed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10, help="cold starts, and warm statements (default 10)")
    ap.add_argument("--floe-bin", help="Floe binary (default $FLOE_BIN, else the release build, else debug)")
    ap.add_argument("--executors", type=int, default=2)
    ap.add_argument("--cache-dir", default=os.environ.get("FLOE_BENCH_CACHE")
                    or str(Path.home() / ".cache" / "floe-bench"))
    args = ap.parse_args(argv)
    import adbc_driver_flightsql.dbapi as flightsql
    from pyiceberg.expressions import EqualTo

    warehouse = Path(args.cache_dir) / "planning" / "warehouse"
    make_table(warehouse)
    binary = tpch.floe_binary(args.floe_bin)
    tpch.log(f"floe: {binary} ({tpch.binary_profile(binary)} build)")

    cold, warm = [], []
    for run in range(args.runs):
        server = tpch.FloeServer(binary, warehouse, warehouse.parent / "floe-logs" /
                                 time.strftime(f"planning-%Y%m%dT%H%M%S-{run}"), args.executors, getattr(args, "deployment", "standalone"))
        server.start()
        try:
            with flightsql.connect(server.uri) as conn:
                cold.append(explain(conn))
                if run == 0:
                    for _ in range(3):
                        explain(conn)
                    warm = [explain(conn) for _ in range(args.runs)]
        finally:
            server.stop()

    py_cold, py_warm = [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        table = catalog(warehouse).load_table(TABLE)
        n = len(list(table.scan(row_filter=EqualTo("p", 7)).plan_files()))
        py_cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        n2 = len(list(table.scan(row_filter=EqualTo("p", 7)).plan_files()))
        py_warm.append(time.perf_counter() - t0)
        if n != n2 or n != APPENDS:
            raise SystemExit(f"pyiceberg planned {n}/{n2} files, expected {APPENDS}")

    res = {k: statistics.median(v) * 1e3 for k, v in
           (("floe_cold_ms", cold), ("floe_warm_ms", warm), ("pyiceberg_cold_ms", py_cold),
            ("pyiceberg_warm_ms", py_warm))}
    print()
    print(f"Planning {TABLE} ({APPENDS * PARTITIONS} files in {APPENDS} manifests) WHERE p = 7 "
          f"(1 %), medians of {args.runs} (targets: warm <= 50 ms, cold <= 500 ms):")
    print(f"  Floe EXPLAIN, cold      {res['floe_cold_ms']:8.1f} ms   "
          f"{res['floe_cold_ms'] / res['pyiceberg_cold_ms']:5.2f}x pyiceberg")
    print(f"  Floe EXPLAIN, warm      {res['floe_warm_ms']:8.1f} ms   "
          f"{res['floe_warm_ms'] / res['pyiceberg_warm_ms']:5.2f}x pyiceberg")
    print(f"  pyiceberg plan_files, cold {res['pyiceberg_cold_ms']:8.1f} ms")
    print(f"  pyiceberg plan_files, warm {res['pyiceberg_warm_ms']:8.1f} ms")
    out = HERE.parent / "results" / f"planning-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"medians": res, "runs": {"floe_cold_s": cold, "floe_warm_s": warm,
                                                          "pyiceberg_cold_s": py_cold, "pyiceberg_warm_s": py_warm},
                               "binary": str(binary), "profile": tpch.binary_profile(binary),
                               "git": tpch.git_describe(), "loadavg": os.getloadavg()}, indent=2))
    tpch.log(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
