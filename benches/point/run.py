"""Point-query benchmark (issue 11, P4): warm latency through ADBC Flight SQL of a prepared
`SELECT … FROM orders WHERE o_orderkey = ?`, on TPC-H orders (2 data files) and on a copy of it
in a few hundred small files, and of `SELECT 1`; p50 and p99 of --runs executions each.

    bash benches/point/run.sh --sf 0.1 --runs 300

Data and warehouse are the TPC-H benchmark's (benches/tpch/run.py), reused when present. The
small-files copy, `bench_point.orders_small`, is written by pyiceberg in --small-files appends
(one data file and one manifest each) and reused while its marker matches.

Floe runs as `floe standalone --executors 2`. Each table's statement is prepared once (the ADBC
cursor keeps it while the SQL text is unchanged) and executed with a fresh key each time: one
DoPut (the parameter), one GetFlightInfo and one DoGet per execution, the whole result fetched.
Keys are drawn with a fixed seed, after 20 warm-up executions; every answer is checked against
the orders Parquet file. The orders statement then runs the same way through pyarrow.flight
without ADBC, timing each RPC, to tell the server's time from the client driver's. The peer is
DuckDB in-process, the same prepared statement over the
generator's orders Parquet file. The warm-up brings orders' two files into the executors'
lookup cache (`FLOE_LOOKUP_CACHE=0` measures without it). Prints p50/p99 and Floe/DuckDB
ratios; writes
benches/results/point-sf<SF>-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent / "tpch"))
sys.path.insert(0, str(REPO / "tests" / "integration"))

import run as tpch  # noqa: E402  (benches/tpch/run.py)

POINT = "SELECT o_orderkey, o_custkey, o_orderstatus, o_totalprice, o_orderdate FROM {table} WHERE o_orderkey = ?"
COLUMNS = ["o_orderkey", "o_custkey", "o_orderstatus", "o_totalprice", "o_orderdate"]
SMALL = "bench_point.orders_small"
WARMUP = 20


def small_files_table(warehouse: Path, orders: Path, appends: int) -> None:
    """`bench_point.orders_small`: orders written in `appends` appends, reused while its marker
    matches."""
    import pyarrow.parquet as pq
    from pyiceberg.catalog.sql import SqlCatalog

    marker = warehouse / "bench-point-small.json"
    want = {"appends": appends, "orders_mtime": int(orders.stat().st_mtime)}
    catalog = SqlCatalog("floe", uri=f"sqlite:///{warehouse}/catalog.db", warehouse=f"file://{warehouse}")
    if marker.is_file() and json.loads(marker.read_text()) == want and catalog.table_exists(SMALL):
        tpch.log(f"point: reusing {SMALL}")
        return
    t0 = time.monotonic()
    catalog.create_namespace_if_not_exists("bench_point")
    if catalog.table_exists(SMALL):
        catalog.purge_table(SMALL)
    data = tpch._plain_strings(pq.read_table(orders))
    table = catalog.create_table(SMALL, data.schema)
    step = -(-data.num_rows // appends)
    for k in range(appends):
        table.append(data.slice(k * step, step))
    marker.write_text(json.dumps(want))
    tpch.log(f"point: {SMALL} written in {appends} appends in {time.monotonic() - t0:.1f}s")


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def summary(samples: list[float]) -> dict:
    return {"p50_ms": statistics.median(samples) * 1e3, "p99_ms": percentile(samples, 99) * 1e3,
            "runs": len(samples)}


def time_point(cursor, sql: str, keys: list[int], expected: dict) -> list[float]:
    """Executes `sql` once per key, checking each answer; the seconds each took."""
    times = []
    for i, key in enumerate(keys):
        t0 = time.perf_counter()
        cursor.execute(sql, parameters=(key,))
        result = cursor.fetch_arrow_table()
        elapsed = time.perf_counter() - t0
        rows = result.to_pylist()
        want = expected.get(key)
        got = tuple(rows[0][c] for c in COLUMNS) if len(rows) == 1 else rows
        if got != want:
            raise SystemExit(f"wrong answer for o_orderkey = {key}: {got!r}, expected {want!r}")
        if i >= WARMUP:
            times.append(elapsed)
    return times


def time_raw_flight(uri: str, sql: str, keys: list[int], expected: dict) -> dict:
    """The same prepared point query through pyarrow.flight, no ADBC: p50 of each RPC of an
    execution (DoPut of the parameter, GetFlightInfo, DoGet), to tell the server's time from the
    client driver's."""
    import pyarrow as pa
    import pyarrow.flight as flight
    from floe_wire import _any, pb_bytes, pb_decode

    client = flight.connect(uri)
    try:
        request = _any("arrow.flight.protocol.sql.ActionCreatePreparedStatementRequest",
                       pb_bytes(1, sql.replace("?", "$1")))
        answer = list(client.do_action(flight.Action("CreatePreparedStatement", request)))[0]
        handle = pb_decode(pb_decode(answer.body.to_pybytes())[2][0])[1][0]
        parts: dict[str, list[float]] = {"do_put": [], "get_flight_info": [], "do_get": []}
        for i, key in enumerate(keys):
            command = _any("arrow.flight.protocol.sql.CommandPreparedStatementQuery", pb_bytes(1, handle))
            t0 = time.perf_counter()
            parameters = pa.record_batch([pa.array([key], pa.int64())], names=["$1"])
            writer, reader = client.do_put(flight.FlightDescriptor.for_command(command), parameters.schema)
            writer.write_batch(parameters)
            writer.done_writing()
            put = reader.read()
            writer.close()
            bound = pb_decode(put.to_pybytes())[1][0] if put is not None else handle
            t1 = time.perf_counter()
            command = _any("arrow.flight.protocol.sql.CommandPreparedStatementQuery", pb_bytes(1, bound))
            info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
            t2 = time.perf_counter()
            rows = client.do_get(info.endpoints[0].ticket).read_all().to_pylist()
            t3 = time.perf_counter()
            got = tuple(rows[0][c] for c in COLUMNS) if len(rows) == 1 else rows
            if got != expected.get(key):
                raise SystemExit(f"raw Flight: wrong answer for o_orderkey = {key}: {got!r}")
            if i >= WARMUP:
                parts["do_put"].append(t1 - t0)
                parts["get_flight_info"].append(t2 - t1)
                parts["do_get"].append(t3 - t2)
        total = [sum(p) for p in zip(*parts.values())]
        return {**{k: summary(v) for k, v in parts.items()}, "total": summary(total)}
    finally:
        client.close()


def time_select_one(cursor, runs: int) -> list[float]:
    times = []
    for i in range(runs + WARMUP):
        t0 = time.perf_counter()
        cursor.execute("SELECT 1")
        value = cursor.fetch_arrow_table().column(0)[0].as_py()
        elapsed = time.perf_counter() - t0
        if value != 1:
            raise SystemExit(f"SELECT 1 answered {value!r}")
        if i >= WARMUP:
            times.append(elapsed)
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sf", default="0.1", help="TPC-H scale factor (default 0.1)")
    ap.add_argument("--runs", type=int, default=300, help="timed executions per statement (default 300)")
    ap.add_argument("--small-files", type=int, default=300, help="appends making the small-files table")
    tpch.add_floe_args(ap)
    args = ap.parse_args(argv)
    import adbc_driver_flightsql.dbapi as flightsql
    import duckdb
    import pyarrow.parquet as pq

    sf = tpch.sf_text(args.sf)
    sf_dir = Path(args.cache_dir) / f"sf{sf}"
    files = tpch.generate(sf_dir, sf)
    warehouse, _ = tpch.load_iceberg(sf_dir, files, reload=False)
    small_files_table(warehouse, files["orders"], args.small_files)
    orders = pq.read_table(files["orders"], columns=COLUMNS).to_pylist()
    expected = {r["o_orderkey"]: tuple(r[c] for c in COLUMNS) for r in orders}
    rng = random.Random(11)
    keys = [rng.choice(orders)["o_orderkey"] for _ in range(args.runs + WARMUP)]
    keys[WARMUP + args.runs // 2] = -1  # one key that matches nothing (an empty answer is checked too)
    expected[-1] = []

    binary = tpch.floe_binary(args.floe_bin)
    tpch.log(f"floe: {binary} ({tpch.binary_profile(binary)} build)")
    server = tpch.FloeServer(binary, warehouse, sf_dir / "floe-logs" / time.strftime("point-%Y%m%dT%H%M%S"),
                             args.executors, getattr(args, "deployment", "standalone"))
    server.start()
    results = {}
    try:
        with flightsql.connect(server.uri) as conn:
            for name, table in (("orders", "tpch.orders"), ("orders_small", SMALL)):
                with conn.cursor() as cur:
                    results[f"floe_point_{name}"] = summary(time_point(cur, POINT.format(table=table), keys, expected))
            with conn.cursor() as cur:
                results["floe_select_1"] = summary(time_select_one(cur, args.runs))
        results["floe_point_orders_raw_flight"] = time_raw_flight(
            server.uri, POINT.format(table="tpch.orders"), keys, expected)
    finally:
        server.stop()

    con = duckdb.connect()
    con.execute(f"CREATE VIEW orders AS SELECT * FROM read_parquet('{files['orders']}')")
    duck_times = []
    sql = POINT.format(table="orders")
    for i, key in enumerate(keys):
        t0 = time.perf_counter()
        rows = con.execute(sql, [key]).fetchall()
        elapsed = time.perf_counter() - t0
        got = tuple(rows[0]) if len(rows) == 1 else [tuple(r) for r in rows]
        if got != expected[key]:
            raise SystemExit(f"DuckDB: wrong answer for o_orderkey = {key}: {got!r}")
        if i >= WARMUP:
            duck_times.append(elapsed)
    results["duckdb_point_orders"] = summary(duck_times)
    t_one = []
    for i in range(args.runs + WARMUP):
        t0 = time.perf_counter()
        con.execute("SELECT 1").fetchall()
        if i >= WARMUP:
            t_one.append(time.perf_counter() - t0)
    results["duckdb_select_1"] = summary(t_one)

    duck = results["duckdb_point_orders"]["p50_ms"]
    print()
    print(f"Warm point queries through ADBC Flight SQL, TPC-H SF {sf}, {args.runs} executions each "
          f"(targets: point p50 <= 5 ms, p99 <= 20 ms; SELECT 1 p50 <= 2 ms):")
    for name, label in (("floe_point_orders", "Floe point, orders (2 files)"),
                        ("floe_point_orders_small", f"Floe point, orders in {args.small_files} files"),
                        ("floe_select_1", "Floe SELECT 1"),
                        ("duckdb_point_orders", "DuckDB point, in-process"),
                        ("duckdb_select_1", "DuckDB SELECT 1, in-process")):
        r = results[name]
        ratio = f"   {r['p50_ms'] / duck:5.2f}x DuckDB" if name.startswith("floe_point") else ""
        print(f"  {label:36s} p50 {r['p50_ms']:7.2f} ms   p99 {r['p99_ms']:7.2f} ms{ratio}")
    raw = results["floe_point_orders_raw_flight"]
    print(f"  Floe point, orders, raw Flight RPCs (pyarrow.flight, no ADBC): p50 DoPut "
          f"{raw['do_put']['p50_ms']:.2f} + GetFlightInfo {raw['get_flight_info']['p50_ms']:.2f} + "
          f"DoGet {raw['do_get']['p50_ms']:.2f} ms; total p50 {raw['total']['p50_ms']:.2f} ms")
    out = HERE.parent / "results" / f"point-sf{sf}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"sf": sf, "results": results, "binary": str(binary),
                               "profile": tpch.binary_profile(binary), "git": tpch.git_describe(),
                               "loadavg": os.getloadavg()}, indent=2))
    tpch.log(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
