"""Guardrails: one module per rail, each `check(text, context) -> Verdict`; `check_email` runs them all."""

from guardrails.base import Finding, Rail, RailContext, Verdict
from guardrails.runner import DEFAULT_RAILS, check_all, check_email, failed

__all__ = ["DEFAULT_RAILS", "Finding", "Rail", "RailContext", "Verdict", "check_all", "check_email", "failed"]
