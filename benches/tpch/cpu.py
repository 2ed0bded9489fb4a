"""CPU time per TPC-H query, Floe against DataFusion, for finding where Floe does more work:
each query run --runs times, the two engines alternating at each execution; wall-clock medians,
and the CPU seconds per execution of every Floe process (coordinator and executors, from
/proc/<pid>/stat) against the DataFusion client's own (in-process, `time.process_time`). On a
noisy 2-core machine CPU time tells two plans apart where wall time cannot.

    .venv/bin/python benches/tpch/cpu.py --sf 1 --queries 9,20,22 --runs 7 --deployment cluster [--floe-bin PATH]
    .venv/bin/python benches/tpch/cpu.py --sf 1 --sql parts.sql --deployment cluster   # one statement per line

Uses the TPC-H benchmark's cached data and warehouse (generated on first use); DataFusion reads
the very Parquet files of the Iceberg tables, as in run.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "tests" / "integration"))

import run as tpch  # noqa: E402
from tpch_queries import query_text  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sf", default="1")
    ap.add_argument("--queries", default="1-22", help="e.g. 1,3,5-9")
    ap.add_argument("--runs", type=int, default=7, help="executions per engine and query (default 7)")
    ap.add_argument("--sql", type=Path, help="measure the statements of this file instead (one per line, "
                    "tables as tpch.<name>): a query's parts taken apart")
    tpch.add_floe_args(ap)
    args = ap.parse_args(argv)
    import adbc_driver_flightsql.dbapi as flightsql
    from datafusion import SessionContext
    from datafusion.catalog import Schema

    sf = tpch.sf_text(args.sf)
    sf_dir = Path(args.cache_dir) / f"sf{sf}"
    warehouse, _ = tpch.load_iceberg(sf_dir, tpch.generate(sf_dir, sf), reload=False)
    peer_files = tpch.iceberg_data_files(sf_dir, warehouse)
    ctx = SessionContext()
    ctx.catalog().register_schema(tpch.NAMESPACE, Schema.memory_schema())
    for table, path in peer_files.items():
        ctx.register_parquet(f"{tpch.NAMESPACE}.{table}", str(path))
    binary = tpch.floe_binary(args.floe_bin)
    server = tpch.FloeServer(binary, warehouse, sf_dir / "floe-logs" / time.strftime("cpu-%Y%m%dT%H%M%S"),
                             args.executors, args.deployment)
    server.start()
    pids = [server.proc.pid] + [e.pid for e in server.executor_procs]
    print(f"TPC-H SF {sf}, {args.runs} executions each, engines alternating; Floe {binary} ({args.deployment})")
    print(f"{'query':6s} {'Floe ms':>8s} {'DF ms':>8s} {'Floe CPU ms':>12s} {'DF CPU ms':>10s} {'CPU ratio':>10s}")
    try:
        with flightsql.connect(server.uri) as conn:
            if args.sql:
                lines = [line.strip().rstrip(";") for line in args.sql.read_text().splitlines()]
                statements = [(f"s{i:02d}", line) for i, line in enumerate(filter(None, lines), 1)]
            else:
                statements = [(f"q{q:02d}", query_text(q, float(args.sf))) for q in tpch.parse_queries(args.queries)]
            for name, sql in statements:

                def floe() -> None:
                    with conn.cursor() as cur:
                        cur.execute(sql)
                        cur.fetch_arrow_table()

                def datafusion() -> None:
                    ctx.sql(sql).to_arrow_table()

                floe()
                datafusion()
                floe_wall, df_wall, floe_cpu, df_cpu = [], [], 0.0, 0.0
                for _ in range(args.runs):
                    before = sum(cpu_seconds(p) for p in pids)
                    start = time.perf_counter()
                    floe()
                    floe_wall.append(time.perf_counter() - start)
                    floe_cpu += sum(cpu_seconds(p) for p in pids) - before
                    before = time.process_time()
                    start = time.perf_counter()
                    datafusion()
                    df_wall.append(time.perf_counter() - start)
                    df_cpu += time.process_time() - before
                floe_cpu, df_cpu = floe_cpu / args.runs, df_cpu / args.runs
                print(f"{name}    {statistics.median(floe_wall) * 1e3:8.1f} {statistics.median(df_wall) * 1e3:8.1f} "
                      f"{floe_cpu * 1e3:12.1f} {df_cpu * 1e3:10.1f} {floe_cpu / df_cpu if df_cpu else float('nan'):10.2f}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
