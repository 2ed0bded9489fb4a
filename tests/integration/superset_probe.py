"""Run with the flightsql-dbapi venv's Python (it pins SQLAlchemy < 2): what Superset does
through the `datafusion+flightsql://` SQLAlchemy dialect — list schemas, tables and columns,
then run a query — and the same listings through flightsql-dbapi's own Flight SQL metadata
calls (GetDbSchemas, GetTables, GetPrimaryKeys, GetSqlInfo), printed as JSON for the test.

Usage: superset_probe.py URL SCHEMA TABLE SQL
"""

import json
import sys

import flightsql.sqlalchemy  # noqa: F401  (registers the datafusion+flightsql dialect)
from sqlalchemy import create_engine, inspect, text

url, schema, table, sql = sys.argv[1:5]
engine = create_engine(url)
inspector = inspect(engine)
out = {
    "schemas": sorted(inspector.get_schema_names()),
    "tables": sorted(inspector.get_table_names(schema=schema)),
    "columns": [c["name"] for c in inspector.get_columns(table, schema=schema)],
}
with engine.connect() as conn:
    out["rows"] = [list(r) for r in conn.execute(text(sql))]

from flightsql import FlightSQLClient, connect  # noqa: E402

parsed = engine.url
raw = connect(FlightSQLClient(host=parsed.host, port=parsed.port, user=parsed.username,
                              password=parsed.password, insecure=True))
out["raw_schemas"] = sorted(raw.flightsql_get_schema_names())
out["raw_tables"] = sorted(raw.flightsql_get_table_names(schema))
out["raw_primary_keys"] = raw.flightsql_get_primary_keys(table, schema)
out["raw_server_name"] = raw.flightsql_get_sql_info([0]).get(0)
cursor = raw.cursor()
cursor.execute(sql)
out["raw_rows"] = [list(r) for r in cursor.fetchall()]
print(json.dumps(out))
