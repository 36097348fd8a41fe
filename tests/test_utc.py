"""The one time-zone rule: naive means UTC, aware is converted to UTC (so equal instants compare equal)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pandas as pd

from tailor.core.utc import as_utc, utc_series, utc_timestamp

PARIS_WINTER = timezone(timedelta(hours=1))


def test_a_naive_moment_is_read_as_utc() -> None:
    assert as_utc(datetime(2011, 12, 9, 12, 0)) == datetime(2011, 12, 9, 12, 0, tzinfo=UTC)
    assert utc_timestamp("2011-12-09 12:00") == pd.Timestamp("2011-12-09 12:00", tz="UTC")


def test_an_aware_moment_is_converted_to_the_same_instant_in_utc() -> None:
    moment = datetime(2011, 12, 9, 13, 0, tzinfo=PARIS_WINTER)
    assert as_utc(moment).tzinfo is UTC and as_utc(moment).hour == 12
    stamp = utc_timestamp(moment)
    assert str(stamp.tz) == "UTC" and stamp.hour == 12
    assert utc_timestamp("2011-12-09T13:00:00+01:00") == utc_timestamp("2011-12-09T12:00:00")


def test_a_column_of_strings_or_datetimes_becomes_utc() -> None:
    naive = utc_series(pd.Series(["2011-12-09 12:00", "2011-12-10 08:30"]))
    assert str(naive.dt.tz) == "UTC" and naive.dt.hour.tolist() == [12, 8]
    aware = utc_series(pd.Series(pd.to_datetime(["2011-12-09 13:00"]).tz_localize(PARIS_WINTER)))
    assert aware.iloc[0] == pd.Timestamp("2011-12-09 12:00", tz="UTC")
