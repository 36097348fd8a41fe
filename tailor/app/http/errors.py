"""Every error leaves in one shape, ``{"error": {"code", "message", "field"}}``: the refusals the HTTP layer
makes itself (``ApiError``), Tailor's own errors by kind, and what FastAPI and Starlette refuse.

Unexpected errors are not handled here but in ``tailor.app.http.middleware.Shell`` (its docstring says why).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tailor.core.errors import (
    BackendError,
    ConflictError,
    ConsentError,
    DataError,
    ForgottenError,
    GuardrailBlockedError,
    GuardrailError,
    NotFoundError,
    RecordError,
    TailorError,
)

__all__ = ["ApiError", "add_error_handlers", "error_response", "tailor_status"]

log = logging.getLogger("tailor.app.http")


class ApiError(Exception):
    """An HTTP-level refusal (auth, role, rate limit): not a TailorError, it is about the request."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "field": field}}, status_code=status, headers=headers
    )


_TAILOR_STATUS: tuple[tuple[type[TailorError], int, str], ...] = (
    (ConsentError, 403, "consent_required"),
    (RecordError, 422, "invalid_record"),
    (DataError, 422, "invalid_data"),
    (ForgottenError, 410, "forgotten"),
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (BackendError, 503, "backend_unavailable"),
    (GuardrailError, 503, "guardrail_failed"),
    (GuardrailBlockedError, 422, "guardrail_blocked"),
)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}


def tailor_status(exc: TailorError) -> tuple[int, str]:
    """The HTTP status and error code of one of Tailor's errors."""
    for kind, status, code in _TAILOR_STATUS:
        if isinstance(exc, kind):
            return status, code
    return 500, "internal_error"


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)


async def _tailor_error(request: Request, exc: TailorError) -> JSONResponse:
    for kind, status, code in _TAILOR_STATUS:
        if isinstance(exc, kind):
            field = exc.field if isinstance(exc, RecordError | ForgottenError) else None
            if status >= 500:
                log.warning("backend error on %s: %s", request.url.path, type(exc).__name__)
            if isinstance(exc, GuardrailBlockedError):
                # The refusal's reason, as data a client can act on, beside the message.
                body = {"code": code, "message": str(exc), "field": None, "rules": list(exc.rules)}
                return JSONResponse({"error": body}, status_code=status)
            return error_response(status, code, str(exc), field)
    log.error("unmapped error on %s: %s", request.url.path, type(exc).__name__)
    return error_response(500, "internal_error", str(exc))


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if not errors:
        return error_response(422, "invalid_request", "body: invalid request")
    first = errors[0]
    if first.get("type") == "json_invalid":
        # The location of a JSON syntax error is a character offset, not a field.
        where = first.get("ctx", {}).get("error", "")
        return error_response(
            422, "malformed_json", f"the body is not valid JSON ({where})".replace(" ()", "")
        )
    loc = [str(x) for x in first.get("loc", ())]
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]
    field = ".".join(loc) or None
    message = str(first.get("msg", "invalid request"))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return error_response(422, "invalid_request", f"{field or 'body'}: {message}{more}", field)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(
        exc.status_code,
        _HTTP_CODES.get(exc.status_code, "http_error"),
        str(exc.detail),
        headers=dict(exc.headers or {}),
    )


def add_error_handlers(app: FastAPI) -> None:
    # Through the decorator: it keeps each handler's own exception type, which ``add_exception_handler``
    # would widen to ``Exception`` (and mypy then refuse).
    app.exception_handler(ApiError)(_api_error)
    app.exception_handler(TailorError)(_tailor_error)
    app.exception_handler(RequestValidationError)(_invalid)
    app.exception_handler(StarletteHTTPException)(_http_error)
