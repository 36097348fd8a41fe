"""The purchase frame: one row per purchased line, the input of the ranker, its fit worker and the evals.

Columns: ``customer_id`` and ``item_id`` (str), ``timestamp`` (UTC), and optionally ``quantity``, ``value``
and ``order_id``. ``check_frame`` is the one gate every frame passes, wherever it was read from (the store,
UCI's file, a benchmark's synthetic store), so a ranker never sees a frame of another shape.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd

from tailor.core.errors import DataError
from tailor.core.utc import utc_series
from tailor.data.store import Store
from tailor.data.uci import read_uci

__all__ = ["NON_PRODUCTS", "REQUIRED", "check_frame", "purchases_from_store", "purchases_from_uci"]

REQUIRED = ("customer_id", "item_id", "timestamp")
# Postage, fees and manual adjustments: the reference protocol's list, kept identical for comparability.
NON_PRODUCTS = frozenset(
    {"POST", "DOT", "M", "m", "BANK CHARGES", "AMAZONFEE", "CRUK", "D", "PADS", "B", "S"}
)


def purchases_from_uci(raw: pd.DataFrame | Path | str) -> pd.DataFrame:
    """UCI Online Retail rows (or the parquet; Online Retail II's names too) → the protocol's purchases."""
    if not isinstance(raw, pd.DataFrame):
        raw = read_uci(raw)
    needed = {"InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID"}
    missing = needed - set(raw.columns)
    if missing:
        raise DataError(f"UCI frame lacks columns {sorted(missing)}", hint="is this UCI Online Retail?")
    df = raw[raw["CustomerID"].notna() & (raw["Quantity"] > 0) & (raw["UnitPrice"] > 0)]
    df = df[
        ~df["InvoiceNo"].astype(str).str.startswith("C") & ~df["StockCode"].astype(str).isin(NON_PRODUCTS)
    ]
    return pd.DataFrame(
        {
            "customer_id": df["CustomerID"].astype(int).astype(str).to_numpy(),
            "item_id": df["StockCode"].astype(str).to_numpy(),
            "timestamp": utc_series(df["InvoiceDate"]).to_numpy(),
            "quantity": df["Quantity"].astype(int).to_numpy(),
            "value": (df["Quantity"] * df["UnitPrice"]).astype(float).to_numpy(),
            "order_id": df["InvoiceNo"].astype(str).to_numpy(),
        }
    ).assign(timestamp=lambda f: pd.to_datetime(f["timestamp"], utc=True))


def purchases_from_store(store: Store, *, until: datetime | None = None) -> pd.DataFrame:
    """The purchase events of an imported store, as the protocol's frame."""
    frame = store.events_frame(until=until)
    return check_frame(frame[[c for c in frame.columns if c != "kind"]])


def check_frame(frame: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DataError(
            f"purchase frame lacks columns {missing}", hint="it needs customer_id, item_id and timestamp"
        )
    if frame["item_id"].isna().any() or frame["customer_id"].isna().any():
        raise DataError("purchase frame has rows without a customer_id or item_id")
    out = frame.copy()
    out["customer_id"] = out["customer_id"].astype(str)
    out["item_id"] = out["item_id"].astype(str)
    out["timestamp"] = utc_series(out["timestamp"])
    return out
