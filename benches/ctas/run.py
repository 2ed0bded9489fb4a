"""CTAS benchmark: Floe's CREATE TABLE … PARTITIONED BY (month(l_shipdate)) AS SELECT * FROM
tpch.lineitem against DuckDB's COPY … TO … (FORMAT parquet, PARTITION_BY …) on the same data, in
the same run; prints per-engine medians and the ratio.

    bash benches/ctas/run.sh --sf 1 --runs 3

Data and the Iceberg warehouse are the TPC-H benchmark's (benches/tpch/run.py: tpchgen-cli
Parquet, loaded with pyiceberg into a local SqlCatalog warehouse), reused when present. Floe runs
as `floe standalone --executors 2` on that warehouse: the executors read lineitem's Iceberg files
and write the new partitioned table's Parquet files, and the coordinator commits one snapshot.
DuckDB reads the same Parquet files (the data files of tpch.lineitem's current snapshot) and
writes a hive-partitioned folder (one sub-folder per ship month), zstd-compressed like Floe's
files (--duckdb-compression snappy: DuckDB's own default). Both outputs are checked: same row count as lineitem, and the
same number of months.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tpch"))
sys.path.insert(0, str(HERE.parents[1] / "tests" / "integration"))

import run as tpch  # noqa: E402  (benches/tpch/run.py)

CTAS = ("CREATE TABLE bench.lineitem_by_month PARTITIONED BY (month(l_shipdate)) "
        "AS SELECT * FROM tpch.lineitem")


def time_floe(server, warehouse: Path, runs: int) -> tuple[list[float], dict]:
    from floe_cluster import connect

    # DROP TABLE leaves the data files (Iceberg's drop without PURGE); the bench deletes the
    # previous run's table directory itself, or every run would leave a copy of lineitem behind.
    table_dir = Path(warehouse) / "bench" / "lineitem_by_month"

    conn = connect(server.uri, timeout_s=3600)
    times, check = [], {}
    try:
        cur = conn.cursor()
        cur.execute("CREATE SCHEMA IF NOT EXISTS bench")
        cur.fetch_arrow_table()
        for i in range(runs + 1):  # one warm-up
            cur.execute("DROP TABLE IF EXISTS bench.lineitem_by_month")
            cur.fetch_arrow_table()
            shutil.rmtree(table_dir, ignore_errors=True)
            t0 = time.perf_counter()
            cur.execute(CTAS)
            written = cur.fetch_arrow_table().column(0)[0].as_py()
            took = time.perf_counter() - t0
            if i > 0:
                times.append(took)
            tpch.log(f"floe: CTAS {'warm-up' if i == 0 else f'run {i}'}: {took:.2f}s ({written} rows)")
        cur.execute("SELECT count(*) AS n, count(DISTINCT date_trunc('month', l_shipdate)) AS months "
                    "FROM bench.lineitem_by_month")
        row = cur.fetch_arrow_table().to_pylist()[0]
        cur.execute('SELECT count(*) AS n FROM bench."lineitem_by_month$files"')
        data_files = cur.fetch_arrow_table().to_pylist()[0]["n"]
        check = {"rows": row["n"], "months": row["months"], "written": written, "files": data_files,
                 "bytes": sum(f.stat().st_size for f in table_dir.rglob("*.parquet"))}
        cur.close()
    finally:
        conn.close()
    return times, check


def time_duckdb(source: str, runs: int, compression: str) -> tuple[list[float], dict]:
    import duckdb

    out_root = Path(tempfile.mkdtemp(prefix="floe-bench-ctas-duckdb."))
    times, check = [], {}
    try:
        con = duckdb.connect()
        for i in range(runs + 1):
            out = out_root / "lineitem_by_month"
            if out.exists():
                shutil.rmtree(out)
            t0 = time.perf_counter()
            con.execute(
                f"COPY (SELECT *, strftime(l_shipdate, '%Y-%m') AS ship_month FROM read_parquet('{source}')) "
                f"TO '{out}' (FORMAT parquet, COMPRESSION {compression}, PARTITION_BY (ship_month))")
            took = time.perf_counter() - t0
            if i > 0:
                times.append(took)
            tpch.log(f"duckdb: COPY {'warm-up' if i == 0 else f'run {i}'}: {took:.2f}s")
        row = con.execute(
            f"SELECT count(*), count(DISTINCT ship_month) FROM read_parquet('{out_root}/lineitem_by_month/**/*.parquet', "
            "hive_partitioning = true)").fetchone()
        check = {"rows": row[0], "months": row[1],
                 "files": len(list((out_root / "lineitem_by_month").rglob("*.parquet"))),
                 "bytes": sum(f.stat().st_size for f in (out_root / "lineitem_by_month").rglob("*.parquet"))}
        con.close()
    finally:
        shutil.rmtree(out_root, ignore_errors=True)
    return times, check


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sf", default="1", help="TPC-H scale factor (default 1)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per engine after one warm-up (default 3)")
    ap.add_argument("--duckdb-compression", choices=("zstd", "snappy"), default="zstd",
                    help="codec of DuckDB's files: zstd, what Floe writes (Iceberg's default; default), or "
                         "snappy (DuckDB's own default)")
    tpch.add_floe_args(ap)
    args = ap.parse_args(argv)
    sf = tpch.sf_text(args.sf)
    sf_dir = Path(args.cache_dir) / f"sf{sf}"
    files = tpch.generate(sf_dir, sf)
    warehouse, rows = tpch.load_iceberg(sf_dir, files, reload=False)
    binary = tpch.floe_binary(args.floe_bin)
    tpch.log(f"floe: {binary} ({tpch.binary_profile(binary)} build)")
    server = tpch.FloeServer(binary, warehouse, sf_dir / "floe-logs" / time.strftime("ctas-%Y%m%dT%H%M%S"),
                             args.executors, getattr(args, "deployment", "standalone"))
    server.start()
    try:
        floe_times, floe_check = time_floe(server, warehouse, args.runs)
    finally:
        server.stop()
    # DuckDB reads the very files Floe reads: the data files of tpch.lineitem's snapshot.
    lineitem = tpch.iceberg_data_files(sf_dir, warehouse)["lineitem"]
    duck_times, duck_check = time_duckdb(f"{lineitem}/*.parquet", args.runs, args.duckdb_compression)

    n = rows["lineitem"]
    ok = floe_check.get("rows") == n == duck_check.get("rows") and floe_check.get("months") == duck_check.get("months")
    floe_m, duck_m = statistics.median(floe_times), statistics.median(duck_times)
    print()
    print(f"CTAS of TPC-H lineitem SF {sf} ({n} rows) partitioned by month of l_shipdate, medians of {args.runs}:")
    print(f"  Floe  CREATE TABLE … AS SELECT  {floe_m:8.2f} s   runs {[round(t, 2) for t in floe_times]}")
    print(f"  DuckDB COPY … PARTITION_BY      {duck_m:8.2f} s   runs {[round(t, 2) for t in duck_times]}"
          f"   ({args.duckdb_compression})")
    print(f"  Floe / DuckDB                   {floe_m / duck_m:8.2f}x")
    print(f"  checks: floe {floe_check}, duckdb {duck_check}: {'agree' if ok else 'DISAGREE'}")
    out = HERE.parent / "results" / f"ctas-sf{sf}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"sf": sf, "rows": n, "floe_s": floe_times, "duckdb_s": duck_times,
                               "ratio": floe_m / duck_m, "duckdb_compression": args.duckdb_compression, "floe_check": floe_check, "duckdb_check": duck_check,
                               "binary": str(binary), "profile": tpch.binary_profile(binary),
                               "loadavg": os.getloadavg()}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
