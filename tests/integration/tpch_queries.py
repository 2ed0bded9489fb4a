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


def query_text(n: int) -> str:
    return (QUERY_DIR / f"q{n:02d}.sql").read_text()


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
