"""The temporal ranking protocol, in Tailor's own code.

It is the project's reference protocol for UCI Online Retail (the one the peer baselines in
``../shared/bench/retail_peers.py`` follow), so that Tailor's figures and the peers' are comparable:

- purchases only (a customer, a positive quantity and price, not a cancellation, not a fee or postage code);
- train = before the cut, test = from the cut on (2011-09-09 for Online Retail, or a store's last N days,
  by default a quarter of its days, 7 to 28: ``sized_holdout_days``);
- evaluated customers bought in both periods; the candidate items are those seen in train;
- relevant items: the train-known items a customer bought in the test period;
- variants: ``all`` (repeat purchases count) and ``new-only`` (items the customer bought in train are neither
  ranked nor relevant; customers left with nothing relevant are skipped);
- Recall@k = hits / min(|relevant|, k); NDCG@k with binary gains and an ideal DCG over min(|relevant|, k);
  HitRate@k; MRR@k (reciprocal rank of the first hit within k). Averages over evaluated customers.

Purchases older than the protocol's period (``start``: for UCI, the 2009-2010 year of Online Retail II before
Online Retail begins) are *earlier history*: a ranker may learn from them, as a retailer would from its own
records, but they decide nothing the protocol measures (customers, catalog, seen items, relevant items),
so the figures stay those of the reference period and comparable with the peers'.

Frames are ``tailor.data.frame``'s purchase frames: the protocol reads them, it does not define them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import pandas as pd

from tailor.core.errors import DataError
from tailor.core.utc import utc_timestamp
from tailor.data.frame import check_frame

__all__ = [
    "DEFAULT_CUT",
    "DEFAULT_KS",
    "UCI_START",
    "RankFn",
    "Split",
    "Variant",
    "evaluate",
    "evaluate_each",
    "hit_at",
    "holdout_cut",
    "holdout_split",
    "mrr_at",
    "ndcg_at",
    "recall_at",
    "sized_holdout_days",
    "temporal_split",
]

Variant = Literal["all", "new-only"]
DEFAULT_CUT = pd.Timestamp("2011-09-09", tz="UTC")
DEFAULT_KS = (5, 10, 20)
# The first day of UCI Online Retail: the protocol's period begins here; anything before is earlier history.
UCI_START = pd.Timestamp("2010-12-01", tz="UTC")

# (customers, new_only) -> one ranked list of item ids per customer, best first.
RankFn = Callable[[Sequence[str], bool], Sequence[Sequence[str]]]


@dataclass(frozen=True)
class Split:
    """Train and test purchases around a cut, with the evaluated customers and what each one bought."""

    train: pd.DataFrame
    test: pd.DataFrame
    cut: pd.Timestamp
    customers: tuple[str, ...]
    seen: Mapping[str, frozenset[str]]
    bought_in_test: Mapping[str, frozenset[str]]
    catalog: frozenset[str]
    # Purchases before the protocol's period: history to learn from, never counted by the protocol.
    earlier: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def history(self) -> pd.DataFrame:
        """Everything a ranker may fit on: the earlier history and the train period."""
        if self.earlier.empty:
            return self.train
        return pd.concat([self.earlier, self.train], ignore_index=True)

    def relevant(self, customer_id: str, variant: Variant) -> frozenset[str]:
        rel = self.bought_in_test.get(customer_id, frozenset())
        if variant == "new-only":
            rel = rel - self.seen.get(customer_id, frozenset())
        return rel

    def evaluated(self, variant: Variant) -> tuple[str, ...]:
        return tuple(c for c in self.customers if self.relevant(c, variant))


def _sets(frame: pd.DataFrame) -> dict[str, frozenset[str]]:
    grouped = frame.groupby("customer_id")["item_id"].agg(lambda s: frozenset(s))
    return {str(k): v for k, v in grouped.items()}


def temporal_split(
    purchases: pd.DataFrame,
    cut: pd.Timestamp | datetime | str = DEFAULT_CUT,
    *,
    start: pd.Timestamp | datetime | str | None = None,
) -> Split:
    """Train before ``cut``, test from it on; purchases before ``start`` (if given) are earlier history."""
    frame = check_frame(purchases)
    cut_ts = utc_timestamp(cut)
    earlier = frame.iloc[:0]
    if start is not None:
        start_ts = utc_timestamp(start)
        if start_ts >= cut_ts:
            raise DataError(
                f"the protocol's start {start_ts.isoformat()} is not before the cut {cut_ts.isoformat()}",
                hint="earlier history must end before the train period does",
            )
        earlier = frame[frame["timestamp"] < start_ts].reset_index(drop=True)
        frame = frame[frame["timestamp"] >= start_ts]
    train = frame[frame["timestamp"] < cut_ts].reset_index(drop=True)
    test = frame[frame["timestamp"] >= cut_ts].reset_index(drop=True)
    if train.empty or test.empty:
        raise DataError(
            f"the cut {cut_ts.isoformat()} leaves {len(train)} train and {len(test)} test purchases",
            hint="pick a cut inside the data's time range",
        )
    catalog = frozenset(train["item_id"])
    known_test = test[test["item_id"].isin(catalog)]
    customers = tuple(sorted(set(train["customer_id"]) & set(test["customer_id"])))
    return Split(
        train=train,
        test=test,
        cut=cut_ts,
        customers=customers,
        seen=_sets(train),
        bought_in_test=_sets(known_test),
        catalog=catalog,
        earlier=earlier,
    )


def holdout_cut(purchases: pd.DataFrame, days: int) -> pd.Timestamp:
    """The cut that holds out the last ``days`` calendar days (UTC) of the purchases, the last included."""
    if days < 1:
        raise DataError(f"holdout days must be >= 1, got {days}")
    frame = check_frame(purchases)
    if frame.empty:
        raise DataError("no purchases to split", hint="import data first (`tailor import`)")
    cut: pd.Timestamp = frame["timestamp"].max().normalize() - pd.Timedelta(days=days - 1)
    return cut


def sized_holdout_days(purchases: pd.DataFrame, *, most: int = 28, least: int = 7) -> int:
    """How many of a store's last days to hold out when nothing else says: a quarter of the calendar days
    its purchases span, at most ``most`` and at least ``least``.

    A quarter leaves three to learn from, out of which the ranker can still take a label window as long as
    the test period (``retrieval.ranker.label_window``: a third of its history at least). Four weeks, the
    cap, is what a store of four months or more gets (Ta-Feng: February); eight weeks get two."""
    if least < 1 or most < least:
        raise DataError(f"holdout bounds must satisfy 1 <= least <= most, got least={least}, most={most}")
    frame = check_frame(purchases)
    if frame.empty:
        raise DataError("no purchases to split", hint="import data first (`tailor import`)")
    span = frame["timestamp"].max().normalize() - frame["timestamp"].min().normalize()
    days = int(span.days) + 1
    return min(most, max(least, days // 4))


def holdout_split(purchases: pd.DataFrame, days: int) -> Split:
    """Hold out the last ``days`` days of any store's purchases as the test period."""
    return temporal_split(purchases, holdout_cut(purchases, days))


def recall_at(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    rel = set(relevant)
    if not rel:
        raise DataError("recall is undefined for an empty relevant set")
    return sum(1 for x in ranked[:k] if x in rel) / min(len(rel), k)


def ndcg_at(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    rel = set(relevant)
    if not rel:
        raise DataError("NDCG is undefined for an empty relevant set")
    dcg = sum(1.0 / math.log2(i + 2) for i, x in enumerate(ranked[:k]) if x in rel)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(rel), k)))
    return dcg / ideal


def hit_at(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    rel = set(relevant)
    return 1.0 if any(x in rel for x in ranked[:k]) else 0.0


def mrr_at(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    rel = set(relevant)
    for i, x in enumerate(ranked[:k]):
        if x in rel:
            return 1.0 / (i + 1)
    return 0.0


def evaluate(
    split: Split, rank: RankFn, variant: Variant, *, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Average metrics of ``rank`` over the split's evaluated customers: keys like ``recall@10``.

    Under ``new-only`` the items a customer bought in train are dropped from the ranking before the cut-off,
    whatever the ranker returned, so no ranker can score by repeating.
    """
    each = evaluate_each(split, rank, variant, ks=ks)
    out = {key: sum(values) / len(values) for key, values in each.items()}
    out["customers"] = float(len(split.evaluated(variant)))
    return out


def evaluate_each(
    split: Split, rank: RankFn, variant: Variant, *, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, list[float]]:
    """``evaluate``'s metrics customer by customer, in the order of ``split.evaluated(variant)``: what a
    paired comparison of two rankers on the same customers needs."""
    customers = split.evaluated(variant)
    if not customers:
        raise DataError(f"no customer to evaluate under {variant!r}", hint="the test period has no purchases")
    kmax = max(ks)
    lists = rank(customers, variant == "new-only")
    if len(lists) != len(customers):
        raise DataError(f"the ranker returned {len(lists)} lists for {len(customers)} customers")
    each: dict[str, list[float]] = {f"{m}@{k}": [] for m in ("recall", "ndcg", "hitrate", "mrr") for k in ks}
    for cid, ranked in zip(customers, lists, strict=True):
        seen = split.seen.get(cid, frozenset())
        allowed = [x for x in dict.fromkeys(ranked) if x in split.catalog]
        if variant == "new-only":
            allowed = [x for x in allowed if x not in seen]
        allowed = allowed[:kmax]
        rel = split.relevant(cid, variant)
        for k in ks:
            each[f"recall@{k}"].append(recall_at(allowed, rel, k))
            each[f"ndcg@{k}"].append(ndcg_at(allowed, rel, k))
            each[f"hitrate@{k}"].append(hit_at(allowed, rel, k))
            each[f"mrr@{k}"].append(mrr_at(allowed, rel, k))
    return each
