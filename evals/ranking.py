"""Offline ranking evaluation: Tailor's learned ranker against reference rankers, under the temporal protocol.

Reference rankers are Tailor's own implementations of the usual baselines (popularity, the customer's own
purchase frequency, cosine item-kNN), so every run compares against peers measured on the same split.
Besides accuracy it reports, on the ``all`` variant's top-10 lists: catalog coverage, intra-list diversity
(1 - mean pairwise cosine of item text vectors, or of collaborative vectors without text), novelty (mean
self-information of the recommended items' popularity) and popularity bias (mean popularity percentile).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

from evals.protocol import (
    DEFAULT_CUT,
    DEFAULT_KS,
    RankFn,
    Split,
    Variant,
    evaluate_each,
    holdout_cut,
    recall_at,
    temporal_split,
)
from retrieval.embeddings import Embedder
from retrieval.features import spd_inverse
from retrieval.ranker import Ranker
from tailor.core.errors import DataError
from tailor.data.frame import purchases_from_uci
from tailor.data.uci import join_years, read_uci

__all__ = [
    "DEFAULT_EARLIER_PARQUET",
    "DEFAULT_PARQUET",
    "RECENCY_BINS",
    "RankingEval",
    "beyond_accuracy",
    "ease_items",
    "rebuy_by_recency",
    "recency_shift_bound",
    "reference_rankers",
    "uci_item_texts",
]

DEFAULT_PARQUET = Path(__file__).resolve().parents[1] / "data" / "raw" / "online_retail.parquet"
# The retailer's year before (Online Retail II, 2009-12-01 to 2010-12-09): earlier history for the ranker.
DEFAULT_EARLIER_PARQUET = DEFAULT_PARQUET.with_name("online_retail_ii_2009_2010.parquet")
VARIANTS: tuple[Variant, ...] = ("all", "new-only")


RECENCY_BINS = (0, 30, 60, 120, 180, 240, 300, 400)


def rebuy_by_recency(
    purchases: pd.DataFrame, cut: pd.Timestamp, days: int, bins: Sequence[int] = RECENCY_BINS
) -> dict[str, tuple[int, float]]:
    """How often a customer buys an item again within ``days`` of ``cut``, by days since they last bought it.

    Pairs are (customer, item) bought before ``cut`` by a customer who buys anything in the window; the
    answer maps a bin ``"lo-hi"`` to (pairs, share rebought). Put side by side for the test window and for the
    ranker's last training window, it shows what the trees could learn and what they could not: a recency
    the training window never holds (items last bought a year before) is extrapolated from the oldest it does.
    """
    frame = purchases[["customer_id", "item_id", "timestamp"]]
    before = frame[frame["timestamp"] < cut]
    window = frame[(frame["timestamp"] >= cut) & (frame["timestamp"] < cut + pd.Timedelta(days=days))]
    last = before.groupby(["customer_id", "item_id"])["timestamp"].max().reset_index()
    last = last[last["customer_id"].isin(set(window["customer_id"]))]
    again = set(zip(window["customer_id"], window["item_id"], strict=True))
    age = (cut - last["timestamp"]).dt.total_seconds().to_numpy() / 86400.0
    hit = np.fromiter(
        ((c, i) in again for c, i in zip(last["customer_id"], last["item_id"], strict=True)), bool, len(last)
    )
    out: dict[str, tuple[int, float]] = {}
    for lo, hi in itertools.pairwise(bins):
        sel = (age > lo) & (age <= hi)
        n = int(sel.sum())
        if n:
            out[f"{lo}-{hi}"] = (n, float(hit[sel].mean()))
    return out


def recency_shift_bound(
    ranker: Ranker,
    split: Split,
    *,
    min_days: float = 240.0,
    shifts: Sequence[float] = (0.0, 0.25, 0.5, 1.0),
    k: int = 10,
) -> dict[float, float]:
    """Recall@``k`` on all purchases when the ranker's score of every candidate last bought ``min_days`` or
    more before the cut is raised by each of ``shifts`` (log-odds), the rest unchanged.

    It reads the test window's answers, so it is a bound, not a method: the most that ranking items bought a
    year before any higher could add, whatever feature or prior did it. ``0.0`` is the ranker as it is.
    """
    if min(shifts, default=0.0) < 0.0:
        raise DataError(f"shifts must be >= 0, got {list(shifts)}")
    customers = split.evaluated("all")
    if not customers:
        raise DataError("the split has no evaluated customers")
    scored = [ranker.score(c, k=len(ranker.item_ids)) for c in customers]
    out: dict[float, float] = {}
    for shift in shifts:
        total = 0.0
        for customer, items in zip(customers, scored, strict=True):
            old = [it.features["days_last"] >= min_days for it in items]  # NaN (never bought) is False
            # Ties keep the ranker's own order, so a zero shift gives back exactly its ranking.
            order = sorted(
                range(len(items)), key=lambda i: (-(items[i].score + (shift if old[i] else 0.0)), i)
            )
            total += recall_at([items[i].item_id for i in order[:k]], split.relevant(customer, "all"), k)
        out[float(shift)] = total / len(customers)
    return out


def uci_item_texts(raw: pd.DataFrame) -> dict[str, str]:
    """Each StockCode's most frequent description: the item text embedded for the eval."""
    described = raw.dropna(subset=["Description"])
    counts = described.groupby(["StockCode", "Description"]).size().reset_index(name="n")
    counts = counts.sort_values(["StockCode", "n", "Description"], ascending=[True, False, True])
    best = counts.drop_duplicates("StockCode")
    return {str(c): str(d).strip() for c, d in zip(best["StockCode"], best["Description"], strict=True)}


def _matrix(split: Split) -> tuple[sp.csr_matrix, sp.csr_matrix, list[str], dict[str, int], dict[str, int]]:
    items = sorted(split.catalog)
    item_ix = {x: i for i, x in enumerate(items)}
    customers = sorted(set(split.train["customer_id"]))
    cust_ix = {x: i for i, x in enumerate(customers)}
    freq = _counts(split.train, cust_ix, item_ix)
    return freq, _bought(freq), items, item_ix, cust_ix


def _counts(frame: pd.DataFrame, cust_ix: Mapping[str, int], item_ix: Mapping[str, int]) -> sp.csr_matrix:
    """Customers x items purchase counts of ``frame``, whose ids must all be in the two indexes."""
    counts = frame.groupby(["customer_id", "item_id"]).size().reset_index(name="n")
    rows = counts["customer_id"].map(cust_ix).to_numpy()
    cols = counts["item_id"].map(item_ix).to_numpy()
    shape = (len(cust_ix), len(item_ix))
    return sp.csr_matrix((counts["n"].to_numpy(np.float64), (rows, cols)), shape=shape)


def _bought(freq: sp.csr_matrix) -> sp.csr_matrix:
    """1 where the customer bought the item at all."""
    return (freq > 0).astype(np.float64).tocsr()


# EASE inverts a dense items x items Gram matrix (memory grows as n^2, time as n^3): past this many items it
# is fitted on the most bought ones only, as the ranker's own EASE is (``ease_items``), and the others score
# nothing. 8,000 items take three 512 MB matrices; UCI Online Retail's ~3,700 items are fitted whole, so its
# figure is the peer's own, while Ta-Feng's 22,542 would take 4 GB each and minutes on two cores.
EASE_MAX_ITEMS = 8_000
EASE_L2 = 250.0  # the peer script's regularisation, so the figure is the peer's own
# The reference rankers an eval may ask for (``reference_rankers`` adds ``repeat_full`` and ``ease_full``
# over the earlier history when there is one).
REFERENCES = ("popularity", "repeat", "itemknn", "ease")
_OVER_EARLIER = ("repeat_full", "ease_full")
Lists = list[list[str]]


def reference_rankers(split: Split, k: int = 20) -> dict[str, RankFn]:
    """Popularity, repeat (own purchase frequency, popularity breaking ties), cosine item-kNN and EASE, and
    ``repeat_full`` and ``ease_full`` (the same over the earlier history too) when the split has earlier
    history.

    They follow the peer script's definitions (``repeat`` is its ``repeat_history``, ``ease`` its
    ``ease_l250``), so the peers' figures are measured again on every split the eval runs on. EASE is fitted
    on first use only, on the ``EASE_MAX_ITEMS`` most bought items of a larger catalog.
    """
    freq, seen, items, item_ix, cust_ix = _matrix(split)
    pop = np.asarray(seen.sum(0)).ravel()
    norms = np.sqrt(pop) + 1e-9
    gram = (seen.T @ seen).tocsr()
    cosine = gram.multiply(1.0 / norms[:, None]).multiply(1.0 / norms[None, :]).tocsr()
    cosine.setdiag(0.0)

    def top(
        scores: npt.NDArray[np.float64], rows: Sequence[int], new_only: bool, mask: sp.csr_matrix
    ) -> list[list[str]]:
        if new_only:
            r, c = mask[list(rows)].nonzero()
            scores[r, c] = -np.inf
        part = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
        best = np.take_along_axis(part, order, 1)
        return [[items[j] for j in row] for row in best]

    def batched(score: Callable[[list[int]], npt.NDArray[np.float64]], mask: sp.csr_matrix = seen) -> RankFn:
        # A customer's new-only list is cut from the same score row as her all list, so it is cut beside it
        # and kept for the new-only call: the score rows (a sparse or dense product over the catalog) were
        # most of item-kNN's and EASE's time, and were computed twice. A row's scores do not depend on the
        # rows scored with it, so the lists are the ones a call of their own would give.
        kept: dict[int, list[str]] = {}

        def rank(customers: Sequence[str], new_only: bool) -> list[list[str]]:
            rows = [cust_ix[c] for c in customers]
            lists: dict[int, list[str]] = {}
            todo = [r for r in rows if not new_only or r not in kept]
            for start in range(0, len(todo), 512):
                chunk = todo[start : start + 512]
                scores = np.asarray(score(chunk), dtype=np.float64)
                if not new_only:
                    lists.update(zip(chunk, top(scores, chunk, False, mask), strict=True))
                # After the all lists: cutting the new-only lists sets the customer's own items to -inf.
                cut = top(scores, chunk, True, mask)
                (kept if not new_only else lists).update(zip(chunk, cut, strict=True))
            return [lists[r] if r in lists else kept[r] for r in rows]

        return rank

    refs = {
        "popularity": _by_popularity(freq, pop, items, cust_ix, k, repeat=False),
        "repeat": _by_popularity(freq, pop, items, cust_ix, k, repeat=True),
        "itemknn": batched(lambda rows: np.asarray((seen[rows] @ cosine).todense())),
        "ease": batched(_ease(seen)),
    }
    if not split.earlier.empty:
        # Repeat history over the earlier history too: what the extra data gives the simplest ranker, so a
        # gain from the data is not mistaken for a gain from the model.
        full = split.history
        full_freq = _counts(
            full[full["item_id"].isin(item_ix) & full["customer_id"].isin(cust_ix)], cust_ix, item_ix
        )
        refs["repeat_full"] = _by_popularity(full_freq, pop, items, cust_ix, k, repeat=True, leave_out=freq)
        # EASE on the same longer history; its new-only lists leave out everything the customer ever bought,
        # earlier history included, as Tailor's discovery lists do.
        full_seen = _bought(full_freq)
        refs["ease_full"] = batched(_ease(full_seen), mask=full_seen)
    return refs


def _by_popularity(
    freq: sp.csr_matrix,
    pop: npt.NDArray[np.float64],
    items: Sequence[str],
    cust_ix: Mapping[str, int],
    k: int,
    *,
    repeat: bool,
    leave_out: sp.csr_matrix | None = None,
) -> RankFn:
    """Popularity (``repeat=False``) or repeat history (``repeat=True``: the customer's own items by how
    often she bought them, popularity breaking ties, then the rest by popularity), read from each customer's
    row of ``freq`` without a dense score row: a customer's list is her own items and the head of one
    popularity order, which customers x items scores sorted row by row only found again (on Ta-Feng that
    was a fifth of the eval's reference time). Ties in popularity go to the lower column.

    A new-only list leaves out every item of her row of ``leave_out`` (by default ``freq``); repeat history
    over a longer ``freq`` (``repeat_full``) first lists her items ``leave_out`` lacks (bought only in the
    earlier history). Unlike the dense references' lists, it is not padded with items she bought, so it may
    be shorter than ``k`` when she has bought nearly everything (the protocol leaves those out anyway)."""
    leave_out = freq if leave_out is None else leave_out
    order = np.argsort(-pop, kind="stable")
    popular = [items[j] for j in order[:k]]

    def rank(customers: Sequence[str], new_only: bool) -> list[list[str]]:
        out: list[list[str]] = []
        for c in customers:
            r = cust_ix[c]
            if not new_only and not repeat:
                out.append(list(popular))
                continue
            a, b = freq.indptr[r], freq.indptr[r + 1]
            bought = freq.data[a:b] > 0
            own, counts = freq.indices[a:b][bought], freq.data[a:b][bought]
            left_out = leave_out.indices[leave_out.indptr[r] : leave_out.indptr[r + 1]]
            head: list[int] = []
            if repeat:
                # New-only: her own items that ``leave_out`` does not hold (repeat_full: bought only in the
                # earlier history) still come first, as their dense scores put them.
                keep = ~np.isin(own, left_out) if new_only else np.ones(len(own), dtype=bool)
                score = counts[keep] + 1e-6 * pop[own[keep]]
                head = own[keep][np.lexsort((own[keep], -score))][:k].tolist()
            skip = np.union1d(own, left_out) if repeat and new_only else left_out if new_only else own
            rest = order[: k + len(skip)]
            rest = rest[~np.isin(rest, skip)][: k - len(head)]
            out.append([items[j] for j in (*head, *rest.tolist())])
        return out

    return rank


def ease_items(seen: sp.csr_matrix, most: int = EASE_MAX_ITEMS) -> npt.NDArray[np.int64]:
    """The columns EASE is fitted on: every item, or the ``most`` bought by the most customers (ties: the
    lower column), in column order."""
    n = seen.shape[1]
    if n <= most:
        return np.arange(n, dtype=np.int64)
    pop = np.asarray((seen > 0).sum(0)).ravel()
    return np.sort(np.argsort(-pop, kind="stable")[:most]).astype(np.int64)


def _ease(seen: sp.csr_matrix, most: int = EASE_MAX_ITEMS) -> Callable[[list[int]], npt.NDArray[np.float64]]:
    """EASE scores of customer rows of ``seen``; the item-item weights are fitted on first use, on
    ``ease_items`` (items left out score -inf: below every item EASE scored)."""
    fitted: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]] = []

    def scores(rows: list[int]) -> npt.NDArray[np.float64]:
        if not fitted:
            keep = ease_items(seen, most)
            # The whole matrix as it is when every item is kept (UCI's whole catalog).
            part = seen if len(keep) == seen.shape[1] else seen[:, keep]
            g = np.asarray((part.T @ part).todense(), dtype=np.float64)
            # Symmetric: a Fortran-ordered gram's transpose is the same matrix in C order, which the scoring's
            # sparse products read without a copy of the whole matrix per call.
            g = g if g.flags.c_contiguous else g.T
            g[np.diag_indices_from(g)] += EASE_L2
            # The peer's inverse, by Cholesky in place (the same to rounding; half the work, no copies).
            inv = spd_inverse(g)
            inv /= -np.diag(inv).copy()  # B = -P / diag(P) in place: one n^2 matrix less at the peak
            np.fill_diagonal(inv, 0.0)
            fitted.append((keep, inv))
        keep, b = fitted[0]
        if len(keep) == seen.shape[1]:
            return np.asarray(seen[rows] @ b, dtype=np.float64)
        out = np.full((len(rows), seen.shape[1]), -np.inf)
        out[:, keep] = seen[rows][:, keep] @ b
        return out

    return scores


class RankingEval:
    """``run()`` → ``ranking.<ranker>.<variant>.<metric>@<k>`` plus beyond-accuracy figures.

    ``text`` is ``"embed"`` (item descriptions through the bundled sentence-transformer, cached under
    ``cache_dir``), a mapping of item id → vector, or ``None`` for no text signal. The split is at ``cut``
    (the reference 2011-09-09 by default) or, with ``holdout_days``, the last that many days of the data.

    Earlier history: read from the UCI parquet, the purchases of ``earlier`` (Online Retail II's 2009-2010
    year by default; ``None`` for none) before Online Retail begins are history the ranker learns from.
    With a purchase frame, ``start`` says where the protocol's period begins (rows before it are earlier
    history). Either way the protocol's customers, catalog and relevant items come from its period alone.
    """

    def __init__(
        self,
        purchases: pd.DataFrame | None = None,
        *,
        parquet: Path = DEFAULT_PARQUET,
        earlier: Path | None = DEFAULT_EARLIER_PARQUET,
        start: pd.Timestamp | str | None = None,
        cut: pd.Timestamp | str | None = None,
        holdout_days: int | None = None,
        text: str | Mapping[str, npt.NDArray[np.floating[Any]]] | None = "embed",
        cache_dir: Path = Path("var/cache"),
        seed: int = 0,
        ranker_params: Mapping[str, int] | None = None,
        ks: Sequence[int] = DEFAULT_KS,
        references: Sequence[str] = ("popularity", "repeat", "itemknn", "ease"),
        out_dir: Path | None = None,
    ) -> None:
        if isinstance(text, str) and text != "embed":
            raise DataError(f"text must be 'embed', a mapping or None, got {text!r}")
        self.purchases = purchases
        self.parquet = parquet
        self.earlier = earlier
        self.start = start
        if cut is not None and holdout_days is not None:
            raise DataError("give a cut or holdout days, not both")
        if holdout_days is not None and holdout_days < 1:
            raise DataError(f"holdout days must be >= 1, got {holdout_days}")
        self.cut = DEFAULT_CUT if cut is None and holdout_days is None else cut
        self.holdout_days = holdout_days
        self.split: Split | None = None
        self.text = text
        self.cache_dir = cache_dir
        self.seed = seed
        self.ranker_params = dict(ranker_params or {})
        self.ks = tuple(ks)
        self.references = tuple(references)
        self.out_dir = out_dir
        self.timings: dict[str, float] = {}
        self.ranker: Ranker | None = None
        # Each ranker's Recall@10 and NDCG@10 customer by customer, for the paired interval against the best
        # reference (``ratio_interval``): name -> "variant.metric" -> values in the split's customer order.
        self._each: dict[str, dict[str, npt.NDArray[np.float64]]] = {}

    def _load(self) -> tuple[pd.DataFrame, dict[str, npt.NDArray[np.floating[Any]]] | None]:
        raw: pd.DataFrame | None = None
        if self.purchases is None:
            if not self.parquet.exists():
                raise DataError(
                    f"{self.parquet} does not exist", hint="the UCI Online Retail parquet is needed"
                )
            raw = read_uci(self.parquet)
            purchases = purchases_from_uci(raw)
            if self.earlier is not None:
                if not self.earlier.exists():
                    raise DataError(
                        f"{self.earlier} does not exist",
                        hint="pass the Online Retail II 2009-2010 parquet, or no earlier history",
                    )
                early_raw = read_uci(self.earlier)
                purchases = purchases_from_uci(join_years([early_raw, raw]))
                self.start = raw["InvoiceDate"].min().normalize()  # the protocol's period begins here
                # Items sold only in the earlier year are described by it; the later file wins for the rest.
                raw = pd.concat([early_raw[~early_raw["StockCode"].isin(raw["StockCode"])], raw])
        else:
            purchases = self.purchases
        if self.text is None:
            return purchases, None
        if not isinstance(self.text, str):
            return purchases, dict(self.text)
        if raw is None:
            raise DataError("text='embed' needs the UCI parquet for item descriptions; pass vectors instead")
        texts = uci_item_texts(raw)
        ids = sorted(texts)
        vectors = Embedder(cache_dir=self.cache_dir).encode([texts[i] for i in ids])
        return purchases, dict(zip(ids, vectors, strict=True))

    def run(self) -> dict[str, float]:
        unknown = [n for n in self.references if n not in (*REFERENCES, *_OVER_EARLIER)]
        if unknown:
            raise DataError(
                f"unknown reference ranker {unknown[0]!r}",
                hint=f"choose from {sorted((*REFERENCES, *_OVER_EARLIER))}",
            )
        t0 = time.perf_counter()
        purchases, vectors = self._load()
        cut = holdout_cut(purchases, self.holdout_days) if self.holdout_days is not None else self.cut
        assert cut is not None
        split = temporal_split(purchases, cut, start=self.start)
        self.split = split
        self.timings["load_s"] = time.perf_counter() - t0
        # What would stop the eval is said before the fit, not after it.
        over_earlier = [n for n in self.references if n in _OVER_EARLIER]
        if over_earlier and split.earlier.empty:
            raise DataError(
                f"the reference {over_earlier[0]!r} ranks over earlier history, and this split has none",
                hint="give the eval a start (or the UCI earlier year) or leave it out",
            )
        for variant in VARIANTS:
            if not split.evaluated(variant):
                raise DataError(
                    f"no customer to evaluate under {variant!r}", hint="the test period has no purchases"
                )
        kmax = max(max(self.ks), 10)
        # The references need nothing of Tailor's fit: they are ranked on a thread of their own beside it (the
        # fit leaves part of a core idle, and on Ta-Feng they are a third of the eval's time). Their timings
        # overlap the fit's.
        stop = threading.Event()
        with ThreadPoolExecutor(1, thread_name_prefix="tailor-references") as pool:
            scored_refs = pool.submit(self._score_references, split, kmax, stop)
            try:
                t0 = time.perf_counter()
                params = {"seed": self.seed, **self.ranker_params}
                ranker = Ranker(**params).fit(split.history, vectors, now=split.cut)
                self.ranker = ranker
                self.timings["fit_s"] = time.perf_counter() - t0
                # Items sold only in the earlier history are off the protocol's catalog (no longer on sale).
                only = split.catalog if not split.earlier.empty else None
                t0 = time.perf_counter()

                def tailor(customers: Sequence[str], new: bool) -> list[list[str]]:
                    # Two halves on two threads: nothing else is left to run by now, and ranking is mostly
                    # numpy and LightGBM, outside the GIL. The lists are the same as from one call.
                    # Cut at a block boundary: each block of customers is then the one a single call scores.
                    block = ranker._chunk()
                    half = -(-((len(customers) + 1) // 2) // block) * block
                    parts = [customers[:half], customers[half:]]
                    with ThreadPoolExecutor(2, thread_name_prefix="tailor-rank") as halves:
                        ranked = list(
                            halves.map(lambda cs: ranker.rank(cs, new_only=new, k=kmax, only=only), parts)
                        )
                    return [*ranked[0], *ranked[1]]

                scored = {"tailor": self._score(split, tailor)}
                self.timings["tailor_s"] = time.perf_counter() - t0
            except BaseException:
                stop.set()
                raise
            scored.update(scored_refs.result())
        # The label window the fit chose (shorter than configured on a young store) beside the figures it
        # produced: a --compare then shows when a figure moved because the window did.
        fit = ranker.fit_report
        out: dict[str, float] = {
            f"ranking.fit.{key}": float(fit[key]) for key in ("label_days", "windows_used", "history_days")
        }
        pop = split.train.groupby("item_id")["customer_id"].nunique()
        item_vecs = vectors or ranker.collab_vectors()
        for name, (metrics, lists) in scored.items():
            out.update(metrics)
            for key, value in beyond_accuracy(lists, split, pop, item_vecs).items():
                out[f"ranking.{name}.all.{key}@10"] = value
        rankers = list(scored)
        out.update(best_reference(out, [n for n in rankers if n != "tailor"]))
        out.update(ratio_interval(out, self._each, seed=self.seed))
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "ranking.json").write_text(json.dumps(out, indent=1, sort_keys=True))
        return out

    def _score(self, split: Split, rank_fn: RankFn, name: str = "tailor") -> tuple[dict[str, float], Lists]:
        """One ranker's figures on both variants, and its top-10 lists of the ``all`` variant."""
        rank = _remembered(rank_fn)
        out: dict[str, float] = {}
        for variant in VARIANTS:
            if name.startswith("repeat") and variant == "new-only":
                continue  # repeating is all it does
            each = evaluate_each(split, rank, variant, ks=self.ks)
            out[f"ranking.customers.{variant}"] = float(len(split.evaluated(variant)))
            for key, values in each.items():
                out[f"ranking.{name}.{variant}.{key}"] = sum(values) / len(values)
            self._each.setdefault(name, {}).update(
                {f"{variant}.{key}": np.asarray(each[key]) for key in _PAIRED if key in each}
            )
        # The lists the "all" variant was scored on (remembered, not ranked again).
        return out, [list(x)[:10] for x in rank(split.evaluated("all"), False)]

    def _score_references(
        self, split: Split, kmax: int, stop: threading.Event
    ) -> dict[str, tuple[dict[str, float], Lists]]:
        refs = reference_rankers(split, kmax)
        # The same-data baselines come with the references they extend (repeat_full always: it is cheap).
        full = [f"{n}_full" for n in ("repeat", *(("ease",) if "ease" in self.references else ()))]
        out: dict[str, tuple[dict[str, float], Lists]] = {}
        for name in dict.fromkeys((*self.references, *(n for n in full if n in refs))):
            if stop.is_set():
                break  # the fit failed: the eval stops
            t0 = time.perf_counter()
            out[name] = self._score(split, refs[name], name)
            self.timings[f"{name}_s"] = time.perf_counter() - t0
        return out

    def artifacts(self) -> dict[str, Any]:
        """After ``run()``: the fit's report (label window used and why), for report.json and the HTML."""
        if self.ranker is None:
            return {}
        return {
            "ranking_fit": {
                "kind": "fit",
                "title": "Ranking: how Tailor's ranker was fitted",
                **self.ranker.fit_report,
            }
        }


def _remembered(rank: RankFn) -> RankFn:
    """``rank`` answering a call it has answered before from memory: the beyond-accuracy figures read the
    same lists the ``all`` variant was scored on, which was a third of every ranker's time on Ta-Feng."""
    memo: dict[tuple[str, ...], list[list[str]]] = {}

    def again(customers: Sequence[str], new_only: bool) -> Sequence[Sequence[str]]:
        if new_only:  # ranked once: nothing to remember
            return rank(customers, new_only)
        key = tuple(customers)
        if key not in memo:
            memo[key] = [list(x) for x in rank(customers, new_only)]
        return memo[key]

    return again


_ACCURACY = ("recall@", "ndcg@", "hit@", "mrr@")


def best_reference(metrics: Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
    """``ranking.best_reference.<variant>.<metric>``: the best any reference ranker of the run scored, so a
    gate can hold Tailor to whichever reference is strongest on the store at hand (repeat history on a
    grocery, EASE on new items of a gift shop) instead of one named for the demo store."""
    best: dict[str, float] = {}
    for key, value in metrics.items():
        parts = key.split(".")
        if len(parts) != 4 or parts[1] not in names or not parts[3].startswith(_ACCURACY):
            continue
        name = f"ranking.best_reference.{parts[2]}.{parts[3]}"
        best[name] = max(best.get(name, value), value)
    return best


# The figures the ratio to the best reference gets a paired interval for.
_PAIRED = ("recall@10", "ndcg@10")
_BOOTSTRAP_DRAWS = 1000


def ratio_interval(
    metrics: Mapping[str, float],
    each: Mapping[str, Mapping[str, npt.NDArray[np.float64]]],
    *,
    seed: int = 0,
    draws: int = _BOOTSTRAP_DRAWS,
) -> dict[str, float]:
    """Tailor's ratio to the best reference on each paired figure, with a 95% interval: the customers are
    drawn again with replacement (a paired bootstrap, seeded) and both rankers are scored on the same draw,
    so the interval says how far the ratio could move on another month's customers. A ratio of x0.998 whose
    interval is [0.97, 1.03] is a tie, not a loss; one whose interval ends below 1 is a loss.

    Keys ``ranking.tailor_vs_best.<variant>.<metric>.`` then ``ratio``, ``low`` and ``high`` (the interval)
    and ``paired_se`` (the standard error of the paired per-customer difference), against the reference
    with the best mean, ties to the first in the run's order. Five parts, so nothing that reads
    ``ranking.<ranker>.<variant>.<metric>`` takes them for a ranker."""
    out: dict[str, float] = {}
    mine = each.get("tailor", {})
    rng = np.random.default_rng([seed, 95])
    for key in sorted(mine):
        variant, metric = key.split(".", 1)
        refs = {n: v[key] for n, v in each.items() if n != "tailor" and key in v}
        if not refs:
            continue
        best = max(refs, key=lambda n: metrics.get(f"ranking.{n}.{variant}.{metric}", float("-inf")))
        a, b = mine[key], refs[best]
        if len(a) != len(b) or not len(a) or not b.mean():
            continue
        ratios = np.empty(draws)
        # 50 draws at a time: all of Ta-Feng's 13,000 customers x 1,000 draws at once would be 100 MB.
        for lo in range(0, draws, 50):
            idx = rng.integers(0, len(a), size=(min(50, draws - lo), len(a)))
            ratios[lo : lo + len(idx)] = a[idx].mean(axis=1) / np.maximum(b[idx].mean(axis=1), 1e-12)
        diff = a - b
        se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
        at = f"ranking.tailor_vs_best.{key}"
        out[f"{at}.ratio"] = float(a.mean() / b.mean())
        out[f"{at}.low"] = float(np.percentile(ratios, 2.5))
        out[f"{at}.high"] = float(np.percentile(ratios, 97.5))
        out[f"{at}.paired_se"] = se
    return out


def beyond_accuracy(
    lists: Sequence[Sequence[str]],
    split: Split,
    pop: pd.Series,
    vectors: Mapping[str, npt.NDArray[np.floating[Any]]],
) -> dict[str, float]:
    """Coverage, intra-list diversity, novelty and popularity bias of top-k lists."""
    shown = {x for lst in lists for x in lst}
    n_cust = max(int(split.train["customer_id"].nunique()), 1)
    # Plain dicts: a Series lookup per listed item was most of this function's time.
    percentile = {str(k): float(v) for k, v in pop.rank(pct=True).items()}
    buyers = {str(k): float(v) for k, v in pop.items()}
    novelty, bias, diversity = [], [], []
    for lst in lists:
        if not lst:
            continue
        novelty.append(float(np.mean([-np.log2(max(buyers.get(x, 0.0), 1.0) / n_cust) for x in lst])))
        bias.append(float(np.mean([percentile.get(x, 0.0) for x in lst])))
        vecs = [np.asarray(vectors[x], dtype=np.float64) for x in lst if x in vectors]
        if len(vecs) >= 2:
            m = np.stack(vecs)
            m = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)
            sims = m @ m.T
            n = len(vecs)
            diversity.append(1.0 - float((sims.sum() - np.trace(sims)) / (n * (n - 1))))
    return {
        "coverage": len(shown) / max(len(split.catalog), 1),
        "diversity": float(np.mean(diversity)) if diversity else 0.0,
        "novelty": float(np.mean(novelty)) if novelty else 0.0,
        "popularity_bias": float(np.mean(bias)) if bias else 0.0,
    }
