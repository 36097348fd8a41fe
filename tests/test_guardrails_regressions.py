"""Regressions the safety eval found in grounding, and the runner failing closed on errors and overruns."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from guardrails import grounding
from guardrails.base import RailContext, Verdict
from guardrails.runner import check_all
from tailor.models import Consent, Customer, Item

ANN = Customer(
    id="13001",
    first_name="Ann",
    email="ann@example.test",
    country="United Kingdom",
    consent=Consent(marketing_email=True, personalization=True),
)
TINS = Item(
    id="85232D",
    title="Set/3 Decoupage Stacking Tins",
    category="Home",
    price=4.95,
    url="https://example-retail.test/p/85232D",
)
DAISY = Item(
    id="20682", title="Daisy Journal", category="Home", price=1.25, url="https://example-retail.test/p/20682"
)


def _ctx() -> RailContext:
    return RailContext(
        customer=ANN,
        catalog={TINS.id: TINS, DAISY.id: DAISY},
        plan_item_ids=(TINS.id,),
        now=datetime(2011, 12, 9, 12, tzinfo=UTC),
    )


def test_a_product_name_starting_like_a_month_is_not_a_date() -> None:
    text = "The Set/3 Decoupage Stacking Tins is £4.95."
    assert grounding.check(text, _ctx()).passed


def test_a_short_two_word_product_outside_the_plan_is_caught_at_its_span() -> None:
    text = "The Set/3 Decoupage Stacking Tins is £4.95. Also try the Daisy Journal."
    verdict = grounding.check(text, _ctx())
    [finding] = verdict.findings
    assert finding.rule == "unplanned_product" and text[finding.start : finding.end] == "Daisy Journal"


def test_a_rail_over_its_time_budget_fails_closed() -> None:
    def slow(text: str, context: RailContext) -> Verdict:
        time.sleep(0.05)
        return Verdict("slow", True)

    [verdict] = check_all("hello", _ctx(), rails=(("slow", slow),), budget_ms=1.0)
    assert not verdict.passed and [f.rule for f in verdict.findings] == ["rail_timeout"]


def test_a_rail_that_raises_fails_closed_with_the_reason() -> None:
    def broken(text: str, context: RailContext) -> Verdict:
        raise KeyError("catalog")

    [verdict] = check_all("hello", _ctx(), rails=(("broken", broken),))
    assert not verdict.passed
    [finding] = verdict.findings
    assert finding.rule == "rail_error" and "KeyError" in finding.message
