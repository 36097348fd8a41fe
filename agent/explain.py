""" "Why this recommendation": one sentence per piece of evidence, each returned with that evidence."""

from __future__ import annotations

from guardrails import check_all, failed
from guardrails.base import RailContext
from guardrails.brand_config import BrandConfig
from prompts import render
from retrieval.base import Recommender
from tailor.errors import ConsentError, GuardrailBlockedError, NotFoundError
from tailor.models import Explanation, ExplanationSentence, Recommendation
from tailor.settings import Settings
from tailor.store import Store

__all__ = ["explain"]

# Most explanations are for a first-page item; evidence is built per item, so look deeper only if needed.
_SEARCH_DEPTHS = (10, 100)
_MAX_SENTENCES = 3


def explain(
    store: Store,
    recommender: Recommender,
    settings: Settings,
    brand: BrandConfig,
    customer_id: str,
    item_id: str,
    *,
    now: object = None,
) -> Explanation:
    customer = store.get_customer(customer_id)
    item = store.get_item(item_id)
    if not customer.consent.personalization:
        raise ConsentError(
            f"customer {customer_id!r} has not agreed to personalization",
            hint="explanations use their data; record consent first",
        )
    rec: Recommendation | None = None
    for depth in _SEARCH_DEPTHS:
        recs = recommender.recommend(customer_id, depth, now=now)  # type: ignore[arg-type]
        rec = next((r for r in recs if r.item.id == item_id), None)
        if rec is not None:
            break
    if rec is None or not rec.evidence:
        raise NotFoundError(
            "recommendation",
            f"{item_id} for customer {customer_id}",
            hint="ask `tailor recommend` for the items that are recommended",
        )
    sentences = []
    for evidence in rec.evidence[:_MAX_SENTENCES]:
        text, _ = render("explanation.j2", e=evidence, title=item.title)
        sentences.append(ExplanationSentence(text=text.strip(), evidence=(evidence,)))
    context = RailContext(
        customer=customer,
        catalog={item.id: item, **{i: store.get_item(i) for e in rec.evidence for i in e.item_ids}},
        brand=brand,
        plan_item_ids=(item.id, *[i for e in rec.evidence for i in e.item_ids]),
        purpose="explanation",
        extra={"facts": " ".join(e.summary for e in rec.evidence)},
    )
    explanation = Explanation(customer_id=customer_id, item_id=item_id, sentences=tuple(sentences))
    blocking = failed(check_all(explanation.text, context))
    if blocking:
        # A refusal, not a fault: the caller is told which rules refused it (a 422, never a 500).
        raise GuardrailBlockedError(
            "explanation",
            tuple(sorted({f.rule for f in blocking})),
            f"{blocking[0].rule}: {blocking[0].message}",
            hint="show the recommendation without an explanation",
        )
    return explanation
