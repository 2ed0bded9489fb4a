"""Query results from Floe (ADBC Flight SQL) against independent answers:
DuckDB over the Arrow data that pyiceberg reads from the same catalog, or
pyiceberg's own filtered scans.  Runs against every deployment in `target`.

A Query's `sql` goes to Floe; `oracle` (DuckDB dialect, default: the same
text) runs over views demo.events / demo.accounts of pyiceberg's read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pyarrow as pa
import pytest
from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, IsNull, LessThan

import datasets
from compare import assert_same, assert_sorted_by, fetch, scalar


@dataclass(frozen=True)
class Query:
    id: str
    sql: str
    oracle: Optional[str] = None
    ordered: bool = False

    def __str__(self) -> str:
        return self.id


QUERIES = [
    # --- basics / projections
    Query("count_all", "SELECT count(*) AS n FROM demo.events"),
    Query("select_star_partition_filter", "SELECT * FROM demo.events WHERE city = 'Berlin'"),
    Query("projection_reordered", "SELECT amount, city, event_id, ts FROM demo.events WHERE event_id % 97 = 0"),
    Query("projection_expressions",
          "SELECT event_id, amount * 2 AS double_amount, upper(city) AS ucity, user_id + 1 AS next_user "
          "FROM demo.events WHERE event_id % 101 = 0"),
    Query("select_star_accounts", "SELECT * FROM demo.accounts"),
    # --- filters on partition columns
    Query("filter_city_in", "SELECT event_id, city FROM demo.events WHERE city IN ('Oslo', 'Lisbon')"),
    Query("filter_city_not_equal", "SELECT count(*) AS n FROM demo.events WHERE city <> 'Amsterdam'"),
    Query("filter_region_truncate_partition", "SELECT * FROM demo.accounts WHERE region = 'eu-west'"),
    Query("filter_region_like", "SELECT account_id, region FROM demo.accounts WHERE region LIKE 'us%'"),
    # --- filters on non-partition columns
    Query("filter_user_id", "SELECT event_id, user_id, amount FROM demo.events WHERE user_id = 42"),
    Query("filter_event_id_range", "SELECT * FROM demo.events WHERE event_id BETWEEN 12000 AND 12100"),
    Query("filter_no_match", "SELECT count(*) AS n FROM demo.events WHERE event_id > 1000000"),
    # --- timestamps (ts is timestamptz, local_ts is timestamp without zone)
    Query("filter_ts_window",
          "SELECT event_id, ts FROM demo.events "
          "WHERE ts >= TIMESTAMP '2024-03-03 06:00:00' AND ts < TIMESTAMP '2024-03-03 07:30:00'"),
    Query("filter_ts_one_day_count",
          "SELECT count(*) AS n FROM demo.events "
          "WHERE ts >= TIMESTAMP '2024-03-03 00:00:00' AND ts < TIMESTAMP '2024-03-04 00:00:00'"),
    Query("filter_ts_outside_data",
          "SELECT count(*) AS n FROM demo.events WHERE ts >= TIMESTAMP '2030-01-01 00:00:00'"),
    Query("filter_local_ts",
          "SELECT event_id, local_ts, city FROM demo.events "
          "WHERE local_ts BETWEEN TIMESTAMP '2024-03-05 23:00:00' AND TIMESTAMP '2024-03-06 01:00:00'"),
    Query("filter_updated_at", "SELECT account_id, updated_at FROM demo.accounts "
          "WHERE updated_at < TIMESTAMP '2024-03-02 12:00:00'"),
    # --- dates
    Query("filter_date_eq", "SELECT event_date, city, count(*) AS n FROM demo.events "
          "WHERE event_date = DATE '2024-03-04' GROUP BY event_date, city"),
    Query("filter_date_range", "SELECT count(*) AS n FROM demo.events WHERE event_date > DATE '2024-03-08'"),
    Query("filter_opened", "SELECT account_id, opened FROM demo.accounts WHERE opened >= DATE '2023-01-01'"),
    # --- decimals
    Query("filter_decimal_gt", "SELECT event_id, amount FROM demo.events WHERE amount > 9990.00"),
    Query("filter_decimal_exact_cast",
          "SELECT event_id, amount FROM demo.events WHERE amount BETWEEN CAST('100.00' AS DECIMAL(12,2)) "
          "AND CAST('150.50' AS DECIMAL(12,2))"),
    Query("filter_decimal_negative", "SELECT count(*) AS n, sum(amount) AS s FROM demo.events WHERE amount < 0"),
    Query("filter_balance", "SELECT account_id, balance FROM demo.accounts WHERE balance < 0"),
    # --- booleans
    Query("filter_bool_true", "SELECT count(*) AS n FROM demo.events WHERE is_marketing"),
    Query("filter_bool_false_and_city",
          "SELECT event_id FROM demo.events WHERE NOT is_marketing AND city = 'Oslo' AND user_id < 20"),
    Query("filter_active", "SELECT count(*) AS n FROM demo.accounts WHERE active = false"),
    # --- NULLs (device has NULLs; channel is NULL for rows written before it existed)
    Query("filter_device_is_null", "SELECT event_id, city FROM demo.events WHERE device IS NULL"),
    Query("filter_device_not_null_count", "SELECT count(*) AS n FROM demo.events WHERE device IS NOT NULL"),
    Query("count_column_skips_nulls",
          "SELECT city, count(device) AS with_device, count(*) AS n, count(amount) AS with_amount "
          "FROM demo.events GROUP BY city"),
    Query("filter_note_null", "SELECT account_id FROM demo.accounts WHERE note IS NULL"),
    Query("schema_evolution_channel", "SELECT channel, count(*) AS n FROM demo.events GROUP BY channel"),
    Query("filter_channel_value", "SELECT event_id, channel FROM demo.events WHERE channel = 'email'"),
    # --- aggregates
    Query("group_by_city_aggregates",
          "SELECT city, count(*) AS n, sum(amount) AS total, min(amount) AS min_amount, max(amount) AS max_amount, "
          "min(ts) AS first_ts, max(ts) AS last_ts, min(local_ts) AS first_local, max(event_date) AS last_date "
          "FROM demo.events GROUP BY city"),
    Query("group_by_date_device_with_null_keys",
          "SELECT event_date, device, count(*) AS n, sum(amount) AS total FROM demo.events "
          "GROUP BY event_date, device"),
    Query("group_by_having",
          "SELECT user_id, count(*) AS n FROM demo.events GROUP BY user_id HAVING count(*) > 45"),
    Query("global_aggregates",
          "SELECT count(*) AS n, sum(amount) AS total, min(ts) AS first_ts, max(ts) AS last_ts, "
          "min(event_id) AS min_id, max(event_id) AS max_id FROM demo.events"),
    Query("count_distinct_user", "SELECT count(DISTINCT user_id) AS users FROM demo.events"),
    Query("count_distinct_per_city",
          "SELECT city, count(DISTINCT user_id) AS users, count(DISTINCT device) AS devices "
          "FROM demo.events GROUP BY city"),
    Query("group_by_extract_hour",
          "SELECT extract(hour FROM ts) AS h, count(*) AS n FROM demo.events GROUP BY extract(hour FROM ts)"),
    Query("group_by_date_trunc_day",
          "SELECT date_trunc('day', ts) AS d, count(*) AS n FROM demo.events GROUP BY date_trunc('day', ts)"),
    Query("group_by_bool", "SELECT is_marketing, count(*) AS n, sum(amount) AS total FROM demo.events "
          "GROUP BY is_marketing"),
    Query("accounts_by_region",
          "SELECT region, count(*) AS n, sum(balance) AS total, min(opened) AS first_opened, "
          "max(updated_at) AS last_update FROM demo.accounts GROUP BY region"),
    # --- ORDER BY / LIMIT (compared in order; ties broken by event_id)
    Query("order_by_amount_desc_limit",
          "SELECT event_id, city, amount FROM demo.events WHERE amount IS NOT NULL "
          "ORDER BY amount DESC, event_id ASC LIMIT 25", ordered=True),
    Query("order_by_ts_desc_limit", "SELECT event_id, ts FROM demo.events ORDER BY ts DESC LIMIT 10", ordered=True),
    Query("order_by_nulls_last_limit",
          "SELECT event_id, device FROM demo.events ORDER BY device ASC NULLS LAST, event_id DESC LIMIT 30",
          ordered=True),
    Query("order_by_nulls_first_limit",
          "SELECT event_id, device FROM demo.events ORDER BY device DESC NULLS FIRST, event_id ASC LIMIT 30",
          ordered=True),
    Query("order_by_aggregate",
          "SELECT city, event_date, count(*) AS n FROM demo.events GROUP BY city, event_date "
          "ORDER BY n DESC, city, event_date LIMIT 12", ordered=True),
    Query("limit_offset", "SELECT event_id FROM demo.events ORDER BY event_id LIMIT 5 OFFSET 1000", ordered=True),
    # --- joins / subqueries / windows
    Query("join_events_accounts_by_region",
          "SELECT a.region, count(*) AS n, sum(e.amount) AS total FROM demo.events e "
          "JOIN demo.accounts a ON e.user_id = a.account_id GROUP BY a.region"),
    Query("left_join_match_count",
          "SELECT count(*) AS n, count(a.account_id) AS matched FROM demo.events e "
          "LEFT JOIN demo.accounts a ON e.user_id = a.account_id"),
    Query("join_filter_both_sides",
          "SELECT e.event_id, e.city, a.region, a.balance FROM demo.events e "
          "JOIN demo.accounts a ON e.user_id = a.account_id WHERE a.active AND e.city = 'Lisbon' "
          "AND e.event_date = DATE '2024-03-07'"),
    Query("join_inline_values",
          "SELECT c.country, count(*) AS n FROM demo.events e "
          "JOIN (VALUES ('Amsterdam', 'NL'), ('Berlin', 'DE'), ('Oslo', 'NO')) AS c(city, country) "
          "ON e.city = c.city GROUP BY c.country"),
    Query("in_subquery",
          "SELECT count(*) AS n FROM demo.events WHERE user_id IN "
          "(SELECT account_id FROM demo.accounts WHERE region LIKE 'eu%')"),
    Query("cte_union_all",
          "WITH a AS (SELECT city, amount FROM demo.events WHERE is_marketing), "
          "b AS (SELECT city, amount FROM demo.events WHERE NOT is_marketing) "
          "SELECT 'm' AS kind, city, sum(amount) AS total FROM a GROUP BY city "
          "UNION ALL SELECT 'o' AS kind, city, sum(amount) AS total FROM b GROUP BY city"),
    Query("window_row_number",
          "SELECT city, event_id, amount FROM (SELECT city, event_id, amount, row_number() OVER "
          "(PARTITION BY city ORDER BY amount DESC NULLS LAST, event_id) AS rn FROM demo.events) t WHERE rn <= 3"),
]


@pytest.mark.parametrize("q", QUERIES, ids=str)
def test_query(target, conn, q):
    expected = target.data.oracle(q.oracle or q.sql)
    actual = fetch(conn, q.sql)
    assert_same(actual, expected, ordered=q.ordered, context=q.id)


def test_unprepared_statement_path(target, conn):
    """ADBC's DB-API always prepares; this uses the raw statement
    (Flight SQL CommandStatementQuery without CreatePreparedStatement)."""
    sql = "SELECT city, count(*) AS n, sum(amount) AS total FROM demo.events GROUP BY city"
    cur = conn.cursor()
    try:
        stmt = cur.adbc_statement
        stmt.set_sql_query(sql)
        handle, _ = stmt.execute_query()
        actual = pa.RecordBatchReader.from_stream(handle).read_all()
    finally:
        cur.close()
    assert_same(actual, target.data.oracle(sql))


def test_filters_against_pyiceberg_scans(target, conn):
    """Row sets of filtered scans, checked against pyiceberg's own scan with the
    equivalent Iceberg expression (no SQL engine on the expected side)."""
    tbl = target.data.table("events")
    checks = [
        ("city = 'Berlin' AND device IS NULL", And(EqualTo("city", "Berlin"), IsNull("device"))),
        (
            "ts >= TIMESTAMP '2024-03-06 00:00:00' AND ts < TIMESTAMP '2024-03-06 12:00:00' AND is_marketing",
            And(
                And(GreaterThanOrEqual("ts", "2024-03-06T00:00:00+00:00"), LessThan("ts", "2024-03-06T12:00:00+00:00")),
                EqualTo("is_marketing", True),
            ),
        ),
        ("event_date = DATE '2024-03-02'", EqualTo("event_date", "2024-03-02")),
    ]
    for sql_pred, expr in checks:
        expected = tbl.scan(row_filter=expr, selected_fields=("event_id",)).to_arrow()
        actual = fetch(conn, f"SELECT event_id FROM demo.events WHERE {sql_pred}")
        assert_same(actual, expected, context=sql_pred)


def test_point_lookup_on_bucket_partition(target, conn):
    """account_id is bucket(8)-partitioned; look up ids taken from the data."""
    accounts = target.data.arrow("accounts")
    ids = sorted(accounts.column("account_id").to_pylist())
    for aid in (ids[0], ids[len(ids) // 2], ids[-1]):
        sql = f"SELECT * FROM demo.accounts WHERE account_id = {aid}"
        assert_same(fetch(conn, sql), target.data.oracle(sql), context=sql)
    missing = next(i for i in range(1, datasets.USER_ID_MAX + 2) if i not in set(ids))
    assert fetch(conn, f"SELECT * FROM demo.accounts WHERE account_id = {missing}").num_rows == 0


def test_order_by_full_sort(target, conn):
    """A full (un-LIMITed) distributed sort comes back globally sorted and complete."""
    sql = "SELECT event_id, user_id, amount FROM demo.events ORDER BY user_id, amount DESC NULLS LAST, event_id"
    actual = fetch(conn, sql)
    assert_sorted_by(actual, [("user_id", "ascending")])
    assert_same(actual, target.data.oracle(sql), ordered=True)


def test_count_matches_pyiceberg_row_count(target, conn):
    n = scalar(fetch(conn, "SELECT count(*) FROM demo.events"))
    assert n == target.data.arrow("events").num_rows
