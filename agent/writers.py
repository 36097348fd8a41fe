"""Writers of free text. The template writer is deterministic and needs no model; the OpenAI writer talks
to any OpenAI-compatible endpoint (OpenAI, vLLM, a llama.cpp server). Both fill the same ``EmailCopy``:
only the subject, preheader, intro and one reason per product. Names, prices, links and the footer come
from data, in the email templates, so no writer can invent them."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import openai
from pydantic import BaseModel, ConfigDict, Field

from guardrails.injection import defuse
from prompts import PromptRef, render
from tailor.core import budget
from tailor.core.brand import BrandConfig
from tailor.core.errors import LLMError, LLMOutputError, LLMTimeoutError
from tailor.core.models import Evidence
from tailor.core.settings import Settings

__all__ = [
    "EXAMPLE_NAMES",
    "CopyRequest",
    "EmailCopy",
    "OpenAIWriter",
    "ProductFacts",
    "Screen",
    "ScriptedWriter",
    "TemplateWriter",
    "Writer",
    "hints_for",
    "make_writer",
    "parse_part",
    "part_pattern",
    "part_schema",
]

# Why a part is the template's by the retailer's choice (``TAILOR_LLM_PARTS``), not the model's failure.
KEPT_TO_TEMPLATE = "kept to the template's copy (TAILOR_LLM_PARTS)"


class ProductFacts(BaseModel):
    model_config = ConfigDict(frozen=True)

    item_id: str
    title: str
    category: str
    evidence: tuple[Evidence, ...] = ()

    @property
    def facts(self) -> str:
        return "; ".join(e.summary for e in self.evidence) or "none"


class CopyRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    action: str
    first_name: str
    products: tuple[ProductFacts, ...] = Field(min_length=1)
    # A revision: only these parts are written again (None: all of them); the others are kept from
    # ``previous``. ``hints`` says, per part, what to do differently, in the writer's words: never the
    # rails' findings or the failed draft, which a model would only write back into the copy.
    parts: tuple[str, ...] | None = None
    previous: EmailCopy | None = None
    hints: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    @property
    def all_parts(self) -> tuple[str, ...]:
        return ("subject", "preheader", "intro", *(f"reason:{p.item_id}" for p in self.products))

    @property
    def wanted(self) -> tuple[str, ...]:
        return self.all_parts if self.parts is None else tuple(p for p in self.all_parts if p in self.parts)


class EmailCopy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    subject: str = Field(min_length=1, max_length=300)
    preheader: str = Field(min_length=1, max_length=500)
    intro: str = Field(min_length=1, max_length=2000)
    reasons: dict[str, str]

    def part(self, name: str) -> str:
        if name.startswith("reason:"):
            return self.reasons.get(name.removeprefix("reason:"), "")
        return str(getattr(self, name))

    def with_parts(self, parts: Mapping[str, str]) -> EmailCopy:
        """This copy with some parts replaced (``subject``, ``preheader``, ``intro``, ``reason:ITEM``)."""
        fields = {k: v for k, v in parts.items() if not k.startswith("reason:")}
        reasons = {
            **self.reasons,
            **{k.removeprefix("reason:"): v for k, v in parts.items() if k.startswith("reason:")},
        }
        return self.model_copy(update={**fields, "reasons": reasons})


@dataclass
class WriteResult:
    copy: EmailCopy
    prompts: tuple[PromptRef, ...]
    model: str | None = None
    tokens: int = 0  # total, as the endpoint counted it
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # What was defused in the data given to the model, as "ITEM:field:rule": recorded, never silent.
    neutralized: tuple[str, ...] = ()
    # Parts the writer could not write (an unusable answer), filled by the template writer instead, with why.
    fallback_parts: dict[str, str] = field(default_factory=dict)
    # What the writer was told, apart from the data: the copy-quality rail catches it written back.
    brief: str = ""
    # The worked example's made-up names (customer, products): in the copy, they are the example's, not
    # this customer's.
    example: str = ""
    # Answers drawn per part asked for (``llm_draws``), and the parts none of whose draws passed the screen.
    draws: dict[str, int] = field(default_factory=dict)
    unscreened: tuple[str, ...] = ()


class Screen(Protocol):
    """Whether a drawn part would pass its own rails. ``copy`` is the email's copy with ``text`` in place,
    so a part can be held to the parts before it; ``brief`` is what the writer was told (an echo of it is
    caught). A screen chooses among draws; it decides nothing: the whole email is checked after."""

    def __call__(self, part: str, text: str, copy: EmailCopy, brief: str) -> bool: ...


class Writer(Protocol):
    name: str

    def write_email(
        self, request: CopyRequest, brand: BrandConfig, screen: Screen | None = None
    ) -> WriteResult: ...


class TemplateWriter:
    """Deterministic copy from the ``copy_*.j2`` templates."""

    name = "template"

    def write_email(
        self, request: CopyRequest, brand: BrandConfig, screen: Screen | None = None
    ) -> WriteResult:
        # One text per part, the same every time: there is nothing to draw, so nothing to screen.
        data = {"action": request.action, "first_name": request.first_name, "products": request.products}
        subject, s_ref = render("copy_subject.j2", **data)
        preheader, p_ref = render("copy_preheader.j2", **data)
        intro, i_ref = render("copy_intro.j2", **data)
        reasons: dict[str, str] = {}
        r_ref = i_ref
        kinds: dict[str, int] = {}
        for product in request.products:
            kind = product.evidence[0].kind if product.evidence else ""
            # Products with the same kind of evidence get their own words, not one sentence said again.
            text, r_ref = render("copy_reason.j2", product=product, variant=kinds.get(kind, 0))
            kinds[kind] = kinds.get(kind, 0) + 1
            reasons[product.item_id] = text.strip()
        subject = subject.strip()
        if len(subject) > brand.subject_max_chars:
            subject = subject[: brand.subject_max_chars - 1].rstrip() + "…"
        copy = EmailCopy(subject=subject, preheader=preheader.strip(), intro=intro.strip(), reasons=reasons)
        return WriteResult(copy, (s_ref, p_ref, i_ref, r_ref))


_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)

# What each action is, said to the model as the occasion of the email, in the words the email speaks to the
# customer in: a model given "they may be running low" writes "They might be running low" to the customer.
_OCCASIONS = {
    # Not "new things": Gemma wrote the occasion back word for word, as the preview line of emails whose
    # products the customer had all bought before.
    "recommend": "a few things picked for you, from what you have bought before",
    "abandoned_cart": "you left these in your basket",
    "replenishment": "you may be running low on things you buy regularly",
    "win_back": "you have not shopped with us for a while",
}


def plain_why(evidence: Sequence[Evidence]) -> str:
    """A product's evidence in plain words, said to the customer ("you have bought it 3 times, last on
    2011-11-02"), for a model to turn into a reason. Unknown kinds keep their summary as it is."""
    said: list[str] = []
    for e in evidence[:2]:
        summary = e.summary
        if e.kind == "repeat_purchase" and summary.startswith("bought "):
            said.append("you have bought it " + summary.removeprefix("bought "))
        elif e.kind == "similar_customers" and "also bought " in summary:
            said.append(
                f"customers who bought {summary.split('also bought ', 1)[1]}, as you did, often buy it too"
            )
        elif e.kind == "text_similarity" and summary.startswith("similar to "):
            said.append(f"it is like {summary.removeprefix('similar to ')}")
        elif e.kind == "popular":
            said.append(summary.replace("popular with the store's customers", "popular with our customers"))
        elif e.kind == "cart":
            said.append("it is still in your basket")
        else:
            said.append(summary)
    return "; ".join(said) or "one of our customers' favourites"


# One worked example per part, on a made-up customer and products, shown to the model as a turn of its
# own before the real request. Short, so a small model copies the shape and not the words; the copy-quality
# rail holds the real copy apart from it (the example's made-up names in the copy are an echo). The example
# is of the same occasion as the real email and, for a reason, of the same kind of evidence: a small model
# copies the example's shape whatever its own facts say ("Shoppers who chose <this very product>, as you
# did..." for a product the customer buys again), so the shape shown must be the one its facts fit.
_EXAMPLE_TITLE, _EXAMPLE_OTHER = "Enamel Camping Mug", "Linen Tea Towel"
EXAMPLE_NAMES = " ".join(["Sam", _EXAMPLE_TITLE, _EXAMPLE_OTHER])
# Per evidence kind: the facts as ``plain_why`` says them, and the reason written from them.
_EXAMPLE_REASONS = {
    "repeat_purchase": (
        "you have bought it 5 times, last on 2010-03-14",
        "You have bought this mug 5 times, so we have one ready for your next order.",
    ),
    "similar_customers": (
        f"customers who bought {_EXAMPLE_OTHER}, as you did, often buy it too",
        f"Shoppers who chose the {_EXAMPLE_OTHER}, as you did, often add this mug too.",
    ),
    "text_similarity": (
        f"it is like {_EXAMPLE_OTHER}",
        f"It goes with the {_EXAMPLE_OTHER} you already have.",
    ),
    "popular": (
        "popular with our customers",
        "Many of our customers choose this mug, so we picked it for you.",
    ),
    "cart": ("it is still in your basket", "It is still in your basket, kept for you until you are ready."),
}
_EXAMPLE_REASONS["trending"] = _EXAMPLE_REASONS["popular"]
_EXAMPLE_REASONS["recent_view"] = (
    "viewed recently",
    "You looked at this mug on your last visit, so we kept it in mind for you.",
)
_EXAMPLE_REASONS["category_affinity"] = (
    "you often shop for kitchen things",
    "You often shop for kitchen things, and this mug fits right in.",
)
# Per occasion: the subject, preview line and opening written for the example's customer.
_EXAMPLE_COPY = {
    "recommend": (
        "Sam, an enamel mug to go with your tea towel",
        f"An enamel mug that goes with the {_EXAMPLE_OTHER} you chose.",
        "Hello Sam, we found an enamel mug to sit beside the tea towel you chose last time.",
    ),
    "replenishment": (
        "Sam, time to stock up on your camping mug",
        "The enamel mug you order again and again, ready for your next order.",
        "Hello Sam, we thought your enamel mugs might be running low.",
    ),
    "abandoned_cart": (
        "Sam, your enamel mug is still in your basket",
        "The enamel mug you left behind is kept for you.",
        "Hello Sam, we kept the enamel mug you left in your basket.",
    ),
    "win_back": (
        "Sam, a few things picked for your return",
        "An enamel mug and a few more, picked from your past orders.",
        "Hello Sam, we have missed you and picked a few things you may like.",
    ),
}
_PART_INDEX = {"subject": 0, "preheader": 1, "intro": 2}


def worked_example(part: str, action: str, evidence_kind: str = "") -> tuple[dict[str, str], str]:
    """The example's product (title, category, facts) and the answer written for it, for a part of an
    email of ``action``; for a reason, of a product whose first evidence is of ``evidence_kind``."""
    occasion = action if action in _EXAMPLE_COPY else "recommend"
    if part == "reason":
        # No evidence, or a kind without an example of its own: the plainest shape, what many choose.
        kind = evidence_kind if evidence_kind in _EXAMPLE_REASONS else "popular"
    else:
        kind = {"replenishment": "repeat_purchase", "abandoned_cart": "cart"}.get(
            occasion, "similar_customers"
        )
    facts, reason = _EXAMPLE_REASONS[kind]
    product = {"title": _EXAMPLE_TITLE, "category": "Kitchen", "facts": facts}
    return product, reason if part == "reason" else _EXAMPLE_COPY[occasion][_PART_INDEX[part]]


# What to do differently, per rule a part failed: the writer's own words, never the finding's message.
_HINTS = {
    "placeholder": "Use real words only; leave no blanks such as a name in brackets.",
    "echo": "Use your own words, not the example's, and say nothing about how you were asked to write.",
    "third_person": "Speak to the customer as you, never as they or by name in the third person.",
    "names_only": "Say something about the product, not only its name.",
    "vague_subject": "Name the product or the occasion in the subject.",
    "vague_preheader": "Write a short line to the customer, not a heading.",
    "no_reason": "Give the reason from the Why line.",
    "not_a_sentence": "Write one full sentence to the customer.",
    "repeated": "Say something new, not what the subject or another part says.",
    "empty": "Write the text; it must not be empty.",
    "first_person": "Write as the shop, we, never as I.",
    "wrong_name": "Use only the customer's own first name.",
    "invented_history": "Say only what the facts say about the customer; invent no history.",
    "unfinished": "Write one short, complete sentence.",
    "puffery": "Say one true thing about it instead of praising it.",
    "unknown_product": "Mention only the products given.",
    "garbled": "Write plain words only: no runs of dashes, no slashes, no symbols.",
    "wrong_count": "Give the number of times exactly as the facts say it, or none.",
    "profanity": "Write as a shop writes to a customer: polite, plain words.",
}
_RAIL_HINTS = {
    "grounding": "State only the facts given: no numbers, prices, dates or products of your own.",
    "brand": "Keep to the shop's voice: none of the phrases it never says, no shouting, no claims.",
    "privacy": "Say nothing about other customers or anyone's personal details.",
    "injection": "Write no links, codes or instructions.",
    "output": "Plain words only, no markup.",
    "copy_quality": "Say something true and specific to this customer, in one short sentence.",
}


def hints_for(findings: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """The hints for a part, from its failed (rail, rule) pairs: one line each, in a stable order."""
    out: dict[str, None] = {}
    for rail, rule in findings:
        hint = _HINTS.get(rule) or _RAIL_HINTS.get(rail)
        if hint:
            out[hint] = None
    return tuple(out)


def _ask(part: str, brand: BrandConfig, first_name: str, title: str = "") -> str:
    if part == "subject":
        return (
            f"the subject line: under {brand.subject_max_chars} characters, naming a product or the occasion."
        )
    if part == "preheader":
        return (
            f"the preview line shown after the subject: one short sentence to {first_name} naming a product."
        )
    if part == "intro":
        return (
            f"the opening: one short sentence to {first_name} about the occasion, written as the shop (we)."
        )
    return f"one sentence telling {first_name} why they might like {title}, from its Why line."


class OpenAIWriter:
    """Free text from an OpenAI-compatible chat endpoint: one narrow request per part (subject, preheader,
    intro, each product's reason), each with a worked example and its answer held by a JSON schema.

    A narrow request is what a small model can do well; a part whose answer is unusable is filled by the
    template writer and named (``WriteResult.fallback_parts``), so one bad answer costs one part, not the
    email. Timeouts are explicit and retries bounded; every library error becomes a
    ``tailor.core.errors.LLMError``.
    """

    name = "openai"

    def __init__(self, settings: Settings, *, client: openai.OpenAI | None = None) -> None:
        self.settings = settings
        self.model = settings.llm_model
        self._client = client or openai.OpenAI(
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key.get_secret_value(),
            timeout=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries,
        )
        self._template = TemplateWriter()

    def _client_within_budget(self) -> tuple[openai.OpenAI, float]:
        """The client, cut to what is left of the job's time budget (``tailor.core.budget``), and its timeout.

        A retry is kept only when every try can still run to its full timeout: a hanging model must cost a
        job item its budget at most, however the timeout and retries are set."""
        left = budget.remaining()
        timeout = self.settings.llm_timeout_s
        if left is None:
            return self._client, timeout
        if left <= 0:
            raise LLMTimeoutError(
                f"the job's time budget was spent before the model at {self.settings.llm_base_url} was asked"
            )
        tries = self.settings.llm_max_retries + 1
        if left >= tries * timeout:
            return self._client, timeout
        timeout = min(timeout, left)
        return self._client.with_options(timeout=timeout, max_retries=0), timeout

    def prompt(self, request: CopyRequest, brand: BrandConfig, part: str | None = None) -> str:
        """One part's messages as one text, for reading and snapshots (the first product's reason unless
        ``part`` names another)."""
        chosen = part or f"reason:{request.products[0].item_id}"
        return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in self.messages(chosen, request, brand))

    def messages(self, part: str, request: CopyRequest, brand: BrandConfig) -> list[dict[str, str]]:
        """The chat messages for one part: the brief, a worked example, and the request itself."""
        return self._messages(part, request, brand)[0]

    def _messages(
        self, part: str, request: CopyRequest, brand: BrandConfig
    ) -> tuple[list[dict[str, str]], tuple[PromptRef, ...], tuple[str, ...], str]:
        changed: list[str] = []

        def data(item_id: str, field_name: str, text: str) -> str:
            safe, found = defuse(text)
            changed.extend(f"{item_id}:{field_name}:{f.rule}" for f in found if f.severity == "block")
            return safe

        kind = "reason" if part.startswith("reason:") else part
        # Catalog text is data from outside: defused before it reaches the model, inside the DATA block.
        chosen = [
            p
            for p in request.products
            if part in ("subject", "preheader", "intro") or part == f"reason:{p.item_id}"
        ]
        products = [
            {
                "title": data(p.item_id, "title", p.title),
                "category": data(p.item_id, "category", p.category),
                "facts": data(p.item_id, "facts", plain_why(p.evidence)),
            }
            for p in chosen[:4]
        ]
        occasion = _OCCASIONS.get(request.action, _OCCASIONS["recommend"])
        system, s_ref = render(
            "copy_part.system.llm.j2",
            tone=brand.tone,
            brand_name=brand.name,
            description=brand.description,
            banned_phrases=brand.banned_phrases,
            max_exclamation_marks=brand.max_exclamation_marks,
            hints=request.hints.get(part, ()),
        )
        first_kind = chosen[0].evidence[0].kind if kind == "reason" and chosen and chosen[0].evidence else ""
        example_product, example_answer = worked_example(kind, request.action, first_kind)
        example, _ = render(
            "copy_part.llm.j2",
            first_name="Sam",
            occasion=_OCCASIONS.get(request.action, _OCCASIONS["recommend"]),
            products=[example_product],
            ask=_ask(kind, brand, "Sam", example_product["title"]),
        )
        answer = json.dumps({"text": example_answer})
        user, u_ref = render(
            "copy_part.llm.j2",
            first_name=data("customer", "first_name", request.first_name),
            occasion=occasion,
            products=products,
            ask=_ask(kind, brand, request.first_name, products[0]["title"] if products else ""),
        )
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": example},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": user},
        ]
        # The brief is the rules the model was given and what it was asked for, not the data (the occasion,
        # the why may be quoted) and not the example's answer: a sentence as plain as "we have picked a few
        # things for you" is fine copy however it came. The example's made-up names, in the copy, are caught
        # apart (``example``).
        # The ask stands with "…" for the name and the title: theirs to use, not words of the brief.
        brief = system + "\n" + _ask(kind, brand, "…", "…")
        return messages, (s_ref, u_ref), tuple(changed), brief

    def _max_chars(self, kind: str, brand: BrandConfig) -> int:
        return {
            "subject": brand.subject_max_chars,
            "preheader": min(brand.preheader_max_chars, 160),
            "intro": min(brand.intro_max_chars, 200),
        }.get(kind, min(brand.reason_max_chars, 220))

    def _ask_model(
        self, messages: list[dict[str, str]], most: int, pattern: str | None = None, draw: int = 0
    ) -> tuple[str, int, int, int]:
        extra: dict[str, Any] = {}
        if self.settings.llm_json_schema:
            # A small model rarely writes the right JSON unaided; llama.cpp constrains it with this schema.
            extra["response_format"] = {"type": "json_object", "schema": part_schema(most, pattern)}
        temperature = self.settings.llm_temperature
        if draw:
            # A later draw must be able to differ from the first: warmer, and seeded by its number so a
            # run draws the same answers again.
            temperature = self.settings.llm_draw_temperature
            extra["seed"] = draw
        client, timeout = self._client_within_budget()
        try:
            response = client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                temperature=temperature,
                max_tokens=min(self.settings.llm_max_tokens, most // 2 + 24),
                **extra,
            )
        except openai.APITimeoutError as exc:
            raise LLMTimeoutError(
                f"model endpoint {self.settings.llm_base_url} timed out after {timeout:.1f} s"
            ) from exc
        except openai.OpenAIError as exc:
            raise LLMError(
                f"model endpoint {self.settings.llm_base_url} failed: {type(exc).__name__}: {exc}"
            ) from exc
        content = (response.choices[0].message.content or "") if response.choices else ""
        usage = response.usage
        # Endpoints differ in which counts they fill; a missing one is 0, not an error.
        n_prompt = int(getattr(usage, "prompt_tokens", None) or 0)
        n_completion = int(getattr(usage, "completion_tokens", None) or 0)
        total = int(getattr(usage, "total_tokens", None) or 0) or n_prompt + n_completion
        return content, total, n_prompt, n_completion

    def write_email(
        self, request: CopyRequest, brand: BrandConfig, screen: Screen | None = None
    ) -> WriteResult:
        """Each part asked for on its own. With a ``screen`` and ``llm_draws`` > 1, up to that many answers
        are drawn for a part and the first the screen passes is kept; none passing, the first usable one
        is, and the rails after the writer decide (the part is named in ``unscreened``)."""
        base = request.previous or self._template.write_email(request, brand).copy
        written: dict[str, str] = {}
        failed: dict[str, str] = {}
        refs: dict[PromptRef, None] = {}
        changed: dict[str, None] = {}
        briefs: dict[str, None] = {}
        draws: dict[str, int] = {}
        unscreened: list[str] = []
        tokens = n_prompt = n_completion = 0
        # One draw has nothing to choose between: the rails after the writer judge it, unscreened.
        if self.settings.llm_draws < 2:
            screen = None
        most_draws = self.settings.llm_draws if screen is not None else 1
        for part in request.wanted:
            kind = "reason" if part.startswith("reason:") else part
            if kind not in self.settings.llm_parts:
                failed[part] = KEPT_TO_TEMPLATE
                continue
            messages, part_refs, part_changed, brief = self._messages(part, request, brand)
            refs.update(dict.fromkeys(part_refs))
            changed.update(dict.fromkeys(part_changed))
            briefs[brief] = None
            most = self._max_chars(kind, brand)
            pattern = part_pattern(kind, request.first_name, most) if self.settings.llm_json_schema else None
            first: str | None = None
            error = ""
            for draw in range(most_draws):
                try:
                    content, t, p, c = self._ask_model(messages, most, pattern, draw)
                except LLMError:
                    if first is None:
                        raise
                    break  # a usable draw is in hand: a later one that times out costs only itself
                tokens, n_prompt, n_completion = tokens + t, n_prompt + p, n_completion + c
                draws[part] = draw + 1
                try:
                    text = parse_part(content, most)
                except LLMOutputError as exc:
                    error = error or str(exc)
                    continue
                first = first if first is not None else text
                candidate = base.with_parts({**written, part: text})
                if screen is None or _passes(screen, part, text, candidate, brief):
                    written[part] = text
                    break
            if part not in written:
                if first is None:
                    failed[part] = error
                else:
                    written[part] = first
                    if screen is not None:
                        unscreened.append(part)
        if failed and not written and request.parts is None and draws:
            tried = [(k, v) for k, v in failed.items() if k in draws]  # not the parts kept to the template
            raise LLMOutputError("; ".join(f"{k}: {v}" for k, v in tried[:3]))
        template = self._template.write_email(request, brand).copy if failed else base
        copy = base.with_parts({**{k: template.part(k) for k in failed}, **written})
        return WriteResult(
            copy,
            tuple(refs),
            self.model,
            tokens,
            n_prompt,
            n_completion,
            neutralized=tuple(changed),
            fallback_parts=failed,
            brief="\n".join(briefs),
            example=EXAMPLE_NAMES,
            draws=draws,
            unscreened=tuple(unscreened),
        )


def _passes(screen: Screen, part: str, text: str, copy: EmailCopy, brief: str) -> bool:
    """The screen's answer; a screen that fails (a store it reads is down) passes nothing. It only chooses
    among draws: the email's own check decides, and fails closed, after it."""
    try:
        return screen(part, text, copy, brief)
    except Exception:  # a chooser that fails chooses nothing; the email is not lost
        return False


def part_schema(most: int, pattern: str | None = None) -> dict[str, Any]:
    """The JSON schema of one part's answer: ``{"text": "..."}``, no longer than the part may be, and of
    the shape ``pattern`` holds it to (``part_pattern``) when there is one."""
    text: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": most}
    if pattern is not None:
        text["pattern"] = pattern
    return {"type": "object", "properties": {"text": text}, "required": ["text"]}


# What no part may hold, whoever reads it: brackets and braces (a blank: "[Product]", "{first_name}"),
# parentheses (the data as given: "Mug (Kitchen)"), markup, quotes, a line break. Backslash and the double
# quote would also have to be escaped in JSON.
_NOT_COPY = r"\[\]{}()<>#*_|\\\"\n"
# A name the pattern may spell out as it is: letters, with a hyphen, an apostrophe or a space inside.
_PLAIN_NAME = re.compile(r"[A-Za-z]+(?:['\- ][A-Za-z]+)*")


def part_pattern(kind: str, first_name: str, most: int) -> str:
    """The shape a part's text must have, as a regular expression a grammar can hold a model to (llama.cpp
    turns it into one): one sentence ending in a full stop (a subject without one), with no blank, markup
    or line break; no number
    outside a reason (prices, dates and codes are never the model's to write); the subject opens with the
    customer's first name and the intro greets them and speaks as the shop ("Hello Ana, we ..."), the two
    ways the small models went wrong most (a name of the example's, "I hope you are well"). The length is
    counted in the pattern, as a grammar built from one ignores ``maxLength``."""
    name = first_name.strip() if _PLAIN_NAME.fullmatch(first_name.strip()) else ""
    digits = "" if kind == "reason" else "0-9"
    if kind == "subject":
        head = f"{name}, " if name and most - len(name) - 3 >= 16 else ""
        body = f"[^{_NOT_COPY}{digits}.!?]"
        room = most - len(head) - 1
        return f"^{head}[a-zA-Z]{body}{{8,{max(room, 8)}}}$"
    if kind == "intro":
        # Counted on the longer greeting as written, and the closing full stop; a name too long to leave
        # room for a sentence is not spelled out.
        room = most - len(f"Hello {name}, we ") - 1
        if not name or room < 24:
            return f"^[A-Z][^{_NOT_COPY}{digits}.!?]{{12,{max(most - 2, 12)}}}[.]$"
        return f"^(Hello|Hi) {name}, we [^{_NOT_COPY}{digits}.!?]{{12,{room}}}[.]$"
    room = most - 2
    return f"^[A-Z][^{_NOT_COPY}{digits}.!?]{{12,{max(room, 12)}}}[.]$"


def parse_part(content: str, most: int) -> str:
    """One part's text from a model's answer. An unusable answer is an ``LLMOutputError``: the model is up,
    so that part falls back, never defers."""
    match = _JSON_OBJECT.search(content)
    if not match:
        raise LLMOutputError(f"the model did not answer with a JSON object: {content[:120]!r}")
    try:
        raw = json.loads(match.group())
    except json.JSONDecodeError as exc:
        raise LLMOutputError(f"the model's JSON is not valid: {exc}") from exc
    text = raw.get("text") if isinstance(raw, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise LLMOutputError(f"the model's JSON has no text: {content[:120]!r}")
    text = " ".join(text.split())
    if len(text) > most:
        raise LLMOutputError(f"the model's text is {len(text)} characters, over the {most} allowed")
    return text


@dataclass
class ScriptedWriter:
    """A writer that answers from a script, for tests; it fails when the script runs out."""

    script: list[EmailCopy | Exception]
    name: str = "scripted"
    calls: list[CopyRequest] = field(default_factory=list)

    def write_email(
        self, request: CopyRequest, brand: BrandConfig, screen: Screen | None = None
    ) -> WriteResult:
        self.calls.append(request)
        if not self.script:
            raise AssertionError(f"ScriptedWriter ran out of script after {len(self.calls) - 1} calls")
        answer = self.script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return WriteResult(answer, (PromptRef("scripted", 1),), "scripted")


def make_writer(settings: Settings) -> Writer:
    if settings.writer == "openai":
        return OpenAIWriter(settings)
    return TemplateWriter()


def elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def reasons_for(copy: EmailCopy, products: Sequence[ProductFacts], fallback: EmailCopy) -> dict[str, str]:
    return {p.item_id: copy.reasons.get(p.item_id) or fallback.reasons[p.item_id] for p in products}
