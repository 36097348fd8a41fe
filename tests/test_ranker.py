"""The learned ranker on a seeded synthetic shop: tree export, persistence, no leakage, and that it learns."""

from __future__ import annotations

import dataclasses
import json
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from evals.protocol import evaluate, recall_at, temporal_split
from evals.ranking import recency_shift_bound, reference_rankers
from retrieval.features import (
    FEATURES,
    CandidateLimits,
    History,
    _local_ease,
    build_candidates,
    fit_collab,
    item_stats,
    spd_inverse,
)
from retrieval.ranker import SCORERS, Ranker, TreeEnsemble, _choose_serving, _train_trees, label_window
from tailor.core.errors import DataError, NotFoundError
from tailor.data.synthetic import SyntheticStore

START = pd.Timestamp("2011-01-01", tz="UTC")
CUT = START + pd.Timedelta(days=300)


def synthetic_shop(seed: int = 0, customers: int = 160, items: int = 90, days: int = 400) -> pd.DataFrame:
    """Customers re-buy a few favourites at their own cadence and browse within one of six item groups."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(customers):
        group = rng.integers(0, 6)
        pool = [i for i in range(items) if i % 6 == group]
        favourites = rng.choice(pool, size=3, replace=False)
        cadence = rng.integers(10, 40)
        t = float(rng.integers(0, 30))
        order = 0
        while t < days:
            basket = [f for f in favourites if rng.random() < 0.7]
            basket += list(rng.choice(pool, size=2, replace=False))
            if rng.random() < 0.2:
                basket.append(int(rng.integers(0, items)))
            for it in dict.fromkeys(int(b) for b in basket):
                rows.append((f"c{c}", f"i{it}", START + pd.Timedelta(days=t), f"o{c}-{order}"))
            order += 1
            t += float(rng.exponential(cadence))
    return pd.DataFrame(rows, columns=["customer_id", "item_id", "timestamp", "order_id"])


@pytest.fixture(scope="module")
def shop() -> pd.DataFrame:
    return synthetic_shop()


@pytest.fixture(scope="module")
def text() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    groups = rng.standard_normal((6, 16))
    return {f"i{i}": groups[i % 6] + 0.3 * rng.standard_normal(16) for i in range(90)}


@pytest.fixture(scope="module")
def fitted(shop: pd.DataFrame, text: dict[str, np.ndarray]) -> Ranker:
    return Ranker(max_iter=40, label_days=60, windows=2).fit(shop, text, now=CUT)


def test_trees_are_lightgbm_text_models_that_reload_and_refit_exactly() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, len(FEATURES))).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    y = (np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) ** 2 > 0.5).astype(np.int8)
    w = rng.random(len(y)) + 0.5
    trees = _train_trees(x, y, w, seed=3, max_iter=30)
    text = trees.to_text()
    assert text.startswith("tree\nversion=") and f"feature_names={' '.join(FEATURES)}" in text
    assert text.count("Tree=") == 30
    reloaded = TreeEnsemble.from_text(text)
    np.testing.assert_array_equal(reloaded.predict(x), trees.predict(x))
    # It learned the rule: positives score above negatives.
    scores = trees.predict(x)
    assert scores[y == 1].mean() > scores[y == 0].mean() + 1.0
    # Deterministic: the same data and seed give the same model, to the byte.
    assert _train_trees(x, y, w, seed=3, max_iter=30).to_text() == text
    assert trees.predict(x[:0]).shape == (0,)
    with pytest.raises(DataError, match="cannot read the trees"):
        TreeEnsemble.from_text("tree\nnot a model")
    # Trees over other features (another version's) are refused by name, not scored on the wrong columns.
    import lightgbm as lgb

    fewer = lgb.train({"objective": "binary", "verbosity": -1}, lgb.Dataset(x[:, :5], y), num_boost_round=3)
    with pytest.raises(DataError, match="other features"):
        TreeEnsemble.from_text(fewer.model_to_string())


def test_learned_ranker_beats_references_on_synthetic_shop(shop: pd.DataFrame, fitted: Ranker) -> None:
    split = temporal_split(shop, CUT)
    refs = reference_rankers(split)
    ours = evaluate(split, lambda cs, new: fitted.rank(cs, new_only=new, k=20), "all")
    pop = evaluate(split, refs["popularity"], "all")
    assert ours["recall@10"] > pop["recall@10"] + 0.1
    ours_new = evaluate(split, lambda cs, new: fitted.rank(cs, new_only=new, k=20), "new-only")
    pop_new = evaluate(split, refs["popularity"], "new-only")
    assert ours_new["recall@10"] > pop_new["recall@10"]


def test_no_leakage_future_purchases_change_nothing(shop: pd.DataFrame, text: dict[str, np.ndarray]) -> None:
    past = shop[shop["timestamp"] < CUT]
    a = Ranker(max_iter=15, label_days=60, windows=1).fit(past, text, now=CUT)
    b = Ranker(max_iter=15, label_days=60, windows=1).fit(shop, text, now=CUT)
    assert a.rank(["c1", "c2", "c3"], k=10) == b.rank(["c1", "c2", "c3"], k=10)
    assert [s.score for s in a.score("c5")] == pytest.approx([s.score for s in b.score("c5")])


def test_features_refuse_a_history_past_now(shop: pd.DataFrame) -> None:
    items = sorted(shop["item_id"].unique())
    custs = sorted(shop["customer_id"].unique())
    hist = History.from_frame(shop, {c: i for i, c in enumerate(custs)}, {x: i for i, x in enumerate(items)})
    now_day = float(hist.day.max()) - 10
    collab = fit_collab(hist.before(now_day), len(items), dims=8)
    with pytest.raises(DataError, match="leak"):
        build_candidates(
            hist,
            [0],
            now_day=now_day,
            n_items=len(items),
            items=item_stats(hist, len(items), now_day),
            collab=collab,
            text=None,
        )


def test_repeat_candidates_keep_the_items_bought_most_of_late(shop: pd.DataFrame) -> None:
    items = sorted(shop["item_id"].unique())
    custs = sorted(shop["customer_id"].unique())
    hist = History.from_frame(shop, {c: i for i, c in enumerate(custs)}, {x: i for i, x in enumerate(items)})
    now_day = float(hist.day.max()) + 1
    common = {
        "now_day": now_day,
        "n_items": len(items),
        "items": item_stats(hist, len(items), now_day),
        "collab": fit_collab(hist, len(items), dims=8),
        "text": None,
    }
    row = int(np.argmax(np.bincount(hist.cust)))  # the busiest customer: the most past items
    mine = hist.cust == row
    past = np.unique(hist.item[mine])
    assert len(past) > 3
    repeat_only = CandidateLimits(collab=0, text=0, trend=0)
    every = build_candidates(hist, [row], limits=repeat_only, **common)
    assert sorted(every.item.tolist()) == past.tolist() and set(every.source.tolist()) == {1}
    kept = build_candidates(hist, [row], limits=dataclasses.replace(repeat_only, repeat=3), **common)
    assert len(kept) == 3
    # The three with the most orders decayed over 120 days, the feature the candidates carry.
    decay = every.x[:, FEATURES.index("decay120")]
    assert set(kept.item.tolist()) == set(every.item[np.argsort(-decay, kind="stable")[:3]].tolist())
    assert decay[np.isin(every.item, kept.item)].min() >= decay[~np.isin(every.item, kept.item)].max()
    with pytest.raises(DataError, match="n_repeat must be >= 0"):
        Ranker(n_repeat=-1)
    with pytest.raises(DataError, match="n_text must be >= 0"):
        Ranker(n_text=-2)
    with pytest.raises(DataError, match="trend candidate limit"):
        CandidateLimits(trend=-1)
    assert Ranker(n_collab=7, n_repeat=5).limits == CandidateLimits(
        collab=7, text=30, trend=30, repeat=5, popular=30
    )
    with pytest.raises(DataError, match="n_popular must be >= 0"):
        Ranker(n_popular=-1)


def test_popular_candidates_are_the_best_sellers_she_has_not_bought(shop: pd.DataFrame) -> None:
    items = sorted(shop["item_id"].unique())
    custs = sorted(shop["customer_id"].unique())
    hist = History.from_frame(shop, {c: i for i, c in enumerate(custs)}, {x: i for i, x in enumerate(items)})
    now_day = float(hist.day.max()) + 1
    stats = item_stats(hist, len(items), now_day)
    common = {
        "now_day": now_day,
        "n_items": len(items),
        "items": stats,
        "collab": fit_collab(hist, len(items), dims=8),
    }
    popular_only = CandidateLimits(collab=0, text=0, trend=0, popular=5)
    row = int(np.argmax(np.bincount(hist.cust)))
    mine = set(np.unique(hist.item[hist.cust == row]).tolist())
    new = build_candidates(hist, [row], limits=popular_only, new_only=True, text=None, **common)
    # The five items most customers bought, among those she has not.
    best = [int(i) for i in np.argsort(-stats.pop, kind="stable") if int(i) not in mine][:5]
    assert sorted(new.item.tolist()) == sorted(best) and set(new.source.tolist()) == {16}
    rest = [i for i in range(len(items)) if i not in mine | set(best)]
    assert stats.pop[new.item].min() >= stats.pop[rest].max()
    # With her own items too, a best seller she bought is both a repeat and a popular candidate.
    both = build_candidates(hist, [row], limits=popular_only, text=None, **common)
    assert set(mine) <= set(both.item.tolist())
    assert all(s & 16 for s, it in zip(both.source, both.item, strict=True) if int(it) in best)


def test_without_text_vectors_the_text_source_adds_nothing(shop: pd.DataFrame) -> None:
    """A store with no product names (Ta-Feng) has no text signal: items must not be added by a similarity of
    zero, which is no similarity at all."""
    items = sorted(shop["item_id"].unique())
    custs = sorted(shop["customer_id"].unique())
    hist = History.from_frame(shop, {c: i for i, c in enumerate(custs)}, {x: i for i, x in enumerate(items)})
    now_day = float(hist.day.max()) + 1
    cands = build_candidates(
        hist,
        [0, 1, 2],
        now_day=now_day,
        n_items=len(items),
        items=item_stats(hist, len(items), now_day),
        collab=fit_collab(hist, len(items), dims=8),
        text=None,
        limits=CandidateLimits(collab=0, text=30, trend=0),
        new_only=True,
    )
    assert len(cands) == 0


def test_save_load_roundtrip_without_pickle(fitted: Ranker, tmp_path: Path) -> None:
    path = fitted.save(tmp_path / "ranker")
    with np.load(path, allow_pickle=False) as arrays:
        # The trees travel in LightGBM's own text format, as bytes an npz holds without pickle.
        assert bytes(arrays["all_trees"]).startswith(b"tree\nversion=")
        assert bytes(arrays["new_trees"]).startswith(b"tree\nversion=")
    loaded = Ranker.load(tmp_path / "ranker")
    assert loaded.rank(["c0", "c7"], k=10) == fitted.rank(["c0", "c7"], k=10)
    assert [s.score for s in loaded.score("c9")] == [s.score for s in fitted.score("c9")]
    assert [s.score for s in loaded.score("c9", new_only=True)] == [
        s.score for s in fitted.score("c9", new_only=True)
    ]


def test_a_ranker_saved_before_popular_candidates_serves_without_them(fitted: Ranker, tmp_path: Path) -> None:
    fitted.save(tmp_path / "before")
    meta = json.loads((tmp_path / "before.json").read_text())
    del meta["params"]["n_popular"]
    (tmp_path / "before.json").write_text(json.dumps(meta))
    loaded = Ranker.load(tmp_path / "before")
    assert loaded.limits.popular == 0 and fitted.limits.popular == 30
    assert not any("popular" in s.sources for s in loaded.score("c9", k=100))


def test_files_of_two_saves_are_refused_and_files_from_before_save_ids_still_load(
    fitted: Ranker, tmp_path: Path
) -> None:
    import shutil

    # Two processes saved at once: one's npz beside the other's json.
    fitted.save(tmp_path / "a")
    fitted.save(tmp_path / "b")
    shutil.copy(tmp_path / "a.npz", tmp_path / "mixed.npz")
    shutil.copy(tmp_path / "b.json", tmp_path / "mixed.json")
    with pytest.raises(DataError, match="are of two saves") as e:
        Ranker.load(tmp_path / "mixed")
    assert e.value.hint is not None
    assert Ranker.load(tmp_path / "a").customer_ids == fitted.customer_ids
    # Saved before the save id: neither file has one, and it loads as it always did.
    meta = json.loads((tmp_path / "a.json").read_text())
    del meta["save_id"]
    (tmp_path / "old.json").write_text(json.dumps(meta))
    with np.load(tmp_path / "a.npz", allow_pickle=False) as npz:
        arrays = {k: v for k, v in npz.items() if k != "save_id"}
    np.savez_compressed(tmp_path / "old.npz", **arrays)
    assert Ranker.load(tmp_path / "old").rank(["c9"], k=5) == fitted.rank(["c9"], k=5)


def test_an_old_or_corrupt_saved_ranker_is_a_clear_error(fitted: Ranker, tmp_path: Path) -> None:
    fitted.save(tmp_path / "old")
    meta = json.loads((tmp_path / "old.json").read_text())
    meta["format"] = 1  # what the scikit-learn trees were saved as
    (tmp_path / "old.json").write_text(json.dumps(meta))
    with pytest.raises(
        DataError, match=r"saved by another version \(format 1, this version reads format 2"
    ) as e:
        Ranker.load(tmp_path / "old")
    assert e.value.hint is not None and "refit" in e.value.hint
    fitted.save(tmp_path / "cut")
    data = (tmp_path / "cut.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cannot load the ranker from"):
        Ranker.load(tmp_path / "cut")
    # A readable npz whose trees are not a LightGBM model.
    fitted.save(tmp_path / "bad")
    with np.load(tmp_path / "bad.npz", allow_pickle=False) as npz:
        arrays = dict(npz)
    arrays["new_trees"] = np.frombuffer(b"tree\nnonsense", dtype=np.uint8)
    np.savez_compressed(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=r"cannot read the trees in .*bad\.npz"):
        Ranker.load(tmp_path / "bad")
    del arrays["all_trees"]
    np.savez_compressed(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=r"trees in .*bad\.npz are missing"):
        Ranker.load(tmp_path / "bad")


def test_forget_removes_a_customer_from_the_ranker_and_its_files(
    fitted: Ranker, shop: pd.DataFrame, tmp_path: Path
) -> None:
    fitted.save(tmp_path / "ranker")
    ranker = Ranker.load(tmp_path / "ranker")
    past = shop[shop["timestamp"] < CUT]
    theirs = int((past["customer_id"] == "c5").sum())
    assert theirs > 0 and "c5" in Ranker.saved_customer_ids(tmp_path / "ranker")
    c7_before = fitted._history.item[fitted._history.cust == fitted.customer_index["c7"]]  # type: ignore[union-attr]
    assert ranker.forget("c5") == theirs
    assert ranker.forget("c5") == 0 and ranker.forget("nobody") == 0
    assert "c5" not in ranker.customer_index and len(ranker.customer_ids) == len(fitted.customer_ids) - 1
    with pytest.raises(NotFoundError):
        ranker.score("c5")
    # Everyone else keeps their rows (under shifted row numbers), and the item statistics are exactly what
    # the remaining purchases give.
    history = ranker._history
    assert history is not None and history.n_customers == len(ranker.customer_ids)
    assert len(history.cust) == len(fitted._history.cust) - theirs  # type: ignore[union-attr]
    np.testing.assert_array_equal(history.item[history.cust == ranker.customer_index["c7"]], c7_before)
    rest = History.from_frame(past[past["customer_id"] != "c5"], ranker.customer_index, ranker.item_index)
    expected = item_stats(rest, len(ranker.item_ids), ranker.now_day)
    assert ranker._items is not None
    np.testing.assert_allclose(ranker._items.matrix(), expected.matrix())
    assert ranker.rank(["c0"], k=5)[0]
    # Saved, nothing of theirs is left in the files, and no temporary file either.
    ranker.save(tmp_path / "ranker")
    assert '"c5"' not in (tmp_path / "ranker.json").read_text()
    assert "c5" not in Ranker.saved_customer_ids(tmp_path / "ranker")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ranker.json", "ranker.npz"]
    reloaded = Ranker.load(tmp_path / "ranker")
    assert "c5" not in reloaded.customer_index
    with np.load(tmp_path / "ranker.npz", allow_pickle=False) as arrays:
        assert len(arrays["h_cust"]) == len(history.cust) and int(arrays["h_cust"].max()) < len(
            ranker.customer_ids
        )
    assert Ranker.saved_customer_ids(tmp_path / "nothing-here") == []


def test_score_reports_sources_and_features(fitted: Ranker, shop: pd.DataFrame) -> None:
    top = fitted.score("c0", k=15)
    assert top == sorted(top, key=lambda s: -s.score)
    assert set(top[0].features) == set(FEATURES)
    bought = set(shop[(shop["customer_id"] == "c0") & (shop["timestamp"] < CUT)]["item_id"])
    for s in top:
        assert ("repeat" in s.sources) == (s.item_id in bought)
    # the most frequent re-buy of this customer makes the top 3
    favourite = (
        shop[(shop["customer_id"] == "c0") & (shop["timestamp"] < CUT)]["item_id"].value_counts().index[0]
    )
    assert favourite in [s.item_id for s in top[:3]]


def test_score_with_fresh_events_for_an_unknown_customer(fitted: Ranker) -> None:
    events = pd.DataFrame(
        {"item_id": ["i3", "i3", "i9"], "timestamp": [CUT - pd.Timedelta(days=d) for d in (30, 5, 5)]}
    )
    # Every candidate: where a customer with two orders in all (none in training had so few) ranks their own
    # items is the trees' extrapolation, not what this checks.
    top = fitted.score("someone-new", events=events, k=len(fitted.item_ids))
    assert {"i3", "i9"} <= {s.item_id for s in top if "repeat" in s.sources}
    i3 = next(s for s in top if s.item_id == "i3")
    assert i3.features["orders"] == 2 and i3.features["days_last"] == pytest.approx(5)
    assert i3.features["c_orders"] == 2 and i3.features["c_tenure"] == pytest.approx(30)
    with pytest.raises(NotFoundError):
        fitted.score("someone-new")


def test_collab_vectors_are_unit_length(fitted: Ranker) -> None:
    vecs = fitted.collab_vectors()
    assert len(vecs) == len(fitted.item_ids)
    norms = np.linalg.norm(np.stack(list(vecs.values())), axis=1)
    assert np.all((np.abs(norms - 1) < 1e-4) | (norms == 0))
    assert (norms > 0).mean() > 0.9


def test_ease_penalty_reaches_the_fit_and_the_saved_parameters(shop: pd.DataFrame, tmp_path: Path) -> None:
    light, heavy = (
        Ranker(max_iter=10, label_days=60, windows=1, ease_lambda=lam).fit(shop, None, now=CUT)
        for lam in (5, 5000)
    )
    ease_light, ease_heavy = light._require()[2].ease, heavy._require()[2].ease
    assert ease_light.nnz and ease_heavy.nnz
    # EASE's weights shrink toward zero as its L2 penalty grows (B_ij -> G_ij / lambda).
    assert np.abs(ease_heavy.data).max() < 0.2 * np.abs(ease_light.data).max()
    heavy.save(tmp_path / "heavy")
    assert Ranker.load(tmp_path / "heavy").params["ease_lambda"] == 5000


def test_bad_inputs_are_named(shop: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="label_days"):
        Ranker(label_days=1)
    with pytest.raises(DataError, match="ease_lambda must be > 0"):
        Ranker(ease_lambda=0)
    with pytest.raises(DataError, match="no purchases"):
        Ranker().fit(shop, None, now=START)
    with pytest.raises(DataError, match="not fitted"):
        Ranker().rank(["c0"])
    with pytest.raises(DataError, match="mixed shapes"):
        Ranker(max_iter=5).fit(shop, {"i1": np.ones(3), "i2": np.ones(4)}, now=CUT)


def test_recency_shift_bound_reranks_only_the_old_purchases(shop: pd.DataFrame, fitted: Ranker) -> None:
    split = temporal_split(shop, CUT)
    ours = evaluate(split, lambda cs, new: fitted.rank(cs, new_only=new, k=20), "all")
    bound = recency_shift_bound(fitted, split, min_days=0.0, shifts=(0.0, 1000.0))
    assert bound[0.0] == pytest.approx(ours["recall@10"], abs=1e-12)
    # Raising every item the customer ever bought by far more than any score gap puts all of them first, in
    # the ranker's order, ahead of the items they never bought.
    customers = split.evaluated("all")
    full = fitted.rank(customers, k=len(fitted.item_ids))
    bought = split.train.groupby("customer_id")["item_id"].agg(set)
    expected = np.mean(
        [
            recall_at(
                [i for i in ranked if i in bought[c]] + [i for i in ranked if i not in bought[c]],
                split.relevant(c, "all"),
                10,
            )
            for c, ranked in zip(customers, full, strict=True)
        ]
    )
    assert bound[1000.0] == pytest.approx(expected, abs=1e-12)
    assert bound[1000.0] != bound[0.0]
    with pytest.raises(DataError, match="shifts"):
        recency_shift_bound(fitted, split, shifts=(-0.5,))


def test_earlier_windows_need_enough_past_but_the_first_always_counts(
    shop: pd.DataFrame, text: dict[str, np.ndarray]
) -> None:
    # 300 days before the cut, 60-day windows: label windows start 240, 180, 120, 60 and 0 days in.
    def used(frame: pd.DataFrame, **params: int) -> int:
        return Ranker(max_iter=5, label_days=60, windows=6, **params).fit(frame, text, now=CUT).windows_used

    assert used(shop, min_past_days=1) == 4  # the window starting on day 0 has no past at all
    assert used(shop, min_past_days=100) == 3  # 60 days of past is too little
    assert used(shop, min_past_days=250) == 1  # only the first: 240 days of past
    short = shop[shop["timestamp"] >= CUT - pd.Timedelta(days=90)]
    # 89 whole days cannot hold a 60-day window and 60 days of past: the window shrinks to 29 days, one of
    # them fits, and an earlier one would have 31 days of past.
    assert used(short, min_past_days=60) == 1
    with pytest.raises(DataError, match="min_past_days"):
        Ranker(min_past_days=0)


def test_label_window_is_kept_on_a_long_history_and_shortened_on_a_young_one() -> None:
    # Long enough for the window and its past: exactly as configured (UCI's 282 and 647 days, say).
    for days in (152, 282, 647):
        assert label_window(92, days, 60)[0] == 92
    assert "configured" in label_window(92, 152, 60)[1]
    # Shorter: the past keeps its 60 days while a third of the history is less than what is left.
    assert label_window(92, 151, 60)[0] == 91
    assert label_window(92, 119, 60)[0] == 59  # Ta-Feng, the four months before 2001-03-01
    assert label_window(92, 91, 60)[0] == 31  # Ta-Feng before its eval cut (2001-02-01)
    # Then a third of it, and never under a week.
    assert label_window(92, 55, 60)[0] == 18  # eight weeks
    assert label_window(92, 12, 60)[0] == 7
    days, why = label_window(92, 55, 60)
    assert "shortened from 92 days" in why and "55 days of history" in why


def test_a_young_store_fits_with_a_shorter_window_and_says_so(
    shop: pd.DataFrame, text: dict[str, np.ndarray], tmp_path: Path
) -> None:
    eight_weeks = shop[shop["timestamp"] >= CUT - pd.Timedelta(days=56)]
    ranker = Ranker(max_iter=10).fit(eight_weeks, text, now=CUT)
    report = ranker.fit_report
    first = eight_weeks["timestamp"].min()
    history = int((CUT - first) / pd.Timedelta(days=1))
    assert report["history_days"] == history and 50 <= history <= 56
    assert report["label_days"] == history // 3 and report["label_days_configured"] == 92
    assert report["windows_used"] == 1 and "shortened from 92 days" in report["label_window"]
    assert ranker.rank(["c1"], k=5)[0]  # it ranks
    # A long history keeps the configured window, as it always did.
    assert (
        Ranker(max_iter=5, label_days=60, windows=1).fit(shop, text, now=CUT).fit_report["label_days"] == 60
    )
    # The report is saved with the ranker.
    ranker.save(tmp_path / "young")
    assert Ranker.load(tmp_path / "young").fit_report == report


def test_fitting_old_data_at_today_names_the_clock(shop: pd.DataFrame, text: dict[str, np.ndarray]) -> None:
    later = CUT + pd.Timedelta(days=400)
    with pytest.raises(DataError, match=r"newest purchase is from .*set TAILOR_NOW to the day after it"):
        Ranker(max_iter=5).fit(shop[shop["timestamp"] < CUT], text, now=later)
    # Six days: even the shortest window (a week) holds the whole history, and nothing comes before it.
    recent = shop[(shop["timestamp"] >= CUT - pd.Timedelta(days=6)) & (shop["timestamp"] < CUT)]
    held = int((CUT - recent["timestamp"].min()) / pd.Timedelta(days=1))
    with pytest.raises(DataError, match="within the last 7 days before now") as info:
        Ranker(max_iter=5).fit(recent, text, now=CUT)
    assert info.value.hint == f"the history holds {held} days before now: fit on a longer one"


def test_each_variant_serves_what_won_on_the_latest_windows(fitted: Ranker) -> None:
    report = fitted.fit_report
    val = report["validation"]
    windows = val["windows"]
    assert len(windows) == 2 and all("skipped" not in w for w in windows)
    # Two windows of 60 days back from the cut, each ranked by a ranker fitted on what came before it.
    assert [w["window_start"] for w in windows] == [
        (CUT - pd.Timedelta(days=60 * k)).isoformat() for k in (1, 2)
    ]
    assert val["window_days"] == 120 and val["window_start"] == windows[-1]["window_start"]
    assert val["customers"]["all"] == sum(w["customers"]["all"] for w in windows) >= 30
    for variant in ("all", "new"):
        figures = val["recall@10"][variant]
        assert set(figures) == set(SCORERS[variant]) and all(0 <= v <= 1 for v in figures.values())
        chosen = report["serving"][variant]
        best = max(figures, key=lambda h: figures[h])
        if chosen != best:
            # The one-standard-error rule: a learned scorer's lead within its error serves the reference.
            lead = val["lead"][variant]
            assert best in ("trees", "trees_all") and lead["over"] == chosen and lead["lead"] <= lead["se"]
        elif variant in val["lead"]:
            assert val["lead"][variant]["lead"] >= val["lead"][variant]["se"]  # rounded: a tie may show
    # Favourites re-bought at each customer's cadence: the learned ranker beats plain repeat history here.
    assert report["serving"]["all"] == "trees"
    assert val["recall@10"]["all"]["trees"] > val["recall@10"]["all"]["repeat"]


def test_the_choice_made_beside_the_fit_is_the_one_made_alone(
    fitted: Ranker, shop: pd.DataFrame, text: dict[str, np.ndarray]
) -> None:
    """The serving choice runs on a thread of its own while the fit trains: the same choice and figures as
    when it runs by itself, after the fit."""
    frame = shop[shop["timestamp"] < CUT]
    alone = _choose_serving(fitted.params, frame, text, CUT, fitted.label_days_used)
    assert alone == (fitted.serving, fitted.validation)


def test_top_per_row_is_the_best_k_of_each_row_ties_to_the_lower_item(fitted: Ranker) -> None:
    """The numpy cut of the ranked candidates against the per-candidate loop it replaced, on rows of every
    length (none, fewer than k, more), shuffled, with tied scores."""
    rng = np.random.default_rng(5)
    rows = np.repeat(np.arange(12), rng.integers(0, 30, 12)).astype(np.int64)
    perm = rng.permutation(len(rows))
    rows = rows[perm]
    items = rng.integers(0, len(fitted.item_ids), len(rows)).astype(np.int64)
    scores = rng.integers(0, 5, len(rows)).astype(np.float64)  # many ties
    expected: dict[int, list[str]] = {}
    order = np.lexsort((items, -scores, rows))
    for r, it in zip(rows[order], items[order], strict=True):
        lst = expected.setdefault(int(r), [])
        if len(lst) < 7:
            lst.append(fitted.item_ids[int(it)])
    assert fitted._top_per_row(rows, items, scores, 7) == expected
    assert any(len(v) == 7 for v in expected.values()) and any(len(v) < 7 for v in expected.values())
    empty = np.zeros(0, dtype=np.int64)
    assert fitted._top_per_row(empty, empty, np.zeros(0), 7) == {}
    assert fitted._top_per_row(rows, items, scores, 0) == {}
    assert fitted.rank(["c1", "c2"], k=0) == [[], []]


def test_reference_scorers_rank_by_their_own_signal(fitted: Ranker, shop: pd.DataFrame) -> None:
    past = shop[shop["timestamp"] < CUT]
    cid = past["customer_id"].value_counts().index[0]
    orders = past[past["customer_id"] == cid].groupby("item_id")["order_id"].nunique()
    [repeat] = fitted.rank([cid], k=10, how="repeat")
    assert set(repeat) <= set(orders.index)
    counts = [int(orders[i]) for i in repeat]
    assert counts == sorted(counts, reverse=True) and counts[0] == int(orders.max())
    [fresh] = fitted.rank([cid], new_only=True, k=10, how="trees_all")
    assert fresh and not set(fresh) & set(orders.index)


def test_ranking_by_every_scorer_at_once_is_ranking_by_each(fitted: Ranker) -> None:
    customers = [f"c{i}" for i in range(0, 160, 7)] + ["nobody"]
    for variant, new in (("all", False), ("new", True)):
        each = fitted.rank_each(customers, new_only=new, k=10, hows=(*SCORERS[variant], None))
        for how in (*SCORERS[variant], None):
            assert each[how] == fitted.rank(customers, new_only=new, k=10, how=how)
        assert each[None] == each[fitted.serving[variant]] and each["popularity"] != each["trees"]


def test_what_is_served_survives_save_and_load(
    shop: pd.DataFrame, text: dict[str, np.ndarray], tmp_path: Path
) -> None:
    ranker = Ranker(max_iter=15, label_days=60, windows=1).fit(shop, text, now=CUT)
    ranker.serving = {"all": "repeat", "new": "trees_all"}  # as a validation could have chosen
    back = Ranker.load(ranker.save(tmp_path / "ranker"))
    assert back.serving == ranker.serving and back.validation == ranker.validation
    ids = ["c1", "c2", "c3"]
    assert back.rank(ids, k=10) == ranker.rank(ids, k=10) == ranker.rank(ids, k=10, how="repeat")
    assert back.rank(ids, new_only=True, k=10) == ranker.rank(ids, new_only=True, k=10, how="trees_all")


def test_a_store_where_the_trees_lose_serves_the_winning_reference() -> None:
    """One boosting round cannot learn a cadence: on a shop of pure repeat buying, repeat history wins the
    validation window and is what the ranker serves."""
    rng = np.random.default_rng(3)
    rows = []
    for c in range(200):
        favourites = rng.choice(60, size=12, replace=False)
        weights = rng.dirichlet(np.ones(12) * 0.3)
        for order, day in enumerate(np.sort(rng.uniform(0, 400, 30))):
            for it in set(rng.choice(favourites, size=3, p=weights)):
                rows.append((f"c{c}", f"i{it}", START + pd.Timedelta(days=float(day)), f"o{c}-{order}"))
    frame = pd.DataFrame(rows, columns=["customer_id", "item_id", "timestamp", "order_id"])
    ranker = Ranker(max_iter=1, label_days=30, windows=1).fit(frame, None, now=CUT)
    figures = ranker.validation["recall@10"]["all"]
    assert figures["repeat"] > figures["trees"] and ranker.serving["all"] != "trees"
    assert ranker.fit_report["serving"]["all"] == ranker.serving["all"]
    assert ranker.rank(["c1"], k=10) == ranker.rank(["c1"], k=10, how=ranker.serving["all"])


def test_a_window_with_more_customers_than_the_cap_ranks_a_seeded_draw_of_them(
    shop: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    import retrieval.ranker as ranker_module

    monkeypatch.setattr(ranker_module, "_MAX_VALIDATION_CUSTOMERS", 40)
    # The windows are ranked on threads of their own: each draw is recorded under its window (the sub-ranker's
    # fit time is the window's start) and variant.
    asked: list[dict[tuple[pd.Timestamp, bool], tuple[str, ...]]] = []
    rank_each = Ranker.rank_each

    def recording(self: Ranker, customer_ids: Sequence[str], *, new_only: bool, **kwargs: Any) -> Any:
        asked[-1][(self.fitted_at, new_only)] = tuple(customer_ids)
        return rank_each(self, customer_ids, new_only=new_only, **kwargs)

    monkeypatch.setattr(Ranker, "rank_each", recording)
    fits = []
    for seed in (0, 0, 1):
        asked.append({})
        fits.append(Ranker(max_iter=5, label_days=60, windows=1, seed=seed).fit(shop, None, now=CUT))
    windows = fits[0].validation["windows"]
    for w in windows:
        assert w["customers"] == {"all": 40, "new": 40}
        assert all(n > 40 for n in w["drawn_from"].values()), "the window held more than the draw"
    assert fits[0].validation["customers"] == {"all": 80, "new": 80}
    # Two windows, two variants each: four draws of 40 distinct customers, each one of its window's buyers.
    starts = [CUT - pd.Timedelta(days=60 * (k + 1)) for k in (0, 1)]
    assert sorted(asked[0]) == sorted((start, new) for start in starts for new in (False, True))
    for (start, _), drawn in asked[0].items():
        assert len(set(drawn)) == 40
        end = start + pd.Timedelta(days=60)
        bought = set(shop.loc[(shop["timestamp"] >= start) & (shop["timestamp"] < end), "customer_id"])
        assert set(drawn) <= bought
    # The same seed draws the same customers (and gives the same figures); another seed draws others.
    assert asked[1] == asked[0] and fits[1].validation == fits[0].validation
    assert all(set(asked[2][key]) != set(asked[0][key]) for key in asked[0])


def test_a_label_window_with_more_customers_than_the_cap_trains_on_a_seeded_draw(
    shop: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import retrieval.ranker as ranker_module

    whole = Ranker(max_iter=5, label_days=60, windows=2, validate=0).fit(shop, None, now=CUT)
    assert all(n > 50 for n in whole.label_customers), whole.label_customers
    monkeypatch.setattr(ranker_module, "_MAX_LABEL_CUSTOMERS", 50)
    fits = [Ranker(max_iter=5, label_days=60, windows=2, validate=0).fit(shop, None, now=CUT) for _ in (0, 1)]
    assert fits[0].label_customers == [50, 50] and fits[0].fit_report["label_customers"] == [50, 50]
    ids = [f"c{i}" for i in range(0, 160, 9)]
    # Seeded: the same draw, the same trees; fewer rows, other trees than the whole windows'.
    assert fits[0].rank(ids, k=10) == fits[1].rank(ids, k=10)
    assert fits[0]._require()[3].to_text() != whole._require()[3].to_text()
    assert Ranker.load(fits[0].save(tmp_path / "ranker")).label_customers == [50, 50]


def test_a_refit_that_fails_leaves_the_ranker_as_it_was(
    shop: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refit on purchases that cannot be fitted raises, and the ranker serves on as fitted before: same
    catalog, customers, lists and report. Its validation thread is told to stop."""
    import retrieval.ranker as ranker_module

    stops: list[Any] = []
    choose = ranker_module._choose_serving

    def recording(*args: Any) -> Any:
        stops.append(args[-1])
        return choose(*args)

    monkeypatch.setattr(ranker_module, "_choose_serving", recording)
    ranker = Ranker(max_iter=5, label_days=60, windows=1).fit(shop, None, now=CUT)
    assert len(stops) == 1 and not stops[0].is_set(), "a fit that succeeds stops nothing"
    ids = ["c1", "c2", "c3", "c40"]
    before = (ranker.item_ids, ranker.customer_ids, ranker.rank(ids, k=10), ranker.fit_report)
    # Ten customers' first 100 days, fitted at CUT: nothing in the label window, so the fit stops there.
    early = shop[shop["customer_id"].isin([f"c{i}" for i in range(10)])]
    early = early[early["timestamp"] < START + pd.Timedelta(days=100)]
    with pytest.raises(DataError, match="fitting needs purchases both before and within"):
        ranker.fit(early, None, now=CUT)
    assert (ranker.item_ids, ranker.customer_ids, ranker.rank(ids, k=10), ranker.fit_report) == before
    assert len(stops) == 2 and stops[1].is_set()


def test_a_window_told_to_stop_stops_its_fit_before_its_label_windows(
    shop: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from retrieval.ranker import _validate_window

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a stopped sub-fit built label rows")

    monkeypatch.setattr(Ranker, "_window_rows", never)
    stop = threading.Event()
    stop.set()
    params = Ranker(max_iter=5, label_days=60, windows=1).params
    frame = shop[shop["timestamp"] < CUT]
    start = CUT - pd.Timedelta(days=60)
    report = _validate_window(params, frame, None, start, CUT, stop)
    assert report["skipped"] == "the fit it was validating for stopped"
    # Not told to stop, the same window fits (and so reaches the label rows).
    with pytest.raises(AssertionError, match="stopped sub-fit built label rows"):
        _validate_window(params, frame, None, start, CUT, threading.Event())


def test_a_window_whose_fit_is_told_to_stop_in_its_last_stage_ranks_nothing(
    shop: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from retrieval.ranker import _validate_window

    stop = threading.Event()
    fit_collab = Ranker._fit_collab

    def then_stop(self: Ranker, *args: Any, **kwargs: Any) -> Any:
        out = fit_collab(self, *args, **kwargs)
        stop.set()  # the fit it validates for fails now: its own last stage has already begun
        return out

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a stopped window was ranked")

    monkeypatch.setattr(Ranker, "_fit_collab", then_stop)
    monkeypatch.setattr(Ranker, "rank_each", never)
    params = Ranker(max_iter=5, label_days=60, windows=1).params
    frame = shop[shop["timestamp"] < CUT]
    report = _validate_window(params, frame, None, CUT - pd.Timedelta(days=60), CUT, stop)
    assert report["skipped"] == "the fit it was validating for stopped"
    assert stop.is_set()


def test_a_stopped_choice_validates_no_window_and_keeps_the_trees(shop: pd.DataFrame) -> None:
    import threading

    stop = threading.Event()
    stop.set()
    frame = shop[shop["timestamp"] < CUT]
    params = Ranker(max_iter=5, validate=2).params
    chosen, report = _choose_serving(params, frame, None, CUT, 60, stop)
    assert chosen == {"all": "trees", "new": "trees"}
    assert [w["skipped"] for w in report["windows"]] == ["the fit it was validating for stopped"] * 2
    assert report["skipped"] == "the fit it was validating for stopped"


def test_validation_can_be_turned_off(shop: pd.DataFrame) -> None:
    ranker = Ranker(max_iter=10, label_days=60, windows=1, validate=0).fit(shop, None, now=CUT)
    assert ranker.serving == {"all": "trees", "new": "trees"} and ranker.validation == {}


def _spd(n: int) -> np.ndarray:
    rng = np.random.default_rng(n)
    baskets = (rng.random((3 * n + 5, n)) < 0.05).astype(np.float64)
    g = baskets.T @ baskets
    g[np.diag_indices_from(g)] += 600.0
    return g


@pytest.mark.parametrize("n", [1, 7, 513, 1100])
def test_spd_inverse_is_the_inverse_written_over_its_input(n: int) -> None:
    """EASE's inverse by Cholesky in place: the LU inverse's values to rounding, symmetric, in ``g``'s own
    memory, across the mirroring's 512-row blocks (513 and 1,100 end mid-block)."""
    g = _spd(n)
    expected = np.linalg.inv(g)
    out = spd_inverse(g)
    assert np.shares_memory(out, g)
    np.testing.assert_allclose(g, expected, rtol=1e-9, atol=1e-15)
    np.testing.assert_array_equal(out, out.T)


def test_spd_inverse_makes_no_copy_of_the_matrix() -> None:
    """numpy's allocations are traced: at 1,500 items the peak is the mirroring's blocks, under half of the
    matrix (``np.linalg.inv`` takes two more whole matrices)."""
    spd_inverse(_spd(3))  # LAPACK's wrappers load on first use
    g = _spd(1500)
    tracemalloc.start()
    try:
        spd_inverse(g)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        np.linalg.inv(g)
        _, lu_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < g.nbytes // 2 and lu_peak > g.nbytes, (peak, lu_peak, g.nbytes)


def test_spd_inverse_of_a_fortran_ordered_matrix() -> None:
    """A dense gram read from a CSC matrix is Fortran-ordered; symmetric, it is inverted as its transpose."""
    g = np.asfortranarray(_spd(600))
    expected = np.linalg.inv(g)
    assert spd_inverse(g) is g and not g.flags.c_contiguous
    np.testing.assert_allclose(g, expected, rtol=1e-9, atol=1e-15)


def test_spd_inverse_names_what_it_cannot_invert() -> None:
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        spd_inverse(np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="float64"):
        spd_inverse(np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="square"):
        spd_inverse(np.ones((2, 3)))
    with pytest.raises(ValueError, match="strided"):
        spd_inverse(np.eye(6)[::2, ::2])


def _shop_history(frame: pd.DataFrame) -> tuple[History, list[str]]:
    items = sorted(frame["item_id"].unique())
    custs = sorted(frame["customer_id"].unique())
    hist = History.from_frame(frame, {c: i for i, c in enumerate(custs)}, {x: i for i, x in enumerate(items)})
    return hist, items


def test_exact_ease_up_to_the_threshold_and_local_ease_with_every_item_is_the_same(
    shop: pd.DataFrame,
) -> None:
    hist, items = _shop_history(shop)
    n = len(items)
    exact = fit_collab(hist, n, dims=8, ease_dense_items=n).ease.toarray()
    # EASE from its closed form, here: B = I - P / diag(P), P = (X'X + 600 I)^-1, top 100 positive a row.
    x = np.zeros((hist.n_customers, n))
    x[hist.cust, hist.item] = 1.0
    p = np.linalg.inv(x.T @ x + 600.0 * np.eye(n))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    assert n - 1 <= 100  # so the top-100 lists are every positive weight
    np.testing.assert_allclose(exact, np.where(b > 0, b, 0.0), rtol=1e-5, atol=1e-7)
    # Local EASE whose support is the whole catalog solves the same regressions: the same weights.
    gram = sp.csr_matrix(x.T @ x)
    everything = sp.csr_matrix(np.ones((n, n)) - np.eye(n))
    np.testing.assert_allclose(
        _local_ease(gram, everything, 600.0, 100).toarray(), exact, rtol=1e-5, atol=1e-7
    )
    # One item over the threshold, the fit is local: fewer predictors, other weights.
    local = fit_collab(hist, n, dims=8, ease_dense_items=n - 1, ease_support=10).ease.toarray()
    assert not np.allclose(local, exact)
    assert np.diff(sp.csr_matrix(local).indptr).max() <= 100


def test_a_catalog_above_the_threshold_gets_ease_neighbours_from_its_co_buyers() -> None:
    spec = SyntheticStore(customers=2500, items=1200, categories=30, seed=0)
    frame = spec.purchases()
    category = {item.id: item.category for item in spec.items_list()}
    hist, items = _shop_history(frame)
    n = len(items)
    same = np.array([[category[a] == category[b] for b in items] for a in items])
    local = fit_collab(hist, n, dims=8, ease_dense_items=n // 4, ease_support=32).ease
    exact = fit_collab(hist, n, dims=8, ease_dense_items=n).ease
    old = fit_collab(hist, n, dims=8, ease_dense_items=n // 4, ease_support=0).ease
    pop = np.bincount(hist.item, minlength=n)

    def top(m: sp.csr_matrix, row: int, k: int) -> list[int]:
        data, cols = m.data[m.indptr[row] : m.indptr[row + 1]], m.indices[m.indptr[row] : m.indptr[row + 1]]
        return cols[np.argsort(-data, kind="stable")[:k]].tolist()

    # Every item bought by two customers or more can be proposed (others point at it), and nearly every
    # one points at others. Between two of the most bought items only the exact weights count, so one of
    # them whose exact weights are all below its top list's and who is in no rarer item's support may point
    # nowhere (item-kNN still leads from it); every rarer item keeps its local weights.
    sold = pop >= 2
    most = np.zeros(n, dtype=bool)
    most[np.argsort(-pop, kind="stable")[: n // 4]] = True
    points = np.diff(local.indptr) > 0
    assert (np.diff(local.tocsc().indptr) > 0)[sold].all()
    assert points[sold].mean() > 0.99 and points[sold & ~most].all()
    # The old way left three quarters of the catalog without EASE neighbours.
    assert (np.diff(old.indptr) > 0).mean() < 0.3
    # Customers like two or three of thirty categories: an item's strongest neighbours share its category
    # about as often as exact EASE's do, far above the 1 in 30 of chance, and are mostly exact EASE's own.
    rows = np.flatnonzero(sold & (np.diff(local.indptr) > 0))
    local_same = np.mean([same[r, top(local, r, 5)].mean() for r in rows])
    exact_same = np.mean([same[r, top(exact, r, 5)].mean() for r in rows])
    assert local_same > 0.5 and local_same > exact_same - 0.05
    shared = np.mean([len(set(top(local, r, 5)) & set(top(exact, r, 10))) / 5 for r in rows])
    assert shared > 0.8


def test_the_ranker_fits_local_ease_above_its_threshold_and_ranks(shop: pd.DataFrame) -> None:
    split = temporal_split(shop, CUT)
    ranker = Ranker(max_iter=40, label_days=60, windows=2, ease_items=40).fit(shop, None, now=CUT)
    assert len(ranker.item_ids) > 40
    collab = ranker._require()[2]
    # The final fit is local EASE, which gives every item that was bought with another an EASE list.
    hist, items = _shop_history(shop[shop["timestamp"] < CUT])
    assert items == ranker.item_ids
    assert (np.diff(collab.ease.indptr) > 0).all()
    expected = fit_collab(hist, len(items), dims=48, ease_dense_items=40).ease
    np.testing.assert_array_equal(collab.ease.toarray(), expected.toarray())
    refs = reference_rankers(split)
    ours = evaluate(split, lambda cs, new: ranker.rank(cs, new_only=new, k=20), "all")
    assert ours["recall@10"] > evaluate(split, refs["popularity"], "all")["recall@10"] + 0.1
