"""The temporal protocol on hand-made frames (expected values worked out by hand) and the ranking eval."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from evals.protocol import (
    evaluate,
    evaluate_each,
    holdout_cut,
    holdout_split,
    mrr_at,
    ndcg_at,
    recall_at,
    sized_holdout_days,
    temporal_split,
)
from evals.ranking import (
    DEFAULT_PARQUET,
    RankingEval,
    _ease,
    ease_items,
    ratio_interval,
    rebuy_by_recency,
    reference_rankers,
)
from tailor.core.errors import DataError
from tailor.data.frame import purchases_from_uci
from tailor.data.uci import read_uci

CUT = "2011-01-10"


def frame(rows: Sequence[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "item_id", "timestamp"])


@pytest.fixture
def tiny() -> pd.DataFrame:
    return frame(
        [
            ("A", "x", "2011-01-01"),
            ("A", "y", "2011-01-02"),
            ("B", "x", "2011-01-02"),
            ("B", "z", "2011-01-03"),
            ("C", "z", "2011-01-03"),
            # test period
            ("A", "y", "2011-01-11"),
            ("A", "w", "2011-01-11"),  # w is unknown in train: never relevant
            ("A", "z", "2011-01-12"),
            ("B", "q", "2011-01-12"),  # B bought only an unknown item: nothing relevant, skipped
            ("D", "x", "2011-01-12"),  # D has no train history: not evaluated
        ]
    )


def test_split_sets_and_relevance(tiny: pd.DataFrame) -> None:
    split = temporal_split(tiny, CUT)
    assert split.customers == ("A", "B")
    assert split.catalog == {"x", "y", "z"}
    assert split.relevant("A", "all") == {"y", "z"}
    assert split.relevant("A", "new-only") == {"z"}
    assert split.evaluated("all") == ("A",)
    assert split.train["timestamp"].max() < split.cut <= split.test["timestamp"].min()


def test_metrics_by_hand(tiny: pd.DataFrame) -> None:
    split = temporal_split(tiny, CUT)

    def rank(customers: Sequence[str], new_only: bool) -> list[list[str]]:
        return [["x", "z", "y"] for _ in customers]

    m = evaluate(split, rank, "all", ks=(1, 2, 3))
    # relevant {y, z}; list x, z, y
    assert m["recall@1"] == 0.0
    assert m["recall@2"] == pytest.approx(0.5)
    assert m["recall@3"] == pytest.approx(1.0)
    ideal2 = 1 + 1 / math.log2(3)
    assert m["ndcg@2"] == pytest.approx((1 / math.log2(3)) / ideal2)
    assert m["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / ideal2)
    assert m["mrr@3"] == pytest.approx(0.5)
    assert m["hitrate@1"] == 0.0 and m["hitrate@2"] == 1.0
    assert m["customers"] == 1.0
    # new-only: x and y (bought in train) are dropped, z moves to the top
    n = evaluate(split, rank, "new-only", ks=(1, 2))
    assert n["recall@1"] == 1.0 and n["mrr@2"] == 1.0 and n["ndcg@1"] == 1.0


def test_metric_functions_cap_the_denominator() -> None:
    rel = [str(i) for i in range(15)]
    ranked = [str(i) for i in range(10)]
    assert recall_at(ranked, rel, 10) == 1.0  # 10 hits / min(15, 10)
    assert ndcg_at(ranked, rel, 10) == pytest.approx(1.0)
    assert mrr_at(["a", "b", "3"], rel, 3) == pytest.approx(1 / 3)
    with pytest.raises(DataError):
        recall_at(ranked, [], 10)


def test_bad_frames_are_named() -> None:
    with pytest.raises(DataError, match="item_id"):
        temporal_split(pd.DataFrame({"customer_id": ["a"], "timestamp": ["2011-01-01"]}), CUT)
    with pytest.raises(DataError, match="cut"):
        temporal_split(frame([("A", "x", "2011-01-01")]), CUT)
    with pytest.raises(DataError, match="days"):
        holdout_split(frame([("A", "x", "2011-01-01")]), 0)


def test_holdout_split_keeps_the_last_days(tiny: pd.DataFrame) -> None:
    split = holdout_split(tiny, 2)
    assert split.cut == pd.Timestamp("2011-01-11", tz="UTC")
    assert set(split.test["timestamp"].dt.day) == {11, 12}


def test_uci_filter_drops_returns_fees_and_anonymous() -> None:
    raw = pd.DataFrame(
        {
            "InvoiceNo": ["1", "C2", "3", "4", "5"],
            "StockCode": ["85123A", "85123A", "POST", "22423", "22423"],
            "Quantity": [2, -2, 1, 1, 3],
            "InvoiceDate": pd.to_datetime(["2011-01-01"] * 5),
            "UnitPrice": [1.0, 1.0, 5.0, 0.0, 2.0],
            "CustomerID": [12346.0, 12346.0, 12346.0, 12346.0, None],
        }
    )
    out = purchases_from_uci(raw)
    assert out[["customer_id", "item_id"]].values.tolist() == [["12346", "85123A"]]
    assert str(out["timestamp"].dt.tz) == "UTC"


def test_reference_rankers_follow_their_definitions(tiny: pd.DataFrame) -> None:
    split = temporal_split(tiny, CUT)
    refs = reference_rankers(split, k=3)
    # x and z have two buyers each, y one: popularity puts y last
    assert refs["popularity"](["A"], False)[0][-1] == "y"
    # A bought x and y once each; repeat ranks them above z
    assert set(refs["repeat"](["A"], False)[0][:2]) == {"x", "y"}
    # item-kNN from A's x finds z (co-bought by B)
    assert refs["itemknn"](["A"], True)[0][0] == "z"


def _random_store(seed: int, customers: int = 40, items: int = 25) -> pd.DataFrame:
    # Few items and many buyers each: popularity and purchase counts tie often, as on a real store's tail.
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(customers):
        for _ in range(int(rng.integers(1, 12))):
            day = int(rng.integers(1, 9)) if rng.random() < 0.8 else int(rng.integers(11, 20))
            rows.append((f"c{c:02d}", f"i{int(rng.integers(0, items)):02d}", f"2011-01-{day:02d}"))
    return frame(rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_popularity_and_repeat_lists_are_the_sorted_dense_scores(seed: int) -> None:
    split = temporal_split(_random_store(seed), CUT)
    items = sorted(split.catalog)
    train = split.train
    counts = train.groupby(["customer_id", "item_id"]).size()
    buyers = train.groupby("item_id")["customer_id"].nunique().reindex(items, fill_value=0).to_numpy(float)
    refs = reference_rankers(split, k=6)
    customers = sorted(set(train["customer_id"]))
    for c in customers:
        freq = np.array([counts.get((c, i), 0) for i in items], dtype=float)
        for name, score in (("popularity", buyers.copy()), ("repeat", freq + 1e-6 * buyers)):
            # Highest score first, ties to the lower column; new-only leaves the customer's items out.
            expected_all = [items[j] for j in np.lexsort((np.arange(len(items)), -score))][:6]
            assert refs[name]([c], False)[0] == expected_all, (name, c)
            by_buyers = [items[j] for j in np.argsort(-buyers, kind="stable")]
            expected_new = [x for x in by_buyers if counts.get((c, x), 0) == 0][:6]
            assert refs[name]([c], True)[0] == expected_new, (name, c)


@pytest.mark.parametrize("seed", [0, 1])
def test_repeat_full_lists_are_the_sorted_dense_scores_over_the_longer_history(seed: int) -> None:
    rng = np.random.default_rng(seed + 10)
    pairs = rng.integers(0, [40, 25], size=(150, 2))
    earlier = [(f"c{c:02d}", f"i{i:02d}", "2010-06-01") for c, i in pairs.tolist()]
    split = temporal_split(pd.concat([frame(earlier), _random_store(seed)]), CUT, start="2011-01-01")
    items = sorted(split.catalog)
    train = split.train
    buyers = train.groupby("item_id")["customer_id"].nunique().reindex(items, fill_value=0).to_numpy(float)
    known = split.history[split.history["item_id"].isin(items)]
    full = known.groupby(["customer_id", "item_id"]).size()
    recent = train.groupby(["customer_id", "item_id"]).size()
    refs = reference_rankers(split, k=6)
    for c in sorted(set(train["customer_id"])):
        score = np.array([full.get((c, i), 0) for i in items], dtype=float) + 1e-6 * buyers
        ranked = [items[j] for j in np.lexsort((np.arange(len(items)), -score))]
        assert refs["repeat_full"]([c], False)[0] == ranked[:6], c
        # New-only: the train period's items left out (the dense lists set them to -inf).
        assert refs["repeat_full"]([c], True)[0] == [x for x in ranked if (c, x) not in recent][:6], c


def test_a_new_only_list_of_a_customer_who_bought_everything_is_empty() -> None:
    data = frame([("A", "x", "2011-01-01"), ("A", "y", "2011-01-02"), ("B", "x", "2011-01-03")])
    data = pd.concat([data, frame([("A", "x", "2011-01-12")])])
    refs = reference_rankers(temporal_split(data, CUT), k=3)
    assert refs["popularity"](["A"], True) == [[]]
    assert refs["popularity"](["B"], True) == [["y"]]
    assert refs["repeat"](["A"], False) == [["x", "y"]]


def test_itemknn_and_ease_score_each_customer_once_for_both_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    import evals.ranking as ranking

    split = temporal_split(_random_store(3, customers=700), CUT)
    customers = sorted(set(split.train["customer_id"]))
    fresh = reference_rankers(split, k=5)
    expected = {name: fresh[name](customers, True) for name in ("itemknn", "ease")}
    scored: list[int] = []
    ease = ranking._ease

    def counted(seen: Any, most: int = ranking.EASE_MAX_ITEMS) -> Any:
        score = ease(seen, most)

        def rows(chunk: list[int]) -> Any:
            scored.extend(chunk)
            return score(chunk)

        return rows

    monkeypatch.setattr(ranking, "_ease", counted)
    refs = reference_rankers(split, k=5)
    for name in ("itemknn", "ease"):
        # The all lists first, as the eval asks (in more than one block of customers), then the new-only ones.
        assert refs[name](customers, False) == fresh[name](customers, False)
        assert refs[name](customers, True) == expected[name]
    assert sorted(scored) == sorted(range(len(customers)))  # each customer's EASE row once, not once a list
    # Customers asked for their new-only lists first are scored then, and get the same lists.
    scored.clear()
    assert reference_rankers(split, k=5)["ease"](customers[:3], True) == expected["ease"][:3]
    assert scored == [0, 1, 2]


@pytest.mark.slow
def test_ranking_eval_on_online_retail_beats_its_references() -> None:
    """The protocol's file alone: the learned ranker beats the repeat and item-kNN references."""
    out = RankingEval(text=None, earlier=None, ranker_params={"max_iter": 120}).run()
    assert out["ranking.tailor.all.recall@10"] > out["ranking.repeat.all.recall@10"]
    assert out["ranking.tailor.all.ndcg@10"] > out["ranking.repeat.all.ndcg@10"]
    assert out["ranking.tailor.new-only.recall@10"] > out["ranking.itemknn.new-only.recall@10"]
    assert 0 < out["ranking.tailor.all.coverage@10"] <= 1
    assert out["ranking.customers.all"] > 1000
    for variant in ("all", "new-only"):
        for metric in ("recall@10", "ndcg@10"):
            at = f"ranking.tailor_vs_best.{variant}.{metric}"
            best = out[f"ranking.best_reference.{variant}.{metric}"]
            ratio = out[f"ranking.tailor.{variant}.{metric}"] / best
            assert out[f"{at}.ratio"] == pytest.approx(ratio)
            assert out[f"{at}.low"] <= ratio <= out[f"{at}.high"]
            # Only a list the same as the reference's for every customer leaves nothing to vary.
            assert (out[f"{at}.low"] < out[f"{at}.high"]) == (out[f"{at}.paired_se"] > 0)


def test_ease_reference_follows_the_peer_definition(tiny: pd.DataFrame) -> None:
    split = temporal_split(tiny, CUT)
    ease = reference_rankers(split, k=3)["ease"]
    # B = -P / diag(P) with P = (X'X + 250 I)^-1, zero diagonal; A's scores are her row of X times B.
    items = sorted(split.catalog)
    x = np.array([[1.0 if i in split.seen.get(c, ()) else 0.0 for i in items] for c in ("A", "B", "C")])
    p = np.linalg.inv(x.T @ x + 250.0 * np.eye(len(items)))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    expected = [items[j] for j in np.argsort(-(x[0] @ b), kind="stable")]
    assert ease(["A"], False)[0][0] == expected[0]
    assert ease(["A"], True)[0][0] == "z"  # A has x and y; z is the one new item


def test_ease_on_a_large_catalog_is_fitted_on_its_most_bought_items() -> None:
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    # 40 customers, 12 items, item j bought less often as j grows: the first items are the most bought.
    dense = (rng.random((40, 12)) < np.linspace(0.9, 0.1, 12)).astype(np.float64)
    seen = sp.csr_matrix(dense)
    buyers = dense.sum(0)
    keep = ease_items(seen, most=5)
    assert list(keep) == sorted(np.argsort(-buyers, kind="stable")[:5].tolist())
    assert list(ease_items(seen, most=12)) == list(range(12))
    # Capped: EASE of the kept columns alone, and the rest below every scored item.
    scores = _ease(seen, most=5)([0, 1, 2])
    x = dense[:, keep]
    p = np.linalg.inv(x.T @ x + 250.0 * np.eye(5))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    np.testing.assert_allclose(scores[:, keep], dense[[0, 1, 2]][:, keep] @ b, atol=1e-12)
    left = np.setdiff1d(np.arange(12), keep)
    assert np.isneginf(scores[:, left]).all()
    # Uncapped, the peer's EASE over every item (its inverse by Cholesky: the LU inverse's to rounding).
    full = _ease(seen, most=12)([0, 1, 2])
    p = np.linalg.inv(dense.T @ dense + 250.0 * np.eye(12))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    np.testing.assert_allclose(full, dense[[0, 1, 2]] @ b, rtol=1e-10, atol=1e-14)


def test_holdout_is_a_quarter_of_the_store_between_a_week_and_four_weeks() -> None:
    def store(days: int) -> pd.DataFrame:
        start = pd.Timestamp("2000-11-01", tz="UTC")
        return frame([("A", "x", str(start + pd.Timedelta(days=d, hours=4))) for d in range(days)])

    assert sized_holdout_days(store(120)) == 28  # Ta-Feng's four months: February
    assert sized_holdout_days(store(400)) == 28
    assert sized_holdout_days(store(56)) == 14  # eight weeks
    assert sized_holdout_days(store(10)) == 7
    with pytest.raises(DataError, match="least"):
        sized_holdout_days(store(10), least=0)


def test_ranking_eval_holds_out_the_last_days(tiny: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="not both"):
        RankingEval(tiny, cut=CUT, holdout_days=3)
    with pytest.raises(DataError, match="days"):
        RankingEval(tiny, holdout_days=0)
    ev = RankingEval(tiny, holdout_days=2, text=None)
    assert ev.cut is None and ev.holdout_days == 2
    assert RankingEval(tiny, text=None).cut == pd.Timestamp("2011-09-09", tz="UTC")
    assert holdout_cut(tiny, 2) == pd.Timestamp("2011-01-11", tz="UTC")


def test_what_would_stop_an_eval_is_named_before_its_fit(
    tiny: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unknown references, one over an earlier history the split lacks, and a variant with no customer all
    stop the eval before the ranker fits (the references run beside the fit)."""
    from retrieval.ranker import Ranker

    def no_fit(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the ranker was fitted")

    monkeypatch.setattr(Ranker, "fit", no_fit)
    with pytest.raises(DataError, match="unknown reference ranker 'bpr'") as err:
        RankingEval(tiny, holdout_days=2, text=None, references=("popularity", "bpr")).run()
    assert "ease_full" in (err.value.hint or "")
    with pytest.raises(DataError, match="'repeat_full' ranks over earlier history"):
        RankingEval(tiny, holdout_days=2, text=None, references=("repeat_full",)).run()
    # Everything the test period holds was bought before: nobody has a new item to find.
    days = ("2011-01-01", "2011-01-02", "2011-01-11", "2011-01-12")
    repeats = frame([("A", item, day) for item, day in zip("xyxy", days, strict=True)])
    with pytest.raises(DataError, match="no customer to evaluate under 'new-only'"):
        RankingEval(repeats, holdout_days=2, text=None).run()


def test_rebuy_by_recency_counts_pairs_of_window_buyers_by_days_since_last_bought() -> None:
    cut = pd.Timestamp("2011-09-09", tz="UTC")
    day = pd.Timedelta(days=1)
    rows = [
        ("a", "x", cut - 10 * day),  # rebought: 0-30
        ("a", "x", cut + 5 * day),
        ("a", "y", cut - 20 * day),  # not rebought: 0-30
        ("a", "z", cut - 250 * day),  # rebought a year on: 240-300
        ("a", "z", cut + 80 * day),
        ("a", "w", cut - 250 * day),  # bought again only after the window: not counted as a rebuy
        ("a", "w", cut + 100 * day),
        ("b", "x", cut - 5 * day),  # b buys nothing in the window: none of b's pairs count
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "item_id", "timestamp"])
    out = rebuy_by_recency(frame, cut, 92)
    assert out == {"0-30": (2, 0.5), "240-300": (2, 0.5)}


def test_earlier_history_changes_nothing_the_protocol_measures(tiny: pd.DataFrame) -> None:
    """Purchases before the protocol's start are history to learn from: customers, catalog, seen items and
    answers are those of the protocol's period alone."""
    earlier = frame(
        [
            ("A", "e", "2010-06-01"),  # e was sold only before the period: off the catalog
            ("A", "z", "2010-06-02"),  # A bought z before the period: still new to A under the protocol
            ("E", "x", "2010-06-03"),  # E bought only before the period: not a train customer
        ]
    )
    plain = temporal_split(tiny, CUT)
    split = temporal_split(pd.concat([earlier, tiny]), CUT, start="2011-01-01")
    assert (split.customers, split.catalog, split.seen) == (plain.customers, plain.catalog, plain.seen)
    assert split.relevant("A", "new-only") == plain.relevant("A", "new-only") == {"z"}
    assert len(split.earlier) == 3 and len(split.history) == len(plain.train) + 3
    assert split.history["timestamp"].max() < split.cut
    assert plain.earlier.empty and plain.history is plain.train
    with pytest.raises(DataError, match="not before the cut"):
        temporal_split(tiny, CUT, start=CUT)


def test_repeat_full_counts_the_earlier_history_within_the_catalog(tiny: pd.DataFrame) -> None:
    earlier = frame([("A", "z", "2010-06-02"), ("A", "z", "2010-06-09"), ("A", "e", "2010-06-01")])
    split = temporal_split(pd.concat([earlier, tiny]), CUT, start="2011-01-01")
    refs = reference_rankers(split, k=3)
    # Over the train period alone A bought x and y once each; with the earlier year z twice comes first.
    assert set(refs["repeat"](["A"], False)[0][:2]) == {"x", "y"}
    assert refs["repeat_full"](["A"], False)[0] == ["z", "x", "y"]
    # New to her in the train period: z, bought only in the earlier year, first (as its dense score has it).
    assert refs["repeat_full"](["A"], True)[0] == ["z"]
    assert refs["repeat"](["A"], True)[0] == ["z"]  # without the earlier year: popularity's new-only list
    assert "repeat_full" not in reference_rankers(temporal_split(tiny, CUT), k=3)


def test_ease_full_leaves_what_the_customer_bought_earlier_out_of_new_only_lists() -> None:
    train = [("A", "x", "2011-01-01"), ("A", "y", "2011-01-02"), ("B", "x", "2011-01-02")]
    train += [("B", "z", "2011-01-03"), ("C", "z", "2011-01-03"), ("C", "w", "2011-01-04")]
    test = [("A", "z", "2011-01-12")]
    data = frame([("A", "w", "2010-06-01"), *train, *test])
    split = temporal_split(data, CUT, start="2011-01-01")
    refs = reference_rankers(split, k=2)
    # On the train period alone w is new to A; A bought it in the earlier year, so only z is new to ease_full.
    assert set(refs["ease"](["A"], True)[0]) == {"z", "w"}
    assert refs["ease_full"](["A"], True)[0][0] == "z"
    assert "ease_full" not in reference_rankers(temporal_split(frame(train + test), CUT), k=2)


def test_online_retail_ii_columns_are_read_as_online_retail(tmp_path: Path) -> None:
    ii = pd.DataFrame(
        {
            "Invoice": ["489434", "C489449"],
            "StockCode": ["85048", "22087"],
            "Description": ["A", "B"],
            "Quantity": [12, -12],
            "InvoiceDate": ["2009-12-01 07:45:00", "2009-12-01 10:33:00"],
            "Price": [6.95, 2.95],
            "Customer ID": [13085.0, 16321.0],
            "Country": ["United Kingdom"] * 2,
        }
    )
    path = tmp_path / "ii.parquet"
    ii.to_parquet(path)
    out = purchases_from_uci(path)
    assert out[["customer_id", "item_id", "order_id"]].values.tolist() == [["13085", "85048", "489434"]]
    assert out["timestamp"].iloc[0] == pd.Timestamp("2009-12-01 07:45", tz="UTC")
    ii.loc[1, "InvoiceDate"] = "the first of December"
    ii.to_parquet(path)
    with pytest.raises(DataError, match="InvoiceDate"):
        read_uci(path)


@pytest.mark.slow
def test_ranking_eval_learns_from_the_earlier_year_and_beats_repeat_over_it() -> None:
    """On the real data with Online Retail II's earlier year: the protocol's customers are unchanged, no list
    holds an item off the catalog, and the ranker beats repeat and EASE given the same longer history."""
    ev = RankingEval(text=None, ranker_params={"max_iter": 120})
    out = ev.run()
    assert ev.split is not None and ev.ranker is not None
    assert ev.split.earlier["timestamp"].max() < ev.split.train["timestamp"].min()
    assert len(ev.split.customers) == len(temporal_split(purchases_from_uci(DEFAULT_PARQUET)).customers)
    lists = ev.ranker.rank(list(ev.split.customers[:200]), k=10, only=ev.split.catalog)
    assert all(x in ev.split.catalog for lst in lists for x in lst)
    assert out["ranking.repeat_full.all.recall@10"] > out["ranking.repeat.all.recall@10"]
    assert out["ranking.tailor.all.recall@10"] > out["ranking.repeat_full.all.recall@10"]
    assert out["ranking.tailor.all.ndcg@10"] > out["ranking.repeat_full.all.ndcg@10"]
    # Under the same rule (nothing the customer ever bought is new), EASE over the same history trails Tailor.
    assert out["ranking.tailor.new-only.recall@10"] > out["ranking.ease_full.new-only.recall@10"]


def test_evaluate_each_is_evaluate_customer_by_customer(tiny: pd.DataFrame) -> None:
    split = temporal_split(tiny, CUT)

    def rank(customers: Sequence[str], new_only: bool) -> list[list[str]]:
        return [["z", "y", "x"] for _ in customers]

    for variant in ("all", "new-only"):
        each = evaluate_each(split, rank, variant, ks=(1, 2))
        means = evaluate(split, rank, variant, ks=(1, 2))
        assert {k: sum(v) / len(v) for k, v in each.items()} == {k: means[k] for k in each}
        assert all(len(v) == len(split.evaluated(variant)) for v in each.values())


def test_the_ratio_to_the_best_reference_gets_a_paired_interval() -> None:
    rng = np.random.default_rng(3)
    base = rng.random(4000) * 0.2
    noise = rng.normal(0, 0.05, 4000)
    metrics = {
        "ranking.tailor.new-only.ndcg@10": float(base.mean()),
        "ranking.popularity.new-only.ndcg@10": float((base + noise).mean()),
        "ranking.ease.new-only.ndcg@10": float((base * 0.5).mean()),
        "ranking.tailor.all.ndcg@10": float((base * 1.3).mean()),
        "ranking.ease.all.ndcg@10": float(base.mean()),
    }
    each = {
        "tailor": {"new-only.ndcg@10": base, "all.ndcg@10": base * 1.3},
        "popularity": {"new-only.ndcg@10": base + noise},
        "ease": {"new-only.ndcg@10": base * 0.5, "all.ndcg@10": base},
    }
    out = ratio_interval(metrics, each, seed=0)
    tie = "ranking.tailor_vs_best.new-only.ndcg@10"
    # Against popularity, the better reference: a tie whose interval holds 1 on both sides.
    assert out[f"{tie}.ratio"] == pytest.approx(base.mean() / (base + noise).mean())
    assert out[f"{tie}.low"] < 1 < out[f"{tie}.high"]
    assert out[f"{tie}.paired_se"] == pytest.approx(noise.std(ddof=1) / np.sqrt(4000))
    lead = "ranking.tailor_vs_best.all.ndcg@10"
    assert out[f"{lead}.ratio"] == pytest.approx(1.3)
    assert 1 < out[f"{lead}.low"] <= 1.3 <= out[f"{lead}.high"]
    assert ratio_interval(metrics, each, seed=0) == out  # seeded
    assert out[f"{tie}.low"] != ratio_interval(metrics, each, seed=1)[f"{tie}.low"]
