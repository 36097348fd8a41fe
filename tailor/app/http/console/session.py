"""Who is at the console: a signed session cookie naming an API key, checked on every page against the key
(revoked: logged out), its role (the API's role checks) and its rate limit; and every form's CSRF token."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import Response

from tailor.app.http.state import ServiceState
from tailor.app.http.tokens import csrf_token, read, sign
from tailor.app.ops import ApiKey, Role

__all__ = [
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "ConsoleRefusal",
    "LoginRequired",
    "Session",
    "form_of",
    "login_form_token",
    "need",
    "session_of",
    "start_session",
]

SESSION_COOKIE = "tailor_session"
LOGIN_COOKIE = "tailor_login"
_FORM_BYTES = 64_000


class LoginRequired(Exception):
    """No session, or one that expired or names a revoked key: answered with the login page."""

    def __init__(self, then: str) -> None:
        super().__init__("log in first")
        self.then = then


class ConsoleRefusal(Exception):
    """A refusal the console shows as a page: its status and a sentence that names the problem."""

    def __init__(self, status: int, title: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class Session:
    key: ApiKey
    nonce: str
    csrf: str

    @property
    def role(self) -> Role:
        return self.key.role

    @property
    def key_id(self) -> str:
        return self.key.id


def _secret(st: ServiceState, purpose: str) -> bytes:
    return st.ops.secret("console-" + purpose)


def session_of(st: ServiceState, request: Request) -> Session:
    payload = read(_secret(st, "session"), request.cookies.get(SESSION_COOKIE))
    # Back to the page after the login; a form's post cannot be replayed, so that goes to the console's start.
    then = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        then = "/console"
    if payload is None or not isinstance(payload.get("k"), str) or not isinstance(payload.get("n"), str):
        raise LoginRequired(then)
    key = st.ops.key_by_id(payload["k"])
    if key is None:
        raise LoginRequired(then)
    wait = st.buckets.take(key.id)
    if wait > 0:
        st.metrics.inc("tailor_rate_limited_total")
        retry = str(max(1, math.ceil(wait)))
        raise ConsoleRefusal(
            429,
            "Too many requests",
            f"Too many requests for this key: try again in {retry} s.",
            {"Retry-After": retry},
        )
    return Session(key=key, nonce=payload["n"], csrf=csrf_token(_secret(st, "csrf"), payload["n"]))


def need(session: Session, role: Role, what: str) -> None:
    """The API's role check, said as a page: a support key does not open campaigns, a crm key does not read
    a customer's history."""
    if session.role != role:
        raise ConsoleRefusal(
            403, "Not for this key", f"A {session.role} key may not open {what}: log in with a {role} key."
        )


async def form_of(request: Request, expected_csrf: str) -> dict[str, str]:
    """A posted form's fields (the first value of each), refused whole unless it carries the session's
    CSRF token: a page on another site can make the browser post, but cannot read the token."""
    body = await request.body()
    if len(body) > _FORM_BYTES:
        raise ConsoleRefusal(413, "Form too large", f"The form is larger than {_FORM_BYTES} bytes.")
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise ConsoleRefusal(415, "Not a form", f"Send the console's forms as forms (got {media or 'none'}).")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise ConsoleRefusal(400, "Not a form", "The form is not UTF-8.") from exc
    form = {k: v[0] for k, v in fields.items()}
    token = form.get("csrf", "")
    if not token or not secrets.compare_digest(token.encode("utf-8", "replace"), expected_csrf.encode()):
        raise ConsoleRefusal(
            403,
            "Form refused",
            "This form did not carry the console's CSRF token (or carried another session's): "
            "nothing was done. Reload the page and send it again.",
        )
    return form


def login_form_token(st: ServiceState, request: Request) -> tuple[str, str | None]:
    """The login form's CSRF token, and a new login cookie to set when the request had none valid."""
    payload = read(_secret(st, "login"), request.cookies.get(LOGIN_COOKIE))
    if payload is not None and isinstance(payload.get("n"), str):
        return csrf_token(_secret(st, "csrf"), payload["n"]), None
    nonce = secrets.token_urlsafe(16)
    return csrf_token(_secret(st, "csrf"), nonce), sign(_secret(st, "login"), {"n": nonce}, 3600)


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def start_session(st: ServiceState, request: Request, response: Response, key: ApiKey) -> None:
    ttl = int(st.settings.console_session_hours * 3600)
    token = sign(_secret(st, "session"), {"k": key.id, "n": secrets.token_urlsafe(16)}, ttl)
    set_cookie(response, request, SESSION_COOKIE, token, ttl)
    response.delete_cookie(LOGIN_COOKIE, path="/console")
