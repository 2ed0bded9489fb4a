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

assert_close (TPC-H): numbers compared by value across types (Decimal of any
scale vs float vs int) with a relative tolerance, ORDER BY ties and a LIMIT cut
through a tie handled.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from decimal import Decimal
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


def fetch_from(deployment, conn, sql: str) -> pa.Table:
    """fetch(), adding the deployment's process log tails to the failure when Floe answers
    with an error."""
    try:
        return fetch(conn, sql)
    except Exception as e:  # noqa: BLE001
        raise AssertionError(
            f"Floe failed on {sql!r}: {type(e).__name__}: {e}\n--- Floe processes:\n{deployment.describe()}"
        ) from e


def execute_update(conn, sql: str) -> int:
    """ADBC's update path: Flight SQL CommandStatementUpdate (DoPut); the rows written."""
    cur = conn.cursor()
    try:
        cur.adbc_statement.set_sql_query(sql)
        return cur.adbc_statement.execute_update()
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


# ------------------------------------------------------- approximate (TPC-H)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, Decimal)) and not isinstance(v, bool)


def values_close(a: Any, b: Any, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """Cell equality across engines: numbers compare by value whatever their
    type (int / float / Decimal of any scale), non-integers with a relative
    tolerance; everything else exactly.  A Decimal is also allowed to be off
    by one unit in its own last place (an engine that returns AVG(decimal(15,2))
    as a decimal of scale 6 cannot be closer than 1e-6 to a double)."""
    if _is_number(a) and _is_number(b):
        if isinstance(a, int) and isinstance(b, int):
            return a == b
        if a == b:
            return True
        for d in (a, b):
            if isinstance(d, Decimal) and d.is_finite():
                abs_tol = max(abs_tol, float(Decimal(1).scaleb(d.as_tuple().exponent)))
        return math.isclose(float(a), float(b), rel_tol=rel_tol, abs_tol=abs_tol)
    return a == b


def rows_close(a: tuple, b: tuple, rel_tol: float = 1e-6) -> bool:
    return len(a) == len(b) and all(values_close(x, y, rel_tol) for x, y in zip(a, b))


def _coarse(v: Any) -> tuple:
    # A sort key that puts approximately equal rows next to each other
    # (numbers by float value with 5 significant digits; None first).
    if v is None:
        return (0, "")
    if _is_number(v):
        return (1, float(f"{float(v):.5g}"))
    return (2, str(type(v)), v)


def _match_multiset(actual: list, expected: list, rel_tol: float) -> Optional[tuple]:
    """None if `actual` and `expected` are equal as multisets under
    rows_close; else (unmatched expected rows, unmatched actual rows)."""
    if len(actual) == len(expected):
        key = lambda r: tuple(_coarse(v) for v in r)  # noqa: E731
        sa, se = sorted(actual, key=key), sorted(expected, key=key)
        if all(rows_close(a, e, rel_tol) for a, e in zip(sa, se)):
            return None
    # slow path: greedy matching
    left = list(actual)
    missing = []
    for e in expected:
        for i, a in enumerate(left):
            if rows_close(a, e, rel_tol):
                del left[i]
                break
        else:
            missing.append(e)
    if not missing and not left:
        return None
    return missing, left


def assert_close(
    actual: pa.Table,
    expected: pa.Table,
    *,
    order_keys: Sequence[str] = (),
    limit: Optional[int] = None,
    rel_tol: float = 1e-6,
    context: str = "",
) -> None:
    """Assert Floe's `actual` equals `expected` (e.g. DuckDB's answer) up to
    numeric type and a relative tolerance `rel_tol` for non-integers.

    Column count must match (names may legitimately differ between engines for
    unaliased expressions).  With `order_keys` (columns of `expected` that the
    query orders by) rows are compared in order, except that runs of rows with
    equal order keys are compared as multisets (their order is unspecified).
    When the query has a LIMIT and the expected result is exactly `limit` rows
    long, the last run may be cut at an arbitrary row, so in it only the
    order-key columns are compared.  Without `order_keys`, everything is
    compared as a multiset."""
    where = f" [{context}]" if context else ""
    assert actual.num_columns == expected.num_columns, (
        f"column count differs{where}: floe={actual.column_names} expected={expected.column_names}"
    )
    ar, er = rows(actual), rows(expected)
    assert len(ar) == len(er), f"row count differs{where}: floe={len(ar)} expected={len(er)}\n" + _diff(ar, er)
    if not order_keys:
        bad = _match_multiset(ar, er, rel_tol)
        if bad:
            raise AssertionError(
                f"result rows differ{where} ({len(ar)} rows)\n"
                f"  missing (expected, not returned): {bad[0][:10]}\n"
                f"  unexpected (returned, not expected): {bad[1][:10]}"
            )
        return
    lower = [n.lower() for n in expected.column_names]
    key_idx = [lower.index(k.lower()) for k in order_keys]
    keyf = lambda r: tuple(r[i] for i in key_idx)  # noqa: E731
    start = 0
    while start < len(er):
        end = start + 1
        while end < len(er) and keyf(er[end]) == keyf(er[start]):
            end += 1
        exp_run, act_run = er[start:end], ar[start:end]
        if limit is not None and len(er) == limit and end == len(er) and end - start > 1:
            exp_run = [keyf(r) for r in exp_run]
            act_run = [keyf(r) for r in act_run]
        if end - start == 1:
            ok = rows_close(act_run[0], exp_run[0], rel_tol)
            bad = None if ok else ([exp_run[0]], [act_run[0]])
        else:
            bad = _match_multiset(act_run, exp_run, rel_tol)
        if bad:
            raise AssertionError(
                f"rows {start}..{end - 1} differ{where} (ordered by {list(order_keys)}; "
                f"{len(er)} rows in all)\n  floe:     {bad[1][:5]}\n  expected: {bad[0][:5]}"
            )
        start = end
