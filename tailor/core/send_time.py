"""Send-time optimisation: the local hour at which a customer is most likely to be there, never inside their
quiet hours.

A customer's hour comes from their own visits (orders, email opens and clicks, in their own time zone):
each one's hour counts one, and its two neighbours half (a customer who buys at 19:00 and 20:00 is an
evening customer, not two single hours). With fewer than ``MIN_OWN_EVENTS`` visits of their own, their
segment's hours stand in (the customers of their country, pooled the same way), and with none either, the
retailer's default hour; a source whose hours all fall in the customer's quiet hours gives way to the next.
Of the hours outside the customer's quiet hours, the best-counted is chosen, the earliest on a tie; a
customer whose quiet hours cover the day gets none, and is sent at once (the consent rail then decides).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from tailor.core.models import Event, QuietHours

__all__ = [
    "MIN_OWN_EVENTS",
    "SendHour",
    "best_hour",
    "hour_counts",
    "next_send",
    "occasions",
    "segment_counts",
]

MIN_OWN_EVENTS = 3
DEFAULT_HOUR = 10


@dataclass(frozen=True)
class SendHour:
    hour: int | None  # local hour 0-23, or None when every hour is quiet
    source: Literal["own", "segment", "default", "none"]
    events: int  # how many of the customer's own events it was read from


def _spread(by_hour: Mapping[int, float]) -> list[float]:
    counts = [0.0] * 24
    for h, n in by_hour.items():
        counts[h % 24] += n
        counts[(h - 1) % 24] += n / 2
        counts[(h + 1) % 24] += n / 2
    return counts


def occasions(events: Iterable[Event]) -> list[datetime]:
    """When the customer was there: one moment per order (a basket of forty lines is one visit, not forty),
    one per other event (an open, a click)."""
    seen: dict[str, datetime] = {}
    for e in events:
        key = f"order:{e.order_id}" if e.order_id else f"event:{e.id or e.timestamp.isoformat()}"
        seen.setdefault(key, e.timestamp)
    return list(seen.values())


def hour_counts(moments: Iterable[datetime], zone: str) -> list[float]:
    """Each local hour's count: one per event at that hour, a half per event at each neighbouring one."""
    tz = ZoneInfo(zone)
    return _spread(Counter(moment.astimezone(tz).hour for moment in moments))


def segment_counts(utc_hours: Mapping[int, int], zone: str, at: datetime) -> list[float]:
    """A segment's counts by UTC hour (``Store.utc_hours_by_country``) as local hours of ``zone``, shifted
    by its offset at ``at`` (to the nearest hour), and spread as ``hour_counts`` spreads them."""
    offset = at.astimezone(ZoneInfo(zone)).utcoffset()
    shift = round(offset.total_seconds() / 3600) if offset is not None else 0
    return _spread({(h + shift) % 24: float(n) for h, n in utc_hours.items()})


def _allowed(hour: int, quiet: QuietHours | None) -> bool:
    # The whole hour must be clear, to the minute: a send taken up at hh:20 must not land in a quiet
    # hh:10-hh:40, nor one at hh:00 run into quiet hours from hh:30.
    return quiet is None or not any(quiet.contains(time(hour, m)) for m in range(60))


def best_hour(
    own: Sequence[float],
    own_events: int,
    segment: Sequence[float] | None,
    quiet: QuietHours | None,
    *,
    default: int = DEFAULT_HOUR,
) -> SendHour:
    """The chosen local hour from the customer's own hour counts (``hour_counts``) over ``own_events``
    events, else their segment's, else ``default``; outside ``quiet``."""
    allowed = [h for h in range(24) if _allowed(h, quiet)]
    if not allowed:
        return SendHour(None, "none", own_events)
    tried: list[tuple[Sequence[float], Literal["own", "segment"]]] = []
    if own_events >= MIN_OWN_EVENTS:
        tried.append((own, "own"))
    if segment is not None:
        tried.append((segment, "segment"))
    for counts, source in tried:
        # Hours that all fall in quiet hours say nothing about the hours left: the next source speaks.
        if any(counts[h] for h in allowed):
            return SendHour(max(allowed, key=lambda h: (counts[h], -h)), source, own_events)
    # The retailer's hour, or the first clear hour after it when it is quiet for this customer.
    return SendHour(
        next(h for h in (*range(default, 24), *range(default)) if h in allowed), "default", own_events
    )


def next_send(now: datetime, hour: int, zone: str) -> datetime:
    """The next moment, from ``now`` on, at which it is ``hour``:00 to ``hour``:59 in ``zone``: ``now``
    itself within that hour, else the next ``hour``:00."""
    tz = ZoneInfo(zone)
    local = now.astimezone(tz)
    if local.hour == hour:
        return now
    day = local.date()
    for _ in range(3):
        start = datetime.combine(day, time(hour), tzinfo=tz)
        # Normalised through UTC: on the night the clocks go forward the hour may not exist, and its
        # wall time then lands in the next hour; that day is passed over for the next.
        moment = datetime.fromtimestamp(start.timestamp(), tz=now.tzinfo)
        if moment > now and moment.astimezone(tz).hour == hour:
            return moment
        day += timedelta(days=1)
    raise ValueError(f"no {hour:02d}:00 in {zone} in the three days after {now.isoformat()}")
