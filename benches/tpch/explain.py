"""EXPLAIN ANALYZE of chosen TPC-H queries on Floe, for profiling: the per-stage, per-task
figures (files, rows, shuffle bytes, time) of each query's distributed plan.

    .venv/bin/python benches/tpch/explain.py --sf 1 --queries 7,18,21 [--floe-bin PATH]

Uses the TPC-H benchmark's cached data and warehouse (generated on first use) and starts
`floe standalone --executors 2` on it (`--deployment cluster`: a coordinator and separate
executor processes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "tests" / "integration"))

import run as tpch  # noqa: E402
from tpch_queries import query_text  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sf", default="1")
    ap.add_argument("--queries", default="7,18,21", help="e.g. 1,3,5-9")
    tpch.add_floe_args(ap)
    args = ap.parse_args(argv)
    import adbc_driver_flightsql.dbapi as flightsql

    sf = tpch.sf_text(args.sf)
    sf_dir = Path(args.cache_dir) / f"sf{sf}"
    warehouse, _ = tpch.load_iceberg(sf_dir, tpch.generate(sf_dir, sf), reload=False)
    binary = tpch.floe_binary(args.floe_bin)
    server = tpch.FloeServer(binary, warehouse, sf_dir / "floe-logs" / time.strftime("explain-%Y%m%dT%H%M%S"),
                             args.executors, args.deployment)
    server.start()
    try:
        with flightsql.connect(server.uri) as conn:
            for q in tpch.parse_queries(args.queries):
                with conn.cursor() as cur:
                    cur.execute("EXPLAIN ANALYZE " + query_text(q, float(args.sf)))
                    rows = cur.fetch_arrow_table().to_pylist()
                print(f"===== Q{q:02d} ({binary})")
                for r in rows:
                    print(list(r.values())[-1])
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
