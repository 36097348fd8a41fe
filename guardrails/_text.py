"""Small text helpers shared by the rails."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

__all__ = ["URL", "find_all", "phrase_pattern"]

URL = re.compile(r"https?://[^\s<>\"')\]]+", re.IGNORECASE)


def phrase_pattern(phrases: Iterable[str]) -> re.Pattern[str] | None:
    """One case-insensitive pattern matching any of the phrases as whole words."""
    alternatives = sorted({re.escape(p.strip()) for p in phrases if p.strip()}, key=len, reverse=True)
    if not alternatives:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE)


def find_all(pattern: re.Pattern[str] | None, text: str) -> Iterator[re.Match[str]]:
    if pattern is None:
        return iter(())
    return pattern.finditer(text)
