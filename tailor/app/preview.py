"""A campaign's preview before it is approved: a seeded sample of its emails exactly as they would go out,
made without sending anything, with each email's rail verdicts, fallbacks and writer, and the refusals
grouped by reason."""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field, replace

from agent import EmailOutcome
from tailor.app.facade import Facade
from tailor.app.jobs import TriggerSpec, decision_key, to_trigger
from tailor.app.ops import Ops
from tailor.core.errors import NotFoundError
from tailor.core.models import JsonObject

__all__ = ["CampaignPreview", "PreviewEmail", "preview_campaign"]


@dataclass(frozen=True)
class PreviewEmail:
    """One sampled customer's email, or the refusal that stands in its place."""

    customer_id: str
    outcome: EmailOutcome

    def as_dict(self) -> JsonObject:
        email, refusal = self.outcome.email, self.outcome.refusal
        return {
            "customer_id": self.customer_id,
            "email": email.model_dump(mode="json") if email is not None else None,
            "refusal": refusal.model_dump(mode="json") if refusal is not None else None,
            "verdicts": [
                {
                    "rail": v.rail,
                    "passed": v.passed,
                    "findings": [
                        {"rule": f.rule, "severity": f.severity, "part": f.part} for f in v.findings
                    ],
                }
                for v in self.outcome.verdicts
            ],
        }


@dataclass(frozen=True)
class CampaignPreview:
    job_id: str
    seed: int
    total: int
    model: str
    samples: tuple[PreviewEmail, ...]
    seconds: float
    refusals: dict[str, int] = field(default_factory=dict)

    def without(self, customer_ids: list[str]) -> CampaignPreview:
        """The preview less some customers' emails (forgotten since it was written)."""
        kept = tuple(s for s in self.samples if s.customer_id not in set(customer_ids))
        reasons = Counter(str(s.outcome.refusal.reason) for s in kept if s.outcome.refusal is not None)
        return replace(self, samples=kept, refusals=dict(sorted(reasons.items())))

    def as_dict(self) -> JsonObject:
        return {
            "job_id": self.job_id,
            "seed": self.seed,
            "total": self.total,
            "model": self.model,
            "seconds": round(self.seconds, 3),
            "sampled": len(self.samples),
            "emails": sum(1 for s in self.samples if s.outcome.email is not None),
            "refusals": self.refusals,
            "samples": [s.as_dict() for s in self.samples],
        }


def preview_campaign(
    facade: Facade, ops: Ops, job_id: str, *, n: int, seed: int, model: str
) -> CampaignPreview:
    """``n`` of the job's customers, drawn with ``seed`` (the same draw every time), each written as the job
    would write it but not sent: no contact, no impression, and the job itself untouched."""
    job = ops.get_job(job_id)
    if job.kind != "campaign":
        raise NotFoundError("campaign", job_id)
    customers = ops.job_customers(job_id)
    drawn = random.Random(seed).sample(customers, min(n, len(customers)))
    trigger = to_trigger(TriggerSpec.model_validate(job.spec.get("trigger", {"kind": "campaign"})))
    started = time.perf_counter()
    samples: list[PreviewEmail] = []
    for cid in drawn:
        if not facade.store.has_customer(cid):
            continue  # forgotten since the campaign was made: nothing of theirs is written again
        samples.append(
            PreviewEmail(cid, facade.email(cid, trigger, send=False, decision_key=decision_key(job_id)))
        )
    reasons = Counter(str(s.outcome.refusal.reason) for s in samples if s.outcome.refusal is not None)
    return CampaignPreview(
        job_id=job_id,
        seed=seed,
        total=job.total,
        model=model,
        samples=tuple(samples),
        seconds=time.perf_counter() - started,
        refusals=dict(sorted(reasons.items())),
    )
