"""The synthetic retailer: seeded, shaped by its parameters, and importable like any store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tailor.core.errors import DataError
from tailor.data.importer import import_dir
from tailor.data.store import Store
from tailor.data.synthetic import SyntheticStore, write_canonical


def test_the_same_seed_draws_the_same_store_and_another_seed_another() -> None:
    a = SyntheticStore(customers=300, items=200, seed=4).purchases()
    b = SyntheticStore(customers=300, items=200, seed=4).purchases()
    c = SyntheticStore(customers=300, items=200, seed=5).purchases()
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_without_repeat_buying_nobody_buys_an_item_twice() -> None:
    none = SyntheticStore(customers=800, items=300, repeat=0.0, seed=1).purchases()
    assert len(none) > 2000 and not none.duplicated(["customer_id", "item_id"]).any()
    some = SyntheticStore(customers=800, items=300, repeat=0.5, seed=1).purchases()
    assert some.duplicated(["customer_id", "item_id"]).mean() > 0.2


def test_one_time_buyers_season_and_popularity_follow_the_parameters() -> None:
    frame = SyntheticStore(customers=2000, items=400, one_time=0.6, zipf=1.2, seed=2).purchases()
    orders = frame.groupby("customer_id")["order_id"].nunique()
    assert 0.55 <= float((orders == 1).mean()) <= 0.75
    counts = frame["item_id"].value_counts()
    # A power law: the top tenth of the items sells far more than its tenth.
    assert counts.iloc[: len(counts) // 10].sum() / counts.sum() > 0.3
    assert frame["timestamp"].min() >= pd.Timestamp("2023-01-01", tz="UTC")
    assert frame["timestamp"].max() < pd.Timestamp("2024-01-01", tz="UTC")


def test_a_parameter_out_of_range_is_named() -> None:
    with pytest.raises(DataError, match=r"repeat=1\.5"):
        SyntheticStore(repeat=1.5)
    with pytest.raises(DataError, match="categories"):
        SyntheticStore(items=10, categories=20)


def test_the_canonical_files_import_into_a_store(tmp_path: Path) -> None:
    spec = SyntheticStore(customers=120, items=80, categories=8, seed=3)
    counts = write_canonical(spec, tmp_path / "canonical")
    store = Store(tmp_path / "tailor.db")
    try:
        report = import_dir(store, tmp_path / "canonical")
        assert (report.items, report.customers, report.events) == (80, counts["customers"], counts["events"])
        item = store.get_item("S000000")
        assert item.title and item.description and item.url.startswith("https://")
        assert len(store.events_frame()) == len(spec.purchases())
    finally:
        store.close()
