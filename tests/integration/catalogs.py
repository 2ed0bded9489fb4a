"""pyiceberg catalogs over the test SeaweedFS.

SQL:  SqlCatalog named "floe" (the name Floe always uses for its SQL catalog:
      it is the `catalog_name` column of the `iceberg_tables` table), SQLite
      file, warehouse s3://warehouse/wh.
REST: SeaweedFS's Iceberg REST catalog.  What works (SeaweedFS 4.48):
        uri        = http://127.0.0.1:<iceberg port>
        warehouse  = "iceberg"  (the S3 Tables bucket; GET /v1/config?warehouse=iceberg
                     answers overrides.prefix="iceberg", defaults.warehouse="s3://iceberg")
        credential = "<s3 access key>:<s3 secret key>"  (OAuth2 client credentials,
                     form POST to <uri>/v1/oauth/tokens with scope=catalog; without a
                     bearer token every catalog call except /v1/config is 403)
        s3.*       = endpoint, keys, region us-east-1, path-style access.  The
                     load-table response's `config` only carries s3.endpoint,
                     s3.path-style-access and s3.region - no credentials are vended,
                     so the client must bring its own S3 keys.
      Tables land at s3://iceberg/<namespace>/<table> (metadata/vN.metadata.json).
"""

from __future__ import annotations

from pathlib import Path

from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.catalog.sql import SqlCatalog

SQL_CATALOG_NAME = "floe"


def sqlite_path(workdir: Path) -> Path:
    return Path(workdir) / "catalog.db"


def sql_catalog(seaweed, workdir: Path) -> SqlCatalog:
    db = sqlite_path(workdir).resolve()
    # SQLAlchemy URL: 'sqlite:///' + absolute path (=> four slashes).
    return SqlCatalog(
        SQL_CATALOG_NAME,
        uri=f"sqlite:///{db}",
        warehouse=seaweed.sql_warehouse,
        **seaweed.s3_props(),
    )


def floe_sqlite_uri(workdir: Path) -> str:
    """The same SQLite file as a sqlx URL for Floe: 'sqlite://' + absolute path."""
    return f"sqlite://{sqlite_path(workdir).resolve()}"


def rest_catalog(seaweed) -> RestCatalog:
    return RestCatalog(
        "rest",
        uri=seaweed.rest_uri,
        warehouse=seaweed.rest_warehouse,
        credential=seaweed.rest_credential,
        **{"oauth2-server-uri": f"{seaweed.rest_uri}/v1/oauth/tokens"},
        **seaweed.s3_props(),
    )
