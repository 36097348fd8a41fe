"""The generation eval through the real agent (template writer), recommender and rails on the demo slice."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent import AgentDeps
from evals.generation import (
    GenerationEval,
    flesch_reading_ease,
    independent_grounding,
    jaccard_distance,
    sentence_problems,
    syllables,
)
from retrieval.recommender import HybridRecommender
from tailor.core.errors import DataError
from tailor.core.models import (
    Consent,
    Customer,
    Email,
    EmailProduct,
    Event,
    EventKind,
    Evidence,
    ExplanationSentence,
    Item,
)
from tailor.core.settings import Settings
from tailor.data.store import Store
from tests.retailers import HEARTH

NOW = datetime(2011, 12, 10, 10, tzinfo=UTC)


def test_readability_and_distinctness_measures() -> None:
    assert [syllables(w) for w in ("cat", "table", "beautiful", "make")] == [1, 2, 3, 1]
    easy = flesch_reading_ease("The cat sat. The dog ran. We had fun.")
    hard = flesch_reading_ease(
        "Personalisation considerations notwithstanding, organisational interoperability"
        " necessitates deliberation."
    )
    assert easy > 90 > 0 > hard
    assert jaccard_distance("a b c", "a b c") == 0.0
    assert jaccard_distance("a b", "c d") == 1.0
    assert jaccard_distance("a b c", "a b d") == pytest.approx(0.5)
    with pytest.raises(DataError, match="no words"):
        flesch_reading_ease("123 456")


@pytest.mark.slow
def test_generation_eval_on_the_slice(slice_store: Store, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", now=NOW.isoformat())
    recommender = HybridRecommender.build(slice_store, settings)
    deps = AgentDeps(store=slice_store, recommender=recommender, settings=settings, brand=HEARTH, now=NOW)
    ev = GenerationEval(deps, n=4, seed=3, out_dir=tmp_path / "out")
    assert ev.customers() == GenerationEval(deps, n=4, seed=3).customers()  # seeded sample
    out = ev.run()
    assert out["generation.customers"] == 4
    assert out["generation.refusal_or_email_rate"] == 1.0
    assert out["generation.email_rate"] + out["generation.refusal_rate"] == pytest.approx(1.0)
    assert out["generation.email_rate"] > 0, "consented customers of the slice should get an email"
    assert out["generation.grounding.violation_rate"] == 0.0  # the template writer is grounded by design
    assert out["generation.independent_grounding.violation_rate"] == 0.0  # and the eval's own check agrees
    # Explanations are judged for every product of every email, not the first one only.
    emails = out["generation.email_rate"] * out["generation.customers"]
    assert out["generation.explanation.products"] > emails
    assert out["generation.explanation.faithfulness"] == 1.0, [
        json.loads(line)["unfaithful"] for line in (tmp_path / "out/generation_samples.jsonl").open()
    ]
    assert 0.0 < out["generation.personalization.pairwise_jaccard"] <= 1.0
    assert out["generation.tokens_per_email"] == 0.0  # no LLM, no tokens
    assert out["generation.subject.chars"] > 0
    assert any(k.startswith("generation.rails.") for k in out)
    if "generation.explanation.faithfulness" in out:
        assert 0.0 <= out["generation.explanation.faithfulness"] <= 1.0
    lines = (tmp_path / "out/generation_samples.jsonl").read_text().splitlines()
    assert len(lines) == 4 and {json.loads(x)["customer_id"] for x in lines} == set(ev.customers())
    arts = ev.artifacts()
    assert len(arts["generation_latency"]["values"]["email"]) == 4


def _history_store(store: Store) -> dict[str, Item]:
    items = {
        i.id: i
        for i in (
            Item(
                id="A1",
                title="Blue Enamel Teapot",
                category="kitchen",
                price=12.5,
                url="https://example-retail.test/p/A1",
            ),
            Item(
                id="B2",
                title="Red Spotty Mug Set",
                category="kitchen",
                price=6.0,
                url="https://example-retail.test/p/B2",
            ),
            Item(
                id="C3",
                title="Garden Lantern Large",
                category="garden",
                price=20.0,
                url="https://example-retail.test/p/C3",
            ),
        )
    }
    store.upsert_items(items.values())
    store.upsert_customers(
        [
            Customer(
                id="c1",
                first_name="Ann",
                email="ann@example.test",
                country="UK",
                consent=Consent(marketing_email=True, personalization=True),
            ),
            Customer(id="c2", first_name="Bo", email="bo@example.test", country="UK"),
        ]
    )
    store.add_events(
        [
            Event(
                id="e1",
                customer_id="c1",
                kind=EventKind.PURCHASE,
                item_id="A1",
                order_id="o1",
                timestamp=datetime(2011, 10, 3, 9, tzinfo=UTC),
            ),
            Event(
                id="e2",
                customer_id="c1",
                kind=EventKind.PURCHASE,
                item_id="A1",
                order_id="o2",
                timestamp=datetime(2011, 11, 7, 9, tzinfo=UTC),
            ),
            Event(
                id="e3",
                customer_id="c1",
                kind=EventKind.PURCHASE,
                item_id="B2",
                order_id="o2",
                timestamp=datetime(2011, 11, 7, 9, tzinfo=UTC),
            ),
            Event(
                id="e9",
                customer_id="c2",
                kind=EventKind.PURCHASE,
                item_id="C3",
                order_id="o9",
                timestamp=datetime(2011, 11, 8, 9, tzinfo=UTC),
            ),
        ]
    )
    return items


def _problems(store: Store, items: dict[str, Item], item_id: str, text: str, ev: Evidence) -> list[str]:
    ids = list(ev.event_ids)
    return sentence_problems(
        ExplanationSentence(text=text, evidence=(ev,)),
        customer_id="c1",
        item_id=item_id,
        catalog=items,
        events={e.id: e for e in store.get_events(ids) if e.id},
        history=store.events("c1", kinds=(EventKind.PURCHASE,)),
    )


def test_faithfulness_checks_that_the_evidence_supports_the_sentence(fresh_store: Store) -> None:
    items = _history_store(fresh_store)
    regular = Evidence(
        kind="repeat_purchase",
        summary="bought 2 times, last on 2011-11-07",
        event_ids=("e1", "e2"),
        item_ids=("A1",),
    )
    good = (
        "Blue Enamel Teapot is one of your regulars (bought 2 times, last on 2011-11-07),"
        " so it may be due again."
    )
    assert _problems(fresh_store, items, "A1", good, regular) == []
    # The same evidence under sentences it does not support:
    wrong_date = good.replace("2011-11-07", "2011-12-01")
    assert any("date 2011-12-01" in p for p in _problems(fresh_store, items, "A1", wrong_date, regular))
    too_many = good.replace("bought 2 times", "bought 9 times")
    assert any("bought 9 times" in p for p in _problems(fresh_store, items, "A1", too_many, regular))
    other_item = Evidence(
        kind="repeat_purchase",
        summary="bought 1 time, last on 2011-11-07",
        event_ids=("e3",),
        item_ids=("B2",),
    )
    assert any("no purchase of A1" in p for p in _problems(fresh_store, items, "A1", good, other_item))
    similar = Evidence(
        kind="similar_customers",
        summary="often bought by customers who also bought Red Spotty Mug Set",
        event_ids=("e3",),
        item_ids=("B2",),
    )
    said = "Blue Enamel Teapot is often bought by customers who also bought Red Spotty Mug Set."
    assert _problems(fresh_store, items, "A1", said, similar) == []
    # Naming an item the customer never bought, with evidence that does not cite it:
    lie = "Blue Enamel Teapot is often bought by customers who also bought Garden Lantern Large."
    assert any("Garden Lantern Large" in p for p in _problems(fresh_store, items, "A1", lie, similar))
    # Someone else's purchase cited as this customer's history:
    theirs = Evidence(
        kind="similar_customers",
        summary="often bought by customers who also bought Garden Lantern Large",
        event_ids=("e9",),
        item_ids=("C3",),
    )
    found = _problems(fresh_store, items, "A1", lie, theirs)
    assert any("not this customer's" in p for p in found)
    missing = Evidence(
        kind="repeat_purchase", summary="bought 2 times", event_ids=("nope",), item_ids=("A1",)
    )
    assert any("does not exist" in p for p in _problems(fresh_store, items, "A1", good, missing))
    assert sentence_problems(
        ExplanationSentence(text="Nice.", evidence=()),
        customer_id="c1",
        item_id="A1",
        catalog=items,
        events={},
        history=[],
    ) == ["cites no evidence"]


def test_independent_grounding_catches_what_the_agent_let_through(fresh_store: Store) -> None:
    items = _history_store(fresh_store)
    brand = HEARTH
    customer = fresh_store.get_customer("c1")
    history = fresh_store.events("c1")

    def email(body: str, price: str = "£12.50") -> Email:
        product = EmailProduct(
            item_id="A1",
            title="Blue Enamel Teapot",
            price_text=price,
            url="https://example-retail.test/p/A1",
            reason="One of your regulars.",
        )
        return Email(
            customer_id="c1",
            action="replenishment",
            subject="Time for tea",
            preheader="A regular",
            body_text=body,
            body_html="<p>" + body + "</p>",
            products=(product,),
            writer="scripted",
        )

    grounded = email(f"Hello Ann, Blue Enamel Teapot {items['A1'].price_text}, last bought on 2011-11-07.")
    assert independent_grounding(grounded, customer, items, history, brand) == []
    wrong_price = email("Hello Ann, Blue Enamel Teapot now only £3.00.")
    assert any(
        "ungrounded_price" in p for p in independent_grounding(wrong_price, customer, items, history, brand)
    )
    made_up_date = email("Hello Ann, you last bought it on 2011-12-25.")
    assert any(
        "ungrounded_date" in p for p in independent_grounding(made_up_date, customer, items, history, brand)
    )
    other = email("Hello Ann, also see Garden Lantern Large.")
    assert any(
        "unplanned_product" in p for p in independent_grounding(other, customer, items, history, brand)
    )
    bad_line = email("Hello Ann.", price="£1.00")
    assert any("price" in p for p in independent_grounding(bad_line, customer, items, history, brand))
