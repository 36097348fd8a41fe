"""Send-time optimisation (``tailor.core.send_time``): a customer's own hour, else their segment's, else the
retailer's, never inside their quiet hours, in their own time zone."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from tailor.core.models import QuietHours
from tailor.core.send_time import MIN_OWN_EVENTS, best_hour, hour_counts, next_send, segment_counts

NOW = datetime(2011, 12, 10, 10, tzinfo=UTC)


def _at(hours: list[int], zone: str = "Europe/London") -> list[datetime]:
    tz = ZoneInfo(zone)
    return [datetime(2011, 11, 1 + k % 27, h, 15, tzinfo=tz).astimezone(UTC) for k, h in enumerate(hours)]


def test_an_evening_customer_gets_the_evening_in_their_own_zone() -> None:
    counts = hour_counts(_at([19, 20, 20, 19, 20], "Asia/Taipei"), "Asia/Taipei")
    chosen = best_hour(counts, 5, None, None)
    assert chosen.hour == 20 and chosen.source == "own"
    # The same moments read in London are the small hours there: the zone is the customer's, not the shop's.
    assert (
        best_hour(hour_counts(_at([19, 20, 20, 19, 20], "Asia/Taipei"), "Europe/London"), 5, None, None).hour
        == 12
    )


def test_neighbouring_hours_add_up() -> None:
    # One purchase at 9 against two at 14 and 15: the afternoon wins, at its busier edge's neighbour.
    counts = hour_counts(_at([9, 14, 15]), "Europe/London")
    assert counts[14] == counts[15] == 1.5 and counts[9] == 1.0
    assert best_hour(counts, 3, None, None).hour == 14  # the earliest of a tie


def test_quiet_hours_are_never_chosen() -> None:
    counts = hour_counts(_at([21, 21, 22, 21]), "Europe/London")
    quiet = QuietHours(start=time(20, 30), end=time(8, 0))
    # 20:00 would run into 20:30, and every hour the customer shops in is quiet: their segment speaks, and
    # without one, the retailer's hour.
    segment = segment_counts({17: 3, 22: 40}, "Europe/London", NOW)
    assert (best_hour(counts, 4, segment, quiet).hour, best_hour(counts, 4, segment, quiet).source) == (
        17,
        "segment",
    )
    assert (best_hour(counts, 4, None, quiet).hour, best_hour(counts, 4, None, quiet).source) == (
        10,
        "default",
    )
    # Hours of their own outside the quiet ones win over any segment.
    mixed = hour_counts(_at([21, 21, 22, 12]), "Europe/London")
    assert best_hour(mixed, 4, segment, quiet).hour == 12


def test_a_quiet_half_hour_inside_an_hour_rules_the_hour_out() -> None:
    counts = hour_counts(_at([12, 12, 12]), "Europe/London")
    lunch = QuietHours(start=time(12, 10), end=time(12, 40))
    assert best_hour(counts, 3, None, None).hour == 12
    assert best_hour(counts, 3, None, lunch).hour == 11  # the earlier of two equal neighbours


def test_too_few_events_take_the_segment_then_the_default() -> None:
    segment = segment_counts({17: 30, 18: 10}, "Europe/London", NOW)
    few = hour_counts(_at([6]), "Europe/London")
    assert best_hour(few, MIN_OWN_EVENTS - 1, segment, None).hour == 17
    assert best_hour(few, MIN_OWN_EVENTS - 1, segment, None).source == "segment"
    assert best_hour(few, 1, None, None).source == "default" and best_hour(few, 1, None, None).hour == 10
    # The retailer's hour is quiet for this customer: the first clear hour after it.
    quiet = QuietHours(start=time(9, 0), end=time(12, 0))
    assert best_hour(few, 1, None, quiet).hour == 12
    # Every hour quiet: no hour at all (sent at once; the consent rail decides).
    assert best_hour(few, 1, None, QuietHours(start=time(0, 0), end=time(23, 59, 59))).hour is None


def test_a_segment_in_utc_is_read_in_the_customers_zone() -> None:
    # 12:00 UTC is 20:00 in Taipei (UTC+8) and 07:00 in New York in December (UTC-5).
    assert max(range(24), key=segment_counts({12: 5}, "Asia/Taipei", NOW).__getitem__) == 20
    assert max(range(24), key=segment_counts({12: 5}, "America/New_York", NOW).__getitem__) == 7


def test_the_next_send_is_the_next_time_that_hour_comes_round() -> None:
    assert next_send(NOW, 10, "Europe/London") == NOW  # within the hour: now
    assert next_send(NOW, 19, "Europe/London") == datetime(2011, 12, 10, 19, tzinfo=UTC)
    assert next_send(NOW, 8, "Europe/London") == datetime(2011, 12, 11, 8, tzinfo=UTC)
    assert next_send(NOW, 9, "Asia/Taipei") == datetime(2011, 12, 11, 1, tzinfo=UTC)
    # The night the clocks go forward, 01:00 does not exist in London: the send is the next night's 01:00
    # (00:00 UTC, BST), not the 02:00 that 01:00 would have become.
    spring = datetime(2011, 3, 26, 23, 30, tzinfo=UTC)
    at = next_send(spring, 1, "Europe/London")
    assert at == datetime(2011, 3, 28, 0, tzinfo=UTC) and at.astimezone(ZoneInfo("Europe/London")).hour == 1
    # The night they go back, 01:00 comes twice: the first.
    autumn = datetime(2011, 10, 29, 23, 30, tzinfo=UTC)
    assert next_send(autumn, 1, "Europe/London") == datetime(2011, 10, 30, 0, tzinfo=UTC)


def test_no_chosen_send_lands_in_quiet_hours_for_any_customer() -> None:
    """A thousand seeded customers: random zones, histories and quiet hours; each chosen hour, and the
    moment it is sent, are clear of their quiet hours in their own zone."""
    rng = random.Random(7)
    zones = ["Europe/London", "Asia/Taipei", "America/New_York", "Australia/Sydney", "Asia/Kolkata"]
    for _ in range(1000):
        zone = rng.choice(zones)
        hours = [rng.randrange(24) for _ in range(rng.randrange(0, 8))]
        quiet = (
            QuietHours(start=time(rng.randrange(24), rng.choice([0, 30])), end=time(rng.randrange(24), 0))
            if rng.random() < 0.8
            else None
        )
        segment = segment_counts({rng.randrange(24): rng.randrange(1, 50) for _ in range(3)}, zone, NOW)
        chosen = best_hour(hour_counts(_at(hours, zone), zone), len(hours), segment, quiet)
        if chosen.hour is None:
            assert quiet is not None
            continue
        now = NOW + timedelta(minutes=rng.randrange(60 * 24 * 30))
        at = next_send(now, chosen.hour, zone).astimezone(ZoneInfo(zone))
        assert at.hour == chosen.hour and at >= now
        if quiet is not None:
            assert not quiet.contains(at.time()), (zone, hours, quiet, chosen)


@pytest.mark.parametrize("zone", ["Europe/London", "Asia/Taipei"])
def test_an_empty_history_with_no_segment_is_the_default_hour(zone: str) -> None:
    chosen = best_hour(hour_counts([], zone), 0, segment_counts({}, zone, NOW), None)
    assert (chosen.hour, chosen.source, chosen.events) == (10, "default", 0)


def test_a_basket_of_many_lines_is_one_visit() -> None:
    from tailor.core.models import Event, EventKind
    from tailor.core.send_time import occasions

    at = datetime(2011, 11, 3, 12, tzinfo=UTC)
    lines = [
        Event(
            id=f"l{k}", customer_id="c", kind=EventKind.PURCHASE, item_id=f"i{k}", order_id="o1", timestamp=at
        )
        for k in range(40)
    ]
    opened = Event(id="e1", customer_id="c", kind=EventKind.EMAIL_OPEN, timestamp=at + timedelta(hours=7))
    evening = [
        Event(id=f"v{k}", customer_id="c", kind=EventKind.PURCHASE, item_id="i1", order_id=f"o{k + 2}",
              timestamp=at + timedelta(days=k + 1, hours=7))
        for k in range(2)
    ]  # fmt: skip
    moments = occasions([*lines, opened, *evening])
    assert len(moments) == 4
    # Three evening visits against one lunchtime basket, however many lines it had.
    assert best_hour(hour_counts(moments, "Europe/London"), len(moments), None, None).hour == 19


def test_a_held_items_reason_reads_back_as_its_time_and_source_and_nothing_else_does() -> None:
    from tailor.app.jobs import parse_scheduled, scheduled_reason

    at = datetime(2011, 12, 9, 18, 0, tzinfo=ZoneInfo("Europe/London"))
    assert parse_scheduled(scheduled_reason(at, "own")) == (at, "own")
    # A source with brackets or spaces of its own stays whole.
    assert parse_scheduled(scheduled_reason(at, "segment (GB)")) == (at, "segment (GB)")
    for other in (
        None,
        "",
        "model_timeout",
        "scheduled:",
        "scheduled:tomorrow (own)",
        "scheduled:2011-12-09T18:00:00 (own)",
    ):
        assert parse_scheduled(other) is None, other
