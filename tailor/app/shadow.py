"""The served model's health between refits: a shadow evaluation of the ranker on what its customers bought
since it was fitted, against the reference rankers it was chosen over, and the drift of what it reads.

- **Shadow evaluation.** The customers the ranker knows who bought since it was fitted (within the last
  ``days``; at most ``most`` of them, a seeded draw) are ranked as the ranker stands (its lists are as of
  its fit, so nothing it ranks has seen the purchases it is judged on), by what it serves and by the
  repeat-history and popularity scorers. Recall@10 of each on those purchases, and the served one's ratio to
  the better reference: under ``stale_ratio`` with enough customers, the model is marked stale.
- **Drift**, as a population stability index (PSI; above 0.25 is the usual mark of a shift that matters):
  which items are bought (the ranker's popularity and trend inputs: the 50 most bought items before the fit
  and the rest) and how many lines an order has, in the ``days`` before the fit against the ``days`` since.

A store the ranker has seen nothing after says so (``customers`` 0) and marks nothing.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from evals.protocol import recall_at
from retrieval.ranker import Ranker
from tailor.core.models import Event, EventKind, JsonObject
from tailor.data.store import Store

__all__ = ["MIN_CUSTOMERS", "psi", "shadow_eval"]

MIN_CUSTOMERS = 30  # fewer make the recall noise: reported, never marking the model stale
_TOP_ITEMS = 50
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


def _baskets(events: Sequence[Event]) -> Counter[str]:
    lines = Counter(e.order_id or e.id or "" for e in events)
    out: Counter[str] = Counter()
    for n in lines.values():
        out[next((f"<={edge}" for edge in _BASKET_BINS if n <= edge), f">{_BASKET_BINS[-1]}")] += 1
    return out


def shadow_eval(
    store: Store,
    ranker: Ranker,
    now: datetime,
    *,
    days: int,
    stale_ratio: float,
    most: int = 2000,
    seed: int = 0,
) -> JsonObject:
    fitted = ranker.fitted_at.to_pydatetime()
    since = max(fitted, now - timedelta(days=days))
    after = store.events(kinds=[EventKind.PURCHASE], since=since, until=now) if since < now else []
    before = store.events(kinds=[EventKind.PURCHASE], since=fitted - timedelta(days=days), until=fitted)
    bought: dict[str, set[str]] = {}
    for e in after:
        if e.item_id and e.customer_id in ranker.customer_index and e.item_id in ranker.item_index:
            bought.setdefault(e.customer_id, set()).add(e.item_id)
    customers = sorted(bought)
    if len(customers) > most:
        customers = sorted(random.Random(seed).sample(customers, most))
    report: JsonObject = {
        "fitted_at": fitted.isoformat(),
        "window": {"start": since.isoformat(), "end": now.isoformat(), "days": days},
        "customers": len(customers),
        "purchases_since_fit": len(after),
    }
    recall: dict[str, float] = {}
    if customers:
        for name, how in (("served", None), ("repeat", "repeat"), ("popularity", "popularity")):
            lists = ranker.rank(customers, k=10, how=how)
            recall[name] = round(
                sum(recall_at(lst, bought[c], 10) for c, lst in zip(customers, lists, strict=True))
                / len(customers),
                4,
            )
    best_ref = max((recall[r] for r in ("repeat", "popularity") if r in recall), default=0.0)
    ratio = recall["served"] / best_ref if recall and best_ref > 0 else None
    top = [i for i, _ in Counter(e.item_id for e in before if e.item_id).most_common(_TOP_ITEMS)]

    def mix(events: Sequence[Event]) -> Counter[str]:
        keep = set(top)
        return Counter((e.item_id if e.item_id in keep else "other") for e in events if e.item_id)

    drift = {
        "item_mix": round(psi(mix(before), mix(after)), 4) if after else None,
        "basket_lines": round(psi(_baskets(before), _baskets(after)), 4) if after else None,
    }
    stale = ratio is not None and len(customers) >= MIN_CUSTOMERS and ratio < stale_ratio
    report.update(
        {
            "recall@10": recall,
            "ratio_to_best_reference": round(ratio, 4) if ratio is not None else None,
            "stale_ratio": stale_ratio,
            "stale": stale,
            "drift_psi": drift,
            "note": (
                "nothing bought since the fit by a customer the ranker knows: nothing to judge it on"
                if not customers
                else f"fewer than {MIN_CUSTOMERS} customers: reported, never marking the model stale"
                if len(customers) < MIN_CUSTOMERS
                else ""
            ),
        }
    )
    return report
