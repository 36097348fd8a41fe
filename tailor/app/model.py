"""The ranker's life in a running service: loaded on first use, fitted, refitted in the background,
swapped in, reported on, and purged of a forgotten customer.

The service owns one ``RankerModel`` (``Tailor.model``) and answers with whatever recommender it holds; the
model is the one place that knows a fit is under way, where the fitted ranker is saved and what changed in
the store since. One fit runs at a time (``Refits``), and a server's refit runs in a child process
(``tailor.app.fit_worker``) so that requests keep being answered while it fits.

A ranker saved by another process on the same data dir (another replica's refit or forget, or `tailor refit`
run beside a server) is loaded at the next look (``TAILOR_RANKER_RELOAD_S``, 30 s by default), not at a
restart: the saved files' inodes and modification times tell it (a save replaces both files, under one save
id that a load checks), and a save half done is not read.

Replicas that share the database but no volume (``TAILOR_RANKER_STORE``: by default whenever
``TAILOR_DATABASE_URL`` is set) share the ranker through the database, which then holds the one that counts:
every save here (a fit, a forget) is published there first, replacing the one before, from files of this
process's own, and only then put in place in the data dir; at the next look a replica whose data dir holds
another save fetches the published one, and the look above loads it. A ranker loaded from anywhere is purged
of every customer the store no longer holds, and, when it held any (a fit elsewhere that raced their forget),
the purged one is published over it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypedDict

import numpy as np
import numpy.typing as npt

from retrieval.embeddings import Embedder
from retrieval.ranker import Ranker
from retrieval.recommender import HybridRecommender, item_text_vectors
from retrieval.vector_store import VectorStore
from tailor.app.fit_worker import STORE_ENV, write_vectors
from tailor.core.errors import BackendError, TailorError
from tailor.core.logs import describe
from tailor.core.models import Event
from tailor.core.settings import Settings
from tailor.data.frame import purchases_from_store
from tailor.data.importer import RANKER_INPUT
from tailor.data.sources import release_memory
from tailor.data.store import Store

__all__ = ["FitResult", "ModelStatus", "RankerModel", "RefitStart", "Refits"]

log = logging.getLogger("tailor.app.model")

_FITTED = "ranker_fitted"
_ROOT = Path(__file__).resolve().parents[2]
Vectors = dict[str, npt.NDArray[np.float32]]
# ``queued``: a fit was running, and another runs after it, so what changed during that fit is not missed.
RefitStart = Literal["started", "queued"]
# The saved ranker's files as ``RankerModel._saved_stamp`` tells them apart; ``_UNKNOWN`` matches no save.
Stamp = tuple[int, int, int, int]
_UNKNOWN: Stamp = (-1, -1, -1, -1)
# What a fit did with its label windows (``Ranker.fit_report``): JSON, shown as it is.
FitReport = dict[str, object]


class ModelStatus(TypedDict):
    """How stale the fitted ranker is (``GET /v1/model``, ``tailor model``)."""

    fitted: bool
    fitted_at: str | None
    fit_seconds: float | None
    customers: int | None
    fit: FitReport | None  # the label window the fit used and why (shorter than configured on a young store)
    purchases_since_fit: int
    forgotten_since_fit: int
    stale: bool
    refitting: bool
    refits: int
    last_error: str | None


class FitResult(TypedDict):
    seconds: float
    customers: int
    purged_during_fit: int
    fit: FitReport


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
    def exclusive_now(self) -> Iterator[bool]:
        """``exclusive`` if nothing holds it now (True), else at once False: for work that may wait for the
        next time rather than for a fit to end."""
        held = self._fit.acquire(blocking=False)
        try:
            yield held
        finally:
            if held:
                self._fit.release()

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

    def start(self, fit: Callable[[], object]) -> RefitStart:
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


class RankerModel:
    """The fitted ranker and the recommender on it, for one store. ``embedder`` and ``vectors`` are asked
    for only when first needed: a command that never ranks never loads the embedding model."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        embedder: Callable[[], Embedder],
        vectors: Callable[[], VectorStore],
        now: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.settings = settings
        self._embedder = embedder
        self._vectors = vectors
        self._now = now
        self.refits = Refits()
        # Held by a swap, an ingest and a forget: none of them may see the recommender half replaced.
        self.lock = threading.RLock()
        # Held by every save of the ranker (a fit's, a forget's, a purge's): two saves at once could put one's
        # npz beside the other's json. A fit saves before it takes ``lock``, so ingests do not wait for its
        # publish; a forget takes this one inside ``lock`` (that order, never the other).
        self._saving = threading.Lock()
        self.loaded: HybridRecommender | None = None
        # The saved files' stamp (``_saved_stamp``) when the loaded ranker was loaded or saved here
        # (``_UNKNOWN`` when it could not be read then: the next look loads what is saved); one installed from
        # elsewhere (``_installed``) is never replaced by what is on disk.
        self._stamp: Stamp = _UNKNOWN
        self._installed = False
        self._looked = time.monotonic()
        # When ``status`` last asked the database for the published save (None: never, so the first asks).
        self._status_fetched: float | None = None
        # The save id of the files in the data dir, by their stamp: read again only when they change.
        self._local: tuple[Stamp | None, str | None] = (None, None)

    @property
    def path(self) -> Path:
        return self.settings.data_dir / "ranker"

    def _saved_stamp(self) -> Stamp | None:
        """The saved ranker's two files' inodes and modification times, or None while there is none or while
        a save is half done: ``Ranker.save`` writes each file new and renames it over the old (a new inode,
        however coarse the file system's clock), the npz first, so a json older than its npz is a save under
        way."""
        base = self.path
        try:
            npz, meta = base.with_suffix(".npz").stat(), base.with_suffix(".json").stat()
        except FileNotFoundError:
            return None
        if meta.st_mtime_ns < npz.st_mtime_ns:
            return None
        return (npz.st_ino, npz.st_mtime_ns, meta.st_ino, meta.st_mtime_ns)

    def _replaced(self) -> bool:
        """Whether another process replaced the saved ranker since this one loaded or saved it; looked at
        once every ``settings.ranker_reload_s`` at most (the look is a stat of two files)."""
        if self._installed or time.monotonic() - self._looked < self.settings.ranker_reload_s:
            return False
        self._looked = time.monotonic()
        self._fetch_published()
        saved = self._saved_stamp()
        return saved is not None and saved != self._stamp

    def _fetch_published(self) -> None:
        """With the ranker published in the database: the save published last, when the data dir holds
        another, written into the data dir (the npz first, as a save writes them), for the look at the files
        to load as any other process's save. A database that cannot be read now leaves the loaded ranker
        answering until the next look."""
        if not self.settings.ranker_published:
            return
        base = self.path
        try:
            latest = self.store.ranker_save_id()
            if latest is None or latest == self._local_save_id():
                return
            writer = f"{os.getpid()}-{threading.get_ident()}"
            fetched = {name: base.with_suffix(f".{name}.{writer}.fetch") for name in ("npz", "json")}
            base.parent.mkdir(parents=True, exist_ok=True)
            try:
                if not self.store.fetch_ranker(latest, fetched):
                    return  # replaced while it was read: the next look fetches the newer one
                with self._saving:
                    # A save here since (a fit's, a forget's) published a newer one: it is not put back.
                    if self.store.ranker_save_id() != latest:
                        return
                    _put_in_place(fetched, base)
            finally:
                for path in fetched.values():
                    path.unlink(missing_ok=True)
            log.info("fetched the ranker save %s published in the database", latest)
        except (TailorError, OSError) as exc:
            log.warning("cannot fetch the ranker published in the database: %s", describe(exc))

    def _local_save_id(self) -> str | None:
        stamp = self._saved_stamp()
        if stamp is None:
            return None
        if self._local[0] != stamp:
            self._local = (stamp, Ranker.saved_id(self.path))
        return self._local[1]

    def _save(self, ranker: Ranker, *, unless_published: bool = False) -> bool:
        """Save ``ranker`` as the data dir's. With the ranker published in the database it is published
        there first, from files this process wrote for it alone, and put in place here only then: what is
        published is exactly what was saved, and a save that could not be published is not kept here
        either (a forget that failed there is done again in full when retried). ``unless_published``: only
        if the database holds no save yet, decided in the publishing transaction (False when one was)."""
        with self._saving:
            return self._save_now(ranker, unless_published=unless_published)

    def _save_now(self, ranker: Ranker, *, unless_published: bool) -> bool:
        if not self.settings.ranker_published:
            ranker.save(self.path)
            return True
        base = self.path
        base.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="publish-", dir=base.parent) as tmp:
            own = Path(tmp) / "ranker"
            ranker.save(own)
            assert ranker.save_id is not None  # set by the save
            files = {"npz": own.with_suffix(".npz"), "json": own.with_suffix(".json")}
            if not self.store.publish_ranker(ranker.save_id, files, unless_published=unless_published):
                return False
            _put_in_place(files, base)
        return True

    def _republish_purged(self, ranker: Ranker, purged: int) -> None:
        """A ranker loaded holding customers the store has forgotten since was purged of them in memory; the
        purged one is saved over it (and published, with the ranker in the database), so their rows go from
        the files and the database too: a fit that saved before a forget and failed before saving again, or
        a process killed between the two, leaves them there. On the request path: a failure is logged, and
        the next load tries again."""
        if not purged:
            return
        try:
            self._save(ranker)
            self._own_save()
        except (TailorError, OSError) as exc:
            log.warning(
                "cannot publish the ranker purged of %d forgotten customers: %s", purged, describe(exc)
            )

    def _own_save(self) -> None:
        # What this process just saved is what it holds: nothing to load again.
        self._stamp = self._saved_stamp() or _UNKNOWN

    def _reload(self) -> None:
        """Load the ranker another process saved (another replica's refit or forget on this data dir, or
        `tailor refit`) and swap it in, as a fit here would. Skipped while this process fits (the fit swaps
        in its own) and, on a load that fails (a file being replaced again), left for the next look: the
        ranker loaded keeps answering meanwhile."""
        with self.refits.exclusive_now() as held:
            if held:
                self._load_replaced()

    def _load_replaced(self) -> None:
        stamp = self._saved_stamp()
        if stamp is None or stamp == self._stamp or self.loaded is None:
            return
        try:
            recommender = self._build()
        except TailorError as exc:
            log.warning("the saved ranker was replaced but cannot be loaded yet: %s", exc)
            return
        if self._saved_stamp() != stamp:
            # Saved again while it was read: its npz and json may be of two saves. The next look loads it.
            return
        with self.lock:
            purged = self._purge_gone(recommender)
            recommender.adopt_caches(self.loaded)
            self.loaded, self._stamp = recommender, stamp
            self._republish_purged(recommender.ranker, purged)
        log.info("loaded the ranker saved by another process (fitted %s)", recommender.ranker.fitted_at)

    def _build(self) -> HybridRecommender:
        return HybridRecommender.build(
            self.store,
            self.settings,
            embedder=self._embedder(),
            ranker_path=self.path,
            now=self._now(),
            impressions=self.store.impressions,
        )

    def _gone(self, ranker: Ranker) -> list[str]:
        """The ranker's customers whom the store no longer holds: forgotten after it was saved (here or by
        another replica), or while it was fitted."""
        present = set(self.store.customer_ids())
        return [c for c in ranker.customer_ids if c not in present]

    def _purge_gone(self, recommender: HybridRecommender) -> int:
        """A customer forgotten after the ranker was saved is not brought back by loading it: forgotten from
        the recommender (its caches and its ranker). Returns how many were purged."""
        gone = self._gone(recommender.ranker)
        for customer_id in gone:
            recommender.forget(customer_id)
        return len(gone)

    def close(self) -> None:
        self.refits.close()

    def status(self, *, fresh: bool = False) -> ModelStatus:
        """What changed in the store since the ranker was fitted.

        ``forgotten_since_fit`` > 0 means the item-level aggregates (neighbours, factors, trees, Qdrant's
        collaborative vectors) still hold a share learned from a forgotten customer's purchases. Their
        rows and ids went at once; that share goes with the next refit.

        The published ranker is fetched at the first call and then at most once every
        ``settings.ranker_reload_s``, as a request looks: the metrics scrape and ``GET /v1/model`` call this
        every few seconds, and each fetch is a database query (a ranker's bytes, when there is a new save).
        ``fresh`` fetches now, for a caller that acts on the answer (``tailor index`` refits a stale one)."""
        last = self._status_fetched
        if fresh or last is None or time.monotonic() - last >= self.settings.ranker_reload_s:
            self._status_fetched = time.monotonic()
            self._fetch_published()
        fitted = self.store.get_meta(_FITTED) or {}
        saved = self.path.with_suffix(".npz").exists()
        seen = fitted.get("changes", {}) if saved else {}
        since = {kind: total - int(seen.get(kind, 0)) for kind, total in self.store.changes().items()}
        return {
            "fitted": saved,
            "fitted_at": fitted.get("fitted_at") if saved else None,
            "fit_seconds": fitted.get("seconds") if saved else None,
            "customers": fitted.get("customers") if saved else None,
            "fit": fitted.get("fit") if saved else None,
            "purchases_since_fit": since["purchases"],
            "forgotten_since_fit": since["forgotten"],
            "stale": (
                not saved or self.store.get_meta("ranker_fingerprint") != self._input() or any(since.values())
            ),
            "refitting": self.refits.running,
            "refits": self.refits.done,
            "last_error": self.refits.error,
        }

    def _input(self) -> object:
        """What the ranker is fitted on, as the last import left it (``tailor.data.importer.ranker_input``): a
        change to an item's description alone does not change it. A store imported before that fingerprint
        existed has the import's own."""
        value = self.store.get_meta(RANKER_INPUT)
        return value if value is not None else self.store.get_meta("import_fingerprint")

    def fit(self, *, isolated: bool = False) -> FitResult:
        """Fit the ranker anew on the store's purchases and swap it in; one fit at a time.

        Requests keep being answered by the old ranker while the new one fits (about a minute on the demo
        store, on two cores). A customer forgotten during the fit is purged from the new ranker before it
        is swapped in, and stays counted in ``forgotten_since_fit`` until a fit that never saw them.
        ``isolated`` fits in a child process at a lower priority (``tailor.app.fit_worker``), as a server
        must.
        """
        with self.refits.exclusive(), self.refits.tracking():
            return self._fit_and_swap(isolated=isolated)

    def fit_in_background(self) -> RefitStart:
        """Start a refit on a background thread (the fit itself in a child process): ``started``; or, when
        one is running, ``queued``, and it runs once more after the current fit, so that changes made during
        that fit are not missed."""
        return self.refits.start(lambda: self.fit(isolated=True))

    def _fit_and_swap(self, *, isolated: bool = False) -> FitResult:
        self.store.require_data()
        seen = self.store.changes()
        fingerprint = self._input()
        started = time.perf_counter()
        vectors = item_text_vectors(self.store.items(), self._embedder())
        ranker = self._fit_in_child(vectors) if isolated else self._fit_here(vectors)
        seconds = round(time.perf_counter() - started, 2)
        self.refits.checkpoint("fitted")
        # Saved (and published) before the swap takes the lock, so ingests and forgets do not wait for it: the
        # new ranker is this fit's alone until then. Whoever the store forgets meanwhile is purged under the
        # lock and the ranker saved again, as it is when a forget saved the old one over it meanwhile.
        purged = self._purge_gone_from(ranker)
        if self.loaded is not None and ranker.customer_ids:
            # Replacing a ranker that answers requests: one that cannot answer is neither saved nor swapped
            # in, and its own caches (float64 copies, item blocks) are built here, outside the lock, rather
            # than in the first request. A first fit (`tailor demo`) keeps nobody waiting, and warming
            # would only raise its peak memory.
            ranker.rank(ranker.customer_ids[:1], k=10)
        self._save(ranker)
        self.refits.checkpoint("saved")
        with self.lock:
            try:
                return self._swap(ranker, vectors, purged, seconds, seen, fingerprint)
            except BaseException:
                self._put_back_served()
                raise

    def _swap(
        self,
        ranker: Ranker,
        vectors: Vectors,
        purged: list[str],
        seconds: float,
        seen: dict[str, int],
        fingerprint: object,
    ) -> FitResult:
        """Under the model lock: the fitted ranker, saved already, purged of whoever was forgotten since and
        saved again first (before anything that may fail), then swapped in."""
        late = self._purge_gone_from(ranker)
        purged = [*purged, *late]
        if late or self._local_save_id() != ranker.save_id:
            self._save(ranker)
        recommender = HybridRecommender(
            self.store,
            ranker,
            settings=self.settings,
            text_vectors=vectors,
            impressions=self.store.impressions,
        )
        if self.loaded is not None and ranker.customer_ids:
            # Swapping over a recommender that is answering requests: take over its per-customer caches
            # (under the lock that forget takes, so no forgotten customer's), and answer once through the
            # whole recommender: one that cannot is not swapped in, and the one that answers is saved back.
            recommender.adopt_caches(self.loaded)
            recommender.recommend(ranker.customer_ids[0], 10, now=self._now())
        collab = ranker.collab_vectors()
        vector_store = self._vectors()
        known = vector_store.item_ids()
        ids = [i for i in collab if i in known]
        if ids:
            vector_store.ensure_collections(collab_dim=len(collab[ids[0]]))
            vector_store.set_collab_vectors(ids, [collab[i] for i in ids])
        self.loaded = recommender
        # Only once it is swapped in: had the swap failed, the next look would load what was saved.
        self._own_save()
        self._installed = False
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

    def _put_back_served(self) -> None:
        """A fit that failed after it saved: the ranker that answers is saved back, so that neither this
        process's next look nor another replica loads the one refused. A failure here is logged: the next
        look then loads the refused one, as the first load would."""
        served = self.loaded
        if served is None or self._installed:
            return
        try:
            self._save(served.ranker)
            self._own_save()
        except (TailorError, OSError) as exc:
            log.warning("cannot save back the ranker that answers after a failed fit: %s", describe(exc))

    def _purge_gone_from(self, ranker: Ranker) -> list[str]:
        """The customers of a ranker not yet swapped in whom the store no longer holds, forgotten from it."""
        gone = self._gone(ranker)
        for customer_id in gone:
            ranker.forget(customer_id)
        return gone

    def _fit_here(self, vectors: Vectors) -> Ranker:
        ranker = Ranker().fit(purchases_from_store(self.store), vectors or None, now=self._now())
        release_memory()
        return ranker

    def _fit_in_child(self, vectors: Vectors) -> Ranker:
        # Absolute paths: the worker runs from the repository root, wherever the data dir is said to be.
        with tempfile.TemporaryDirectory(prefix="refit-", dir=self.settings.data_dir.resolve()) as tmp:
            write_vectors(Path(tmp) / "vectors", vectors)
            out = Path(tmp) / "ranker"
            command = [
                sys.executable,
                "-m",
                "tailor.app.fit_worker",
                "--vectors",
                str(Path(tmp) / "vectors"),
                "--now",
                self._now().isoformat(),
                "--out",
                str(out),
            ]
            target = self.settings.store_database
            # By the environment, not the command line: a database URL may hold a password, and any user of
            # the machine can read a process's arguments.
            env = {**os.environ, STORE_ENV: str(target.resolve() if isinstance(target, Path) else target)}
            with subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=_ROOT, env=env
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

    @property
    def recommender(self) -> HybridRecommender:
        """The hybrid recommender on the saved ranker, loaded on first use (fitted first if none is saved)."""
        loaded = self.loaded
        if loaded is not None:
            if self._replaced():
                self._reload()
            return self.loaded if self.loaded is not None else loaded
        with self.refits.exclusive():
            if self.loaded is None:
                self.store.require_data()
                self._fetch_published()
                if not self.path.with_suffix(".npz").exists():
                    with self.refits.tracking():
                        self._fit_and_swap()
                else:
                    stamp = self._saved_stamp()
                    recommender = self._build()
                    with self.lock:
                        purged = self._purge_gone(recommender)
                        self.loaded = recommender
                    # Unknown if it was saved again meanwhile: the next look loads the newer one.
                    self._stamp = stamp if stamp is not None and self._saved_stamp() == stamp else _UNKNOWN
                    if purged:
                        with self.lock:
                            self._republish_purged(recommender.ranker, purged)
                    elif self.settings.ranker_published:
                        self._publish_first(recommender.ranker)
            assert self.loaded is not None  # set by the fit or the load above
            return self.loaded

    def _publish_first(self, ranker: Ranker) -> None:
        """Saved here before the ranker was published in the database (a store moved to PostgreSQL with its
        data dir): published now unless another replica published one meanwhile, so that no replica fits
        its own. A failure is logged; the ranker loaded answers all the same."""
        try:
            if self.store.ranker_save_id() is None:
                with self.lock:
                    if self._save(ranker, unless_published=True):
                        self._own_save()
        except (TailorError, OSError) as exc:
            log.warning("cannot publish the ranker saved here: %s", describe(exc))

    def install(self, recommender: HybridRecommender) -> None:
        """Answer with a recommender built elsewhere (a test's, or one fitted on other terms); what is saved
        on disk never replaces it."""
        with self.refits.exclusive(), self.lock:
            self.loaded, self._installed = recommender, True

    def observe(self, events: Iterable[Event]) -> int:
        """New events for the loaded recommender's per-customer state; none loaded, nothing to do."""
        return self.loaded.observe(events) if self.loaded is not None else 0

    def forget(self, customer_id: str) -> dict[str, int]:
        """Purge the customer from the fitted ranker (in memory, if loaded) and from its saved files.

        When another process saved a newer ranker, that one is loaded first and the customer purged from it:
        saving the older one over it would undo that refit, and bring back whoever was forgotten there. With
        the ranker published in the database, the save published last is fetched first and the purged one
        published over it, so no replica loads the customer back."""
        if not self._installed:
            self._fetch_published()
        if self.loaded is not None and not self._installed and self._saved_stamp() not in (None, self._stamp):
            self._reload()
            if self._saved_stamp() not in (None, self._stamp):
                # Not loaded now (a fit here holds the lock, or it is being saved again): the customer goes
                # from the saved ranker and from the one in memory apart; the next look loads the saved one.
                apart: dict[str, int] = self.loaded.forget(customer_id)
                if customer_id in Ranker.saved_customer_ids(self.path):
                    on_disk = Ranker.load(self.path)
                    on_disk.forget(customer_id)
                    self._save(on_disk)
                return apart
        saved = customer_id in Ranker.saved_customer_ids(self.path)
        if self.loaded is not None:
            counts: dict[str, int] = self.loaded.forget(customer_id)
            ranker = self.loaded.ranker
        elif saved:
            ranker = Ranker.load(self.path)
            counts = {"ranker_rows": ranker.forget(customer_id)}
        else:
            return {"ranker_rows": 0}
        # Also when memory was purged already (an earlier forget failed before the write).
        if counts["ranker_rows"] or saved:
            self._save(ranker)
            if self.loaded is not None and self.loaded.ranker is ranker:
                self._own_save()
        return counts

    def forget_cached(self, customer_id: str) -> dict[str, int]:
        """The loaded recommender's caches of the customer, once more after the store rows went: a request
        in between may have cached them anew."""
        return self.loaded.forget(customer_id) if self.loaded is not None else {}


def _put_in_place(files: Mapping[str, Path], base: Path) -> None:
    """A save's two files (``npz``, ``json``), written apart, renamed over the data dir's ranker."""
    os.replace(files["npz"], base.with_suffix(".npz"))
    os.replace(files["json"], base.with_suffix(".json"))
