"""The support suite: does the answer take up the question asked, cite that customer's own facts, and offer
only what the retailer's policy allows?

Two labelled sets of questions about real customers of the demo store, at its clock (2011-12-10 10:00 UTC):
``support_questions.jsonl`` (development: the intent examples and thresholds were chosen on it) and
``support_questions_heldout.jsonl`` (written apart, from the data alone, by someone who read neither the code
nor the development set; never tuned on, but its misses were seen once, so it is no longer clean) and
``support_questions_fresh.jsonl`` (written apart after that, and never read). Each question carries its
intent and the facts a right answer cites: the order (by number, or meant: "her last order"), the product,
or that no such order of hers exists. Paraphrases, typos, French, hostile questions and orders that are not
hers are in all three.

Metrics, per set (``support.dev.*``, ``support.heldout.*``):
- ``intent_accuracy``: the answer's intent is the labelled one;
- ``fact_citation``: of the questions naming an order or a product of hers, the share whose answer cites
  it in its evidence (an event of that order, or that item);
- ``no_match_accuracy``: of the questions naming an order that is none of hers, the share answered "no such
  order" (``SupportAnswer.no_match``);
- ``future_citations`` and ``foreign_citations``: evidence events after the clock, or of another customer
  (both must be 0);
- ``off_policy_offers``: any offer the shop configures, said where the labelled problem's policy allows none
  of it; ``hostile_leaks``: a sum or a discount named in a hostile question that reached the answer;
- ``refused``: answers refused for want of consent (right for those customers; counted, not failed), and
  ``wrongly_refused``: refused though the question was about her account or emails;
- ``p50_ms`` / ``p95_ms``: time per answer, in process;
- with a model (``TAILOR_SUPPORT_THINKER=model``): ``model_tools_filled``, the share of answers where the
  plan ran tools the model left out; ``model_failed``, where the endpoint or its answer failed and the
  offline way answered; ``model_points_share``, the suggestions shown with the model's own talking points.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.support import SupportAnswer
from evals.base import Artifact, read_jsonl
from tailor.core.brand import BrandConfig
from tailor.core.errors import ConsentError, DataError
from tailor.data.store import Store

__all__ = ["CLOCK", "DEV", "FRESH", "HELDOUT", "SupportEval"]

DATA = Path(__file__).resolve().parent / "data"
DEV = DATA / "support_questions.jsonl"
HELDOUT = DATA / "support_questions_heldout.jsonl"
# A second held-out set, written apart after the first one's misses had been seen (not tuned on either).
FRESH = DATA / "support_questions_fresh.jsonl"
# The labelled sets' clock: the morning after the demo store's last purchase.
CLOCK = datetime(2011, 12, 10, 10, tzinfo=UTC)
_MONEY = re.compile(r"(?:[£€$]\s?\d[\d,.]*|\d+\s?%|\d[\d,.]*\s?(?:£|€|eur|euros?|pounds?))", re.IGNORECASE)

Answer = Callable[[str, str], SupportAnswer]
_PROBLEMS = frozenset({"late_delivery", "damaged_item", "return_refund"})
_WITHOUT_PROFILE = frozenset({"account_consent", "email_complaint"})
_ABOUT = frozenset({"resolve", "product_facts", "not_found", "service", "offer"})


@dataclass
class _Tally:
    n: int = 0
    intent_right: int = 0
    facts_asked: int = 0
    facts_cited: int = 0
    no_match_asked: int = 0
    no_match_right: int = 0
    future: int = 0
    foreign: int = 0
    off_policy: int = 0
    hostile_leaks: int = 0
    refused: int = 0
    wrongly_refused: int = 0
    # With a model: answers it thought, those where the plan ran tools it left out, those where the
    # endpoint or its answer failed, and the suggestions shown with the model's own talking points.
    model_answers: int = 0
    tools_filled: int = 0
    model_failed: int = 0
    suggestions: int = 0
    model_points: int = 0
    ms: list[float] = field(default_factory=list)


class SupportEval:
    name = "support"

    def __init__(
        self,
        answer: Answer,
        store: Store,
        brand: BrandConfig,
        *,
        sets: Mapping[str, Path] | None = None,
        seed: int = 0,
        quick: bool = False,
    ) -> None:
        self.answer = answer
        self.store = store
        self.brand = brand
        self.sets = dict(sets) if sets is not None else {"dev": DEV, "heldout": HELDOUT}
        self.seed = seed
        self.quick = quick
        self._rows: list[list[str]] = []
        self._misses: list[list[str]] = []
        # Every offer the shop has configured, for any purpose: none may appear where the problem allows none.
        policy = {o for _, offers in brand.support_policy for o in offers}
        self._offers = {*brand.allowed_offers, *brand.support_offers, *policy}

    def run(self) -> dict[str, float]:
        self._rows, self._misses = [], []
        out: dict[str, float] = {}
        for key, path in self.sets.items():
            cases = list(read_jsonl(path))
            if self.quick:
                cases = cases[::4]
            missing = [c["customer_id"] for c in cases if not self.store.has_customer(str(c["customer_id"]))]
            if missing:
                raise DataError(
                    f"{path.name} asks about customers this store does not hold ({missing[:3]}...)",
                    hint="the support sets are about the demo store: import it (`tailor import`)",
                )
            tally = _Tally()
            for case in cases:
                self._one(key, case, tally)
            out.update(self._figures(key, tally))
        return out

    def _one(self, key: str, case: Mapping[str, Any], tally: _Tally) -> None:
        customer_id, question = str(case["customer_id"]), str(case["question"])
        expect: Mapping[str, Any] = case.get("expect") or {}
        tally.n += 1
        start = time.perf_counter()
        try:
            answer = self.answer(customer_id, question)
        except ConsentError:
            tally.refused += 1
            # Her account and her emails are answered without personalization consent: refusing is wrong.
            if case["intent"] in _WITHOUT_PROFILE:
                tally.wrongly_refused += 1
                self._misses.append([key, case["id"], question, f"intent {case['intent']}", "refused"])
            self._rows.append([key, case["id"], question, str(case["intent"]), "refused: no consent", ""])
            return
        tally.ms.append((time.perf_counter() - start) * 1000)
        if answer.intent == case["intent"]:
            tally.intent_right += 1
        if answer.thinker != "offline":
            tally.model_answers += 1
            tally.tools_filled += any(f.startswith("tools: the plan ran") for f in answer.fell_back)
            tally.model_failed += any(
                f.startswith(("points:", "tools:")) and not f.startswith("tools: the plan ran")
                for f in answer.fell_back
            )
            tally.suggestions += len(answer.suggestions)
            tally.model_points += sum(s.points_by == "model" for s in answer.suggestions)
        cited_ids = [i for s in answer.suggestions for e in s.evidence for i in e.event_ids]
        events = self.store.get_events(cited_ids)
        tally.future += sum(e.timestamp >= CLOCK for e in events)
        tally.foreign += sum(e.customer_id != customer_id for e in events)
        # What the answer says the question is about: its resolve and product-facts suggestions, not a
        # recommendation or a list of her latest orders that happens to hold the right one.
        about = [s for s in answer.suggestions if s.kind in _ABOUT]
        about_events = self.store.get_events([i for s in about for e in s.evidence for i in e.event_ids])
        orders = {e.order_id for e in about_events if e.order_id}
        # A product may be cited by any suggestion: gift ideas "in the style of" it stand on it too.
        items = {i for s in answer.suggestions for e in s.evidence for i in e.item_ids} | {
            e.item_id for e in events if e.item_id
        }
        order, item = expect.get("order_id"), expect.get("item_id")
        if expect.get("no_match"):
            hers = bool(order) and any(
                e.order_id == str(order) for e in self.store.events(customer_id, until=CLOCK)
            )
            if order and not hers:
                tally.no_match_asked += 1
                right = str(order) in answer.no_match and str(order) not in orders
                tally.no_match_right += right
                if not right:
                    self._misses.append(
                        [key, case["id"], question, "no such order not said", ", ".join(orders)]
                    )
            elif item:
                # A product she says she bought and did not (in that order, or at all): never cited as hers.
                tally.no_match_asked += 1
                right = not any(e.item_id == str(item) for e in events)
                tally.no_match_right += right
                if not right:
                    self._misses.append([key, case["id"], question, f"{item} is not hers", "cited as hers"])
            else:
                self._misses.append([key, case["id"], question, "label: no_match with nothing to check", ""])
        elif order or item:
            tally.facts_asked += 1
            right = (not order or str(order) in orders) and (not item or str(item) in items)
            tally.facts_cited += right
            if not right:
                wanted = f"order {order or '-'} / item {item or '-'}"
                self._misses.append([key, case["id"], question, wanted, f"cited orders {sorted(orders)[:4]}"])
        # Offers, judged by the labelled problem (an answer that took the wrong intent carries the wrong
        # policy with it): any offer the shop has configured anywhere, said where this problem allows none
        # of it, is off policy.
        label = str(case["intent"])
        allowed = set(self.brand.offers_for(label)) if label in _PROBLEMS else set()
        shown = " ".join(
            t
            for s in answer.suggestions
            for t in (s.title, *s.talking_points, *(e.summary for e in s.evidence))
        )
        off = sorted(o for o in self._offers - allowed if o in shown)
        tally.off_policy += len(off)
        if off:
            self._misses.append(
                [key, case["id"], question, f"no offer but {sorted(allowed)}", f"offered {off}"]
            )
        if "hostile" in case.get("style", ()):
            asked_money = {m.group(0).strip().rstrip(".,;:!?") for m in _MONEY.finditer(question)}
            policy_money = " ".join(allowed)
            tally.hostile_leaks += sum(m in shown and m not in policy_money for m in asked_money)
        if answer.intent != case["intent"]:
            self._misses.append(
                [key, case["id"], question, f"intent {case['intent']}", f"got {answer.intent}"]
            )
        first = answer.suggestions[0] if answer.suggestions else None
        self._rows.append(
            [
                key,
                str(case["id"]),
                question,
                f"{case['intent']} -> {answer.intent}",
                " | ".join(s.title for s in answer.suggestions),
                " ".join(first.talking_points) if first else "(nothing to suggest)",
            ]
        )

    @staticmethod
    def _figures(key: str, t: _Tally) -> dict[str, float]:
        answered = max(t.n - t.refused, 1)
        ms = sorted(t.ms) or [0.0]
        p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
        return {
            f"support.{key}.questions": float(t.n),
            f"support.{key}.intent_accuracy": t.intent_right / answered,
            f"support.{key}.fact_citation": t.facts_cited / max(t.facts_asked, 1),
            f"support.{key}.no_match_accuracy": t.no_match_right / max(t.no_match_asked, 1),
            f"support.{key}.future_citations": float(t.future),
            f"support.{key}.foreign_citations": float(t.foreign),
            f"support.{key}.off_policy_offers": float(t.off_policy),
            f"support.{key}.hostile_leaks": float(t.hostile_leaks),
            f"support.{key}.refused": float(t.refused),
            f"support.{key}.wrongly_refused": float(t.wrongly_refused),
            f"support.{key}.p50_ms": statistics.median(ms),
            f"support.{key}.p95_ms": p95,
        } | (
            {
                # How often the model's work was not used: the plan filled in its tools, the endpoint or
                # its answer failed, or a suggestion kept its offline points.
                f"support.{key}.model_tools_filled": t.tools_filled / t.model_answers,
                f"support.{key}.model_failed": t.model_failed / t.model_answers,
                f"support.{key}.model_points_share": t.model_points / max(t.suggestions, 1),
            }
            if t.model_answers
            else {}
        )

    def artifacts(self) -> dict[str, Artifact]:
        return {
            "support_answers": {
                "kind": "table",
                "title": "Support: questions and the answers given (first suggestion's talking points)",
                "columns": ["set", "id", "question", "intent (label -> answer)", "suggestions", "first says"],
                "rows": self._rows[:60],
            },
            "support_misses": {
                "kind": "table",
                "title": "Support: wrong intents, facts not cited, orders not said to be none of hers",
                "columns": ["set", "id", "question", "expected", "got"],
                "rows": self._misses,
            },
        }


def questions(path: Path) -> Sequence[Mapping[str, Any]]:
    """The labelled questions of one set (for a benchmark or a report)."""
    return list(read_jsonl(path))
