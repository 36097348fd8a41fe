"""Prompt and message templates as files, each with an id and a version, rendered in a Jinja sandbox.

Every template starts with a header comment ``{# id: NAME version: N #}``. Rendering uses
``StrictUndefined`` (a missing variable is an error, not an empty string) and the sandboxed environment
(templates cannot reach Python internals). ``.html.j2`` files are autoescaped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, select_autoescape
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tailor.core.errors import ConfigError

__all__ = ["PROMPTS_DIR", "PromptRef", "environment", "render", "template_ref"]

PROMPTS_DIR = Path(__file__).resolve().parent
_HEADER = re.compile(r"\{#\s*id:\s*(?P<id>[\w.-]+)\s+version:\s*(?P<version>\d+)\s*#\}")


@dataclass(frozen=True, slots=True)
class PromptRef:
    """Which template (and which version of it) produced a text; stored in the audit trace."""

    id: str
    version: int

    def __str__(self) -> str:
        return f"{self.id}@v{self.version}"


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(PROMPTS_DIR),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


@lru_cache(maxsize=64)
def template_ref(name: str) -> PromptRef:
    path = PROMPTS_DIR / name
    if not path.is_file():
        raise ConfigError(f"no prompt template {name!r} in {PROMPTS_DIR}")
    match = _HEADER.search(path.read_text(encoding="utf-8").split("\n", 1)[0])
    if not match:
        raise ConfigError(f"prompt template {name!r} lacks its header '{{# id: ... version: N #}}'")
    return PromptRef(match["id"], int(match["version"]))


def render(name: str, **variables: Any) -> tuple[str, PromptRef]:
    """Render a template; returns the text and the template's id and version."""
    ref = template_ref(name)
    try:
        text = environment().get_template(name).render(**variables)
    except TemplateError as exc:
        raise ConfigError(f"prompt {ref}: {exc}") from exc
    return text.strip() + "\n", ref
