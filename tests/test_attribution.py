"""A campaign's attribution window against the customer's other emails, on both store engines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
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


def test_a_purchase_is_the_last_sends_and_both_groups_are_cut_alike(any_store: Store, tmp_path: Path) -> None:
    """Campaign A decides for a, b, c (c held out) at T0 and emails a and b. Then campaign B emails a on day
    2, a direct send reaches c on day 1, and b gets another email on day 10, after A's 7-day window. All
    three buy on day 3 or 4. Under last_send a's and c's purchases belong to the later emails; b's is A's
    (her own email from A does not close her window, nor does an email after it). Under every_window
    all three count toward A."""
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
        for c in ("a", "b", "c")
    ]
    any_store.import_all([item], people, [_buy("a", 3), _buy("b", 3), _buy("c", 4)])
    ops = Ops(tmp_path / "ops.db")
    try:
        job = ops.create_job("campaign", ["a", "b", "c"], {}).job_id
        other = ops.create_job("campaign", ["a"], {}).job_id
        decided = {"decided_at": T0.isoformat()}
        for c in ("a", "b"):
            assert ops.finish_item(job, c, "done", decided)
            assert any_store.record_send(job_send_id(job, c), c, ["I1"], T0)
        assert ops.finish_item(job, "c", "refused", decided, "holdout")
        assert any_store.record_send(job_send_id(other, "a"), "a", ["I1"], T0 + timedelta(days=2))
        assert any_store.record_send("direct:1", "c", [], T0 + timedelta(days=1))
        assert any_store.record_send("direct:2", "b", [], T0 + timedelta(days=10))

        last = campaign_uplift(any_store, ops, job, window_days=7, now=LATER)
        assert last["rule"] == "last_send" and last["windows_closed_by_a_later_send"] == 2
        assert last["groups"]["targeted"]["converted"] == 1 and last["groups"]["targeted"]["revenue"] == 10.0
        assert last["groups"]["holdout"]["converted"] == 0
        assert "unless another email was sent" in str(last["rules"])

        every = campaign_uplift(any_store, ops, job, window_days=7, now=LATER, rule="every_window")
        assert every["rule"] == "every_window" and every["windows_closed_by_a_later_send"] == 0
        assert every["groups"]["targeted"]["converted"] == 2 and every["groups"]["holdout"]["converted"] == 1
        assert "may count for several campaigns" in str(every["rules"])

        # A window closed early by a send is closed: it is no longer counted as open.
        early = campaign_uplift(any_store, ops, job, window_days=7, now=T0 + timedelta(days=5))
        assert early["windows_still_open"] == 1  # b's; a's and c's closed on days 2 and 1
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
