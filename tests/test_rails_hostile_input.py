"""Patterns rewritten to read hostile text in linear time still find exactly what the plain patterns found.

The plain forms are kept here as the reference: on short random texts (where their quadratic cost does not
matter) both must give the same spans. ``benchmarks/guardrails_bench.py`` measures the time on long ones.
"""

from __future__ import annotations

import random
import re

import pytest

from guardrails import grounding, output, privacy
from guardrails._text import email_spans
from tests.test_rails import ctx

PLAIN_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
PLAIN_HANDLER = re.compile(r"<[^>]+\son\w+\s*=", re.IGNORECASE)
PLAIN_ID = re.compile(
    r"(?<![\w/£$€.,@])(?:\d{5,}|(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[A-Za-z0-9][\w-]{2,})(?![\w/@%]|[.,:]\d)"
)


def _texts(alphabet: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(n)]


def _spans(pattern: re.Pattern[str], text: str) -> list[tuple[int, int]]:
    return [m.span() for m in pattern.finditer(text)]


def test_email_spans_are_those_of_the_plain_pattern() -> None:
    texts = _texts(["a", "b", "1", ".", "+", "-", "_", "@", " ", "co", ".uk", "é"], 4000, seed=1)
    texts += ["ann.lee+x@example.com", "a@b", "@@a@b.c", "a@b.c+d@e.f", "mail ann@shop.example.com now"]
    # The texts do exercise the pattern, chained addresses among them.
    assert sum(bool(_spans(PLAIN_EMAIL, t)) for t in texts) > 500
    assert sum(len(_spans(PLAIN_EMAIL, t)) > 1 for t in texts) > 40
    for text in texts:
        assert list(email_spans(text)) == _spans(PLAIN_EMAIL, text), text


def test_event_handler_spans_are_those_of_the_plain_pattern() -> None:
    texts = _texts(["<", "<a", ">", " ", " on", " ON", "x", "=", "\n", "'"], 4000, seed=2)
    texts = [t for t in texts if "<" in t]
    texts += ["<img src=x onerror=alert(1)>", "<a onclick = 'x' onmouseover=y>", "<<b onload=x", "< on=x>"]
    assert sum(bool(_spans(PLAIN_HANDLER, t)) for t in texts) > 100
    for text in texts:
        assert list(output._event_handlers(text)) == _spans(PLAIN_HANDLER, text), text


def test_id_token_finds_the_same_tokens_as_the_plain_pattern() -> None:
    alphabet = ["a", "B", "1", "9", "-", "_", "/", "@", ".", ",", ":", "%", "£", " ", "12350"]
    texts = _texts(alphabet, 4000, seed=3)
    texts += ["order 12350 for C-77812", "£12,350.00", "ref AB-12-CD/x", "12345@x", "--12345", "a-a-a-1"]
    assert sum(bool(_spans(PLAIN_ID, t)) for t in texts) > 500
    for text in texts:
        assert _spans(privacy.ID_TOKEN, text) == _spans(PLAIN_ID, text), text


@pytest.mark.parametrize(
    ("filler", "tail", "rail", "rule"),
    [
        ("1", " write to ann.other@example.com", privacy, "email_address"),
        ("<", '<img src=x onerror="alert(1)">', output, "event_handler"),
        ("a-", " javascript:alert(1)", output, "script_url"),
        ("A ", "Rustic Oak Candle Lantern", grounding, "invented_product"),
    ],
)
def test_what_follows_a_long_hostile_run_is_found(filler: str, tail: str, rail: object, rule: str) -> None:
    text = filler * 8000 + tail
    check = rail.check  # type: ignore[attr-defined]
    verdict = check(text, ctx()) if rail is grounding else check(text, ctx(), part="body")
    assert not verdict.passed
    assert rule in {f.rule for f in verdict.findings}
