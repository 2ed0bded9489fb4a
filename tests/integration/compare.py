"""Compare Floe's Arrow results with independently computed ones.

Normalization (value level, so that e.g. decimal(22,2) vs decimal(38,2),
string vs large_string, int32 vs int64, timestamp tz "UTC" vs "+00:00" compare
equal):
  * Decimal   -> Decimal (Python compares 1.50 == 1.5, hash-consistent)
  * datetime  -> tz-aware values converted to UTC; naive values stay naive
  * float     -> rounded to FLOAT_DIGITS significant digits
  * everything else -> its Python value (None stays None)
Any timestamp column is cast to microseconds first (the tables only hold
microsecond data, so a nanosecond result converts losslessly).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any, Iterable, Optional, Sequence

import pyarrow as pa

FLOAT_DIGITS = 9


def _norm_value(v: Any) -> Any:
    if isinstance(v, float):
        if v != v:  # NaN
            return "NaN"
        return float(f"{v:.{FLOAT_DIGITS}g}")
    if isinstance(v, dt.datetime) and v.tzinfo is not None:
        return v.astimezone(dt.timezone.utc)
    if isinstance(v, (list, tuple)):
        return tuple(_norm_value(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _norm_value(x)) for k, x in v.items()))
    return v


def _norm_column(col: pa.ChunkedArray) -> list:
    t = col.type
    if pa.types.is_timestamp(t) and t.unit != "us":
        col = col.cast(pa.timestamp("us", tz=t.tz))
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
    return [_norm_value(v) for v in col.to_pylist()]


def rows(table: pa.Table) -> list[tuple]:
    """Normalized rows of an Arrow table."""
    cols = [_norm_column(table.column(i)) for i in range(table.num_columns)]
    return list(zip(*cols)) if cols else []


def _diff(actual: list, expected: list, limit: int = 10) -> str:
    ca, ce = Counter(actual), Counter(expected)
    missing = list((ce - ca).elements())[:limit]
    extra = list((ca - ce).elements())[:limit]
    return f"  missing (expected, not returned): {missing}\n  unexpected (returned, not expected): {extra}"


def assert_same(
    actual: pa.Table,
    expected: pa.Table,
    *,
    ordered: bool = False,
    check_names: bool = True,
    context: str = "",
) -> None:
    """Assert Floe's `actual` equals `expected`, order-insensitively unless
    `ordered`. Column names are compared case-insensitively."""
    where = f" [{context}]" if context else ""
    if check_names:
        an = [n.lower() for n in actual.column_names]
        en = [n.lower() for n in expected.column_names]
        assert an == en, f"column names differ{where}: floe={actual.column_names} expected={expected.column_names}"
    else:
        assert actual.num_columns == expected.num_columns, (
            f"column count differs{where}: floe={actual.column_names} expected={expected.column_names}"
        )
    ar, er = rows(actual), rows(expected)
    assert len(ar) == len(er), f"row count differs{where}: floe={len(ar)} expected={len(er)}\n" + _diff(ar, er)
    if ordered:
        for i, (a, e) in enumerate(zip(ar, er)):
            assert a == e, f"row {i} differs{where}:\n  floe:     {a}\n  expected: {e}"
    else:
        if Counter(ar) != Counter(er):
            raise AssertionError(f"result rows differ{where} ({len(ar)} rows)\n" + _diff(ar, er))


def assert_sorted_by(table: pa.Table, keys: Sequence[tuple[str, str]], context: str = "") -> None:
    """Check `table` is sorted by `keys` [(column, 'ascending'|'descending')] (nulls last)."""
    data = rows(table.select([k for k, _ in keys]))
    for i in range(1, len(data)):
        for j, (_, order) in enumerate(keys):
            a, b = data[i - 1][j], data[i][j]
            if a == b:
                continue
            if a is None or b is None:
                ok = b is None  # nulls last
            else:
                ok = a < b if order == "ascending" else a > b
            assert ok, f"not sorted by {keys} at row {i} [{context}]: {data[i - 1]} then {data[i]}"
            break


def fetch(conn, sql: str, parameters: Optional[Iterable] = None) -> pa.Table:
    """Run `sql` on an ADBC DB-API connection and return an Arrow table."""
    cur = conn.cursor()
    try:
        cur.execute(sql, parameters)
        return cur.fetch_arrow_table()
    finally:
        cur.close()


def scalar(table: pa.Table) -> Any:
    assert table.num_rows == 1 and table.num_columns == 1, f"expected a scalar, got {table}"
    return rows(table)[0][0]


def plan_text(table: pa.Table) -> str:
    """EXPLAIN output (rows of plan_type, plan) as one string."""
    cols = [c.lower() for c in table.column_names]
    plan_col = cols.index("plan") if "plan" in cols else table.num_columns - 1
    type_col = cols.index("plan_type") if "plan_type" in cols else None
    out = []
    for r in table.to_pylist():
        vals = list(r.values())
        head = f"[{vals[type_col]}]\n" if type_col is not None else ""
        out.append(head + str(vals[plan_col]))
    return "\n".join(out)
