"""The ranker's life after its first fit: staleness, refits, and forgetting that reaches the aggregates.

A small real store (``seed_store``: 6 items, 12 customers), embedded Qdrant, real embeddings, the real ranker.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from retrieval.ranker import Ranker
from retrieval.recommender import item_text_vectors
from tailor.app.service import Tailor
from tailor.core.errors import BackendError, DataError
from tailor.core.models import Event, EventKind
from tailor.core.settings import Settings
from tailor.data.frame import purchases_from_store
from tests.server import seed_store

pytestmark = pytest.mark.slow

NOW = "2011-12-10T10:00:00+00:00"
ITEMS = [f"I{n}" for n in range(6)]


@pytest.fixture
def indexed(tmp_path: Path) -> Iterator[tuple[Tailor, list[str]]]:
    data_dir = tmp_path / "data"
    ids = seed_store(data_dir, n_customers=12)
    with Tailor.open(Settings(data_dir=data_dir, now=NOW)) as tailor:
        assert tailor.index()["ranker"] == "fitted"
        yield tailor, ids


def _collab(tailor: Tailor) -> np.ndarray:
    ids, matrix = tailor.vectors.item_vectors(ITEMS, "collab")
    assert list(ids) == ITEMS
    return np.asarray(matrix)


def test_a_fresh_fit_is_not_stale_and_a_second_index_keeps_it(indexed: tuple[Tailor, list[str]]) -> None:
    tailor, ids = indexed
    status = tailor.model_status()
    assert status["fitted"] and not status["stale"] and status["customers"] == len(ids)
    assert status["purchases_since_fit"] == 0 and status["forgotten_since_fit"] == 0
    assert tailor.index()["ranker"] == "unchanged"


def test_refit_after_forget_takes_the_customers_share_out_of_the_aggregates(
    indexed: tuple[Tailor, list[str]],
) -> None:
    tailor, ids = indexed
    victim = ids[3]
    before = _collab(tailor)
    kept = ids[-1]  # not the customer the swap warms the new recommender with (its first)
    tailor.recommend(kept, k=3)
    tailor.recommend(victim, k=3)
    old = tailor.recommender
    assert {kept, victim} <= set(old.cached_customers())
    tailor.forget(victim)
    status = tailor.model_status()
    assert status["forgotten_since_fit"] == 1 and status["stale"]

    report = tailor.refit()
    assert report["customers"] == len(ids) - 1 and report["purged_during_fit"] == 0
    status = tailor.model_status()
    assert status["forgotten_since_fit"] == 0 and not status["stale"] and status["customers"] == len(ids) - 1
    assert victim not in Ranker.saved_customer_ids(tailor.model.path)

    # What Qdrant now holds is exactly what a fit that never saw the customer learns...
    never_saw = Ranker().fit(
        purchases_from_store(tailor.store), item_text_vectors(tailor.store.items(), tailor.embedder), now=NOW
    )
    after = _collab(tailor)
    expected = np.stack([never_saw.collab_vectors()[i] for i in ITEMS])
    np.testing.assert_allclose(after, expected, atol=1e-5)
    # ...and it is not what it held while their purchases were in the fit.
    assert not np.allclose(before, after, atol=1e-3)
    assert tailor.recommender is not old and victim not in tailor.recommender.ranker.customer_index
    # The swapped-in recommender kept the per-customer caches, less the forgotten customer's.
    assert kept in tailor.recommender.cached_customers()
    assert victim not in tailor.recommender.cached_customers()


def test_a_customer_forgotten_during_a_fit_is_purged_before_the_swap(
    indexed: tuple[Tailor, list[str]],
) -> None:
    tailor, ids = indexed
    victim = ids[5]

    def forget_mid_fit(point: str) -> None:
        if point == "fitted":
            tailor.forget(victim)

    tailor.model.refits.on_checkpoint = forget_mid_fit
    report = tailor.refit()
    tailor.model.refits.on_checkpoint = None
    assert report["purged_during_fit"] == 1
    assert victim not in tailor.recommender.ranker.customer_index
    assert victim not in Ranker.saved_customer_ids(tailor.model.path)
    # That fit read their purchases, so its aggregates still hold their share: still counted as pending.
    assert tailor.model_status()["forgotten_since_fit"] == 1
    tailor.refit()
    assert tailor.model_status()["forgotten_since_fit"] == 0


def _bought(customer_id: str, order_id: str, when: datetime, quantity: int = 1) -> Event:
    """A purchase of the seeded store's item I4 (6.50 each)."""
    return Event(
        customer_id=customer_id,
        kind=EventKind.PURCHASE,
        item_id="I4",
        quantity=quantity,
        value=6.5 * quantity,
        timestamp=when,
        order_id=order_id,
    )


def test_new_events_make_the_ranker_stale_until_index_refits(indexed: tuple[Tailor, list[str]]) -> None:
    tailor, ids = indexed
    bought = _bought(ids[0], "O-new", datetime(2011, 12, 5, tzinfo=UTC), quantity=2)
    tailor.ingest([bought])
    status = tailor.model_status()
    assert status["purchases_since_fit"] == 1 and status["stale"]
    assert tailor.index()["ranker"] == "fitted"
    assert tailor.model_status()["purchases_since_fit"] == 0
    assert tailor.index()["ranker"] == "unchanged"


def test_a_ranker_saved_by_an_older_version_names_the_refit_and_a_refit_replaces_it(
    indexed: tuple[Tailor, list[str]],
) -> None:
    tailor, ids = indexed
    meta_path = tailor.model.path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["format"] = 1  # as the scikit-learn trees were saved
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"format 1, this version reads format 2") as err:
        Ranker.load(tailor.model.path)
    assert err.value.hint is not None and "`tailor refit`" in err.value.hint
    # An unchanged store is not refitted by `tailor index`; what the hint names is: it fits anew without
    # reading the old files, and replaces them with ones this version loads.
    assert tailor.index()["ranker"] == "unchanged"
    tailor.refit()
    assert json.loads(meta_path.read_text())["format"] == 2
    assert Ranker.load(tailor.model.path).rank([ids[0]], k=3)[0]


def test_background_refits_run_one_at_a_time_and_coalesce(indexed: tuple[Tailor, list[str]]) -> None:
    tailor, _ = indexed
    reached, release = threading.Event(), threading.Event()

    def hold(point: str) -> None:
        reached.set()
        assert release.wait(60), "the test never released the fit"

    done = tailor.model.refits.done
    tailor.model.refits.on_checkpoint = hold
    assert tailor.refit_in_background() == "started"
    assert reached.wait(120), "the background fit never reached its checkpoint"
    assert tailor.model_status()["refitting"] is True
    # Asked for twice while the fit runs: one more fit after it, not two.
    assert tailor.refit_in_background() == "queued"
    assert tailor.refit_in_background() == "queued"
    tailor.model.refits.on_checkpoint = None
    release.set()
    assert tailor.model.refits.wait(120)
    assert tailor.model.refits.done == done + 2
    status = tailor.model_status()
    assert status["refitting"] is False and status["last_error"] is None


def test_a_fit_that_fails_in_its_worker_leaves_the_old_ranker_serving(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ids = seed_store(data_dir, n_customers=6)
    with Tailor.open(Settings(data_dir=data_dir, now=NOW)) as tailor:
        tailor.index()
        fitted = tailor.model_status()["fitted_at"]
    # A year on, nothing was bought in the label window: the fit refuses, in the worker process.
    with Tailor.open(Settings(data_dir=data_dir, now="2012-12-10T10:00:00+00:00")) as tailor:
        with pytest.raises(BackendError, match=r"fit worker exited 1: DataError: fitting needs purchases"):
            tailor.refit(isolated=True)
        assert tailor.refit_in_background() == "started"
        assert tailor.model.refits.wait(120)
        status = tailor.model_status()
        # The reason itself, as the worker gave it, not where in the code it surfaced.
        assert status["last_error"] is not None
        assert status["last_error"].startswith("BackendError: the ranker's fit worker exited 1: DataError:")
        assert "fitting needs purchases both before and within the last 92 days" in status["last_error"]
        assert status["fitted_at"] == fitted and status["refits"] == 0
        assert tailor.recommend(ids[0], k=3), "the saved ranker still answers"
        assert not list(data_dir.glob("refit-*")), "the worker's scratch files are cleaned up"


def test_closing_the_service_ends_a_fit_under_way(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    seed_store(data_dir, n_customers=6)
    settings = Settings(data_dir=data_dir, now=NOW)
    with Tailor.open(settings) as tailor:
        tailor.index()
        fitted = tailor.model_status()["fitted_at"]
    tailor = Tailor.open(settings)
    assert tailor.refit_in_background() == "started"
    deadline = time.monotonic() + 60
    while tailor.model.refits.child is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tailor.model.refits.child is not None, "the fit worker never started"
    tailor.close()  # the worker is still importing its libraries: ended, not waited for
    # A fit that ran to its end leaves no error: this one was ended, and nothing was swapped in.
    assert tailor.model.refits.error is not None and tailor.model.refits.error.startswith("BackendError")
    with Tailor.open(settings) as again:
        assert again.model_status()["fitted_at"] == fitted
    assert not list(data_dir.glob("refit-*"))


def _canonical(folder: Path, tmp: Path) -> Path:
    """``seed_store``'s store written out as a canonical folder, for ``tailor import``."""
    from tailor.data.store import Store

    seed_store(tmp, n_customers=12)
    store = Store(tmp / "tailor.db")
    try:
        folder.mkdir()
        for name, rows in (
            ("items", store.items()),
            ("customers", store.customers()),
            ("events", store.events()),
        ):
            (folder / f"{name}.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in rows))
    finally:
        store.close()
    return folder


def _edit_item(folder: Path, item_id: str, **changes: object) -> None:
    path = folder / "items.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        if row["id"] == item_id:
            row.update(changes)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_description_only_import_re_embeds_without_refitting(tmp_path: Path) -> None:
    folder = _canonical(tmp_path / "canonical", tmp_path / "seed")
    with Tailor.open(Settings(data_dir=tmp_path / "data", now=NOW)) as tailor:
        tailor.import_dir(folder)
        assert tailor.index()["ranker"] == "fitted"
        _edit_item(folder, "I2", description="Now in a brighter brass, with a longer wick.")
        assert not tailor.import_dir(folder).skipped
        assert not tailor.model_status()["stale"], "a description is not what the ranker is fitted on"
        report = tailor.index()
        assert (report["ranker"], report["items_embedded"]) == ("unchanged", 1)
        assert tailor.store.get_item("I2").description.startswith("Now in a brighter brass")
        # A change the ranker does read (the name it embeds) still refits it.
        _edit_item(folder, "I2", title="Brass Lantern")
        tailor.import_dir(folder)
        assert tailor.model_status()["stale"]
        assert tailor.index()["ranker"] == "fitted"


def test_a_ranker_saved_by_another_process_is_loaded_at_the_next_look(
    indexed: tuple[Tailor, list[str]],
) -> None:
    """Replicas on one data dir (or `tailor refit` beside a running server): a ranker saved by another process
    is loaded at the next look, not at a restart; never half saved, never over a fit of its own, never over
    one installed from elsewhere, and never with a customer this store has forgotten."""
    import os

    from tailor.app.model import RankerModel
    from tailor.core.errors import NotFoundError

    tailor, ids = indexed

    def replica(reload_s: float) -> RankerModel:
        settings = tailor.settings.model_copy(update={"ranker_reload_s": reload_s})
        # No text vectors: what is under test is which ranker answers, not its text signal.
        return RankerModel(
            tailor.store, settings, embedder=lambda: None, vectors=lambda: tailor.vectors, now=tailor.now
        )  # type: ignore[arg-type,return-value]

    other, slow = replica(0.0), replica(3600.0)
    first, first_slow = other.recommender, slow.recommender
    assert first.ranker.serving == Ranker.load(tailor.model.path).serving
    assert other.recommender is first  # nothing saved since: the same one

    # Another process saves a ranker that serves otherwise.
    saved = Ranker.load(tailor.model.path)
    saved.serving = {"all": "popularity", "new": "popularity"}
    saved.save(tailor.model.path)
    second = other.recommender
    assert second is not first and second.ranker.serving == {"all": "popularity", "new": "popularity"}
    assert slow.recommender is first_slow  # it looks once an hour: not yet

    # Half saved (the json not yet replaced after the npz): not loaded until the save is whole.
    saved.serving = {"all": "repeat", "new": "ease"}
    saved.save(tailor.model.path)
    npz, meta = tailor.model.path.with_suffix(".npz"), tailor.model.path.with_suffix(".json")
    os.utime(meta, ns=(npz.stat().st_atime_ns, npz.stat().st_mtime_ns - 1_000_000))
    assert other.recommender is second
    os.utime(meta, ns=(npz.stat().st_atime_ns, npz.stat().st_mtime_ns + 1_000_000))
    third = other.recommender
    assert third is not second and third.ranker.serving == {"all": "repeat", "new": "ease"}

    # A save made before this store forgot a customer does not bring them back.
    victim = ids[2]
    stale = Ranker.load(tailor.model.path)
    tailor.forget(victim)
    with pytest.raises(NotFoundError):
        tailor.store.get_customer(victim)
    stale.save(tailor.model.path)
    fourth = other.recommender
    assert fourth is not third and victim not in fourth.ranker.customer_index

    # Saved again within the file system's clock tick (the same modification times): the new files are
    # new inodes, and are loaded.
    times = {f: (f.stat().st_atime_ns, f.stat().st_mtime_ns) for f in (npz, meta)}
    saved.serving = {"all": "trees", "new": "popularity"}
    saved.save(tailor.model.path)
    for f, (a, m) in times.items():
        os.utime(f, ns=(a, m))
    fifth = other.recommender
    assert fifth is not fourth and fifth.ranker.serving == {"all": "trees", "new": "popularity"}

    # A forget here when another process saved a newer ranker: the newer one is loaded and the customer
    # purged from it, not the older one saved over it.
    newer = Ranker.load(tailor.model.path)
    newer.serving = {"all": "repeat", "new": "popularity"}
    newer.save(tailor.model.path)
    other.forget(ids[4])
    on_disk = Ranker.load(tailor.model.path)
    assert on_disk.serving == {"all": "repeat", "new": "popularity"} and ids[4] not in on_disk.customer_index
    assert other.recommender.ranker.serving == on_disk.serving

    # The same while a fit here holds the lock, so the newer save cannot be loaded now: the customer goes
    # from the saved ranker and from memory apart, and the next look loads the saved one.
    held = other.recommender
    newer.serving = {"all": "trees", "new": "ease"}
    newer.save(tailor.model.path)
    with other.refits.exclusive():
        other.forget(ids[5])
    assert other.loaded is held and ids[5] not in held.ranker.customer_index
    on_disk = Ranker.load(tailor.model.path)
    assert on_disk.serving == {"all": "trees", "new": "ease"} and ids[5] not in on_disk.customer_index
    assert other.recommender.ranker.serving == {"all": "trees", "new": "ease"}

    # One installed from elsewhere is what answers, whatever is saved.
    other.install(first)
    Ranker.load(tailor.model.path).save(tailor.model.path)
    assert other.recommender is first


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_replicas_sharing_the_database_but_no_volume_share_the_ranker_through_it(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """TAILOR_RANKER_STORE=database (the default with TAILOR_DATABASE_URL): two processes on one database,
    each with a data dir of its own. The second never fits: it fetches what the first fitted; a forget on
    one publishes the purged ranker and the other loads it; a refit on either reaches the other."""
    import uuid

    if engine == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        url = request.getfixturevalue("pg_cluster").database(f"shelf_{uuid.uuid4().hex[:12]}")
    ids = seed_store(tmp_path / "a", n_customers=12, database_url=url)

    def settings(name: str, **more: object) -> Settings:
        return Settings(data_dir=tmp_path / name, now=NOW, database_url=url, ranker_reload_s=0.0, **more)

    assert settings("a").ranker_published and not settings("a", ranker_store="files").ranker_published
    assert Settings(data_dir=tmp_path / "x", ranker_store="database").ranker_published
    assert not Settings(data_dir=tmp_path / "x").ranker_published
    with Tailor.open(settings("a")) as a, Tailor.open(settings("b")) as b:
        assert a.index()["ranker"] == "fitted"
        published = a.store.ranker_save_id()
        assert published is not None and published == Ranker.saved_id(a.model.path)

        assert not (tmp_path / "b" / "ranker.npz").exists()
        assert b.model_status()["fitted"], "the status looks in the database, not only in its own data dir"
        assert b.model.recommender.ranker.save_id == published
        assert b.model.refits.done == 0, "fetched, not fitted again"
        # Its own embedded Qdrant is indexed without a fit (replicas on several machines share one by URL).
        assert b.index()["ranker"] == "unchanged" and b.model.refits.done == 0
        cid = ids[0]
        assert [r.item.id for r in b.model.recommender.recommend(cid, 4, now=a.now())] == [
            r.item.id for r in a.model.recommender.recommend(cid, 4, now=a.now())
        ]

        # A forget on one: the purged ranker is published, and the other loads it at its next look.
        victim = ids[3]
        a.forget(victim)
        assert a.store.ranker_save_id() not in (None, published)
        assert victim not in b.model.recommender.ranker.customer_index
        assert b.model.recommender.ranker.save_id == a.store.ranker_save_id()
        fetched = tmp_path / "fetched"
        assert a.store.fetch_ranker(a.store.ranker_save_id() or "", {"json": fetched.with_suffix(".json")})
        assert victim not in json.loads(fetched.with_suffix(".json").read_text())["customer_ids"]

        # A refit on the other reaches the first.
        b.model.fit()
        assert a.model.recommender.ranker.save_id == b.store.ranker_save_id()
        assert b.store.ranker_save_id() == b.model.recommender.ranker.save_id

        # A fit elsewhere that raced a forget published a ranker holding the forgotten customer: the next
        # replica to load it purges them, in memory and in the database.
        raced = Ranker.load(b.model.path)
        gone = ids[5]
        b.store.delete_customer(gone)  # as a forget's last step, after the ranker was saved with them
        raced.save(tmp_path / "raced" / "ranker")
        raced_files = {n: (tmp_path / "raced" / "ranker").with_suffix(f".{n}") for n in ("npz", "json")}
        assert raced.save_id and a.store.publish_ranker(raced.save_id, raced_files)
        assert gone not in a.model.recommender.ranker.customer_index
        republished = a.store.ranker_save_id()
        assert republished not in (None, raced.save_id)
        assert a.store.fetch_ranker(republished or "", {"json": fetched.with_suffix(".json")})
        assert gone not in json.loads(fetched.with_suffix(".json").read_text())["customer_ids"]

        # A publish that fails: the fit fails, the ranker before keeps answering here and stays published,
        # and nothing of the failed fit is left in the data dir.
        before = a.store.ranker_save_id()
        serving = a.model.recommender
        publish = a.store.publish_ranker

        def down(*args: object, **kwargs: object) -> bool:
            raise DataError("cannot publish the ranker in the database: connection refused")

        a.store.publish_ranker = down  # type: ignore[method-assign]
        with pytest.raises(DataError, match="cannot publish"):
            a.model.fit()
        assert a.model.recommender is serving and a.store.ranker_save_id() == before
        assert Ranker.saved_id(a.model.path) == before

        # A forget whose publish fails fails, and run again once the database answers, it is done in full.
        other = ids[6]
        with pytest.raises(DataError, match="cannot publish"):
            a.model.forget(other)
        assert other in Ranker.saved_customer_ids(a.model.path), "not kept here either"
        a.store.publish_ranker = publish  # type: ignore[method-assign]
        a.forget(other)
        assert a.store.fetch_ranker(a.store.ranker_save_id() or "", {"json": fetched.with_suffix(".json")})
        assert other not in json.loads(fetched.with_suffix(".json").read_text())["customer_ids"]
        assert other not in b.model.recommender.ranker.customer_index
    # A third, with the ranker kept in files, publishes nothing: it fits its own.
    with Tailor.open(settings("c", ranker_store="files")) as c:
        shared = c.store.ranker_save_id()
        assert c.index()["ranker"] == "fitted" and c.store.ranker_save_id() == shared
        own = Ranker.load(c.model.path)
        assert own.save_id not in (None, shared)
        # As a store moved to a database that holds no ranker yet: nothing published.
        with c.store.transaction() as db:
            db.execute(sa.text("DELETE FROM ranker_chunks"))
            db.execute(sa.text("DELETE FROM ranker_saves"))
    # Opened on the database with the ranker it has in its data dir: that one is published at its first
    # load, not fitted again.
    with Tailor.open(settings("c")) as d:
        ranker = d.model.recommender.ranker
        assert d.store.ranker_save_id() == ranker.save_id == Ranker.saved_id(d.model.path)
        assert ranker.fitted_at == own.fitted_at and ranker.customer_ids == own.customer_ids
        assert d.model.refits.done == 0


def test_the_status_asks_the_database_for_the_published_ranker_at_most_once_a_reload_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The metrics scrape and GET /v1/model ask for the status every few seconds: the published save is
    looked up at the first call, then no more often than a request looks (``ranker_reload_s``)."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    seed_store(tmp_path / "a", n_customers=12, database_url=url)

    def settings(name: str) -> Settings:
        return Settings(data_dir=tmp_path / name, now=NOW, database_url=url, ranker_reload_s=600.0)

    with Tailor.open(settings("a")) as a, Tailor.open(settings("b")) as b:
        assert a.index()["ranker"] == "fitted"
        asked: list[str | None] = []
        real = b.store.ranker_save_id
        fetch = b.model._fetch_published

        def looked() -> None:
            asked.append(real())
            fetch()

        monkeypatch.setattr(b.model, "_fetch_published", looked)
        assert b.model_status()["fitted"], "the first status fetches what the database holds"
        assert len(asked) == 1
        for _ in range(5):
            assert b.model_status()["fitted"]
        assert len(asked) == 1, "within the reload period the status does not ask again"
        assert b.model._status_fetched is not None
        b.model._status_fetched -= 600.0  # the period has passed
        b.model_status()
        assert len(asked) == 2


def test_a_fit_saves_before_it_locks_so_ingests_do_not_wait_and_a_forget_meanwhile_is_purged(
    indexed: tuple[Tailor, list[str]],
) -> None:
    """Between the save (a publish, on a shared database) and the swap the fit holds no lock: an ingest goes
    through at once, and a customer forgotten then is purged from the new ranker under the lock and the
    ranker saved again, so neither memory nor the files hold them."""
    tailor, ids = indexed
    victim = ids[6]
    bought = _bought(ids[0], "O-during-save", datetime(2011, 12, 6, tzinfo=UTC))
    done: dict[str, object] = {}

    def between_save_and_swap(point: str) -> None:
        if point != "saved":
            return
        saved = Ranker.saved_id(tailor.model.path)
        workers = [
            threading.Thread(target=lambda: done.update(ingest=tailor.ingest([bought]))),
            threading.Thread(target=lambda: done.update(forget=tailor.forget(victim))),
        ]
        for worker in workers:
            worker.start()
            worker.join(60)
            assert not worker.is_alive(), "an ingest or a forget waited for the fit"
        done["saved_before"] = saved

    tailor.model.refits.on_checkpoint = between_save_and_swap
    try:
        report = tailor.refit()
    finally:
        tailor.model.refits.on_checkpoint = None
    assert done["ingest"]["events"] == 1  # type: ignore[index]
    assert done["forget"]
    assert report["purged_during_fit"] == 1
    ranker = tailor.recommender.ranker
    assert victim not in ranker.customer_index
    assert victim not in Ranker.saved_customer_ids(tailor.model.path)
    # What is saved is what answers: the save after the purge, not the fit's first nor the forget's.
    assert Ranker.saved_id(tailor.model.path) == ranker.save_id != done["saved_before"]
    assert tailor.model_status()["purchases_since_fit"] == 1


def test_a_fit_that_fails_after_its_save_puts_back_the_ranker_that_answers(
    indexed: tuple[Tailor, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fit saves before it swaps; a swap that fails (Qdrant down as the collaborative vectors are
    written) must not leave the refused ranker saved, where the next look, or another replica, would load
    it."""
    tailor, _ = indexed
    served = tailor.recommender.ranker
    vectors = tailor.model._vectors()

    class Down:
        def item_ids(self) -> set[str]:
            raise BackendError("the vector store is down")

    monkeypatch.setattr(tailor.model, "_vectors", lambda: Down())
    with pytest.raises(BackendError, match="down"):
        tailor.refit()
    monkeypatch.setattr(tailor.model, "_vectors", lambda: vectors)
    assert tailor.recommender.ranker is served
    # Saved back under a new save id (its bytes are the served one's), and this process holds that save: its
    # next look loads nothing.
    assert Ranker.saved_id(tailor.model.path) == served.save_id
    assert tailor.model._saved_stamp() == tailor.model._stamp


def test_a_ranker_found_holding_a_forgotten_customer_is_saved_again_without_them(
    tmp_path: Path, indexed: tuple[Tailor, list[str]]
) -> None:
    """A fit that saved before a forget and died before saving again leaves the customer's rows in the
    files: the next load purges them in memory and saves the purged ranker over the files."""
    tailor, ids = indexed
    victim = ids[4]
    path = tailor.model.path
    kept = tmp_path / "kept"
    kept.mkdir()
    for suffix in (".npz", ".json"):
        (kept / f"ranker{suffix}").write_bytes(path.with_suffix(suffix).read_bytes())
    tailor.forget(victim)
    assert victim not in Ranker.saved_customer_ids(path)
    settings = tailor.settings
    tailor.close()
    for suffix in (".npz", ".json"):  # as the dead fit left them
        path.with_suffix(suffix).write_bytes((kept / f"ranker{suffix}").read_bytes())
    assert victim in Ranker.saved_customer_ids(path)
    with Tailor.open(settings) as again:
        assert victim not in again.recommender.ranker.customer_index
        assert victim not in Ranker.saved_customer_ids(path)
