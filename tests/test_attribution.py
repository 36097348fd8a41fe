"""A campaign's comparison and its emails' credit against the customer's other emails, on both store
engines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from tailor.app.attribution import campaign_uplift, window_end
from tailor.app.ops import Ops
from tailor.core.errors import DataError
from tailor.core.models import Consent, Customer, Event, EventKind, Item
from tailor.core.sends import job_send_id
from tailor.data.store import Store

T0 = datetime(2011, 12, 1, 10, tzinfo=UTC)
LATER = T0 + timedelta(days=30)


def _buy(customer_id: str, day: float) -> Event:
    return Event(
        customer_id=customer_id,
        kind=EventKind.PURCHASE,
        item_id="I1",
        quantity=1,
        value=10.0,
        timestamp=T0 + timedelta(days=day),
        order_id=f"{customer_id}-{day}",
    )


def test_the_groups_count_whole_windows_and_credit_goes_to_the_last_send(
    any_store: Store, tmp_path: Path
) -> None:
    """Campaign A decides for a, b, d and holds c out at T0 (stamped in UTC+2, as a service clock in that zone
    stamps it), and emails a, b and d (b's send recorded a second late). Then campaign B emails a on day 2, a
    direct send reaches c on day 1, and b gets another email on day 10, after A's 7-day window. a and b buy
    on day 3, c on day 4, d half an hour after the decision.

    The comparison counts whole windows, whatever else was sent: targeted 3 of 3, holdout 1 of 1. Credit
    under last_send: a's purchase is B's email's; b's and d's are A's (an email's own send, early or late,
    does not close its window, nor does an email after the window). Under every_window all three are A's."""
    item = Item(
        id="I1", title="Lantern", category="lighting", price=10.0, currency="GBP", url="https://x.test/p/I1"
    )
    people = [
        Customer(
            id=c,
            first_name=c.upper(),
            email=f"{c}@example.test",
            country="France",
            consent=Consent(marketing_email=True),
        )
        for c in ("a", "b", "c", "d")
    ]
    buys = [_buy("a", 3), _buy("b", 3), _buy("c", 4), _buy("d", 1 / 48)]
    any_store.import_all([item], people, buys)
    ops = Ops(tmp_path / "ops.db")
    try:
        job = ops.create_job("campaign", ["a", "b", "c", "d"], {}).job_id
        other = ops.create_job("campaign", ["a"], {}).job_id
        decided = {"decided_at": T0.astimezone(timezone(timedelta(hours=2))).isoformat()}
        assert decided["decided_at"].endswith("+02:00")
        for c, late in (("a", 0), ("b", 1), ("d", 0)):
            assert ops.finish_item(job, c, "done", decided)
            assert any_store.record_send(job_send_id(job, c), c, ["I1"], T0 + timedelta(seconds=late))
        assert ops.finish_item(job, "c", "refused", decided, "holdout")
        assert any_store.record_send(job_send_id(other, "a"), "a", ["I1"], T0 + timedelta(days=2))
        assert any_store.record_send("direct:1", "c", [], T0 + timedelta(days=1))
        assert any_store.record_send("direct:2", "b", [], T0 + timedelta(days=10))

        last = campaign_uplift(any_store, ops, job, window_days=7, now=LATER)
        for answer in (
            last,
            campaign_uplift(any_store, ops, job, window_days=7, now=LATER, rule="every_window"),
        ):
            assert (
                answer["groups"]["targeted"]["converted"] == 3
                and answer["groups"]["targeted"]["revenue"] == 30.0
            )
            assert answer["groups"]["holdout"]["converted"] == 1
        assert last["credit"] == {
            "rule": "last_send",
            "emails": 3,
            "converted": 2,
            "revenue": 20.0,
            "windows_closed_by_a_later_send": 1,
        }
        assert "credited to the last email the customer was sent before it" in str(last["rules"])
        every = campaign_uplift(any_store, ops, job, window_days=7, now=LATER, rule="every_window")
        assert every["credit"]["converted"] == 3 and every["credit"]["windows_closed_by_a_later_send"] == 0
        assert "credited to every email whose window holds it" in str(every["rules"])

        # Whole windows: on day 5 all four are still open.
        assert (
            campaign_uplift(any_store, ops, job, window_days=7, now=T0 + timedelta(days=5))[
                "windows_still_open"
            ]
            == 4
        )
        with pytest.raises(DataError, match="unknown attribution rule 'first_touch'"):
            campaign_uplift(any_store, ops, job, window_days=7, now=LATER, rule="first_touch")  # type: ignore[arg-type]
    finally:
        ops.close()


def test_sends_of_lists_each_customers_sends_oldest_first_in_batches(any_store: Store) -> None:
    people = [
        Customer(id=f"c{n}", first_name="Ann", email=f"c{n}@example.test", country="France") for n in range(3)
    ]
    any_store.import_all([], people, [])
    for n, day in ((0, 5), (0, 1), (2, 3)):
        assert any_store.record_send(f"s{n}-{day}", f"c{n}", [], T0 + timedelta(days=day))
    got = any_store.sends_of(["c0", "c1", "c2", "c0", "nobody"])
    assert got == {
        "c0": [("s0-1", T0 + timedelta(days=1)), ("s0-5", T0 + timedelta(days=5))],
        "c2": [("s2-3", T0 + timedelta(days=3))],
    }
    assert any_store.sends_of([]) == {}


def test_window_end_keeps_the_full_window_without_a_send_of_another_inside_it() -> None:
    week = timedelta(days=7)
    own = [("mine", T0)]
    assert window_end(T0, week, own, "mine", "last_send") == (T0 + week, False)
    assert window_end(T0, week, [("x", T0 + week)], None, "last_send") == (T0 + week, False)
    assert window_end(T0, week, [("x", T0 - week), ("y", T0 + timedelta(days=2))], None, "last_send") == (
        T0 + timedelta(days=2),
        True,
    )
    assert window_end(T0, week, [("y", T0 + timedelta(days=2))], None, "every_window") == (T0 + week, False)
