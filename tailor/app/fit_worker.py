"""Fits the ranker in a child process, for a refit that runs while a server answers requests.

In the server's own process the fit's Python parts hold the GIL against the request handlers: measured
with ``benchmarks/load.py --refit``, a fit that takes under a minute alone had not finished after three
minutes of 20 recommendations a second, and those requests' p95 tripled. A child process at a lower
priority shares only the cores, and the scheduler serves the requests first.

    TAILOR_FIT_STORE=DB python -m tailor.app.fit_worker --vectors DIR --now ISO --out BASE

``DIR`` holds ``ids.json`` and ``vectors.npy`` (the items' text vectors, rows in id order); the fitted
ranker is saved at ``BASE`` (``BASE.npz`` and ``BASE.json``, see ``Ranker.save``). Exit 0 on success; on
failure, one line on stderr that names the problem, exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

from retrieval.ranker import Ranker
from tailor.core.errors import TailorError
from tailor.data.frame import purchases_from_store
from tailor.data.store import Store

# The store to fit on: an SQLite file's path or a database URL (which may hold a password).
STORE_ENV = "TAILOR_FIT_STORE"

__all__ = ["NICE", "STORE_ENV", "read_vectors", "write_vectors"]

NICE = 10  # below the server's requests, above nothing else in particular


def write_vectors(directory: Path, vectors: dict[str, npt.NDArray[np.floating]]) -> None:
    ids = sorted(vectors)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ids.json").write_text(json.dumps(ids))
    matrix = np.stack([np.asarray(vectors[i], dtype=np.float32) for i in ids]) if ids else np.zeros((0, 0))
    np.save(directory / "vectors.npy", matrix.astype(np.float32), allow_pickle=False)


def read_vectors(directory: Path) -> dict[str, npt.NDArray[np.float32]]:
    ids = json.loads((directory / "ids.json").read_text())
    matrix = np.load(directory / "vectors.npy", allow_pickle=False)
    if len(ids) != len(matrix):
        raise ValueError(f"{directory}: {len(ids)} ids for {len(matrix)} vectors")
    return {item: matrix[n] for n, item in enumerate(ids)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vectors", type=Path, required=True)
    parser.add_argument("--now", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    # Where lowering the priority is not allowed, fit at the same one rather than not at all.
    with contextlib.suppress(OSError):
        os.nice(NICE)

    try:
        target = os.environ.get(STORE_ENV)
        if not target:
            raise ValueError(f"{STORE_ENV} names no store (an SQLite file's path or a postgresql:// URL)")
        store = Store(target)
        try:
            purchases = purchases_from_store(store)
        finally:
            store.close()
        vectors = read_vectors(args.vectors)
        Ranker().fit(purchases, vectors or None, now=args.now).save(args.out)
    except (TailorError, OSError, ValueError) as exc:
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
