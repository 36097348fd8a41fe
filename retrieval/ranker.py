"""The learned ranker: gradient-boosted trees fuse repeat, collaborative, text and trend signals.

How it learns without peeking: ``fit(purchases, ..., now=T)`` holds out the last ``label_days`` before ``T``
as a label window, builds features from what came before that window, and trains on "did the customer buy
this candidate in the window". Then it refits every feature source (item statistics, neighbours, factors) on
all purchases before ``T`` and serves with those. Two models are trained: one for all candidates, one for
items the customer never bought (the ``new-only`` use: discovery). A label window trains on at most
``_MAX_LABEL_CUSTOMERS`` of its customers, a seeded draw, so a large store's training rows stay bounded.

A young store's history can be shorter than the configured window and the past it needs: the fit then
shortens its label window to fit the history (``label_window``) and says so in ``fit_report``.

What it serves is chosen on the store's own latest windows (``validate`` of them, two by default): beside the
final fit, each window on a thread of its own, a ranker fitted on the history before the window ranks it (at
most ``_MAX_VALIDATION_CUSTOMERS`` of its customers) with each way of scoring the candidates (the trees; for
new items also the all-items trees with past items left out; and the reference scorers repeat history,
popularity and EASE), and each variant serves the one with the best Recall@10 over every customer of every
window (``SCORERS``), unless a learned scorer leads within one standard error. On the demo store the trees
win; on a store where they lose to a plain reference, the reference is served, and the fit says so
(``fit_report["serving"]``, ``fit_report["validation"]``).

The trees are LightGBM boosters, saved in LightGBM's own text model format inside the npz, so a saved ranker
loads without pickle.

One module, over 600 lines, on purpose: fit, validation, scoring and save/load share the fitted state's
layout (item index, blocks, caches); the feature code it shares with serving is ``retrieval.features``.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import threading
import uuid
import zipfile
import zlib
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from retrieval.features import (
    DAY,
    FEATURES,
    SOURCES,
    CandidateLimits,
    Candidates,
    CollabModel,
    History,
    ItemStats,
    build_candidates,
    fit_collab,
    item_stats,
    to_day,
)
from tailor.core.errors import DataError, NotFoundError
from tailor.core.utc import utc_timestamp
from tailor.data.frame import check_frame

if TYPE_CHECKING:
    import lightgbm as lgb

__all__ = ["MIN_LABEL_DAYS", "SCORERS", "Ranker", "ScoredItem", "TreeEnsemble", "label_window"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
# 2: the trees are LightGBM text models (format 1 held scikit-learn's trees as node arrays).
_FORMAT = 2
# Per variant: feature blocks, label blocks, sample-weight blocks.
_Rows = dict[str, tuple[list[F32], list[npt.NDArray[np.int8]], list[F64]]]


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    score: float
    sources: tuple[str, ...]
    features: Mapping[str, float]


# One thread for the trees: LightGBM's results do not depend on it (``deterministic`` with row-wise
# histograms gives the same model string on 1 thread as on 2), and on a machine whose cores are shared an
# OpenMP team that spins waiting for busy cores made a 200-tree fit ten times slower (9 s -> 95 s).
_TREE_THREADS = 1


@dataclass(frozen=True)
class TreeEnsemble:
    """A fitted binary LightGBM booster, kept and saved in LightGBM's own text model format (no pickle)."""

    booster: lgb.Booster

    def predict(self, x: npt.NDArray[np.floating[Any]]) -> F64:
        """Raw scores (log-odds)."""
        if len(x) == 0:
            return np.zeros(0, dtype=np.float64)
        out = self.booster.predict(np.asarray(x), raw_score=True, num_threads=_TREE_THREADS)
        return np.asarray(out, dtype=np.float64)

    def to_text(self) -> str:
        return str(self.booster.model_to_string())

    @classmethod
    def from_text(cls, text: str, *, source: str = "the model text") -> TreeEnsemble:
        import lightgbm as lgb

        try:
            booster = lgb.Booster(model_str=text)
        except lgb.basic.LightGBMError as exc:
            raise DataError(
                f"cannot read the trees in {source}: {exc}", hint="fit and save it again"
            ) from exc
        if booster.feature_name() != list(FEATURES):
            raise DataError(
                f"the trees in {source} use other features than this version's ({booster.num_feature()})",
                hint="fit and save it again",
            )
        return cls(booster)


# How a variant's candidates may be scored: the variant's own trees, the all-items trees (for new items:
# "the all list with her past items removed"), or one candidate feature as a reference ranker does (repeat
# history: orders of the item; popularity: its buyers; EASE: its item-item score). Ties go to popularity.
SCORERS: dict[str, tuple[str, ...]] = {
    "all": ("trees", "repeat", "popularity", "ease"),
    "new": ("trees", "trees_all", "popularity", "ease"),
}
_FEATURE_SCORERS = {"repeat": "orders", "popularity": "i_pop_log", "ease": "s_ease"}
# The scorers the fit learns; the others are references, served on a lead of theirs or a tie.
_LEARNED = frozenset({"trees", "trees_all"})
_F = {name: i for i, name in enumerate(FEATURES)}
_VALIDATION_K = 10
# Fewer customers than this in the validation window make its figures noise: the trees are kept.
_MIN_VALIDATION_CUSTOMERS = 30
# A label window trains on at most this many of its customers, a seeded draw (UCI's windows hold about
# 2,000): the rows of every candidate of every customer are the fit's largest arrays and most of its time.
# On Ta-Feng (about 12,000 a window) the draw halves both; the trees are what such a sample teaches as well.
_MAX_LABEL_CUSTOMERS = 6000
# At most this many customers of a window are ranked, a seeded draw of them (all of UCI's ~2,000 a window):
# ranking is most of a window's cost, and the choice's standard error already says what fewer customers
# leave unsure. Ta-Feng's windows hold 8,000 to 15,000 customers a variant.
_MAX_VALIDATION_CUSTOMERS = 4000


def _seeded_draw(values: Sequence[Any] | npt.NDArray[Any], most: int, key: Sequence[int]) -> npt.NDArray[Any]:
    """At most ``most`` of ``values``, drawn without replacement by a generator seeded with ``key``, sorted:
    the same values for the same key, so a capped fit is as repeatable as an uncapped one."""
    arr = np.asarray(values)
    if len(arr) <= most:
        return np.sort(arr)
    return np.sort(np.random.default_rng(list(key)).choice(arr, most, replace=False))


_STOPPED = "the fit it was validating for stopped"


class _Stopped(Exception):
    """A validation sub-fit told to stop: the fit it was validating for failed."""


# A label window of less than a week would miss the weekly shop of anyone who shops weekly.
MIN_LABEL_DAYS = 7


def label_window(configured: int, history_days: int, min_past_days: int) -> tuple[int, str]:
    """The label window a fit uses on ``history_days`` of purchases before now, and why.

    The configured window stands while the history holds ``min_past_days`` of past before it (the rule
    earlier windows follow), so any history of ``configured + min_past_days`` days or more (the UCI store's
    282 or 647 before its reference cut) fits exactly as configured. On a shorter one the window shrinks
    so that ``min_past_days`` of past stay before it, but to no less than a third of the history (whatever
    is left is at least twice the window: features need a past to be built from) and never below
    ``MIN_LABEL_DAYS``. On Ta-Feng (92, 60): 91 days before its eval cut give 31 days, the full four months
    before 2001-03-01 give 59; eight weeks (55 days) give 18.
    """
    if history_days - min_past_days >= configured:
        return configured, (
            f"configured: {history_days} days of history hold the {configured}-day window and "
            f"{min_past_days} days of past before it"
        )
    days = max(MIN_LABEL_DAYS, history_days - min_past_days, history_days // 3)
    return days, (
        f"shortened from {configured} days: {history_days} days of history are too few for the configured "
        f"window and {min_past_days} days of past before it; the window is max({MIN_LABEL_DAYS}, history - "
        f"{min_past_days}, history / 3) days"
    )


def _train_trees(
    x: F32 | Sequence[F32], y: npt.NDArray[np.int8], w: F64 | None, *, seed: int, max_iter: int
) -> TreeEnsemble:
    """``x``: the feature rows, or their blocks in order (LightGBM bins a list of blocks as it would their
    concatenation, the same model to the byte, without the concatenated copy)."""
    if len(np.unique(y)) < 2:
        raise DataError(
            "the label window has no positive (or no negative) candidates",
            hint="fit on more history, or shorten label_days",
        )
    import lightgbm as lgb

    # The capacity of the HistGradientBoostingClassifier these replace (200 rounds at 0.06, 31 leaves, 50
    # rows a leaf, L2 1.0, 255 bins, no early stopping), so the UCI figures were re-measured, not re-tuned.
    params = {
        "objective": "binary",
        "learning_rate": 0.06,
        "num_leaves": 31,
        "max_depth": -1,
        "min_data_in_leaf": 50,
        "min_sum_hessian_in_leaf": 1e-3,
        "lambda_l2": 1.0,
        "max_bin": 255,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": _TREE_THREADS,
        "verbosity": -1,
    }
    blocks = [b for b in x if len(b)] if isinstance(x, Sequence) else x
    data = lgb.Dataset(blocks, label=y, weight=w, feature_name=list(FEATURES), free_raw_data=True)
    return TreeEnsemble(lgb.train(params, data, num_boost_round=max_iter))


def _recall(ranked: Sequence[str], relevant: set[str]) -> float:
    # As the ranking protocol counts it: hits in the top k over the most that could be there.
    return sum(1 for x in ranked[:_VALIDATION_K] if x in relevant) / min(len(relevant), _VALIDATION_K)


def _validate_window(
    params: Mapping[str, int],
    frame: pd.DataFrame,
    vectors: Mapping[str, npt.NDArray[np.floating[Any]]] | None,
    start: pd.Timestamp,
    end: pd.Timestamp,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """One validation window, ``start`` to ``end``: a ranker fitted on the history before ``start`` ranks
    the window's purchases with every scorer of ``SCORERS`` (at most ``_MAX_VALIDATION_CUSTOMERS`` of its
    customers a variant, drawn with the fit's seed). Returns each variant's per-customer Recall@10
    by scorer (``"scores"``, not reported) and the window's figures, or why it could not be validated on."""
    report: dict[str, Any] = {"window_start": start.isoformat(), "window_days": int((end - start).days)}
    before = frame[frame["timestamp"] < start]
    sub = Ranker(**{**params, "validate": 0})
    sub._stop = stop
    try:
        sub.fit(before, vectors, now=start)
        sub._check_stop()  # the fit may have stopped while its last stage ran: nothing is ranked then
    except _Stopped:
        return {**report, "skipped": _STOPPED}
    except DataError as exc:
        return {**report, "skipped": f"the history before the window cannot be fitted: {exc.message}"}
    window = frame[(frame["timestamp"] >= start) & (frame["timestamp"] < end)]
    window = window[window["customer_id"].isin(sub.customer_index) & window["item_id"].isin(sub.item_index)]
    bought = window.groupby("customer_id")["item_id"].agg(set)
    past = before.groupby("customer_id")["item_id"].agg(set)
    scores: dict[str, dict[str, list[float]]] = {}
    customers: dict[str, int] = {}
    drawn: dict[str, int] = {}  # the window's customers, before the draw
    figures: dict[str, dict[str, float]] = {}
    for variant, new in (("all", False), ("new", True)):
        relevant = {str(c): (items - past.get(c, set())) if new else items for c, items in bought.items()}
        evaluated = sorted(c for c, items in relevant.items() if items)
        drawn[variant] = len(evaluated)
        key = (params["seed"], int(start.timestamp()), len(variant))
        evaluated = _seeded_draw(evaluated, _MAX_VALIDATION_CUSTOMERS, key).tolist()
        customers[variant] = len(evaluated)
        each = sub.rank_each(evaluated, new_only=new, k=_VALIDATION_K, hows=SCORERS[variant])
        scores[variant] = {
            how: [_recall(lst, relevant[c]) for c, lst in zip(evaluated, each[how], strict=True)]
            for how in SCORERS[variant]
        }
        if evaluated:
            figures[variant] = {h: round(float(np.mean(v)), 4) for h, v in scores[variant].items()}
    if drawn != customers:
        report["drawn_from"] = drawn
    return {**report, "customers": customers, "recall@10": figures, "scores": scores}


def _choose_serving(
    params: Mapping[str, int],
    frame: pd.DataFrame,
    vectors: Mapping[str, npt.NDArray[np.floating[Any]]] | None,
    now: pd.Timestamp,
    label_days: int,
    stop: threading.Event | None = None,
) -> tuple[dict[str, str], dict[str, Any]]:
    """What each variant serves, chosen on the latest ``params["validate"]`` windows of ``label_days``
    before ``now``, each ranked by a ranker fitted on the history before it (a rolling origin): the best
    Recall@10 over every customer of every window wins, unless it is a learned scorer (``_LEARNED``) whose
    lead over the best reference is within one standard error of the paired per-customer differences,
    when the reference is served (the one-standard-error rule: the simpler model, unless the other is
    clearly better). One window can mislead: on Ta-Feng the last one before February is the month of
    the lunar new year, where the trees led, and they lost the month after; the window before it says
    otherwise. Returns the choice and the figures behind it (or why there was no choice to make).

    ``stop``, once set (the main fit failed), skips the windows not yet begun and the ranking of the one
    under way."""
    trees = {"all": "trees", "new": "trees"}

    def window(j: int) -> dict[str, Any]:
        start = now - pd.Timedelta(days=label_days * (j + 1))
        if stop is not None and stop.is_set():
            return {"window_start": start.isoformat(), "window_days": label_days, "skipped": _STOPPED}
        end = now - pd.Timedelta(days=label_days * j)
        return _validate_window(params, frame, vectors, start, end, stop)

    # The older windows each on a thread of their own, the latest on this one: the windows are independent
    # fits, and the main fit finishes well before one thread would have done them all (on Ta-Feng it
    # waited 57 s of 157).
    n = params["validate"]
    # Each window is a whole fit, at its peak a dense EASE inverse and its candidate rows: no more at once
    # than the machine has cores beside the main fit's.
    workers = max(1, min(n - 1, (os.cpu_count() or 2) - 1))
    stop = stop if stop is not None else threading.Event()
    with ThreadPoolExecutor(workers, thread_name_prefix="tailor-validate-older") as older:
        later = [older.submit(window, j) for j in range(1, n)]
        try:
            windows = [window(0), *(f.result() for f in later)] if n else []
        except BaseException:
            stop.set()  # the older windows stop at their next check rather than fit on for nothing
            raise
    used = [w for w in windows if "skipped" not in w]
    # What the pooled figures span: from the oldest window validated on to ``now``.
    report: dict[str, Any] = {
        "window_start": (used or windows)[-1 if used else 0]["window_start"],
        "window_days": label_days * max(1, len(used)),
        "windows": [{k: v for k, v in w.items() if k != "scores"} for w in windows],
    }
    if not used:
        return trees, {**report, "skipped": windows[0]["skipped"]}
    chosen: dict[str, str] = {}
    figures: dict[str, dict[str, float]] = {}
    customers: dict[str, int] = {}
    leads: dict[str, dict[str, Any]] = {}
    for variant in ("all", "new"):
        pooled = {how: [x for w in used for x in w["scores"][variant][how]] for how in SCORERS[variant]}
        customers[variant] = len(pooled["trees"])
        if customers[variant] < _MIN_VALIDATION_CUSTOMERS:
            chosen[variant] = "trees"
            continue
        scores = {how: float(np.mean(v)) for how, v in pooled.items()}
        figures[variant] = {h: round(v, 4) for h, v in scores.items()}
        best = max(SCORERS[variant], key=lambda h: (scores[h], h in _LEARNED))
        chosen[variant] = best
        if best in _LEARNED:
            reference = max((h for h in SCORERS[variant] if h not in _LEARNED), key=lambda h: scores[h])
            diff = np.asarray(pooled[best]) - np.asarray(pooled[reference])
            se = float(diff.std(ddof=1)) / np.sqrt(len(diff))
            leads[variant] = {"over": reference, "lead": round(float(diff.mean()), 4), "se": round(se, 4)}
            if diff.mean() <= se:
                chosen[variant] = reference
    report.update({"customers": customers, "recall@10": figures, "lead": leads})
    if any(n < _MIN_VALIDATION_CUSTOMERS for n in customers.values()):
        report["note"] = (
            f"a variant with fewer than {_MIN_VALIDATION_CUSTOMERS} customers in the windows keeps the trees"
        )
    return chosen, report


class Ranker:
    """Fit on purchases before ``now``; score any customer's candidates with per-source scores."""

    def __init__(
        self,
        *,
        label_days: int = 92,
        windows: int = 4,
        min_past_days: int = 60,
        weighted: int = 1,
        n_collab: int = 100,
        n_text: int = 30,
        n_trend: int = 30,
        n_repeat: int = 300,
        n_popular: int = 30,
        max_iter: int = 200,
        seed: int = 0,
        neighbours: int = 100,
        dims: int = 48,
        ease_items: int = 6000,
        ease_lambda: int = 600,
        validate: int = 2,
    ) -> None:
        if label_days < MIN_LABEL_DAYS:
            raise DataError(f"label_days must be >= {MIN_LABEL_DAYS}, got {label_days}")
        if windows < 1:
            raise DataError(f"windows must be >= 1, got {windows}")
        if ease_lambda <= 0:
            raise DataError(f"ease_lambda must be > 0 (EASE's L2 penalty), got {ease_lambda}")
        if min_past_days < 1:
            raise DataError(f"min_past_days must be >= 1, got {min_past_days}")
        if validate < 0:
            raise DataError(
                f"validate must be >= 0 (the validation windows; 0 serves the trees), got {validate}"
            )
        self.limits = CandidateLimits(
            collab=n_collab, text=n_text, trend=n_trend, repeat=n_repeat, popular=n_popular
        )
        self.params: dict[str, int] = {
            "label_days": label_days,
            "windows": windows,
            "min_past_days": min_past_days,
            "weighted": weighted,
            "n_collab": n_collab,
            "n_text": n_text,
            "n_trend": n_trend,
            "n_repeat": n_repeat,
            "n_popular": n_popular,
            "max_iter": max_iter,
            "seed": seed,
            "neighbours": neighbours,
            "dims": dims,
            "ease_items": ease_items,
            "ease_lambda": ease_lambda,
            "validate": validate,
        }
        self.item_ids: list[str] = []
        self.item_index: dict[str, int] = {}
        self.customer_ids: list[str] = []
        self.customer_index: dict[str, int] = {}
        self.now_day = 0.0
        self.windows_used = 0  # label windows the last fit trained on
        self.label_customers: list[int] = []  # the customers each of them trained on
        self.label_days_used = label_days  # the label window the last fit used (see ``label_window``)
        self.label_reason = ""
        self.history_days = 0  # whole days from the first purchase fitted on to now
        # What each variant serves (see ``SCORERS``) and the validation figures that chose it.
        self.serving: dict[str, str] = {"all": "trees", "new": "trees"}
        # The id of the save this ranker was last saved as or loaded from (``save``), None before either.
        self.save_id: str | None = None
        self.validation: dict[str, Any] = {}
        self._history: History | None = None
        self._items: ItemStats | None = None
        self._collab: CollabModel | None = None
        self._text: F32 | None = None
        self._all: TreeEnsemble | None = None
        self._new: TreeEnsemble | None = None
        self._knn_cols: Any = None
        # Set on a validation window's sub-fit: the main fit failed, and the sub-fit stops between its stages.
        self._stop: threading.Event | None = None

    # -- fitting ---------------------------------------------------------------------------------
    def fit(
        self,
        purchases: pd.DataFrame,
        item_text_vectors: Mapping[str, npt.NDArray[np.floating[Any]]] | None,
        *,
        now: datetime | pd.Timestamp | str,
    ) -> Ranker:
        """Fit on ``purchases`` before ``now``. A refit that fails leaves this ranker as it was: the fit runs
        on a shallow copy (``_fit`` gives every fitted field a new object), whose state replaces this one's
        only once it is whole."""
        fresh = copy.copy(self)
        fresh._knn_cols = None  # a cache of the fitted neighbours
        fresh._fit(purchases, item_text_vectors, now=now)
        self.__dict__.update(fresh.__dict__)
        return self

    def _fit(
        self,
        purchases: pd.DataFrame,
        item_text_vectors: Mapping[str, npt.NDArray[np.floating[Any]]] | None,
        *,
        now: datetime | pd.Timestamp | str,
    ) -> None:
        now_ts = utc_timestamp(now)
        frame = check_frame(purchases)
        frame = frame[frame["timestamp"] < now_ts]
        if frame.empty:
            raise DataError(f"no purchases before {now_ts.isoformat()} to fit the ranker on")
        self.item_ids = sorted(frame["item_id"].unique().tolist())
        self.item_index = {x: i for i, x in enumerate(self.item_ids)}
        self.customer_ids = sorted(frame["customer_id"].unique().tolist())
        self.customer_index = {x: i for i, x in enumerate(self.customer_ids)}
        n_items = len(self.item_ids)
        history = History.from_frame(frame, self.customer_index, self.item_index)
        self.now_day = to_day(now_ts)
        self._text = self._text_matrix(item_text_vectors)
        p = self.params
        seed = p["seed"]
        self.history_days = int(self.now_day - float(history.day.min()))
        label_days, self.label_reason = label_window(p["label_days"], self.history_days, p["min_past_days"])
        self.label_days_used = label_days
        # The serving choice fits and ranks its windows on threads of their own while this fit builds its
        # label windows and trees: the heavy parts (numpy, scipy, LightGBM, torch) run outside the GIL, so on
        # two cores they overlap (Ta-Feng's fit used 183% of a core). A fit that fails tells them to stop
        # (each stops at its next window or ranking) and waits for them: no thread outlives its fit.
        validating = ThreadPoolExecutor(1, thread_name_prefix="tailor-validate") if p["validate"] else None
        stop = threading.Event()
        choice = (
            validating.submit(_choose_serving, p, frame, item_text_vectors, now_ts, label_days, stop)
            if validating is not None
            else None
        )
        try:
            data: _Rows = {"all": ([], [], []), "new": ([], [], [])}
            self.windows_used = 0
            self.label_customers = []
            for w in range(p["windows"]):
                self._check_stop()
                end = self.now_day - w * label_days
                self._window_rows(history.before(end), end - label_days, n_items, data, first=w == 0)
            if not data["all"][0]:
                newest = frame["timestamp"].max()
                idle = (now_ts - newest).days
                # Historical data read today is the usual cause: the clock, not the data, is what to change.
                hint = (
                    f"the newest purchase is from {newest.date()}, {idle} days before now ({now_ts.date()}):"
                    " for historical data set TAILOR_NOW to the day after it"
                    if idle >= label_days
                    else f"the history holds {self.history_days} days before now: fit on a longer one"
                )
                raise DataError(
                    f"fitting needs purchases both before and within the last {label_days} days before now"
                    f" (label window {self.label_reason})",
                    hint=hint,
                )
            models: dict[str, TreeEnsemble] = {}
            for v in ("all", "new"):
                self._check_stop()
                # Each variant's rows go as soon as its trees are trained: they are the fit's largest arrays.
                xs, ys, ws = data.pop(v)
                models[v] = _train_trees(
                    xs,
                    np.concatenate(ys),
                    np.concatenate(ws) if p["weighted"] else None,
                    seed=seed,
                    max_iter=p["max_iter"],
                )
                del xs, ys, ws
            self._check_stop()
            stats = item_stats(history, n_items, self.now_day)
            collab = self._fit_collab(history, n_items)
            serving, validation = (
                choice.result() if choice is not None else ({"all": "trees", "new": "trees"}, {})
            )
        except BaseException:
            stop.set()
            raise
        finally:
            if validating is not None:
                validating.shutdown(wait=True)
        self.serving, self.validation = serving, validation
        self._all, self._new = models["all"], models["new"]
        self._history = history
        self._items = stats
        self._collab = collab

    def _check_stop(self) -> None:
        if self._stop is not None and self._stop.is_set():
            raise _Stopped

    def _fit_collab(self, history: History, n_items: int) -> CollabModel:
        """``ease_items`` is the catalog size up to which EASE is exact (a dense inverse); a larger catalog
        keeps it exact on its ``ease_items`` most bought items and fits the other columns on each item's
        nearest items (``features.fit_collab``), every label window as the final fit.
        """
        p = self.params
        return fit_collab(
            history,
            n_items,
            neighbours=p["neighbours"],
            dims=p["dims"],
            seed=p["seed"],
            ease_dense_items=p["ease_items"],
            ease_lambda=float(p["ease_lambda"]),
        )

    def _chunk(self) -> int:
        # Dense customer×item score blocks: keep each block near 4M cells whatever the catalog size.
        return max(8, min(512, 4_000_000 // max(len(self.item_ids), 1)))

    def _window_rows(
        self,
        history: History,
        label_start: float,
        n_items: int,
        data: _Rows,
        *,
        first: bool = True,
    ) -> None:
        """Training rows of one label window: features strictly before it, labels inside it."""
        p = self.params
        past = history.before(label_start)
        window = history.day >= label_start
        if not len(past.day) or not window.any():
            return
        # A window whose past is only days long teaches what customers do with almost no history, which is not
        # what is served: earlier windows reach back only as far as the history holds ``min_past_days`` before
        # them. The first window always counts, so a short history can still be fitted.
        if not first and label_start - float(past.day.min()) < p["min_past_days"]:
            return
        self.windows_used += 1
        past_items = item_stats(past, n_items, label_start)
        past_collab = self._fit_collab(past, n_items)
        known = np.bincount(past.item, minlength=n_items) > 0
        label_keys = np.unique(history.cust[window] * n_items + history.item[window])
        rows = np.intersect1d(np.unique(past.cust), np.unique(history.cust[window]))
        rows = _seeded_draw(rows, _MAX_LABEL_CUSTOMERS, (p["seed"], int(label_start)))
        self.label_customers.append(len(rows))
        for variant in ("all", "new"):
            for start in range(0, len(rows), self._chunk()):
                chunk = rows[start : start + self._chunk()]
                cands = build_candidates(
                    past,
                    chunk,
                    now_day=label_start,
                    n_items=n_items,
                    items=past_items,
                    collab=past_collab,
                    text=self._text,
                    new_only=variant == "new",
                    allowed=known,
                    limits=self.limits,
                )
                keys = chunk[cands.row] * n_items + cands.item
                data[variant][0].append(cands.x)
                data[variant][1].append(np.isin(keys, label_keys).astype(np.int8))
                # Every customer counts once in the metric, however many candidates they have.
                per_customer = np.bincount(cands.row, minlength=len(chunk)).astype(np.float64)
                data[variant][2].append(1.0 / np.sqrt(np.maximum(per_customer[cands.row], 1.0)))

    def _text_matrix(self, vectors: Mapping[str, npt.NDArray[np.floating[Any]]] | None) -> F32 | None:
        if not vectors:
            return None
        dims = {np.asarray(v).shape for v in vectors.values()}
        if len(dims) != 1:
            raise DataError(f"item text vectors have mixed shapes {sorted(map(str, dims))}")
        (shape,) = dims
        if len(shape) != 1:
            raise DataError(f"item text vectors must be 1-d, got shape {shape}")
        out = np.zeros((len(self.item_ids), shape[0]), dtype=np.float32)
        for item_id, vec in vectors.items():
            i = self.item_index.get(str(item_id))
            if i is not None:
                v = np.asarray(vec, dtype=np.float32)
                out[i] = v / max(float(np.linalg.norm(v)), 1e-9)
        return out

    # -- state -----------------------------------------------------------------------------------
    def _require(self) -> tuple[History, ItemStats, CollabModel, TreeEnsemble, TreeEnsemble]:
        if (
            self._history is None
            or self._items is None
            or self._collab is None
            or self._all is None
            or self._new is None
        ):
            raise DataError("the ranker is not fitted", hint="call fit() or Ranker.load() first")
        return self._history, self._items, self._collab, self._all, self._new

    @property
    def fit_report(self) -> dict[str, Any]:
        """What the last fit did with its label windows: the window used and why, how many it trained on."""
        return {
            "label_days": self.label_days_used,
            "label_days_configured": self.params["label_days"],
            "label_window": self.label_reason,
            "windows_used": self.windows_used,
            "label_customers": list(self.label_customers),
            "history_days": self.history_days,
            "serving": dict(self.serving),
            "validation": self.validation,
        }

    @property
    def fitted_at(self) -> pd.Timestamp:
        return pd.Timestamp(self.now_day * DAY * 1e9, tz="UTC")

    def collab_vectors(self) -> dict[str, npt.NDArray[np.float32]]:
        """The collaborative vector of every item (L2-normalized), for Qdrant's ``collab`` named vector."""
        collab = self._require()[2]
        return {item: collab.factors[i] for i, item in enumerate(self.item_ids)}

    @property
    def text_matrix(self) -> F32 | None:
        return self._text

    @property
    def item_popularity(self) -> F64:
        return self._require()[1].pop

    # -- scoring ---------------------------------------------------------------------------------
    def _score_candidates(self, cands: Candidates, new_only: bool, how: str | None = None) -> F64:
        _, _, _, all_model, new_model = self._require()
        how = how or self.serving["new" if new_only else "all"]
        if how == "trees":
            return (new_model if new_only else all_model).predict(cands.x)
        if how == "trees_all":
            return all_model.predict(cands.x)
        feature = np.nan_to_num(cands.x[:, _F[_FEATURE_SCORERS[how]]].astype(np.float64), nan=0.0)
        return feature + 1e-6 * np.nan_to_num(cands.x[:, _F["i_pop_log"]].astype(np.float64), nan=0.0)

    def rank(
        self,
        customer_ids: Sequence[str],
        *,
        new_only: bool = False,
        k: int = 20,
        only: Collection[str] | None = None,
        how: str | None = None,
    ) -> list[list[str]]:
        """Top ``k`` item ids for customers known at fit time, scored as of the fit's ``now`` (for evals).

        ``only`` limits the lists to those items (the ones still on sale, say); by default any fitted item.
        ``how`` is one of ``SCORERS`` (by default what the variant serves).
        """
        return self.rank_each(customer_ids, new_only=new_only, k=k, only=only, hows=(how,))[how]

    def rank_each(
        self,
        customer_ids: Sequence[str],
        *,
        new_only: bool = False,
        k: int = 20,
        only: Collection[str] | None = None,
        hows: Sequence[str | None] = (None,),
    ) -> dict[str | None, list[list[str]]]:
        """``rank`` by each scorer of ``hows``, over candidates built once: building them is most of a
        ranking pass, and the serving choice ranks its window with every scorer."""
        history, items, collab, _, _ = self._require()
        allowed: npt.NDArray[np.bool_] | None = None
        if only is not None:
            allowed = np.zeros(len(self.item_ids), dtype=bool)
            allowed[[self.item_index[x] for x in only if x in self.item_index]] = True
        out: dict[str | None, list[list[str]]] = {how: [] for how in hows}
        ids = list(customer_ids)
        for start in range(0, len(ids), self._chunk()):
            chunk = ids[start : start + self._chunk()]
            rows = [self.customer_index.get(c, -1) for c in chunk]
            known = [r for r in rows if r >= 0]
            cands = build_candidates(
                history,
                known,
                now_day=self.now_day,
                n_items=len(self.item_ids),
                items=items,
                collab=collab,
                text=self._text,
                new_only=new_only,
                allowed=allowed,
                limits=self.limits,
            )
            for how in out:
                scores = self._score_candidates(cands, new_only, how)
                ranked = self._top_per_row(cands.row, cands.item, scores, k)
                pos = 0
                for r in rows:
                    if r < 0:
                        out[how].append([])
                    else:
                        out[how].append(ranked.get(pos, []))
                        pos += 1
        return out

    def _top_per_row(self, row: I64, item: I64, scores: F64, k: int) -> dict[int, list[str]]:
        """Each candidate row's ``k`` best items by score (ties: the lower item index), as item ids.

        Sorted once, then cut per row in numpy: a Python loop over every candidate was most of a ranking
        pass (about 400 candidates a customer, 20 kept)."""

        def starts(sorted_rows: I64) -> I64:
            return np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])

        order = np.lexsort((item, -scores, row))
        rows, items = row[order], item[order]
        if not len(rows):
            return {}
        first = starts(rows)
        rank_in_row = np.arange(len(rows)) - np.repeat(first, np.diff(np.r_[first, len(rows)]))
        keep = rank_in_row < k
        rows, items = rows[keep], items[keep].tolist()
        if not len(rows):  # k <= 0: no row keeps anything
            return {}
        bounds = [*starts(rows).tolist(), len(rows)]
        ids = self.item_ids
        return {int(rows[a]): [ids[i] for i in items[a:b]] for a, b in itertools.pairwise(bounds)}

    def score(
        self,
        customer_id: str,
        *,
        events: pd.DataFrame | History | None = None,
        now: datetime | pd.Timestamp | None = None,
        new_only: bool = False,
        k: int = 50,
        allowed: npt.NDArray[np.bool_] | None = None,
    ) -> list[ScoredItem]:
        """The customer's best ``k`` candidates with the model score, the sources and every feature.

        ``events`` (a frame with item_id, timestamp, optional order_id; or a one-customer ``History`` built
        with ``History.from_log``) replaces the fit-time history, so a purchase made a second ago counts;
        without it the fit-time history is used. Unknown items are ignored.
        """
        history, items, collab, _, _ = self._require()
        now_day = self.now_day if now is None else to_day(pd.Timestamp(now))
        if isinstance(events, History):
            hist = events.before(now_day)
            row = 0
        elif events is not None:
            frame = check_frame(events.assign(customer_id=customer_id))
            frame = frame[frame["timestamp"] < pd.Timestamp(now_day * DAY * 1e9, tz="UTC")]
            hist = History.from_frame(frame, {customer_id: 0}, self.item_index)
            row = 0
        else:
            idx = self.customer_index.get(customer_id)
            if idx is None:
                raise NotFoundError("customer", customer_id, hint="pass their events, or refit the ranker")
            keep = (history.cust == idx) & (history.day < now_day)
            hist = History(
                np.zeros(int(keep.sum()), np.int64),
                history.item[keep],
                history.day[keep],
                history.order[keep],
                1,
            )
            row = 0
        cands = build_candidates(
            hist,
            [row],
            now_day=now_day,
            n_items=len(self.item_ids),
            items=items,
            collab=collab,
            text=self._text,
            new_only=new_only,
            allowed=allowed,
            limits=self.limits,
        )
        scores = self._score_candidates(cands, new_only)
        order = np.lexsort((cands.item, -scores))[:k]
        return [
            ScoredItem(
                item_id=self.item_ids[int(cands.item[i])],
                score=float(scores[i]),
                sources=tuple(s for b, s in enumerate(SOURCES) if int(cands.source[i]) & (1 << b)),
                features={name: float(cands.x[i, j]) for j, name in enumerate(FEATURES)},
            )
            for i in order
        ]

    def contributors(
        self, item_id: str, history_item_ids: Sequence[str], *, by: str = "collaborative", k: int = 3
    ) -> list[tuple[str, float]]:
        """Which of the customer's items make ``item_id`` a candidate: item neighbours or text neighbours."""
        _, _, collab, _, _ = self._require()
        j = self.item_index.get(item_id)
        hist = [
            self.item_index[h]
            for h in dict.fromkeys(history_item_ids)
            if h in self.item_index and h != item_id
        ]
        if j is None or not hist:
            return []
        if by == "text":
            if self._text is None:
                return []
            weights = self._text[hist] @ self._text[j]
        else:
            if self._knn_cols is None:
                # Column access (who points at j) on a CSR matrix is slow; one CSC copy makes it a slice.
                cols = collab.knn.tocsc()
                cols.sort_indices()
                self._knn_cols = cols
            cols = self._knn_cols
            start, end = int(cols.indptr[j]), int(cols.indptr[j + 1])
            # A popular item has thousands of in-neighbours: look the customer's items up in its sorted
            # column rather than building a dict of all of them.
            into, mine = cols.indices[start:end], np.asarray(hist)
            pos = np.searchsorted(into, mine)
            found = pos < len(into)
            found[found] = into[pos[found]] == mine[found]
            weights = np.zeros(len(hist), dtype=np.float64)
            weights[found] = cols.data[start:end][pos[found]]
        order = np.argsort(-weights, kind="stable")[:k]
        return [(self.item_ids[hist[i]], float(weights[i])) for i in order if weights[i] > 0]

    def forget(self, customer_id: str) -> int:
        """Remove a customer from the fitted state (right to be forgotten); returns their purchase rows.

        Their id and purchase rows go, and the item statistics (popularity, trend, repeat rate) are
        recomputed without them, exactly as a fit on the remaining purchases would compute them. The item
        neighbours, item factors and trees are item-level aggregates that hold no row, id or history of any
        customer; they lose the customer's share at the next refit. Save afterwards to purge the files too.
        """
        history = self._require()[0]
        idx = self.customer_index.get(customer_id)
        if idx is None:
            return 0
        keep = history.cust != idx
        cust = history.cust[keep]
        self._history = History(
            np.where(cust > idx, cust - 1, cust),
            history.item[keep],
            history.day[keep],
            history.order[keep],
            history.n_customers - 1,
        )
        self.customer_ids = [c for c in self.customer_ids if c != customer_id]
        self.customer_index = {x: i for i, x in enumerate(self.customer_ids)}
        self._items = item_stats(self._history, len(self.item_ids), self.now_day)
        return int((~keep).sum())

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: Path | str) -> Path:
        """Write ``<path>.npz`` (arrays) and ``<path>.json`` (ids and parameters); no pickle."""
        history, items, collab, all_model, new_model = self._require()
        base = Path(path).with_suffix("")
        base.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, npt.NDArray[np.generic]] = {
            "h_cust": history.cust,
            "h_item": history.item,
            "h_day": history.day,
            "h_order": history.order,
            "items": items.matrix(),
            **collab.save_arrays(),
            # LightGBM's own text format, as UTF-8 bytes: an npz holds them without pickle.
            "all_trees": np.frombuffer(all_model.to_text().encode("utf-8"), dtype=np.uint8),
            "new_trees": np.frombuffer(new_model.to_text().encode("utf-8"), dtype=np.uint8),
        }
        if self._text is not None:
            arrays["text"] = self._text
        meta = {
            "format": _FORMAT,
            "features": list(FEATURES),
            "params": self.params,
            "now_day": self.now_day,
            "item_ids": self.item_ids,
            "customer_ids": self.customer_ids,
            "fit": self.fit_report,
        }
        # One id in both files: two processes saving at once (replicas on one data dir) rename their files in
        # turn, and may leave one's npz beside the other's json; ``load`` refuses such a pair by name rather
        # than read one save's customers against the other's rows.
        save_id = uuid.uuid4().hex
        meta["save_id"] = save_id
        arrays["save_id"] = np.frombuffer(save_id.encode("ascii"), dtype=np.uint8)
        # Written beside the targets and renamed over them, so a reader (or a crash) never sees half a file;
        # named per writer, so no writer writes into, or removes, another's.
        writer = f"{os.getpid()}-{threading.get_ident()}"
        npz_tmp, json_tmp = base.with_suffix(f".npz.{writer}.tmp"), base.with_suffix(f".json.{writer}.tmp")
        try:
            with npz_tmp.open("wb") as fh:
                np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
            json_tmp.write_text(json.dumps(meta))
            os.replace(npz_tmp, base.with_suffix(".npz"))
            os.replace(json_tmp, base.with_suffix(".json"))
            self.save_id = save_id
        except OSError as exc:
            raise DataError(f"cannot save the ranker to {base}: {exc}", hint="check the data dir") from exc
        finally:
            npz_tmp.unlink(missing_ok=True)
            json_tmp.unlink(missing_ok=True)
        return base.with_suffix(".npz")

    @staticmethod
    def _saved_meta(path: Path | str) -> dict[str, Any]:
        meta_path = Path(path).with_suffix("").with_suffix(".json")
        try:
            meta: dict[str, Any] = json.loads(meta_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise DataError(
                f"cannot read the ranker at {meta_path}: {exc}", hint="fit and save it again"
            ) from exc
        return meta

    @staticmethod
    def saved_customer_ids(path: Path | str) -> list[str]:
        """The customers a saved ranker holds rows of (none when nothing is saved there)."""
        return [str(c) for c in Ranker._saved_meta(path).get("customer_ids", [])]

    @staticmethod
    def saved_id(path: Path | str) -> str | None:
        """The save id of the ranker saved at ``path`` (None when nothing is, or a save from before ids)."""
        value = Ranker._saved_meta(path).get("save_id")
        return str(value) if value else None

    @classmethod
    def load(cls, path: Path | str) -> Ranker:
        base = Path(path).with_suffix("")
        try:
            meta = json.loads(base.with_suffix(".json").read_text())
            arrays = dict(np.load(base.with_suffix(".npz"), allow_pickle=False))
        # A truncated or overwritten npz fails inside zipfile or zlib, not as an OSError.
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise DataError(
                f"cannot load the ranker from {base}: {exc}", hint="fit and save it again"
            ) from exc
        saved_as = bytes(arrays.pop("save_id", np.zeros(0, dtype=np.uint8))).decode("ascii", "replace")
        if (saved_as or meta.get("save_id")) and saved_as != meta.get("save_id"):
            raise DataError(
                f"the ranker's files at {base} are of two saves (another process saved while this one did)",
                hint="load it again in a moment, or refit",
            )
        if meta.get("format") != _FORMAT or meta.get("features") != list(FEATURES):
            raise DataError(
                f"the ranker at {base} was saved by another version (format {meta.get('format')}, this"
                f" version reads format {_FORMAT} with its own features)",
                hint="refit it (`tailor refit` fits anew over the old files; in code: fit and save again)",
            )
        # Saved before the popular candidate source: served as it was fitted, without it.
        ranker = cls(**{"n_popular": 0, **meta["params"]})
        ranker.save_id = saved_as or None
        ranker.item_ids = list(meta["item_ids"])
        ranker.item_index = {x: i for i, x in enumerate(ranker.item_ids)}
        ranker.customer_ids = list(meta["customer_ids"])
        ranker.customer_index = {x: i for i, x in enumerate(ranker.customer_ids)}
        ranker.now_day = float(meta["now_day"])
        # Saved before the label window could shrink: the configured one was used, and nothing else is known.
        fit = meta.get("fit") or {}
        ranker.label_days_used = int(fit.get("label_days", ranker.params["label_days"]))
        ranker.label_reason = str(fit.get("label_window", ""))
        ranker.windows_used = int(fit.get("windows_used", 0))
        ranker.label_customers = [int(n) for n in fit.get("label_customers", [])]
        ranker.history_days = int(fit.get("history_days", 0))
        # Saved before the validation chose what to serve: it served the trees.
        serving = fit.get("serving") or {}
        ranker.serving = {v: str(serving.get(v, "trees")) for v in ("all", "new")}
        unknown = {v: h for v, h in ranker.serving.items() if h not in SCORERS[v]}
        if unknown:
            raise DataError(f"the ranker at {base} serves unknown scorers {unknown}", hint="fit it again")
        ranker.validation = dict(fit.get("validation") or {})
        ranker._history = History(
            arrays["h_cust"], arrays["h_item"], arrays["h_day"], arrays["h_order"], len(ranker.customer_ids)
        )
        m = arrays["items"]
        ranker._items = ItemStats(m[0], m[1], m[2], m[3], m[4], m[5])
        ranker._collab = CollabModel.from_arrays(arrays, len(ranker.item_ids))
        try:
            texts = {v: bytes(arrays[f"{v}_trees"]).decode("utf-8") for v in ("all", "new")}
        except (KeyError, UnicodeDecodeError) as exc:
            raise DataError(
                f"the trees in {base}.npz are missing or unreadable: {exc}", hint="fit and save it again"
            ) from exc
        ranker._all = TreeEnsemble.from_text(texts["all"], source=f"{base}.npz")
        ranker._new = TreeEnsemble.from_text(texts["new"], source=f"{base}.npz")
        ranker._text = arrays.get("text")
        return ranker
