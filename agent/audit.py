"""The audit trace: one record per node, saying what it read, what it decided and how long it took.

Readers outside the agent rely on a few of its fields, so those records are built here and nowhere else:
``tailor.app.metrics.record_outcome`` counts the rails named in a ``check`` record's ``blocked`` and the
``prompt_tokens``/``completion_tokens`` of ``generate`` and ``revise`` records; the job results keep the
whole trace. Test doubles build their traces with these functions too, so they cannot drift.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from agent.writers import WriteResult
from guardrails.base import Verdict

__all__ = ["check_fields", "record", "write_fields"]


def record(node: str, start: float, **fields: Any) -> list[dict[str, Any]]:
    """One node's record (a list, because the state's ``audit`` channel adds lists)."""
    return [{"node": node, "ms": round((time.perf_counter() - start) * 1000, 2), **fields}]


def check_fields(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """``passed``; ``blocked``: the rails that failed; ``verdicts``: each rail's findings as ``part:rule``."""
    return {
        "passed": bool(verdicts) and all(v.passed for v in verdicts),
        "blocked": sorted({v.rail for v in verdicts if not v.passed}),
        "verdicts": {v.rail: [f"{f.part}:{f.rule}" for f in v.findings] for v in verdicts},
    }


def write_fields(result: WriteResult | None, error: str | None) -> dict[str, Any]:
    """What one call of a writer cost and produced: model, prompts, tokens (total and by kind), what of the
    catalog data it was given was defused (``neutralized``), error."""
    return {
        "model": result.model if result else None,
        "prompts": [str(p) for p in result.prompts] if result else [],
        "tokens": result.tokens if result else 0,
        "prompt_tokens": result.prompt_tokens if result else 0,
        "completion_tokens": result.completion_tokens if result else 0,
        "neutralized": list(result.neutralized) if result else [],
        # Parts the model gave no usable answer for, each filled by the template, with why.
        "unwritten": dict(result.fallback_parts) if result else {},
        # Answers drawn per part (``llm_draws``), and the parts none of whose draws passed their rails.
        "draws": dict(result.draws) if result else {},
        "unscreened": list(result.unscreened) if result else [],
        "error": error,
    }
