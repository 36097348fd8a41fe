"""A retailer's own configuration reaches every part: the prompt, the template writer, the footer, the rails
and the importer. An email written under one retailer passes that retailer's rails and is refused under
the other's: no part may check it against a brand it loaded for itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.compose import assemble, email_parts, rail_context
from agent.state import Plan, PlannedProduct
from agent.writers import CopyRequest, OpenAIWriter, ProductFacts, TemplateWriter
from guardrails import brand, grounding
from guardrails.base import RailContext
from guardrails.runner import check_email, failed
from prompts import render
from retrieval.recommender import popular_summary
from tailor.core.brand import load_brand
from tailor.core.errors import ConfigError
from tailor.core.models import Consent, Customer, Evidence, Item
from tailor.core.settings import Settings
from tailor.data.importer import import_dir
from tailor.data.store import Store
from tests.retailers import HARBOUR, HEARTH, RETAILERS, Retailer, rebrand_item

NOW = datetime(2011, 12, 10, 10, tzinfo=UTC)
ANN = Customer(
    id="12347",
    first_name="Ann",
    email="ann@example.com",
    country="United Kingdom",
    consent=Consent(marketing_email=True, personalization=True),
)
BASE = (
    Item(id="22633", title="Hand Warmer Union Jack", category="Gifts", price=2.1, url="https://x.test/p/1"),
    Item(
        id="84879",
        title="Assorted Colour Bird Ornament",
        category="Home",
        price=1.69,
        url="https://x.test/p/2",
    ),
)


def _other(retailer: Retailer) -> Retailer:
    return next(r for r in RETAILERS.values() if r.key != retailer.key)


def _email(
    retailer: Retailer, evidence: Evidence | None = None
) -> tuple[dict[str, str], Plan, dict[str, Item]]:
    """A template email for Ann under ``retailer``: its catalog links, currency, footer and voice."""
    catalog = {i.id: rebrand_item(i, retailer) for i in BASE}
    evidence = evidence or Evidence(
        kind="repeat_purchase", summary="Bought 3 times, last on 2011-11-02.", item_ids=("22633",)
    )
    plan = Plan(
        action="replenishment",
        score=1.0,
        reason="she buys these again",
        products=tuple(PlannedProduct(item_id=i, score=1.0, evidence=(evidence,)) for i in catalog),
        evidence=(evidence,),
    )
    request = CopyRequest(
        action=plan.action,
        first_name=ANN.first_name,
        products=tuple(
            ProductFacts(item_id=i.id, title=i.title, category=i.category, evidence=(evidence,))
            for i in catalog.values()
        ),
    )
    copy = TemplateWriter().write_email(request, retailer.brand).copy
    email = assemble(copy, plan, ANN, catalog, retailer.brand, writer="template")
    return email_parts(copy, email), plan, catalog


# What the rails say, not how fast: a loaded machine must not fail these (the time budget has its own tests).
_NO_CLOCK = 60_000.0


def _context(brand_of: Retailer, plan: Plan, catalog: dict[str, Item]) -> RailContext:
    grounding.warm(catalog)
    return rail_context(ANN, plan, catalog, brand_of.brand, [], NOW)


def test_an_email_passes_the_rails_of_the_retailer_it_was_written_for(retailer: Retailer) -> None:
    parts, plan, catalog = _email(retailer)
    verdicts = check_email(parts, _context(retailer, plan, catalog), budget_ms=_NO_CLOCK)
    assert not failed(verdicts), failed(verdicts)
    assert (
        retailer.brand.postal_address in parts["body_text"] and retailer.brand.sign_off in parts["body_text"]
    )
    assert retailer.brand.currency in parts["body_text"] or "£" in parts["body_text"]


def test_a_best_seller_is_recommended_in_words_every_retailers_rails_pass(retailer: Retailer) -> None:
    """The popular candidate source's evidence once said "best seller": a superlative claim that the brand
    rail refused in every explanation and email that cited it."""
    popular = Evidence(kind="popular", summary=popular_summary(1234), item_ids=("22633",))
    parts, plan, catalog = _email(retailer, popular)
    assert not failed(check_email(parts, _context(retailer, plan, catalog), budget_ms=_NO_CLOCK))
    sentence = render("explanation.j2", e=popular, title=catalog["22633"].title)[0]
    assert not brand.check(sentence, _context(retailer, plan, catalog)).blocking, sentence


def test_the_same_email_is_refused_under_the_other_retailer(retailer: Retailer) -> None:
    parts, plan, _ = _email(retailer)
    other = _other(retailer)
    # The other shop's catalog holds the same products at its own links: only the brand differs.
    catalog = {i.id: rebrand_item(i, other) for i in BASE}
    rules = {f.rule for f in failed(check_email(parts, _context(other, plan, catalog), budget_ms=_NO_CLOCK))}
    assert {"missing_footer", "missing_unsubscribe"} <= rules


def test_links_are_held_to_the_retailers_own_domains(retailer: Retailer) -> None:
    parts, plan, catalog = _email(retailer)
    link = f"https://{_other(retailer).domain}/p/22633"
    parts = {**parts, "intro": f"{parts['intro']} See {link}"}
    rules = {
        f.rule for f in failed(check_email(parts, _context(retailer, plan, catalog), budget_ms=_NO_CLOCK))
    }
    assert "disallowed_link" in rules or "ungrounded_url" in rules, rules


def test_offers_are_the_retailers_own(retailer: Retailer) -> None:
    _, plan, catalog = _email(retailer)
    ctx = _context(retailer, plan, catalog)
    own = f"{retailer.brand.allowed_offers[0].capitalize()}, as always."
    assert grounding.check(own, ctx).passed
    theirs = f"{_other(retailer).brand.allowed_offers[0].capitalize()}, as always."
    assert not grounding.check(theirs, ctx).passed


def test_each_retailers_banned_phrases_are_its_own() -> None:
    _, plan, catalog = _email(RETAILERS["harbour"])
    harbour = _context(RETAILERS["harbour"], plan, catalog)
    hearth_catalog = {i.id: rebrand_item(i, RETAILERS["hearth"]) for i in BASE}
    hearth = _context(RETAILERS["hearth"], plan, hearth_catalog)
    assert "banned_phrase" in {f.rule for f in brand.check("Stock up, while stocks last.", harbour).findings}
    assert brand.check("Stock up, while stocks last.", hearth, part="intro").passed
    assert "banned_phrase" in {f.rule for f in brand.check("Click here for more.", hearth).findings}
    assert brand.check("Click here for more.", harbour, part="intro").passed
    # Harbour Lane allows no exclamation mark at all; Hearth & Twine allows one.
    assert not brand.check("Fresh this week!", harbour, part="intro").passed
    assert brand.check("Fresh this week!", hearth, part="intro").passed


def test_amounts_in_the_retailers_currency_are_checked_like_pounds() -> None:
    _, plan, catalog = _email(RETAILERS["harbour"])
    ctx = _context(RETAILERS["harbour"], plan, catalog)
    price = catalog["22633"].price_text
    assert price == "2.10 TWD"
    assert grounding.check(f"The Hand Warmer Union Jack is {price}.", ctx).passed
    for made_up in ("Now 1.00 TWD.", "Now TWD 1.", "Now NT$1."):
        assert "ungrounded_price" in {f.rule for f in grounding.check(made_up, ctx).findings}, made_up


def test_a_barcode_in_the_catalog_is_a_product_not_a_card_number() -> None:
    """Ta-Feng's products are barcodes; one in ten passes the Luhn check that card numbers pass."""
    from guardrails import privacy

    barcode = "4710085120004"  # Luhn-valid, as a card number would be
    item = Item(
        id=barcode,
        title=f"Item {barcode}",
        category="Subclass 100205",
        price=38.0,
        currency="TWD",
        url=f"https://harbourlane.example.test/p/{barcode}",
        named=False,
    )
    ctx = RailContext(customer=ANN, catalog={barcode: item}, brand=HARBOUR, plan_item_ids=(barcode,), now=NOW)
    assert privacy.check(f"Item {barcode} is back on the shelf.", ctx).passed
    other = RailContext(customer=ANN, catalog={}, brand=HARBOUR, now=NOW)
    assert "card_number" in {f.rule for f in privacy.check(f"Item {barcode} is back.", other).findings}


def test_the_model_is_told_the_retailers_name_voice_and_what_it_sells(retailer: Retailer) -> None:
    request = CopyRequest(
        action="replenishment",
        first_name="Ann",
        products=(ProductFacts(item_id="22633", title="Hand Warmer Union Jack", category="Gifts"),),
    )
    writer = OpenAIWriter(Settings(writer="openai", llm_base_url="http://127.0.0.1:9/v1"))
    prompt = writer.prompt(request, retailer.brand)
    brand = retailer.brand
    assert f"for {brand.name}, {brand.description}." in prompt
    for part in ("subject", "preheader", "intro"):
        assert brand.name in writer.prompt(request, retailer.brand, part)
    assert ", ".join(brand.tone) in prompt and all(p in prompt for p in brand.banned_phrases)
    other = _other(retailer).brand
    assert other.name not in prompt and other.description not in prompt
    assert ("No exclamation marks." in prompt) == (brand.max_exclamation_marks == 0)


def test_a_retailer_configuration_is_validated_by_field(tmp_path: Path) -> None:
    good = HARBOUR.model_dump()
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "Shop"\ntone = ["warm"]\nsign_off = "Bye"\npostal_address = "1 Road"\n')
    with pytest.raises(ConfigError, match="field unsubscribe_url"):
        load_brand(bad)
    domains = tmp_path / "domains.toml"
    lines = [f"{k} = {json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in good.items()]
    domains.write_text("\n".join(lines).replace('["harbourlane.example.test"]', '["https://shop.test/"]'))
    with pytest.raises(ConfigError, match=r"allowed_link_domains.*bare host name"):
        load_brand(domains)
    currency = tmp_path / "currency.toml"
    currency.write_text("\n".join(lines).replace('"TWD"', '"NT$"'))
    with pytest.raises(ConfigError, match="field currency"):
        load_brand(currency)


def test_imported_items_without_a_currency_get_the_retailers(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "items.csv").write_text(
        "id,title,category,price,url\nA1,Oolong Tea 300g,Tea,180,https://harbourlane.example.test/p/A1\n"
        "A2,Rice Crackers,Snacks,45,https://harbourlane.example.test/p/A2\n"
    )
    store = Store(tmp_path / "tailor.db")
    try:
        import_dir(store, src, currency=HARBOUR.currency)
        assert {i.currency for i in store.items()} == {"TWD"}
        assert store.get_item("A1").price_text == "180.00 TWD"
    finally:
        store.close()
    assert HEARTH.currency == "GBP"
