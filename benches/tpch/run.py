"""TPC-H benchmark: Floe (standalone, 2 executors) vs DataFusion and DuckDB,
single node, on the same generated data.  Run on demand, never by the tests:

    bash benches/tpch/run.sh --sf 1 --runs 3          # installs benches/requirements.txt into .venv
    .venv/bin/python benches/tpch/run.py --sf 1 --runs 3

Steps:
  1. `tpchgen-cli parquet` at --sf into <cache>/sf<SF>/parquet (reused if complete).
  2. The Parquet loaded with pyiceberg into namespace `tpch` of a SqlCatalog
     "floe" on a local warehouse <cache>/sf<SF>/warehouse (catalog.db inside;
     lineitem in 4 appends, orders in 2, so they have several data files).
     Reused when its marker file matches the Parquet; --reload forces a reload.
  3. `floe standalone --warehouse WH --port 0 --executors 2`; each query of
     benches/tpch/queries is run once (warm-up, its answer kept) and --runs
     times (timed), full result fetched over ADBC Flight SQL.
  4. The same for DataFusion (Python bindings, tables registered with
     register_parquet under schema `tpch`) and DuckDB (views over
     read_parquet in schema `tpch`), over the data files of the Iceberg
     tables' current snapshots — the very Parquet Floe reads (linked into
     <cache>/sf<SF>/peer-files/; --peer-files source: the generator's files,
     which differ in compression and row-group size).  The engines take
     turns at each execution (--order interleaved, the default); --order
     sequential runs one engine's queries after another's.
  5. Answers checked against DuckDB's (DataFusion's when DuckDB failed) with
     tests/integration/compare.py assert_close; a table of medians and ratios
     printed and written as JSON to benches/results/tpch-sf<SF>-<UTC time>.json.

Every engine's client runs in a child process, so a query that exceeds
--timeout (per execution) is reported as `timeout` and its process killed;
after a Floe timeout the Floe server is restarted too (the abandoned query
would otherwise keep running).  Floe is stopped at exit, including on
Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO / "benches" / "results"
sys.path.insert(0, str(REPO / "tests" / "integration"))
from tpch_queries import ORDER_KEYS, query_limit, query_text, tpchgen_bin  # noqa: E402

NAMESPACE = "tpch"
TABLES = ["region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem"]
APPENDS = {"lineitem": 4, "orders": 2}
MAX_APPEND_ROWS = 2_000_000
ENGINES = ["floe", "datafusion", "duckdb"]
LABEL = {"floe": "Floe", "datafusion": "DataFusion", "duckdb": "DuckDB"}


def log(msg: str) -> None:
    print(msg, flush=True)


def sf_text(sf: str) -> str:
    """Canonical spelling of a scale factor: 1, 0.1, 10."""
    return f"{float(sf):g}"


# ------------------------------------------------------------------ data


def generate(sf_dir: Path, sf: str) -> dict[str, Path]:
    """Parquet files of every table at scale `sf`, generated once per cache dir."""
    out = sf_dir / "parquet"
    files = {t: out / f"{t}.parquet" for t in TABLES}
    if all(p.is_file() for p in files.values()):
        log(f"data: reusing {out}")
        return files
    sf_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="parquet.tmp.", dir=sf_dir))
    t0 = time.monotonic()
    log(f"data: tpchgen-cli parquet --scale-factor {sf} -> {out}")
    subprocess.run(
        [tpchgen_bin(), "parquet", "--scale-factor", sf, "--output-dir", str(tmp), "--no-progress", "--quiet"],
        check=True, timeout=3600,
    )
    missing = [t for t in TABLES if not (tmp / f"{t}.parquet").is_file()]
    if missing:
        raise SystemExit(f"tpchgen-cli did not write {missing} in {tmp}")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)  # only complete output is ever reused
    log(f"data: generated in {time.monotonic() - t0:.1f}s")
    return files


def _plain_strings(table):
    # string_view -> string (same Iceberg type; pyiceberg's writer wants plain strings)
    import pyarrow as pa

    fields = [
        pa.field(f.name, pa.string() if f.type == pa.string_view() else f.type, f.nullable, f.metadata)
        for f in table.schema
    ]
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))


def load_iceberg(sf_dir: Path, files: dict[str, Path], reload: bool) -> tuple[Path, dict[str, int]]:
    """Iceberg copy of the Parquet in <sf_dir>/warehouse (SqlCatalog "floe",
    namespace tpch).  Returns the warehouse dir and the row counts."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyiceberg.catalog.sql import SqlCatalog

    wh = sf_dir / "warehouse"
    marker = wh / "bench-loaded.json"
    rows = {t: pq.read_metadata(p).num_rows for t, p in files.items()}
    want = {
        "rows": rows,
        "appends": APPENDS,
        "parquet_mtime": {t: int(p.stat().st_mtime) for t, p in files.items()},
    }
    if not reload and marker.is_file():
        try:
            if json.loads(marker.read_text()) == want:
                log(f"iceberg: reusing {wh}")
                return wh, rows
        except (OSError, ValueError):
            pass
    if wh.exists():
        shutil.rmtree(wh)
    wh.mkdir(parents=True)
    t0 = time.monotonic()
    catalog = SqlCatalog("floe", uri=f"sqlite:///{wh}/catalog.db", warehouse=f"file://{wh}")
    catalog.create_namespace_if_not_exists(NAMESPACE)
    for name in TABLES:
        # Read in slices of at most MAX_APPEND_ROWS (SF10's lineitem whole would not fit in
        # memory twice); at SF1 this is exactly APPENDS's layout.
        source = pq.ParquetFile(files[name])
        total = source.metadata.num_rows
        n = max(APPENDS.get(name, 1), -(-total // MAX_APPEND_ROWS))
        step = -(-total // n)
        table = None
        appended = 0
        pending: list = []
        pending_rows = 0
        for batch in source.iter_batches(batch_size=65536):
            pending.append(batch)
            pending_rows += batch.num_rows
            while pending_rows >= step or (appended + pending_rows == total and pending_rows):
                chunk = pa.Table.from_batches(pending)
                part, rest = chunk.slice(0, step), chunk.slice(step)
                data = _plain_strings(part)
                if table is None:
                    table = catalog.create_table(f"{NAMESPACE}.{name}", data.schema)
                table.append(data)
                appended += part.num_rows
                pending = rest.to_batches()
                pending_rows = rest.num_rows
        log(f"iceberg: {NAMESPACE}.{name}: {appended} rows in {n} append(s)")
    marker.write_text(json.dumps(want))
    log(f"iceberg: loaded into {wh} in {time.monotonic() - t0:.1f}s")
    return wh, rows


def iceberg_data_files(sf_dir: Path, wh: Path) -> dict[str, Path]:
    """For each table, a directory of links to exactly the data files of its current Iceberg
    snapshot (<sf_dir>/peer-files/<table>/), so that DataFusion and DuckDB read the very
    Parquet files Floe reads (same compression, row groups and pages)."""
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("floe", uri=f"sqlite:///{wh}/catalog.db", warehouse=f"file://{wh}")
    root = sf_dir / "peer-files"
    if root.exists():
        shutil.rmtree(root)
    out = {}
    for name in TABLES:
        table = catalog.load_table(f"{NAMESPACE}.{name}")
        tasks = list(table.scan().plan_files())
        paths = [task.file.file_path for task in tasks]
        if any(task.delete_files for task in tasks):
            raise SystemExit(f"{NAMESPACE}.{name} has delete files: the peers cannot read it as plain Parquet")
        d = root / name
        d.mkdir(parents=True)
        for i, uri in enumerate(sorted(paths)):
            src = Path(uri.removeprefix("file://"))
            dst = d / f"{i:05d}-{src.name}"
            try:
                os.link(src, dst)
            except OSError:
                dst.symlink_to(src)
        out[name] = d
    log("peers: reading the Iceberg tables' data files (" + ", ".join(
        f"{t} {len(list(d.iterdir()))}" for t, d in out.items()) + f") under {root}")
    return out


# ------------------------------------------------------------------ engine clients (child processes)


def _client_main(conn, engine: str, setup: dict) -> None:
    """Child process: open the engine, then run each SQL text it is sent and
    answer ("ok", seconds, Arrow IPC bytes) or ("error", message)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    try:
        import pyarrow as pa

        if engine == "floe":
            import adbc_driver_flightsql
            import adbc_driver_flightsql.dbapi as flight_dbapi

            t = str(setup["timeout"])
            opts = adbc_driver_flightsql.DatabaseOptions
            db = flight_dbapi.connect(
                setup["uri"],
                db_kwargs={opts.TIMEOUT_QUERY.value: t, opts.TIMEOUT_FETCH.value: t, opts.TIMEOUT_UPDATE.value: t},
                autocommit=True,
            )

            def run(sql):
                cur = db.cursor()
                try:
                    cur.execute(sql)
                    return cur.fetch_arrow_table()
                finally:
                    cur.close()

        elif engine == "datafusion":
            from datafusion import SessionContext
            from datafusion.catalog import Schema

            ctx = SessionContext()
            ctx.catalog().register_schema(NAMESPACE, Schema.memory_schema())
            for t, p in setup["files"].items():
                ctx.register_parquet(f"{NAMESPACE}.{t}", p)

            def run(sql):
                return ctx.sql(sql).to_arrow_table()

        elif engine == "duckdb":
            import duckdb

            db = duckdb.connect()
            db.execute(f"CREATE SCHEMA {NAMESPACE}")
            for t, p in setup["files"].items():
                src = f"{p}/*.parquet" if Path(p).is_dir() else p
                db.execute(f"CREATE VIEW {NAMESPACE}.{t} AS SELECT * FROM read_parquet('{src}')")

            def run(sql):
                return db.sql(sql).to_arrow_table()

        else:
            raise ValueError(engine)
    except BaseException:  # noqa: BLE001
        conn.send(("error", traceback.format_exc(limit=3)))
        return
    conn.send(("ready",))
    while True:
        sql = conn.recv()
        if sql is None:
            return
        try:
            t0 = time.perf_counter()
            table = run(sql)
            secs = time.perf_counter() - t0
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as w:
                w.write_table(table)
            conn.send(("ok", secs, sink.getvalue().to_pybytes()))
        except BaseException as e:  # noqa: BLE001
            conn.send(("error", f"{type(e).__name__}: {e}"[:2000]))


class Client:
    """An engine client in a child process, with a per-execution deadline."""

    def __init__(self, engine: str, setup: dict):
        self.engine, self.setup = engine, setup
        self.proc: Optional[mp.Process] = None
        self.conn = None

    def start(self, timeout: float = 120.0) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_client_main, args=(child, self.engine, self.setup), daemon=True,
                                name=f"bench-{self.engine}")
        self.proc.start()
        child.close()
        self.conn = parent
        if not parent.poll(timeout):
            self.stop()
            raise RuntimeError(f"{self.engine} client not ready within {timeout:.0f}s")
        msg = parent.recv()
        if msg[0] != "ready":
            self.stop()
            raise RuntimeError(f"{self.engine} client failed to start:\n{msg[1]}")

    def run(self, sql: str, timeout: float):
        """("ok", seconds, pa.Table) | ("error", msg) | ("timeout", None)."""
        import pyarrow as pa

        try:
            self.conn.send(sql)
            if not self.conn.poll(timeout):
                return ("timeout", None)
            msg = self.conn.recv()
        except (EOFError, OSError, BrokenPipeError) as e:
            return ("error", f"client process died ({type(e).__name__}; exit code {self.proc.exitcode})")
        if msg[0] == "ok":
            return ("ok", msg[1], pa.ipc.open_stream(msg[2]).read_all())
        return msg

    def stop(self) -> None:
        if self.proc is not None:
            try:
                if self.proc.is_alive() and self.conn is not None:
                    try:
                        self.conn.send(None)
                    except (OSError, BrokenPipeError):
                        pass
                    self.proc.join(5)
                if self.proc.is_alive():
                    self.proc.kill()
                    self.proc.join(5)
            finally:
                self.proc = None
                if self.conn is not None:
                    self.conn.close()
                    self.conn = None


# ------------------------------------------------------------------ Floe server


def add_floe_args(ap, executors: bool = True) -> None:
    """The options every benchmark that starts Floe on the TPC-H warehouse takes."""
    ap.add_argument("--floe-bin", help="Floe binary (default $FLOE_BIN, else the release build, else debug)")
    if executors:
        ap.add_argument("--executors", type=int, default=2, help="Floe executors (default 2)")
    ap.add_argument("--deployment", choices=("standalone", "cluster"), default="standalone",
                    help="Floe as `floe standalone` (default) or a coordinator plus --executors separate executor processes")
    ap.add_argument("--cache-dir", default=os.environ.get("FLOE_BENCH_CACHE") or str(Path.home() / ".cache" / "floe-bench" / "tpch"),
                    help="where generated Parquet and the Iceberg warehouse are kept (default ~/.cache/floe-bench/tpch)")


def floe_binary(explicit: Optional[str]) -> Path:
    if explicit:
        p = Path(explicit)
    elif os.environ.get("FLOE_BIN"):
        p = Path(os.environ["FLOE_BIN"])
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR") or Path.home() / ".cache" / "floe-target")
        release = target / "release" / "floe"
        p = release if release.is_file() else target / "debug" / "floe"
    p = p.resolve()
    if not p.is_file() or not os.access(p, os.X_OK):
        raise SystemExit(f"Floe binary not found at {p} (cargo build [--release], or --floe-bin / FLOE_BIN)")
    return p


def binary_profile(p: Path) -> str:
    return p.parent.name if p.parent.name in ("debug", "release") else "unknown"


def peak_rss(pid: int) -> Optional[int]:
    """The most resident memory process `pid` has had (VmHWM), in bytes; None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def floe_env() -> dict:
    """Floe's environment: its log filter (FLOE_LOG, default info: one line per query, to
    stderr.log), and the executors' lookup cache (`--lookup-cache`) when FLOE_LOOKUP_CACHE is set
    (`0` turns it off, to compare)."""
    env = {"FLOE_LOG": os.environ.get("FLOE_BENCH_LOG", "info")}
    if "FLOE_LOOKUP_CACHE" in os.environ:
        env["FLOE_LOOKUP_CACHE"] = os.environ["FLOE_LOOKUP_CACHE"]
    return env


class FloeServer:
    """`floe standalone --executors N` (the default), or with deployment="cluster" a
    `floe coordinator` and N separate `floe executor` processes sharing a random cluster secret."""

    def __init__(self, binary: Path, warehouse: Path, log_dir: Path, executors: int,
                 deployment: str = "standalone", executor_memory: Optional[str] = None):
        self.binary, self.warehouse, self.log_dir, self.executors = binary, warehouse, log_dir, executors
        self.deployment = deployment
        # cluster only: each executor's --memory-limit, and the peak RSS (VmHWM) of every
        # executor process this server ran, read just before it stopped
        self.executor_memory = executor_memory
        self.executor_peaks: list[int] = []
        self.proc = None
        self.executor_procs: list = []
        self.uri: Optional[str] = None
        self.starts = 0

    def start(self) -> None:
        if self.deployment == "cluster":
            self._start_cluster()
            return
        from floe_cluster import READY_RE, REGISTERED_RE, FloeProcess

        self.starts += 1
        args = [str(self.binary), "standalone", "--warehouse", str(self.warehouse), "--port", "0",
                "--executors", str(self.executors)]
        self.proc = FloeProcess(f"floe-{self.starts}", args, self.log_dir, env=floe_env())
        m = self.proc.wait_for(READY_RE, what="FLOE_READY", timeout=120)[0]
        self.uri = f"grpc://{m['host']}:{m['port']}"
        self.proc.wait_for(REGISTERED_RE, count=self.executors, what="FLOE_EXECUTOR_REGISTERED", timeout=120)
        log(f"floe: standalone ready at {self.uri} with {self.executors} executors (pid {self.proc.pid}, logs {self.log_dir})")

    def _start_cluster(self) -> None:
        import secrets

        from floe_cluster import EXECUTOR_READY_RE, READY_RE, REGISTERED_RE, FloeProcess

        self.starts += 1
        env = {**floe_env(), "FLOE_CLUSTER_SECRET": secrets.token_hex(32)}
        self.proc = FloeProcess(f"floe-coordinator-{self.starts}",
                                [str(self.binary), "coordinator", "--warehouse", str(self.warehouse), "--port", "0"],
                                self.log_dir, env=env)
        m = self.proc.wait_for(READY_RE, what="FLOE_READY", timeout=120)[0]
        self.uri = f"grpc://{m['host']}:{m['port']}"
        control = f"http://127.0.0.1:{m['cport'] or m['port']}"
        # The executors share this machine: each gets its share of the cores as task slots (as
        # `floe standalone` gives its in-process executors), so that Floe runs as many tasks at
        # once as the single-node peers run threads.
        slots = max(1, (os.cpu_count() or 1) // self.executors)
        for i in range(self.executors):
            limit = ["--memory-limit", self.executor_memory] if self.executor_memory else []
            ex = FloeProcess(f"floe-executor{i + 1}-{self.starts}",
                             [str(self.binary), "executor", "--coordinator", control, "--port", "0",
                              "--warehouse", str(self.warehouse), "--task-slots", str(slots), *limit],
                             self.log_dir, env=env)
            self.executor_procs.append(ex)
            ex.wait_for(EXECUTOR_READY_RE, what="FLOE_EXECUTOR_READY", timeout=120)
        self.proc.wait_for(REGISTERED_RE, count=self.executors, what="FLOE_EXECUTOR_REGISTERED", timeout=120)
        log(f"floe: coordinator at {self.uri} with {self.executors} separate executor processes "
            f"(pids {self.proc.pid}, {', '.join(str(e.pid) for e in self.executor_procs)}; logs {self.log_dir})")

    def stop(self) -> None:
        for ex in self.executor_procs:
            peak = peak_rss(ex.pid)
            if peak is not None:
                self.executor_peaks.append(peak)
            ex.stop(grace=5.0)
        self.executor_procs = []
        if self.proc is not None:
            self.proc.stop(grace=5.0)
            self.proc = None


# ------------------------------------------------------------------ timing


class EngineRuns:
    """One engine's warm-up and timed executions, query by query, as the runner steps them:
    all of one engine's in a row (`--order sequential`) or the engines in turn
    (`--order interleaved`).  `records` and `answers` fill as it goes."""

    def __init__(self, engine: str, client_factory, timeout: float, sf: float, on_timeout=None):
        self.engine, self.factory, self.timeout, self.on_timeout = engine, client_factory, timeout, on_timeout
        self.sf = sf
        self.client = client_factory()
        self.records: dict[int, dict] = {}
        self.answers: dict[int, object] = {}

    def step(self, n: int, i: int) -> None:
        """Execution `i` of query `n` (0: the warm-up, whose answer is kept)."""
        if i == 0:
            self.records[n] = {"status": "ok", "times_s": [], "warmup_s": None, "median_s": None,
                               "rows": None, "error": None}
        rec = self.records[n]
        if rec["status"] != "ok":
            return
        res = self.client.run(query_text(n, self.sf), self.timeout)
        if res[0] != "ok":
            rec["status"] = res[0]
            rec["error"] = res[1] if res[0] == "error" else f"no answer within {self.timeout:g}s"
            if res[0] == "timeout" or self.client.proc is None or not self.client.proc.is_alive():
                self.client.stop()
                if self.on_timeout is not None:
                    self.on_timeout()
                self.client = self.factory()
            return
        _, secs, table = res
        if i == 0:
            rec["warmup_s"] = secs
            rec["rows"] = table.num_rows
            self.answers[n] = table
        else:
            rec["times_s"].append(secs)

    def finish(self, n: int) -> None:
        """Query `n`'s median, logged."""
        rec = self.records[n]
        if rec["status"] == "ok":
            rec["median_s"] = statistics.median(rec["times_s"]) if rec["times_s"] else rec["warmup_s"]
            log(f"{self.engine:>10} q{n:02d}: median {rec['median_s']:.3f}s  runs "
                + " ".join(f"{t:.3f}" for t in rec["times_s"])
                + f"  (warm-up {rec['warmup_s']:.3f}s, {rec['rows']} rows)")
        else:
            log(f"{self.engine:>10} q{n:02d}: {rec['status'].upper()}: {rec['error'].splitlines()[0] if rec['error'] else ''}")

    def stop(self) -> None:
        self.client.stop()


def time_engines(runners: list[EngineRuns], queries: list[int], runs: int) -> None:
    """Each query's warm-up and `runs` timed executions on every engine, the engines in turn
    at each execution: a slow minute of a noisy machine falls on all of them alike."""
    for n in queries:
        for i in range(runs + 1):
            for r in runners:
                r.step(n, i)
        for r in runners:
            r.finish(n)


def check_answers(queries: list[int], answers: dict[str, dict]) -> dict[int, dict]:
    """Compare each engine's warm-up answer with DuckDB's (else DataFusion's)."""
    from compare import assert_close

    checks = {}
    for n in queries:
        sql = query_text(n)
        ref = next((e for e in ("duckdb", "datafusion", "floe") if n in answers.get(e, {})), None)
        c = {"reference": ref}
        for e in ENGINES:
            if e == ref or ref is None or e not in answers:
                continue
            if n not in answers[e]:
                c[e] = "n/a"
                continue
            try:
                assert_close(answers[e][n], answers[ref][n], order_keys=ORDER_KEYS[n],
                             limit=query_limit(sql), context=f"q{n:02d} {e} vs {ref}")
                c[e] = "ok"
            except AssertionError as err:
                c[e] = f"MISMATCH: {err}"
        if ref is not None and answers[ref][n].num_rows == 0:
            c["note"] = f"{ref} returned no rows"
        checks[n] = c
    return checks


# ------------------------------------------------------------------ report


def _fmt_t(rec: Optional[dict]) -> str:
    if rec is None:
        return "-"
    return f"{rec['median_s']:.3f}" if rec["status"] == "ok" else rec["status"]


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def report(queries: list[int], records: dict[str, dict], checks: dict[int, dict], engines: list[str]) -> dict:
    def med(e, n):
        r = records.get(e, {}).get(n)
        return r["median_s"] if r and r["status"] == "ok" else None

    others = [e for e in ("datafusion", "duckdb") if e in engines]
    head = ["query"] + [f"{LABEL[e]} s" for e in engines]
    if "floe" in engines:
        head += [f"Floe/{LABEL[e]}" for e in others]
    head.append("answers")
    table = []
    for n in queries:
        row = [f"q{n:02d}"] + [_fmt_t(records.get(e, {}).get(n)) for e in engines]
        if "floe" in engines:
            row += [_ratio(med("floe", n), med(e, n)) for e in others]
        c = checks.get(n, {})
        bad = [f"{LABEL[e]} differs" for e in engines if str(c.get(e, "")).startswith("MISMATCH")]
        row.append(", ".join(bad) if bad else ("agree" if c.get("reference") else "-"))
        table.append(row)
    complete = [n for n in queries if all(med(e, n) is not None for e in engines)]
    totals = {e: sum(med(e, n) for n in complete) for e in engines}
    trow = [f"total ({len(complete)}/{len(queries)})"] + [f"{totals[e]:.3f}" for e in engines]
    if "floe" in engines:
        trow += [_ratio(totals["floe"], totals[e]) for e in others]
    trow.append("")
    widths = [max(len(str(r[i])) for r in [head, trow] + table) for i in range(len(head))]
    line = lambda r: "  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(r, widths)))  # noqa: E731
    out = [line(head), line(["-" * w for w in widths])] + [line(r) for r in table]
    out += [line(["-" * w for w in widths]), line(trow)]
    if len(complete) < len(queries):
        out.append(f"(totals over the {len(complete)} queries every engine answered)")
    print("\n".join(out), flush=True)
    summary = {"queries_in_totals": [f"q{n:02d}" for n in complete],
               "total_median_s": totals}
    if "floe" in engines:
        summary["total_ratio"] = {f"floe/{e}": (totals["floe"] / totals[e] if totals[e] else None) for e in others}
    return summary


# ------------------------------------------------------------------ main


def git_describe() -> dict:
    def g(*a):
        try:
            return subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:  # noqa: BLE001
            return None

    return {"commit": g("rev-parse", "HEAD"), "dirty": bool(g("status", "--porcelain", "--untracked-files=no"))}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in ("datafusion", "duckdb", "pyarrow", "pyiceberg", "adbc-driver-flightsql", "tpchgen-cli"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


def parse_queries(spec: Optional[str]) -> list[int]:
    if not spec:
        return sorted(ORDER_KEYS)
    out = []
    for part in spec.split(","):
        part = part.strip().lower().lstrip("q")
        if "-" in part:
            a, b = part.split("-")
            out += range(int(a), int(b.lstrip("q")) + 1)
        elif part:
            out.append(int(part))
    bad = [n for n in out if n not in ORDER_KEYS]
    if bad:
        raise SystemExit(f"no such TPC-H query: {bad}")
    return sorted(set(out))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sf", default="1", help="TPC-H scale factor (default 1)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per query after one warm-up (default 3)")
    ap.add_argument("--timeout", type=float, default=300.0, help="per-execution timeout in seconds (default 300)")
    ap.add_argument("--queries", help="subset, e.g. 1,3,5-7 (default all 22)")
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma list of floe,datafusion,duckdb")
    ap.add_argument("--floe-bin", help="Floe binary (default $FLOE_BIN, else ~/.cache/floe-target/release/floe "
                                       "if built, else debug/floe)")
    ap.add_argument("--executors", type=int, default=2, help="Floe executors (default 2)")
    ap.add_argument("--deployment", choices=("standalone", "cluster"), default="standalone",
                    help="Floe as `floe standalone` (default) or a coordinator plus --executors separate executor processes")
    ap.add_argument("--executor-memory", help="with --deployment cluster: each executor's --memory-limit, e.g. 2GiB "
                                              "(the run reports each executor's peak RSS)")
    ap.add_argument("--cache-dir", default=os.environ.get("FLOE_BENCH_CACHE") or str(Path.home() / ".cache" / "floe-bench" / "tpch"),
                    help="where generated Parquet and the Iceberg warehouse are kept (default ~/.cache/floe-bench/tpch)")
    ap.add_argument("--reload", action="store_true", help="rebuild the Iceberg warehouse even if it looks current")
    ap.add_argument("--peer-files", choices=("iceberg", "source"), default="iceberg",
                    help="what DataFusion and DuckDB read: the Iceberg tables' data files, the same Parquet Floe "
                         "reads (default), or the generator's Parquet (other compression and row groups)")
    ap.add_argument("--order", choices=("interleaved", "sequential"), default="interleaved",
                    help="interleaved (default): each execution of a query on every engine in turn, so that a slow "
                         "stretch of a noisy machine falls on all alike; sequential: all of one engine's queries, "
                         "then the next engine's (the order before session 27)")
    ap.add_argument("--out", help="JSON output path (default benches/results/tpch-sf<SF>-<UTC time>.json)")
    args = ap.parse_args(argv)

    wall0 = time.monotonic()
    load_start = os.getloadavg()
    started = dt.datetime.now(dt.timezone.utc)
    sf = sf_text(args.sf)
    queries = parse_queries(args.queries)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not engines or any(e not in ENGINES for e in engines):
        raise SystemExit(f"--engines: choose from {ENGINES}")
    if args.runs < 1:
        raise SystemExit("--runs must be >= 1")
    if args.executor_memory and args.deployment != "cluster":
        raise SystemExit("--executor-memory needs --deployment cluster (standalone executors share one process)")

    # SIGTERM / SIGHUP -> SystemExit, so finally blocks and atexit stop Floe
    def _die(signum, _frame):
        raise SystemExit(128 + signum)

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _die)

    binary = floe_binary(args.floe_bin) if "floe" in engines else None
    if binary:
        log(f"floe binary: {binary} ({binary_profile(binary)} build)")
    sf_dir = Path(args.cache_dir).expanduser().resolve() / f"sf{sf}"
    phases = {}

    t0 = time.monotonic()
    files = generate(sf_dir, sf)
    phases["generate_s"] = time.monotonic() - t0
    rows = None
    wh = None
    peer_files = files
    if "floe" in engines or args.peer_files == "iceberg":
        t0 = time.monotonic()
        wh, rows = load_iceberg(sf_dir, files, args.reload)
        phases["iceberg_load_s"] = time.monotonic() - t0
        if args.peer_files == "iceberg":
            peer_files = iceberg_data_files(sf_dir, wh)

    records: dict[str, dict] = {}
    answers: dict[str, dict] = {}
    floe_server = None
    runners: dict[str, EngineRuns] = {}

    def runner(e: str) -> EngineRuns:
        nonlocal floe_server
        if e == "floe":
            log_dir = sf_dir / "floe-logs" / started.strftime("%Y%m%dT%H%M%SZ")
            floe_server = FloeServer(binary, wh, log_dir, args.executors, args.deployment,
                                     args.executor_memory)
            atexit.register(floe_server.stop)
            floe_server.start()

            def factory():
                if floe_server.proc is None or not floe_server.proc.alive():
                    floe_server.stop()
                    floe_server.start()
                c = Client("floe", {"uri": floe_server.uri, "timeout": args.timeout})
                c.start()
                return c

            def restart():
                log("floe: restarting the server after a timeout / lost client")
                floe_server.stop()
                floe_server.start()

            return EngineRuns(e, factory, args.timeout, float(args.sf), restart)
        setup = {"files": {t: str(p) for t, p in peer_files.items()}}

        def factory(e=e, setup=setup):
            c = Client(e, setup)
            c.start()
            return c

        return EngineRuns(e, factory, args.timeout, float(args.sf))

    try:
        if args.order == "interleaved":
            t0 = time.monotonic()
            log(f"--- {', '.join(LABEL[e] for e in engines)} in turn: {len(queries)} queries, "
                f"1 warm-up + {args.runs} runs each, timeout {args.timeout:g}s")
            for e in engines:
                runners[e] = runner(e)
            time_engines(list(runners.values()), queries, args.runs)
            phases["engines_s"] = time.monotonic() - t0
        else:
            for e in engines:
                t0 = time.monotonic()
                log(f"--- {LABEL[e]}: {len(queries)} queries, 1 warm-up + {args.runs} runs each, timeout {args.timeout:g}s")
                runners[e] = runner(e)
                time_engines([runners[e]], queries, args.runs)
                runners[e].stop()
                if e == "floe":
                    floe_server.stop()  # don't let it hold memory while the others run
                phases[f"{e}_s"] = time.monotonic() - t0
        for e, r in runners.items():
            records[e], answers[e] = r.records, r.answers
    finally:
        for r in runners.values():
            r.stop()
        if floe_server is not None:
            floe_server.stop()

    checks = check_answers(queries, answers)
    print(flush=True)
    log(f"TPC-H SF {sf}: median of {args.runs} run(s) after 1 warm-up, seconds"
        + (f"; Floe {binary_profile(binary)} build, {args.executors} executors" if binary else ""))
    summary = report(queries, records, checks, engines)
    problems = [(n, e, v) for n, c in checks.items() for e, v in c.items()
                if isinstance(v, str) and v.startswith("MISMATCH")]
    for n, e, v in problems:
        log(f"\nq{n:02d} {LABEL[e]} vs {LABEL[checks[n]['reference']]}: {v}")
    failures = [(n, e, r) for e in engines for n, r in records[e].items() if r["status"] != "ok"]
    for n, e, r in failures:
        log(f"\nq{n:02d} {LABEL[e]} {r['status']}: {r['error']}")
    peaks = floe_server.executor_peaks if floe_server else []
    if peaks:
        log(f"\nexecutor peak RSS: " + ", ".join(f"{p / 2**20:.0f} MiB" for p in peaks)
            + (f" (--memory-limit {args.executor_memory} each)" if args.executor_memory else ""))
    wall = time.monotonic() - wall0
    log(f"\nwall time {wall:.1f}s (" + ", ".join(f"{k[:-2]} {v:.1f}s" for k, v in phases.items()) + ")")

    result = {
        "benchmark": "tpch",
        "scale_factor": sf,
        "runs": args.runs,
        "order": args.order,
        "timeout_s": args.timeout,
        "started_utc": started.isoformat(),
        "wall_s": wall,
        "phases_s": phases,
        "floe": {"binary": str(binary) if binary else None, "profile": binary_profile(binary) if binary else None,
                 "executors": args.executors, "server_starts": floe_server.starts if floe_server else 0,
                 "deployment": args.deployment, "executor_memory": args.executor_memory,
                 "executor_peak_rss_bytes": peaks},
        "git": git_describe(),
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                 "load_avg_start": load_start, "load_avg_end": os.getloadavg()},
        "versions": versions(),
        "data": {"parquet_dir": str(files["lineitem"].parent), "warehouse": str(wh) if wh else None,
                 "peer_files": args.peer_files,
                 "rows": rows, "iceberg_appends": APPENDS},
        "engines": engines,
        "queries": {
            f"q{n:02d}": {"check": checks.get(n), **{e: records[e][n] for e in engines}} for n in queries
        },
        "summary": summary,
    }
    out = Path(args.out) if args.out else RESULTS_DIR / f"tpch-sf{sf}-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    log(f"results: {out}")
    return 1 if problems or failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
