"""Exploration (``agent.exploration``): epsilon-greedy over the qualified actions and one product slot, with
exact propensities, fixed per decision key; and through the real graph, where an explored email passes every
rail like any other, under each of the two retailer configurations."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent import AgentDeps, run_email_sync
from agent.exploration import Exploration, draws, epsilon_propensity
from agent.planner import plan_action
from agent.state import Plan, Trigger
from retrieval.recommender import HybridRecommender
from tailor.core.models import Event, EventKind, Evidence, Item, Recommendation
from tailor.core.settings import Settings
from tailor.data.store import Store
from tests.retailers import Retailer

NOW = datetime(2011, 12, 10, 10, tzinfo=UTC)


def _items(n: int) -> dict[str, Item]:
    return {
        f"i{k}": Item(
            id=f"i{k}", title=f"Blue mug {k}", price=4.5, url=f"https://shop.test/p/i{k}", category="mugs"
        )
        for k in range(n)
    }


def _recs(catalog: dict[str, Item]) -> list[Recommendation]:
    return [
        Recommendation(
            item=item,
            score=1.0 - k / 10,
            rank=k + 1,
            sources=("collab",),
            evidence=(
                Evidence(
                    kind="similar_customers", summary="bought by similar customers", item_ids=(item.id,)
                ),
            ),
        )
        for k, item in enumerate(catalog.values())
    ]


def _plan(
    customer: str, share: float, key: str = "job:1", *, silent_days: int = 200, cart: bool = True
) -> Plan:
    """A customer who qualifies for three email actions: a basket, a win-back (``silent_days`` since their
    last purchase) and a recommendation, over eight ranked items."""
    catalog = _items(8)
    events = [
        Event(
            id="p1",
            customer_id=customer,
            kind=EventKind.PURCHASE,
            item_id="i7",
            timestamp=NOW - timedelta(days=silent_days),
        )
    ]
    if cart:
        events.append(
            Event(
                id="c1",
                customer_id=customer,
                kind=EventKind.ADD_TO_CART,
                item_id="i6",
                timestamp=NOW - timedelta(days=2),
            )
        )
    return plan_action(
        trigger=Trigger(),
        events=events,
        recommendations=_recs(catalog),
        catalog=catalog,
        now=NOW,
        exploration=Exploration(share=share, salt="salt", key=key),
        customer_id=customer,
    )


def test_without_exploration_the_planner_chooses_alone_with_probability_one() -> None:
    for share in (0.0, None):
        plan = (
            _plan("c1", 0.0)
            if share is not None
            else plan_action(trigger=Trigger(), events=[], recommendations=[], catalog={}, now=NOW)
        )
        assert plan.propensity == 1.0 and not plan.explored and plan.slot is None
        assert plan.greedy == plan.action


def test_explored_actions_come_at_their_logged_probabilities() -> None:
    share, n = 0.3, 3000
    plans = [_plan(f"c{k}", share) for k in range(n)]
    greedy = plans[0].greedy
    assert greedy == "abandoned_cart" and all(p.greedy == greedy for p in plans)
    counts = Counter(p.action for p in plans)
    # Three email actions qualify; "nothing" is never explored into while an email qualifies.
    assert set(counts) == {"abandoned_cart", "win_back", "recommend"}
    for action, seen in counts.items():
        expected = epsilon_propensity(share, 3, greedy=action == greedy)
        assert {p.propensity for p in plans if p.action == action} == {expected}
        # Within five standard errors of the binomial draw: the draws are what the log says they are.
        assert abs(seen / n - expected) < 5 * math.sqrt(expected * (1 - expected) / n)
    assert all(p.explored == (p.action != greedy) for p in plans)
    for p in plans:
        assert {a.action for a in p.rejected} | {p.action} == {
            "abandoned_cart",
            "replenishment",
            "win_back",
            "recommend",
            "nothing",
        }
        assert p.action not in {a.action for a in p.rejected}


def test_the_last_slot_of_a_recommendation_is_drawn_among_the_next_ranked_items() -> None:
    share, n = 0.4, 2000
    plans = [
        p
        for p in (_plan(f"c{k}", share, cart=False) for k in range(n))
        if p.action in ("win_back", "recommend")
    ]
    assert len(plans) == n  # without a basket, both qualifying actions list the ranker's items
    pool = ("i2", "i3", "i4", "i5", "i6", "i7")
    picked = Counter()
    for p in plans:
        assert p.slot is not None and p.slot.index == 2 and p.slot.pool == pool
        assert [x.item_id for x in p.products] == ["i0", "i1", p.slot.item_id]
        assert p.slot.propensity == epsilon_propensity(share, 6, greedy=p.slot.item_id == "i2")
        assert p.slot.explored == (p.slot.item_id != "i2")
        picked[p.slot.item_id] += 1
    for item in pool:
        expected = epsilon_propensity(share, 6, greedy=item == "i2")
        assert abs(picked[item] / n - expected) < 5 * math.sqrt(expected * (1 - expected) / n)
    # A basket lists the customer's own items: never explored.
    basket = [p for p in (_plan(f"c{k}", share) for k in range(200)) if p.action == "abandoned_cart"]
    assert basket and all(p.slot is None for p in basket)


def test_a_decision_draws_the_same_on_a_retry_and_afresh_under_another_key() -> None:
    first = [_plan(f"c{k}", 0.5, "job:a") for k in range(60)]
    again = [_plan(f"c{k}", 0.5, "job:a") for k in range(60)]
    other = [_plan(f"c{k}", 0.5, "job:b") for k in range(60)]
    assert first == again
    assert [(p.action, p.slot) for p in first] != [(p.action, p.slot) for p in other]
    assert draws(Exploration(0.1, "s", "k"), "c1") != draws(Exploration(0.1, "t", "k"), "c1")


def test_a_share_outside_its_bounds_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"exploration share must be in \[0, 0.5\], got 0.7"):
        Exploration(share=0.7)
    with pytest.raises(ValueError, match="at least one option"):
        epsilon_propensity(0.1, 0, greedy=True)


@pytest.fixture(scope="module")
def recommender(retail_store: Store, tmp_path_factory: pytest.TempPathFactory) -> HybridRecommender:
    settings = Settings(data_dir=tmp_path_factory.mktemp("explore"), now=NOW.isoformat())
    return HybridRecommender.build(retail_store, settings)


def test_explored_emails_pass_every_rail_and_the_audit_keeps_their_probability(
    retail_store: Store, recommender: HybridRecommender, retailer: Retailer
) -> None:
    settings = Settings(data_dir=Path("/nonexistent-unused"), now=NOW.isoformat(), explore_share=0.5)
    deps = AgentDeps(
        store=retail_store, recommender=recommender, settings=settings, brand=retailer.brand, now=NOW
    )
    customers = [
        c.id for c in retail_store.customers() if c.consent.marketing_email and c.consent.personalization
    ]
    explored_slots = sent = 0
    for k, cid in enumerate(customers[:20]):
        if explored_slots and sent >= 4:
            break
        deps.decision_key = f"job:explore-{k}"
        out = run_email_sync(deps, cid)
        assert out.plan is not None
        plan_audit = next(a for a in out.audit if a["node"] == "plan")
        assert plan_audit["propensity"] == out.plan.propensity and plan_audit["greedy"] == out.plan.greedy
        if out.email is None:
            continue
        last = (cid, out.plan)
        sent += 1
        assert out.verdicts and all(v.passed for v in out.verdicts)
        assert [p.item_id for p in out.email.products] == [p.item_id for p in out.plan.products]
        if out.plan.slot is not None:
            assert out.email.products[out.plan.slot.index].item_id == out.plan.slot.item_id
            assert plan_audit["slot"]["propensity"] == out.plan.slot.propensity
            explored_slots += out.plan.slot.explored
    assert explored_slots and sent >= 4, "at a share of 0.5, twenty customers should show an explored slot"
    # The same decision key draws the same plan: a retried job item sends what it would have.
    assert run_email_sync(deps, last[0]).plan == last[1]
