"""Consent: no generation and no profiling without the matching consent; quiet hours and the contact
frequency cap respected. These are decisions about sending, so the main entry is ``check_send``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from guardrails.base import Finding, RailContext, Verdict
from tailor.core.models import Customer

__all__ = ["check", "check_send", "name"]

name = "consent"


def _local(now: datetime, tz: str) -> datetime:
    try:
        return now.astimezone(ZoneInfo(tz))
    except ZoneInfoNotFoundError:
        return now


def check_send(
    customer: Customer,
    now: datetime,
    last_contacts: Sequence[datetime] = (),
    *,
    frequency_cap_days: int = 3,
    marketing: bool = True,
    holdout: bool = False,
) -> Verdict:
    """May we send this customer a message now? Finding rules are ``tailor.core.models.Refusal`` reasons.

    ``holdout``: the customer is in the holdout group (``tailor.core.holdout``). That finding comes first,
    so every member of the group is refused as ``holdout`` whatever else holds: the group a campaign is
    measured against is then exactly the customers refused for it."""
    start = time.perf_counter()
    findings: list[Finding] = []
    if marketing and holdout:
        findings.append(Finding("holdout", "the customer is in the holdout group: no marketing email"))
    if not customer.consent.personalization:
        findings.append(
            Finding("no_personalization_consent", "the customer has not agreed to personalization")
        )
    if marketing and not customer.consent.marketing_email:
        findings.append(Finding("no_marketing_consent", "the customer has not agreed to marketing email"))
    local = _local(now, customer.timezone)
    if customer.quiet_hours is not None and customer.quiet_hours.contains(local.time()):
        findings.append(
            Finding(
                "quiet_hours",
                f"it is {local:%H:%M} for the customer ({customer.timezone}), "
                f"inside quiet hours {customer.quiet_hours.start:%H:%M}-{customer.quiet_hours.end:%H:%M}",
            )
        )
    if marketing and frequency_cap_days > 0:
        recent = [c for c in last_contacts if now - timedelta(days=frequency_cap_days) <= c <= now]
        if recent:
            findings.append(
                Finding(
                    "frequency_cap",
                    f"contacted on {max(recent):%Y-%m-%d %H:%M} UTC, within the {frequency_cap_days}-day cap",
                )
            )
    return Verdict(name, not findings, tuple(findings), (time.perf_counter() - start) * 1000)


def check(text: str, context: RailContext, *, part: str | None = None) -> Verdict:
    """Blocks any output for a customer who lacks the consent the purpose needs (text is not inspected)."""
    start = time.perf_counter()
    consent = context.customer.consent
    findings: list[Finding] = []
    if context.purpose in ("email", "explanation", "support") and not consent.personalization:
        findings.append(
            Finding("no_personalization_consent", "personalized output without personalization consent")
        )
    if context.purpose == "email" and not consent.marketing_email:
        findings.append(Finding("no_marketing_consent", "marketing email without marketing consent"))
    return Verdict(name, not findings, tuple(findings), (time.perf_counter() - start) * 1000)
