"""The service: one object that wires the store, retrieval, the agent and guardrails together.

The CLI, the HTTP API and the job runner all talk to Tailor through this class (``tailor.app.facade`` is
the contract), so they behave the same way. Heavy parts (the embedding model, Qdrant, the ranker) are opened
lazily, on first use; the ranker's life (fits, refits, swaps) is ``tailor.app.model``'s.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TypedDict, TypeVar

from agent import (
    TRIGGER_KINDS,
    AgentDeps,
    EmailOutcome,
    Trigger,
    explain,
    make_writer,
    run_email_sync,
    support_suggestions,
)
from agent.graph import build_graph
from agent.intent import IntentModel
from agent.support import SupportAnswer, SupportModel, history_search
from agent.support_model import make_support_model
from agent.writers import TemplateWriter, Writer
from retrieval.embeddings import Embedder
from retrieval.indexer import index_catalog, index_history, update_customer
from retrieval.ranker import Ranker
from retrieval.recommender import HybridRecommender
from retrieval.search import CatalogHit, ask_catalog
from retrieval.vector_store import HistoryHit, VectorStore
from tailor.app.llm_endpoint import llm_endpoint_up
from tailor.app.model import FitResult, ModelStatus, RankerModel, RefitStart
from tailor.core.brand import BrandConfig, load_brand
from tailor.core.errors import ConsentError, DataError, NotFoundError
from tailor.core.models import (
    Consent,
    Customer,
    Email,
    Event,
    EventKind,
    Explanation,
    JsonObject,
    Recommendation,
)
from tailor.core.sends import tag_email, token_of
from tailor.core.settings import Settings
from tailor.data import sources
from tailor.data.importer import ImportReport
from tailor.data.sources import DEMO_SOURCE
from tailor.data.sources import import_source as _import_source
from tailor.data.store import Store

__all__ = ["DEMO_SOURCE", "IndexReport", "Tailor"]

Progress = Callable[[str, int, int], None]
T = TypeVar("T")


class IndexReport(TypedDict):
    items_embedded: int
    items_skipped: int
    items_deleted: int
    items_unnamed: int
    ranker: str
    label_days: int
    history_indexed: int
    seconds: float


class Tailor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(settings.store_database)
        self.model = RankerModel(
            self.store, settings, embedder=lambda: self.embedder, vectors=lambda: self.vectors, now=self.now
        )

    @classmethod
    def open(cls, settings: Settings | None = None) -> Tailor:
        return cls(settings or Settings())

    def close(self) -> None:
        # A fit under way reads the store and writes Qdrant: let it finish before they close.
        self.model.close()
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
    @property
    def _destination(self) -> sources.Destination:
        return sources.Destination(self.store, self.settings.data_dir, self.brand.currency)

    def import_dir(self, directory: Path, *, force: bool = False) -> ImportReport:
        return sources.import_folder(self._destination, directory, force=force)

    def import_uci(
        self,
        parquet: Path | Sequence[Path] = DEMO_SOURCE,
        *,
        customers_limit: int | None = None,
        force: bool = False,
    ) -> ImportReport:
        return sources.import_uci(self._destination, parquet, customers_limit=customers_limit, force=force)

    def import_tafeng(
        self, path: Path, *, customers_limit: int | None = None, force: bool = False
    ) -> ImportReport:
        return sources.import_tafeng(self._destination, path, customers_limit=customers_limit, force=force)

    def import_source(
        self, sources: Sequence[Path], *, customers_limit: int | None = None, force: bool = False
    ) -> ImportReport:
        """``tailor import``: see ``tailor.data.sources.import_source``."""
        return _import_source(self._destination, sources, customers_limit=customers_limit, force=force)

    # -- index ------------------------------------------------------------------------------------
    @cached_property
    def embedder(self) -> Embedder:
        return Embedder.from_settings(self.settings)

    @cached_property
    def vectors(self) -> VectorStore:
        return VectorStore.from_settings(self.settings)

    def index(self, *, progress: Progress | None = None, force: bool = False) -> IndexReport:
        """Embed what changed into Qdrant, (re)fit the ranker when the data changed, index histories.

        The data changed when a new import landed, events arrived or a customer was forgotten since the
        ranker was fitted (see ``model_status``)."""
        self.store.require_data()

        def stage(name: str) -> Callable[[int, int], None] | None:
            return (lambda done, total: progress(name, done, total)) if progress else None

        catalog = index_catalog(
            self.store, self.vectors, self.embedder, progress=stage("embedding catalog"), force=force
        )
        stale = force or self.model.status(fresh=True)["stale"]
        if progress:
            progress("fitting ranker", 0, 1)
        if stale:
            self.model.fit()
        else:
            self.model.recommender  # noqa: B018 -- load the saved ranker now, not on the first request
        if progress:
            progress("fitting ranker", 1, 1)
        history = index_history(self.store, self.vectors, self.embedder, force=force)
        return {
            "items_embedded": catalog.embedded,
            "items_skipped": catalog.skipped,
            "items_deleted": catalog.deleted,
            "items_unnamed": catalog.unnamed,
            "ranker": "fitted" if stale else "unchanged",
            "label_days": self.model.recommender.ranker.label_days_used,
            "history_indexed": history.upserted,
            "seconds": round(catalog.seconds + history.seconds, 2),
        }

    # -- the model (``tailor.app.model``) ---------------------------------------------------------
    def model_status(self) -> ModelStatus:
        return self.model.status()

    def shadow_eval(self) -> JsonObject:
        """The served ranker judged on what was bought since its fit, and the drift of its inputs
        (``tailor.app.shadow``)."""
        from tailor.app.shadow import shadow_eval

        return shadow_eval(
            self.store,
            self.recommender.ranker,
            self.now(),
            days=self.settings.shadow_days,
            stale_ratio=self.settings.shadow_stale_ratio,
            lock=self.model.lock,
            served=self._served_ranker,
        )

    def _served_ranker(self) -> Ranker | None:
        # What answers now, as loaded: no reload or fetch here, since this is asked under the model lock,
        # which a reload may take after the refits' gate (the order every other path takes them in).
        loaded = self.model.loaded
        return loaded.ranker if loaded is not None else None

    def refit(self, *, isolated: bool = False) -> FitResult:
        return self.model.fit(isolated=isolated)

    def refit_in_background(self) -> RefitStart:
        return self.model.fit_in_background()

    @property
    def recommender(self) -> HybridRecommender:
        return self.model.recommender

    @recommender.setter
    def recommender(self, recommender: HybridRecommender) -> None:
        self.model.install(recommender)

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
    def writer(self) -> Writer:
        return make_writer(self.settings)

    @cached_property
    def brand(self) -> BrandConfig:
        return load_brand(self.settings.brand_config)

    def agent_deps(
        self,
        *,
        writer: Writer | None = None,
        contacts: Callable[[str], Sequence[datetime]] | None = None,
        decision_key: str = "",
    ) -> AgentDeps:
        return AgentDeps(
            store=self.store,
            recommender=self.recommender,
            settings=self.settings,
            writer=writer or self.writer,
            brand=self.brand,
            now=self.now(),
            contacts=contacts,
            catalog=self.recommender.catalog,
            similarity=self.embedder.similarity,
            decision_key=decision_key,
        )

    def email(
        self,
        customer_id: str,
        trigger: Trigger | str = "campaign",
        *,
        writer: Writer | None = None,
        send: bool = False,
        decision_key: str = "",
        send_secret: bytes | None = None,
    ) -> EmailOutcome:
        """An email that passed every rail, or a refusal; both with the audit trace.

        ``send=True`` records the contact, so the frequency cap holds the next one back; a preview
        (the default) is capped by earlier sends but does not count as one. With ``send_secret`` (the ops
        database's, ``Ops.secret("send")``) a sent email's product links carry its send's token, as a job's
        do, and the outcome's ``send_id`` is that token: a click on one comes back tied to this send."""
        if isinstance(trigger, str):
            if trigger not in TRIGGER_KINDS:
                raise DataError(f"unknown trigger {trigger!r}", hint=f"use one of {', '.join(TRIGGER_KINDS)}")
            trigger = Trigger.model_validate({"kind": trigger})
        if not self.store.has_customer(customer_id):
            self.store.get_customer(customer_id)  # raises NotFoundError with its hint
        outcome = run_email_sync(
            self.agent_deps(writer=writer, contacts=self.store.contacts, decision_key=decision_key),
            customer_id,
            trigger,
        )
        if send and outcome.email is not None:
            # A sent email shows its products to the customer: they count toward the 30-day impression
            # cap. A preview is seen by staff only, so it does not. The job runner records its sends the
            # same way, under the job item's id.
            send_id = "direct:" + uuid.uuid4().hex
            shown = [p.item_id for p in outcome.email.products]
            if send_secret is not None:
                token = token_of(send_secret, send_id)
                tagged = Email.model_validate(tag_email(outcome.email.model_dump(mode="json"), token))
                outcome = dataclasses.replace(outcome, email=tagged, send_id=token)
            self.store.record_send(send_id, customer_id, shown, self.now())
        return outcome

    def why(self, customer_id: str, item_id: str) -> Explanation:
        self._require_personalization(customer_id)
        self.store.get_item(item_id)
        return explain(
            self.store,
            self.recommender,
            self.settings,
            self.brand,
            customer_id,
            item_id,
            now=self.now(),
            writer=self.writer,
        )

    def search_history(self, customer_id: str, text: str, limit: int) -> list[HistoryHit]:
        return list(history_search(self.vectors, self.embedder)(customer_id, text, limit))

    def ask_catalog(
        self, customer_id: str, question: str, bought: Sequence[str], leave_out: Sequence[str], limit: int
    ) -> list[CatalogHit]:
        return ask_catalog(
            self.vectors, self.embedder, customer_id, question, bought, limit=limit, exclude_ids=leave_out
        )

    def support(self, customer_id: str, question: str) -> SupportAnswer:
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
            intents=self.intents,
            model=self.support_model,
        )

    @cached_property
    def support_model(self) -> SupportModel | None:
        """The model the support agent thinks with (``TAILOR_SUPPORT_THINKER``), or None: offline."""
        return make_support_model(self.settings, self.brand)

    @cached_property
    def intents(self) -> IntentModel:
        """The support agent's offline intent model, on the store's own sentence encoder."""
        # The shop's own examples are cached like any catalog text; the questions are never written down.
        return IntentModel(
            lambda texts: self.embedder.encode(texts, keep=False),
            examples=lambda texts: self.embedder.encode(texts),
        )

    # -- changes ----------------------------------------------------------------------------------
    def ingest(self, events: Sequence[Event], customers: Sequence[Customer] = ()) -> dict[str, int]:
        """Store new events (and profiles) and update each customer's taste and history at once.

        Returns what was done: ``events`` written, ``duplicates`` not written because they were stored
        already or repeated in the batch, unchanged; ``customers`` profiles written, ``updated_customers``
        whose taste and history were refreshed, ``observed`` events new to the in-memory recommender.
        An event whose id is stored (or repeated) with other content refuses the batch (ConflictError).
        """
        with self.model.lock:
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
            written = self.store.add_batch(customers, events)
            # Only what the store wrote: the recommender's state must hold the stored event under its id,
            # never an incoming one the store did not take (it could name another customer's event). A
            # conflict has raised in add_batch by now, before anything was written or observed.
            observed = self.model.observe(written.new)
            # Duplicates' customers too: a re-send after a failed update (Qdrant down) finishes that update.
            touched = sorted({e.customer_id for e in events})
            for customer_id in touched:
                update_customer(self.store, self.vectors, self.embedder, customer_id)
        return {
            "events": len(written.new),
            "duplicates": written.duplicates,
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
        with self.model.lock:
            self.store.get_customer(customer_id)
            # The embedding cache is keyed by sha256(model, text): the keys come from the texts, which are
            # gone once the events are deleted.
            texts = [e.text for e in self.store.events(customer_id) if e.text and e.text.strip()]
            self.embedder.forget_transient()
            deleted: dict[str, int] = {
                "embedding_cache_entries": self.embedder.forget_texts(texts) if texts else 0
            }
            for key, value in self.vectors.delete_customer(customer_id).items():
                deleted[f"qdrant_{key}"] = value
            deleted.update(self.model.forget(customer_id))
            deleted = {**self.store.delete_customer(customer_id), **deleted}
            for key, value in self.model.forget_cached(customer_id).items():
                deleted[key] = deleted.get(key, 0) + value
        return deleted

    def warm_up(self) -> dict[str, float]:
        """Load and run once everything a first request would otherwise load: the embedding model, Qdrant,
        the ranker and recommender, the agent graph, prompts and rails. Returns seconds per part.

        The HTTP service runs this before ``/readyz`` says ready: without it, the first requests after a
        restart each paid part of it (p50 1.6 s, p95 3.3 s over the first 25) while readiness said ready.
        It writes nothing: the email is a preview by the template writer, so the model is not called and
        no send is recorded. A store with no data has nothing to warm."""
        took: dict[str, float] = {}

        def part(name: str, work: Callable[[], T]) -> T:
            start = time.perf_counter()
            result = work()
            took[name] = round(time.perf_counter() - start, 3)
            return result

        if self.store.counts()["items"] == 0:
            return took
        part("embedder", lambda: self.embedder.encode(["warm-up"], keep=False))
        part("qdrant", lambda: self.vectors.health())
        part("recommender", lambda: self.recommender)
        part("graph", build_graph)
        customer = next((c.id for c in self.store.customers(limit=100) if c.consent.personalization), None)
        if customer is not None:
            recs = part("recommend", lambda: self.recommend(customer, 10))
            if recs:
                part("why", lambda: self.why(customer, recs[0].item.id))
            part("support", lambda: self.support(customer, "What would they like next?"))
            part("email", lambda: self.email(customer, writer=TemplateWriter()))
        return took

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
            checks["llm"] = llm_endpoint_up(self.settings)
        return checks
