"""Shared fixtures: a small slice of the real demo data, converted and imported once per session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tailor.core.settings import Settings
from tailor.data.importer import import_dir
from tailor.data.store import Store
from tailor.data.uci import convert
from tests.ops_backends import OPS_ENGINES
from tests.postgres import PostgresCluster, postgres_cluster
from tests.retailers import RETAILERS, Retailer, rebrand_catalog

REPO = Path(__file__).resolve().parent.parent
PARQUET = REPO / "data" / "raw" / "online_retail.parquet"
SLICE_CUSTOMERS = 40


@pytest.fixture(scope="session")
def slice_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The canonical files for the 40 busiest customers of UCI Online Retail (and the whole catalog)."""
    out = tmp_path_factory.mktemp("canonical")
    convert(PARQUET, out, customers_limit=SLICE_CUSTOMERS)
    return out


@pytest.fixture(scope="session")
def slice_store(slice_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A read-only store with the slice imported. Tests that write use ``fresh_store``."""
    store = Store(tmp_path_factory.mktemp("store") / "tailor.db")
    import_dir(store, slice_dir)
    yield store
    store.close()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the session, under build/postgres, stopped at its end."""
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(params=OPS_ENGINES)
def ops_target(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a test's ops database lives, once per engine: an SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "ops.db"
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    return cluster.database(f"ops_{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=OPS_ENGINES)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty customer store, once per engine: an SQLite file, and a new PostgreSQL database. The store's
    contract tests take it, as the ops tests take ``ops_target``."""
    if request.param == "sqlite":
        target: str | Path = tmp_path / "tailor.db"
    else:
        cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
        target = cluster.database(f"store_{uuid.uuid4().hex[:12]}")
    store = Store(target)
    yield store
    store.close()


@pytest.fixture(scope="session", params=sorted(RETAILERS))
def retailer(request: pytest.FixtureRequest) -> Retailer:
    """Each retailer configuration of ``tests/retailers.py``: a test that takes it runs under both."""
    return RETAILERS[str(request.param)]


@pytest.fixture(scope="session")
def retail_store(
    retailer: Retailer, slice_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    """The slice as ``retailer`` sells it (its currency, links on its domain); read-only like slice_store."""
    if retailer.key == "hearth":
        src = slice_dir
    else:
        src = rebrand_catalog(slice_dir, tmp_path_factory.mktemp(f"canonical-{retailer.key}"), retailer)
    store = Store(tmp_path_factory.mktemp(f"store-{retailer.key}") / "tailor.db")
    import_dir(store, src, currency=retailer.brand.currency)
    yield store
    store.close()


@pytest.fixture
def fresh_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "tailor.db")
    yield store
    store.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", now="2011-12-10T10:00:00+00:00")
