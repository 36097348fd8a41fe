"""The console at ``/console``: pages for support agents and marketers, and the customer's why-link.

``pages`` holds the routes, ``session`` the login, role and CSRF checks, ``render`` the templates and the
headers; ``add_console_handlers`` answers the console's refusals and Tailor's errors as pages there, and
leaves the API's JSON errors as they are everywhere else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from tailor.app.http.console.pages import router
from tailor.app.http.console.render import page
from tailor.app.http.console.session import ConsoleRefusal, LoginRequired
from tailor.app.http.errors import ApiError, tailor_status
from tailor.core.errors import TailorError

__all__ = ["add_console_handlers", "router"]

Handler = Callable[[Request, Exception], Awaitable[Response]]


def _is_console(request: Request) -> bool:
    return request.url.path == "/console" or request.url.path.startswith(("/console/", "/why/"))


async def _login(request: Request, exc: LoginRequired) -> Response:
    return RedirectResponse("/console/login?next=" + quote(exc.then, safe="/"), status_code=303)


def add_console_handlers(app: FastAPI) -> None:
    """After ``add_error_handlers``: each of the API's handlers is kept for every other path."""
    app.exception_handler(LoginRequired)(_login)

    @app.exception_handler(ConsoleRefusal)
    async def refused(request: Request, exc: ConsoleRefusal) -> Response:
        response = page("problem.html", status=exc.status, title=exc.title, message=exc.message, session=None)
        response.headers.update(exc.headers)
        return response

    for kind in (TailorError, ApiError, RequestValidationError, StarletteHTTPException):
        _wrap(app, kind)


def _wrap(app: FastAPI, kind: type[Exception]) -> None:
    api: Handler = app.exception_handlers[kind]  # type: ignore[assignment]

    async def handler(request: Request, exc: Exception) -> Response:
        if not _is_console(request):
            return await api(request, exc)
        status, title, message = (
            500,
            "Something went wrong",
            "An unexpected error occurred; it has been logged.",
        )
        if isinstance(exc, TailorError):
            status, _ = tailor_status(exc)
            title, message = "Not done", str(exc)
        elif isinstance(exc, ApiError):
            status, title, message = exc.status, "Refused", exc.message
        elif isinstance(exc, RequestValidationError):
            status, title, message = 422, "Not understood", "The page's address or form is not valid."
        elif isinstance(exc, StarletteHTTPException):
            status, title = exc.status_code, "Not found" if exc.status_code == 404 else "Refused"
            message = "There is no such page." if exc.status_code == 404 else str(exc.detail)
        return page("problem.html", status=status, title=title, message=message, session=None)

    app.add_exception_handler(kind, handler)
