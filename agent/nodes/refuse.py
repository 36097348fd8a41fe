from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from agent.support_state import SupportDeps, SupportState
from tailor.core.errors import ConsentError


async def refuse(state: SupportState, runtime: Runtime[SupportDeps]) -> dict[str, Any]:
    """No personalization consent, and a question only her history could answer: a clear refusal.

    Every suggestion is by contract grounded in her own data, and the consent rail treats support output
    as personalized. Generic advice without evidence would be the desk's own script dressed up as Tailor's;
    "no consent" tells the agent exactly why there is nothing. Her account and her emails are answered all
    the same: they are about her consent, not a profile."""
    raise ConsentError(
        f"customer {state.customer_id!r} has not agreed to personalization:"
        " no suggestions from their history",
        hint="help them with the standard support script; their consent can be updated with "
        "PUT /v1/customers/ID/consent",
    )
