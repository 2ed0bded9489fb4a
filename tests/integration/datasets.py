"""Deterministic test tables, written with pyiceberg into a catalog.

The same seeded data goes into every catalog (SQLite SqlCatalog "floe" and
SeaweedFS's REST catalog), so the logical contents are identical; the file
layout (and file names) differ per catalog, which is why pruning oracles are
always computed from the catalog's own table.

Tables (namespace ``demo``):

* ``events``   partition day(ts), identity(city); 4 appends (4 snapshots) of
  ``ROWS_PER_APPEND`` rows; after append ``SCHEMA_CHANGE_AFTER`` the column
  ``channel string`` is added and filled by later appends.  Each append covers a
  contiguous time window (windows overlap day boundaries) and ``event_id`` grows
  with ``ts`` across the whole table, so a tight ``event_id`` range touches only
  a few files (bounds pruning on a non-partition column).
* ``accounts`` partition bucket(8, account_id), truncate(2, region); 2 appends.
* ``fragile``  a tiny table (3 files) that test_errors.py damages by deleting a
  data file from S3 behind the catalog's back.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Optional

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import BucketTransform, DayTransform, IdentityTransform, TruncateTransform
from pyiceberg.types import (
    BooleanType,
    DateType,
    DecimalType,
    LongType,
    NestedField,
    StringType,
    TimestampType,
    TimestamptzType,
)

NAMESPACE = "demo"
UTC = dt.timezone.utc

SEED = 20240301
DAY0 = dt.datetime(2024, 3, 1, tzinfo=UTC)
N_DAYS = 10
CITIES = ["Amsterdam", "Berlin", "Lisbon", "Oslo"]
# local_ts = ts shifted by the city's (winter) UTC offset, stored without zone.
CITY_UTC_OFFSET_H = {"Amsterdam": 1, "Berlin": 1, "Lisbon": 0, "Oslo": 1}
DEVICES = ["ios", "android", "web"]
CHANNELS = ["email", "push", "organic", "paid"]
ROWS_PER_APPEND = 5000
# Append k covers hours [APPEND_WINDOWS_H[k], APPEND_WINDOWS_H[k+1]) after DAY0.
APPEND_WINDOWS_H = [0, 60, 126, 186, 240]
SCHEMA_CHANGE_AFTER = 2  # `channel` is added after the 2nd append
USER_ID_MAX = 600

REGIONS = ["eu-west", "eu-north", "us-east", "us-west", "ap-south"]
N_ACCOUNTS = 400
ACCOUNT_APPENDS = 2

TS_US = pa.timestamp("us", tz="UTC")
TS_NAIVE_US = pa.timestamp("us")

# ----------------------------------------------------------------- schemas

EVENTS_SCHEMA = Schema(
    NestedField(1, "event_id", LongType(), required=False),
    NestedField(2, "ts", TimestamptzType(), required=False),
    NestedField(3, "local_ts", TimestampType(), required=False),
    NestedField(4, "city", StringType(), required=False),
    NestedField(5, "device", StringType(), required=False),
    NestedField(6, "user_id", LongType(), required=False),
    NestedField(7, "amount", DecimalType(12, 2), required=False),
    NestedField(8, "is_marketing", BooleanType(), required=False),
    NestedField(9, "event_date", DateType(), required=False),
)
EVENTS_SPEC = PartitionSpec(
    PartitionField(source_id=2, field_id=1000, transform=DayTransform(), name="ts_day"),
    PartitionField(source_id=4, field_id=1001, transform=IdentityTransform(), name="city"),
)
# Column names of demo.events after all appends (schema change included).
EVENTS_COLUMNS = [f.name for f in EVENTS_SCHEMA.fields] + ["channel"]

ACCOUNTS_SCHEMA = Schema(
    NestedField(1, "account_id", LongType(), required=False),
    NestedField(2, "region", StringType(), required=False),
    NestedField(3, "balance", DecimalType(18, 4), required=False),
    NestedField(4, "opened", DateType(), required=False),
    NestedField(5, "active", BooleanType(), required=False),
    NestedField(6, "note", StringType(), required=False),
    NestedField(7, "updated_at", TimestampType(), required=False),
)
ACCOUNTS_SPEC = PartitionSpec(
    PartitionField(source_id=1, field_id=1000, transform=BucketTransform(8), name="account_id_bucket"),
    PartitionField(source_id=2, field_id=1001, transform=TruncateTransform(2), name="region_trunc"),
)

FRAGILE_SCHEMA = Schema(
    NestedField(1, "k", LongType(), required=False),
    NestedField(2, "v", LongType(), required=False),
    NestedField(3, "s", StringType(), required=False),
)
FRAGILE_SPEC = PartitionSpec(
    PartitionField(source_id=1, field_id=1000, transform=IdentityTransform(), name="k"),
)

# ------------------------------------------------------------ generators


def _events_arrow_schema(with_channel: bool) -> pa.Schema:
    fields = [
        pa.field("event_id", pa.int64()),
        pa.field("ts", TS_US),
        pa.field("local_ts", TS_NAIVE_US),
        pa.field("city", pa.string()),
        pa.field("device", pa.string()),
        pa.field("user_id", pa.int64()),
        pa.field("amount", pa.decimal128(12, 2)),
        pa.field("is_marketing", pa.bool_()),
        pa.field("event_date", pa.date32()),
    ]
    if with_channel:
        fields.append(pa.field("channel", pa.string()))
    return pa.schema(fields)


def events_batches() -> list[pa.Table]:
    """The appends of demo.events, in order (deterministic)."""
    rng = random.Random(SEED)
    out = []
    next_id = 1
    for k in range(len(APPEND_WINDOWS_H) - 1):
        lo_us = APPEND_WINDOWS_H[k] * 3600 * 10**6
        hi_us = APPEND_WINDOWS_H[k + 1] * 3600 * 10**6
        offsets = sorted(rng.randrange(lo_us, hi_us) for _ in range(ROWS_PER_APPEND))
        with_channel = k >= SCHEMA_CHANGE_AFTER
        cols: dict[str, list[Any]] = {n: [] for n in _events_arrow_schema(with_channel).names}
        for off in offsets:
            ts = DAY0 + dt.timedelta(microseconds=off)
            city = rng.choice(CITIES)
            local = (ts + dt.timedelta(hours=CITY_UTC_OFFSET_H[city])).replace(tzinfo=None)
            cols["event_id"].append(next_id)
            next_id += 1
            cols["ts"].append(ts)
            cols["local_ts"].append(local)
            cols["city"].append(city)
            cols["device"].append(None if rng.random() < 0.15 else rng.choice(DEVICES))
            cols["user_id"].append(rng.randint(1, USER_ID_MAX))
            cols["amount"].append(
                None if rng.random() < 0.02 else (Decimal(rng.randint(-5000, 999_999)) / 100).quantize(Decimal("0.01"))
            )
            cols["is_marketing"].append(rng.random() < 0.3)
            cols["event_date"].append(local.date())
            if with_channel:
                cols["channel"].append(None if rng.random() < 0.1 else rng.choice(CHANNELS))
        out.append(pa.table(cols, schema=_events_arrow_schema(with_channel)))
    return out


ACCOUNTS_ARROW_SCHEMA = pa.schema(
    [
        pa.field("account_id", pa.int64()),
        pa.field("region", pa.string()),
        pa.field("balance", pa.decimal128(18, 4)),
        pa.field("opened", pa.date32()),
        pa.field("active", pa.bool_()),
        pa.field("note", pa.string()),
        pa.field("updated_at", TS_NAIVE_US),
    ]
)


def accounts_batches() -> list[pa.Table]:
    rng = random.Random(SEED + 1)
    ids = sorted(rng.sample(range(1, USER_ID_MAX + 1), N_ACCOUNTS))
    rows = []
    for i, aid in enumerate(ids):
        rows.append(
            {
                "account_id": aid,
                "region": rng.choice(REGIONS),
                "balance": (Decimal(rng.randint(-10**7, 10**9)) / 10**4).quantize(Decimal("0.0001")),
                "opened": DAY0.date() - dt.timedelta(days=rng.randint(0, 3650)),
                "active": rng.random() < 0.8,
                "note": None if rng.random() < 0.4 else f"note-{rng.choice(['vip', 'std', 'new'])}-{i}",
                "updated_at": DAY0.replace(tzinfo=None) + dt.timedelta(seconds=rng.randint(0, 86400 * N_DAYS)),
            }
        )
    per = len(rows) // ACCOUNT_APPENDS
    out = []
    for k in range(ACCOUNT_APPENDS):
        chunk = rows[k * per : (k + 1) * per] if k < ACCOUNT_APPENDS - 1 else rows[k * per :]
        out.append(pa.Table.from_pylist(chunk, schema=ACCOUNTS_ARROW_SCHEMA))
    return out


def fragile_batch() -> pa.Table:
    return pa.table(
        {
            "k": pa.array([i % 3 for i in range(30)], pa.int64()),
            "v": pa.array(list(range(30)), pa.int64()),
            "s": pa.array([f"s{i}" for i in range(30)], pa.string()),
        }
    )


# ------------------------------------------------------------- writing


def create_tables(catalog: Catalog) -> dict[str, Table]:
    """Create demo.{events,accounts,fragile} in `catalog` and fill them."""
    catalog.create_namespace_if_not_exists(NAMESPACE)
    for name in ("events", "accounts", "fragile"):
        if catalog.table_exists(f"{NAMESPACE}.{name}"):
            catalog.drop_table(f"{NAMESPACE}.{name}")

    events = catalog.create_table(f"{NAMESPACE}.events", EVENTS_SCHEMA, partition_spec=EVENTS_SPEC)
    for k, batch in enumerate(events_batches()):
        if k == SCHEMA_CHANGE_AFTER:
            with events.update_schema() as upd:
                upd.add_column("channel", StringType(), doc="added after the second append")
        events.append(batch)

    accounts = catalog.create_table(f"{NAMESPACE}.accounts", ACCOUNTS_SCHEMA, partition_spec=ACCOUNTS_SPEC)
    for batch in accounts_batches():
        accounts.append(batch)

    fragile = catalog.create_table(f"{NAMESPACE}.fragile", FRAGILE_SCHEMA, partition_spec=FRAGILE_SPEC)
    fragile.append(fragile_batch())

    return {n: catalog.load_table(f"{NAMESPACE}.{n}") for n in ("events", "accounts", "fragile")}


# ------------------------------------------------------------- oracle side


@dataclass
class CatalogData:
    """One catalog's tables plus helpers that compute independent answers."""

    kind: str                      # "sql" or "rest"
    catalog: Catalog
    tables: dict[str, Table]
    seaweed: Any                   # seaweed.Seaweed
    _arrow: dict[str, pa.Table] = field(default_factory=dict, repr=False)
    _duck: Optional[Any] = field(default=None, repr=False)

    def table(self, name: str) -> Table:
        return self.tables[name]

    def reload(self, name: str) -> Table:
        self.tables[name] = self.catalog.load_table(f"{NAMESPACE}.{name}")
        return self.tables[name]

    def arrow(self, name: str) -> pa.Table:
        """Full contents of demo.<name>, read by pyiceberg (cached)."""
        if name not in self._arrow:
            self._arrow[name] = self.tables[name].scan().to_arrow()
        return self._arrow[name]

    def duck(self):
        """A DuckDB connection with views demo.events and demo.accounts over
        pyiceberg's reads (session time zone UTC)."""
        if self._duck is None:
            import duckdb

            con = duckdb.connect()
            con.execute("SET TimeZone='UTC'")
            con.execute(f"CREATE SCHEMA {NAMESPACE}")
            for name in ("events", "accounts"):
                con.register(f"__arrow_{name}", self.arrow(name))
                con.execute(f"CREATE VIEW {NAMESPACE}.{name} AS SELECT * FROM __arrow_{name}")
            self._duck = con
        return self._duck

    def oracle(self, sql: str, params: Optional[list] = None) -> pa.Table:
        """Run `sql` (DuckDB dialect) over pyiceberg's data."""
        return self.duck().sql(sql, params=params).to_arrow_table()

    def data_files(self, name: str) -> list[dict]:
        """Live data files of the current snapshot (pyiceberg's inspect.files())."""
        files = self.tables[name].inspect.files().to_pylist()
        return [f for f in files if f["content"] == 0]

    def planned_files(self, name: str, row_filter) -> list:
        """pyiceberg's own scan planning for `row_filter` (list of FileScanTask)."""
        return list(self.tables[name].scan(row_filter=row_filter).plan_files())

    def delete_data_file(self, name: str) -> str:
        """Delete one data file of demo.<name> from S3 (idempotent: always the
        lexicographically first one). Returns its full s3:// path."""
        path = sorted(f["file_path"] for f in self.data_files(name))[0]
        assert path.startswith("s3://"), path
        bucket, key = path[len("s3://") :].split("/", 1)
        self.seaweed.s3_client().delete_object(Bucket=bucket, Key=key)
        return path
