"""The service facade: one object that wires the store, retrieval, the agent and guardrails together.

The CLI and the HTTP API both talk to Tailor through this class, so they behave the same way.
Heavy parts (the embedding model, Qdrant, the ranker) are opened lazily, on first use.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from tailor.core.errors import BackendError, ConsentError, DataError, NotFoundError, TailorError
from tailor.core.logs import describe
from tailor.core.models import Consent, Customer, Event, EventKind, Explanation, Recommendation
from tailor.core.settings import Settings
from tailor.data.importer import ImportReport, import_dir
from tailor.data.store import Store

__all__ = ["DEMO_SOURCE", "Refits", "Tailor"]

_ROOT = Path(__file__).resolve().parents[2]
# The demo store: the retailer's two years, Online Retail II's 2009-2010 sheet, then Online Retail.
DEMO_SOURCE: tuple[Path, ...] = (
    _ROOT / "data" / "raw" / "online_retail_ii_2009_2010.parquet",
    _ROOT / "data" / "raw" / "online_retail.parquet",
)

Progress = Callable[[str, int, int], None]

_FITTED = "ranker_fitted"
log = logging.getLogger("tailor.app.service")


class Refits:
    """One ranker fit at a time, in the foreground or on a background thread, with one more run when a
    fit is asked for during a fit; ``on_checkpoint`` lets a test act at a known point of a fit."""

    def __init__(self) -> None:
        self._fit = threading.Lock()
        self._state = threading.Lock()
        self._thread: threading.Thread | None = None
        self._again = False
        self.running = False
        self.done = 0
        self.error: str | None = None
        self.on_checkpoint: Callable[[str], None] | None = None
        self.child: subprocess.Popen[str] | None = None

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Held by a fit and by the first load of the ranker, so a load never reads a file a fit is
        about to replace (and then shadows the fit's ranker with the old one)."""
        with self._fit:
            yield

    @contextlib.contextmanager
    def tracking(self) -> Iterator[None]:
        """Around one fit: ``running`` while it runs, then ``done`` counts it or ``error`` says why not."""
        self.running = True
        try:
            yield
        except Exception as exc:
            # Tailor's own errors say why in words meant for the operator (and carry no profile data);
            # anything else is named by type and place only, as the logs name it.
            self.error = f"{type(exc).__name__}: {exc}" if isinstance(exc, TailorError) else describe(exc)
            raise
        else:
            self.error = None
            self.done += 1
        finally:
            self.running = False

    def checkpoint(self, name: str) -> None:
        if self.on_checkpoint is not None:
            self.on_checkpoint(name)

    def start(self, fit: Callable[[], object]) -> str:
        with self._state:
            if self._thread is not None:
                self._again = True
                return "queued"
            self._thread = threading.Thread(target=self._loop, args=(fit,), name="tailor-refit", daemon=True)
            self._thread.start()
            return "started"

    def _loop(self, fit: Callable[[], object]) -> None:
        while True:
            try:
                fit()
            except Exception as exc:
                log.warning("background refit failed: %s", describe(exc))
            with self._state:
                if not self._again:
                    self._thread = None
                    return
                self._again = False

    def wait(self, timeout: float | None = None) -> bool:
        """True once no background fit is running or queued; False if ``timeout`` ran out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._state:
                thread = self._thread
            if thread is None:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            thread.join(left)

    def close(self) -> None:
        """Stop: nothing queued runs, a fit in a worker process is ended (the old ranker stays saved)."""
        with self._state:
            self._again = False
        child = self.child
        if child is not None:
            with contextlib.suppress(OSError):
                child.terminate()
        self.wait()


class Tailor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(settings.store_path)
        self._lock = threading.RLock()
        self.refits = Refits()
        self._recommender: Any = None

    @classmethod
    def open(cls, settings: Settings | None = None) -> Tailor:
        return cls(settings or Settings())

    def close(self) -> None:
        # A fit under way reads the store and writes Qdrant: let it finish before they close.
        self.refits.close()
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
            return import_dir(self.store, directory, force=force, currency=self.brand.currency)
        finally:
            _release_memory()

    def import_uci(
        self,
        parquet: Path | Sequence[Path] = DEMO_SOURCE,
        *,
        customers_limit: int | None = None,
        force: bool = False,
    ) -> ImportReport:
        """Convert UCI Online Retail to the canonical format under the data dir, then import it.

        Several files (Online Retail II's 2009-2010 year beside Online Retail) make one history."""
        from tailor.data.uci import convert

        paths = [parquet] if isinstance(parquet, Path) else list(parquet)
        for path in paths:
            if not path.exists():
                raise DataError(f"{path} does not exist", hint="pass the path of online_retail.parquet")
        out = self.settings.data_dir / "canonical"
        marker = ";".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths)
        marker += f":{customers_limit}"
        if force or self.store.get_meta("uci_source") != marker or not (out / "items.jsonl").exists():
            convert(paths, out, customers_limit=customers_limit)
            self.store.set_meta("uci_source", marker)
            # The canonical folder no longer holds Ta-Feng: its marker must not skip a later conversion.
            self.store.set_meta("tafeng_source", None)
            _release_memory()
        return self.import_dir(out, force=force)

    def import_tafeng(
        self, path: Path, *, customers_limit: int | None = None, force: bool = False
    ) -> ImportReport:
        """Convert the Ta-Feng grocery file (.csv.zip or .csv) to the canonical format under the data dir,
        then import it. Its clock is historical: set TAILOR_NOW to the morning after its last day."""
        from tailor.data.tafeng import convert

        if not path.exists():
            raise DataError(f"{path} does not exist", hint="pass the path of ta_feng.csv.zip")
        out = self.settings.data_dir / "canonical"
        marker = f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}:{customers_limit}"
        if force or self.store.get_meta("tafeng_source") != marker or not (out / "items.jsonl").exists():
            convert(path, out, customers_limit=customers_limit)
            self.store.set_meta("tafeng_source", marker)
            # The canonical folder now holds Ta-Feng: a UCI marker left by an earlier import would make the
            # ranking eval take this store for UCI Online Retail (and its reference cut).
            self.store.set_meta("uci_source", None)
            _release_memory()
        return self.import_dir(out, force=force)

    def import_source(
        self, sources: Sequence[Path], *, customers_limit: int | None = None, force: bool = False
    ) -> ImportReport:
        """``tailor import``: a canonical folder, UCI Online Retail .parquet files, or the Ta-Feng file
        (.csv.zip or .csv, told by its columns). Nothing given: the demo store."""
        from tailor.data.tafeng import COLUMNS, is_tafeng, read_header

        paths = list(sources) or list(DEMO_SOURCE)
        if len(paths) > 1 and any(p.suffix != ".parquet" for p in paths):
            raise DataError(
                "several sources must all be UCI .parquet files", hint="import one canonical folder at a time"
            )
        path = paths[0]
        if path.suffix == ".parquet":
            return self.import_uci(paths, customers_limit=customers_limit, force=force)
        if not path.exists():
            raise DataError(
                f"{path} does not exist",
                hint="pass a canonical folder, UCI .parquet files or the Ta-Feng .csv.zip",
            )
        if path.is_dir():
            if customers_limit is not None:
                raise DataError(
                    "--customers-limit keeps the busiest customers of a UCI or Ta-Feng file",
                    hint="a canonical folder is imported as it is: leave the option out",
                )
            return self.import_dir(path, force=force)
        if path.suffix.lower() not in (".csv", ".zip"):
            raise DataError(
                f"{path}: Tailor does not import {path.suffix or 'extension-less'} files",
                hint="pass a canonical folder, UCI .parquet files or the Ta-Feng .csv.zip",
            )
        columns = read_header(path)
        if is_tafeng(columns):
            return self.import_tafeng(path, customers_limit=customers_limit, force=force)
        canonical = path.stem.split(".")[0] in ("items", "customers", "events")
        raise DataError(
            f"{path} is not a file Tailor knows: its columns are {columns[:10]}",
            hint=(
                "a canonical items/customers/events .csv goes in a folder: pass the folder"
                if canonical
                else f"the Ta-Feng file's columns are {', '.join(COLUMNS)}"
            ),
        )

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
        """Embed what changed into Qdrant, (re)fit the ranker when the data changed, index histories.

        The data changed when a new import landed, events arrived or a customer was forgotten since the
        ranker was fitted (see ``model_status``)."""
        from retrieval.indexer import index_catalog, index_history

        self.store.require_data()

        def stage(name: str) -> Callable[[int, int], None] | None:
            return (lambda done, total: progress(name, done, total)) if progress else None

        catalog = index_catalog(
            self.store, self.vectors, self.embedder, progress=stage("embedding catalog"), force=force
        )
        stale = force or self.model_status()["stale"]
        if progress:
            progress("fitting ranker", 0, 1)
        if stale:
            self.refit()
        else:
            self.recommender  # noqa: B018 -- load the saved ranker now, not on the first request
        if progress:
            progress("fitting ranker", 1, 1)
        history = index_history(self.store, self.vectors, self.embedder, force=force)
        return {
            "items_embedded": catalog.embedded,
            "items_skipped": catalog.skipped,
            "items_deleted": catalog.deleted,
            "items_unnamed": catalog.unnamed,
            "ranker": "fitted" if stale else "unchanged",
            "label_days": self.recommender.ranker.label_days_used,
            "history_indexed": history.upserted,
            "seconds": round(catalog.seconds + history.seconds, 2),
        }

    # -- the model's life ---------------------------------------------------------------------------
    def model_status(self) -> dict[str, Any]:
        """How stale the fitted ranker is: what changed in the store since it was fitted.

        ``forgotten_since_fit`` > 0 means the item-level aggregates (neighbours, factors, trees, Qdrant's
        collaborative vectors) still hold a share learned from a forgotten customer's purchases. Their
        rows and ids went at once; that share goes with the next refit."""
        fitted = self.store.get_meta(_FITTED) or {}
        saved = self.ranker_path.with_suffix(".npz").exists()
        seen = fitted.get("changes", {}) if saved else {}
        since = {kind: total - int(seen.get(kind, 0)) for kind, total in self.store.changes().items()}
        return {
            "fitted": saved,
            "fitted_at": fitted.get("fitted_at") if saved else None,
            "fit_seconds": fitted.get("seconds") if saved else None,
            "customers": fitted.get("customers") if saved else None,
            # The label window the fit used and why (shorter than configured on a young store).
            "fit": fitted.get("fit") if saved else None,
            "purchases_since_fit": since["purchases"],
            "forgotten_since_fit": since["forgotten"],
            "stale": (
                not saved
                or self.store.get_meta("ranker_fingerprint") != self._ranker_input()
                or any(since.values())
            ),
            "refitting": self.refits.running,
            "refits": self.refits.done,
            "last_error": self.refits.error,
        }

    def _ranker_input(self) -> Any:
        """What the ranker is fitted on, as the last import left it (``tailor.data.importer.ranker_input``): a
        change to an item's description alone does not change it. A store imported before that fingerprint
        existed has the import's own."""
        from tailor.data.importer import RANKER_INPUT

        value = self.store.get_meta(RANKER_INPUT)
        return value if value is not None else self.store.get_meta("import_fingerprint")

    def refit(self, *, isolated: bool = False) -> dict[str, Any]:
        """Fit the ranker anew on the store's purchases and swap it in; one fit at a time.

        Requests keep being answered by the old ranker while the new one fits (about a minute on the demo
        store, on two cores). A customer forgotten during the fit is purged from the new ranker before it
        is swapped in, and stays counted in ``forgotten_since_fit`` until a fit that never saw them.
        ``isolated`` fits in a child process at a lower priority (``tailor.app.fit_worker``), as a server
        must.
        """
        with self.refits.exclusive(), self.refits.tracking():
            return self._fit_and_swap(isolated=isolated)

    def _fit_and_swap(self, *, isolated: bool = False) -> dict[str, Any]:
        from retrieval.recommender import HybridRecommender, item_text_vectors

        self.store.require_data()
        seen = self.store.changes()
        fingerprint = self._ranker_input()
        started = time.perf_counter()
        vectors = item_text_vectors(self.store.items(), self.embedder)
        ranker = self._fit_in_child(vectors) if isolated else self._fit_here(vectors)
        seconds = round(time.perf_counter() - started, 2)
        self.refits.checkpoint("fitted")
        with self._lock:
            present = set(self.store.customer_ids())
            purged = [c for c in list(ranker.customer_ids) if c not in present]
            for customer_id in purged:
                ranker.forget(customer_id)
            recommender = HybridRecommender(
                self.store,
                ranker,
                settings=self.settings,
                text_vectors=vectors,
                impressions=self.store.impressions,
            )
            if self._recommender is not None and ranker.customer_ids:
                # Swapping over a recommender that is answering requests: take over its per-customer caches
                # (under the lock that forget takes, so no forgotten customer's), and build the ranker's own
                # caches (float64 copies, item blocks) here rather than in the first request after the swap.
                # A ranker that cannot answer is not swapped in. With nothing loaded yet (a first fit, as in
                # `tailor demo`) nobody is kept waiting, and warming would only raise the peak memory.
                recommender.adopt_caches(self._recommender)
                recommender.recommend(ranker.customer_ids[0], 10, now=self.now())
            ranker.save(self.ranker_path)
            collab = ranker.collab_vectors()
            known = self.vectors.item_ids()
            ids = [i for i in collab if i in known]
            if ids:
                self.vectors.ensure_collections(collab_dim=len(collab[ids[0]]))
                self.vectors.set_collab_vectors(ids, [collab[i] for i in ids])
            self._recommender = recommender
            self.store.set_meta("ranker_fingerprint", fingerprint)
            self.store.set_meta(
                _FITTED,
                {
                    "changes": seen,
                    "fitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "seconds": seconds,
                    "customers": len(ranker.customer_ids),
                    "fit": ranker.fit_report,
                },
            )
        return {
            "seconds": seconds,
            "customers": len(ranker.customer_ids),
            "purged_during_fit": len(purged),
            "fit": ranker.fit_report,
        }

    def _fit_here(self, vectors: dict[str, Any]) -> Any:
        from retrieval.ranker import Ranker
        from tailor.data.frame import purchases_from_store

        ranker = Ranker().fit(purchases_from_store(self.store), vectors or None, now=self.now())
        _release_memory()
        return ranker

    def _fit_in_child(self, vectors: dict[str, Any]) -> Any:
        from retrieval.ranker import Ranker
        from tailor.app.fit_worker import write_vectors

        # Absolute paths: the worker runs from the repository root, wherever the data dir is said to be.
        with tempfile.TemporaryDirectory(prefix="refit-", dir=self.settings.data_dir.resolve()) as tmp:
            write_vectors(Path(tmp) / "vectors", vectors)
            out = Path(tmp) / "ranker"
            command = [
                sys.executable,
                "-m",
                "tailor.app.fit_worker",
                "--store",
                str(self.settings.store_path.resolve()),
                "--vectors",
                str(Path(tmp) / "vectors"),
                "--now",
                self.now().isoformat(),
                "--out",
                str(out),
            ]
            with subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=_ROOT
            ) as child:
                self.refits.child = child
                try:
                    _, stderr = child.communicate()
                finally:
                    self.refits.child = None
            if child.returncode != 0:
                last = (stderr.strip().splitlines() or ["no message"])[-1]
                raise BackendError(
                    f"the ranker's fit worker exited {child.returncode}: {last}",
                    hint="run `tailor refit` to see the fit fail in the foreground",
                )
            return Ranker.load(out)

    def refit_in_background(self) -> str:
        """Start a refit on a background thread (the fit itself in a child process): ``started``; or, when
        one is running, ``queued``, and it runs once more after the current fit, so that changes made during
        that fit are not missed."""
        return self.refits.start(lambda: self.refit(isolated=True))

    @property
    def recommender(self) -> Any:
        """The hybrid recommender on the saved ranker, loaded on first use (fitted first if none is saved)."""
        loaded = self._recommender
        if loaded is not None:
            return loaded
        from retrieval.recommender import HybridRecommender

        with self.refits.exclusive():
            if self._recommender is None:
                self.store.require_data()
                if not self.ranker_path.with_suffix(".npz").exists():
                    with self.refits.tracking():
                        self._fit_and_swap()
                else:
                    self._recommender = HybridRecommender.build(
                        self.store,
                        self.settings,
                        embedder=self.embedder,
                        ranker_path=self.ranker_path,
                        now=self.now(),
                        impressions=self.store.impressions,
                    )
            return self._recommender

    @recommender.setter
    def recommender(self, recommender: Any) -> None:
        """Install a recommender built elsewhere (a test's, or one fitted on other terms)."""
        with self.refits.exclusive(), self._lock:
            self._recommender = recommender

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
        from tailor.core.brand import load_brand

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
            similarity=self.embedder.similarity,
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
            # A sent email shows its products to the customer: they count toward the 30-day impression
            # cap. A preview is seen by staff only, so it does not. The job runner records its sends the
            # same way, under the job item's id.
            self.store.record_send(
                "direct:" + uuid.uuid4().hex,
                customer_id,
                [p.item_id for p in outcome.email.products],
                self.now(),
            )
        return outcome

    def why(self, customer_id: str, item_id: str) -> Explanation:
        from agent import explain

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
        """Store new events (and profiles) and update each customer's taste and history at once.

        Returns what was done: ``events`` written, ``duplicates`` not written because they were stored
        already or repeated in the batch, unchanged; ``customers`` profiles written, ``updated_customers``
        whose taste and history were refreshed, ``observed`` events new to the in-memory recommender.
        An event whose id is stored (or repeated) with other content refuses the batch (ConflictError).
        """
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
            written = self.store.add_batch(customers, events)
            # Only what the store wrote: the recommender's state must hold the stored event under its id,
            # never an incoming one the store did not take (it could name another customer's event). A
            # conflict has raised in add_batch by now, before anything was written or observed.
            observed = self._recommender.observe(written.new) if self._recommender is not None else 0
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
            if self._recommender is not None:
                # Again after the store rows went: a request in between may have cached them anew.
                for key, value in self.recommender.forget(customer_id).items():
                    deleted[key] = deleted.get(key, 0) + value
        return deleted

    def _forget_in_ranker(self, customer_id: str) -> dict[str, int]:
        """Purge the customer from the fitted ranker (in memory, if loaded) and from its saved files."""
        from retrieval.ranker import Ranker

        saved = customer_id in Ranker.saved_customer_ids(self.ranker_path)
        if self._recommender is not None:
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

    def warm_up(self) -> dict[str, float]:
        """Load and run once everything a first request would otherwise load: the embedding model, Qdrant,
        the ranker and recommender, the agent graph, prompts and rails. Returns seconds per part.

        The HTTP service runs this before ``/readyz`` says ready: without it, the first requests after a
        restart each paid part of it (p50 1.6 s, p95 3.3 s over the first 25) while readiness said ready.
        It writes nothing: the email is a preview by the template writer, so the model is not called and
        no send is recorded. A store with no data has nothing to warm."""
        from agent.graph import build_graph
        from agent.writers import TemplateWriter

        took: dict[str, float] = {}

        def part(name: str, work: Callable[[], object]) -> Any:
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
