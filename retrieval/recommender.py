"""The hybrid recommender: learned ranking, business rules, cold start, and evidence for every pick.

Serving keeps an in-memory mirror of what a request needs (catalog, item vectors, fitted neighbours and
trees, and each customer's events once loaded), so a request reads a customer's events from SQLite once,
then only their recent impressions (one indexed query), and never scans Qdrant payloads. ``observe`` folds
new events into a customer's state at once; ``forget`` drops the customer from every part of it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from retrieval.features import DAY, History, to_day
from retrieval.ranker import Ranker, ScoredItem
from retrieval.rules import ColdPick, ColdStart, ImpressionSource, RuleConfig, RuleResult, apply_rules
from tailor.core.errors import DataError
from tailor.core.models import Event, EventKind, Evidence, Item, Recommendation
from tailor.core.settings import Settings
from tailor.data.frame import purchases_from_store
from tailor.data.store import Store, event_id

__all__ = ["HybridRecommender", "item_text_vectors", "popular_summary"]

_MAX_EVIDENCE_EVENTS = 50
# The reserved slot for a never-sold item: only in lists long enough that giving up the last ranked pick
# costs little. In a short list (one "next best product") the ranker's picks keep every slot.
NEW_ITEM_MIN_K = 5


def item_text_vectors(items: Sequence[Item], embedder: Any) -> dict[str, npt.NDArray[np.float32]]:
    """The ranker's text vectors of the catalog's named items (``Item.ranking_text``), by an ``Embedder``.

    On the validation cut (2011-06-09, the store of both years) the name alone gave new-to-customer Recall@10
    0.1336, the search text (name, category, description) 0.1277 and no text signal 0.1288.

    Unnamed items (``Item.named`` False) are left out: a stand-in title such as "Item 4710085120468" would
    make items alike by their digits. A catalog with no named item gives no vectors, and the ranker, the
    cold start and the new-item slot then run without a text signal."""
    named = [i for i in items if i.named]
    if not named:
        return {}
    vectors = embedder.encode([i.ranking_text() for i in named])
    return {item.id: np.asarray(vectors[n], dtype=np.float32) for n, item in enumerate(named)}


def popular_summary(buyers: int) -> str:
    """The evidence of a best seller, in words every brand's rails pass: not "best seller", a superlative
    that the brand rail holds to the brand's own allowed claims."""
    return f"popular with the store's customers: {buyers} have bought it"


@dataclass(frozen=True)
class _Log:
    """A customer's purchases, oldest first, as plain lists: the request path stays out of pandas."""

    event_ids: list[str]
    item_ids: list[str]
    days: npt.NDArray[np.float64]
    orders: list[str]
    by_item: dict[str, list[int]]

    def before(self, day: float) -> _Log:
        n = int(np.searchsorted(self.days, day, side="left"))
        if n == len(self.days):
            return self
        return _Log.build(
            list(zip(self.event_ids[:n], self.item_ids[:n], self.days[:n], self.orders[:n], strict=True))
        )

    @staticmethod
    def build(rows: list[tuple[str, str, float, str]]) -> _Log:
        rows = sorted(rows, key=lambda r: (r[2], r[0]))
        by_item: dict[str, list[int]] = {}
        for n, row in enumerate(rows):
            by_item.setdefault(row[1], []).append(n)
        return _Log(
            event_ids=[r[0] for r in rows],
            item_ids=[r[1] for r in rows],
            days=np.asarray([r[2] for r in rows], dtype=np.float64),
            orders=[r[3] for r in rows],
            by_item=by_item,
        )

    def event_ids_for(self, item_ids: Iterable[str]) -> tuple[str, ...]:
        idx = sorted(i for item in dict.fromkeys(item_ids) for i in self.by_item.get(item, ()))
        return tuple(self.event_ids[i] for i in idx[-_MAX_EVIDENCE_EVENTS:])


@dataclass
class _CustomerState:
    events: dict[str, Event] = field(default_factory=dict)
    log: _Log | None = None  # purchases, rebuilt lazily after a change
    # Never-sold items near their taste: (taste item ids, the cold-start ranker's ``sold`` set, the items).
    # A product over every never-sold item that gives the same answer until one of the two changes.
    fresh: tuple[tuple[str, ...], frozenset[str], list[tuple[str, float]]] | None = None

    def purchases(self) -> _Log:
        if self.log is None:
            self.log = _Log.build(
                [
                    (key, e.item_id, to_day(pd.Timestamp(e.timestamp)), e.order_id or key)
                    for key, e in self.events.items()
                    if e.kind is EventKind.PURCHASE and e.item_id
                ]
            )
        return self.log

    def returned(self) -> set[str]:
        return {e.item_id for e in self.events.values() if e.kind is EventKind.RETURN and e.item_id}


class HybridRecommender:
    """Implements ``retrieval.base.Recommender`` on a fitted ``Ranker`` and a ``Store``."""

    def __init__(
        self,
        store: Store,
        ranker: Ranker,
        *,
        settings: Settings | None = None,
        text_vectors: Mapping[str, npt.NDArray[np.floating[Any]]] | None = None,
        impressions: ImpressionSource | None = None,
        rules: RuleConfig | None = None,
        cold_start: ColdStart | None = None,
    ) -> None:
        self.store = store
        self.ranker = ranker
        self.settings = settings or Settings()
        self.rules = rules or RuleConfig.from_settings(self.settings)
        # What the customer was already shown, for the 30-day cap; the store's record unless told otherwise
        # (pass an empty sequence for none).
        self.impressions: ImpressionSource = store.impressions if impressions is None else impressions
        self.catalog: dict[str, Item] = store.item_map()
        self._text_ids = sorted(text_vectors) if text_vectors else []
        self._text_index = {x: i for i, x in enumerate(self._text_ids)}
        self._text = (
            np.stack([np.asarray(text_vectors[i], dtype=np.float32) for i in self._text_ids])
            if text_vectors
            else np.zeros((0, 0), dtype=np.float32)
        )
        if len(self._text):
            self._text /= np.maximum(np.linalg.norm(self._text, axis=1, keepdims=True), 1e-9)
        self.cold = cold_start or self._cold_start(text_vectors)
        self._new_items = tuple(i for i in self.catalog if i not in ranker.item_index)
        self._states: dict[str, _CustomerState] = {}
        self._countries: dict[str, str] = {}
        self._lock = threading.RLock()

    def _cold_start(self, text_vectors: Mapping[str, npt.NDArray[np.floating[Any]]] | None) -> ColdStart:
        frame = purchases_from_store(self.store)
        countries = {c.id: c.country for c in self.store.customers()}
        return ColdStart(frame, countries, text_vectors)

    @classmethod
    def build(
        cls,
        store: Store,
        settings: Settings,
        *,
        embedder: Any | None = None,
        ranker_path: Path | None = None,
        now: datetime | None = None,
        impressions: ImpressionSource | None = None,
    ) -> HybridRecommender:
        """Load the saved ranker (or fit and save one on the store's purchases) and embed the catalog.

        ``impressions`` feeds the 30-day cap; the store's recorded impressions when None."""
        store.require_data()
        path = ranker_path or settings.data_dir / "ranker"
        vectors = None
        if embedder is not None:
            vectors = item_text_vectors(store.items(), embedder)
        if path.with_suffix(".npz").exists():
            ranker = Ranker.load(path)
        else:
            moment = now or _settings_now(settings) or store.last_event_time()
            if moment is None:
                raise DataError(
                    "the store has no events to fit the ranker on", hint="run `tailor import` first"
                )
            ranker = Ranker().fit(purchases_from_store(store), vectors, now=moment)
            ranker.save(path)
        return cls(store, ranker, settings=settings, text_vectors=vectors, impressions=impressions)

    # -- state -----------------------------------------------------------------------------------
    def _state(self, customer_id: str) -> _CustomerState:
        with self._lock:
            state = self._states.get(customer_id)
            if state is None:
                events = self.store.events(customer_id, kinds=(EventKind.PURCHASE, EventKind.RETURN))
                state = _CustomerState(events={e.id or event_id(e): e for e in events})
                self._states[customer_id] = state
            return state

    def _rules(
        self,
        ranked: Sequence[tuple[str, float]],
        customer_id: str,
        now: datetime,
        returned: set[str],
        k: int | None = None,
    ) -> RuleResult:
        """The store's business rules over a ranked list, with this recommender's catalog and impressions."""
        return apply_rules(
            ranked,
            customer_id=customer_id,
            catalog=self.catalog,
            now=now,
            config=self.rules,
            returned=returned,
            impressions=self.impressions,
            k=k,
        )

    def popular(self, *, now: datetime, country: str | None = None, k: int = 50) -> list[ColdPick]:
        return self.cold.rank(now=now, country=country, k=k)

    def observe(self, events: Iterable[Event]) -> int:
        """Fold new events into the customers' in-memory state; returns how many were new to it."""
        added = 0
        with self._lock:
            for event in events:
                if event.kind not in (EventKind.PURCHASE, EventKind.RETURN):
                    continue
                state = self._state(event.customer_id)
                key = event.id or event_id(event)
                if key not in state.events:
                    state.events[key] = event if event.id else event.model_copy(update={"id": key})
                    state.log = None
                    added += 1
        return added

    def forget(self, customer_id: str) -> dict[str, int]:
        """Drop the customer from everything held in memory: their cached events and country, their rows in
        the fitted ranker, and their purchases in the cold-start ranker. Returns how much went, by part.

        The ranker changes in memory only; the caller saves it (``ranker.save``) to purge its files too.
        """
        with self._lock:
            state, country = self._pop_cached(customer_id)
            return {
                "cached_events": len(state.events) if state else 0,
                "cached_profiles": int(state is not None or country is not None),
                "ranker_rows": self.ranker.forget(customer_id),
                "cold_start_rows": self.cold.forget(customer_id),
            }

    def adopt_caches(self, other: HybridRecommender) -> int:
        """Take over another recommender's per-customer caches (events, country), when a refitted ranker
        replaces ``other``'s. They come from the store, not from a ranker, so they hold for this one; without
        them each customer's first request after a swap reloads their events (about 10 ms more), and a
        server under load falls behind. Returns how many customers came over."""
        with other._lock:
            states = dict(other._states)
            countries = dict(other._countries)
        with self._lock:
            for customer_id, state in states.items():
                # ``fresh`` names the old cold-start ranker's set, so it is rebuilt here on first use.
                self._states.setdefault(customer_id, state)
            for customer_id, country in countries.items():
                self._countries.setdefault(customer_id, country)
        return len(states)

    def evict(self, customer_id: str) -> bool:
        """Drop the customer's cached events and country, nothing else: their next request reads them from the
        store again (what a first request costs). Unlike ``forget`` it leaves the ranker alone. Returns
        whether anything was cached."""
        with self._lock:
            state, country = self._pop_cached(customer_id)
            return state is not None or country is not None

    def _pop_cached(self, customer_id: str) -> tuple[_CustomerState | None, str | None]:
        """Everything cached per customer, taken out; the caller holds the lock. ``forget`` and ``evict``
        both go through here, so a cache added later is dropped by both."""
        return self._states.pop(customer_id, None), self._countries.pop(customer_id, None)

    def cached_customers(self) -> list[str]:
        with self._lock:
            return sorted(set(self._states) | set(self._countries))

    def _country(self, customer_id: str) -> str:
        with self._lock:
            if customer_id not in self._countries:
                self._countries[customer_id] = self.store.get_customer(customer_id).country
            return self._countries[customer_id]

    # -- recommend -------------------------------------------------------------------------------
    def recommend(
        self,
        customer_id: str,
        k: int = 10,
        *,
        now: datetime | None = None,
        session_item_ids: tuple[str, ...] = (),
    ) -> list[Recommendation]:
        if k < 1:
            raise DataError(f"k must be >= 1, got {k}")
        moment = now or _settings_now(self.settings) or datetime.now(UTC)
        country = self._country(customer_id)  # unknown customers fail here, with NotFoundError
        state = self._state(customer_id)
        purchases = state.purchases().before(to_day(pd.Timestamp(moment)))
        returned = state.returned()
        if not any(i in self.ranker.item_index for i in purchases.by_item):
            return self._cold(customer_id, k, moment, country, session_item_ids, returned)
        history = History.from_log(
            purchases.item_ids, purchases.days, purchases.orders, self.ranker.item_index
        )
        scored = self.ranker.score(customer_id, events=history, now=moment, k=max(6 * k, 60))
        scores = {s.item_id: s.score for s in scored}
        by_id = {s.item_id: s for s in scored}
        if session_item_ids:
            session = self._profile(list(session_item_ids))
            for item_id in scores:
                scores[item_id] += 0.5 * self._sim(session, item_id)
        # A never-sold item close to the customer's taste takes the last slot of a list of NEW_ITEM_MIN_K or
        # more (or fills a list the ranker left short), so new stock gets seen.
        fresh = self._fresh(state, purchases.item_ids)
        similarity = dict(fresh)
        ranked = sorted(scores.items(), key=lambda p: (-p[1], p[0]))
        result = self._rules(ranked, customer_id, moment, returned, k)
        kept = result.kept
        fresh_ok = self._rules(fresh[:3], customer_id, moment, returned).kept
        base = kept[: k - 1] if len(kept) >= k else kept
        # The new item must not break diversity: its category may not be full in the window it joins.
        window = [self.catalog[i].category for i, _ in base[-(10 - 1) :]]
        fresh_ok = [
            f for f in fresh_ok if window.count(self.catalog[f[0]].category) < self.rules.max_per_category
        ]
        # Its score is its own text similarity (a cosine, not the ranker's log-odds), and its evidence
        # says so: it sits in the last slot because the slot is reserved, not because it outscored anyone.
        if fresh_ok and len(kept) >= k and k >= NEW_ITEM_MIN_K:
            kept = [*base, fresh_ok[0]]
        elif fresh_ok and len(kept) < k:
            kept = [*kept, fresh_ok[0]]
        out = []
        for rank, (item_id, score) in enumerate(kept, start=1):
            if item_id in by_id:
                evidence, sources = self._evidence(by_id[item_id], purchases, session_item_ids)
            else:
                evidence = self._new_item_evidence(item_id, purchases, similarity[item_id])
                sources = ("text", "new_item")
            out.append(
                Recommendation(
                    item=self.catalog[item_id],
                    score=float(score),
                    rank=rank,
                    sources=sources,
                    evidence=evidence,
                )
            )
        return out

    def _profile(self, item_ids: Sequence[str]) -> npt.NDArray[np.float32] | None:
        rows = [self._text_index[i] for i in item_ids[-50:] if i in self._text_index]
        if not rows:
            return None
        vec = self._text[rows].mean(axis=0)
        return np.asarray(vec / max(float(np.linalg.norm(vec)), 1e-9), dtype=np.float32)

    def _taste_rows(self, item_ids: Sequence[str]) -> npt.NDArray[np.float32]:
        recent = list(dict.fromkeys(reversed(item_ids)))[:50]
        rows = [self._text_index[i] for i in recent if i in self._text_index]
        return self._text[rows] if rows else np.zeros((0, 0), dtype=np.float32)

    def _fresh(self, state: _CustomerState, item_ids: Sequence[str]) -> list[tuple[str, float]]:
        """``ColdStart.new_items_for`` on ``_taste_rows(item_ids)``, kept in the customer's state."""
        recent = list(dict.fromkeys(reversed(item_ids)))[:50]
        taste = tuple(i for i in recent if i in self._text_index)
        sold = self.cold.sold  # replaced, never changed in place, when the cold-start ranker forgets
        cached = state.fresh
        if cached is not None and cached[0] == taste and cached[1] is sold:
            return cached[2]
        rows = self._text[[self._text_index[i] for i in taste]] if taste else None
        fresh = self.cold.new_items_for(rows, self._new_items) if rows is not None else []
        state.fresh = (taste, sold, fresh)
        return fresh

    def _sim(self, profile: npt.NDArray[np.float32] | None, item_id: str) -> float:
        j = self._text_index.get(item_id)
        return 0.0 if profile is None or j is None else float(self._text[j] @ profile)

    def _title(self, item_id: str) -> str:
        item = self.catalog.get(item_id)
        return item.title if item else item_id

    def _evidence(
        self, scored: ScoredItem, purchases: _Log, session: Sequence[str]
    ) -> tuple[tuple[Evidence, ...], tuple[str, ...]]:
        f = scored.features
        evidence: list[Evidence] = []
        mine = purchases.by_item.get(scored.item_id, [])
        if mine:
            last = pd.Timestamp(float(purchases.days[mine[-1]]) * DAY, unit="s", tz="UTC").date().isoformat()
            n = len({purchases.orders[i] for i in mine})
            evidence.append(
                Evidence(
                    kind="repeat_purchase",
                    summary=f"bought {n} time{'s' if n != 1 else ''}, last on {last}",
                    event_ids=purchases.event_ids_for([scored.item_id]),
                    item_ids=(scored.item_id,),
                    weight=float(f["orders"]),
                )
            )
        history = purchases.item_ids
        if "collaborative" in scored.sources or f["s_knn"] > 0:
            why = self.ranker.contributors(scored.item_id, history, by="collaborative")
            if why:
                names = ", ".join(self._title(i) for i, _ in why)
                evidence.append(
                    Evidence(
                        kind="similar_customers",
                        summary=f"often bought by customers who also bought {names}",
                        event_ids=purchases.event_ids_for([i for i, _ in why]),
                        item_ids=tuple(i for i, _ in why),
                        weight=float(f["s_knn"]),
                    )
                )
        if "text" in scored.sources:
            why = self.ranker.contributors(scored.item_id, history, by="text", k=2)
            if why:
                evidence.append(
                    Evidence(
                        kind="text_similarity",
                        summary="similar to " + ", ".join(self._title(i) for i, _ in why) + " you bought",
                        event_ids=purchases.event_ids_for([i for i, _ in why]),
                        item_ids=tuple(i for i, _ in why),
                        weight=float(f["s_text"]),
                    )
                )
        if "trending" in scored.sources and f["i_recent"] > 0:
            evidence.append(
                Evidence(
                    kind="trending",
                    summary=f"bought by {int(f['i_recent'])} customers in the last 4 weeks",
                    item_ids=(scored.item_id,),
                    weight=float(f["i_trend"]),
                )
            )
        if "popular" in scored.sources and f["i_pop_log"] > 0:
            buyers = round(float(np.expm1(f["i_pop_log"])))
            evidence.append(
                Evidence(
                    kind="popular",
                    summary=popular_summary(buyers),
                    item_ids=(scored.item_id,),
                    weight=float(f["i_pop_log"]),
                )
            )
        if session:
            evidence.append(
                Evidence(
                    kind="recent_view",
                    summary="related to what was viewed in this session",
                    item_ids=tuple(session),
                )
            )
        return tuple(evidence), scored.sources

    def _new_item_evidence(self, item_id: str, purchases: _Log, similarity: float) -> tuple[Evidence, ...]:
        """The reserved new-item slot's evidence; its weight is the item's best text similarity to the same
        recent purchases ``_taste_rows`` takes (its score, before any business-rule boost)."""
        recent = list(dict.fromkeys(reversed(purchases.item_ids)))[:50]
        j = self._text_index.get(item_id)
        rows = [(h, self._text_index[h]) for h in recent if h in self._text_index]
        if j is None or not rows:
            return (
                Evidence(
                    kind="text_similarity",
                    summary="new in the catalog",
                    item_ids=(item_id,),
                    weight=similarity,
                ),
            )
        sims = self._text[[r for _, r in rows]] @ self._text[j]
        best = [rows[int(i)][0] for i in np.argsort(-sims)[:2]]
        return (
            Evidence(
                kind="text_similarity",
                summary="new in the catalog, similar to "
                + ", ".join(self._title(i) for i in best)
                + " you bought",
                event_ids=purchases.event_ids_for(best),
                item_ids=(item_id, *best),
                weight=similarity,
            ),
        )

    def _cold(
        self,
        customer_id: str,
        k: int,
        now: datetime,
        country: str,
        session: Sequence[str],
        returned: set[str],
    ) -> list[Recommendation]:
        picks = self.cold.rank(now=now, country=country, session_item_ids=session, k=max(6 * k, 60))
        by_id = {p.item_id: p for p in picks}
        result = self._rules([(p.item_id, p.score) for p in picks], customer_id, now, returned, k)
        out = []
        for rank, (item_id, score) in enumerate(result.kept, start=1):
            pick = by_id[item_id]
            evidence = tuple(
                Evidence(
                    kind=kind,
                    summary=reason,
                    item_ids=(item_id, *session) if kind == "recent_view" else (item_id,),
                )
                for kind, reason in pick.why
            )
            out.append(
                Recommendation(
                    item=self.catalog[item_id],
                    score=float(score),
                    rank=rank,
                    sources=("cold_start", *dict.fromkeys(kind for kind, _ in pick.why)),
                    evidence=evidence,
                )
            )
        return out


def _settings_now(settings: Settings) -> datetime | None:
    if not settings.now:
        return None
    try:
        moment = datetime.fromisoformat(settings.now)
    except ValueError as exc:
        raise DataError(f"TAILOR_NOW is not an ISO timestamp: {settings.now!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
