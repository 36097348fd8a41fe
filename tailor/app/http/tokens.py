"""Signed tokens: the console's session cookie and its forms' CSRF tokens, and the customer's why-link.

A token is ``base64url(json).base64url(HMAC-SHA256)`` under a secret from the ops database
(``Ops.secret``), one per purpose: every replica on one database signs and checks alike, nothing is
configured, and a token of one purpose never passes for another. Each carries its expiry (``exp``, Unix
seconds); an altered, foreign or expired token is ``None``, never an exception.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

__all__ = ["csrf_token", "read", "sign"]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: bytes, payload: dict[str, Any], ttl_s: float, *, now: float | None = None) -> str:
    body = {**payload, "exp": int((time.time() if now is None else now) + ttl_s)}
    data = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(secret, data.encode(), hashlib.sha256).digest()
    return f"{data}.{_b64(mac)}"


def read(secret: bytes, token: str | None, *, now: float | None = None) -> dict[str, Any] | None:
    """The payload of a token this secret signed and that has not expired; else None."""
    if not token or token.count(".") != 1 or len(token) > 4096:
        return None
    data, mac = token.split(".")
    want = _b64(hmac.new(secret, data.encode(), hashlib.sha256).digest())
    # As bytes: compare_digest refuses a str with characters beyond ASCII, which anyone can send.
    if not hmac.compare_digest(want.encode(), mac.encode("utf-8", "replace")):
        return None
    try:
        body = json.loads(_unb64(data))
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("exp"), int):
        return None
    if body["exp"] <= (time.time() if now is None else now):
        return None
    return body


def csrf_token(secret: bytes, nonce: str) -> str:
    """The token a session's forms carry: bound to the session's nonce, so one session's token is worth
    nothing in another, and a cross-site page cannot read it."""
    return _b64(hmac.new(secret, b"csrf:" + nonce.encode(), hashlib.sha256).digest())
