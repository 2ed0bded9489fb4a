"""Delete benchmark: TPC-H Q1 and Q6 on lineitem, on copies of it with 10 % of the rows deleted
by position delete files and by deletion vectors, against the delete-free table, in one run.

    bash benches/deletes/run.sh --sf 1 --runs 5

Data and warehouse are the TPC-H benchmark's (benches/tpch/run.py: tpchgen-cli Parquet loaded
with pyiceberg into a local SqlCatalog warehouse), reused when present. The copies are made by
the `add_deletes` example (catalog/examples/add_deletes.rs: pyiceberg writes
neither kind of delete): `bench_deletes.lineitem_pos` (format v2, one position delete file per
data file) and `bench_deletes.lineitem_dv` (format v3, one deletion vector per data file). Both
share lineitem's data files and delete every tenth row of each (positions 3, 13, 23, ...).

Floe runs as `floe standalone --executors 2`; each query runs once as a warm-up and --runs timed
times per table, interleaved (plain, position, dv, plain, ...) so load drifts hit all three
alike. Answers are checked against DuckDB over the same data files read with
`file_row_number`, the deleted positions filtered out. Prints medians and the ratio of each
delete table to the delete-free one; writes benches/results/deletes-sf<SF>-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent / "tpch"))
sys.path.insert(0, str(REPO / "tests" / "integration"))

import run as tpch  # noqa: E402  (benches/tpch/run.py)

TABLES = {
    "plain": "tpch.lineitem",
    "position": "bench_deletes.lineitem_pos",
    "dv": "bench_deletes.lineitem_dv",
}
QUERIES = (1, 6)


def make_copies(warehouse: Path) -> None:
    """The two delete tables, made fresh each run (a second or two). The example is built with
    the whole workspace (`cargo build -p` would resolve other features and rebuild DataFusion)."""
    env = dict(os.environ)
    target = Path(env.setdefault("CARGO_TARGET_DIR", str(Path.home() / ".cache" / "floe-target")))
    subprocess.run(["cargo", "build", "--quiet", "--workspace", "--examples"], cwd=REPO, env=env,
                   check=True, timeout=7200)
    for mode, table in (("position", TABLES["position"]), ("dv", TABLES["dv"])):
        out = subprocess.run(
            [str(target / "debug" / "examples" / "add_deletes"), str(warehouse), TABLES["plain"], table, mode],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=3600,
        )
        if out.returncode != 0:
            raise SystemExit(f"add_deletes {mode} failed:\n{out.stdout}\n{out.stderr}")
        tpch.log(f"deletes: {out.stdout.strip()}")


def oracle(warehouse: Path, sql_by_query: dict[int, str]) -> dict[int, object]:
    """DuckDB's answers over lineitem's data files without every tenth row of each."""
    import duckdb
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("floe", uri=f"sqlite:///{warehouse}/catalog.db", warehouse=f"file://{warehouse}")
    files = [f["file_path"].removeprefix("file://")
             for f in catalog.load_table(TABLES["plain"]).inspect.files().to_pylist() if f["content"] == 0]
    con = duckdb.connect()
    con.execute("CREATE SCHEMA tpch")
    listed = ", ".join(f"'{p}'" for p in files)
    con.execute(f"CREATE VIEW tpch.lineitem AS SELECT * EXCLUDE (file_row_number) FROM "
                f"read_parquet([{listed}], file_row_number = true) WHERE file_row_number % 10 <> 3")
    return {q: con.sql(sql).to_arrow_table() for q, sql in sql_by_query.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sf", default="1", help="TPC-H scale factor (default 1)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per query and table (default 5)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per execution (default 600)")
    tpch.add_floe_args(ap, executors=False)
    args = ap.parse_args(argv)
    from compare import assert_close

    sf = tpch.sf_text(args.sf)
    sf_dir = Path(args.cache_dir) / f"sf{sf}"
    files = tpch.generate(sf_dir, sf)
    warehouse, rows = tpch.load_iceberg(sf_dir, files, reload=False)
    make_copies(warehouse)
    text = {q: tpch.query_text(q) for q in QUERIES}
    expected_deleted = oracle(warehouse, text)

    binary = tpch.floe_binary(args.floe_bin)
    tpch.log(f"floe: {binary} ({tpch.binary_profile(binary)} build)")
    server = tpch.FloeServer(binary, warehouse, sf_dir / "floe-logs" / time.strftime("deletes-%Y%m%dT%H%M%S"), 2,
                             args.deployment)
    server.start()
    times: dict[tuple[int, str], list[float]] = {}
    problems: list[str] = []
    client = tpch.Client("floe", {"uri": server.uri, "timeout": args.timeout})
    client.start()
    try:
        for q in QUERIES:
            for kind, table in TABLES.items():
                sql = text[q].replace("tpch.lineitem", table)
                outcome = client.run(sql, args.timeout)  # warm-up, its answer checked
                if outcome[0] != "ok":
                    problems.append(f"Q{q:02d} {kind}: {outcome[0]} {outcome[1]}")
                    continue
                try:
                    if kind != "plain":
                        assert_close(outcome[2], expected_deleted[q], context=f"Q{q:02d} {kind}")
                except AssertionError as e:
                    problems.append(f"Q{q:02d} {kind}: wrong answer: {e}")
            for _ in range(args.runs):
                for kind, table in TABLES.items():
                    outcome = client.run(text[q].replace("tpch.lineitem", table), args.timeout)
                    if outcome[0] == "ok":
                        times.setdefault((q, kind), []).append(outcome[1])
                    else:
                        problems.append(f"Q{q:02d} {kind}: {outcome[0]} {outcome[1]}")
    finally:
        client.stop()
        server.stop()

    print()
    print(f"TPC-H SF {sf} lineitem ({rows['lineitem']} rows), 10 % deleted; medians of {args.runs} "
          f"({tpch.binary_profile(binary)} build, load {os.getloadavg()[0]:.1f}):")
    print(f"  {'query':6} {'no deletes':>11} {'position':>10} {'ratio':>6} {'dv':>10} {'ratio':>6}")
    summary = {}
    for q in QUERIES:
        m = {k: statistics.median(times[(q, k)]) for k in TABLES if (q, k) in times}
        plain = m.get("plain")
        ratio = {k: (m[k] / plain if plain and k in m else None) for k in ("position", "dv")}
        summary[f"Q{q:02d}"] = {"median_s": m, "ratio": ratio}

        def fmt(k):
            return f"{m[k]:9.3f}s" if k in m else f"{'-':>10}"

        def fr(k):
            return f"{ratio[k]:5.2f}x" if ratio[k] else f"{'-':>6}"

        print(f"  Q{q:02d}    {fmt('plain'):>11} {fmt('position'):>10} {fr('position')} {fmt('dv'):>10} {fr('dv')}")
    for p in problems:
        print(f"  PROBLEM: {p}")
    out = REPO / "benches" / "results" / f"deletes-sf{sf}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"sf": sf, "runs": args.runs, "times": {f"Q{q:02d}-{k}": v for (q, k), v in times.items()},
                               "summary": summary, "problems": problems, "binary": str(binary),
                               "profile": tpch.binary_profile(binary), "loadavg": os.getloadavg()}, indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
