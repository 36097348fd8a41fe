"""The ASGI shell around the app: body size limit, request metrics, and unexpected errors."""

from __future__ import annotations

import logging
import time

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tailor.app.http.errors import error_response
from tailor.app.metrics import Metrics
from tailor.core.logs import describe

__all__ = ["Shell"]

log = logging.getLogger("tailor.app.http")


class Shell:
    """Buffers request bodies up to the limit (so chunked uploads are capped too), times requests, and
    answers an unexpected error with a 500.

    Unexpected errors end here rather than in an ``Exception`` handler: Starlette re-raises after such a
    handler has answered, and uvicorn then logs the traceback with the exception's message, which may
    quote the request (a support question, a profile), and drops the keep-alive connection. Here the log
    gets the error's type and where it was raised (``tailor.core.logs.describe``) and nothing else.
    """

    def __init__(self, app: ASGIApp, max_body: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body = max_body
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_box = [500]
        responded = [False]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                responded[0] = True
            await send(message)

        replay = receive
        body = b""
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_large = declared is not None and declared.isdigit() and int(declared) > self.max_body
        if not too_large and scope["method"] in ("POST", "PUT", "PATCH"):
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > self.max_body:
                    too_large = True
                    break
                if not message.get("more_body", False):
                    break
            if not too_large:
                body = b"".join(chunks)
                sent = [False]

                async def replay_receive() -> Message:
                    if not sent[0]:
                        sent[0] = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                replay = replay_receive
        try:
            refused = None
            if too_large:
                refused = error_response(
                    413, "payload_too_large", f"request body exceeds {self.max_body} bytes"
                )
            elif replay is not receive and not _console_form(scope):
                refused = _body_problem(headers.get(b"content-type", b""), body)
            if refused is not None:
                await refused(scope, receive, send_wrapper)
            else:
                await self.app(scope, replay, send_wrapper)
        except Exception as exc:
            log.error("unexpected error on %s %s: %s", scope["method"], scope.get("path"), describe(exc))
            if not responded[0]:
                response = error_response(
                    500, "internal_error", "an unexpected error occurred; it has been logged"
                )
                await response(scope, receive, send_wrapper)
        finally:
            # Also for requests that raised: they were answered with 500 just above.
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            labels = {"method": scope["method"], "route": template}
            self.metrics.inc("tailor_http_requests_total", {**labels, "status": str(status_box[0])})
            self.metrics.observe(
                "tailor_http_request_duration_seconds", time.perf_counter() - started, {"route": template}
            )


def _console_form(scope: Scope) -> bool:
    """The console's forms post as forms; its own checks refuse anything else (``console.session``)."""
    return str(scope.get("path", "")).startswith("/console/")


def _body_problem(content_type: bytes, body: bytes) -> JSONResponse | None:
    """What the JSON parser would only call "an error parsing the body", said plainly."""
    if not body:
        return None
    raw = content_type.decode("latin-1")
    media = raw.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        got = repr(raw) if raw else "none"
        message = f"send the body as JSON, with Content-Type: application/json (got {got})"
        return error_response(415, "unsupported_media_type", message)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return error_response(
            400, "invalid_json", f"the body is not UTF-8 (byte {exc.start} is not valid there)"
        )
    return None
