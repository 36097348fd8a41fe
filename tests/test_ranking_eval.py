"""The temporal protocol on hand-made frames (expected values worked out by hand) and the ranking eval."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from evals.protocol import (
    evaluate,
    holdout_cut,
    holdout_split,
    mrr_at,
    ndcg_at,
    purchases_from_uci,
    recall_at,
    temporal_split,
)
from evals.ranking import RankingEval, rebuy_by_recency, reference_rankers
from tailor.errors import DataError

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


@pytest.mark.slow
def test_ranking_eval_on_online_retail_beats_its_references() -> None:
    """The whole protocol on the real data: the learned ranker beats the repeat and item-kNN references."""
    out = RankingEval(text=None, ranker_params={"max_iter": 120}).run()
    assert out["ranking.tailor.all.recall@10"] > out["ranking.repeat.all.recall@10"]
    assert out["ranking.tailor.all.ndcg@10"] > out["ranking.repeat.all.ndcg@10"]
    assert out["ranking.tailor.new-only.recall@10"] > out["ranking.itemknn.new-only.recall@10"]
    assert 0 < out["ranking.tailor.all.coverage@10"] <= 1
    assert out["ranking.customers.all"] > 1000


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


def test_ranking_eval_holds_out_the_last_days(tiny: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="not both"):
        RankingEval(tiny, cut=CUT, holdout_days=3)
    with pytest.raises(DataError, match="days"):
        RankingEval(tiny, holdout_days=0)
    ev = RankingEval(tiny, holdout_days=2, text=None)
    assert ev.cut is None and ev.holdout_days == 2
    assert RankingEval(tiny, text=None).cut == pd.Timestamp("2011-09-09", tz="UTC")
    assert holdout_cut(tiny, 2) == pd.Timestamp("2011-01-11", tz="UTC")


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
