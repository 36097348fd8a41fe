"""The one contract between the service's shell (HTTP routes, the job runner, ``tailor serve``) and what
answers: ``tailor.app.service.Tailor`` in production, ``tests/server.py: ScriptedTailor`` in the HTTP tests.

Both implement every member, so the shell calls them directly: no probing for optional methods, and a
test double that drifts from the service fails ``mypy`` and ``tests/test_facade.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from agent import EmailOutcome, SupportAnswer, Trigger
from tailor.app.model import ModelStatus, RefitStart
from tailor.core.models import Consent, Customer, Event, Explanation, JsonObject, Recommendation
from tailor.core.settings import Settings
from tailor.data.store import Store

__all__ = ["Facade", "ModelStatus", "RefitStart"]


class Facade(Protocol):
    """What the shell needs from the service; ``tailor.app.service.Tailor`` documents each method."""

    settings: Settings
    store: Store

    def now(self) -> datetime: ...
    def recommend(self, customer_id: str, k: int = 10) -> list[Recommendation]: ...
    def email(
        self, customer_id: str, trigger: Trigger, *, send: bool = False, decision_key: str = ""
    ) -> EmailOutcome: ...
    def why(self, customer_id: str, item_id: str) -> Explanation: ...
    def support(self, customer_id: str, question: str) -> SupportAnswer: ...
    def ingest(self, events: Sequence[Event], customers: Sequence[Customer] = ()) -> dict[str, int]: ...
    def set_consent(self, customer_id: str, consent: Consent) -> Customer: ...
    def forget(self, customer_id: str) -> dict[str, int]: ...
    def health(self) -> dict[str, bool]:
        """``store`` and ``qdrant`` reachable; ``llm``: the model endpoint answers
        (``tailor.app.llm_endpoint.llm_endpoint_up``), always true where the template writer serves."""
        ...

    def warm_up(self) -> dict[str, float]: ...
    def model_status(self) -> ModelStatus: ...
    def shadow_eval(self) -> JsonObject: ...
    def refit_in_background(self) -> RefitStart: ...
    def close(self) -> None: ...
