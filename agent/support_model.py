"""The support agent's second way to think: a model behind any OpenAI-compatible endpoint, by the
tool-calling protocol (vLLM, llama.cpp's server and the hosted APIs all speak it).

The model does two things, and the graph checks both:
- **It picks the tools** (``choose_tools``): a few rounds of ``tool_choice="auto"``, each tool result sent
  back as a ``tool`` message. It may pick only what its question allows (``support_tools.ALLOWED``), and
  what the offline plan needs that it left out is run after it.
- **It writes the talking points** of each suggestion (``write_points``), by one forced call of the
  ``talking_points`` tool, whose JSON schema llama.cpp turns into a grammar. The graph's guard holds every
  point to the suggestion's own evidence (the grounding rail); a suggestion none of whose points pass keeps
  the offline ones.

An endpoint that is down, or an answer that cannot be read, is an ``LLMError``: the run goes on the offline
way, and says so (``SupportAnswer.fell_back``). ``ScriptedChat`` stands in for the endpoint in tests and
fails when its script runs out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import openai
from openai.types.chat import ChatCompletion

from agent.support import Suggestion, SupportModel, ToolSpec, ToolUse
from prompts import PromptRef, render
from tailor.core.brand import BrandConfig
from tailor.core.errors import LLMError, LLMOutputError, LLMTimeoutError
from tailor.core.settings import Settings

__all__ = ["ChatClient", "OpenAISupportModel", "ScriptedChat", "SupportModel", "make_support_model"]

MAX_ROUNDS = 3  # rounds of tool calls before the model must make do with what it found
MAX_CALLS = 4  # tool calls taken from one round
MAX_POINTS = 3
POINT_CHARS = (12, 220)

# The one tool the writing step may call: its arguments are the talking points.
POINTS_TOOL = ToolSpec(
    "talking_points",
    "The talking points the support agent will say to the customer.",
    {
        "type": "object",
        "properties": {
            "points": {
                "type": "array",
                "items": {"type": "string", "minLength": POINT_CHARS[0], "maxLength": POINT_CHARS[1]},
                "minItems": 1,
                "maxItems": MAX_POINTS,
            }
        },
        "required": ["points"],
    },
)


class ChatClient(Protocol):
    """The part of ``openai.OpenAI`` the model uses: ``client.chat.completions.create``."""

    @property
    def chat(self) -> Any: ...


class OpenAISupportModel:
    """``SupportModel`` over an OpenAI-compatible endpoint (``TAILOR_LLM_*`` settings)."""

    def __init__(self, settings: Settings, brand: BrandConfig, *, client: ChatClient | None = None) -> None:
        self.settings, self.brand = settings, brand
        self.model = settings.llm_model
        self.name = f"openai:{self.model}"
        self._client: ChatClient = client or openai.OpenAI(
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key.get_secret_value(),
            timeout=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries,
        )
        self._refs: dict[PromptRef, None] = {}

    @property
    def prompts(self) -> tuple[PromptRef, ...]:
        return tuple(self._refs)

    def _render(self, name: str, **data: Any) -> str:
        text, ref = render(name, **data)
        self._refs[ref] = None
        return text

    def _create(self, **request: Any) -> ChatCompletion:
        try:
            response: ChatCompletion = self._client.chat.completions.create(
                model=self.model, temperature=self.settings.llm_temperature, **request
            )
        except openai.APITimeoutError as exc:
            raise LLMTimeoutError(
                f"model endpoint {self.settings.llm_base_url} timed out"
                f" after {self.settings.llm_timeout_s:.1f} s"
            ) from exc
        except openai.OpenAIError as exc:
            raise LLMError(
                f"model endpoint {self.settings.llm_base_url} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not response.choices:
            raise LLMOutputError("the model answered with no choices")
        return response

    def choose_tools(self, question: str, intent: str, tools: Sequence[ToolSpec], call: ToolUse) -> int:
        if not tools:
            return 0
        brand = self.brand
        messages: list[dict[str, Any]] = [
            {
                "role": "system",
                "content": self._render(
                    "support_tools.system.llm.j2",
                    brand_name=brand.name,
                    description=brand.description,
                    intent=intent.replace("_", " "),
                ),
            },
            {"role": "user", "content": self._render("support_tools.llm.j2", question=question)},
        ]
        specs = [t.openai() for t in tools]
        made = 0
        seen: set[tuple[str, str]] = set()
        for _ in range(MAX_ROUNDS):
            message = (
                self._create(messages=messages, tools=specs, tool_choice="auto", max_tokens=160)
                .choices[0]
                .message
            )
            calls = list(message.tool_calls or [])[:MAX_CALLS]
            fresh = [
                c
                for c in calls
                if c.type == "function" and (c.function.name, c.function.arguments or "") not in seen
            ]
            if not fresh:
                break  # the model answered in words, or asked again for what it has
            messages.append(
                {
                    "role": "assistant",
                    # A string, even empty: llama.cpp's server refuses an assistant turn with null content.
                    "content": message.content or "",
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.function.name, "arguments": c.function.arguments},
                        }
                        for c in fresh
                    ],
                }
            )
            for c in fresh:
                seen.add((c.function.name, c.function.arguments or ""))
                made += 1
                try:
                    args = json.loads(c.function.arguments or "{}")
                except json.JSONDecodeError:
                    args = None
                found = (
                    call(c.function.name, args)
                    if isinstance(args, dict)
                    else "The arguments were not a JSON object; call the tool again with valid ones."
                )
                messages.append({"role": "tool", "tool_call_id": c.id, "content": found})
        return made

    def write_points(self, question: str, suggestion: Suggestion, offers: Sequence[str]) -> tuple[str, ...]:
        brand = self.brand
        messages = [
            {
                "role": "system",
                "content": self._render(
                    "support_points.system.llm.j2",
                    brand_name=brand.name,
                    tone=brand.tone,
                    offers=offers if suggestion.kind == "offer" else (),
                ),
            },
            {
                "role": "user",
                "content": self._render(
                    "support_points.llm.j2",
                    question=question,
                    title=suggestion.title,
                    facts=[e.summary for e in suggestion.evidence],
                ),
            },
        ]
        message = (
            self._create(
                messages=messages,
                tools=[POINTS_TOOL.openai()],
                tool_choice={"type": "function", "function": {"name": POINTS_TOOL.name}},
                max_tokens=min(self.settings.llm_max_tokens, 180),
            )
            .choices[0]
            .message
        )
        calls = [c for c in message.tool_calls or [] if c.type == "function"]
        raw = calls[0].function.arguments if calls else (message.content or "")
        return parse_points(raw)


def parse_points(raw: str) -> tuple[str, ...]:
    """The talking points in a ``talking_points`` call's arguments; an ``LLMOutputError`` when there are
    none that can be used."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise LLMOutputError(f"the model's talking points are not JSON: {raw[:120]!r}") from exc
    points = data.get("points") if isinstance(data, dict) else None
    if not isinstance(points, list):
        raise LLMOutputError(f"the model's answer has no list of points: {raw[:120]!r}")
    lo, hi = POINT_CHARS
    out = [" ".join(p.split()) for p in points if isinstance(p, str)]
    out = [p for p in dict.fromkeys(out) if lo <= len(p) <= hi][:MAX_POINTS]
    if not out:
        raise LLMOutputError(f"none of the model's talking points is a usable sentence: {raw[:120]!r}")
    return tuple(out)


def make_support_model(settings: Settings, brand: BrandConfig) -> SupportModel | None:
    """The model the support agent thinks with, or None for the offline way: set by
    ``TAILOR_SUPPORT_THINKER``, which follows ``TAILOR_WRITER`` when unset."""
    thinker = settings.support_thinker or ("model" if settings.writer == "openai" else "offline")
    return OpenAISupportModel(settings, brand) if thinker == "model" else None


# -- a scripted endpoint, for tests -------------------------------------------------------------------
@dataclass
class ScriptedChat:
    """An OpenAI-compatible client that answers from a script, for tests; it fails when the script runs out.

    Each entry is an ``Exception`` to raise, a ``str`` (the model answers in words), or a list of
    ``(tool name, arguments)`` pairs (the model calls those tools). ``requests`` keeps what it was sent."""

    script: list[str | list[tuple[str, Mapping[str, Any]]] | Exception]
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def chat(self) -> ScriptedChat:
        return self

    @property
    def completions(self) -> ScriptedChat:
        return self

    def create(self, **request: Any) -> ChatCompletion:
        self.requests.append(request)
        if not self.script:
            raise AssertionError(f"ScriptedChat ran out of script after {len(self.requests) - 1} requests")
        answer = self.script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        n = len(self.requests)
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if isinstance(answer, str):
            message["content"] = answer
        else:
            message["tool_calls"] = [
                {
                    "id": f"call_{n}_{i}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(dict(args))},
                }
                for i, (name, args) in enumerate(answer)
            ]
        return ChatCompletion.model_validate(
            {
                "id": f"scripted-{n}",
                "object": "chat.completion",
                "created": 0,
                "model": str(request.get("model", "scripted")),
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "tool_calls" if "tool_calls" in message else "stop",
                        "message": message,
                    }
                ],
            }
        )
