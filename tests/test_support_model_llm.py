"""The support agent thinking with a real (tiny) model: SmolLM2-135M-Instruct served by llama.cpp on
127.0.0.1 with its tool-calling chat format, through the whole tool loop.

Whatever tools the model picks and whatever it writes, the answer cites her own facts, offers only what the
retailer's policy allows for the problem, and every talking point the model wrote stands on its
suggestion's evidence; where the model's work was not used, the answer says why."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent import support_suggestions
from agent.nodes.guard import held_to_evidence
from agent.support_model import OpenAISupportModel
from agent.support_tools import ALLOWED
from guardrails.base import RailContext
from retrieval.recommender import HybridRecommender
from tailor.core.models import EventKind
from tailor.core.settings import Settings
from tailor.data.store import Store
from tests.llm_server import LLMServer, llm_server
from tests.retailers import Retailer

pytestmark = [pytest.mark.slow, pytest.mark.llm]

NOW = datetime(2011, 12, 10, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServer]:
    with llm_server(model="smollm2", chat_format="chatml-function-calling") as running:
        yield running


def test_a_real_model_through_the_tool_loop_answers_from_her_facts_within_policy(
    server: LLMServer, retail_store: Store, retailer: Retailer, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        now=NOW.isoformat(),
        writer="openai",
        llm_base_url=server.base_url,
        llm_model=server.model,
        llm_timeout_s=120,
        llm_max_retries=0,
    )
    recommender = HybridRecommender.build(retail_store, settings)
    model = OpenAISupportModel(settings, retailer.brand)
    shopper = next(
        c.id
        for c in retail_store.customers()
        if c.consent.personalization
        and len({e.order_id for e in retail_store.events(c.id, kinds=[EventKind.PURCHASE], until=NOW)}) >= 2
    )
    question = "She's upset her order was late, what can I offer?"
    out = support_suggestions(
        retail_store, recommender, retailer.brand, shopper, question, now=NOW, model=model
    )
    offline = support_suggestions(retail_store, recommender, retailer.brand, shopper, question, now=NOW)

    assert out.thinker == f"openai:{server.model}" and out.intent == "late_delivery"
    # The model's tool picks ran only where its question allows them; what it left out, the plan ran.
    picked = {t.name.split(":")[0] for t in out.tools if t.by == "model"}
    assert picked <= ALLOWED["late_delivery"]
    assert {"returns", "ticket", "policy"} <= {t.name for t in out.tools}
    # The same suggestions on the same evidence as offline: the model writes their points, no more.
    assert [(s.kind, s.title, s.evidence) for s in out.suggestions] == [
        (s.kind, s.title, s.evidence) for s in offline.suggestions
    ]
    cited = retail_store.get_events([i for s in out.suggestions for e in s.evidence for i in e.event_ids])
    assert cited and all(e.customer_id == shopper and e.timestamp < NOW for e in cited)
    assert all(s.kind != "product" for s in out.suggestions)
    text = " ".join(p for s in out.suggestions for p in s.talking_points)
    assert not any(o in text for o in retailer.brand.allowed_offers), "marketing offers are no amends"
    # Every point is the offline one or a model's that stands on its suggestion's evidence.
    context = RailContext(
        customer=retail_store.get_customer(shopper),
        catalog=recommender.catalog,
        brand=retailer.brand,
        now=NOW,
        purpose="support",
    )
    offers = retailer.brand.offers_for("late_delivery")
    for mine, theirs in zip(out.suggestions, offline.suggestions, strict=True):
        if mine.talking_points == theirs.talking_points:
            continue
        _, note, failed = held_to_evidence(
            mine, theirs.talking_points, context, offers if mine.kind == "offer" else ()
        )
        assert note is None and failed == [], (mine.talking_points, failed)
    used = sum(
        s.talking_points != o.talking_points
        for s, o in zip(out.suggestions, offline.suggestions, strict=True)
    )
    # Where the model's points were not used, the answer says why.
    assert used == len(out.suggestions) or out.fell_back, out
