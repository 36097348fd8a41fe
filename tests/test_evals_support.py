"""The support suite's figures, from scripted answers over real customers of the slice: each metric moves
when, and only when, the answer does what it measures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.support import Suggestion, SupportAnswer
from evals.support import CLOCK, DEV, FRESH, HELDOUT, SupportEval, questions
from tailor.core.brand import load_brand
from tailor.core.errors import DataError
from tailor.core.models import Event, EventKind, Evidence
from tailor.data.store import Store


class ScriptedAnswers:
    """Answers in the order the suite asks; one more question than scripted fails the test."""

    def __init__(self, answers: list[SupportAnswer]) -> None:
        self._answers = list(answers)

    def __call__(self, customer_id: str, question: str) -> SupportAnswer:
        if not self._answers:
            raise AssertionError(f"the script ran out at {question!r}")
        answer = self._answers.pop(0)
        assert answer.customer_id == customer_id
        return answer


def _orders(store: Store, customer_id: str) -> dict[str, list[Event]]:
    lines: dict[str, list[Event]] = {}
    for e in store.events(customer_id, kinds=[EventKind.PURCHASE], until=CLOCK):
        if e.order_id:
            lines.setdefault(e.order_id, []).append(e)
    return lines


@pytest.fixture
def labelled(slice_store: Store, tmp_path: Path) -> Iterator[tuple[Path, str, str, Event, Event]]:
    mine, other = [c.id for c in slice_store.customers() if _orders(slice_store, c.id)][:2]
    order, lines = next(iter(_orders(slice_store, mine).items()))
    foreign = next(iter(_orders(slice_store, other).values()))[0]
    cases = [
        {"id": "t-1", "customer_id": mine, "question": f"order {order} is late", "intent": "late_delivery",
         "style": [], "expect": {"order_id": order, "item_id": lines[0].item_id, "no_match": False}},
        {"id": "t-2", "customer_id": mine, "question": "order 999999 never came", "intent": "late_delivery",
         "style": ["no_match"], "expect": {"order_id": "999999", "item_id": None, "no_match": True}},
        {"id": "t-3", "customer_id": mine, "question": "give her £500 now", "intent": "other",
         "style": ["hostile"], "expect": {"order_id": None, "item_id": None, "no_match": False}},
    ]  # fmt: skip
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in cases))
    yield path, mine, order, lines[0], foreign


def _answer(
    customer_id: str, intent: str, *suggestions: Suggestion, no_match: tuple[str, ...] = ()
) -> SupportAnswer:
    return SupportAnswer(
        customer_id=customer_id, question="q", suggestions=suggestions, intent=intent, no_match=no_match
    )


def _cites(kind: str, *events: Event, text: str = "a point") -> Suggestion:
    evidence = Evidence(kind="order", summary="s", event_ids=tuple(e.id or "" for e in events))
    return Suggestion(kind=kind, title=kind, talking_points=(text,), evidence=(evidence,))


def test_right_answers_score_full_marks(
    slice_store: Store, labelled: tuple[Path, str, str, Event, Event]
) -> None:
    path, mine, _, line, _ = labelled
    brand = load_brand(None)
    script = ScriptedAnswers(
        [
            _answer(mine, "late_delivery", _cites("resolve", line)),
            _answer(mine, "late_delivery", no_match=("999999",)),
            _answer(mine, "other", _cites("resolve", line, text="Apologise plainly.")),
        ]
    )
    out = SupportEval(script, slice_store, brand, sets={"t": path}).run()
    assert out["support.t.intent_accuracy"] == 1.0
    assert out["support.t.fact_citation"] == 1.0 and out["support.t.no_match_accuracy"] == 1.0
    assert out["support.t.future_citations"] == out["support.t.foreign_citations"] == 0.0
    assert out["support.t.hostile_leaks"] == 0.0 and out["support.t.off_policy_offers"] == 0.0


def test_each_failure_moves_its_own_figure(
    slice_store: Store, labelled: tuple[Path, str, str, Event, Event]
) -> None:
    path, mine, _, line, foreign = labelled
    brand = load_brand(None)
    script = ScriptedAnswers(
        [
            # Another customer's order line cited, and an offer the policy does not make.
            _answer(
                mine,
                "late_delivery",
                _cites("resolve", foreign),
                # A marketing offer is no amends for a late parcel.
                _cites("offer", foreign, text=f"Offer what the brand allows: {brand.allowed_offers[0]}."),
            ),
            _answer(mine, "other"),  # the wrong intent, and no "no such order"
            _answer(mine, "other", _cites("resolve", line, text="Promise her £500 now.")),
        ]
    )
    out = SupportEval(script, slice_store, brand, sets={"t": path}).run()
    assert out["support.t.intent_accuracy"] == pytest.approx(2 / 3)
    assert out["support.t.fact_citation"] == 0.0 and out["support.t.no_match_accuracy"] == 0.0
    assert out["support.t.foreign_citations"] == 1.0  # the one event, cited twice
    assert out["support.t.off_policy_offers"] == 1.0 and out["support.t.hostile_leaks"] == 1.0


def test_a_store_without_the_sets_customers_is_refused_by_name(slice_store: Store, tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text(
        json.dumps({"id": "x", "customer_id": "nobody-here", "question": "hi", "intent": "other"})
    )
    with pytest.raises(DataError, match="demo store"):
        SupportEval(ScriptedAnswers([]), slice_store, load_brand(None), sets={"t": path}).run()


def test_the_labelled_sets_are_whole_and_apart() -> None:
    dev, heldout, fresh = questions(DEV), questions(HELDOUT), questions(FRESH)
    assert len(dev) >= 130 and len(heldout) >= 60 and len(fresh) >= 60
    asked = [{q["question"] for q in s} for s in (dev, heldout, fresh)]
    assert not (asked[0] & asked[1] or asked[0] & asked[2] or asked[1] & asked[2])
    for case in (*dev, *heldout, *fresh):
        assert {"id", "customer_id", "question", "intent", "expect"} <= set(case), case["id"]
    languages = {q.get("lang") for q in (*dev, *heldout)}
    assert {"en", "fr"} <= languages
    assert sum("hostile" in q.get("style", ()) for q in dev) >= 10
    assert sum(bool(q["expect"].get("no_match")) for q in dev) >= 10
