"""Regressions the safety eval found in grounding, and the runner failing closed on errors and overruns."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from guardrails import grounding, output
from guardrails._text import PhraseIndex, find_phrases, phrase_pattern
from guardrails.base import RailContext, Verdict
from guardrails.runner import check_all
from tailor.core.models import Consent, Customer, Item
from tests.retailers import HEARTH

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


CARDS = Item(
    id="22086",
    title="Set 10 Cards Robin Waterpump 17096",
    category="Stationery",
    price=2.95,
    url="https://example-retail.test/p/22086",
)
PUMP = Item(
    id="17096",
    title="Assorted Laquered Incense Holders",
    category="Home",
    price=0.21,
    url="https://example-retail.test/p/17096",
)
OFFERS = ("free delivery on orders over £50",)


def _ctx(**kw: object) -> RailContext:
    base: dict[str, object] = {
        "customer": ANN,
        "catalog": {TINS.id: TINS, DAISY.id: DAISY},
        "plan_item_ids": (TINS.id,),
        "now": datetime(2011, 12, 9, 12, tzinfo=UTC),
        # The bundled retailer without its offers, unless a test names the offers it allows.
        "brand": HEARTH.model_copy(update={"allowed_offers": tuple(kw.pop("allowed_offers", ()))}),  # type: ignore[arg-type]
    }
    base.update(kw)
    return RailContext(**base)  # type: ignore[arg-type]


def _rules(verdict: Verdict) -> list[str]:
    return [f.rule for f in verdict.findings]


def test_a_product_name_starting_like_a_month_is_not_a_date() -> None:
    text = "The Set/3 Decoupage Stacking Tins is £4.95."
    assert grounding.check(text, _ctx()).passed


def test_a_short_two_word_product_outside_the_plan_is_caught_at_its_span() -> None:
    text = "The Set/3 Decoupage Stacking Tins is £4.95. Also try the Daisy Journal."
    verdict = grounding.check(text, _ctx())
    [finding] = verdict.findings
    assert finding.rule == "unplanned_product" and text[finding.start : finding.end] == "Daisy Journal"


@dataclass(frozen=True)
class _Rail:
    name: str
    check: Callable[..., Verdict]


def test_a_rail_over_its_time_budget_fails_closed() -> None:
    def slow(text: str, context: RailContext, *, part: str | None = None) -> Verdict:
        time.sleep(0.05)
        return Verdict("slow", True)

    [verdict] = check_all("hello", _ctx(), rails=(_Rail("slow", slow),), budget_ms=1.0)
    assert not verdict.passed and [f.rule for f in verdict.findings] == ["rail_timeout"]


def test_a_rail_that_raises_fails_closed_with_the_reason() -> None:
    def broken(text: str, context: RailContext, *, part: str | None = None) -> Verdict:
        raise KeyError("catalog")

    [verdict] = check_all("hello", _ctx(), rails=(_Rail("broken", broken),))
    assert not verdict.passed
    [finding] = verdict.findings
    assert finding.rule == "rail_error" and "KeyError" in finding.message


@pytest.mark.parametrize(
    "text",
    [
        "Free delivery on orders over £50, as always.",
        "As always, there is free delivery on orders over £50.",
        "FREE DELIVERY ON ORDERS OVER £50; the Set/3 Decoupage Stacking Tins is £4.95, as ever.",
    ],
)
def test_the_allowed_offer_with_a_comma_after_its_amount_passes(text: str) -> None:
    assert grounding.check(text, _ctx(allowed_offers=OFFERS)).passed


def test_a_comma_is_a_thousands_separator_only_before_three_digits() -> None:
    text = "Now £1,250.00 or £7,5 a month."
    verdict = grounding.check(text, _ctx())
    assert [text[f.start : f.end] for f in verdict.findings] == ["£1,250.00", "£7"]


def test_a_number_in_a_planned_products_name_is_not_another_items_sku() -> None:
    catalog = {CARDS.id: CARDS, PUMP.id: PUMP}
    ok = "The Set 10 Cards Robin Waterpump 17096 is £2.95."
    assert grounding.check(ok, _ctx(catalog=catalog, plan_item_ids=(CARDS.id,))).passed
    bad = "The Set 10 Cards Robin Waterpump 17096 is £2.95. Ask for item 17096 too."
    verdict = grounding.check(bad, _ctx(catalog=catalog, plan_item_ids=(CARDS.id,)))
    [finding] = verdict.findings
    assert finding.rule == "ungrounded_sku" and finding.start == bad.rindex("17096")


@pytest.mark.parametrize(
    ("text", "date"),
    [
        ("Order by 20/12/2011 to have it for the holidays.", "20/12/2011"),
        ("Arriving in our shop on 16.12.2011.", "16.12.2011"),
        ("Back on 2011-12-20.", "2011-12-20"),
        ("Back on 20-12-2011.", "20-12-2011"),
        ("Back on 20/12/11.", "20/12/11"),
        ("Back on 12/20/2011.", "12/20/2011"),
        ("Back on 2011/12/20.", "2011/12/20"),
        ("It sold out on 3 Dec.", "3 Dec"),  # "3 Dec" is in "13 Dec 2011" as a string, not as a date
    ],
)
def test_numeric_and_unfacted_dates_are_ungrounded(text: str, date: str) -> None:
    verdict = grounding.check(text, _ctx(extra={"facts": "Bought on 13 Dec 2011."}))
    [finding] = verdict.findings
    assert finding.rule == "ungrounded_date" and text[finding.start : finding.end] == date


@pytest.mark.parametrize(
    "text",
    ["Last bought on 25/10/2011.", "Last bought on 25.10.2011.", "Since 2011-10-25.", "Since 25 October."],
)
def test_a_date_written_another_way_than_the_fact_is_still_grounded(text: str) -> None:
    assert grounding.check(text, _ctx(extra={"facts": "Bought 4 times, last on 2011-10-25."})).passed


def test_prices_versions_and_decimals_are_not_dates() -> None:
    assert not [
        r for r in _rules(grounding.check("v1.2.3 at 10.5 cm, 192.168.1.1", _ctx())) if r.endswith("date")
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Free delivery on every order this week.",
        "Free delivery on orders over £20.",
        "Buy one, get one free.",
        "Use code TWINE15 at checkout.",
        "Enter the code XMAS at checkout.",
        "Two for the price of one, while stocks last.",
        "3 for 2 on all candles.",
        "Get a second one half price.",
        "Everything is on sale.",
    ],
)
def test_offers_outside_the_allowed_claim_are_blocked(text: str) -> None:
    verdict = grounding.check(text, _ctx(allowed_offers=OFFERS))
    assert "unapproved_offer" in _rules(verdict) or "ungrounded_price" in _rules(verdict), text


def test_a_substring_of_the_allowed_offer_is_not_the_offer() -> None:
    text = "Free delivery on every order this week."
    verdict = grounding.check(text, _ctx(allowed_offers=OFFERS))
    [finding] = verdict.findings
    assert finding.rule == "unapproved_offer" and text[finding.start : finding.end] == "Free delivery"


def test_offer_words_in_a_planned_products_name_are_its_name() -> None:
    hamper = Item(
        id="22000",
        title="Blue Picnic Hamper For 2",
        category="Home",
        price=9.95,
        url="https://example-retail.test/p/22000",
    )
    gift = Item(
        id="22001",
        title="Free Gift Bag Red Spot",
        category="Home",
        price=0.85,
        url="https://example-retail.test/p/22001",
    )
    catalog = {hamper.id: hamper, gift.id: gift}
    text = "The Free Gift Bag Red Spot is £0.85, and it sits well in a Blue Picnic Hamper For 2."
    assert grounding.check(text, _ctx(catalog=catalog, plan_item_ids=(gift.id, hamper.id))).passed


@pytest.mark.parametrize(
    ("text", "link"),
    [
        ("Visit www.hearthandtwine-sale.example for more.", "www.hearthandtwine-sale.example"),
        ("See shop.evil.example/sale, today.", "shop.evil.example/sale"),
        ('<a href="//evil.example/x">hi</a>', "//evil.example/x"),
        ("Visit www.example-retail.test.evil.example/p/1.", "www.example-retail.test.evil.example/p/1"),
    ],
)
def test_links_without_a_scheme_are_checked_against_the_allow_list(text: str, link: str) -> None:
    verdict = output.check(text, _ctx())
    [finding] = verdict.findings
    assert finding.rule == "link_domain" and text[finding.start : finding.end] == link


def test_bare_links_to_allowed_domains_and_email_addresses_pass_the_output_rail() -> None:
    text = "See www.example-retail.test/p/1 or example-retail.test/p/2; write to ann@example.com/x."
    assert output.check(text, _ctx()).passed


def test_a_bare_link_is_grounded_only_when_it_is_a_planned_link() -> None:
    assert grounding.check("See example-retail.test/p/85232D.", _ctx()).passed
    verdict = grounding.check("See www.example-retail.test/sale.", _ctx())
    assert _rules(verdict) == ["ungrounded_url"]


TITLES = (
    "Set/3 Decoupage Stacking Tins",
    "Set/3 Decoupage",
    "Daisy Journal",
    "Daisy  Journal Large",
    'Retro "tea For One"',
    "Feather Pen,coal Black",
    "Mug , Dotcomgiftshop.com",
    "*Boombox Ipod Classic",
    "Wall Art Horse & Pony",
)


@pytest.mark.parametrize(
    "text",
    [
        "SET/3 decoupage stacking tins and daisy journal.",
        "Set/3 Decoupage Stacking Tinsel and Set/3 Decoupage!",
        "Daisy Journal Large, Daisy  Journal Large, Daisy Journals",
        'A Retro "tea For One", a feather pen,coal black and a Mug , Dotcomgiftshop.com.',
        "x*Boombox Ipod Classic, *Boombox Ipod Classic and Wall Art Horse & Pony/Wall Art Horse  & Pony",
        "Daisy Journal Set/3 Decoupage Stacking Tins Daisy Journal",
    ],
)
def test_the_title_index_matches_exactly_as_the_title_pattern_did(text: str) -> None:
    pattern = phrase_pattern(TITLES)
    assert pattern is not None
    expected = [m.span() for m in pattern.finditer(text)]
    assert list(find_phrases([PhraseIndex(TITLES)], text)) == expected and expected


def test_a_copy_of_a_warmed_catalog_with_one_more_item_finds_that_item() -> None:
    catalog = {TINS.id: TINS, DAISY.id: DAISY}
    grounding.warm(catalog)
    extra = Item(
        id="99001",
        title="Pastel Owl Cake Tin",
        category="Home",
        price=3.5,
        url="https://example-retail.test/p/99001",
    )
    text = "The Set/3 Decoupage Stacking Tins is £4.95; the Pastel Owl Cake Tin too."
    verdict = grounding.check(text, _ctx(catalog={**catalog, extra.id: extra}))
    assert [text[f.start : f.end] for f in verdict.findings] == ["Pastel Owl Cake Tin"]
    catalog[extra.id] = extra  # the warmed catalog itself grows: indexed again, not read from its old index
    verdict = grounding.check(text, _ctx(catalog=catalog))
    assert [text[f.start : f.end] for f in verdict.findings] == ["Pastel Owl Cake Tin"]


def test_a_small_catalog_is_checked_alike_whatever_catalog_was_warmed_before() -> None:
    def item(n: int, title: str) -> Item:
        return Item(
            id=f"L{n}", title=title, category="Home", price=2.0, url=f"https://example-retail.test/p/L{n}"
        )

    small = {"L1": item(1, "Lantern 1"), "L2": item(2, "Lantern 2")}  # titles too short to be indexed
    text = "Lantern 1 is often bought by customers who also bought Lantern 2."
    alone = grounding.check(text, _ctx(catalog=dict(small), plan_item_ids=("L1",)))
    # Its titles end in "1" and "2" as "Lantern 1" does, and none holds the words "Lantern 1".
    grounding.warm({f"L{n}": item(n, f"Glass Vase Model {n} Size {1 + n % 2}") for n in range(10, 400)})
    after = grounding.check(text, _ctx(catalog=dict(small), plan_item_ids=("L1",)))
    assert alone.passed and after.passed, after.findings


@pytest.mark.parametrize(
    ("text", "invented"),
    [
        ("It pairs beautifully with our Rustic Oak Candle Lantern.", "Rustic Oak Candle Lantern"),
        ("Customers love the new Golden Marble Stacking Tins.", "Golden Marble Stacking Tins"),
        ("Why not add the Nordic Linen Tea Set too?", "Nordic Linen Tea Set"),
        # Not a run of words of "Set/3 Decoupage Stacking Tins": a shortened name is not the catalog's.
        ("Our Decoupage Tins are back.", "Decoupage Tins"),
    ],
)
def test_a_product_name_no_catalog_title_holds_is_refused(text: str, invented: str) -> None:
    verdict = grounding.check(text, _ctx())
    assert _rules(verdict) == ["invented_product"]
    (finding,) = verdict.findings
    assert text[finding.start : finding.end] == invented


@pytest.mark.parametrize(
    "text",
    [
        "Hello Ann, Merry Christmas from all of us!",
        "Dear Ann, here is the Set/3 Decoupage Stacking Tins you liked.",
        "Stacking Tins: a regular in your basket.",
        "Our Stacking Tins are back.",
        "With warm wishes, the Hearth & Twine team",
        "Happy New Year! Best Wishes, The Team",
        "Enjoy your Daisy Journal.",
    ],
)
def test_greetings_sign_offs_and_real_names_are_not_invented_products(text: str) -> None:
    verdict = grounding.check(text, _ctx(plan_item_ids=(TINS.id, DAISY.id)))
    assert verdict.passed, verdict.findings
