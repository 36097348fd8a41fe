"""The UCI Online Retail adapter, on the real file."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tailor.core.errors import DataError
from tailor.core.models import EventKind
from tailor.data.store import Store
from tailor.data.uci import categorize, clean_title

from .conftest import PARQUET, SLICE_CUSTOMERS


def test_titles_are_cleaned() -> None:
    assert clean_title("WHITE HANGING HEART T-LIGHT HOLDER") == "White Hanging Heart T-Light Holder"
    assert clean_title("SET/3 RED  SPOTTY LED LIGHTS.") == "Set/3 Red Spotty LED Lights"


def test_categories_come_from_the_description() -> None:
    assert categorize("White Hanging Heart T-Light Holder") == "Candles & Lighting"
    assert categorize("Jumbo Bag Red Retrospot") == "Bags"
    assert categorize("Christmas Candle Set") == "Christmas"
    assert categorize("Zzz") == "Other"


def test_slice_matches_the_source(slice_dir: Path, slice_store: Store) -> None:
    source = json.loads((slice_dir / "SOURCE.json").read_text())
    assert "CC BY 4.0" in source["dataset"]
    assert slice_store.counts()["customers"] == SLICE_CUSTOMERS
    assert all(c.synthetic for c in slice_store.customers())
    frame = pd.read_parquet(PARQUET)
    customer = slice_store.customer_ids()[0]
    rows = frame[
        (frame.CustomerID == float(customer)) & (frame.Quantity > 0) & ~frame.InvoiceNo.str.startswith("C")
    ]
    rows = rows[~rows.StockCode.isin(["POST", "DOT", "M", "C2"])]
    purchases = slice_store.events(customer, kinds=[EventKind.PURCHASE])
    # Every purchase line of the source is an event: duplicates in the source are kept apart by row number.
    assert len(purchases) == len(rows)
    assert sum(e.quantity or 0 for e in purchases) == int(rows.Quantity.sum())


def test_one_spelling_per_stock_code(slice_store: Store) -> None:
    item = slice_store.get_item("85123A")
    assert item.title == "White Hanging Heart T-Light Holder"
    assert item.url == "https://example-retail.test/p/85123A"
    assert item.currency == "GBP" and item.price > 0


def test_conversion_is_deterministic(slice_dir: Path, tmp_path: Path) -> None:
    from tailor.data.uci import convert

    convert(PARQUET, tmp_path, customers_limit=SLICE_CUSTOMERS)
    for name in ("items.jsonl", "customers.jsonl"):
        assert (tmp_path / name).read_bytes() == (slice_dir / name).read_bytes()


def _ii(rows: pd.DataFrame) -> pd.DataFrame:
    ii = rows.rename(columns={"InvoiceNo": "Invoice", "UnitPrice": "Price", "CustomerID": "Customer ID"})
    ii["InvoiceDate"] = ii["InvoiceDate"].dt.strftime("%Y-%m-%d %H:%M:%S")
    return ii


def test_online_retail_ii_converts_as_online_retail(tmp_path: Path) -> None:
    """Online Retail II names three columns differently and keeps dates as text: its rows convert alike."""
    from tailor.data.uci import convert

    rows = pd.read_parquet(PARQUET).head(400)
    rows.to_parquet(tmp_path / "i.parquet")
    _ii(rows).to_parquet(tmp_path / "ii.parquet")
    first = convert(tmp_path / "i.parquet", tmp_path / "i")
    second = convert(tmp_path / "ii.parquet", tmp_path / "ii")
    counts = (first.items, first.customers, first.events)
    assert counts == (second.items, second.customers, second.events) and first.events > 0
    for name in ("items.jsonl", "customers.jsonl"):
        assert (tmp_path / "ii" / name).read_bytes() == (tmp_path / "i" / name).read_bytes()
    # The same lines, numbered apart: Online Retail II's event ids cannot meet Online Retail's.
    events_ii = (tmp_path / "ii" / "events.jsonl").read_text()
    assert '"uci2-' in events_ii and '"uci-' not in events_ii
    assert events_ii.replace('"uci2-', '"uci-') == (tmp_path / "i" / "events.jsonl").read_text()


def test_both_years_convert_into_one_history(tmp_path: Path) -> None:
    """Online Retail II's year before Online Retail, given with it: its lines up to Online Retail's first day
    join the history, the nine overlapping days are read once, and the source names both datasets."""
    from tailor.data.uci import convert

    rows = pd.read_parquet(PARQUET).head(300)
    year_before = rows.head(120).assign(InvoiceDate=rows.head(120)["InvoiceDate"] - pd.Timedelta(days=200))
    overlap = rows.head(50)  # Online Retail II repeats Online Retail's first days
    rows.to_parquet(tmp_path / "i.parquet")
    _ii(pd.concat([year_before, overlap], ignore_index=True)).to_parquet(tmp_path / "ii.parquet")
    alone = convert(tmp_path / "i.parquet", tmp_path / "alone")
    both = convert([tmp_path / "i.parquet", tmp_path / "ii.parquet"], tmp_path / "both")
    events = [json.loads(line) for line in (tmp_path / "both" / "events.jsonl").open()]
    earlier = [e for e in events if e["id"].startswith("uci2-")]
    first_day = rows["InvoiceDate"].min().tz_localize("UTC")
    assert earlier and all(pd.Timestamp(e["timestamp"]) < first_day for e in earlier)
    assert both.events - alone.events == len(earlier) > 0
    assert len({e["id"] for e in events if "id" in e}) == len([e for e in events if "id" in e])
    source = json.loads((tmp_path / "both" / "SOURCE.json").read_text())
    assert "Online Retail II" in source["dataset"] and "C5BW33" in source["dataset"]
    # The order given does not matter; the same dataset twice is refused by name.
    again = convert([tmp_path / "ii.parquet", tmp_path / "i.parquet"], tmp_path / "again")
    for name in ("items.jsonl", "customers.jsonl", "events.jsonl"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "both" / name).read_bytes()
    assert again.events == both.events
    with pytest.raises(DataError, match="online-retail is given twice"):
        convert([tmp_path / "i.parquet", tmp_path / "i.parquet"], tmp_path / "twice")
