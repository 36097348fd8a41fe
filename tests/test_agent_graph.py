"""The email graph end to end on real customers of the demo slice, with the real recommender and rails, under
each of the two retailer configurations."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest

import agent
from agent import AgentDeps, OpenAIWriter, ScriptedWriter, Trigger, run_email_sync
from agent.graph import MERMAID_PATH
from agent.planner import plan_action
from agent.state import ACTIONS, Plan, PlanFact
from agent.writers import EmailCopy
from retrieval.recommender import HybridRecommender
from tailor.app.metrics import Metrics, record_outcome
from tailor.core.errors import LLMError, LLMOutputError, LLMTimeoutError
from tailor.core.holdout import in_holdout
from tailor.core.models import Consent, Customer, Event, EventKind, QuietHours
from tailor.core.settings import Settings
from tailor.data.store import Store
from tests.openai_endpoint import chat, copy_replies, fail, good_part, scripted_endpoint
from tests.retailers import Retailer

NOW = datetime(2011, 12, 10, 10, tzinfo=UTC)
NODES = {"load_context", "retrieve", "plan", "generate", "check", "finalize"}


@pytest.fixture(scope="module")
def recommender(retail_store: Store, tmp_path_factory: pytest.TempPathFactory) -> HybridRecommender:
    settings = Settings(data_dir=tmp_path_factory.mktemp("agent"), now=NOW.isoformat())
    return HybridRecommender.build(retail_store, settings)


@pytest.fixture(scope="module")
def sendable(retail_store: Store, recommender: HybridRecommender) -> list[str]:
    """Customers who agreed to both marketing and personalization: the ones an email may go to."""
    ids = [c.id for c in retail_store.customers() if c.consent.marketing_email and c.consent.personalization]
    assert len(ids) >= 3, "the slice should hold a few customers who consented"
    return ids


@pytest.fixture
def deps(retail_store: Store, recommender: HybridRecommender, retailer: Retailer) -> Iterator[AgentDeps]:
    settings = Settings(data_dir=Path("/nonexistent-unused"), now=NOW.isoformat())
    d = AgentDeps(
        store=retail_store, recommender=recommender, settings=settings, brand=retailer.brand, now=NOW
    )
    # The rails load lazily; one warm-up run keeps their first-call cost out of the rail time limit.
    agent.run_email_sync(d, retail_store.customers()[0].id)
    yield d


def test_graph_drawing_matches_the_committed_mermaid() -> None:
    assert MERMAID_PATH.read_text(encoding="utf-8") == agent.mermaid(), (
        "the graph changed: regenerate agent/graph.mmd with "
        '`python -c \'import agent; open("agent/graph.mmd","w").write(agent.mermaid())\'`'
    )


def test_mermaid_has_every_node_and_the_revise_loop() -> None:
    text = agent.mermaid()
    for node in [*NODES, "revise", "fallback"]:
        assert f"\t{node}({node})" in text
    assert "revise --> check" in text and "check -.-> fallback" in text


@pytest.mark.slow
def test_template_emails_for_real_customers_are_grounded_and_pass_every_rail(
    deps: AgentDeps, sendable: list[str]
) -> None:
    sent = 0
    for cid in sendable[:6]:
        out = run_email_sync(deps, cid)
        assert (out.email is None) != (out.refusal is None)
        assert out.audit[0]["node"] == "load_context"
        assert out.plan is not None
        if out.email is None:
            assert out.refusal is not None and out.refusal.reason == "nothing_relevant"
            assert out.plan.action == "nothing" and out.plan.refused == "nothing_relevant"
            assert {a.action for a in out.plan.rejected} == set(ACTIONS) - {"nothing"}
            continue
        sent += 1
        assert {a["node"] for a in out.audit} >= NODES
        assert out.verdicts and all(v.passed for v in out.verdicts)
        assert out.plan.action != "nothing" and out.plan.refused is None
        assert {a.action for a in out.plan.rejected} == set(ACTIONS) - {out.plan.action}
        assert all(a.why for a in out.plan.rejected)
        assert [p.item_id for p in out.email.products] == [p.item_id for p in out.plan.products]
        for product in out.email.products:
            item = deps.catalog[product.item_id]
            assert product.price_text == item.price_text and product.url == item.url
            assert item.title in out.email.body_text and item.url in out.email.body_html
        assert deps.brand.unsubscribe_link(cid) in out.email.body_text
        # Sent under the retailer it was written for: its sign-off, address and links, none of another's.
        assert deps.brand.sign_off in out.email.body_text and deps.brand.postal_address in out.email.body_text
        assert all(
            p.url.startswith(f"https://{deps.brand.allowed_link_domains[0]}/") for p in out.email.products
        )
        generate = next(a for a in out.audit if a["node"] == "generate")
        assert "copy.subject@v1" in generate["prompts"]
    assert sent >= 2


def _refused_plan(plan: Plan | None, reason: str, fact: str) -> Plan:
    """A refused run's plan: "nothing", the rule that stopped it, its findings as evidence, every other
    action rejected at 0 with that rule as the reason."""
    assert plan is not None and plan.action == "nothing" and plan.refused == reason
    assert plan.score == 0 and not plan.products and reason.replace("_", " ") in plan.reason
    assert [a.action for a in plan.rejected] == [a for a in ACTIONS if a != "nothing"]
    assert all(a.score == 0 and reason.replace("_", " ") in a.why for a in plan.rejected)
    assert plan.evidence and all(isinstance(e, PlanFact) and e.kind == fact for e in plan.evidence)
    return plan


def test_customer_without_marketing_consent_is_refused_before_any_profiling(
    retail_store: Store, deps: AgentDeps
) -> None:
    refused = next(c for c in retail_store.customers() if not c.consent.marketing_email)
    out = run_email_sync(deps, refused.id)
    assert out.email is None and out.refusal is not None
    assert out.refusal.reason == "no_marketing_consent"
    assert [a["node"] for a in out.audit] == ["load_context", "plan", "finalize"]
    plan = _refused_plan(out.plan, "no_marketing_consent", "consent")
    assert any("marketing email" in e.summary for e in plan.evidence)
    assert out.audit[1]["refused"] == "no_marketing_consent" and out.audit[1]["action"] == "nothing"


def test_a_customer_in_the_holdout_group_is_refused_as_such_and_no_other_is(
    deps: AgentDeps, sendable: list[str]
) -> None:
    salt = "agent-test"
    held = next(c for c in sendable if in_holdout(c, 0.5, salt))
    kept = next(c for c in sendable if not in_holdout(c, 0.5, salt))
    deps.settings = deps.settings.model_copy(update={"holdout_share": 0.5, "holdout_salt": salt})
    out = run_email_sync(deps, held)
    assert out.email is None and out.refusal is not None and out.refusal.reason == "holdout"
    assert [a["node"] for a in out.audit] == ["load_context", "plan", "finalize"], "nothing read or written"
    _refused_plan(out.plan, "holdout", "holdout")
    sent = run_email_sync(deps, kept)
    assert sent.refusal is None or sent.refusal.reason != "holdout"


def test_unknown_customer_is_a_refusal_not_a_crash(deps: AgentDeps) -> None:
    out = run_email_sync(deps, "no-such-customer")
    assert out.refusal is not None and out.refusal.reason == "unknown_customer"
    assert "no-such-customer" in out.refusal.detail
    plan = _refused_plan(out.plan, "unknown_customer", "unknown_customer")
    assert "no-such-customer" in plan.evidence[0].summary


def test_contacted_too_recently_is_refused(deps: AgentDeps, sendable: list[str]) -> None:
    deps.contacts = lambda _cid: [NOW - timedelta(days=1)]
    out = run_email_sync(deps, sendable[0])
    assert out.refusal is not None and out.email is None
    assert out.refusal.reason == "frequency_cap"
    assert out.refusal.data["all"] == ["frequency_cap"]
    assert [a["node"] for a in out.audit] == ["load_context", "plan", "finalize"]
    assert out.audit[0]["refusal"] == "frequency_cap"
    plan = _refused_plan(out.plan, "frequency_cap", "frequency_cap")
    assert f"{NOW - timedelta(days=1):%Y-%m-%d}" in plan.evidence[0].summary


def test_quiet_hours_are_refused_with_a_plan_that_says_the_local_time(
    retail_store: Store, deps: AgentDeps, sendable: list[str], tmp_path: Path
) -> None:
    """A real customer of the slice, given quiet hours around NOW (10:00 in London), in a store of theirs."""
    store = Store(tmp_path / "quiet.db")
    try:
        quiet = retail_store.get_customer(sendable[0]).model_copy(
            update={"quiet_hours": QuietHours(start=time(9), end=time(11)), "timezone": "Europe/London"}
        )
        store.upsert_customers([quiet])
        local = AgentDeps(
            store=store,
            recommender=deps.recommender,
            settings=deps.settings,
            brand=deps.brand,
            now=NOW,
            catalog=deps.catalog,
        )
        out = run_email_sync(local, quiet.id)
    finally:
        store.close()
    assert out.email is None and out.refusal is not None and out.refusal.reason == "quiet_hours"
    assert [a["node"] for a in out.audit] == ["load_context", "plan", "finalize"]
    plan = _refused_plan(out.plan, "quiet_hours", "quiet_hours")
    assert "10:00" in plan.evidence[0].summary and "09:00-11:00" in plan.evidence[0].summary


def _template_copy(deps: AgentDeps, cid: str) -> tuple[EmailCopy, list[str]]:
    out = run_email_sync(deps, cid)
    assert out.email is not None and out.plan is not None
    reasons = {p.item_id: p.reason for p in out.email.products}
    name = deps.store.get_customer(cid).first_name
    intro = f"Hello {name}, we picked these with what you have bought from us in mind."
    return EmailCopy(
        subject=out.email.subject, preheader=out.email.preheader, intro=intro, reasons=reasons
    ), [p.item_id for p in out.plan.products]


def _first_sent(deps: AgentDeps, sendable: list[str]) -> str:
    for cid in sendable:
        if run_email_sync(deps, cid).email is not None:
            return cid
    raise AssertionError("no consenting customer got an email")


def test_a_bad_draft_is_revised_once_for_its_failing_parts_with_hints(
    deps: AgentDeps, sendable: list[str]
) -> None:
    cid = _first_sent(deps, sendable)
    good, _ = _template_copy(deps, cid)
    bad = good.model_copy(update={"subject": "ACT NOW!!! 90% OFF everything, only £0.01"})
    deps.writer = ScriptedWriter([bad, good])
    out = run_email_sync(deps, cid)
    assert out.email is not None, out.refusal
    assert out.email.subject == good.subject and out.email.fallback_parts == ()
    assert [a["node"] for a in out.audit].count("revise") == 1
    writer = deps.writer
    assert isinstance(writer, ScriptedWriter) and len(writer.calls) == 2
    # Only the failing part is asked for again, with hints in the writer's words, not the rails' findings.
    revision = writer.calls[1]
    assert revision.parts == ("subject",) and revision.previous == bad
    assert revision.hints["subject"] and not any("ACT NOW" in h for h in revision.hints["subject"])


def test_a_draft_still_bad_after_revision_falls_back_to_the_template_for_that_part(
    deps: AgentDeps, sendable: list[str]
) -> None:
    cid = _first_sent(deps, sendable)
    good, items = _template_copy(deps, cid)
    invented = good.model_copy(
        update={
            "reasons": {**good.reasons, items[0]: "Now only £0.01 with code FREE99, see https://evil.test/x"}
        }
    )
    deps.writer = ScriptedWriter([invented, invented])
    out = run_email_sync(deps, cid)
    assert out.email is not None
    assert out.email.fallback_parts == (f"reason:{items[0]}",)
    # Labelled as written: the writer's parts and the template's one, never the writer's alone.
    assert out.email.writer == "scripted+template"
    assert out.email.part_writers[f"reason:{items[0]}"] == "template"
    assert out.email.part_writers["subject"] == out.email.part_writers["intro"] == "scripted"
    assert "evil.test" not in out.email.body_html and "£0.01" not in out.email.body_text
    assert out.email.products[0].reason and out.email.products[0].reason != invented.reasons[items[0]]
    assert [a["node"] for a in out.audit][-3:] == ["fallback", "check", "finalize"]
    because = next(a for a in out.audit if a["node"] == "fallback")["because"]
    assert list(because) == [f"reason:{items[0]}"] and "grounding" in because[f"reason:{items[0]}"]


def test_a_writer_that_times_out_falls_back_entirely_and_says_so(
    deps: AgentDeps, sendable: list[str]
) -> None:
    cid = _first_sent(deps, sendable)
    deps.writer = ScriptedWriter([LLMTimeoutError("model endpoint timed out after 20 s")])
    out = run_email_sync(deps, cid)
    assert out.email is not None
    assert "subject" in out.email.fallback_parts and "intro" in out.email.fallback_parts
    fallback = next(a for a in out.audit if a["node"] == "fallback")
    assert "timed out" in fallback["writer_error"]
    assert fallback["because"] == {p: ["writer_error"] for p in fallback["parts"]}


def test_scripted_writer_fails_when_its_script_runs_out(deps: AgentDeps, sendable: list[str]) -> None:
    cid = _first_sent(deps, sendable)
    deps.writer = ScriptedWriter([])
    with pytest.raises(AssertionError, match="ran out of script"):
        run_email_sync(deps, cid)


# -- the planner on hand-made histories ----------------------------------------------------------


def _customer() -> Customer:
    return Customer(
        id="1",
        first_name="Ada",
        email="ada@example.test",
        country="United Kingdom",
        consent=Consent(marketing_email=True, personalization=True),
    )


def test_planner_prefers_an_abandoned_cart_and_keeps_the_rest_as_rejected(deps: AgentDeps) -> None:
    item = next(i for i in deps.catalog.values() if i.in_stock)
    cart = Event(
        id="e1",
        customer_id="1",
        kind=EventKind.ADD_TO_CART,
        item_id=item.id,
        timestamp=NOW - timedelta(days=1),
    )
    plan = plan_action(
        trigger=Trigger(kind="abandoned_cart"),
        events=[cart],
        recommendations=[],
        catalog=deps.catalog,
        now=NOW,
    )
    assert plan.action == "abandoned_cart"
    assert [p.item_id for p in plan.products] == [item.id]
    assert plan.evidence[0].event_ids == ("e1",) and plan.refused is None
    assert [(a.action, a.score) for a in plan.rejected] == [
        ("nothing", 0.1),
        ("replenishment", 0.0),
        ("win_back", 0.0),
        ("recommend", 0.0),
    ]
    why = {a.action: a.why for a in plan.rejected}
    assert why["win_back"] == "no purchase on record to win back from"
    assert why["recommend"] == "no relevant item found"


def test_planner_ignores_a_cart_that_was_bought_afterwards(deps: AgentDeps) -> None:
    item = next(i for i in deps.catalog.values() if i.in_stock)
    events = [
        Event(
            id="e1",
            customer_id="1",
            kind=EventKind.ADD_TO_CART,
            item_id=item.id,
            timestamp=NOW - timedelta(days=2),
        ),
        Event(
            id="e2",
            customer_id="1",
            kind=EventKind.PURCHASE,
            item_id=item.id,
            timestamp=NOW - timedelta(days=1),
        ),
    ]
    plan = plan_action(trigger=Trigger(), events=events, recommendations=[], catalog=deps.catalog, now=NOW)
    assert plan.action == "nothing" and plan.reason and plan.refused == "nothing_relevant"
    assert [a.action for a in plan.rejected] == [a for a in ACTIONS if a != "nothing"]
    assert all(a.score == 0 for a in plan.rejected)
    cart_why = next(a.why for a in plan.rejected if a.action == "abandoned_cart")
    assert "1 basket event(s) in the history" in cart_why
    win_back_why = next(a.why for a in plan.rejected if a.action == "win_back")
    assert "last purchase 1 days ago" in win_back_why
    (fact,) = plan.evidence
    assert isinstance(fact, PlanFact) and fact.kind == "history"
    assert fact.event_ids == ("e2", "e1") and "1 purchase(s)" in fact.summary


def test_planner_offers_win_back_after_a_long_silence(deps: AgentDeps, sendable: list[str]) -> None:
    recs = deps.recommender.recommend(sendable[0], 5, now=NOW)
    assert recs
    old = Event(
        id="e1",
        customer_id="1",
        kind=EventKind.PURCHASE,
        item_id=recs[-1].item.id,
        timestamp=NOW - timedelta(days=200),
    )
    plan = plan_action(
        trigger=Trigger(kind="win_back"), events=[old], recommendations=recs, catalog=deps.catalog, now=NOW
    )
    assert plan.action == "win_back" and "200 days" in plan.reason
    scored = [a for a in plan.rejected if a.score > 0]
    assert {a.action for a in scored} == {"recommend", "nothing"}
    assert all(a.score < plan.score for a in plan.rejected)
    zero = {a.action: a.why for a in plan.rejected if a.score == 0}
    assert set(zero) == {"abandoned_cart", "replenishment"}
    assert zero["replenishment"] == "no regularly bought item is due again"


# -- what leaves the graph for the service: metrics, a model that is down, other customers ---------------


def test_metrics_count_what_the_real_graph_blocked_and_replaced(deps: AgentDeps, sendable: list[str]) -> None:
    cid = _first_sent(deps, sendable)
    good, items = _template_copy(deps, cid)
    invented = good.model_copy(update={"reasons": {**good.reasons, items[0]: "Now only £0.01 today."}})
    deps.writer = ScriptedWriter([invented, invented])
    out = run_email_sync(deps, cid)
    assert out.email is not None
    checks = [a for a in out.audit if a["node"] == "check"]
    # An invented price is ungrounded, and says nothing of why this customer might want the product.
    both = ["copy_quality", "grounding"]
    assert [c["blocked"] for c in checks] == [both, both, []]
    metrics = Metrics()
    record_outcome(metrics, out.audit, out.email.fallback_parts)
    assert metrics.value("tailor_guardrail_blocks_total", {"rail": "grounding"}) == 2
    assert metrics.value("tailor_guardrail_blocks_total", {"rail": "copy_quality"}) == 2
    assert metrics.value("tailor_fallbacks_total", {"part": "reason"}) == 1
    assert 'tailor_guardrail_blocks_total{rail="grounding"} 2' in metrics.render()


def test_metrics_count_the_tokens_a_real_endpoint_reports(deps: AgentDeps, sendable: list[str]) -> None:
    cid = _first_sent(deps, sendable)
    good, _ = _template_copy(deps, cid)
    with scripted_endpoint() as ep:
        replies = copy_replies(good, usage=(30, 10))
        ep.script.extend(replies)
        deps.writer = OpenAIWriter(_llm_settings(ep.url, "fallback"))
        out = run_email_sync(deps, cid)
    assert out.email is not None and out.email.writer == "openai" and out.email.fallback_parts == ()
    metrics = Metrics()
    record_outcome(metrics, out.audit)
    # One request per part, each counted.
    assert metrics.value("tailor_llm_tokens_total", {"kind": "prompt"}) == 30 * len(replies)
    assert metrics.value("tailor_llm_tokens_total", {"kind": "completion"}) == 10 * len(replies)
    generate = next(a for a in out.audit if a["node"] == "generate")
    assert generate["tokens"] == 40 * len(replies) and generate["model"] == "m"


def test_an_email_written_wholly_by_the_template_after_a_model_failure_says_so(
    deps: AgentDeps, sendable: list[str]
) -> None:
    cid = _first_sent(deps, sendable)
    with scripted_endpoint() as ep:
        ep.script.extend([fail(500), fail(500)])
        deps.writer = OpenAIWriter(_llm_settings(ep.url, "fallback"))
        out = run_email_sync(deps, cid)
    assert out.email is not None, out.refusal
    assert set(out.email.fallback_parts) == set(out.email.part_writers)
    assert out.email.writer == "template" and set(out.email.part_writers.values()) == {"template"}
    assert {"subject", "preheader", "intro"} <= set(out.email.part_writers)
    assert next(a for a in out.audit if a["node"] == "finalize")["writer"] == "template"


def _llm_settings(url: str, unavailable: Literal["fallback", "defer"]) -> Settings:
    return Settings(
        data_dir=Path("/nonexistent-unused"),
        now=NOW.isoformat(),
        writer="openai",
        llm_base_url=url,
        llm_model="m",
        llm_max_retries=1,
        llm_timeout_s=5,
        llm_unavailable=unavailable,
    )


def test_a_model_endpoint_that_fails_defers_the_email_after_bounded_retries(
    deps: AgentDeps, sendable: list[str]
) -> None:
    cid = _first_sent(deps, sendable)
    with scripted_endpoint() as ep:
        ep.script.extend([fail(500), fail(500)])
        settings = _llm_settings(ep.url, "defer")
        deps.settings = settings
        deps.writer = OpenAIWriter(settings)
        with pytest.raises(LLMError, match="InternalServerError") as info:
            run_email_sync(deps, cid)
        assert not isinstance(info.value, LLMOutputError)
        assert len(ep.requests) == 2 and ep.overruns == 0, "one try and exactly one retry, then defer"


def test_a_model_endpoint_that_fails_falls_back_when_so_configured(
    deps: AgentDeps, sendable: list[str]
) -> None:
    cid = _first_sent(deps, sendable)
    with scripted_endpoint() as ep:
        ep.script.extend([fail(500), fail(500)])
        settings = _llm_settings(ep.url, "fallback")
        deps.settings = settings
        deps.writer = OpenAIWriter(settings)
        out = run_email_sync(deps, cid)
    assert out.email is not None and {"subject", "intro"} <= set(out.email.fallback_parts)
    assert "InternalServerError" in next(a for a in out.audit if a["node"] == "fallback")["writer_error"]


def test_a_model_that_answers_garbage_falls_back_even_when_deferring(
    deps: AgentDeps, sendable: list[str]
) -> None:
    cid = _first_sent(deps, sendable)
    with scripted_endpoint() as ep:
        ep.script.extend([chat("I would rather not write JSON.")] * 12)
        settings = _llm_settings(ep.url, "defer")
        deps.settings = settings
        deps.writer = OpenAIWriter(settings)
        out = run_email_sync(deps, cid)
    assert out.email is not None and "subject" in out.email.fallback_parts
    # One request per part, none of them again: an unusable answer is not retried, and not deferred.
    assert len(ep.requests) == 3 + len(out.email.products) and ep.overruns == 0


def test_a_draft_that_leaks_another_customers_id_is_blocked_and_replaced(
    deps: AgentDeps, sendable: list[str], retail_store: Store
) -> None:
    cid = _first_sent(deps, sendable)
    other = next(c for c in retail_store.customers() if c.id != cid and c.id not in deps.catalog)
    good, items = _template_copy(deps, cid)
    leaky = good.model_copy(
        update={
            "reasons": {
                **good.reasons,
                items[0]: f"Customer {other.id} bought it too, like many of our customers.",
            }
        }
    )
    deps.writer = ScriptedWriter([leaky, leaky])
    out = run_email_sync(deps, cid)
    assert out.email is not None
    first_check = next(a for a in out.audit if a["node"] == "check")
    assert "privacy" in first_check["blocked"]
    assert f"reason:{items[0]}:other_customer" in first_check["verdicts"]["privacy"]
    assert out.email.fallback_parts == (f"reason:{items[0]}",)
    because = next(a for a in out.audit if a["node"] == "fallback")["because"]
    assert because == {f"reason:{items[0]}": ["privacy"]}
    assert other.id not in out.email.body_text and other.id not in out.email.body_html


# -- explanations written by a model ---------------------------------------------------------------


def _explained(deps: AgentDeps, sendable: list[str]) -> tuple[str, str, int]:
    """A customer, an item recommended to them with evidence, and how many sentences its explanation has."""
    for cid in sendable:
        for rec in deps.recommender.recommend(cid, 10, now=NOW):
            if rec.evidence:
                out = agent.explain(
                    deps.store, deps.recommender, deps.settings, deps.brand, cid, rec.item.id, now=NOW
                )
                return cid, rec.item.id, len(out.sentences)
    raise AssertionError("no customer of the slice has a recommendation with evidence")


def test_a_model_writes_the_explanation_sentence_by_sentence_and_the_rails_keep_the_template_for_the_rest(
    deps: AgentDeps, sendable: list[str]
) -> None:
    """Each sentence is asked for one piece of evidence; the model's stands when it passes every rail, copy
    quality included, and says so; a sentence that says nothing of the evidence is the template's."""
    cid, item_id, n = _explained(deps, sendable)
    template = agent.explain(deps.store, deps.recommender, deps.settings, deps.brand, cid, item_id, now=NOW)
    with scripted_endpoint() as ep:
        good = "Customers whose baskets look like yours often choose it, and you have bought it before too."
        ep.script.append(chat(json.dumps({"text": good})))
        ep.script.extend(chat(json.dumps({"text": "You will love it."})) for _ in range(n - 1))
        writer = OpenAIWriter(_llm_settings(ep.url, "fallback"))
        out = agent.explain(
            deps.store, deps.recommender, deps.settings, deps.brand, cid, item_id, now=NOW, writer=writer
        )
    assert len(ep.requests) == n and ep.overruns == 0, "one narrow request per piece of evidence"
    first = out.sentences[0]
    # The first sentence is the model's only if it ties to its own evidence; either way it says who wrote it.
    assert first.writer == ("openai" if first.text == good else "template")
    assert first.evidence == template.sentences[0].evidence
    for model_said, fallback in zip(out.sentences[1:], template.sentences[1:], strict=True):
        assert model_said.writer == "template" and model_said.text == fallback.text
    assert "You will love it." not in out.text


def test_an_unreachable_model_leaves_the_template_explanation_whole(
    deps: AgentDeps, sendable: list[str]
) -> None:
    cid, item_id, _ = _explained(deps, sendable)
    template = agent.explain(deps.store, deps.recommender, deps.settings, deps.brand, cid, item_id, now=NOW)
    writer = OpenAIWriter(_llm_settings("http://127.0.0.1:9/v1", "defer"))
    out = agent.explain(
        deps.store, deps.recommender, deps.settings, deps.brand, cid, item_id, now=NOW, writer=writer
    )
    assert out == template and all(s.writer == "template" for s in out.sentences)


def test_model_sentences_that_pass_alone_but_not_together_give_way_to_the_template_whole(
    deps: AgentDeps, sendable: list[str]
) -> None:
    """Each sentence with one exclamation mark may pass on its own; the explanation is checked whole too,
    and when the model's sentences fail together the template's stand, never a refusal."""
    cid, item_id, n = _explained(deps, sendable)
    template = agent.explain(deps.store, deps.recommender, deps.settings, deps.brand, cid, item_id, now=NOW)

    def shouted(request: dict[str, Any]) -> str:
        return json.dumps({"text": json.loads(good_part(request))["text"].rstrip(".") + "!"})

    with scripted_endpoint() as ep:
        ep.script.extend(chat(shouted) for _ in range(n))
        writer = OpenAIWriter(_llm_settings(ep.url, "fallback"))
        out = agent.explain(
            deps.store, deps.recommender, deps.settings, deps.brand, cid, item_id, now=NOW, writer=writer
        )
    assert len(ep.requests) == n
    if n >= 2 or deps.brand.max_exclamation_marks == 0:
        assert out == template and out.text.count("!") <= deps.brand.max_exclamation_marks
    else:
        assert out.text.count("!") <= deps.brand.max_exclamation_marks


def test_a_part_is_drawn_again_until_its_rails_pass_and_only_then_revised(
    deps: AgentDeps, sendable: list[str]
) -> None:
    """With ``llm_draws`` 2, a subject that the rails would stop (a blank) is drawn once more in the same
    try, and the second draw, which passes, is what goes out: no revision, the model's own subject, and
    the audit counts the draws. A part whose draws all fail goes to the revise loop as before."""
    cid = _first_sent(deps, sendable)
    good, _ = _template_copy(deps, cid)
    replies = copy_replies(good)
    with scripted_endpoint() as ep:
        ep.script.append(chat(json.dumps({"text": "{first_name}, picked for you"})))
        ep.script.extend(replies)
        deps.writer = OpenAIWriter(_llm_settings(ep.url, "fallback").model_copy(update={"llm_draws": 2}))
        out = run_email_sync(deps, cid)
        assert ep.overruns == 0 and not ep.script
    assert out.email is not None and out.email.writer == "openai" and out.email.subject == good.subject
    assert [a["node"] for a in out.audit if a["node"] in ("revise", "fallback")] == []
    generate = next(a for a in out.audit if a["node"] == "generate")
    assert generate["draws"]["subject"] == 2 and generate["draws"]["preheader"] == 1
    assert generate["unscreened"] == [] and ep.requests[1].get("seed") == 1
