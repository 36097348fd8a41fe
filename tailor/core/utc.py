"""One rule for time zones across the store, the ranker and the evals: a moment without a zone is UTC, and a
moment with one is converted to UTC, so two stamps of the same instant always compare equal."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

__all__ = ["as_utc", "utc_series", "utc_timestamp"]


def as_utc(moment: datetime) -> datetime:
    """A ``datetime`` in UTC (naive means UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def utc_timestamp(moment: pd.Timestamp | datetime | str) -> pd.Timestamp:
    """A pandas ``Timestamp`` in UTC (naive means UTC); strings are parsed as pandas parses them."""
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def utc_series(ts: pd.Series) -> pd.Series:
    """A column of moments (datetimes or ISO strings) as UTC datetimes (a column without a zone is UTC)."""
    ts = pd.to_datetime(ts)
    return ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
