"""The served model's health between refits (``tailor.app.shadow``): a shadow evaluation of a real fitted
ranker on the purchases that came after its fit, and the drift of its inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from evals.protocol import recall_at
from retrieval.ranker import Ranker
from tailor.app.shadow import MIN_CUSTOMERS, psi, shadow_eval
from tailor.core.errors import BackendError
from tailor.core.models import EventKind
from tailor.data.frame import purchases_from_store
from tailor.data.store import Store

CUT = datetime(2011, 11, 9, tzinfo=UTC)
NOW = datetime(2011, 12, 10, tzinfo=UTC)


def test_psi_is_zero_for_the_same_mix_and_large_for_a_shift() -> None:
    assert psi({"a": 10, "b": 30}, {"a": 1, "b": 3}) == pytest.approx(0.0)
    assert psi({"a": 90, "b": 10}, {"a": 10, "b": 90}) > 0.25
    # A bin new on one side counts, finitely.
    assert 0.25 < psi({"a": 10}, {"b": 10}) < 20


@pytest.fixture(scope="module")
def fitted(slice_store: Store) -> Ranker:
    """A ranker fitted a month before the slice ends: the month after is what it is judged on."""
    return Ranker(max_iter=20, label_days=60, windows=1, validate=0).fit(
        purchases_from_store(slice_store), None, now=CUT
    )


def test_the_ranker_is_judged_on_what_was_bought_after_its_fit(slice_store: Store, fitted: Ranker) -> None:
    report = shadow_eval(slice_store, fitted, NOW, days=31, stale_ratio=0.9)
    assert report["fitted_at"] == CUT.isoformat() and report["window"]["days"] == 31
    # Exactly the purchases from the fit to now, by the customers the ranker knows: worked out here apart.
    after = [e for e in slice_store.events(kinds=[EventKind.PURCHASE], since=CUT, until=NOW)]
    known = {e.customer_id for e in after if e.customer_id in fitted.customer_index}
    assert report["purchases_in_window"] == len(after) and report["customers"] == len(known) >= MIN_CUSTOMERS
    bought: dict[str, set[str]] = {}
    for e in after:
        if e.customer_id in known and e.item_id:
            bought.setdefault(e.customer_id, set()).add(e.item_id)
    ids = sorted(known)
    served = sum(recall_at(lst, bought[c], 10) for c, lst in zip(ids, fitted.rank(ids, k=10), strict=True))
    recall = report["recall@10"]
    assert recall["served"] == pytest.approx(served / len(ids), abs=1e-4)
    assert set(recall) == {"served", "repeat", "popularity"} and all(0 <= v <= 1 for v in recall.values())
    ratio = report["ratio_to_best_reference"]
    assert ratio == pytest.approx(recall["served"] / max(recall["repeat"], recall["popularity"]), abs=1e-3)
    assert report["stale"] is (ratio < 0.9)
    # Past a bar no ranker clears, it is marked stale.
    assert shadow_eval(slice_store, fitted, NOW, days=31, stale_ratio=2.0)["stale"] is True
    # A window of the month before the fit instead would be judged on what the ranker was fitted on.
    assert report["purchases_in_window"] != len(
        slice_store.events(kinds=[EventKind.PURCHASE], since=CUT - timedelta(days=31), until=CUT)
    )


def test_fresh_repeat_history_is_as_of_the_windows_start(slice_store: Store, fitted: Ranker) -> None:
    """A model older than the window is compared with repeat history as of the window's start, not as of its
    own fit: what a refit would know."""
    from tailor.app.shadow import _fresh_repeat

    report = shadow_eval(slice_store, fitted, NOW, days=10, stale_ratio=0.9)
    since = NOW - timedelta(days=10)
    assert report["window"] == {"start": since.isoformat(), "end": NOW.isoformat(), "days": 10.0}
    buyers = sorted({e.customer_id for e in slice_store.events(kinds=[EventKind.PURCHASE], until=since)})[:5]
    fresh = _fresh_repeat(slice_store, buyers, since)
    for cid in buyers:
        orders: dict[str, set[str]] = {}
        for e in slice_store.events(cid, kinds=[EventKind.PURCHASE], until=since):
            orders.setdefault(e.item_id or "", set()).add(e.order_id or "")
        most = max(len(v) for v in orders.values())
        assert fresh[cid] and len(orders[fresh[cid][0]]) == most
        # Bought between the fit and the window's start counts: the fit never saw it.
        assert set(fresh[cid]) <= set(orders)


def test_nothing_bought_since_the_fit_marks_nothing(slice_store: Store, fitted: Ranker) -> None:
    report = shadow_eval(slice_store, fitted, CUT, days=28, stale_ratio=2.0)
    assert report["customers"] == 0 and report["stale"] is False and report["recall@10"] == {}
    assert "nothing bought in the window" in report["note"]
    assert report["drift_psi"] == {"item_mix": None, "basket_lines": None}


def test_the_gauges_follow_each_evaluation_and_a_failure_changes_none(tmp_path: Path) -> None:
    from tailor.app.http.state import ServiceState
    from tailor.app.metrics import Metrics
    from tailor.app.ops import Ops
    from tailor.core.settings import Settings

    answers: list[object] = [
        {"customers": 40, "recall@10": {"served": 0.2, "repeat": 0.3, "popularity": 0.1},
         "ratio_to_best_reference": 0.667, "stale": True,
         "drift_psi": {"item_mix": 0.3, "basket_lines": 0.01}},
        RuntimeError("the store went away"),
        {"customers": 0, "recall@10": {}, "ratio_to_best_reference": None, "stale": False,
         "drift_psi": {"item_mix": None, "basket_lines": None}},
    ]  # fmt: skip

    class Facade:
        def shadow_eval(self) -> object:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    ops = Ops(tmp_path / "ops.db")
    try:
        metrics = Metrics()
        state = ServiceState(Settings(data_dir=tmp_path), Facade(), ops, metrics)  # type: ignore[arg-type]
        state.run_shadow_eval()
        text = metrics.render()
        assert "tailor_model_stale_by_shadow 1" in text and "tailor_model_shadow_ratio 0.667" in text
        assert "tailor_model_drift_item_mix_psi 0.3" in text
        failed = state.run_shadow_eval()
        assert failed["error"] == "RuntimeError" and failed["customers"] == 40
        assert "tailor_model_stale_by_shadow 1" in metrics.render(), "a failure says nothing of the model"
        assert metrics.value("tailor_model_shadow_failures_total") == 1
        state.run_shadow_eval()  # a new model, nothing bought since its fit: the old figures go
        text = metrics.render()
        assert "tailor_model_stale_by_shadow 0" in text and "tailor_model_shadow_ratio " not in text
        assert "tailor_model_drift_item_mix_psi " not in text and "tailor_model_shadow_customers 0" in text
    finally:
        ops.close()


def test_a_customer_forgotten_while_it_runs_is_left_out_not_an_error(
    slice_store: Store, fitted: Ranker
) -> None:
    """The forget lands between the window's read and the ranking (it holds the model lock, and purges the
    ranker first): she is not ranked, and the rest are judged as before."""
    import copy
    import threading

    ranker = copy.deepcopy(fitted)
    whole = shadow_eval(slice_store, ranker, NOW, days=31, stale_ratio=0.9)
    after = {e.customer_id for e in slice_store.events(kinds=[EventKind.PURCHASE], since=CUT, until=NOW)}
    victim = sorted(c for c in after if c in ranker.customer_index)[0]

    class ForgetOnEnter:
        def __init__(self) -> None:
            self.lock = threading.RLock()

        def __enter__(self) -> object:
            self.lock.acquire()
            ranker.forget(victim)  # what a forget does under the model lock
            return self

        def __exit__(self, *exc: object) -> None:
            self.lock.release()

    report = shadow_eval(slice_store, ranker, NOW, days=31, stale_ratio=0.9, lock=ForgetOnEnter())
    assert report["customers"] == whole["customers"] - 1
    assert victim not in ranker.customer_index and 0 <= report["recall@10"]["served"] <= 1


def test_a_ranker_replaced_while_it_runs_is_not_reported_the_served_one_is(
    slice_store: Store, fitted: Ranker
) -> None:
    """A refit lands between the lookup and the ranking (it swaps the served ranker under the model lock):
    the one served now is judged, not the one looked up before."""
    import copy
    import threading

    before = copy.deepcopy(fitted)
    whole = shadow_eval(slice_store, before, NOW, days=31, stale_ratio=0.9)
    after = {e.customer_id for e in slice_store.events(kinds=[EventKind.PURCHASE], since=CUT, until=NOW)}
    victim = sorted(c for c in after if c in before.customer_index)[0]
    refitted = copy.deepcopy(fitted)
    refitted.forget(victim)  # a ranker that differs in what it can judge
    serving = {"now": before}

    class RefitOnEnter:
        def __init__(self) -> None:
            self.lock = threading.RLock()
            self.entered = 0

        def __enter__(self) -> object:
            self.lock.acquire()
            self.entered += 1
            serving["now"] = refitted  # what a refit's swap does under the model lock
            return self

        def __exit__(self, *exc: object) -> None:
            self.lock.release()

    lock = RefitOnEnter()
    report = shadow_eval(
        slice_store, before, NOW, days=31, stale_ratio=0.9, lock=lock, served=lambda: serving["now"]
    )
    assert lock.entered == 2, "judged again, on the ranker served now"
    assert victim in before.customer_index, "the replaced ranker is left as it was"
    assert report["customers"] == whole["customers"] - 1

    class RefitEveryTime(RefitOnEnter):
        def __enter__(self) -> object:
            self.lock.acquire()
            serving["now"] = copy.copy(refitted)  # a new ranker at every look
            return self

    with pytest.raises(BackendError, match="kept changing"):
        shadow_eval(
            slice_store,
            before,
            NOW,
            days=31,
            stale_ratio=0.9,
            lock=RefitEveryTime(),
            served=lambda: serving["now"],
        )
