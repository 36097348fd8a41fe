"""Pure routing functions: state in, the name of the next node out."""

from __future__ import annotations

from typing import Literal

from agent.state import EmailState
from agent.support_state import SupportState

__all__ = ["after_check", "after_context", "after_plan", "after_understand"]

# Questions about her consent and her emails are about her account, not her profile: answered without
# personalization consent, from her consent and contact log alone.
WITHOUT_PROFILE = frozenset({"account_consent", "email_complaint"})

MAX_REVISIONS = 1


def after_context(state: EmailState) -> Literal["retrieve", "plan"]:
    # A refused run skips retrieval (no profiling without consent) but is still planned: "nothing", and why.
    return "plan" if state.refusal is not None else "retrieve"


def after_plan(state: EmailState) -> Literal["generate", "finalize"]:
    return "finalize" if state.refusal is not None else "generate"


def after_check(state: EmailState) -> Literal["finalize", "revise", "fallback"]:
    if state.copy is not None and state.verdicts and all(v.passed for v in state.verdicts):
        return "finalize"
    if state.fell_back:
        return "finalize"  # the template's own parts failed too: finalize blocks and logs it
    # The template writer would only write the same text again; a model gets one chance to fix it.
    if state.copy is not None and state.writer != "template" and state.revisions < MAX_REVISIONS:
        return "revise"
    return "fallback"


def after_understand(state: SupportState) -> Literal["gather", "refuse"]:
    customer, guess = state.customer, state.guess
    if customer is None or guess is None or customer.consent.personalization:
        return "gather"
    return "gather" if guess.intent in WITHOUT_PROFILE else "refuse"
