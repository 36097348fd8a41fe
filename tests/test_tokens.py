"""Signed tokens (``tailor.app.http.tokens``): the console's sessions and CSRF tokens, the why-links."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from tailor.app.http.tokens import csrf_token, read, sign

SECRET = b"s" * 32


def test_a_token_reads_back_until_it_expires() -> None:
    token = sign(SECRET, {"c": "100", "i": "I1"}, 60, now=1000.0)
    assert read(SECRET, token, now=1059.0) == {"c": "100", "i": "I1", "exp": 1060}
    assert read(SECRET, token, now=1060.0) is None, "expired at its exp"


def test_an_altered_foreign_or_malformed_token_is_none() -> None:
    token = sign(SECRET, {"c": "100"}, 60)
    data, mac = token.split(".")
    # The payload changed to name another customer, with the old signature.
    other = base64.urlsafe_b64encode(json.dumps({"c": "101", "exp": 10**12}).encode()).rstrip(b"=").decode()
    assert read(SECRET, f"{other}.{mac}") is None
    assert read(b"t" * 32, token) is None, "another purpose's (or database's) secret"
    too_long = f"{data}.{mac}" + "A" * 5000
    for bad in (
        "",
        None,
        "abc",
        "a.b.c",
        f"{data}.",
        f".{mac}",
        too_long,
        f"{data}.{mac}x",
        "é.é",
        f"{data}.é",
    ):
        assert read(SECRET, bad) is None, bad
    # Signed but not a payload Tailor makes: no expiry, or not an object.
    assert read(SECRET, _signed({"c": "100"})) is None, "no exp"
    assert read(SECRET, _signed({"c": "100", "exp": "never"})) is None
    unsigned_list = base64.urlsafe_b64encode(b"[1]").rstrip(b"=").decode()
    mac_list = base64.urlsafe_b64encode(hmac.new(SECRET, unsigned_list.encode(), hashlib.sha256).digest())
    assert read(SECRET, f"{unsigned_list}.{mac_list.rstrip(b'=').decode()}") is None


def _signed(payload: object) -> str:
    data = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    mac = (
        base64.urlsafe_b64encode(hmac.new(SECRET, data.encode(), hashlib.sha256).digest())
        .rstrip(b"=")
        .decode()
    )
    return f"{data}.{mac}"


def test_csrf_tokens_belong_to_one_session() -> None:
    assert csrf_token(SECRET, "n1") == csrf_token(SECRET, "n1")
    assert csrf_token(SECRET, "n1") != csrf_token(SECRET, "n2")
    assert csrf_token(SECRET, "n1") != csrf_token(b"t" * 32, "n1")
