"""The served model's health between refits (``tailor.app.shadow``): a shadow evaluation of a real fitted
ranker on the purchases that came after its fit, and the drift of its inputs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from retrieval.ranker import Ranker
from tailor.app.shadow import MIN_CUSTOMERS, psi, shadow_eval
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
    report = shadow_eval(slice_store, fitted, NOW, days=28, stale_ratio=0.9)
    assert report["fitted_at"] == CUT.isoformat() and report["window"]["days"] == 28
    customers = report["customers"]
    assert customers >= MIN_CUSTOMERS, "the slice's last month has buyers the ranker knows"
    recall = report["recall@10"]
    assert set(recall) == {"served", "repeat", "popularity"} and all(0 <= v <= 1 for v in recall.values())
    ratio = report["ratio_to_best_reference"]
    assert ratio == pytest.approx(recall["served"] / max(recall["repeat"], recall["popularity"]), abs=1e-3)
    assert report["stale"] is (ratio < 0.9)
    # Past a bar no ranker clears, it is marked stale; the drift of its inputs is measured either way.
    assert shadow_eval(slice_store, fitted, NOW, days=28, stale_ratio=2.0)["stale"] is True
    assert all(v is not None and v >= 0 for v in report["drift_psi"].values())


def test_nothing_bought_since_the_fit_marks_nothing(slice_store: Store, fitted: Ranker) -> None:
    report = shadow_eval(slice_store, fitted, CUT, days=28, stale_ratio=2.0)
    assert report["customers"] == 0 and report["stale"] is False and report["recall@10"] == {}
    assert "nothing bought since the fit" in report["note"]
    assert report["drift_psi"] == {"item_mix": None, "basket_lines": None}
