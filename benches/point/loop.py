"""Fixed cost per statement, two builds alternated: `SELECT 1` (or the ADBC floor,
`adbc_get_table_types`: two trivial RPCs) executed and fetched through ADBC Flight SQL in a loop
for --seconds against `floe standalone --executors 2` on an empty warehouse; prints each
round's p50 latency and the server's CPU time per statement (from /proc/<pid>/stat), which on a
noisy 2-core machine tells two builds apart where latency alone cannot.

    .venv/bin/python benches/point/loop.py --bins /tmp/floe-a /tmp/floe-b --rounds 4 --seconds 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests" / "integration"))

WARMUP = 200


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(binary: str, seconds: float, what: str) -> tuple[int, float, float]:
    """(statements, p50 seconds, server CPU seconds per statement)."""
    import adbc_driver_flightsql.dbapi as flightsql
    from floe_cluster import READY_RE, FloeProcess

    with tempfile.TemporaryDirectory() as tmp:
        proc = FloeProcess("floe-loop", [binary, "standalone", "--warehouse", tmp, "--port", "0",
                                         "--executors", "2"], Path(tmp) / "logs",
                           env={"FLOE_LOG": "info"})
        try:
            m = proc.wait_for(READY_RE, what="FLOE_READY", timeout=120)[0]
            with flightsql.connect(f"grpc://{m['host']}:{m['port']}") as conn, conn.cursor() as cur:
                def run() -> None:
                    if what == "floor":
                        conn.adbc_get_table_types()
                        return
                    cur.execute("SELECT 1")
                    if cur.fetch_arrow_table().column(0)[0].as_py() != 1:
                        raise SystemExit("SELECT 1 answered otherwise")

                for _ in range(WARMUP):
                    run()
                times = []
                c0 = cpu_seconds(proc.pid)
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    t0 = time.perf_counter()
                    run()
                    times.append(time.perf_counter() - t0)
                c1 = cpu_seconds(proc.pid)
        finally:
            proc.stop()
    return len(times), statistics.median(times), (c1 - c0) / len(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bins", nargs="+", required=True, help="floe binaries, alternated round by round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each loop")
    ap.add_argument("--what", choices=("select1", "floor"), default="select1")
    args = ap.parse_args(argv)
    for r in range(args.rounds):
        for binary in args.bins:
            n, p50, cpu = one_round(binary, args.seconds, args.what)
            print(f"round {r + 1}  {binary}: {args.what} n={n} p50 {p50 * 1e3:.3f} ms  "
                  f"server CPU {cpu * 1e3:.3f} ms per statement", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
