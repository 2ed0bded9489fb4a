"""Seed-question benchmark (issue 11, P3): daily active users per day, city and device model over
the last 30 of 365 daily partitions, minus the users marketing acquired, on Floe against DuckDB
over the same rows as hive-partitioned Parquet; then the layer build over those rows
(`CREATE TABLE … PARTITIONED BY (dt) AS …`) against DuckDB's `COPY … PARTITION_BY (dt)`.

    bash benches/seed/run.sh --rows 20000000 --runs 5

Data (made once per --rows, kept in <cache>/seed): `bench_seed.events` (dt date, user_id long,
city string, model string, event string; identity-partitioned by dt, one day per partition over
365 days) and `bench_seed.marketing_users` (user_id long, 2 % of the users), written by pyiceberg
into a local SQL-catalog warehouse; the same rows written by pyarrow as hive-partitioned Parquet
(`events/dt=YYYY-MM-DD/*.parquet`) for DuckDB.

The question:

    SELECT dt, city, model, count(DISTINCT user_id) AS dau
    FROM bench_seed.events
    WHERE dt >= DATE '<day 336>' AND dt < DATE '<day 366>'
      AND user_id NOT IN (SELECT user_id FROM bench_seed.marketing_users)
    GROUP BY dt, city, model

Floe runs as `floe standalone --executors 2` through ADBC Flight SQL; DuckDB reads the hive
layout with hive_partitioning (it prunes by directory name). Each engine runs the question
once as a warm-up (answers compared) and --runs timed times, interleaved. Also checked: Floe's
EXPLAIN ANALYZE opened exactly the data files of the 30 days (pyiceberg's own listing). Prints
medians and the ratio; writes benches/results/seed-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
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

DAYS = 365
WINDOW = 30
FIRST_DAY = dt.date(2025, 11, 1)
USERS = 2_000_000
MARKETING_SHARE = 0.02
CITIES = [f"city_{i:02d}" for i in range(40)]
MODELS = [f"model_{i:02d}" for i in range(25)]
EVENTS = ["open", "view", "click", "buy"]
# Data files each task of each stage opened, from the `executed=[...]` lists of EXPLAIN ANALYZE.
FILES_RE = re.compile(r"@\S+ files=(\d+)")


def question(namespace: str) -> str:
    start = FIRST_DAY + dt.timedelta(days=DAYS - WINDOW)
    end = FIRST_DAY + dt.timedelta(days=DAYS)
    return (f"SELECT dt, city, model, count(DISTINCT user_id) AS dau FROM {namespace}.events "
            f"WHERE dt >= DATE '{start}' AND dt < DATE '{end}' "
            f"AND user_id NOT IN (SELECT user_id FROM {namespace}.marketing_users) "
            f"GROUP BY dt, city, model")


def build_query(namespace: str) -> str:
    """A DWS-style layer build's query: the last quarter's users and events per day, city and model
    (written partitioned by day)."""
    start = FIRST_DAY + dt.timedelta(days=DAYS - 92)
    return (f"SELECT dt, city, model, count(DISTINCT user_id) AS dau, count(*) AS events "
            f"FROM {namespace}.events WHERE dt >= DATE '{start}' GROUP BY dt, city, model")


def catalog(warehouse: Path):
    from pyiceberg.catalog.sql import SqlCatalog

    return SqlCatalog("floe", uri=f"sqlite:///{warehouse}/catalog.db", warehouse=f"file://{warehouse}")


def make_data(root: Path, rows: int) -> tuple[Path, Path]:
    """The Iceberg warehouse and the hive-partitioned copy, made once per row count."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import IdentityTransform
    from pyiceberg.types import DateType, LongType, NestedField, StringType

    base = root / f"rows{rows}"
    warehouse, hive = base / "warehouse", base / "hive"
    marker = base / "done.json"
    if marker.exists():
        return warehouse, hive
    import shutil

    shutil.rmtree(base, ignore_errors=True)
    warehouse.mkdir(parents=True)
    cat = catalog(warehouse)
    cat.create_namespace("bench_seed")
    schema = Schema(
        NestedField(1, "dt", DateType(), required=False),
        NestedField(2, "user_id", LongType(), required=False),
        NestedField(3, "city", StringType(), required=False),
        NestedField(4, "model", StringType(), required=False),
        NestedField(5, "event", StringType(), required=False),
    )
    spec = PartitionSpec(PartitionField(source_id=1, field_id=1000, transform=IdentityTransform(), name="dt"))
    events = cat.create_table("bench_seed.events", schema=schema, partition_spec=spec)
    arrow_schema = pa.schema([("dt", pa.date32()), ("user_id", pa.int64()), ("city", pa.string()),
                              ("model", pa.string()), ("event", pa.string())])
    rng = np.random.default_rng(11)
    per_day = rows // DAYS
    t0 = time.perf_counter()
    # A month per append: 12-13 snapshots, one file per day.
    for month_start in range(0, DAYS, 31):
        days = range(month_start, min(month_start + 31, DAYS))
        n = per_day * len(days)
        day = np.repeat(np.array([(FIRST_DAY + dt.timedelta(days=d)).toordinal() - 719163 for d in days],
                                 dtype=np.int32), per_day)
        users = rng.integers(0, USERS, n, dtype=np.int64)
        city_idx = users % len(CITIES)
        model_idx = (users // 7 + rng.integers(0, 2, n)) % len(MODELS)
        batch = pa.table({
            "dt": pa.array(day, pa.date32()),
            "user_id": pa.array(users),
            "city": pa.DictionaryArray.from_arrays(pa.array(city_idx, pa.int32()), CITIES).cast(pa.string()),
            "model": pa.DictionaryArray.from_arrays(pa.array(model_idx, pa.int32()), MODELS).cast(pa.string()),
            "event": pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, len(EVENTS), n), pa.int32()),
                                                    EVENTS).cast(pa.string()),
        }, schema=arrow_schema)
        events.append(batch)
        for d in days:
            date = FIRST_DAY + dt.timedelta(days=d)
            part = batch.filter(pc.equal(batch.column("dt"), pa.scalar(date, pa.date32())))
            out = hive / "events" / f"dt={date}"
            out.mkdir(parents=True, exist_ok=True)
            pq.write_table(part.drop_columns(["dt"]), out / "part-0.parquet")
        tpch.log(f"seed: days {days.start}..{days.stop - 1} written ({time.perf_counter() - t0:.0f} s)")
    marketing = np.unique(rng.choice(USERS, int(USERS * MARKETING_SHARE), replace=False)).astype(np.int64)
    mk = pa.table({"user_id": pa.array(marketing)})
    mt = cat.create_table("bench_seed.marketing_users",
                          schema=Schema(NestedField(1, "user_id", LongType(), required=False)))
    mt.append(mk)
    (hive / "marketing_users").mkdir(parents=True, exist_ok=True)
    pq.write_table(mk, hive / "marketing_users" / "part-0.parquet")
    marker.write_text(json.dumps({"rows": per_day * DAYS}))
    return warehouse, hive


def window_files(warehouse: Path) -> tuple[int, int]:
    """The live data files of the 30 days, and of the marketing table, by pyiceberg's listing."""
    start = FIRST_DAY + dt.timedelta(days=DAYS - WINDOW)
    files = catalog(warehouse).load_table("bench_seed.events").inspect.files().to_pylist()
    marketing = catalog(warehouse).load_table("bench_seed.marketing_users").inspect.files().to_pylist()
    return (sum(1 for f in files if f["content"] == 0 and f["partition"]["dt"] >= start),
            sum(1 for f in marketing if f["content"] == 0))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20_000_000, help="event rows over 365 days (default 20 M)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per engine (default 5)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per execution (default 600)")
    ap.add_argument("--floe-bin", help="Floe binary (default $FLOE_BIN, else the release build, else debug)")
    ap.add_argument("--executors", type=int, default=2, help="Floe executors (default 2)")
    ap.add_argument("--cache-dir", default=os.environ.get("FLOE_BENCH_CACHE") or str(Path.home() / ".cache" / "floe-bench"))
    args = ap.parse_args(argv)
    import adbc_driver_flightsql.dbapi as flightsql
    import duckdb
    from compare import assert_close

    warehouse, hive = make_data(Path(args.cache_dir) / "seed", args.rows)
    rows = json.loads((warehouse.parent / "done.json").read_text())["rows"]
    expected_files, marketing_files = window_files(warehouse)

    duck = duckdb.connect()
    duck.execute(f"SET threads = {os.cpu_count()}")
    duck.execute("CREATE SCHEMA bench_seed")
    duck.execute(f"CREATE VIEW bench_seed.events AS SELECT * FROM read_parquet('{hive}/events/*/*.parquet', "
                 f"hive_partitioning = true, hive_types = {{'dt': DATE}})")
    duck.execute(f"CREATE VIEW bench_seed.marketing_users AS SELECT * FROM "
                 f"read_parquet('{hive}/marketing_users/*.parquet')")
    sql = question("bench_seed")

    binary = tpch.floe_binary(args.floe_bin)
    tpch.log(f"floe: {binary} ({tpch.binary_profile(binary)} build)")
    server = tpch.FloeServer(binary, warehouse, warehouse.parent / "floe-logs" /
                             time.strftime("seed-%Y%m%dT%H%M%S"), args.executors, getattr(args, "deployment", "standalone"))
    server.start()
    times: dict[str, list[float]] = {"floe": [], "duckdb": [], "floe_build": [], "duckdb_build": []}
    build = build_query("bench_seed")
    build_out = warehouse.parent / "duckdb-build"
    try:
        with flightsql.connect(server.uri, autocommit=True) as conn:
            def floe(text):
                with conn.cursor() as cur:
                    cur.execute(text)
                    return cur.fetch_arrow_table()

            got, want = floe(sql), duck.sql(sql).to_arrow_table()
            assert_close(got, want, context="seed question")
            analyzed = "\n".join(str(v) for r in floe("EXPLAIN ANALYZE " + sql).to_pylist() for v in r.values())
            # files opened by every task of the two scans (events, marketing_users)
            opened = sum(int(n) for n in FILES_RE.findall(analyzed)) - marketing_files
            if opened != expected_files:
                raise SystemExit(f"Floe opened {opened} event data files, the 30 days hold {expected_files}:\n{analyzed}")
            for _ in range(args.runs):
                t0 = time.perf_counter()
                floe(sql)
                times["floe"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                duck.sql(sql).to_arrow_table()
                times["duckdb"].append(time.perf_counter() - t0)
            # The layer build: CREATE TABLE … PARTITIONED BY (dt) AS its query, against DuckDB's
            # COPY … PARTITION_BY (dt) of the same query; the tables written are compared.
            for i in range(args.runs):
                table = f"bench_seed.daily_{os.getpid()}_{i}"
                t0 = time.perf_counter()
                floe(f"CREATE TABLE {table} PARTITIONED BY (dt) AS {build}")
                times["floe_build"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                duck.execute(f"COPY ({build}) TO '{build_out}' (FORMAT parquet, COMPRESSION zstd, "
                             f"PARTITION_BY (dt), OVERWRITE_OR_IGNORE)")
                times["duckdb_build"].append(time.perf_counter() - t0)
                if i == 0:
                    written = floe(f"SELECT * FROM {table}")
                    copied = duck.sql(f"SELECT dt, city, model, dau, events FROM read_parquet("
                                      f"'{build_out}/*/*.parquet', hive_partitioning = true, "
                                      f"hive_types = {{'dt': DATE}})").to_arrow_table()
                    assert_close(written, copied, context="the layer build's table")
                    schema, name = table.split(".")
                    build_files = floe(f'SELECT count(*) AS n FROM "{schema}"."{name}$files"')
                    build_files = build_files.column(0)[0].as_py()
                floe(f"DROP TABLE {table}")
    finally:
        server.stop()

    med = {k: statistics.median(v) for k, v in times.items()}
    print()
    print(f"Seed question over {rows:,} event rows, {WINDOW} of {DAYS} days, {len(got)} groups; "
          f"medians of {args.runs} ({tpch.binary_profile(binary)} build, load {os.getloadavg()[0]:.1f}):")
    print(f"  Floe    {med['floe'] * 1e3:8.0f} ms   {med['floe'] / med['duckdb']:5.2f}x DuckDB   "
          f"(data files opened: {opened} = the {WINDOW} days' {expected_files})")
    print(f"  DuckDB  {med['duckdb'] * 1e3:8.0f} ms   (hive-partitioned Parquet)")
    print(f"The layer build (92 days into a table partitioned by day, {build_files} files), medians of {args.runs}:")
    print(f"  Floe    {med['floe_build'] * 1e3:8.0f} ms   {med['floe_build'] / med['duckdb_build']:5.2f}x DuckDB   "
          f"(CREATE TABLE … PARTITIONED BY (dt) AS …)")
    print(f"  DuckDB  {med['duckdb_build'] * 1e3:8.0f} ms   (COPY … PARTITION_BY (dt), zstd)")
    out = HERE.parent / "results" / f"seed-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "medians_s": med, "runs_s": times, "files_opened": opened,
                               "binary": str(binary), "profile": tpch.binary_profile(binary),
                               "git": tpch.git_describe(), "loadavg": os.getloadavg()}, indent=2))
    tpch.log(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
