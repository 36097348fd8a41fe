"""Writers of free text. The template writer is deterministic and needs no model; the OpenAI writer talks
to any OpenAI-compatible endpoint (OpenAI, vLLM, a llama.cpp server). Both fill the same ``EmailCopy``:
only the subject, preheader, intro and one reason per product. Names, prices, links and the footer come
from data, in the email templates, so no writer can invent them."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import openai
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guardrails.brand_config import BrandConfig
from guardrails.injection import defuse
from prompts import PromptRef, render
from tailor import budget
from tailor.errors import LLMError, LLMOutputError, LLMTimeoutError
from tailor.models import Evidence
from tailor.settings import Settings

__all__ = [
    "CopyRequest",
    "EmailCopy",
    "OpenAIWriter",
    "ProductFacts",
    "ScriptedWriter",
    "TemplateWriter",
    "Writer",
    "copy_schema",
    "make_writer",
]


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
    findings: tuple[str, ...] = ()  # what the guardrails objected to in the last draft


class EmailCopy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    subject: str = Field(min_length=1, max_length=300)
    preheader: str = Field(min_length=1, max_length=500)
    intro: str = Field(min_length=1, max_length=2000)
    reasons: dict[str, str]


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


class Writer(Protocol):
    name: str

    def write_email(self, request: CopyRequest, brand: BrandConfig) -> WriteResult: ...


class TemplateWriter:
    """Deterministic copy from the ``copy_*.j2`` templates."""

    name = "template"

    def write_email(self, request: CopyRequest, brand: BrandConfig) -> WriteResult:
        data = {"action": request.action, "first_name": request.first_name, "products": request.products}
        subject, s_ref = render("copy_subject.j2", **data)
        preheader, p_ref = render("copy_preheader.j2", **data)
        intro, i_ref = render("copy_intro.j2", **data)
        reasons: dict[str, str] = {}
        r_ref = i_ref
        for product in request.products:
            text, r_ref = render("copy_reason.j2", product=product)
            reasons[product.item_id] = text.strip()
        subject = subject.strip()
        if len(subject) > brand.subject_max_chars:
            subject = subject[: brand.subject_max_chars - 1].rstrip() + "…"
        copy = EmailCopy(subject=subject, preheader=preheader.strip(), intro=intro.strip(), reasons=reasons)
        return WriteResult(copy, (s_ref, p_ref, i_ref, r_ref))


_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


class OpenAIWriter:
    """Free text from an OpenAI-compatible chat endpoint, as JSON validated by pydantic.

    Timeouts are explicit and retries bounded; every library error becomes a ``tailor.errors.LLMError``."""

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

    def _client_within_budget(self) -> tuple[openai.OpenAI, float]:
        """The client, cut to what is left of the job's time budget (``tailor.budget``), and its timeout.

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

    def prompt(self, request: CopyRequest, brand: BrandConfig) -> str:
        return self._prompt(request, brand)[0]

    def _prompt(self, request: CopyRequest, brand: BrandConfig) -> tuple[str, PromptRef]:
        text, ref, _ = self._prompt_defused(request, brand)
        return text, ref

    def _prompt_defused(
        self, request: CopyRequest, brand: BrandConfig
    ) -> tuple[str, PromptRef, tuple[str, ...]]:
        changed: list[str] = []

        def data(item_id: str, field_name: str, text: str) -> str:
            safe, found = defuse(text)
            changed.extend(f"{item_id}:{field_name}:{f.rule}" for f in found if f.severity == "block")
            return safe

        # Catalog text is data from outside: defused before it reaches the model, inside the DATA block.
        products = [
            {
                "item_id": p.item_id,
                "title": data(p.item_id, "title", p.title),
                "category": data(p.item_id, "category", p.category),
                "facts": data(p.item_id, "facts", p.facts),
            }
            for p in request.products
        ]
        text, ref = render(
            "email_copy.llm.j2",
            tone=brand.tone,
            brand_name=brand.name,
            description=brand.description,
            banned_phrases=brand.banned_phrases,
            max_exclamation_marks=brand.max_exclamation_marks,
            subject_max_chars=brand.subject_max_chars,
            first_name=request.first_name,
            action=request.action.replace("_", " "),
            products=products,
            findings=request.findings,
        )
        return text, ref, tuple(changed)

    def write_email(self, request: CopyRequest, brand: BrandConfig) -> WriteResult:
        prompt, ref, changed = self._prompt_defused(request, brand)
        extra: dict[str, Any] = {}
        if self.settings.llm_json_schema:
            # A small model rarely writes the right JSON unaided; llama.cpp constrains it with this schema.
            extra["response_format"] = {"type": "json_object", "schema": copy_schema(request, brand)}
        client, timeout = self._client_within_budget()
        try:
            response = client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                temperature=self.settings.llm_temperature,
                max_tokens=self.settings.llm_max_tokens,
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
        copy = parse_copy(content, request)
        return WriteResult(copy, (ref,), self.model, total, n_prompt, n_completion, neutralized=changed)


def copy_schema(request: CopyRequest, brand: BrandConfig) -> dict[str, Any]:
    """The JSON schema of one email's free text, with one reason for each requested product."""

    def text(most: int) -> dict[str, Any]:
        return {"type": "string", "minLength": 1, "maxLength": most}

    ids = [p.item_id for p in request.products]
    return {
        "type": "object",
        "properties": {
            "subject": text(brand.subject_max_chars),
            "preheader": text(120),
            "intro": text(400),
            "reasons": {"type": "object", "properties": {i: text(200) for i in ids}, "required": ids},
        },
        "required": ["subject", "preheader", "intro", "reasons"],
    }


def parse_copy(content: str, request: CopyRequest) -> EmailCopy:
    """Parse a model's answer; missing or extra reasons are dropped/left out, never invented.

    An unusable answer is an ``LLMOutputError``: the model is up, so the agent falls back, never defers."""
    match = _JSON_OBJECT.search(content)
    if not match:
        raise LLMOutputError(f"the model did not answer with a JSON object: {content[:120]!r}")
    try:
        raw = json.loads(match.group())
        if not isinstance(raw, dict):
            raise TypeError("not an object")
        given = raw.get("reasons")
        reasons: dict[object, object] = given if isinstance(given, dict) else {}
        wanted = {p.item_id for p in request.products}
        raw["reasons"] = {str(k): str(v) for k, v in reasons.items() if str(k) in wanted and str(v).strip()}
        return EmailCopy.model_validate(raw)
    except (json.JSONDecodeError, TypeError, ValidationError) as exc:
        raise LLMOutputError(f"the model's JSON is not a valid email copy: {exc}") from exc


@dataclass
class ScriptedWriter:
    """A writer that answers from a script, for tests; it fails when the script runs out."""

    script: list[EmailCopy | Exception]
    name: str = "scripted"
    calls: list[CopyRequest] = field(default_factory=list)

    def write_email(self, request: CopyRequest, brand: BrandConfig) -> WriteResult:
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
