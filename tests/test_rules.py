"""Each business rule on its own, with the reason it gives; and the cold-start ranker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from retrieval.rules import ColdStart, RuleConfig, apply_rules
from tailor.core.errors import DataError
from tailor.core.models import Item
from tailor.core.settings import Settings

NOW = datetime(2011, 12, 1, tzinfo=UTC)


def item(i: str, category: str = "Home Decor", in_stock: bool = True) -> Item:
    return Item(
        id=i, title=f"Thing {i}", category=category, price=1.0, in_stock=in_stock, url=f"https://x.test/p/{i}"
    )


CATALOG = {
    "a": item("a"),
    "b": item("b", in_stock=False),
    "c": item("c", "Bags"),
    "d": item("d", "Bags"),
    "e": item("e", "Bags"),
}


def run(ranked: list[tuple[str, float]], **kw: object) -> tuple[list[str], dict[str, str]]:
    config = kw.pop("config", RuleConfig())
    result = apply_rules(ranked, customer_id="u1", catalog=CATALOG, now=NOW, config=config, **kw)  # type: ignore[arg-type]
    return [i for i, _ in result.kept], {d.item_id: f"{d.rule}: {d.reason}" for d in result.decisions}


def test_out_of_stock_and_unknown_items_are_removed_with_a_reason() -> None:
    kept, why = run([("a", 3.0), ("b", 2.0), ("zz", 1.0)])
    assert kept == ["a"]
    assert why["b"].startswith("in_stock") and "out of stock" in why["b"]
    assert why["zz"].startswith("unknown_item")


def test_returned_items_are_removed() -> None:
    kept, why = run([("a", 3.0), ("c", 2.0)], returned={"c"})
    assert kept == ["a"]
    assert "returned" in why["c"]


def test_impression_cap_counts_only_the_last_30_days() -> None:
    recent = [("a", NOW - timedelta(days=d)) for d in (1, 2, 3)]
    old = [("c", NOW - timedelta(days=d)) for d in (40, 41, 42, 1)]
    kept, why = run([("a", 3.0), ("c", 2.0)], impressions=recent + old)
    assert kept == ["c"]
    assert "shown 3 times" in why["a"]
    calls: list[tuple[str, datetime]] = []

    def source(customer_id: str, since: datetime) -> list[tuple[str, datetime]]:
        calls.append((customer_id, since))
        return recent

    kept, _ = run([("a", 3.0), ("c", 2.0)], impressions=source, config=RuleConfig(max_impressions_30d=4))
    assert kept == ["a", "c"]
    assert calls == [("u1", NOW - timedelta(days=30))]


def test_boosts_reorder_and_are_explained() -> None:
    config = RuleConfig(margin_boosts={"c": 0.5}, category_boosts={"Bags": 1.0})
    result = apply_rules(
        [("a", 3.0), ("c", 2.0), ("d", 0.5)], customer_id="u1", catalog=CATALOG, now=NOW, config=config
    )
    # c: 2 + 0.5 + 1 = 3.5 > 3; d: 0.5 + 1 = 1.5
    assert result.kept == [("c", 3.5), ("a", 3.0), ("d", 1.5)]
    assert [(d.item_id, d.rule, d.action, d.reason) for d in result.decisions] == [
        ("c", "margin_boost", "boosted", "margin boost +0.5"),
        ("c", "category_boost", "boosted", "category 'Bags' boost +1"),
        ("d", "category_boost", "boosted", "category 'Bags' boost +1"),
    ]


def test_boosts_come_from_settings_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAILOR_CATEGORY_BOOSTS", '{"Bags": 2.5}')
    monkeypatch.setenv("TAILOR_MARGIN_BOOSTS", '{"a": -4}')
    settings = Settings()
    assert settings.category_boosts == {"Bags": 2.5} and settings.margin_boosts == {"a": -4.0}
    config = RuleConfig.from_settings(settings)
    assert dict(config.category_boosts) == {"Bags": 2.5} and dict(config.margin_boosts) == {"a": -4.0}
    kept, _ = run([("a", 3.0), ("c", 2.0)], config=config)
    assert kept == ["c", "a"]  # c: 2 + 2.5 = 4.5; a: 3 - 4 = -1
    # Explicit boosts replace the configured ones.
    assert dict(RuleConfig.from_settings(settings, category_boosts={}).category_boosts) == {}
    monkeypatch.setenv("TAILOR_CATEGORY_BOOSTS", '{"Bags": "inf"}')
    with pytest.raises(ValidationError, match="finite"):
        Settings()
    with pytest.raises(DataError, match=r"category_boosts\['Bags'\]"):
        RuleConfig(category_boosts={"Bags": float("nan")})


def test_diversity_caps_a_category_in_any_ten() -> None:
    kept, why = run([("c", 5.0), ("d", 4.0), ("e", 3.0), ("a", 1.0)], config=RuleConfig(max_per_category=2))
    assert kept == ["c", "d", "a"]
    assert why["e"].startswith("diversity")


def test_config_from_settings_and_validation() -> None:
    config = RuleConfig.from_settings(Settings(max_impressions_30d=5, max_per_category=2))
    assert (config.max_impressions_30d, config.max_per_category) == (5, 2)
    with pytest.raises(DataError, match="max_per_category"):
        RuleConfig(max_per_category=0)


def test_cold_start_uses_country_season_and_session() -> None:
    t = pd.Timestamp(NOW)
    rows = [("uk1", "x", t - pd.Timedelta(days=10)), ("uk2", "x", t - pd.Timedelta(days=12))]
    rows += [("fr1", "y", t - pd.Timedelta(days=5)), ("fr2", "y", t - pd.Timedelta(days=6))]
    rows += [("fr3", "y", t - pd.Timedelta(days=6)), ("uk3", "s", t - pd.Timedelta(days=360))]
    purchases = pd.DataFrame(rows, columns=["customer_id", "item_id", "timestamp"])
    countries = {"uk1": "United Kingdom", "uk2": "United Kingdom", "uk3": "United Kingdom"}
    countries |= {"fr1": "France", "fr2": "France", "fr3": "France"}
    vecs = {
        "x": np.array([1.0, 0.0]),
        "y": np.array([0.0, 1.0]),
        "s": np.array([0.1, 1.0]),
        "v": np.array([0, 1.0]),
    }
    cold = ColdStart(purchases, countries, vecs)
    uk = cold.rank(now=NOW, country="United Kingdom")
    assert uk[0].item_id == "x"  # popular in the UK beats globally more popular y
    assert any("United Kingdom" in r for _, r in uk[0].why)
    season = next(p for p in uk if p.item_id == "s")
    assert ("trending", "popular in the same season last year") in season.why
    fr = cold.rank(now=NOW, country="France")
    assert fr[0].item_id == "y"
    viewed = cold.rank(now=NOW, country="United Kingdom", session_item_ids=["v"])
    assert viewed[0].item_id in {"y", "s"}
    assert any(kind == "recent_view" for kind, _ in viewed[0].why)


def test_cold_start_forgets_a_customer() -> None:
    t = pd.Timestamp(NOW)
    rows = [("u1", "x", t - pd.Timedelta(days=3)), ("u1", "only-u1", t - pd.Timedelta(days=3))]
    rows += [("u2", "y", t - pd.Timedelta(days=4)), ("u3", "y", t - pd.Timedelta(days=5))]
    purchases = pd.DataFrame(rows, columns=["customer_id", "item_id", "timestamp"])
    vecs = {"x": np.array([1.0, 0.0]), "only-u1": np.array([0.9, 0.1]), "y": np.array([0.0, 1.0])}
    cold = ColdStart(purchases, dict.fromkeys(["u1", "u2", "u3"], "UK"), vecs)
    before = {p.item_id for p in cold.rank(now=NOW, country="UK")}
    assert {"x", "only-u1"} <= before
    assert cold.new_items_for(np.array([1.0, 0.0]), ["only-u1"]) == []  # it has sold
    assert cold.forget("u1") == 2
    assert cold.forget("u1") == 0
    # The cached popularity of the day is recomputed without them, and their items count as never sold.
    assert {p.item_id for p in cold.rank(now=NOW, country="UK")} == {"y"}
    assert [i for i, _ in cold.new_items_for(np.array([1.0, 0.0]), ["only-u1", "x"])] == ["x", "only-u1"]


def test_new_items_get_exposure_through_text() -> None:
    purchases = pd.DataFrame(
        [("u", "old", pd.Timestamp(NOW) - pd.Timedelta(days=3))],
        columns=["customer_id", "item_id", "timestamp"],
    )
    vecs = {"old": np.array([1.0, 0.0]), "new": np.array([0.9, 0.1]), "far": np.array([0.0, 1.0])}
    cold = ColdStart(purchases, {"u": "UK"}, vecs)
    picks = cold.new_items_for(np.array([1.0, 0.0]), ["old", "new", "far"])
    assert [i for i, _ in picks] == ["new"]  # "old" has sold, "far" is not similar
