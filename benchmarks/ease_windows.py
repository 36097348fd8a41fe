"""How each way of fitting EASE on a large catalog ranks new items, month by month on Ta-Feng.

The collaborative fit (``retrieval.features.fit_collab``) keeps EASE exact on a large catalog's most bought
items and fits every column on its nearest items too (the mix). This prints, for the two validation months
before Ta-Feng's test month and for the test month itself, the new-item Recall@10 and NDCG@10 of EASE's
scores alone under each method, fitted on everything before the month:

- ``mix``: exact on the ``--dense`` most bought items, local for every column (the default);
- ``local``: every column on its 64 nearest items (``ease_dense_items=0``);
- ``exact-top``: exact on the most bought items, no weights for the others (``ease_support=0``).

The methods were chosen on December and January; February is the confirmation, not the choice.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ease_windows.py [--dense 6000] [--months dec,jan,feb]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evals.protocol import ndcg_at, recall_at  # noqa: E402
from retrieval.features import History, fit_collab  # noqa: E402
from tailor.data.tafeng import purchases_frame  # noqa: E402

TAFENG = REPO.parent / "shared" / "datasets" / "ta-feng" / "ta_feng.csv.zip"
TEST = pd.Timestamp("2001-02-01", tz="UTC")  # the first day the ranking eval holds out on Ta-Feng
MONTHS = {
    "dec": (TEST - pd.Timedelta(days=62), TEST - pd.Timedelta(days=31)),
    "jan": (TEST - pd.Timedelta(days=31), TEST),
    "feb": (TEST, TEST + pd.Timedelta(days=28)),
}


def _methods(dense: int) -> dict[str, dict[str, int]]:
    return {
        "mix": {"ease_dense_items": dense},
        "local": {"ease_dense_items": 0},
        "exact-top": {"ease_dense_items": dense, "ease_support": 0},
    }


def month(frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, dense: int) -> list[str]:
    before = frame[frame["timestamp"] < start]
    items = sorted(before["item_id"].unique())
    item_ix = {x: i for i, x in enumerate(items)}
    customers = sorted(before["customer_id"].unique())
    cust_ix = {x: i for i, x in enumerate(customers)}
    seen = sp.csr_matrix(
        (np.ones(len(before)), (before["customer_id"].map(cust_ix), before["item_id"].map(item_ix))),
        shape=(len(customers), len(items)),
    )
    seen.sum_duplicates()
    seen.data[:] = 1.0
    pop = np.asarray(seen.sum(0)).ravel()
    window = frame[(frame["timestamp"] >= start) & (frame["timestamp"] < end)]
    window = window[window["customer_id"].isin(cust_ix) & window["item_id"].isin(item_ix)]
    past = before.groupby("customer_id")["item_id"].agg(set)
    relevant = {
        str(c): bought - past.get(c, set())
        for c, bought in window.groupby("customer_id")["item_id"].agg(set).items()
    }
    evaluated = sorted(c for c, rel in relevant.items() if rel)
    rows = np.array([cust_ix[c] for c in evaluated], dtype=np.int64)
    history = History.from_frame(before, cust_ix, item_ix)
    lines = [
        f"{start.date()} to {end.date()}: {len(items)} items, {len(evaluated)} customers with a new item"
    ]
    for name, params in _methods(dense).items():
        t0 = time.perf_counter()
        ease = fit_collab(history, len(items), **params).ease
        seconds = time.perf_counter() - t0
        recall, ndcg = [], []
        for at in range(0, len(rows), 1024):
            chunk = rows[at : at + 1024]
            # Popularity breaks EASE's ties, as the served scorer does; past items are never new.
            scores = np.asarray((seen[chunk] @ ease).todense()) + 1e-6 * pop[None, :]
            r, c = seen[chunk].nonzero()
            scores[r, c] = -np.inf
            top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
            for cid, best in zip(evaluated[at : at + 1024], top, strict=True):
                ranked = [items[j] for j in best]
                recall.append(recall_at(ranked, relevant[cid], 10))
                ndcg.append(ndcg_at(ranked, relevant[cid], 10))
        lines.append(
            f"  {name:10s} Recall@10 {np.mean(recall):.4f}  NDCG@10 {np.mean(ndcg):.4f}"
            f"  (fit {seconds:.0f} s, {ease.nnz:,} weights)"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dense", type=int, default=6000, help="items EASE is exact on (the fit's default)")
    parser.add_argument("--months", default="dec,jan,feb", help=f"any of {', '.join(MONTHS)}")
    args = parser.parse_args()
    chosen = [m.strip() for m in args.months.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in MONTHS]
    if unknown or not chosen:
        raise SystemExit(f"--months: choose from {', '.join(MONTHS)}, got {args.months!r}")
    if not TAFENG.exists():
        raise SystemExit(f"{TAFENG} is missing: the Ta-Feng store lives in ../shared/datasets/ta-feng")
    frame = purchases_frame(TAFENG)
    for name in chosen:
        print("\n".join([f"{name}:", *month(frame, *MONTHS[name], args.dense)]), flush=True)


if __name__ == "__main__":
    main()
