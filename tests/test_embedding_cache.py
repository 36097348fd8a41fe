"""The embedding cache (``retrieval.embeddings.EmbeddingCache``) on both engines, one suite: an SQLite file
(the default) and PostgreSQL (``TAILOR_DATABASE_URL``), plus the in-memory cache and a cache file of the
releases before migrations, adopted with every vector."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

from retrieval.embeddings import EmbeddingCache, MemoryCache, VectorCache
from tests.postgres import PostgresCluster


def _vec(seed: int, dim: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).random(dim, dtype=np.float32)


@pytest.fixture(params=["sqlite", "postgresql", "memory"])
def cache(request: pytest.FixtureRequest, tmp_path: Path) -> VectorCache:
    if request.param == "memory":
        return MemoryCache()
    if request.param == "sqlite":
        made = EmbeddingCache(tmp_path / "embeddings.sqlite")
    else:
        cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
        made = EmbeddingCache(cluster.database(f"emb_{uuid.uuid4().hex[:12]}"))
    request.addfinalizer(made.close)
    return made


def test_vectors_round_trip_and_a_second_writer_changes_nothing(cache: VectorCache) -> None:
    a, b = EmbeddingCache.key("m", "a"), EmbeddingCache.key("m", "b")
    assert cache.get_many([a, b]) == {}
    cache.put_many([(a, _vec(1)), (b, _vec(2))])
    cache.put_many([(a, _vec(3))])  # the same key again: the first vector stays
    got = cache.get_many([a, b, a])
    assert set(got) == {a, b}
    np.testing.assert_array_equal(got[a], _vec(1))
    np.testing.assert_array_equal(got[b], _vec(2))
    assert got[a].dtype == np.float32 and len(cache) == 2
    assert cache.delete_many([a, a, EmbeddingCache.key("m", "never")]) == 1
    assert set(cache.get_many([a, b])) == {b} and len(cache) == 1
    assert cache.key("m", "a") == a, "every cache keys vectors alike"


def test_models_and_their_dimensions(cache: VectorCache) -> None:
    assert cache.model_ids() == [] and cache.model_dim("m") is None
    cache.set_model_dim("m", 384)
    cache.set_model_dim("k", 8)
    cache.set_model_dim("m", 512)
    assert cache.model_ids() == ["k", "m"] and cache.model_dim("m") == 512


def test_many_keys_in_chunks_and_threads_writing_at_once(cache: VectorCache) -> None:
    keys = [EmbeddingCache.key("m", str(n)) for n in range(1_300)]

    def write(part: int) -> None:
        cache.put_many([(k, _vec(n)) for n, k in enumerate(keys) if n % 4 == part])

    threads = [threading.Thread(target=write, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = cache.get_many(keys)
    assert len(got) == 1_300
    np.testing.assert_array_equal(got[keys[1_299]], _vec(1_299))
    assert cache.delete_many(keys[:1_100]) == 1_100 and len(cache) == 200


def test_two_caches_on_one_database_see_each_others_vectors(ops_target: str | Path) -> None:
    one, two = EmbeddingCache(ops_target), EmbeddingCache(ops_target)
    try:
        key = EmbeddingCache.key("m", "shared")
        one.put_many([(key, _vec(5))])
        np.testing.assert_array_equal(two.get_many([key])[key], _vec(5))
    finally:
        one.close()
        two.close()


def test_a_cache_file_of_the_release_before_migrations_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "embeddings.sqlite"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE vectors (key BLOB PRIMARY KEY, dim INTEGER, vec BLOB)")
    old.execute("CREATE TABLE models (model TEXT PRIMARY KEY, dim INTEGER NOT NULL)")
    key = EmbeddingCache.key("m", "kept")
    old.execute("INSERT INTO vectors VALUES (?,?,?)", (key, 4, _vec(7).tobytes()))
    old.execute("INSERT INTO models VALUES ('m', 4)")
    old.commit()
    old.close()
    cache = EmbeddingCache(path)
    try:
        np.testing.assert_array_equal(cache.get_many([key])[key], _vec(7))
        assert cache.model_dim("m") == 4 and len(cache) == 1
    finally:
        cache.close()
    # Opened again, it is at the newest revision already, and still whole.
    again = EmbeddingCache(path)
    try:
        assert len(again) == 1
    finally:
        again.close()


def test_caches_and_stores_opened_on_many_threads_at_once_all_migrate(tmp_path: Path) -> None:
    """Alembic's context is one per process: migrations on several threads at once take turns."""
    from tailor.data.store import Store

    barrier = threading.Barrier(8)
    problems: list[BaseException] = []

    def open_one(n: int) -> None:
        barrier.wait()
        try:
            if n % 2:
                EmbeddingCache(tmp_path / f"e{n}.sqlite").close()
            else:
                Store(tmp_path / f"s{n}.db").close()
        except BaseException as exc:
            problems.append(exc)

    threads = [threading.Thread(target=open_one, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert problems == []
