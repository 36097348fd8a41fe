"""The served model's health between refits: a shadow evaluation of the ranker on what its customers bought
since it was fitted, against reference rankers kept up to date, and the drift of what it reads.

- **Shadow evaluation.** The customers the ranker knows who bought in the window (the last ``days``, never
  before the fit; at most ``most`` of them, a seeded draw) are ranked by the ranker's scorer as it stands,
  as of its fit: the trees or the reference its fit chose, without the live path's business rules. Against it,
  the two plainest rankers computed afresh at the window's start: each customer's own most-ordered items, and
  the items most customers bought in the ``days`` before it. Neither sees a purchase of the window either.
  A model that has aged falls behind them, even when what it serves is itself one of them (Ta-Feng serves
  repeat history): under ``stale_ratio`` of the better one, with ``MIN_CUSTOMERS`` customers or more, it is
  marked stale. Items the ranker never saw (new in the catalog) count as misses, and the share of the
  window's purchases that the ranker could have ranked is reported.
- **Drift**, as a population stability index (PSI; above 0.25 is the usual mark of a shift that matters):
  which items are bought (the 50 most bought before the window and the rest) and how many lines an order has,
  the ``days`` before the window against the window, once the window holds ``MIN_ORDERS`` orders (fewer make
  the index noise: ``None``).

A store the ranker has seen nothing after says so (``customers`` 0) and marks nothing.

A customer forgotten while it runs is left out: the ranking is done under ``lock`` (the service's model lock,
which a forget holds while it purges the ranker), of the customers the ranker still holds then. A ranker
replaced meanwhile (``served``, asked under the lock, names another: a refit landed) is not reported on: the
one served now is judged instead.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta

import pandas as pd

from evals.protocol import recall_at
from retrieval.ranker import Ranker
from tailor.core.errors import BackendError
from tailor.core.models import EventKind, JsonObject
from tailor.data.store import Store

__all__ = ["MIN_CUSTOMERS", "MIN_ORDERS", "psi", "shadow_eval"]

MIN_CUSTOMERS = 30  # fewer make the recall noise: reported, never marking the model stale
MIN_ORDERS = 200  # fewer make a 51-bin PSI noise
_TOP_ITEMS = 50
_K = 10
_BASKET_BINS = (1, 2, 3, 5, 8, 13, 21, 34)  # lines an order: a bin ends at each (the last is open)


def psi(before: Mapping[str, float], after: Mapping[str, float]) -> float:
    """The population stability index of two distributions over the same bins (counts or shares); empty
    bins get a small floor so that a bin new on one side counts, finitely."""
    bins = set(before) | set(after)
    b_total, a_total = sum(before.values()), sum(after.values())
    if not bins or b_total <= 0 or a_total <= 0:
        return 0.0
    floor = 1e-4
    out = 0.0
    for k in bins:
        b = max(before.get(k, 0.0) / b_total, floor)
        a = max(after.get(k, 0.0) / a_total, floor)
        out += (a - b) * math.log(a / b)
    return out


def _orders(frame: pd.DataFrame) -> pd.Series:
    # An order is its id, or the customer's moment when the data has none.
    key = frame["order_id"].fillna(frame["customer_id"] + "@" + frame["timestamp"].astype(str))
    return key


def _basket_bins(frame: pd.DataFrame) -> dict[str, float]:
    lines = frame.groupby(_orders(frame)).size()
    edges = [0, *_BASKET_BINS, math.inf]
    labels = [f"<={e}" for e in _BASKET_BINS] + [f">{_BASKET_BINS[-1]}"]
    binned = pd.cut(lines, bins=edges, labels=labels)
    return {str(k): float(v) for k, v in binned.value_counts().items()}


def shadow_eval(
    store: Store,
    ranker: Ranker,
    now: datetime,
    *,
    days: int,
    stale_ratio: float,
    most: int = 2000,
    seed: int = 0,
    lock: AbstractContextManager[object] | None = None,
    served: Callable[[], Ranker | None] | None = None,
    _tries: int = 3,
) -> JsonObject:
    # The fit's clock, to the microsecond (it is kept as a day count, whose float has nanoseconds).
    fitted = ranker.fitted_at.round("us").to_pydatetime()
    since = max(fitted, now - timedelta(days=days))
    cols = ["customer_id", "item_id", "timestamp", "order_id"]
    window = (
        store.events_frame(kinds=[EventKind.PURCHASE], since=since, until=now)[cols]
        if since < now
        else pd.DataFrame(columns=cols)
    )
    before = store.events_frame(kinds=[EventKind.PURCHASE], since=since - timedelta(days=days), until=since)[
        cols
    ]
    known = window[window["customer_id"].isin(ranker.customer_index)]
    bought = known.groupby("customer_id")["item_id"].agg(lambda s: set(s.dropna()))
    customers = sorted(str(c) for c in bought.index)
    if len(customers) > most:
        customers = sorted(random.Random(seed).sample(customers, most))
    rankable = float(window["item_id"].isin(ranker.item_index).mean()) if len(window) else None
    report: JsonObject = {
        "fitted_at": fitted.isoformat(),
        "window": {
            "start": since.isoformat(),
            "end": now.isoformat(),
            "days": round((now - since).total_seconds() / 86400, 2),
        },
        "customers": len(customers),
        "purchases_in_window": len(window),
        "rankable_share": round(rankable, 4) if rankable is not None else None,
    }
    recall: dict[str, float] = {}
    with lock if lock is not None else nullcontext():
        now_served = served() if served is not None else None
        serving = now_served if now_served is not None else ranker
        if serving is ranker:
            # A forget since the window was read purged the ranker first: she is judged on nothing.
            customers = [c for c in customers if c in ranker.customer_index]
            ranked = ranker.rank(customers, k=_K) if customers else []
    if serving is not ranker:
        # A refit (or another replica's save) swapped the ranker since this one was looked up: what is
        # served now is judged, on its own window, and the one replaced is not reported.
        if _tries <= 1:
            raise BackendError("the served ranker kept changing while it was judged", hint="ask again")
        # Fitted on a later clock than this evaluation's: judged from its fit on, on what it has seen since.
        later = max(now, serving.fitted_at.round("us").to_pydatetime())
        return shadow_eval(
            store, serving, later, days=days, stale_ratio=stale_ratio, most=most, seed=seed, lock=lock,
            served=served, _tries=_tries - 1,
        )  # fmt: skip
    report["customers"] = len(customers)
    if customers:
        repeat = _fresh_repeat(store, customers, since)
        popular = list(
            before.groupby("item_id")["customer_id"].nunique().sort_values(ascending=False).index[:_K]
        )
        for name, lists in (("served", ranked), ("repeat", [repeat[c] for c in customers])):
            recall[name] = _mean_recall(customers, lists, bought)
        recall["popularity"] = _mean_recall(customers, [popular] * len(customers), bought)
    best_ref = max((recall[r] for r in ("repeat", "popularity") if r in recall), default=0.0)
    ratio = recall["served"] / best_ref if recall and best_ref > 0 else None
    orders_in_window = int(_orders(window).nunique()) if len(window) else 0
    drift: dict[str, float | None] = {"item_mix": None, "basket_lines": None}
    if orders_in_window >= MIN_ORDERS and len(before):
        top = set(before["item_id"].value_counts().index[:_TOP_ITEMS])

        def mix(frame: pd.DataFrame) -> dict[str, float]:
            named = frame["item_id"].where(frame["item_id"].isin(top), "other")
            return {str(k): float(v) for k, v in named.value_counts().items()}

        drift = {
            "item_mix": round(psi(mix(before), mix(window)), 4),
            "basket_lines": round(psi(_basket_bins(before), _basket_bins(window)), 4),
        }
    stale = ratio is not None and len(customers) >= MIN_CUSTOMERS and ratio < stale_ratio
    if not customers:
        note = "nothing bought in the window by a customer the ranker knows: nothing to judge it on"
    elif len(customers) < MIN_CUSTOMERS:
        note = f"fewer than {MIN_CUSTOMERS} customers: reported, never marking the model stale"
    else:
        note = ""
    if orders_in_window < MIN_ORDERS:
        note = (note + "; " if note else "") + f"drift needs {MIN_ORDERS} orders in the window"
    report.update(
        {
            "recall@10": recall,
            "ratio_to_best_reference": round(ratio, 4) if ratio is not None else None,
            "stale_ratio": stale_ratio,
            "stale": stale,
            "drift_psi": drift,
            "note": note,
        }
    )
    return report


def _mean_recall(customers: list[str], lists: list[list[str]], bought: pd.Series) -> float:
    total = sum(recall_at(lst, bought[c], _K) for c, lst in zip(customers, lists, strict=True))
    return round(total / len(customers), 4)


def _fresh_repeat(store: Store, customers: list[str], since: datetime) -> dict[str, list[str]]:
    """Each customer's items by how many of their orders held them, before ``since``: repeat history as a
    refit at the window's start would rank it. One read of their purchases, not one per customer."""
    frame = store.events_frame(kinds=[EventKind.PURCHASE], until=since, customers=customers)
    frame = frame[frame["item_id"].notna()]
    out: dict[str, list[str]] = {c: [] for c in customers}
    if frame.empty:
        return out
    # A purchase without an order id is an order of its own moment, as the per-customer reads counted it.
    has_order = frame["order_id"].fillna("").astype(str) != ""
    order = frame["order_id"].where(has_order, frame["timestamp"].map(lambda t: t.isoformat()))
    counts = frame.assign(order=order).groupby(["customer_id", "item_id"])["order"].nunique().reset_index()
    counts = counts.sort_values(["customer_id", "order", "item_id"], ascending=[True, False, True])
    for cid, items in counts.groupby("customer_id")["item_id"]:
        out[str(cid)] = [str(i) for i in items.iloc[:_K]]
    return out
