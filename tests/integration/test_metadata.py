"""Catalog-facing SQL (SHOW TABLES, DESCRIBE), result schemas, prepared
statements with bound parameters, and ADBC metadata calls (GetObjects,
GetTableSchema, GetInfo, GetTableTypes). Expected values come from pyiceberg's
view of the same catalog."""

from __future__ import annotations

import pyarrow as pa
import pytest

from compare import assert_same, fetch, rows

FLOE_CATALOG = "floe"
NS = "demo"


# ------------------------------------------------------------ type helpers


def _norm_type(t: pa.DataType) -> str:
    """Arrow type family for schema comparison: string/large_string/string_view
    are one, timestamp time zones 'UTC'/'+00:00' are one."""
    if pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t):
        return "string"
    if pa.types.is_timestamp(t):
        tz = t.tz
        if tz in ("UTC", "+00:00", "Etc/UTC", "Z", "+0000"):
            tz = "UTC"
        return f"timestamp[{t.unit}, tz={tz}]"
    if pa.types.is_dictionary(t):
        return _norm_type(t.value_type)
    return str(t)


def _iceberg_arrow_schema(table) -> pa.Schema:
    """Arrow schema that pyiceberg maps the table's current Iceberg schema to."""
    return table.schema().as_arrow()


def assert_schema_matches_iceberg(schema: pa.Schema, table, context: str) -> None:
    exp = _iceberg_arrow_schema(table)
    assert schema.names == exp.names, f"{context}: column names {schema.names} != iceberg {exp.names}"
    got = [_norm_type(f.type) for f in schema]
    want = [_norm_type(f.type) for f in exp]
    assert got == want, f"{context}: types differ\n  floe:    {got}\n  iceberg: {want}"


# ------------------------------------------------------------ SQL metadata


def test_show_tables(target, conn):
    t = fetch(conn, "SHOW TABLES")
    names = [c.lower() for c in t.column_names]
    assert {"table_catalog", "table_schema", "table_name"} <= set(names), t.column_names
    listed = {
        r["table_name"]
        for r in t.to_pylist()
        if r["table_schema"] == NS and r["table_catalog"] == FLOE_CATALOG
    }
    expected = {ident[-1] for ident in target.data.catalog.list_tables(NS)}
    assert listed == expected


def test_describe_events(target, conn):
    t = fetch(conn, "DESCRIBE demo.events")
    d = {c.lower(): c for c in t.column_names}
    assert "column_name" in d, t.column_names
    got = t.column(d["column_name"]).to_pylist()
    iceberg = target.data.table("events").schema()
    assert got == [f.name for f in iceberg.fields]
    if "is_nullable" in d:
        nullable = dict(zip(got, t.column(d["is_nullable"]).to_pylist()))
        for f in iceberg.fields:
            assert str(nullable[f.name]).upper() in (("YES", "TRUE") if f.optional else ("NO", "FALSE")), f.name


@pytest.mark.parametrize("table", ["events", "accounts"])
def test_result_schema_matches_iceberg_types(target, conn, table):
    """SELECT * carries the Iceberg types (decimal precision/scale, timestamp
    units and zones, dates, booleans) - including the column added later."""
    t = fetch(conn, f"SELECT * FROM demo.{table} LIMIT 0")
    assert t.num_rows == 0
    assert_schema_matches_iceberg(t.schema, target.data.table(table), f"SELECT * FROM demo.{table}")


# ------------------------------------------------------- prepared statements


def test_prepared_statement_bound_parameter(target, conn):
    sql = "SELECT count(*) AS n, sum(amount) AS total FROM demo.events WHERE city = $1"
    oracle = "SELECT count(*) AS n, sum(amount) AS total FROM demo.events WHERE city = ?"
    cur = conn.cursor()
    try:
        # same cursor, same SQL: the statement is prepared once and re-bound
        for city in ("Lisbon", "Oslo", "Nowhere"):
            cur.execute(sql, parameters=(city,))
            actual = cur.fetch_arrow_table()
            assert_same(actual, target.data.oracle(oracle, [city]), context=f"city={city}")
    finally:
        cur.close()


def test_prepared_statement_two_parameters_ordered(target, conn):
    sql = "SELECT event_id, ts, amount FROM demo.events WHERE event_id >= $1 AND event_id < $2 ORDER BY event_id"
    oracle = "SELECT event_id, ts, amount FROM demo.events WHERE event_id >= ? AND event_id < ? ORDER BY event_id"
    for lo, hi in ((1000, 1050), (19990, 30000)):
        actual = fetch(conn, sql, (lo, hi))
        assert_same(actual, target.data.oracle(oracle, [lo, hi]), ordered=True, context=f"{lo}..{hi}")


def test_prepared_statement_parameter_in_join(target, conn):
    sql = (
        "SELECT a.region, count(*) AS n FROM demo.events e JOIN demo.accounts a ON e.user_id = a.account_id "
        "WHERE e.city = $1 AND a.active = $2 GROUP BY a.region"
    )
    oracle = sql.replace("$1", "?").replace("$2", "?")
    actual = fetch(conn, sql, ("Berlin", True))
    assert_same(actual, target.data.oracle(oracle, ["Berlin", True]))


# ------------------------------------------------------------ ADBC metadata


def _objects(conn, **kw) -> list[dict]:
    return conn.adbc_get_objects(**kw).read_all().to_pylist()


def _find(items: list, key: str, value: str):
    for it in items or []:
        if it[key] == value:
            return it
    return None


def test_adbc_get_objects_catalogs_and_schemas(target, conn):
    cats = _objects(conn, depth="db_schemas")
    floe = _find(cats, "catalog_name", FLOE_CATALOG)
    assert floe is not None, [c["catalog_name"] for c in cats]
    schemas = [s["db_schema_name"] for s in floe["catalog_db_schemas"] or []]
    assert NS in schemas


def test_adbc_get_objects_tables_and_columns(target, conn):
    cats = _objects(conn, depth="all", catalog_filter=FLOE_CATALOG, db_schema_filter=NS)
    floe = _find(cats, "catalog_name", FLOE_CATALOG)
    assert floe is not None
    demo = _find(floe["catalog_db_schemas"], "db_schema_name", NS)
    assert demo is not None
    tables = {t["table_name"]: t for t in demo["db_schema_tables"] or []}
    assert set(tables) == {ident[-1] for ident in target.data.catalog.list_tables(NS)}
    cols = sorted(tables["events"]["table_columns"] or [], key=lambda c: c["ordinal_position"] or 0)
    assert [c["column_name"] for c in cols] == [f.name for f in target.data.table("events").schema().fields]


def test_adbc_get_objects_table_filter(target, conn):
    cats = _objects(conn, depth="tables", catalog_filter=FLOE_CATALOG, db_schema_filter=NS, table_name_filter="acc%")
    demo = _find(_find(cats, "catalog_name", FLOE_CATALOG)["catalog_db_schemas"], "db_schema_name", NS)
    assert [t["table_name"] for t in demo["db_schema_tables"]] == ["accounts"]


@pytest.mark.parametrize("table", ["events", "accounts"])
def test_adbc_get_table_schema(target, conn, table):
    schema = conn.adbc_get_table_schema(table, db_schema_filter=NS)
    assert_schema_matches_iceberg(schema, target.data.table(table), f"adbc_get_table_schema({table})")
    schema2 = conn.adbc_get_table_schema(table, catalog_filter=FLOE_CATALOG, db_schema_filter=NS)
    assert schema2.names == schema.names


def test_adbc_get_table_types(target, conn):
    types = conn.adbc_get_table_types()
    assert types, "no table types"
    cats = _objects(conn, depth="tables", catalog_filter=FLOE_CATALOG, db_schema_filter=NS, table_name_filter="events")
    demo = _find(_find(cats, "catalog_name", FLOE_CATALOG)["catalog_db_schemas"], "db_schema_name", NS)
    (ev,) = demo["db_schema_tables"]
    assert ev["table_type"] in types


def test_adbc_get_info(target, conn):
    info = conn.adbc_get_info()
    assert isinstance(info.get("vendor_name"), str) and info["vendor_name"], info
    assert "floe" in info["vendor_name"].lower(), info
    assert isinstance(info.get("vendor_version"), str) and info["vendor_version"], info
    assert info.get("driver_name"), info


def test_metadata_after_queries_still_consistent(target, conn):
    """SHOW TABLES via SQL and GetObjects agree with each other."""
    via_sql = {
        r["table_name"] for r in fetch(conn, "SHOW TABLES").to_pylist()
        if r["table_schema"] == NS and r["table_catalog"] == FLOE_CATALOG
    }
    cats = _objects(conn, depth="tables", catalog_filter=FLOE_CATALOG, db_schema_filter=NS)
    demo = _find(_find(cats, "catalog_name", FLOE_CATALOG)["catalog_db_schemas"], "db_schema_name", NS)
    assert via_sql == {t["table_name"] for t in demo["db_schema_tables"]}
    assert rows(fetch(conn, "SELECT 1 AS one")) == [(1,)]
