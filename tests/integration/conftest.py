"""Session fixtures for the Floe integration tests.

    seaweed         weed mini (S3 + Iceberg REST catalog), stopped at the end
    sql_data        demo.* tables in the SQLite SqlCatalog "floe" (s3://warehouse/wh)
    rest_data       demo.* tables in SeaweedFS's REST catalog (s3://iceberg/...)
    datasets        {"sql": sql_data, "rest": rest_data} (lazy)
    cluster_sql     floe coordinator + 2 floe executor processes, SQL catalog
    cluster_rest    the same over the REST catalog
    standalone_sql  floe standalone --executors 2, SQL catalog
    target          parametrized over the deployments above (Target: .floe, .data)
    conn            an ADBC DB-API connection to target.floe (per test)

Environment knobs:
    FLOE_BIN                    Floe binary (default $CARGO_TARGET_DIR/debug/floe,
                                CARGO_TARGET_DIR default ~/.cache/floe-target)
    FLOE_TEST_DEPLOYMENTS       comma list restricting `target`, e.g. "standalone_sql"
    FLOE_TEST_STARTUP_TIMEOUT   seconds to wait for readiness lines (60)
    FLOE_TEST_QUERY_TIMEOUT     ADBC RPC timeout in seconds (120)
    FLOE_TEST_RUST_LOG          RUST_LOG for Floe processes (info)
    FLOE_TEST_SEAWEED_FIXED_PORTS=1  use SeaweedFS default ports (8333/8181/...)
Logs: <pytest basetemp>/floe-it*/ (seaweed/weed.log, logs/<deployment>-*.log);
a failing test that used `target` gets the Floe log tails in its report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

import catalogs
import datasets
import floe_cluster
from seaweed import Seaweed

ALL_DEPLOYMENTS = ["cluster_sql", "cluster_rest", "standalone_sql"]


def _selected_deployments() -> list[str]:
    raw = os.environ.get("FLOE_TEST_DEPLOYMENTS", "").strip()
    if not raw:
        return ALL_DEPLOYMENTS
    chosen = [d.strip() for d in raw.split(",") if d.strip()]
    unknown = sorted(set(chosen) - set(ALL_DEPLOYMENTS))
    if unknown:
        raise pytest.UsageError(f"FLOE_TEST_DEPLOYMENTS: unknown {unknown}; known {ALL_DEPLOYMENTS}")
    return chosen


DEPLOYMENTS = _selected_deployments()


# ------------------------------------------------------------------ storage


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("floe-it")


@pytest.fixture(scope="session")
def seaweed(workdir):
    sw = Seaweed.start(workdir / "seaweed")
    try:
        yield sw
    finally:
        sw.stop()


@pytest.fixture(scope="session")
def sql_data(seaweed, workdir) -> datasets.CatalogData:
    cat = catalogs.sql_catalog(seaweed, workdir)
    tables = datasets.create_tables(cat)
    return datasets.CatalogData("sql", cat, tables, seaweed)


@pytest.fixture(scope="session")
def rest_data(seaweed) -> datasets.CatalogData:
    cat = catalogs.rest_catalog(seaweed)
    tables = datasets.create_tables(cat)
    return datasets.CatalogData("rest", cat, tables, seaweed)


class _LazyDatasets(dict):
    def __init__(self, request):
        super().__init__()
        self._request = request

    def __missing__(self, kind: str) -> datasets.CatalogData:
        value = self._request.getfixturevalue(f"{kind}_data")
        self[kind] = value
        return value


@pytest.fixture(scope="session")
def datasets_by_kind(request) -> dict:
    return _LazyDatasets(request)


# ------------------------------------------------------------------ Floe


def _sql_catalog_config(seaweed, workdir) -> floe_cluster.CatalogConfig:
    return floe_cluster.sql_catalog_config(seaweed, workdir)


def _rest_catalog_config(seaweed) -> floe_cluster.CatalogConfig:
    return floe_cluster.CatalogConfig(
        warehouse=f"s3://{seaweed.rest_bucket}",
        kind="rest",
        catalog_uri=seaweed.rest_uri,
        rest_warehouse=seaweed.rest_warehouse,
        rest_credential=seaweed.rest_credential,
        storage_args=seaweed.floe_storage_args(),
    )


@pytest.fixture(scope="session")
def cluster_sql(seaweed, sql_data, workdir):
    dep = floe_cluster.start_cluster("cluster_sql", _sql_catalog_config(seaweed, workdir), workdir / "logs")
    try:
        yield dep
    finally:
        dep.stop()


@pytest.fixture(scope="session")
def cluster_rest(seaweed, rest_data, workdir):
    dep = floe_cluster.start_cluster("cluster_rest", _rest_catalog_config(seaweed), workdir / "logs")
    try:
        yield dep
    finally:
        dep.stop()


@pytest.fixture(scope="session")
def standalone_sql(seaweed, sql_data, workdir):
    dep = floe_cluster.start_standalone("standalone_sql", _sql_catalog_config(seaweed, workdir), workdir / "logs")
    try:
        yield dep
    finally:
        dep.stop()


@dataclass
class Target:
    """A Floe deployment plus the pyiceberg view of the catalog it serves."""

    name: str
    floe: floe_cluster.Deployment
    data: datasets.CatalogData

    def __repr__(self) -> str:
        return f"Target({self.name})"


@pytest.fixture(scope="session", params=DEPLOYMENTS)
def target(request, datasets_by_kind) -> Target:
    # Fail fast (an error, not a skip) when the binary is missing.
    floe_cluster.floe_bin()
    dep = request.getfixturevalue(request.param)
    return Target(request.param, dep, datasets_by_kind[dep.catalog_kind])


@pytest.fixture
def conn(target):
    yield from floe_cluster.connection(target.floe)


# ------------------------------------------------------------------ reporting


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when in ("setup", "call"):
        tgt = getattr(item, "funcargs", {}).get("target")
        if isinstance(tgt, Target):
            try:
                report.sections.append((f"Floe logs ({tgt.name})", tgt.floe.describe()))
            except Exception as e:  # noqa: BLE001
                report.sections.append(("Floe logs", f"<unavailable: {e}>"))
