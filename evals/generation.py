"""How good the emails are, for any writer: grounding, rails, fallbacks, personalization, readability, cost.

Over ``n`` seeded customers who may be emailed, the agent writes one email each; every email is written to
``generation_samples.jsonl`` (the samples) and measured. Explanations are checked against the store: a
sentence is faithful when every piece of evidence it cites exists (its events are this customer's, its items
are in the catalog) and names something that supports it (events or items, or a catalog-wide signal).
"""

from __future__ import annotations

import itertools
import re
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

import agent
from agent import AgentDeps, EmailOutcome
from evals.base import Artifact, write_jsonl
from tailor.errors import DataError, TailorError
from tailor.models import Email, EventKind, Evidence, Explanation

__all__ = ["GenerationEval", "flesch_reading_ease", "jaccard_distance", "syllables"]

_WORD = re.compile(r"[A-Za-z']+")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
# Evidence that is about the catalog as a whole, not about the customer: supported without events.
_CATALOG_WIDE = {"popular", "trending", "text_similarity", "similar_customers"}


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

    def _faithful(self, customer_id: str, evidence: Evidence) -> bool:
        if any(i not in self.deps.catalog for i in evidence.item_ids):
            return False
        if evidence.event_ids:
            events = self.deps.store.get_events(list(evidence.event_ids))
            if len(events) != len(set(evidence.event_ids)):
                return False
            return all(e.customer_id == customer_id for e in events)
        return bool(evidence.item_ids) or evidence.kind in _CATALOG_WIDE

    def _explanation_scores(self, customer_id: str, item_id: str) -> tuple[int, int] | None:
        try:
            ex: Explanation = agent.explain(
                self.deps.store,
                self.deps.recommender,
                self.deps.settings,
                customer_id,
                item_id,
                now=self.deps.now,
            )
        except TailorError:
            return None  # no explanation is offered for this item; nothing to judge
        good = sum(
            1 for s in ex.sentences if s.evidence and all(self._faithful(customer_id, e) for e in s.evidence)
        )
        return good, len(ex.sentences)

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
            out["generation.grounding.violation_rate"] = final_grounding_fail / len(emails)
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
        if self.explain and emails:
            good = total = 0
            for e in emails:
                if e.products:
                    scored = self._explanation_scores(e.customer_id, e.products[0].item_id)
                    if scored is not None:
                        good, total = good + scored[0], total + scored[1]
            if total:
                out["generation.explanation.faithfulness"] = good / total
                out["generation.explanation.sentences"] = float(total)
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
