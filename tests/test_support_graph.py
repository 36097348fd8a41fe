"""The support graph: it understands the question, gathers only what it needs, answers that question from
her own facts before the clock, and offers only what the retailer's policy allows for that problem."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from agent import support_suggestions
from agent.intent import INTENTS, IntentModel, read_entities
from agent.support_graph import SUPPORT_MERMAID_PATH, run_support, support_mermaid
from agent.support_model import OpenAISupportModel, ScriptedChat, parse_points
from agent.support_state import SupportDeps
from agent.support_tools import ALLOWED
from retrieval.embeddings import Embedder
from retrieval.recommender import HybridRecommender
from tailor.core.errors import ConsentError, LLMOutputError
from tailor.core.models import Consent, Event, EventKind
from tailor.core.settings import Settings
from tailor.data.store import Store
from tests.retailers import Retailer

NOW = datetime(2011, 12, 10, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def recommender(retail_store: Store, tmp_path_factory: pytest.TempPathFactory) -> HybridRecommender:
    settings = Settings(data_dir=tmp_path_factory.mktemp("support-graph"), now=NOW.isoformat())
    return HybridRecommender.build(retail_store, settings)


def _orders(store: Store, customer_id: str) -> dict[str, list[Event]]:
    lines: dict[str, list[Event]] = {}
    for e in store.events(customer_id, kinds=[EventKind.PURCHASE], until=NOW):
        if e.order_id:
            lines.setdefault(e.order_id, []).append(e)
    return lines


@pytest.fixture(scope="module")
def shopper(retail_store: Store) -> str:
    """A customer with consent and at least two orders before the clock."""
    return next(
        c.id
        for c in retail_store.customers()
        if c.consent.personalization and len(_orders(retail_store, c.id)) >= 2
    )


@pytest.fixture
def own_store(retail_store: Store, shopper: str, tmp_path: Path) -> Iterator[Store]:
    """The shopper alone (and one other customer), in a store a test may write to."""
    store = Store(tmp_path / "tailor.db")
    store.upsert_items(retail_store.items())
    other = next(c for c in retail_store.customers() if c.id != shopper and _orders(retail_store, c.id))
    store.upsert_customers([retail_store.get_customer(shopper), other])
    store.add_events([e for c in (shopper, other.id) for e in retail_store.events(c)])
    yield store
    store.close()


def test_the_support_graph_matches_its_drawing() -> None:
    assert SUPPORT_MERMAID_PATH.read_text() == support_mermaid(), (
        "the support graph changed: regenerate agent/support_graph.mmd with `python -c 'import "
        'agent.support_graph as g; open("agent/support_graph.mmd","w").write(g.support_mermaid())\'`'
    )


def test_entities_are_read_against_her_own_orders(retail_store: Store, shopper: str) -> None:
    lines = _orders(retail_store, shopper)
    newest = max(lines, key=lambda o: max(e.timestamp for e in lines[o]))
    oldest = min(lines, key=lambda o: min(e.timestamp for e in lines[o]))
    purchases = [e for ls in lines.values() for e in ls]
    catalog = retail_store.item_map()
    named = read_entities(f"Order #{oldest} never came", orders=purchases, catalog=catalog)
    assert named.order_ids == (oldest,) and not named.unknown_order_ids and not named.by_reference
    bare = read_entities(f"what about {oldest}?", orders=purchases, catalog=catalog)
    assert bare.order_ids == (oldest,)
    last = read_entities("Sa dernière commande est arrivée cassée", orders=purchases, catalog=catalog)
    assert last.order_ids == (newest,) and last.by_reference
    unknown = read_entities("invoice 999999 is wrong", orders=purchases, catalog=catalog)
    assert unknown.unknown_order_ids == ("999999",) and not unknown.order_ids
    # A product by a misspelt part of its title: her own purchase first.
    line = next(e for e in purchases if e.item_id and len(catalog[e.item_id].title.split()) >= 3)
    words = catalog[line.item_id or ""].title.lower().split()
    typo = f"the {words[0]} {words[1]}{words[1][-1]} {' '.join(words[2:])} arrived chipped"
    assert line.item_id in read_entities(typo, orders=purchases, catalog=catalog).item_ids


def test_without_an_encoder_the_words_that_name_an_intent_decide() -> None:
    words = IntentModel(None)
    assert words.guess("her parcel is late and has not arrived").intent == "late_delivery"
    assert words.guess("les tasses sont arrivées cassées").intent == "damaged_item"
    assert words.guess("she wants a refund").intent == "return_refund"
    assert words.guess("hello").intent == "other"
    # "Invoice 581650" names an order, not a request for an invoice: only the refund is named.
    refund = words.guess("he wants a refund on invoice 581650")
    assert refund.intent == "return_refund" and refund.scores["other"] == 0.0
    assert words.guess("she needs a VAT invoice").intent == "other"


@pytest.mark.slow
def test_the_offline_intent_model_reads_questions_in_two_languages() -> None:
    embedder = Embedder()
    model = IntentModel(lambda texts: embedder.encode(texts, keep=False))
    cases = {
        "Her delivery still hasn't turned up after ten days": "late_delivery",
        "Il n'a toujours pas reçu son colis": "late_delivery",
        "He'd like his money back for the candles": "return_refund",
        "The vase came smashed to pieces": "damaged_item",
        "Is the red bunting available in green?": "product_question",
        "What could I recommend for her daughter's birthday?": "gift_idea",
        "Please stop sending her promotions": "email_complaint",
        "Elle veut qu'on efface toutes ses données": "account_consent",
    }
    for question, intent in cases.items():
        guess = model.guess(question)
        assert guess.intent == intent, (question, guess)
        assert set(guess.scores) == set(INTENTS)


def test_a_late_order_is_chased_and_offered_only_the_policys_amends(
    own_store: Store, recommender: HybridRecommender, retailer: Retailer, shopper: str
) -> None:
    lines = _orders(own_store, shopper)
    newest = max(lines, key=lambda o: max(e.timestamp for e in lines[o]))
    out = support_suggestions(
        own_store,
        recommender,
        retailer.brand,
        shopper,
        "She's upset her order was late, what can I offer?",
        now=NOW,
    )
    assert out.intent == "late_delivery"
    resolve, offer = out.suggestions[:2]
    assert resolve.kind == "resolve" and newest in resolve.title
    cited = own_store.get_events(list(resolve.evidence[0].event_ids))
    assert cited and all(e.order_id == newest and e.customer_id == shopper for e in cited)
    assert offer.kind == "offer" and offer.evidence[0] == resolve.evidence[0]
    assert retailer.brand.offers_for("late_delivery")[0] in " ".join(offer.talking_points)
    # Marketing offers are not amends, and nothing is sold to a customer waiting for a parcel.
    assert not any(o in offer.model_dump_json() for o in retailer.brand.allowed_offers)
    assert all(s.kind != "product" for s in out.suggestions)
    assert [t.name for t in out.tools][:2] == ["history", "entities"] and "policy" in {
        t.name for t in out.tools
    }


def test_an_order_that_is_not_hers_is_no_order_of_hers(
    own_store: Store, recommender: HybridRecommender, retailer: Retailer, shopper: str
) -> None:
    """Another customer's order number, asked about: found for nobody, and nothing of it is shown."""
    other = next(c.id for c in own_store.customers() if c.id != shopper)
    theirs = next(iter(_orders(own_store, other)))
    out = support_suggestions(
        own_store, recommender, retailer.brand, shopper, f"Her order {theirs} never arrived", now=NOW
    )
    assert out.no_match == (theirs,)
    first = out.suggestions[0]
    assert first.kind == "not_found" and theirs in first.title
    cited = own_store.get_events([i for s in out.suggestions for e in s.evidence for i in e.event_ids])
    assert cited and all(e.customer_id == shopper for e in cited)
    assert all(e.order_id != theirs for e in cited)


def test_an_order_after_the_clock_has_not_happened_yet(
    own_store: Store, recommender: HybridRecommender, retailer: Retailer, shopper: str
) -> None:
    item = next(iter(own_store.item_map()))
    own_store.add_events(
        [
            Event(
                customer_id=shopper,
                kind=EventKind.PURCHASE,
                item_id=item,
                quantity=1,
                value=1.0,
                order_id="FUT90001",
                timestamp=NOW + timedelta(days=3),
            )
        ]
    )
    out = support_suggestions(
        own_store, recommender, retailer.brand, shopper, "Where is order FUT90001? It is late", now=NOW
    )
    assert out.no_match == ("FUT90001",)
    cited = own_store.get_events([i for s in out.suggestions for e in s.evidence for i in e.event_ids])
    assert all(e.timestamp < NOW for e in cited)


def test_a_product_question_gets_the_catalogs_facts_and_no_offer(
    own_store: Store, recommender: HybridRecommender, retailer: Retailer, shopper: str
) -> None:
    catalog = own_store.item_map()
    bought = next(
        e.item_id for e in own_store.events(shopper, kinds=[EventKind.PURCHASE]) if e.item_id in catalog
    )
    item = catalog[bought or ""]
    out = support_suggestions(
        own_store, recommender, retailer.brand, shopper, f"Is the {item.title} in stock?", now=NOW
    )
    assert out.intent == "product_question"
    facts = out.suggestions[0]
    assert facts.kind == "product_facts" and facts.evidence[0].item_ids == (item.id,)
    assert item.price_text in " ".join(facts.talking_points)
    assert all(s.kind != "offer" for s in out.suggestions)


def test_her_account_is_answered_without_personalization_consent_and_nothing_else_is(
    own_store: Store, recommender: HybridRecommender, retailer: Retailer, shopper: str
) -> None:
    customer = own_store.get_customer(shopper)
    own_store.upsert_customers(
        [customer.model_copy(update={"consent": Consent(marketing_email=True, personalization=False)})]
    )
    searched: list[str] = []

    def search(customer_id: str, question: str, limit: int) -> Sequence[object]:
        searched.append(question)
        return []

    out = support_suggestions(
        own_store,
        recommender,
        retailer.brand,
        shopper,
        "She wants us to delete her data",
        now=NOW,
        search=search,
    )
    assert out.intent == "account_consent"
    (account,) = out.suggestions
    assert "personalised suggestions: no" in " ".join(account.talking_points)
    assert "history" not in {t.name for t in out.tools}
    with pytest.raises(ConsentError):
        support_suggestions(
            own_store, recommender, retailer.brand, shopper, "Where is her parcel?", now=NOW, search=search
        )
    assert searched == [], "nothing of her history is searched without consent"


# -- the second way to think: a model by the tool-calling protocol (scripted here; real in
# tests/test_support_model_llm.py) -------------------------------------------------------------------------
def _model(script: list[Any], retailer: Retailer, tmp_path: Path) -> tuple[OpenAISupportModel, ScriptedChat]:
    chat = ScriptedChat(script)
    settings = Settings(data_dir=tmp_path, writer="openai", llm_model="scripted-model")
    return OpenAISupportModel(settings, retailer.brand, client=chat), chat


def _candidates(
    store: Store, recommender: HybridRecommender, retailer: Retailer, shopper: str, q: str
) -> int:
    """How many suggestions the offline way composes for ``q`` (what a model is asked to write for)."""
    deps = SupportDeps(store=store, recommender=recommender, brand=retailer.brand, now=NOW)
    _, audit = asyncio.run(run_support(deps, shopper, q))
    return len(next(r for r in audit if r["node"] == "answer")["candidates"])


LATE = "She's upset her order was late, what can I offer?"


def test_a_model_picks_the_tools_and_writes_the_points_by_the_tool_calling_protocol(
    own_store: Store, recommender: HybridRecommender, retailer: Retailer, shopper: str, tmp_path: Path
) -> None:
    lines = _orders(own_store, shopper)
    newest = max(lines, key=lambda o: max(e.timestamp for e in lines[o]))
    amends = retailer.brand.offers_for("late_delivery")[0]
    n = min(_candidates(own_store, recommender, retailer, shopper, LATE), 3)
    assert n >= 2
    said = {
        "resolve": [f"I am sorry order {newest} is late.", "I will chase the parcel today."],
        "offer": [f"We can offer {amends}."],
    }
    model, chat = _model(
        [
            [("orders", {"order_id": newest}), ("ticket", {})],
            [("returns", {}), ("policy", {})],
            "I have what I need.",
            *(
                [("talking_points", {"points": p})]
                for p in [said["resolve"], said["offer"], *[["Thank her for her patience today."]] * (n - 2)]
            ),
        ],
        retailer,
        tmp_path,
    )
    out = support_suggestions(own_store, recommender, retailer.brand, shopper, LATE, now=NOW, model=model)
    assert chat.script == [], "every scripted answer was asked for"
    assert out.thinker == "openai:scripted-model" and out.fell_back == ()
    by_model = {t.name for t in out.tools if t.by == "model"}
    assert {f"orders:{newest}", "ticket", "returns", "policy"} <= by_model
    resolve, offer = out.suggestions[:2]
    assert newest in resolve.title and resolve.talking_points == tuple(said["resolve"]), out.guardrail_notes
    assert offer.kind == "offer" and offer.talking_points == tuple(said["offer"])
    # What the endpoint was sent: the tools a late parcel allows, chosen freely; then one forced call.
    first = chat.requests[0]
    offered = {t["function"]["name"] for t in first["tools"]}
    assert first["tool_choice"] == "auto" and offered == set(ALLOWED["late_delivery"])
    assert not offered & {"recommendations", "catalog_search", "best_sellers"}
    assert chat.requests[1]["messages"][-1]["role"] == "tool"
    write = chat.requests[3]
    assert write["tool_choice"] == {"type": "function", "function": {"name": "talking_points"}}


def test_a_model_is_held_to_the_facts_and_to_what_its_question_allows(
    own_store: Store, recommender: HybridRecommender, retailer: Retailer, shopper: str, tmp_path: Path
) -> None:
    offline = support_suggestions(own_store, recommender, retailer.brand, shopper, LATE, now=NOW)
    n = min(_candidates(own_store, recommender, retailer, shopper, LATE), 3)
    model, chat = _model(
        [
            [("recommendations", {}), ("catalog_search", {"query": "mugs"})],
            "done",
            [("talking_points", {"points": ["Order 999999 left us on 2011-12-25, so it is nearly there."]})],
            [("talking_points", {"points": ["We can give her 20% off her next order as a thank-you."]})],
            *[[("talking_points", {"points": ["Thank her for her patience today."]})]] * (n - 2),
        ],
        retailer,
        tmp_path,
    )
    out = support_suggestions(own_store, recommender, retailer.brand, shopper, LATE, now=NOW, model=model)
    assert chat.script == []
    # Selling to a customer waiting for a parcel is not the model's to choose: asked, refused, not run.
    assert not {"recommendations", "catalog_search"} & {t.name for t in out.tools}
    assert all(s.kind != "product" for s in out.suggestions)
    assert any(f.startswith("tools: the plan ran what the model left out") for f in out.fell_back)
    # An invented order and date, and an offer the policy does not make: the offline points come back.
    resolve, offer = out.suggestions[:2]
    assert resolve.talking_points == offline.suggestions[0].talking_points
    assert offer.talking_points == offline.suggestions[1].talking_points
    replaced = {n.kind: n for n in out.guardrail_notes if n.action == "replaced"}
    assert {"grounding:ungrounded_number", "grounding:ungrounded_date"} <= set(replaced["resolve"].rules)
    assert "grounding:ungrounded_percentage" in replaced["offer"].rules
    assert "999999" not in out.model_dump_json() and "20%" not in out.model_dump_json()


def test_a_model_that_is_down_leaves_the_offline_answer_and_says_so(
    own_store: Store, recommender: HybridRecommender, retailer: Retailer, shopper: str, tmp_path: Path
) -> None:
    def down() -> openai.APIConnectionError:
        return openai.APIConnectionError(
            request=httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
        )

    offline = support_suggestions(own_store, recommender, retailer.brand, shopper, LATE, now=NOW)
    model, chat = _model([down(), down()], retailer, tmp_path)
    out = support_suggestions(own_store, recommender, retailer.brand, shopper, LATE, now=NOW, model=model)
    assert chat.script == [] and len(chat.requests) == 2, "one failed write stops the asking"
    assert out.suggestions == offline.suggestions
    assert [f.split(":")[0] for f in out.fell_back] == ["tools", "points"]
    assert "APIConnectionError" in out.fell_back[0]


def test_the_scripted_chat_fails_when_its_script_runs_out() -> None:
    chat = ScriptedChat(["only answer"])
    assert chat.chat.completions.create(model="m", messages=[]).choices[0].message.content == "only answer"
    with pytest.raises(AssertionError, match="ran out of script after 1 requests"):
        chat.chat.completions.create(model="m", messages=[])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            '{"points": ["Chase order 536365 today.", "ok", "Chase order 536365 today."]}',
            ("Chase order 536365 today.",),
        ),
        ('{"points": ["  Say   sorry for the wait.  "]}', ("Say sorry for the wait.",)),
    ],
)
def test_talking_points_are_read_from_the_call_and_tidied(raw: str, expected: tuple[str, ...]) -> None:
    assert parse_points(raw) == expected


@pytest.mark.parametrize(
    "raw", ['{"points": ["ok"]}', '{"text": "hi"}', "Sure! Here are points", '["a b c d e f g h"]']
)
def test_unusable_talking_points_are_an_output_error(raw: str) -> None:
    with pytest.raises(LLMOutputError):
        parse_points(raw)


def test_a_model_is_never_told_her_contact_details(
    own_store: Store, recommender: HybridRecommender, retailer: Retailer, shopper: str, tmp_path: Path
) -> None:
    question = "Her parcel is late, she says mail jo.bloggs@example.org or call +44 20 7946 0958"
    n = min(_candidates(own_store, recommender, retailer, shopper, question), 3)
    model, chat = _model(
        ["No tools needed.", *[[("talking_points", {"points": ["Thank her for her patience today."]})]] * n],
        retailer,
        tmp_path,
    )
    out = support_suggestions(own_store, recommender, retailer.brand, shopper, question, now=NOW, model=model)
    assert out.intent == "late_delivery" and chat.script == []
    sent = json.dumps(chat.requests)
    assert "jo.bloggs@example.org" not in sent and "7946" not in sent
    assert "[redacted: email address]" in sent and "[redacted: phone number]" in sent
