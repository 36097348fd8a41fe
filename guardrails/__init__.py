"""Guardrails: one module per rail, each a ``Rail``: a ``name`` and ``check(text, context, *, part=None)``
returning a ``Verdict``. ``runner.RAILS_BY_PART`` says which rails run on which part of an output."""

from guardrails.base import Finding, Rail, RailContext, Verdict
from guardrails.runner import RAILS, RAILS_BY_PART, RailSpec, check_all, check_email, check_part, failed

__all__ = [
    "RAILS",
    "RAILS_BY_PART",
    "Finding",
    "Rail",
    "RailContext",
    "RailSpec",
    "Verdict",
    "check_all",
    "check_email",
    "check_part",
    "failed",
]
