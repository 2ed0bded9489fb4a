"""The TPC-H queries (benches/tpch/queries) and data generator, shared by the tests and the
benchmark harness (benches/tpch/run.py)."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
QUERY_DIR = REPO / "benches" / "tpch" / "queries"

# Output columns each query orders by (ties among them compare as multisets).
ORDER_KEYS = {
    int(name[1:]): cols
    for name, cols in json.loads((QUERY_DIR / "order_keys.json").read_text()).items()
}
QUERY_NUMBERS = sorted(ORDER_KEYS)


def query_text(n: int, sf: float = 1.0) -> str:
    """Query `n`'s text for scale factor `sf`: Q11's FRACTION is 0.0001 / SF (TPC-H spec 2.4.11.3;
    the file holds SF 1's, with which Q11 finds no part at SF 10)."""
    text = (QUERY_DIR / f"q{n:02d}.sql").read_text()
    if n == 11 and sf != 1.0:
        fraction = f"{0.0001 / sf:.10f}".rstrip("0")
        if "* 0.0001\n" not in text:
            raise ValueError(f"Q11's FRACTION (* 0.0001) is not where {QUERY_DIR}/q11.sql had it")
        text = text.replace("* 0.0001\n", f"* {fraction}\n")
    return text


def query_limit(sql: str) -> Optional[int]:
    m = re.search(r"\blimit\s+(\d+)\s*;?\s*$", sql, re.IGNORECASE)
    return int(m.group(1)) if m else None


def tpchgen_bin() -> str:
    """The `tpchgen-cli` of this Python environment (PyPI package tpchgen-cli)."""
    local = Path(sys.executable).parent / "tpchgen-cli"
    if local.is_file():
        return str(local)
    found = shutil.which("tpchgen-cli")
    if not found:
        raise RuntimeError(
            "tpchgen-cli not found: pip install -r tests/requirements.txt (or benches/requirements.txt)"
        )
    return found
