"""Business rules after ranking, and the cold-start rankers; every decision carries its reason.

Rules run in a fixed order: the item must exist and be in stock, must not be one the customer returned, must
not have been shown to them too often in the last 30 days; then configured margin/category boosts re-order
what is left; then diversity keeps any window of 10 consecutive positions within ``max_per_category`` items
of one category (so a top-10 holds at most that many).
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from tailor.core.errors import DataError
from tailor.core.models import Item
from tailor.core.settings import Settings
from tailor.core.utc import utc_timestamp

__all__ = [
    "ColdKind",
    "ColdPick",
    "ColdStart",
    "Impression",
    "ImpressionSource",
    "RuleConfig",
    "RuleDecision",
    "RuleResult",
    "apply_rules",
]

Impression = tuple[str, datetime]  # (item_id, when it was shown)
# Either the impressions themselves, or a callable (customer_id, since) -> impressions.
ImpressionSource = Sequence[Impression] | Callable[[str, datetime], Iterable[Impression]]
WINDOW = timedelta(days=30)


@dataclass(frozen=True)
class RuleDecision:
    item_id: str
    rule: Literal[
        "unknown_item", "in_stock", "returned", "impressions", "margin_boost", "category_boost", "diversity"
    ]
    action: Literal["removed", "boosted"]
    reason: str


@dataclass(frozen=True)
class RuleConfig:
    max_impressions_30d: int = 3
    max_per_category: int = 4
    margin_boosts: Mapping[str, float] = field(default_factory=dict)  # item id -> added score
    category_boosts: Mapping[str, float] = field(default_factory=dict)  # category -> added score

    def __post_init__(self) -> None:
        if self.max_impressions_30d < 1:
            raise DataError(f"max_impressions_30d must be >= 1, got {self.max_impressions_30d}")
        if self.max_per_category < 1:
            raise DataError(f"max_per_category must be >= 1, got {self.max_per_category}")
        for name, boosts in (
            ("margin_boosts", self.margin_boosts),
            ("category_boosts", self.category_boosts),
        ):
            for key, value in boosts.items():
                if not math.isfinite(value):
                    raise DataError(f"{name}[{key!r}] must be a finite number, got {value!r}")

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        margin_boosts: Mapping[str, float] | None = None,
        category_boosts: Mapping[str, float] | None = None,
    ) -> RuleConfig:
        """The rules the settings configure; explicit ``margin_boosts``/``category_boosts`` replace theirs."""
        return cls(
            max_impressions_30d=settings.max_impressions_30d,
            max_per_category=settings.max_per_category,
            margin_boosts=dict(settings.margin_boosts if margin_boosts is None else margin_boosts),
            category_boosts=dict(settings.category_boosts if category_boosts is None else category_boosts),
        )


@dataclass(frozen=True)
class RuleResult:
    kept: list[tuple[str, float]]  # (item id, final score), best first
    decisions: list[RuleDecision]

    def removed(self) -> dict[str, RuleDecision]:
        return {d.item_id: d for d in self.decisions if d.action == "removed"}


def _impressions(source: ImpressionSource | None, customer_id: str, now: datetime) -> Counter[str]:
    if source is None:
        return Counter()
    since = now - WINDOW
    shown = source(customer_id, since) if callable(source) else source
    return Counter(item for item, when in shown if since <= when <= now)


def apply_rules(
    ranked: Sequence[tuple[str, float]],
    *,
    customer_id: str,
    catalog: Mapping[str, Item],
    now: datetime,
    config: RuleConfig,
    returned: Iterable[str] = (),
    impressions: ImpressionSource | None = None,
    k: int | None = None,
) -> RuleResult:
    """Filter, boost and diversify ``ranked`` (item id, score), best first; keep at most ``k``."""
    decisions: list[RuleDecision] = []
    returned_set = set(returned)
    shown = _impressions(impressions, customer_id, now)
    survivors: list[tuple[str, float]] = []
    for item_id, score in ranked:
        item = catalog.get(item_id)
        if item is None:
            decisions.append(RuleDecision(item_id, "unknown_item", "removed", "not in the catalog"))
            continue
        if not item.in_stock:
            decisions.append(RuleDecision(item_id, "in_stock", "removed", f"{item.title} is out of stock"))
            continue
        if item_id in returned_set:
            decisions.append(
                RuleDecision(item_id, "returned", "removed", f"the customer returned {item.title} before")
            )
            continue
        if shown[item_id] >= config.max_impressions_30d:
            decisions.append(
                RuleDecision(
                    item_id,
                    "impressions",
                    "removed",
                    f"shown {shown[item_id]} times in the last 30 days (cap {config.max_impressions_30d})",
                )
            )
            continue
        boost = 0.0
        if item_id in config.margin_boosts:
            boost += config.margin_boosts[item_id]
            decisions.append(
                RuleDecision(
                    item_id, "margin_boost", "boosted", f"margin boost {config.margin_boosts[item_id]:+g}"
                )
            )
        if item.category in config.category_boosts:
            boost += config.category_boosts[item.category]
            decisions.append(
                RuleDecision(
                    item_id,
                    "category_boost",
                    "boosted",
                    f"category {item.category!r} boost {config.category_boosts[item.category]:+g}",
                )
            )
        survivors.append((item_id, score + boost))
    survivors.sort(key=lambda pair: (-pair[1], pair[0]))
    kept: list[tuple[str, float]] = []
    for item_id, score in survivors:
        if k is not None and len(kept) >= k:
            break
        category = catalog[item_id].category
        window = kept[-9:]
        if sum(1 for other, _ in window if catalog[other].category == category) >= config.max_per_category:
            decisions.append(
                RuleDecision(
                    item_id,
                    "diversity",
                    "removed",
                    f"already {config.max_per_category} {category!r} items among the 10 around it",
                )
            )
            continue
        kept.append((item_id, score))
    return RuleResult(kept=kept, decisions=decisions)


ColdKind = Literal["popular", "trending", "recent_view"]


@dataclass(frozen=True)
class ColdPick:
    item_id: str
    score: float
    why: tuple[tuple[ColdKind, str], ...]  # (evidence kind, reason), strongest first


class ColdStart:
    """Ranks for a customer with no history: popular in their country, popular in the same season last
    year, and close in text to what they viewed in this session. Also gives never-sold items exposure."""

    def __init__(
        self,
        purchases: pd.DataFrame,
        countries: Mapping[str, str],
        text_vectors: Mapping[str, npt.NDArray[np.floating]] | None = None,
    ) -> None:
        needed = {"customer_id", "item_id", "timestamp"}
        if not needed <= set(purchases.columns):
            raise DataError(f"cold start needs columns {sorted(needed)}, got {sorted(purchases.columns)}")
        frame = purchases[["customer_id", "item_id", "timestamp"]].copy()
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
        frame["country"] = frame["customer_id"].astype(str).map(countries).fillna("")
        self._frame = frame
        self._lock = threading.Lock()
        self._text_ids: list[str] = []
        self._text = np.zeros((0, 0), dtype=np.float32)
        if text_vectors:
            self._text_ids = sorted(text_vectors)
            mat = np.stack([np.asarray(text_vectors[i], dtype=np.float32) for i in self._text_ids])
            self._text = mat / np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-9)
        self._text_index = {x: i for i, x in enumerate(self._text_ids)}
        self.sold = frozenset(frame["item_id"].astype(str))
        self._new_block: tuple[tuple[str, ...], list[str], npt.NDArray[np.float32]] | None = None
        # Context scores by (country, day): the groupbys are the slow part and the same all day long.
        self._cache: dict[
            tuple[str, str], tuple[dict[str, float], dict[str, dict[tuple[ColdKind, str], None]]]
        ] = {}

    def _buyers(self, frame: pd.DataFrame) -> pd.Series:
        counts: pd.Series = frame.groupby("item_id")["customer_id"].nunique()
        return counts / max(float(counts.max()), 1.0) if len(counts) else counts

    def rank(
        self,
        *,
        now: datetime,
        country: str | None = None,
        session_item_ids: Sequence[str] = (),
        k: int = 50,
    ) -> list[ColdPick]:
        ts = utc_timestamp(now)
        key = (country or "", ts.floor("D").isoformat())
        # Under the lock, so a customer forgotten meanwhile cannot come back through a cache entry.
        with self._lock:
            base = self._cache.get(key)
            if base is None:
                past = self._frame[self._frame["timestamp"] < ts]
                base = self._context_scores(past, ts, country)
                self._cache[key] = base
        scores = dict(base[0])
        why: dict[str, dict[tuple[ColdKind, str], None]] = {i: dict(w) for i, w in base[1].items()}
        viewed = [i for i in session_item_ids if i in self._text_index]
        if viewed and len(self._text):
            profile = self._text[[self._text_index[i] for i in viewed]].mean(axis=0)
            sims = self._text @ (profile / max(float(np.linalg.norm(profile)), 1e-9))
            for j in np.argsort(-sims)[: 3 * k]:
                name = self._text_ids[int(j)]
                if name in viewed:
                    continue
                scores[name] = scores.get(name, 0.0) + 2.0 * float(sims[j])
                why.setdefault(name, {})[("recent_view", "similar to what was viewed in this session")] = None
        best = sorted(scores.items(), key=lambda p: (-p[1], p[0]))[:k]
        fallback: dict[tuple[ColdKind, str], None] = {("popular", "popular with customers"): None}
        return [ColdPick(i, s, tuple(why.get(i) or fallback)) for i, s in best]

    def _context_scores(
        self, past: pd.DataFrame, ts: pd.Timestamp, country: str | None
    ) -> tuple[dict[str, float], dict[str, dict[tuple[ColdKind, str], None]]]:
        scores: dict[str, float] = {}
        why: dict[str, dict[tuple[ColdKind, str], None]] = {}
        year = past[past["timestamp"] >= ts - pd.Timedelta(days=365)]

        def add(series: pd.Series, weight: float, reason: str, kind: ColdKind) -> None:
            for item_id, share in series.nlargest(200).items():
                key = str(item_id)
                scores[key] = scores.get(key, 0.0) + weight * float(share)
                if share >= 0.2:
                    why.setdefault(key, {})[(kind, reason)] = None

        if country:
            local = year[year["country"] == country]
            add(self._buyers(local), 1.0, f"popular with customers in {country}", "popular")
        # The same weeks one year earlier: seasonal goods (Christmas, garden) come back around.
        season = past[
            (past["timestamp"] >= ts - pd.Timedelta(days=365 + 14))
            & (past["timestamp"] < ts - pd.Timedelta(days=365 - 45))
        ]
        add(self._buyers(season), 0.5, "popular in the same season last year", "trending")
        add(self._buyers(year), 0.5, "popular over the last year", "popular")
        return scores, why

    def forget(self, customer_id: str) -> int:
        """Drop a customer's purchases (right to be forgotten); returns how many rows went.

        The popularity caches were computed with them, so they go too; ``sold`` is recomputed, so an item
        only they bought counts as never sold again.
        """
        with self._lock:
            mine = self._frame["customer_id"].astype(str) == customer_id
            n = int(mine.sum())
            if n:
                self._frame = self._frame[~mine].reset_index(drop=True)
                sold = frozenset(self._frame["item_id"].astype(str))
                unsold = self.sold - sold
                self.sold = sold
                self._cache.clear()
                # The never-sold block changes only if an item of theirs that nobody else bought is one of
                # its candidates; otherwise it stays, so the next request does not gather it again.
                block = self._new_block
                if block is not None and not unsold.isdisjoint(block[0]):
                    self._new_block = None
            return n

    def new_items_for(
        self, taste: npt.NDArray[np.floating], candidates: Iterable[str], *, min_similarity: float = 0.5
    ) -> list[tuple[str, float]]:
        """Never-sold items close in text to the customer's taste: how a brand-new item earns exposure.

        ``taste`` is one vector or one row per item the customer bought; an item's similarity is its best
        match, since a mean over a varied history is close to nothing in particular.
        """
        if not len(self._text):
            return []
        rows = np.atleast_2d(np.asarray(taste, dtype=np.float32))
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        rows = rows[norms[:, 0] > 0] / norms[norms[:, 0] > 0]
        if not len(rows):
            return []
        key = tuple(candidates)
        cached = self._new_block
        if cached is None or cached[0] != key:
            # The candidate set (never-sold catalog items) changes rarely: gather their vectors once.
            sold = self.sold
            ids = [i for i in key if i in self._text_index and i not in sold]
            cached = (key, ids, self._text[[self._text_index[i] for i in ids]].T.copy())
            self._new_block = cached
        _, ids, block = cached
        if not ids:
            return []
        sims = (rows @ block).max(axis=0)
        out = [(ids[j], float(sims[j])) for j in np.flatnonzero(sims >= min_similarity).tolist()]
        return sorted(out, key=lambda p: (-p[1], p[0]))
