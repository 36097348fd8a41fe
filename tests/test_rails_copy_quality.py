"""The copy-quality rail, under both retailers: what real small models wrote that must not go out (the
parts below are the ones that did go out before the rail), what a marketer writes that must, and the
template writer's own copy, which is the fallback and so must always pass."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest

from agent.writers import CopyRequest, ProductFacts, TemplateWriter
from guardrails import copy_quality
from guardrails.base import RailContext
from guardrails.runner import check_email
from retrieval.embeddings import Embedder
from tailor.core.models import Consent, Customer, Evidence, Item
from tests.retailers import Retailer

CUSTOMER = Customer(
    id="c1",
    first_name="Hannah",
    email="hannah@example.com",
    country="United Kingdom",
    consent=Consent(marketing_email=True, personalization=True),
)

# Each retailer's own products, with the evidence the recommender would give them.
CATALOGS: Mapping[str, list[tuple[Item, tuple[Evidence, ...]]]] = {
    "hearth": [
        (
            Item(
                id="23203",
                title="Jumbo Bag Vintage Leaf",
                category="Bags",
                price=2.08,
                url="https://shop.test/p",
            ),
            (Evidence(kind="repeat_purchase", summary="bought 3 times, last on 2011-11-02"),),
        ),
        (
            Item(id="23202", title="Jumbo Bag Pears", category="Bags", price=2.08, url="https://shop.test/p"),
            (
                Evidence(
                    kind="similar_customers",
                    summary="often bought by customers who also bought Jumbo Bag Vintage Leaf",
                ),
            ),
        ),
        (
            Item(
                id="22386", title="Jumbo Bag Alphabet", category="Bags", price=2.08, url="https://shop.test/p"
            ),
            (Evidence(kind="popular", summary="popular with the store's customers: 640 have bought it"),),
        ),
    ],
    "harbour": [
        (
            Item(
                id="4710011401128",
                title="Oolong Tea Leaves 300g",
                category="Tea",
                price=180,
                url="https://shop.test/p",
            ),
            (Evidence(kind="repeat_purchase", summary="bought 5 times, last on 2001-02-10"),),
        ),
        (
            Item(
                id="4710018004605",
                title="Jasmine Green Tea 20 Bags",
                category="Tea",
                price=65,
                url="https://shop.test/p",
            ),
            (
                Evidence(
                    kind="similar_customers",
                    summary="often bought by customers who also bought Oolong Tea Leaves 300g",
                ),
            ),
        ),
        (
            Item(
                id="4710088410139",
                title="Brown Rice Crackers",
                category="Snacks",
                price=45,
                url="https://shop.test/p",
            ),
            (Evidence(kind="popular", summary="popular with the store's customers: 212 have bought it"),),
        ),
    ],
}


def context(retailer: Retailer, action: str = "recommend", **extra: str) -> RailContext:
    rows = CATALOGS[retailer.key]
    return RailContext(
        customer=CUSTOMER,
        catalog={item.id: item for item, _ in rows},
        brand=retailer.brand,
        plan_item_ids=tuple(item.id for item, _ in rows),
        action=action,
        product_evidence={item.id: evidence for item, evidence in rows},
        extra=extra,
    )


def rules(text: str, ctx: RailContext, part: str) -> list[str]:
    return [f.rule for f in copy_quality.check(text, ctx, part=part).findings]


def ids(retailer: Retailer) -> list[str]:
    return [item.id for item, _ in CATALOGS[retailer.key]]


def titles(retailer: Retailer) -> list[str]:
    return [item.title for item, _ in CATALOGS[retailer.key]]


# What SmolLM2 wrote for demo customers that passed every other rail and went out (issue #19).
@pytest.mark.parametrize(
    ("part", "text", "rule"),
    [
        ("subject", "Products", "vague_subject"),
        ("subject", "Hannah", "vague_subject"),
        ("subject", "Your previous draft", "echo"),
        ("preheader", "Your Name", "placeholder"),
        ("preheader", "The Product Details", "placeholder"),
        ("preheader", "Products and Brands", "vague_preheader"),
        ("intro", "This is a product description.", "echo"),
        ("intro", "Product Details", "placeholder"),
        ("intro", "The reason for this product is that it's in no catalog title.", "echo"),
        ("subject", "{first_name}, picked for you", "placeholder"),
        ("intro", "Dear [Customer Name], here are some ideas.", "placeholder"),
        ("intro", "Here is the email you asked for, written as JSON.", "echo"),
        ("preheader", "As an AI language model I cannot know what you like.", "echo"),
    ],
)
def test_what_small_models_wrote_is_stopped_with_its_rule(
    retailer: Retailer, part: str, text: str, rule: str
) -> None:
    assert rule in rules(text, context(retailer), part)


def test_the_shop_name_alone_is_not_a_subject(retailer: Retailer) -> None:
    assert rules(retailer.brand.name, context(retailer), "subject") == ["vague_subject"]


def test_a_part_that_is_only_product_names_or_the_title_is_stopped(retailer: Retailer) -> None:
    ctx = context(retailer)
    first = ids(retailer)[0]
    names = titles(retailer)
    assert "names_only" in rules(" | ".join(names), ctx, f"reason:{first}")
    assert rules(names[0], ctx, f"reason:{first}") == ["names_only"]
    assert rules(f"{names[0]}, {names[1]} and {names[2]}.", ctx, "preheader") == ["names_only"]
    assert rules(names[1], ctx, "subject") == ["names_only"]


def test_a_reason_must_give_a_reason_from_its_evidence(retailer: Retailer) -> None:
    ctx = context(retailer)
    repeat, similar, popular = ids(retailer)
    assert rules("You will love it.", ctx, f"reason:{repeat}") == ["no_reason"]
    assert rules("A great choice for any home.", ctx, f"reason:{similar}") == ["no_reason"]
    assert rules("You have ordered it again and again, so here it is.", ctx, f"reason:{repeat}") == []
    assert rules("Shoppers with a basket like yours pick it too.", ctx, f"reason:{similar}") == []
    assert rules("One of the most popular things we sell.", ctx, f"reason:{popular}") == []
    # The evidence's own words tie a reason to it: the product the customer bought, named.
    other = titles(retailer)[0]
    assert rules(f"It sits nicely beside the {other} in your cupboard.", ctx, f"reason:{similar}") == []


def test_a_subject_names_a_product_the_occasion_or_an_interest(retailer: Retailer) -> None:
    ctx = context(retailer, action="replenishment")
    category = CATALOGS[retailer.key][0][0].category
    assert rules("Hannah, time to restock?", ctx, "subject") == []
    assert rules(f"Hannah, more {category.lower()} for you", ctx, "subject") == []
    assert rules(f"A {titles(retailer)[0]} picked for Hannah", ctx, "subject") == []
    assert rules(f"{titles(retailer)[0]} for Hannah", ctx, "subject") == ["names_only"]
    assert rules("Hannah, hello", ctx, "subject") == ["vague_subject"]
    assert (
        rules("Hannah, your basket is waiting", context(retailer, action="abandoned_cart"), "subject") == []
    )


def test_an_intro_is_a_sentence_to_the_customer(retailer: Retailer) -> None:
    ctx = context(retailer)
    assert rules("Hello Hannah, we picked a few things with your last orders in mind.", ctx, "intro") == []
    assert rules("It has been a while since your last visit, so here are some ideas.", ctx, "intro") == []
    assert "not_a_sentence" in rules("New Arrivals In Store", ctx, "intro")
    assert rules("Some products are available.", ctx, "intro") == ["not_a_sentence"]


def test_the_writers_brief_and_the_rails_findings_written_back_are_echoes(retailer: Retailer) -> None:
    brief = "Write to the customer as you or by their first name, in plain words, and say why from the facts"
    ctx = context(
        retailer, instructions=brief, findings="reason: the amount is not the price of a planned product"
    )
    first = ids(retailer)[0]
    echo = "Hannah, in plain words, and say why from the facts: you bought it."
    assert "echo" in rules(echo, ctx, f"reason:{first}")
    assert "echo" in rules(
        "You bought it, though the amount is not the price of a planned product.", ctx, "intro"
    )
    # Quoting the evidence or the product is not an echo, though both are in the brief's data.
    summary = CATALOGS[retailer.key][0][1][0].summary
    quoted = f"You have {summary} and the {titles(retailer)[0]} is here again."
    assert rules(quoted, context(retailer, instructions=brief + " " + quoted), f"reason:{first}") == []


def test_a_part_that_says_what_an_earlier_part_said_is_a_repeat(retailer: Retailer) -> None:
    first, second, _ = ids(retailer)
    reason = "Shoppers who like what you buy often choose it too."
    parts = {
        "subject": "Hannah, a few ideas picked for you",
        "preheader": "Hannah, a few ideas picked for you.",
        "intro": "Hello Hannah, here are a few things we think you will like.",
        f"reason:{first}": "You have bought it again and again.",
        f"reason:{second}": reason,
        f"reason:{ids(retailer)[2]}": reason,
    }
    verdicts = check_email(parts, context(retailer))
    [quality] = [v for v in verdicts if v.rail == "copy_quality"]
    repeated = sorted(f.part or "" for f in quality.findings if f.rule == "repeated")
    assert repeated == ["preheader", f"reason:{ids(retailer)[2]}"]


@pytest.mark.parametrize("action", ["recommend", "replenishment", "abandoned_cart", "win_back"])
def test_the_template_writers_copy_always_passes_it_is_the_fallback(retailer: Retailer, action: str) -> None:
    """Every action, every kind of evidence, and several products with the same kind (which would read
    alike but for the product's name): the fallback must never be what blocks an email."""
    base = CATALOGS[retailer.key]
    kinds = ["similar_customers", "text_similarity", "trending", "popular", "cart", "recent_view"]
    extra = [
        (
            Item(
                id=f"x{i}",
                title=f"{base[i % 3][0].title} Gift Set {i}",
                category=base[i % 3][0].category,
                price=5.0,
                url="https://shop.test/p",
            ),
            (Evidence(kind=kind, summary=summary),),  # type: ignore[arg-type]
        )
        for i, (kind, summary) in enumerate(
            [
                ("similar_customers", f"often bought by customers who also bought {base[0][0].title}"),
                ("similar_customers", f"often bought by customers who also bought {base[0][0].title}"),
                ("text_similarity", f"similar to {base[0][0].title} you bought"),
                # A name the catalog spells with slashes, quoted from the evidence: no garbled run.
                (
                    "similar_customers",
                    "often bought by customers who also bought Amber Glass/Shell/Pearl Necklace",
                ),
                ("trending", "bought by 37 customers in the last 4 weeks"),
                ("popular", "popular with the store's customers: 640 have bought it"),
                ("popular", "popular with the store's customers: 640 have bought it"),
                ("cart", f"added {base[1][0].title} to the basket"),
                ("recent_view", "related to what was viewed in this session"),
            ]
        )
    ]
    assert {e[0].kind for _, e in extra} >= set(kinds)
    rows = [
        *base,
        *extra,
        (Item(id="bare", title="Plain Tote", category="Bags", price=3.0, url="https://shop.test/p"), ()),
    ]
    _assert_template_copy_passes(retailer, rows, action, CUSTOMER)


def test_a_reason_in_other_words_ties_to_its_evidence_through_the_sentence_encoder(
    retailer: Retailer,
) -> None:
    """Meaning, not words: a reason with no word of its evidence passes when the store's own embedding
    model finds it close to that evidence, and is held to the words without one."""
    embedder = Embedder()
    first = ids(retailer)[0]
    title = titles(retailer)[0]
    ctx = RailContext(
        **{
            **context(retailer).__dict__,
            "product_evidence": {
                first: (Evidence(kind="category_affinity", summary=f"{title} is what you buy most from us"),)
            },
        }
    )
    text = f"The {title} you keep coming back to, ready when you are."
    assert rules(text, ctx, f"reason:{first}") == ["no_reason"]
    with_model = RailContext(**{**ctx.__dict__, "similarity": embedder.similarity})
    assert (
        embedder.similarity(text, f"{title} is what you buy most from us") >= copy_quality.REASON_SIMILARITY
    )
    assert rules(text, with_model, f"reason:{first}") == []
    assert rules("Our doors open at nine on weekdays.", with_model, f"reason:{first}") == ["no_reason"]


# Written by SmolLM2-135M for demo customers through the per-part writer; each passed every other rail.
@pytest.mark.parametrize(
    ("part", "text", "rule"),
    [
        (
            "intro",
            "Hello Hannah, I hope you're doing well. I've been thinking about something that has happened "
            "to me recently.",
            "first_person",
        ),
        ("preheader", "A lovely, sweet rose that you've been wearing for years.", "invented_history"),
        ("subject", "Sammy, a set of keys for your home and garden", "wrong_name"),
        ("intro", "Hello Sam, we have picked a few bags that go with what you bought before.", "wrong_name"),
        ("preheader", "A beautiful, elegant, and very special piece of your home.", "vague_preheader"),
        ("reason", "You might love the pink, you know.", "no_reason"),
        (
            "reason",
            "You have a beautiful bag, as you did last on 2011-09-01; customers who bought it too,",
            "unfinished",
        ),
        ("reason", "They might be running low on things they buy regularly.", "third_person"),
        ("intro", "Hannah has not shopped with us for a while and may like these bags.", "third_person"),
    ],
)
def test_what_the_per_part_writer_wrote_is_stopped_with_its_rule(
    retailer: Retailer, part: str, text: str, rule: str
) -> None:
    name = f"reason:{ids(retailer)[1]}" if part == "reason" else part
    assert rule in rules(text, context(retailer), name)


def test_a_greeting_word_or_the_customers_own_name_is_not_a_wrong_name(retailer: Retailer) -> None:
    ctx = context(retailer)
    assert rules("Hello Hannah, we picked a few bags with your last order in mind.", ctx, "intro") == []
    assert rules("Finally, a few ideas picked from what you have bought.", ctx, "intro") == []
    assert rules(f"Hannah, picked for you: {titles(retailer)[0]}", ctx, "subject") == []
    # "Picked for you" is no occasion: a recommendation's subject names what it recommends.
    assert rules("Hannah, picked for you: a few new things to try", ctx, "subject") == ["vague_subject"]


def test_the_worked_examples_names_and_the_datas_format_are_echoes(retailer: Retailer) -> None:
    """A model copies its worked example: "add this mug too" in an email that sells no mug, or the
    request's data as given ("Name (Category)"). Words this email's own products use are theirs."""
    example = "Sam Enamel Camping Mug Linen Tea Towel"
    ctx = context(retailer, example=example)
    second = f"reason:{ids(retailer)[1]}"
    first_title = titles(retailer)[0]
    assert "echo" in rules(
        f"Shoppers who chose the {first_title}, as you did, often add this mug too.", ctx, second
    )
    category = CATALOGS[retailer.key][0][0].category
    assert "echo" in rules(f"Hannah, a {first_title} ({category}) for you", ctx, "subject")
    fine = f"Shoppers who chose the {first_title}, as you did, often add this one too."
    assert rules(fine, ctx, second) == []


def test_a_reason_that_cites_the_product_itself_or_an_unbought_one_as_bought_gives_no_reason(
    retailer: Retailer,
) -> None:
    ctx = context(retailer)
    similar = ids(retailer)[1]
    own = titles(retailer)[1]
    assert rules(
        f"Shoppers who chose the {own}, as you did, often buy it too.", ctx, f"reason:{similar}"
    ) == ["no_reason"]
    assert rules(
        "Shoppers who bought the Garden Gnome, as you did, often add this too.", ctx, f"reason:{similar}"
    ) == ["no_reason"]


def test_praise_in_place_of_a_fact_is_puffery(retailer: Retailer) -> None:
    ctx = context(retailer)
    assert "puffery" in rules("A beautiful, elegant, and luxurious piece for your home.", ctx, "preheader")
    assert "puffery" in rules(f"Hannah, a gift of your lifetime: {titles(retailer)[0]}", ctx, "subject")
    assert rules(f"A lovely {titles(retailer)[0]} to go with your last order.", ctx, "preheader") == []


def test_an_intro_offering_what_the_email_does_not_hold_is_invented(retailer: Retailer) -> None:
    ctx = context(retailer)
    assert "unknown_product" in rules(
        "Hello Hannah, we found an Easter egg for you to look at.", ctx, "intro"
    )
    bought = titles(retailer)[0]
    assert rules(f"Hello Hannah, we found a {bought} to go with your last order.", ctx, "intro") == []
    assert rules("Hello Hannah, we picked a few things with your last order in mind.", ctx, "intro") == []


def test_the_customer_named_in_the_third_person_is_caught_beside_you(retailer: Retailer) -> None:
    reason = f"reason:{ids(retailer)[1]}"
    said = "Hannah bought this, as you did, and often adds it to her table."
    assert "third_person" in rules(said, context(retailer), reason)


def test_the_examples_shape_pasted_where_it_does_not_fit_is_unfinished(retailer: Retailer) -> None:
    reason = f"reason:{ids(retailer)[0]}"
    ctx = context(retailer)
    assert "unfinished" in rules("You might want to try it again, as you did last time.", ctx, reason)
    assert "unfinished" in rules(
        "You have bought it again and again, as you did, so here it is.", ctx, reason
    )
    assert "invented_history" in rules("You ordered it again last night, as you mentioned.", ctx, reason)


@pytest.mark.parametrize("first_name", ["Ed", "Anne Marie", "D’Arcy", "will", "T", "Mei-Ling"])
@pytest.mark.parametrize("action", ["recommend", "win_back", "abandoned_cart"])
def test_the_template_passes_whatever_the_name_the_titles_and_with_the_examples_names_about(
    retailer: Retailer, first_name: str, action: str
) -> None:
    """Regressions: a short name cut out of other words, a name in parts, a lowercase name that is also a
    word, hyphenated titles, a category the worked example shares ("Tea"), three cold-start trends: the
    fallback's own copy must pass, with the model's brief and worked example in the context."""
    customer = CUSTOMER.model_copy(update={"first_name": first_name})
    url = "https://shop.test/p"
    rows = [
        (Item(id="a", title="Hand-Warmer", category="Tea", price=2.0, url=url), ()),
        (
            Item(id="b", title="Tea-Cosy Knitted", category="Tea", price=3.0, url=url),
            (Evidence(kind="trending", summary="popular in the same season last year"),),
        ),
        (
            Item(id="c", title="Product Details Notebook", category="Paper", price=3.0, url=url),
            (Evidence(kind="trending", summary="popular in the same season last year"),),
        ),
        (
            Item(id="d", title="Jasmine Green 20 Bags", category="Tea", price=3.0, url=url),
            (Evidence(kind="trending", summary="popular in the same season last year"),),
        ),
    ]
    extra = {"example": "Sam Enamel Camping Mug Linen Tea Towel", "instructions": "Write as the shop."}
    _assert_template_copy_passes(retailer, rows, action, customer, extra)


def _assert_template_copy_passes(
    retailer: Retailer,
    rows: list[tuple[Item, tuple[Evidence, ...]]],
    action: str,
    customer: Customer,
    extra: dict[str, str] | None = None,
) -> None:
    """The template writer's copy for these products, checked as the agent checks it: the copy-quality rail
    passes every part (it is the fallback, so it must)."""
    products = tuple(
        ProductFacts(item_id=i.id, title=i.title, category=i.category, evidence=e) for i, e in rows
    )
    request = CopyRequest(action=action, first_name=customer.first_name, products=products)
    copy = TemplateWriter().write_email(request, retailer.brand).copy
    ctx = RailContext(
        customer=customer,
        catalog={i.id: i for i, _ in rows},
        brand=retailer.brand,
        plan_item_ids=tuple(i.id for i, _ in rows),
        action=action,
        product_evidence={i.id: e for i, e in rows},
        extra=extra or {},
    )
    parts = {"subject": copy.subject, "preheader": copy.preheader, "intro": copy.intro}
    parts.update({f"reason:{k}": v for k, v in copy.reasons.items()})
    [quality] = [v for v in check_email(parts, ctx) if v.rail == "copy_quality"]
    assert quality.passed, [(f.part, f.rule, f.message, parts.get(f.part or "")) for f in quality.findings]


# What SmolLM2-135M wrote as a support agent's talking points (benchmarks/support_llm.py), and what an agent
# would say: a support point is read in the agent's register, where "I am sorry" is right.
@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("2. 3 days, 4 weeks and 5 months", "not_a_sentence"),
        ("items.maxLength: 20, items.minItems: 12,", "not_a_sentence"),
        ("data_type:string", "not_a_sentence"),
        ("&#34;I am sorry your order has not reached you yet. &#34;", "not_a_sentence"),
        ("point1: The mug was broken, I have no idea what happened.", "not_a_sentence"),
        ("The agent asks: She's upset her order was late, what can I offer?", "echo"),
        ("Data: I have no idea how this can be possible for you.", "echo"),
        ("Tell [Customer Name] we are sorry about the wait.", "placeholder"),
    ],
)
def test_what_a_small_model_wrote_as_talking_points_is_not_said(
    retailer: Retailer, text: str, rule: str
) -> None:
    assert rule in rules(text, context(retailer), "support_point")


@pytest.mark.parametrize(
    "text",
    [
        "I am sorry your parcel is late; I will chase it with the carrier today.",
        "Offer a refund of the delivery charge on that order.",
        "Thank her for her patience, and confirm when it will arrive.",
        "Ask which of her orders she means, and check it with her.",
    ],
)
def test_what_an_agent_would_say_passes(retailer: Retailer, text: str) -> None:
    assert rules(text, context(retailer), "support_point") == []


def test_a_talking_point_that_repeats_the_question_is_an_echo(retailer: Retailer) -> None:
    question = "She wants to know why her parcel from the winter sale has still not arrived"
    ctx = context(retailer, question=question)
    said = "She wants to know why her parcel from the winter sale has still not arrived."
    assert "echo" in rules(said, ctx, "support_point")


# What Gemma 3 270M wrote when its parts were drawn again until the rails passed one (``llm_draws``): what
# slipped through before these rules was text no person types, and things the email does not hold.
@pytest.mark.parametrize(
    ("part", "text", "rule"),
    [
        (
            "preheader",
            "A set of bags, for the occasion you may be running low on, bought ----------.",
            "garbled",
        ),
        ("preheader", "A bag you bought - - - - - - - a set of them.", "garbled"),
        ("preheader", "A red/black/white/green/blue/yellow bag for you.", "garbled"),
        ("subject", "Hannah, a set of ⅕ bags and ⅒ jars for your kitchen", "garbled"),
        ("subject", "Hannah, a ﬂat-bottomed bag to go with your others", "garbled"),
        ("intro", "Hello Hannah, we found a set of ©fancy bags for you.", "garbled"),
        # What SmolLM2 sent in the 200-email run before this rule: a word in a script the shop does not use.
        ("subject", "Hannah, a lunch bag design for the эталями", "garbled"),
        ("intro", "Hello Hannah, we found a set of icky baby bedding.", "unknown_product"),
        (
            "intro",
            "Hello Hannah, we found you a new set of kitchen spices and jam making containers.",
            "unknown_product",
        ),
        (
            "intro",
            "Hello Hannah, we found a green antique lamp stand to go with your order.",
            "unknown_product",
        ),
        (
            "reason",
            "Shoppers who bought these three items, as you did, often add it to their cart.",
            "no_reason",
        ),
        # Cited as bought, in words as vague as "these three items" once stemmed: which?
        (
            "reason",
            "Shoppers who bought the everyday essentials, as you did, often add this too.",
            "no_reason",
        ),
        ("reason", "You have bought this bag 3 times, from its Why line.", "echo"),
        ("reason", "You have bought this ketchup 7 times, so we have one ready for you.", "unknown_product"),
        ("reason", "You have bought this, and it's a favorite of mine.", "first_person"),
        ("preheader", "The bag you mentioned, a great choice for your home.", "invented_history"),
        ("subject", "Hannah, time to stock up on your cooking knife", "unknown_product"),
        ("subject", "Hannah, a new collection of bags with a pink trim, as", "unfinished"),
        ("subject", "Hannah, when you're making your way home to a family's", "unfinished"),
    ],
)
def test_what_a_model_drawn_until_the_rails_passed_wrote_is_stopped(
    retailer: Retailer, part: str, text: str, rule: str
) -> None:
    name = f"reason:{ids(retailer)[1]}" if part == "reason" else part
    assert rule in rules(text, context(retailer), name)


def test_a_reason_gives_its_own_products_count_or_none(retailer: Retailer) -> None:
    """The product bought 3 (or 5) times, as its evidence says, is not bought 15 times; "at once", "twice
    as much" and a pack's size are no count; a product whose evidence holds no count may be given none."""
    ctx, own, other = context(retailer), f"reason:{ids(retailer)[0]}", f"reason:{ids(retailer)[1]}"
    assert "wrong_count" in rules("You have bought this 15 times, so here it is again.", ctx, own)
    times = CATALOGS[retailer.key][0][1][0].summary.split()[1]  # "bought 3 times, ..."
    assert "wrong_count" not in rules(f"You have bought this {times} times, so here it is again.", ctx, own)
    assert "wrong_count" not in rules("You have bought it before, so here are three at once.", ctx, own)
    assert "wrong_count" not in rules("No need to think twice: it holds twice as much.", ctx, own)
    assert "wrong_count" in rules(
        "Shoppers who bought it 9 times, as you did, often buy this too.", ctx, other
    )


def test_product_names_and_plain_punctuation_are_not_garbled(retailer: Retailer) -> None:
    """A product's own name may hold slashes, dashes and symbols ("Set/6 Plates", "T-Light"); the copy
    may hold the punctuation a sentence uses, an ellipsis and a date."""
    odd = Item(
        id="odd", title="Set/3 Pink/White/Red Cups – Ⅱ", category="Cups", price=1.0, url="https://shop.test/p"
    )
    rows = CATALOGS[retailer.key]
    ctx = RailContext(
        customer=CUSTOMER,
        catalog={odd.id: odd, **{item.id: item for item, _ in rows}},
        brand=retailer.brand,
        plan_item_ids=(odd.id, *(item.id for item, _ in rows)),
        action="recommend",
        product_evidence={odd.id: rows[0][1], **{item.id: evidence for item, evidence in rows}},
    )
    assert "garbled" not in rules("Hannah, the Set/3 Pink/White/Red Cups – Ⅱ are back", ctx, "subject")
    own = f"reason:{ids(retailer)[0]}"
    title = titles(retailer)[0]
    # What a reason calls its product may be its name, a word of it, or nothing at all.
    for text in (
        f"You have bought this {title} 3 times.",
        "You have bought this twice, so here it is again.",
    ):
        assert "unknown_product" not in rules(text, ctx, own), text
    listed = ", ".join(titles(retailer))
    for text in (
        f"Customers who bought {listed}, as you did, often buy it too!",
        "You have bought it 3 times, last on 2011-11-02… and here it is again.",
        "Hello Hannah, we picked a few things: the ones you buy again & again (and one more).",
    ):
        assert "garbled" not in rules(text, ctx, "intro" if text.startswith("Hello") else f"reason:{odd.id}")


def _one_product(retailer: Retailer, item: Item, evidence: tuple[Evidence, ...]) -> RailContext:
    """A replenishment email of one product with these facts, under the retailer's brand."""
    return RailContext(
        customer=CUSTOMER,
        catalog={item.id: item},
        brand=retailer.brand,
        plan_item_ids=(item.id,),
        action="replenishment",
        product_evidence={item.id: evidence},
    )


def _bought_with(retailer: Retailer, item: Item, times: int, others: str) -> RailContext:
    """``_one_product`` of an item bought ``times`` times, whose buyers also bought ``others``."""
    return _one_product(
        retailer,
        item,
        (
            Evidence(kind="repeat_purchase", summary=f"bought {times} times, last on 2011-09-01"),
            Evidence(kind="similar_customers", summary=f"often bought by customers who also bought {others}"),
        ),
    )


def test_a_reason_may_not_call_its_product_by_another_products_name_from_its_evidence(
    retailer: Retailer,
) -> None:
    """SmolLM2 sent "You have bought this mug 4 times" of a pack of tissues whose evidence named a mug among
    the other products its buyers bought: those names are not the product's. Its own facts still are."""
    tissues = Item(
        id="T1",
        title="Pack Of 12 London Tissues",
        category="Party & Gifts",
        price=0.4,
        url="https://shop.test/p",
    )
    evidence = (
        Evidence(kind="repeat_purchase", summary="bought 4 times, last on 2011-10-02", item_ids=("T1",)),
        Evidence(
            kind="similar_customers",
            summary="often bought by customers who also bought Mug Red Retrospot, Doormat Union Flag",
            item_ids=("M1", "D1"),
        ),
    )
    ctx = _one_product(retailer, tissues, evidence)
    for wrong in ("mug", "doormat", "flag", "set of 12 mugs", "box of mugs"):
        text = f"You have bought this {wrong} 4 times, so we have one ready for your next order."
        assert "unknown_product" in rules(text, ctx, "reason:T1"), text
    for right in (
        "pack",
        "tissue pack",
        "pack of tissues",
        "box of 12 tissues",
        "set of three",
        "pack of 12",
    ):
        text = f"You have bought this {right} 4 times, so we have one ready for your next order."
        assert "unknown_product" not in rules(text, ctx, "reason:T1"), text
    # A word of the other products' names beside a word of its own is a fair description of it.
    light = Item(
        id="L1",
        title="Victorian Glass Hanging T-Light",
        category="Candles",
        price=1.0,
        url="https://shop.test/p",
    )
    named = Evidence(
        kind="similar_customers",
        summary="often bought by customers who also bought Hanging Heart Jar T-Light Holder, Party Bunting",
    )
    ctx_light = dataclasses.replace(
        ctx, catalog={"L1": light}, plan_item_ids=("L1",), product_evidence={"L1": (named,)}
    )
    said = "You have bought this t-light holder, so we have one ready for your next order."
    assert "unknown_product" not in rules(said, ctx_light, "reason:L1")
    said = "You have bought this bunting, so we have one ready for your next order."
    assert "unknown_product" in rules(said, ctx_light, "reason:L1")


@pytest.mark.parametrize(
    ("title", "said"),
    [
        ("Red Wool Gloves", "this pair of gloves"),
        ("Red Wool Gloves", "this lovely pair of gloves"),
        ("Pack Of 6 Scented Candles", "this bundle of candles"),
        ("Extra Virgin Olive Oil 500ml", "this bottle of olive oil"),
        ("Wildflower Honey", "this jar of honey"),
        ("English Breakfast Tea", "this tin of tea"),
        ("Christmas Gift Wrap", "this roll of gift wrap"),
        ("Paper Chain Kit", "this trio of chains"),
        ("Scented Soy Candles Set", "this collection of candles"),
        ("Lunch Bag Red Retrospot", "this kid’s lunch bag"),
        ("Regency Cakestand 3 Tier", "this cake stand"),
    ],
)
def test_what_holds_or_counts_a_product_names_it_by_what_follows(
    retailer: Retailer, title: str, said: str
) -> None:
    """A reason may call its product by what holds or counts it ("this pair of gloves"): the name is what
    comes after the "of"."""
    item = Item(id="P1", title=title, category="Gifts", price=1.0, url="https://shop.test/p")
    ctx = RailContext(
        customer=CUSTOMER,
        catalog={"P1": item},
        brand=retailer.brand,
        plan_item_ids=("P1",),
        action="replenishment",
        product_evidence={
            "P1": (Evidence(kind="repeat_purchase", summary="bought 3 times, last on 2011-10-02"),)
        },
    )
    text = f"You have bought {said} 3 times, so we have one ready for your next order."
    assert "unknown_product" not in rules(text, ctx, "reason:P1"), text


@pytest.mark.parametrize(
    ("title", "category", "said", "names_it"),
    [
        # SmolLM2 sent each of these three of the shop's products. The people who judged the sent emails
        # struck "this small", struck "this red" once and passed it once, and passed "this polkadot": the rule
        # holds that a colour or a print alone names nothing.
        ("Wrap Red Apples", "Gift Wrap", "this red", False),
        ("Small Heart Flowers Hook", "Home Decor", "this small", False),
        ("Lunch Bag Pink Polkadot", "Bags", "this polkadot", False),
        # What it is, with or without how it looks; a print's name of two words; "one" it describes.
        ("Enamel Flower Jug Cream", "Kitchen & Dining", "this cream jug", True),
        ("Lunch Bag Pink Polkadot", "Bags", "this pink polkadot", True),
        ("Lunch Bag Pink Polkadot", "Bags", "this pink polkadot bag", True),
        ("Small Heart Flowers Hook", "Home Decor", "this small one", True),
        # A shop whose category is named by the word sells things that are that word; before an "of", what
        # follows names it.
        ("Rioja Reserva", "Red Wine", "this red", True),
        ("Cream Of Tomato Soup", "Soups", "this cream of tomato soup", True),
        # A word that is a product too: a cream jug's colour or hand cream, a paper doily or a bag's print.
        ("Rose Hand Cream", "Skincare", "this cream", True),
        ("Enamel Flower Jug Cream", "Kitchen & Dining", "this cream", True),
        ("Set Of 72 Pink Heart Paper Doilies", "Stationery & Cards", "this doily", True),
        ("Vintage Port 2011", "Fortified Wine", "this vintage", True),
    ],
)
def test_a_word_that_says_how_a_product_looks_does_not_name_it_alone(
    retailer: Retailer, title: str, category: str, said: str, names_it: bool
) -> None:
    """A colour, a size or a print is how a product looks, not what it is: "you have bought this pink 5
    times" of pink cutlery names nothing, whatever the product's name holds."""
    item = Item(id="P1", title=title, category=category, price=1.0, url="https://shop.test/p")
    ctx = _one_product(
        retailer, item, (Evidence(kind="repeat_purchase", summary="bought 5 times, last on 2011-10-02"),)
    )
    text = f"You have bought {said} 5 times, so we have one ready for your next order."
    assert ("unknown_product" not in rules(text, ctx, "reason:P1")) is names_it, text


@pytest.mark.parametrize(
    ("title", "said", "offers_it"),
    [
        # SmolLM2 sent the first two; a person judged both bad: the emails held bunting and a lunch bag.
        ("Party Bunting", "Finn, time to stock up on your party hats", False),
        ("Lunch Bag Black Skull", "Alice, time to stock up on your lunch box", False),
        ("Party Bunting", "Finn, time to stock up on your party bunting", True),
        ("Party Bunting", "Finn, time to stock up on your party supplies", True),
        ("Lunch Box I Love London", "Hello Lucas, you may want to know about our lunch boxes.", True),
        ("Childrens Cutlery Retrospot Red", "Freya, time to stock up on your children's cutlery", True),
        ("Childrens Cutlery Retrospot Red", "Freya, time to stock up on your kids’ cutlery", True),
        # What follows the thing says nothing of what it is.
        ("Lunch Bag Red Retrospot", "Hello Ann, we have the lunch bag back in stock for you.", True),
        ("Lunch Bag Red Retrospot", "Hello Ann, we found you a lunch bag perfect for school.", True),
        ("Regency Tea Set", "Hello Ann, we found you a tea set made for sharing.", True),
        ("Party Bunting", "Finn, stock up on your party bunting while stocks last", True),
        ("Kitchen Knife Set", "Ann, time to stock up on your kitchen knives", True),
        ("Wooden Shelf", "Hello Ann, we found you some wooden shelves.", True),
        # What holds or counts the thing is read past ("an assortment of" what is named after it).
        ("Assorted Colour Bird Ornament", "Hello Ruby, we have an assortment of bird ornaments.", True),
        ("Assorted Colour Bird Ornament", "Hello Ruby, we have an assortment of party hats.", False),
        ("Party Bunting", "Finn, time to stock up on your party gear", True),
    ],
)
def test_what_an_offered_thing_is_comes_last_and_must_be_one_of_the_products(
    retailer: Retailer, title: str, said: str, offers_it: bool
) -> None:
    """ "Your party hats" are hats, whichever party they are for: the last word of what a part offers says
    what it is, and it must be a word of the email's products (or a kind of thing: "your party supplies")."""
    item = Item(id="P1", title=title, category="Gifts", price=1.0, url="https://shop.test/p")
    ctx = _one_product(
        retailer, item, (Evidence(kind="repeat_purchase", summary="bought 5 times, last on 2011-10-02"),)
    )
    part = "intro" if said.startswith("Hello") else "subject"
    assert ("unknown_product" not in rules(said, ctx, part)) is offers_it, said


def test_a_verb_inside_a_name_does_not_make_a_list_of_names_a_sentence(retailer: Retailer) -> None:
    """SmolLM2 sent the preview line "The doormat garden building block word, Love Building Block Word,
    Doormat house of cards.": "Love" is a name's, not a verb said to the customer."""
    word = Item(
        id="W1", title="Home Building Block Word", category="Other", price=1.0, url="https://shop.test/p"
    )
    ctx = _bought_with(retailer, word, 4, "Love Building Block Word, Bath Building Block Word")
    listed = "The doormat garden building block word, Love Building Block Word, Doormat house of cards."
    assert "names_only" in rules(listed, ctx, "preheader")
    said = "The building block words you love, ready for your next order."
    assert "names_only" not in rules(said, ctx, "preheader")


def test_a_script_is_garbled_only_where_neither_the_shop_nor_its_names_write_in_it(
    retailer: Retailer,
) -> None:
    """Latin and the scripts of the shop's own words, the products' names and the customer's name are the
    shop's; a word in another ("эталями" in an English email) is garbled. A shop whose sign-off is in Greek
    writes in Greek too, and a customer called Юлия is greeted by her name."""
    ctx = context(retailer)
    assert "garbled" in rules("Hannah, a lunch bag design for the эталями", ctx, "subject")
    assert "garbled" in rules("Hannah, a λαμπερό lunch bag to go with yours", ctx, "subject")
    assert "garbled" not in rules("Hannah, a café-style lunch bag, naïve and bright", ctx, "subject")
    # A lone letter is a sign ("50μm"), a modifier apostrophe is an apostrophe, and Japanese is one writing
    # system in three scripts.
    assert "garbled" not in rules("Hannah, a 50μm-thin lunch bag weʼve kept for you", ctx, "subject")
    sakura = dataclasses.replace(ctx, customer=CUSTOMER.model_copy(update={"first_name": "さくら"}))
    assert "garbled" not in rules("さくら様, a lunch bag to go with yours", sakura, "subject")
    greek = retailer.brand.model_copy(update={"sign_off": "Με αγάπη, η ομάδα"})
    ctx_greek = dataclasses.replace(ctx, brand=greek)
    assert "garbled" not in rules("Hannah, a λαμπερό lunch bag to go with yours", ctx_greek, "subject")
    yulia = CUSTOMER.model_copy(update={"first_name": "Юлия"})
    ctx_yulia = dataclasses.replace(ctx, customer=yulia)
    assert "garbled" not in rules("Юлия, a lunch bag to go with yours", ctx_yulia, "subject")


# Other products the evidence names (not in the email): a list of them is still a list of names.
ALSO_BOUGHT = {"hearth": "Lunch Bag Vintage Doily", "harbour": "Green Tea Powder 100g"}


def test_what_got_past_the_rails_in_the_large_smollm2_run_is_stopped_now(retailer: Retailer) -> None:
    """Sent in the 200-email run (judged by a person): a preview line of names the evidence lists, cut off
    on a full stop; a swear word; a reason arguing against its own product."""
    rows = CATALOGS[retailer.key]
    named = ALSO_BOUGHT[retailer.key]
    evidence = {item.id: ev for item, ev in rows}
    last = rows[-1][0].id
    evidence[last] = (
        *evidence[last],
        Evidence(kind="similar_customers", summary=f"often bought by customers who also bought {named}"),
    )
    ctx = RailContext(
        customer=CUSTOMER,
        catalog={item.id: item for item, _ in rows},
        brand=retailer.brand,
        plan_item_ids=tuple(item.id for item, _ in rows),
        action="recommend",
        product_evidence=evidence,
    )
    first = titles(retailer)[0]
    assert "names_only" in rules(f"A {first}, a {named}, a {named}, a {named}, a .", ctx, "preheader")
    assert "unfinished" in rules(f"A {first} for the shelf, and a {named} to go with your.", ctx, "preheader")
    assert "unfinished" in rules(f"Hello Hannah, we found a {first} to sit beside the .", ctx, "intro")
    assert "profanity" in rules(f"The shit you keep in the cupboard, and a {first} for it.", ctx, "preheader")
    reason = f"reason:{ids(retailer)[0]}"
    against = "You have bought this 3 times, so we can't recommend it to you."
    praise = "You have bought this 3 times, so we can't recommend it enough."
    if retailer.key == "harbour":
        against, praise = against.replace("3 times", "5 times"), praise.replace("3 times", "5 times")
    assert "no_reason" in rules(against, ctx, reason)
    assert rules(praise, ctx, reason) == []
    # What a shop writes is not stopped by any of these: names in a sentence, a full stop after a word.
    fine = f"Hello Hannah, we found a {first} to sit beside the one you have."
    assert rules(fine, ctx, "intro") == []


def test_the_new_rules_leave_innocent_words_names_and_endings_alone(retailer: Retailer) -> None:
    """From the review of the rules above: a customer called Dick, words that begin like a swear word, a
    sentence ending on a preposition, praise that says "can't recommend it enough", and a name the evidence
    gives with "and" inside it."""
    ctx = context(retailer)
    dick = RailContext(
        customer=CUSTOMER.model_copy(update={"first_name": "Dick"}),
        catalog=ctx.catalog,
        brand=ctx.brand,
        plan_item_ids=ctx.plan_item_ids,
        action="recommend",
        product_evidence=ctx.product_evidence,
    )
    first = titles(retailer)[0]
    for action in ("recommend", "replenishment", "win_back"):
        _assert_template_copy_passes(retailer, CATALOGS[retailer.key], action, dick.customer)
    assert "profanity" not in rules(
        "Hello Dick, we found something prickly and a Pissarro print.", dick, "intro"
    )
    assert "profanity" not in rules("Hello Hannah, we found a flame retardant throw for you.", ctx, "intro")
    assert "unfinished" not in rules(f"A {first}, one of the things you'll want more of.", ctx, "preheader")
    reason = f"reason:{ids(retailer)[0]}"
    count = "3 times" if retailer.key == "hearth" else "5 times"
    for praise in ("we can't recommend it more", "we couldn't suggest a better match"):
        assert "no_reason" not in rules(f"You have bought this {count}, so {praise}.", ctx, reason)
    assert "no_reason" in rules(
        f"You have bought this {count}, but we would never recommend it.", ctx, reason
    )
    # "Black and White Paisley Mug" is one name the evidence gives: "black" alone is a word of a sentence.
    rows = CATALOGS[retailer.key]
    paisley = {
        **ctx.product_evidence,
        rows[0][0].id: (
            Evidence(
                kind="similar_customers",
                summary="often bought by customers who also bought Black and White Paisley Mug",
            ),
        ),
    }
    ctx2 = RailContext(
        customer=CUSTOMER,
        catalog=ctx.catalog,
        brand=ctx.brand,
        plan_item_ids=ctx.plan_item_ids,
        action="recommend",
        product_evidence=paisley,
    )
    assert "names_only" not in rules(f"A {first} in black.", ctx2, "preheader")


def test_a_bare_list_of_names_and_an_echo_of_the_facts_are_stopped_as_sent_in_the_large_run(
    retailer: Retailer,
) -> None:
    """The gate's kinds that went out in the 200-email run (judged by a person): preview lines that list
    names (three or more, or a name said twice, or a title and its category) and intros echoing the brief's
    "facts". A list inside a sentence to the customer, and a short line with a comma, still pass."""
    ctx = context(retailer)
    first, second = titles(retailer)[0], titles(retailer)[1]
    category = ctx.catalog[ids(retailer)[0]].category
    for text in (
        f"A {first}, a {second}, a {first}.",
        f"The {first}, Love Building Block Word, Love Building Block Word, Love Ft.",
        f"The {first}, {category}.",
    ):
        assert "names_only" in rules(text, ctx, "preheader"), text
    for text in (
        "Hello Hannah, we thought you might want to know the facts about us.",
        "Hello Hannah, we thought you might like the product we are talking about.",
    ):
        assert "echo" in rules(text, ctx, "intro"), text
    for text in (
        f"A {first} and a {second}, both ready for your next order.",
        f"The {first}, fresh in this week.",
    ):
        assert "names_only" not in rules(text, ctx, "preheader"), text


def test_a_currency_sign_with_no_amount_is_a_blank_and_names_joined_by_ampersands_are_a_list(
    retailer: Retailer,
) -> None:
    """Two preview lines SmolLM2 sent in the third 200-email run: "... candles is $ $ $ $ $, ..." (a price
    it was to fill in) and three names joined by "&" (a list, as one joined by commas is)."""
    candles = Item(
        id="C1", title="Set Of 4 Vanilla Botanical Candles", category="Candles", price=3.0,
        url="https://shop.test/p",
    )  # fmt: skip
    ctx = _one_product(
        retailer, candles, (Evidence(kind="repeat_purchase", summary="bought 3 times, last on 2011-09-01"),)
    )
    blank = (
        "The price of set of four Vanilla botanical candles is $ $ $ $ $,"
        " however you have to purchase them in."
    )
    assert "placeholder" in rules(blank, ctx, "preheader")
    for blank in ("Your vanilla candles, now only £__ for a set of four.", "Vanilla candles at $XX a set."):
        assert "placeholder" in rules(blank, ctx, "preheader"), blank
    # A currency named with no amount is no blank (a review's cases).
    for said in (
        "Your vanilla candles are back; prices in NT$ include tax.",
        "Hello Hannah, your vanilla candles are back, and prices are in £ as always.",
        "Your vanilla candles, 180 NT$ a set, ready for your next shop.",
        "Save £££ on the vanilla candles you buy again and again.",
    ):
        assert "placeholder" not in rules(said, ctx, "intro" if said.startswith("Hello") else "preheader"), (
            said
        )
    for priced in ("£3.29", "NT$ 350", "NT$350", "5 €", "$12"):
        said = f"Your vanilla candles, {priced} for a set of four, ready for your next order."
        assert "placeholder" not in rules(said, ctx, "preheader"), said
    coasters = Item(
        id="T1",
        title="Tomato Charlie+Lola Coaster Set",
        category="Kitchen",
        price=2.0,
        url="https://shop.test/p",
    )
    facts = (
        Evidence(kind="repeat_purchase", summary="bought 2 times, last on 2011-09-01"),
        Evidence(
            kind="similar_customers",
            summary="often bought by customers who also bought Carrot Charlie&Lola Coaster Set",
        ),
    )
    ctx = _one_product(retailer, coasters, facts)
    listed = (
        "Tomato Charlie+lola Coaster Set & Carrot Charlie&lola Coaster Set & Tomato Charlie+lola Coaster Set"
        " & Carv."
    )
    assert "names_only" in rules(listed, ctx, "preheader")
    for said in (
        "Your Charlie & Lola coasters, ready for your next order.",
        "Tomato & carrot coasters for your table, back in stock for you.",
        # No one spoken to and no verb, but a comma: a line, not three names joined (a review's cases).
        "Warm toes and cosy nights, from Charlie + Lola.",
        "Coasters, tea & biscuits: winter nights sorted.",
    ):
        assert "names_only" not in rules(said, ctx, "preheader"), said
    # A name's own ampersand joins nothing: "Blue & White Breakfast Tray" is one name.
    tray = Item(
        id="B1", title="Blue & White Breakfast Tray", category="Kitchen", price=2.0, url="https://shop.test/p"
    )
    both = (
        facts[0],
        Evidence(
            kind="similar_customers", summary="often bought by customers who also bought Pink & White Tray"
        ),
    )
    said = "Blue & White Breakfast Tray & Pink & White Tray & tea"
    assert "names_only" in rules(said, _one_product(retailer, tray, both), "preheader")
    said = "The Blue & White Breakfast Tray & Pink & White Tray: made for slow breakfasts."
    assert "names_only" not in rules(said, _one_product(retailer, tray, both), "preheader")


def test_a_last_word_cut_to_one_letter_is_unfinished_but_a_name_ending_in_one_is_not(
    retailer: Retailer,
) -> None:
    """SmolLM2 sent "An ivory kitchen scales that goes with the Red Kitchen Scales, Mint Kitchen Scales, Black
    Kitchen S." in the third 200-email run: a length limit cut the last word to its first letter."""
    scales = Item(
        id="K1", title="Ivory Kitchen Scales", category="Kitchen", price=8.0, url="https://shop.test/p"
    )
    ctx = _bought_with(retailer, scales, 2, "Red Kitchen Scales, Mint Kitchen Scales, Black Kitchen Scales")
    cut = (
        "An ivory kitchen scales that goes with the Red Kitchen Scales, Mint Kitchen Scales, Black Kitchen S."
    )
    assert "unfinished" in rules(cut, ctx, "preheader")
    assert "unfinished" in rules(
        "Ella, time to stock up on your kitchen scales in ivory and b", ctx, "subject"
    )
    assert "unfinished" in rules("Your ivory kitchen scales, for those who want to d.", ctx, "preheader")
    letter = Item(id="L1", title="Wooden Letter B", category="Toys", price=1.0, url="https://shop.test/p")
    for ctx_, said, part in (
        (ctx, "Your ivory kitchen scales, ready for when you and I.", "preheader"),
        # A capital that cuts no name short (a review's cases).
        (ctx, "Kitchen scales for every bake, from A to Z.", "preheader"),
        (ctx, "Your ivory kitchen scales, in case you need a plan B.", "preheader"),
        (ctx, "Hello Hannah, we thought you might want to know about our ivory kitchen scales.", "intro"),
        (
            _bought_with(retailer, letter, 2, "Wooden Letter A"),
            "Hannah, time to stock up on your Wooden Letter B",
            "subject",
        ),
    ):
        assert "unfinished" not in rules(said, ctx_, part), said


def test_products_the_customer_has_all_bought_before_are_not_new_things(retailer: Retailer) -> None:
    """Gemma sent "A few new things for you, picked from what you have bought before." as the preview line of
    8 emails of the third 200-email run, each of products the customer had all bought (the writer's brief
    said "new things" then). "A new one" of a product bought before is a fresh one of it, and may be said."""
    jug = Item(
        id="J1", title="Enamel Flower Jug Cream", category="Kitchen", price=3.0, url="https://shop.test/p"
    )
    bought = (Evidence(kind="repeat_purchase", summary="bought 4 times, last on 2011-09-01"),)
    said = "A few new things for you, picked from what you have bought before."
    assert "false_fact" in rules(said, _one_product(retailer, jug, bought), "preheader")
    assert "false_fact" in rules("Hello Hannah, we thought you might want to know about our new home decor.",
                                 _one_product(retailer, jug, bought), "intro")  # fmt: skip
    liked = (
        Evidence(kind="similar_customers", summary="often bought by customers who also bought Tea Towel"),
    )
    assert "false_fact" not in rules(said, _one_product(retailer, jug, liked), "preheader")
    fresh = "You have bought this jug 4 times, so a new one may be due for your next order."
    assert "false_fact" not in rules(fresh, _one_product(retailer, jug, bought), "reason:J1")
