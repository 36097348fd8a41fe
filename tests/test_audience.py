"""Campaign audiences: the filter's validation, and which customers it selects from a real store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from tailor.core.errors import RecordError
from tailor.data.audience import Audience, select
from tailor.data.store import CustomerFacts, Store
from tests.server import seed_audience_facts, seed_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    data_dir = tmp_path_factory.mktemp("audience")
    seed_store(data_dir, n_customers=6)
    seed_audience_facts(data_dir)
    s = Store(data_dir / "tailor.db")
    yield s
    s.close()


def _select(store: Store, **segment: Any) -> list[str]:
    return select(store, Audience.model_validate(segment))


def test_customer_facts_aggregate_orders_spend_and_dates(store: Store) -> None:
    facts = {f.id: f for f in store.customer_facts()}
    assert list(facts) == ["100", "101", "102", "103", "104", "105", "106"]
    assert (facts["103"].orders, facts["103"].spend) == (3, 156.0)
    assert facts["103"].last_purchase == datetime(2011, 12, 5, 9, tzinfo=UTC)
    assert facts["103"].first_purchase == datetime(2011, 3, 4, tzinfo=UTC)
    assert (facts["104"].orders, facts["104"].spend) == (2, 3.0)  # the return is taken off
    assert facts["105"].orders == 3  # a purchase without an order id is an order of its own
    assert facts["106"] == CustomerFacts("106", "Germany", True)
    assert not facts["101"].marketing_email and facts["100"].marketing_email
    without = store.customer_facts(purchases=False)
    assert [(f.id, f.country, f.marketing_email, f.orders) for f in without] == [
        (f.id, f.country, f.marketing_email, 0) for f in facts.values()
    ]


@pytest.mark.parametrize(
    ("segment", "expected"),
    [
        ({"country": "france"}, ["102", "105"]),
        ({"country": ["FRANCE", "Germany"]}, ["102", "105", "106"]),
        ({"min_orders": 3}, ["103", "105"]),
        ({"max_orders": 0}, ["106"]),
        ({"min_orders": 2, "max_orders": 2}, ["100", "101", "102", "104"]),
        ({"min_spend": 10}, ["103", "105"]),
        ({"max_spend": 5}, ["104", "106"]),
        ({"min_spend": 6, "max_spend": 6}, ["100", "101", "102"]),
        ({"country": "France", "min_spend": 10}, ["105"]),
        ({"marketing_email": False}, ["101"]),
        ({"last_purchase_since": "2011-12-01"}, ["103", "105"]),  # 105's is at midnight of that day
        ({"last_purchase_before": "2011-11-03"}, ["100", "101"]),  # 102's on 11-03 is not before it
        (
            {"last_purchase_since": "2011-11-02", "last_purchase_before": "2011-12-02"},
            ["101", "102", "104", "105"],
        ),
        # Ids are intersected with the filter, in their given order; unknown ones cannot match it.
        ({"customer_ids": ["105", "nobody", "103", "100", "105"], "min_orders": 3}, ["105", "103"]),
        ({"customer_ids": ["104", "103"], "country": "united kingdom", "max_spend": 100}, ["104"]),
        # Ids alone are taken as given (the job reports unknown ones), without duplicates or blanks.
        ({"customer_ids": ["103", " ", "nobody", "103"]}, ["103", "nobody"]),
        ({"min_orders": 2, "limit": 2}, ["100", "101"]),
        ({"customer_ids": ["105", "103", "102"], "limit": 2}, ["105", "103"]),
        ({"min_orders": 4}, []),
    ],
)
def test_segment_selects_the_customers_every_criterion_holds_for(
    store: Store, segment: dict[str, Any], expected: list[str]
) -> None:
    assert _select(store, **segment) == expected


@pytest.mark.parametrize("segment", [{}, {"limit": 5}])
def test_a_segment_must_narrow_somehow(store: Store, segment: dict[str, Any]) -> None:
    with pytest.raises(RecordError) as info:
        _select(store, **segment)
    assert info.value.field == "audience" and "customer_ids" in str(info.value)


@pytest.mark.parametrize(
    ("segment", "loc"),
    [
        ({"country": "France", "vip": True}, ("vip",)),
        ({"min_orders": -1}, ("min_orders",)),
        ({"min_spend": -0.5}, ("min_spend",)),
        ({"min_orders": "many"}, ("min_orders",)),
        ({"last_purchase_since": "last week"}, ("last_purchase_since",)),
        ({"country": ""}, ("country",)),
        ({"country": []}, ("country",)),
        ({"min_orders": 5, "max_orders": 1}, ()),
        ({"min_spend": 50, "max_spend": 10}, ()),
        ({"last_purchase_since": "2011-12-01", "last_purchase_before": "2011-12-01"}, ()),
        ({"limit": 0}, ("limit",)),
        # Not "should be >= 0": a NaN or an infinity is no amount at all.
        ({"min_spend": float("nan")}, ("min_spend",)),
        ({"max_spend": float("inf")}, ("max_spend",)),
    ],
)
def test_invalid_segments_are_refused_naming_the_field(segment: dict[str, Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        Audience.model_validate(segment)
    first = info.value.errors()[0]
    assert tuple(str(x) for x in first["loc"])[: len(loc)] == loc and (loc or first["type"] == "value_error")
    spend = next((v for v in segment.values() if isinstance(v, float)), 0.0)
    if spend != spend or spend == float("inf"):
        assert first["type"] == "finite_number"


def test_date_bounds_are_utc_days() -> None:
    audience = Audience(last_purchase_since=date(2011, 12, 1), last_purchase_before=date(2011, 12, 2))

    def facts(last: datetime | None) -> CustomerFacts:
        return CustomerFacts("x", "France", True, 1, 1.0, last, last)

    assert audience.matches(facts(datetime(2011, 12, 1, tzinfo=UTC)))
    assert audience.matches(facts(datetime(2011, 12, 1, 23, 59, tzinfo=UTC)))
    assert not audience.matches(facts(datetime(2011, 11, 30, 23, 59, tzinfo=UTC)))
    assert not audience.matches(facts(datetime(2011, 12, 2, tzinfo=UTC)))
    assert not audience.matches(facts(None))
