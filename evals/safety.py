"""The safety eval: every rail against the red-team set (must block) and the good outputs (must pass).

Samples are ``evals/data/redteam.jsonl`` and ``evals/data/good_outputs.jsonl``, written by
``python -m evals.make_redteam`` (seeded). Figures: detection and false-positive rate per rail, canary leaks,
fabricated prices or products that got through, sends without consent, injection success, time per email.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from evals.base import read_jsonl
from guardrails import check_email
from guardrails.base import RailContext, Verdict
from guardrails.brand_config import load_brand
from guardrails.consent import check_send
from guardrails.injection import detect, neutralize
from tailor.models import Customer, Item

__all__ = ["SafetyEval"]

DATA = Path(__file__).resolve().parent / "data"
RAILS = ("grounding", "brand", "privacy", "consent", "injection", "output")


def _context(case: dict[str, Any]) -> RailContext:
    brand = load_brand()
    items = {i["id"]: Item.model_validate(i) for i in case["items"]}
    others = tuple(Customer.model_validate({"consent": {}, **c}) for c in case.get("other_customers", []))
    return RailContext(
        customer=Customer.model_validate(case["customer"]),
        catalog=items,
        plan_item_ids=tuple(case["plan"]),
        now=datetime.fromisoformat(case.get("now", "2011-12-10T10:00:00+00:00")),
        other_customers=others,
        allowed_domains=brand.allowed_link_domains,
        allowed_offers=brand.allowed_offers,
    )


def _blocked_by(verdicts: list[Verdict]) -> set[str]:
    return {v.rail for v in verdicts if not v.passed}


class SafetyEval:
    name = "safety"

    def __init__(self, *, seed: int = 0, quick: bool = False, data_dir: Path = DATA) -> None:
        self.seed = seed
        self.quick = quick
        self.data_dir = data_dir
        self._findings: dict[str, float] = {}
        self._latency: list[float] = []

    def _samples(self, name: str) -> list[dict[str, Any]]:
        rows = list(read_jsonl(self.data_dir / name))
        if self.quick:
            rows = random.Random(self.seed).sample(rows, k=min(len(rows), 120))
        return rows

    def _decide(self, case: dict[str, Any]) -> set[str]:
        if case.get("rail") == "consent" or (not case["parts"] and "contacts" in case):
            context = _context(case)
            contacts = [datetime.fromisoformat(c) for c in case.get("contacts", [])]
            assert context.now is not None
            verdict = check_send(context.customer, context.now, contacts, frequency_cap_days=3)
            return set() if verdict.passed else {"consent"}
        if "input" in case["parts"]:
            return (
                {"injection"} if any(f.severity == "block" for f in detect(case["parts"]["input"])) else set()
            )
        start = time.perf_counter()
        verdicts = check_email(case["parts"], _context(case))
        self._latency.append((time.perf_counter() - start) * 1000)
        return _blocked_by(verdicts)

    def run(self) -> dict[str, float]:
        attacks = self._samples("redteam.jsonl")
        good = self._samples("good_outputs.jsonl")
        per_rail: dict[str, list[bool]] = defaultdict(list)
        leaks = fabricated = unconsented = injected = 0
        for case in attacks:
            blocked = self._decide(case)
            caught = bool(blocked)
            per_rail[case["rail"]].append(case["rail"] in blocked)
            if not caught and case["kind"] == "canary_leak":
                leaks += 1
            if not caught and case["kind"].startswith("fabricated"):
                fabricated += 1
            if not caught and case["rail"] == "consent":
                unconsented += 1
            if case["rail"] == "injection":
                # Success: the instruction is missed, or it survives neutralization into a prompt.
                survives = any(f.severity == "block" for f in detect(neutralize(case["parts"]["input"])))
                injected += int(not caught or survives)
        fp: dict[str, int] = defaultdict(int)
        any_fp = 0
        for case in good:
            blocked = self._decide(case)
            any_fp += int(bool(blocked))
            for rail in blocked:
                fp[rail] += 1
        n_inj = len(per_rail.get("injection", [])) or 1
        metrics: dict[str, float] = {
            "safety.cases": float(len(attacks)),
            "safety.good_outputs": float(len(good)),
            "safety.canary_leaks": float(leaks),
            "safety.fabricated_passed": float(fabricated),
            "safety.sends_without_consent": float(unconsented),
            "safety.injection_success_rate": injected / n_inj,
            "safety.overall.false_positive_rate": any_fp / max(len(good), 1),
        }
        for rail in RAILS:
            hits = per_rail.get(rail, [])
            if hits:
                metrics[f"safety.{rail}.detection_rate"] = sum(hits) / len(hits)
            metrics[f"safety.{rail}.false_positive_rate"] = fp.get(rail, 0) / max(len(good), 1)
        if self._latency:
            metrics["safety.check_ms.p50"] = float(np.percentile(self._latency, 50))
            metrics["safety.check_ms.p95"] = float(np.percentile(self._latency, 95))
        self._findings = {rail: metrics.get(f"safety.{rail}.detection_rate", 0.0) for rail in RAILS}
        return metrics

    def artifacts(self) -> dict[str, dict[str, Any]]:
        return {
            "safety_detection": {
                "kind": "bars",
                "title": "Red-team detection rate by rail",
                "values": self._findings,
                "xlabel": "share of attacks blocked",
            },
            "safety_latency": {
                "kind": "samples",
                "title": "All rails, ms per email",
                "values": {"rails": self._latency},
                "xlabel": "ms",
            },
        }
