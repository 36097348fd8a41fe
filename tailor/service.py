"""The service facade: one object that wires the store, retrieval, the agent and guardrails together.

The CLI and the HTTP API both talk to Tailor through this class, so they behave the same way.
Heavy parts (the embedding model, Qdrant, the ranker) are opened lazily, on first use.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from tailor.errors import ConsentError, DataError, NotFoundError
from tailor.importer import ImportReport, import_dir
from tailor.models import Consent, Customer, Event, EventKind, Explanation, Recommendation
from tailor.settings import Settings
from tailor.store import Store

__all__ = ["DEMO_SOURCE", "Tailor"]

DEMO_SOURCE = Path(__file__).resolve().parent.parent / "data" / "raw" / "online_retail.parquet"

Progress = Callable[[str, int, int], None]


class Tailor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(settings.store_path)
        self._lock = threading.RLock()

    @classmethod
    def open(cls, settings: Settings | None = None) -> Tailor:
        return cls(settings or Settings())

    def close(self) -> None:
        if "vectors" in self.__dict__:
            self.vectors.close()
        self.store.close()

    def __enter__(self) -> Tailor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self) -> datetime:
        if self.settings.now:
            moment = datetime.fromisoformat(self.settings.now)
            return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
        return datetime.now(UTC)

    # -- data ------------------------------------------------------------------------------------
    def import_dir(self, directory: Path, *, force: bool = False) -> ImportReport:
        try:
            return import_dir(self.store, directory, force=force)
        finally:
            _release_memory()

    def import_uci(
        self, parquet: Path = DEMO_SOURCE, *, customers_limit: int | None = None, force: bool = False
    ) -> ImportReport:
        """Convert UCI Online Retail to the canonical format under the data dir, then import it."""
        from tailor.uci import convert

        if not parquet.exists():
            raise DataError(f"{parquet} does not exist", hint="pass the path of online_retail.parquet")
        out = self.settings.data_dir / "canonical"
        marker = (
            f"{parquet.resolve()}:{parquet.stat().st_size}:{parquet.stat().st_mtime_ns}:{customers_limit}"
        )
        if force or self.store.get_meta("uci_source") != marker or not (out / "items.jsonl").exists():
            convert(parquet, out, customers_limit=customers_limit)
            self.store.set_meta("uci_source", marker)
            _release_memory()
        return self.import_dir(out, force=force)

    # -- index ------------------------------------------------------------------------------------
    @cached_property
    def embedder(self) -> Any:
        from retrieval.embeddings import Embedder

        return Embedder.from_settings(self.settings)

    @cached_property
    def vectors(self) -> Any:
        from retrieval.vector_store import VectorStore

        return VectorStore.from_settings(self.settings)

    @property
    def ranker_path(self) -> Path:
        return self.settings.data_dir / "ranker"

    def index(self, *, progress: Progress | None = None, force: bool = False) -> dict[str, Any]:
        """Embed what changed into Qdrant, (re)fit the ranker when the data changed, index histories."""
        from retrieval.indexer import index_catalog, index_history

        self.store.require_data()

        def stage(name: str) -> Callable[[int, int], None] | None:
            return (lambda done, total: progress(name, done, total)) if progress else None

        catalog = index_catalog(
            self.store, self.vectors, self.embedder, progress=stage("embedding catalog"), force=force
        )
        fingerprint = self.store.get_meta("import_fingerprint")
        stale = force or self.store.get_meta("ranker_fingerprint") != fingerprint
        if stale:
            for suffix in (".npz", ".json"):
                self.ranker_path.with_suffix(suffix).unlink(missing_ok=True)
            self.__dict__.pop("recommender", None)
        if progress:
            progress("fitting ranker", 0, 1)
        recommender = self.recommender
        if progress:
            progress("fitting ranker", 1, 1)
        if stale:
            collab = recommender.ranker.collab_vectors()
            if collab:
                ids = [i for i in collab if i in self.vectors.item_ids()]
                dim = len(next(iter(collab.values())))
                self.vectors.ensure_collections(collab_dim=dim)
                self.vectors.set_collab_vectors(ids, [collab[i] for i in ids])
            self.store.set_meta("ranker_fingerprint", fingerprint)
        history = index_history(self.store, self.vectors, self.embedder, force=force)
        return {
            "items_embedded": catalog.embedded,
            "items_skipped": catalog.skipped,
            "items_deleted": catalog.deleted,
            "ranker": "fitted" if stale else "unchanged",
            "history_indexed": history.upserted,
            "seconds": round(catalog.seconds + history.seconds, 2),
        }

    @cached_property
    def recommender(self) -> Any:
        from retrieval.recommender import HybridRecommender

        self.store.require_data()
        return HybridRecommender.build(
            self.store,
            self.settings,
            embedder=self.embedder,
            ranker_path=self.ranker_path,
            now=self.now(),
            impressions=self.store.impressions,
        )

    # -- answers ----------------------------------------------------------------------------------
    def _require_personalization(self, customer_id: str) -> Customer:
        customer = self.store.get_customer(customer_id)
        if not customer.consent.personalization:
            raise ConsentError(
                f"customer {customer_id!r} has not agreed to personalization",
                hint="no profiling without consent; update it with PUT /v1/customers/ID/consent",
            )
        return customer

    def recommend(self, customer_id: str, k: int = 10, *, shown: bool = False) -> list[Recommendation]:
        """The customer's top ``k``. ``shown=True`` is for a surface the customer sees (a storefront
        widget): the items then count toward the 30-day impression cap.

        The default does not count: today's callers are the support console (the API's recommendations
        route) and the CLI, where staff look at the list and the customer sees none of it. Counting those
        looks would hide items from a customer who was never shown them, so only real exposures (a sent
        email, or ``shown=True``) are recorded.
        """
        self._require_personalization(customer_id)
        recs: list[Recommendation] = self.recommender.recommend(customer_id, k, now=self.now())
        if shown:
            self.store.record_impressions(customer_id, [r.item.id for r in recs], self.now(), channel="web")
        return recs

    @cached_property
    def writer(self) -> Any:
        from agent import make_writer

        return make_writer(self.settings)

    @cached_property
    def brand(self) -> Any:
        from guardrails.brand_config import load_brand

        return load_brand(self.settings.brand_config)

    def agent_deps(self, *, writer: Any | None = None, contacts: Any | None = None) -> Any:
        from agent import AgentDeps

        return AgentDeps(
            store=self.store,
            recommender=self.recommender,
            settings=self.settings,
            writer=writer or self.writer,
            brand=self.brand,
            now=self.now(),
            contacts=contacts,
            catalog=self.recommender.catalog,
        )

    def email(
        self,
        customer_id: str,
        trigger: Any = "campaign",
        *,
        writer: Any | None = None,
        send: bool = False,
    ) -> Any:
        """An email that passed every rail, or a refusal; both with the audit trace.

        ``send=True`` records the contact, so the frequency cap holds the next one back; a preview
        (the default) is capped by earlier sends but does not count as one."""
        from agent import Trigger, run_email_sync

        if isinstance(trigger, str):
            try:
                trigger = Trigger(kind=trigger)
            except ValueError as exc:
                raise DataError(
                    f"unknown trigger {trigger!r}",
                    hint="use campaign, abandoned_cart, browse, support_contact or win_back",
                ) from exc
        if not self.store.has_customer(customer_id):
            self.store.get_customer(customer_id)  # raises NotFoundError with its hint
        outcome = run_email_sync(
            self.agent_deps(writer=writer, contacts=self.store.contacts), customer_id, trigger
        )
        if send and outcome.email is not None:
            self.store.record_contact(customer_id, self.now())
            # A sent email shows its products to the customer: they count toward the 30-day impression
            # cap. A preview is seen by staff only, so it does not.
            self.store.record_impressions(
                customer_id, [p.item_id for p in outcome.email.products], self.now(), channel="email"
            )
        return outcome

    def why(self, customer_id: str, item_id: str) -> Explanation:
        from agent import explain

        self._require_personalization(customer_id)
        self.store.get_item(item_id)
        return explain(self.store, self.recommender, self.settings, customer_id, item_id, now=self.now())

    def search_history(self, customer_id: str, text: str, limit: int) -> list[Any]:
        from agent.support import history_search

        return list(history_search(self.vectors, self.embedder)(customer_id, text, limit))

    def ask_catalog(
        self, customer_id: str, question: str, bought: Sequence[str], leave_out: Sequence[str], limit: int
    ) -> list[Any]:
        from retrieval.search import ask_catalog

        return ask_catalog(
            self.vectors, self.embedder, customer_id, question, bought, limit=limit, exclude_ids=leave_out
        )

    def support(self, customer_id: str, question: str) -> Any:
        from agent import support_suggestions

        if not question.strip():
            raise DataError("the question is empty", hint="ask about the customer in plain words")
        self.store.get_customer(customer_id)
        return support_suggestions(
            self.store,
            self.recommender,
            self.brand,
            customer_id,
            question,
            now=self.now(),
            search=self.search_history,
            ask=self.ask_catalog,
        )

    # -- changes ----------------------------------------------------------------------------------
    def ingest(self, events: Sequence[Event], customers: Sequence[Customer] = ()) -> dict[str, int]:
        """Store new events (and profiles) and update each customer's taste and history at once."""
        from retrieval.indexer import update_customer

        with self._lock:
            # Every reference is checked before anything is written, so a batch lands whole or not at all.
            arriving = {c.id for c in customers}
            for customer_id in dict.fromkeys(e.customer_id for e in events):
                if customer_id not in arriving and not self.store.has_customer(customer_id):
                    raise NotFoundError(
                        "customer",
                        customer_id,
                        hint="send an identify call (or the customer record) first",
                    )
            for item_id in dict.fromkeys(e.item_id for e in events if e.item_id is not None):
                self.store.get_item(item_id)
            ids = self.store.add_customers_and_events(customers, events)
            stored = [e.model_copy(update={"id": i}) for e, i in zip(events, ids, strict=True)]
            observed = self.recommender.observe(stored) if "recommender" in self.__dict__ else 0
            touched = sorted({e.customer_id for e in events})
            for customer_id in touched:
                update_customer(self.store, self.vectors, self.embedder, customer_id)
        return {
            "events": len(ids),
            "customers": len(customers),
            "updated_customers": len(touched),
            "observed": observed,
        }

    def set_consent(self, customer_id: str, consent: Consent) -> Customer:
        customer = self.store.get_customer(customer_id).model_copy(update={"consent": consent})
        self.store.upsert_customers([customer])
        return customer

    def demo_customers(self, n: int = 3) -> list[str]:
        """Customers worth showing: opted in, with a long history, those with a support ticket first."""
        busiest = self.store.busiest_customers(limit=200)
        with_ticket = set(self.store.customers_with(EventKind.SUPPORT_TICKET))
        chosen: list[str] = []
        for customer_id in sorted(busiest, key=lambda c: (c not in with_ticket, busiest.index(c))):
            customer = self.store.get_customer(customer_id)
            if customer.consent.marketing_email and customer.consent.personalization:
                chosen.append(customer_id)
            if len(chosen) == n:
                break
        return chosen

    def forget(self, customer_id: str) -> dict[str, int]:
        """Delete everything about a customer: store rows (events, contacts, impressions), Qdrant points,
        cached embeddings of their texts, their rows in the saved ranker, and in-memory state.

        Returns what went, by part. The derived copies go first and the store record last, so that if a
        step fails the customer is still there and calling forget again finishes the job.
        """
        with self._lock:
            self.store.get_customer(customer_id)
            # The embedding cache is keyed by sha256(model, text): the keys come from the texts, which are
            # gone once the events are deleted.
            texts = [e.text for e in self.store.events(customer_id) if e.text and e.text.strip()]
            deleted: dict[str, int] = {
                "embedding_cache_entries": self.embedder.forget_texts(texts) if texts else 0
            }
            for key, value in self.vectors.delete_customer(customer_id).items():
                deleted[f"qdrant_{key}"] = value
            deleted.update(self._forget_in_ranker(customer_id))
            deleted = {**self.store.delete_customer(customer_id), **deleted}
            if "recommender" in self.__dict__:
                # Again after the store rows went: a request in between may have cached them anew.
                for key, value in self.recommender.forget(customer_id).items():
                    deleted[key] = deleted.get(key, 0) + value
        return deleted

    def _forget_in_ranker(self, customer_id: str) -> dict[str, int]:
        """Purge the customer from the fitted ranker (in memory, if loaded) and from its saved files."""
        from retrieval.ranker import Ranker

        saved = customer_id in Ranker.saved_customer_ids(self.ranker_path)
        if "recommender" in self.__dict__:
            counts: dict[str, int] = self.recommender.forget(customer_id)
            ranker = self.recommender.ranker
        elif saved:
            ranker = Ranker.load(self.ranker_path)
            counts = {"ranker_rows": ranker.forget(customer_id)}
        else:
            return {"ranker_rows": 0}
        # Also when memory was purged already (an earlier forget failed before the write).
        if counts["ranker_rows"] or saved:
            ranker.save(self.ranker_path)
        return counts

    def health(self) -> dict[str, bool]:
        checks = {"store": True, "qdrant": False, "llm": True}
        try:
            self.store.counts()
        except Exception:
            checks["store"] = False
        try:
            checks["qdrant"] = bool(self.vectors.health())
        except Exception:
            checks["qdrant"] = False
        if self.settings.writer == "openai":
            checks["llm"] = _endpoint_up(self.settings)
        return checks


def _endpoint_up(settings: Settings) -> bool:
    import httpx

    if not settings.llm_base_url:
        return False
    try:
        response = httpx.get(
            settings.llm_base_url.rstrip("/") + "/models",
            timeout=2.0,
            headers={"Authorization": f"Bearer {settings.llm_api_key.get_secret_value()}"},
        )
    except httpx.HTTPError:
        return False
    return response.status_code < 500


def _release_memory() -> None:
    """Hand the pages of an import's dead frames back to the OS.

    Conversion and import build large pandas frames that are garbage once they return, but glibc keeps the
    freed pages in its arenas; without a trim, the index step's peak (model, ranker fit) stacks on top of
    the import's in the one process ``tailor demo`` runs, and the demo's peak RSS goes over 2 GB.
    """
    gc.collect()
    arrow = sys.modules.get("pyarrow")
    if arrow is not None:
        # Arrow buffers live in Arrow's own allocator pool, which a glibc trim does not reach.
        arrow.default_memory_pool().release_unused()
    # Not glibc (musl, macOS): nothing to trim.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
