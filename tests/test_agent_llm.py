"""The agent with a real (tiny) model: SmolLM2-135M-Instruct served by llama.cpp on 127.0.0.1.

Whatever the model writes, what leaves the agent is grounded and passes every rail, or the failing parts
were replaced by the template writer's and the audit says which."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from agent import AgentDeps, OpenAIWriter, run_email_sync
from agent.writers import CopyRequest, ProductFacts
from retrieval.recommender import HybridRecommender
from tailor.core.settings import Settings
from tailor.data.store import Store
from tests.llm_server import MODELS, llm_server
from tests.retailers import HEARTH

pytestmark = [pytest.mark.slow, pytest.mark.llm]

NOW = datetime(2011, 12, 10, 10, tzinfo=UTC)


@pytest.fixture(scope="module", params=sorted(MODELS))
def llm_deps(
    slice_store: Store, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[AgentDeps]:
    """The agent with each local model the harness serves (SmolLM2-135M-Instruct, Gemma 3 270M)."""
    data = tmp_path_factory.mktemp("agent-llm")
    with llm_server(model=request.param) as server:
        settings = Settings(
            data_dir=data,
            now=NOW.isoformat(),
            writer="openai",
            llm_base_url=server.base_url,
            llm_model=server.model,
            llm_timeout_s=180,
            llm_max_retries=0,
            llm_max_tokens=200,
            llm_json_schema=True,
        )
        recommender = HybridRecommender.build(slice_store, settings)
        yield AgentDeps(
            brand=HEARTH,
            store=slice_store,
            recommender=recommender,
            settings=settings,
            writer=OpenAIWriter(settings),
            now=NOW,
        )


def test_llm_emails_for_real_customers_are_grounded_or_logged_fallbacks(
    llm_deps: AgentDeps, slice_store: Store
) -> None:
    customers = [
        c.id for c in slice_store.customers() if c.consent.marketing_email and c.consent.personalization
    ]
    checked = 0
    for cid in customers[:2]:
        out = run_email_sync(llm_deps, cid)
        nodes = [a["node"] for a in out.audit]
        assert nodes[-1] == "finalize"
        if out.email is None:
            assert out.refusal is not None and out.refusal.reason in ("nothing_relevant", "guardrail_blocked")
            continue
        checked += 1
        # Released only after the last check passed every rail.
        assert out.verdicts and all(v.passed for v in out.verdicts)
        generate = next(a for a in out.audit if a["node"] == "generate")
        assert generate["writer"] == "openai"
        assert generate["model"] == llm_deps.settings.llm_model or generate["error"]
        assert generate["prompts"] == ["llm.copy_part.system@v2", "llm.copy_part@v1"] or generate["error"]
        # The copy-quality rail was among the rails every released part passed.
        assert "copy_quality" in {v.rail for v in out.verdicts}
        # Parts that did not survive are named, in the email and in the audit: replaced by the fallback
        # node, or never written (the model's answer for them was unusable, recorded by generate/revise).
        if out.email.fallback_parts:
            replaced = {p for a in out.audit if a["node"] == "fallback" for p in a["parts"]}
            unwritten = {p for a in out.audit if a["node"] in ("generate", "revise") for p in a["unwritten"]}
            assert set(out.email.fallback_parts) <= replaced | unwritten
        # Names, prices and links come from the catalog whatever the model wrote.
        for product in out.email.products:
            item = llm_deps.catalog[product.item_id]
            assert product.title == item.title and product.price_text == item.price_text
            assert f"{item.title} ({item.price_text})" in out.email.body_text
        assert llm_deps.brand.unsubscribe_link(cid) in out.email.body_text
        assert all(
            u.startswith("https://example-retail.test/") for u in out.email.body_html.split('href="')[1:]
        )
    assert checked >= 1


def test_llm_prompt_never_carries_prices_or_links(llm_deps: AgentDeps, slice_store: Store) -> None:
    writer = llm_deps.writer
    assert isinstance(writer, OpenAIWriter)
    cid = next(c.id for c in slice_store.customers() if c.consent.personalization)
    recs = llm_deps.recommender.recommend(cid, 3, now=NOW)
    request = CopyRequest(
        action="recommend",
        first_name="Ada",
        products=tuple(
            ProductFacts(item_id=r.item.id, title=r.item.title, category=r.item.category) for r in recs
        ),
    )
    prompts = [writer.prompt(request, llm_deps.brand, part) for part in request.all_parts]
    assert not any("£" in p or "https://" in p for p in prompts)
    # The subject's request names every product; each reason's, its own.
    assert all(r.item.title in prompts[0] for r in recs)
    for r, prompt in zip(recs, prompts[3:], strict=True):
        assert prompt.rsplit("<<<DATA", 1)[1].count("Product:") == 1 and r.item.title in prompt
