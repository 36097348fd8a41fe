"""Tailor's exceptions: one root, every error carries the context a person needs to act on it.

    TailorError
    ├── ConfigError                  a setting or config file is wrong
    ├── DataError                    input data is malformed
    │   └── RecordError              one record failed validation (names the source, line and field)
    ├── NotFoundError                a customer, item, job or key does not exist
    │   └── ForgottenError           the customer was forgotten: work naming them is refused
    ├── ConflictError                an idempotency key reused with another body, a state clash
    ├── ConsentError                 personalized output asked for without the consent it needs
    ├── BackendError                 a real backend failed; library errors are translated into these
    │   ├── VectorStoreError         Qdrant (embedded or server)
    │   ├── EmbeddingError           the sentence-transformer model
    │   └── LLMError                 an OpenAI-compatible endpoint
    │       ├── LLMTimeoutError      it did not answer in time
    │       └── LLMOutputError       it answered, but not with usable output (the model is up)
    ├── GuardrailError               a rail itself failed (the output is then blocked: fail closed)
    └── GuardrailBlockedError        the rails refused an output (a typed refusal, with its rules)

A refusal (no consent, nothing worth sending) is an outcome, not an error: see ``tailor.core.models.Refusal``.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ConfigError",
    "ConflictError",
    "ConsentError",
    "DataError",
    "EmbeddingError",
    "ForgottenError",
    "GuardrailBlockedError",
    "GuardrailError",
    "LLMError",
    "LLMOutputError",
    "LLMTimeoutError",
    "NotFoundError",
    "RecordError",
    "TailorError",
    "VectorStoreError",
]


class TailorError(Exception):
    """Root of every error Tailor raises on purpose. ``hint`` says what to do about it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(TailorError):
    pass


class DataError(TailorError):
    pass


class RecordError(DataError):
    """One input record is invalid. ``source`` is a file or stream name, ``line`` 1-based."""

    def __init__(
        self,
        message: str,
        *,
        source: str,
        line: int | None = None,
        field: str | None = None,
        record_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = source + (f":{line}" if line is not None else "")
        what = f" record {record_id!r}" if record_id else ""
        at = f" field {field!r}" if field else ""
        super().__init__(f"{where}:{what}{at}: {message}", hint=hint)
        self.source = source
        self.line = line
        self.field = field
        self.record_id = record_id


class NotFoundError(TailorError):
    def __init__(self, kind: str, key: str, *, hint: str | None = None) -> None:
        super().__init__(f"{kind} {key!r} not found", hint=hint)
        self.kind = kind
        self.key = key


class ForgottenError(NotFoundError):
    """A request names customers who were forgotten (and are not customers again since). ``field`` is
    where the first one is named; the ids are the caller's own input, echoed to it and stored nowhere."""

    def __init__(self, customer_ids: list[str], *, field: str | None = None) -> None:
        shown = ", ".join(repr(c) for c in customer_ids[:5]) + (" ..." if len(customer_ids) > 5 else "")
        super().__init__(
            "customer",
            customer_ids[0],
            hint="their data was deleted on request; nothing may be sent to them or stored about them",
        )
        self.message = f"{len(customer_ids)} forgotten customer(s) named: {shown}; nothing was queued"
        self.customer_ids = customer_ids
        self.field = field


class ConflictError(TailorError):
    pass


class ConsentError(TailorError):
    pass


class BackendError(TailorError):
    pass


class VectorStoreError(BackendError):
    pass


class EmbeddingError(BackendError):
    pass


class LLMError(BackendError):
    pass


class LLMTimeoutError(LLMError):
    pass


class LLMOutputError(LLMError):
    """The endpoint answered, but unusably: a fault of the model's output, not of its availability."""


class GuardrailError(TailorError):
    def __init__(self, rail: str, message: str) -> None:
        super().__init__(f"guardrail {rail!r} failed: {message}")
        self.rail = rail


class GuardrailBlockedError(TailorError):
    """The rails worked and refused what was asked for: an answer about the request (HTTP 422), not a
    fault of the service. ``rules`` names what they found, ``what`` the output that was refused."""

    def __init__(self, what: str, rules: tuple[str, ...], detail: str, *, hint: str | None = None) -> None:
        super().__init__(f"the {what} was refused by a guardrail ({', '.join(rules)}): {detail}", hint=hint)
        self.what = what
        self.rules = rules
        self.detail = detail
