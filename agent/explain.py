""" "Why this recommendation": one sentence per piece of evidence, each returned with that evidence."""

from __future__ import annotations

from datetime import datetime

from agent.writers import EXAMPLE_NAMES, CopyRequest, EmailCopy, ProductFacts, Writer
from guardrails import check_part, failed
from guardrails.base import RailContext
from prompts import render
from retrieval.base import Recommender
from tailor.core.brand import BrandConfig
from tailor.core.errors import ConsentError, GuardrailBlockedError, LLMError, NotFoundError
from tailor.core.models import Customer, Evidence, Explanation, ExplanationSentence, Item, Recommendation
from tailor.core.settings import Settings
from tailor.data.store import Store

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
    now: datetime | None = None,
    writer: Writer | None = None,
) -> Explanation:
    """One sentence per piece of evidence (at most three), each returned with the evidence it rests on.

    With a model ``writer`` each sentence is the model's, asked for one piece of evidence at a time and
    held by every rail, copy quality included, as a reason of that evidence; a sentence that fails, or that
    the model could not write, is the template's. Each sentence says who wrote it."""
    customer = store.get_customer(customer_id)
    item = store.get_item(item_id)
    if not customer.consent.personalization:
        raise ConsentError(
            f"customer {customer_id!r} has not agreed to personalization",
            hint="explanations use their data; record consent first",
        )
    rec: Recommendation | None = None
    for depth in _SEARCH_DEPTHS:
        recs = recommender.recommend(customer_id, depth, now=now)
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
        sentence = _template_sentence(evidence, item.title)
        if writer is not None and writer.name != "template":
            sentence = _model_sentence(writer, brand, customer, item, evidence, store) or sentence
        sentences.append(sentence)
    context = RailContext(
        customer=customer,
        catalog={item.id: item, **{i: store.get_item(i) for e in rec.evidence for i in e.item_ids}},
        brand=brand,
        plan_item_ids=(item.id, *[i for e in rec.evidence for i in e.item_ids]),
        purpose="explanation",
        extra={"facts": " ".join(e.summary for e in rec.evidence)},
    )
    explanation = Explanation(customer_id=customer_id, item_id=item_id, sentences=tuple(sentences))
    blocking = failed(check_part("explanation", explanation.text, context))
    if blocking and any(s.writer != "template" for s in sentences):
        # Sentences that pass one by one may fail together (two exclamation marks where one is allowed):
        # the template's sentences stand instead, and are held to the same check.
        sentences = [_template_sentence(s.evidence[0], item.title) for s in sentences]
        explanation = Explanation(customer_id=customer_id, item_id=item_id, sentences=tuple(sentences))
        blocking = failed(check_part("explanation", explanation.text, context))
    if blocking:
        # A refusal, not a fault: the caller is told which rules refused it (a 422, never a 500).
        raise GuardrailBlockedError(
            "explanation",
            tuple(sorted({f.rule for f in blocking})),
            f"{blocking[0].rule}: {blocking[0].message}",
            hint="show the recommendation without an explanation",
        )
    return explanation


def _template_sentence(evidence: Evidence, title: str) -> ExplanationSentence:
    text, _ = render("explanation.j2", e=evidence, title=title)
    return ExplanationSentence(text=text.strip(), evidence=(evidence,))


def _model_sentence(
    writer: Writer, brand: BrandConfig, customer: Customer, item: Item, evidence: Evidence, store: Store
) -> ExplanationSentence | None:
    """The model's sentence for one piece of evidence, or None when it wrote none that passes every rail."""
    request = CopyRequest(
        action="recommend",
        first_name=customer.first_name,
        products=(
            ProductFacts(item_id=item.id, title=item.title, category=item.category, evidence=(evidence,)),
        ),
        parts=(f"reason:{item.id}",),
    )
    catalog = {item.id: item}
    for other in evidence.item_ids:
        try:
            catalog[other] = store.get_item(other)
        except NotFoundError:
            continue

    def context(brief: str) -> RailContext:
        return RailContext(
            customer=customer,
            catalog=catalog,
            brand=brand,
            plan_item_ids=tuple(catalog),
            purpose="explanation",
            extra={"facts": evidence.summary, "instructions": brief, "example": EXAMPLE_NAMES},
            action="recommend",
            product_evidence={item.id: (evidence,)},
        )

    def passes(part: str, text: str, copy: EmailCopy, brief: str) -> bool:
        return not failed(check_part("explanation_sentence", text, context(brief), part=part))

    try:
        # Drawn as an email's reason is (``llm_draws``), each draw held to the sentence's own rails.
        result = writer.write_email(request, brand, passes)
    except LLMError:
        return None  # the template's sentence stands; an explanation never waits on a model
    if f"reason:{item.id}" in result.fallback_parts:
        return None
    text = result.copy.reasons.get(item.id, "").strip()
    if not text or not passes(f"reason:{item.id}", text, result.copy, result.brief):
        return None
    return ExplanationSentence(text=text, evidence=(evidence,), writer=writer.name)
