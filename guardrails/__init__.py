"""guardrails."""
