"""How good the emails are, for any writer: grounding, rails, fallbacks, personalization, readability, cost.

Over ``n`` seeded customers who may be emailed, the agent writes one email each; every email is written to
``generation_samples.jsonl`` (the samples) and measured.

Two checks stand outside the agent, so they can catch what the agent's own rails let through:

- every released email is checked again by the grounding rail, with a context the eval builds itself from
  the store (the email's own products as the plan, the customer's real history as the facts), and its
  product lines are compared with the catalog: ``generation.independent_grounding.violation_rate``;
- explanations (one per product of every email) are checked against the store: a sentence is faithful when
  every piece of evidence it cites exists (its events are this customer's, its items are in the catalog)
  and supports what the sentence says: each item it names is a cited item (one the customer bought, when it
  claims so), each date it names is the date of a cited event, a repeat count is no more than the store
  holds, a category is the category of a cited item (``sentence_problems``).
"""

from __future__ import annotations

import itertools
import re
import statistics
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np

import agent
from agent import AgentDeps, EmailOutcome
from evals.base import Artifact, write_jsonl
from guardrails import grounding
from guardrails._text import phrase_pattern
from guardrails.base import RailContext, Verdict
from tailor.core.brand import BrandConfig
from tailor.core.errors import DataError, TailorError
from tailor.core.models import (
    Customer,
    Email,
    Event,
    EventKind,
    Explanation,
    ExplanationSentence,
    Item,
)

__all__ = [
    "GenerationEval",
    "flesch_reading_ease",
    "independent_grounding",
    "jaccard_distance",
    "sentence_problems",
    "syllables",
]

_WORD = re.compile(r"[A-Za-z']+")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
# Evidence that is about the catalog as a whole, not about the customer: supported without events.
_CATALOG_WIDE = {"popular", "trending", "text_similarity", "similar_customers"}
_ISO_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_TIMES = re.compile(r"\bbought (\d+) times?\b")
# Kinds that state something about this customer's own history: they must cite this customer's events.
_PERSONAL = {"repeat_purchase", "cart", "similar_customers"}


def _day(e: Event) -> str:
    return e.timestamp.astimezone(UTC).date().isoformat()


def _names_pattern(catalog: Mapping[str, Item]) -> re.Pattern[str] | None:
    # Like the grounding rail: short titles are too easily ordinary words to count as naming a product.
    return phrase_pattern(
        i.title for i in catalog.values() if len(i.title) >= 10 and len(i.title.split()) >= 2
    )


def sentence_problems(
    sentence: ExplanationSentence,
    *,
    customer_id: str,
    item_id: str,
    catalog: Mapping[str, Item],
    events: Mapping[str, Event],
    history: Sequence[Event],
    names: re.Pattern[str] | None = None,
) -> list[str]:
    """Why an explanation sentence is not supported by the evidence it cites (empty: it is faithful).

    ``events`` maps the cited event ids to the stored events (ids missing from it do not exist);
    ``history`` is the customer's purchases, to bound repeat counts; ``names`` finds product titles in
    text (``_names_pattern(catalog)`` when None).
    """
    if not sentence.evidence:
        return ["cites no evidence"]
    problems: list[str] = []
    text = sentence.text
    item = catalog.get(item_id)
    cited_events: list[Event] = []
    cited_items: set[str] = set()
    for ev in sentence.evidence:
        cited_items.update(ev.item_ids)
        problems += [f"item {i} is not in the catalog" for i in ev.item_ids if i not in catalog]
        found = [events[i] for i in ev.event_ids if i in events]
        problems += [f"event {i} does not exist" for i in ev.event_ids if i not in events]
        problems += [f"event {e.id} is not this customer's" for e in found if e.customer_id != customer_id]
        mine = [e for e in found if e.customer_id == customer_id]
        cited_events += mine
        personal = ev.kind in _PERSONAL or "you bought" in ev.summary
        if personal and not mine:
            problems.append(f"{ev.kind} claims the customer's history but cites none of their events")
        if ev.kind == "repeat_purchase":
            own = [e for e in mine if e.kind is EventKind.PURCHASE and e.item_id == item_id]
            if not own:
                problems.append(f"repeat_purchase cites no purchase of {item_id}")
            m = _TIMES.search(text)
            if m:
                said = int(m.group(1))
                cited_orders = {e.order_id or e.id for e in own}
                stored = {e.order_id or e.id for e in history if e.item_id == item_id}
                if not len(cited_orders) <= said <= len(stored):
                    problems.append(
                        f"says bought {said} times; cited orders {len(cited_orders)}, stored {len(stored)}"
                    )
        if ev.kind == "cart" and not any(
            e.kind is EventKind.ADD_TO_CART and e.item_id == item_id for e in mine
        ):
            problems.append(f"cart cites no add-to-basket of {item_id}")
        if ev.kind == "category_affinity":
            categories = {catalog[i].category.lower() for i in ev.item_ids if i in catalog} | {
                catalog[e.item_id].category.lower() for e in mine if e.item_id and e.item_id in catalog
            }
            named = {c.category.lower() for c in catalog.values() if c.category.lower() in text.lower()}
            if not named or not named <= categories:
                problems.append(f"names categories {sorted(named)} none of its cited items is in")
    days = {_day(e) for e in cited_events}
    problems += [
        f"date {d} is not the date of a cited event" for d in _ISO_DATE.findall(text) if d not in days
    ]
    # Items the sentence names (the explained item aside) must be cited; when the sentence says the
    # customer bought them, among the items of the customer's cited events.
    rest = re.sub(re.escape(item.title), " ", text, flags=re.IGNORECASE) if item else text
    pattern = names if names is not None else _names_pattern(catalog)
    bought = {e.item_id for e in cited_events if e.item_id}
    claims_bought = "bought" in rest.lower()
    for m in pattern.finditer(rest) if pattern is not None else ():
        title = m.group().lower()
        holders = {i for i in cited_items | bought if i in catalog and catalog[i].title.lower() == title}
        if not holders:
            problems.append(f"names {m.group()!r}, which no evidence cites")
        elif claims_bought and not holders & bought:
            problems.append(f"says the customer bought {m.group()!r} but cites no such purchase")
    return problems


def _history_facts(events: Sequence[Event], catalog: Mapping[str, Item]) -> str:
    """What the customer really did, as text: the facts an email may state (titles and dates)."""
    lines = []
    for e in events:
        title = catalog[e.item_id].title if e.item_id and e.item_id in catalog else ""
        lines.append(f"{e.kind.value} {e.item_id or ''} {title} on {_day(e)}")
    return "\n".join(lines)


def independent_grounding(
    email: Email,
    customer: Customer,
    catalog: Mapping[str, Item],
    history: Sequence[Event],
    brand: BrandConfig,
) -> list[str]:
    """Re-check a released email from scratch, outside the agent: empty when it is grounded.

    The plan is what the email itself lists (each product line must match the catalog: title, price, link),
    the facts are the customer's stored history, and the grounding rail runs on the subject, preheader and
    plain body.
    """
    problems: list[str] = []
    for p in email.products:
        item = catalog.get(p.item_id)
        if item is None:
            problems.append(f"product {p.item_id} is not in the catalog")
            continue
        for field_name, shown, real in (
            ("title", p.title, item.title),
            ("price", p.price_text, item.price_text),
            ("url", p.url, item.url),
        ):
            if shown != real:
                problems.append(f"product {p.item_id} {field_name} {shown!r} is not the catalog's {real!r}")
    context = RailContext(
        customer=customer,
        catalog=catalog,
        brand=brand,
        plan_item_ids=tuple(p.item_id for p in email.products),
        events=history,
        # The footer is the brand's own fixed text (its name and postal address), not a claim to ground.
        extra={
            "facts": "\n".join((_history_facts(history, catalog), brand.name, brand.postal_address)),
            "urls": brand.unsubscribe_link(customer.id),
        },
    )
    for part, text in (
        ("subject", email.subject),
        ("preheader", email.preheader),
        ("body_text", email.body_text),  # the whole text: intro, every product line, the footer
    ):  # body_html is markup of the same text (CSS has "100%"); the agent checks it with the output rail
        verdict: Verdict = grounding.check(text, context)
        problems += [f"{part}: {f.rule}: {f.message}" for f in verdict.findings if f.severity == "block"]
    return problems


def syllables(word: str) -> int:
    """A vowel-group count, the usual heuristic behind Flesch scores (exact counts need a dictionary)."""
    w = word.lower().strip("'")
    groups = re.findall(r"[aeiouy]+", w)
    n = len(groups) - (1 if w.endswith("e") and not w.endswith("le") and len(groups) > 1 else 0)
    return max(n, 1)


def flesch_reading_ease(text: str) -> float:
    words = _WORD.findall(text)
    if not words:
        raise DataError("no words to score for readability")
    sentences = max(len(_SENTENCE_END.findall(text)), 1)
    syl = sum(syllables(w) for w in words)
    return 206.835 - 1.015 * (len(words) / sentences) - 84.6 * (syl / len(words))


def jaccard_distance(a: str, b: str) -> float:
    sa, sb = {w.lower() for w in _WORD.findall(a)}, {w.lower() for w in _WORD.findall(b)}
    if not sa and not sb:
        return 0.0
    return 1.0 - len(sa & sb) / len(sa | sb)


class GenerationEval:
    """``run()`` → ``generation.*`` figures over ``n`` seeded, emailable customers of ``deps.store``."""

    name = "generation"

    def __init__(
        self,
        deps: AgentDeps,
        *,
        n: int = 20,
        seed: int = 0,
        out_dir: Path | None = None,
        explain: bool = True,
    ) -> None:
        if n < 2:
            raise DataError(f"n must be at least 2 (pairwise distinctness needs two emails), got {n}")
        self.deps = deps
        self.n = n
        self.seed = seed
        self.out_dir = out_dir
        self.explain = explain
        self._latency_ms: list[float] = []
        self._rail_fail: Counter[str] = Counter()
        self._names: re.Pattern[str] | None = None
        self._unfaithful: list[dict[str, Any]] = []
        self._model_sentences = [0, 0]

    def customers(self) -> list[str]:
        """The seeded sample: customers who agreed to marketing email and personalization."""
        ids = sorted(
            c.id
            for c in self.deps.store.customers()
            if c.consent.marketing_email and c.consent.personalization
        )
        if len(ids) < 2:
            raise DataError("fewer than two customers may be emailed", hint="import data with consent first")
        rng = np.random.default_rng(self.seed)
        picked = rng.choice(len(ids), size=min(self.n, len(ids)), replace=False)
        return [ids[i] for i in sorted(picked)]

    def _specific(self, email: Email) -> bool:
        """Does the email name something this customer really bought or looked at (not just their name)?"""
        kinds = (EventKind.PURCHASE, EventKind.VIEW, EventKind.ADD_TO_CART)
        seen = {e.item_id for e in self.deps.store.events(email.customer_id, kinds=kinds) if e.item_id}
        text = f"{email.subject}\n{email.body_text}".lower()
        titles = [self.deps.catalog[i].title.lower() for i in seen if i in self.deps.catalog]
        return any(t and t in text for t in titles)

    def _explanation_scores(self, customer_id: str, item_id: str) -> tuple[int, int] | None:
        try:
            ex: Explanation = agent.explain(
                self.deps.store,
                self.deps.recommender,
                self.deps.settings,
                self.deps.brand,
                customer_id,
                item_id,
                now=self.deps.now,
                writer=self.deps.writer,
            )
        except TailorError:
            return None  # no explanation is offered for this item; nothing to judge
        good = 0
        for s in ex.sentences:
            problems = self.sentence_problems(customer_id, item_id, s)
            good += not problems
            if s.writer != "template":
                self._model_sentences[0] += not problems
                self._model_sentences[1] += 1
            if problems:
                self._unfaithful.append(
                    {"customer_id": customer_id, "item_id": item_id, "text": s.text, "problems": problems}
                )
        return good, len(ex.sentences)

    def sentence_problems(self, customer_id: str, item_id: str, sentence: ExplanationSentence) -> list[str]:
        ids = sorted({i for e in sentence.evidence for i in e.event_ids})
        if self._names is None:
            self._names = _names_pattern(self.deps.catalog)
        return sentence_problems(
            sentence,
            customer_id=customer_id,
            item_id=item_id,
            catalog=self.deps.catalog,
            events={e.id: e for e in self.deps.store.get_events(ids) if e.id},
            history=self.deps.store.events(customer_id, kinds=(EventKind.PURCHASE,)),
            names=self._names,
        )

    def run(self) -> dict[str, float]:
        customers = self.customers()
        outcomes: list[EmailOutcome] = []
        records: list[dict[str, Any]] = []
        self._latency_ms = []
        for cid in customers:
            t0 = time.perf_counter()
            outcome = agent.run_email_sync(self.deps, cid)
            self._latency_ms.append((time.perf_counter() - t0) * 1000)
            outcomes.append(outcome)
        emails = [o.email for o in outcomes if o.email is not None]
        refusals = [o.refusal for o in outcomes if o.refusal is not None]
        out: dict[str, float] = {
            "generation.customers": float(len(customers)),
            "generation.email_rate": len(emails) / len(outcomes),
            "generation.refusal_rate": len(refusals) / len(outcomes),
            # Every run must end in exactly one of the two; anything else is a bug in the graph.
            "generation.refusal_or_email_rate": sum(
                (o.email is None) != (o.refusal is None) for o in outcomes
            )
            / len(outcomes),
            "generation.latency_ms.mean": statistics.fmean(self._latency_ms),
            "generation.latency_ms.p95": float(np.percentile(self._latency_ms, 95)),
        }
        ungrounded: dict[str, list[str]] = {}
        # Pass rate per rail over every check the agent ran (first drafts and revisions alike).
        by_rail: dict[str, list[bool]] = {}
        final_grounding_fail = 0
        self._rail_fail = Counter()
        for o in outcomes:
            last: dict[str, bool] = {}
            for v in o.verdicts:
                by_rail.setdefault(v.rail, []).append(v.passed)
                self._rail_fail[v.rail] += 0  # every rail gets a bar, a clean one too
                last[v.rail] = v.passed
                if not v.passed:
                    self._rail_fail[v.rail] += 1
            if o.email is not None and not last.get("grounding", True):
                final_grounding_fail += 1
        for rail, results in sorted(by_rail.items()):
            out[f"generation.rails.{rail}.pass_rate"] = sum(results) / len(results)
        for o in outcomes:
            for reason in [o.refusal.reason] if o.refusal else []:
                out[f"generation.refusals.{reason}"] = out.get(f"generation.refusals.{reason}", 0.0) + 1
        if emails:
            # The agent's own last grounding verdict (finalize releases only what passed, so this stays 0
            # unless the graph is broken); the independent re-check below is the one that can catch a miss.
            out["generation.grounding.violation_rate"] = final_grounding_fail / len(emails)
            for e in emails:
                problems = independent_grounding(
                    e,
                    self.deps.store.get_customer(e.customer_id),
                    self.deps.catalog,
                    self.deps.store.events(e.customer_id),
                    self.deps.brand,
                )
                if problems:
                    ungrounded[e.customer_id] = problems
            out["generation.independent_grounding.violation_rate"] = len(ungrounded) / len(emails)
            out["generation.fallback_rate"] = sum(bool(e.fallback_parts) for e in emails) / len(emails)
            out["generation.personalization.specific_rate"] = sum(self._specific(e) for e in emails) / len(
                emails
            )
            pairs = list(itertools.combinations([e.body_text for e in emails], 2))
            if pairs:
                out["generation.personalization.pairwise_jaccard"] = statistics.fmean(
                    jaccard_distance(a, b) for a, b in pairs
                )
            out["generation.readability.flesch"] = statistics.fmean(
                flesch_reading_ease(e.body_text) for e in emails
            )
            out["generation.subject.chars"] = statistics.fmean(len(e.subject) for e in emails)
            out["generation.body.words"] = statistics.fmean(len(_WORD.findall(e.body_text)) for e in emails)
            tokens = [
                sum(int(a.get("tokens") or 0) for a in o.audit) for o in outcomes if o.email is not None
            ]
            out["generation.tokens_per_email"] = statistics.fmean(tokens)
        self._unfaithful = []
        self._model_sentences = [0, 0]  # faithful, written: the model's own sentences
        if self.explain and emails:
            good = total = explained = 0
            for e in emails:
                for product in e.products:  # every product of every email, not a sample of one
                    scored = self._explanation_scores(e.customer_id, product.item_id)
                    if scored is not None:
                        good, total, explained = good + scored[0], total + scored[1], explained + 1
            if total:
                out["generation.explanation.faithfulness"] = good / total
                out["generation.explanation.sentences"] = float(total)
                out["generation.explanation.products"] = float(explained)
                # With a model writer: how many sentences are the model's, and how faithful those are.
                faithful, written = self._model_sentences
                out["generation.explanation.model_written_share"] = written / total
                if written:
                    out["generation.explanation.model_faithfulness"] = faithful / written
        for o, ms in zip(outcomes, self._latency_ms, strict=True):
            records.append(
                {
                    "customer_id": o.customer_id,
                    "ms": round(ms, 2),
                    "refusal": o.refusal.reason if o.refusal else None,
                    "subject": o.email.subject if o.email else None,
                    "body_text": o.email.body_text if o.email else None,
                    "writer": o.email.writer if o.email else None,
                    "fallback_parts": list(o.email.fallback_parts) if o.email else [],
                    "verdicts": {v.rail: v.passed for v in o.verdicts},
                    "independent_grounding": ungrounded.get(o.customer_id, []) if o.email else [],
                    "unfaithful": [u for u in self._unfaithful if u["customer_id"] == o.customer_id],
                }
            )
        if self.out_dir is not None:
            write_jsonl(self.out_dir / "generation_samples.jsonl", records)
        return out

    def artifacts(self) -> dict[str, Artifact]:
        arts: dict[str, Artifact] = {}
        if self._latency_ms:
            arts["generation_latency"] = {
                "kind": "samples",
                "title": "Time per email (ms)",
                "xlabel": "ms",
                "values": {"email": list(self._latency_ms)},
            }
        if self._rail_fail:
            arts["generation_rail_failures"] = {
                "kind": "bars",
                "title": "Guardrail failures by rail (generation)",
                "xlabel": "failed checks",
                "values": {k: float(v) for k, v in sorted(self._rail_fail.items())},
            }
        return arts
