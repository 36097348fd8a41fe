"""Small text helpers shared by the rails."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from urllib.parse import urlsplit

__all__ = [
    "AMOUNT",
    "EMAIL",
    "LINK",
    "TOKEN",
    "URL",
    "PhraseIndex",
    "email_spans",
    "find_all",
    "find_phrases",
    "link_host",
    "phrase_pattern",
    "tokens",
]

URL = re.compile(r"https?://[^\s<>\"')\]]+", re.IGNORECASE)

# An e-mail address. It starts where its local part starts: without the look-behind a long run of word
# characters with no "@" is read again from each of its positions, in time the square of its length.
EMAIL = r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
_EMAIL = re.compile(EMAIL)
_EMAIL_AT = re.compile(EMAIL.removeprefix(r"(?<![\w.+-])"))


def email_spans(text: str) -> Iterator[tuple[int, int]]:
    """The spans ``re.finditer(r"[\\w.+-]+@[\\w-]+(?:\\.[\\w-]+)+")`` gives, in time linear in the text.

    The look-behind alone misses one case: an address that starts right where the last one ended, inside
    what reads as one run ("a@b.c+d@e.f" is "a@b.c" then "+d@e.f"). One anchored try at each match's end
    covers it; a later start in the same run could match only if that try did.
    """
    pos, after_match = 0, False
    while True:
        m = _EMAIL_AT.match(text, pos) if after_match else None
        if m is None:
            m = _EMAIL.search(text, pos)
        if m is None:
            return
        yield m.span()
        pos, after_match = m.end(), True


# ISO 4217 codes a reader takes for money: the grounding rail checks the amounts they mark, and the brand rail
# does not read them as shouting. A shop's own currency counts too, listed here or not ("TRY" is left out:
# "TRY IT" is shouting, unless the shop trades in lira).
CURRENCY_CODES = (
    "GBP", "EUR", "USD", "TWD", "NTD", "JPY", "CNY", "RMB", "HKD", "SGD", "MYR", "THB", "KRW", "INR", "IDR",
    "PHP", "VND", "AUD", "NZD", "CAD", "MXN", "BRL", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK", "HUF", "RON",
    "ILS", "ZAR", "AED", "SAR",
)  # fmt: skip

# A number as an amount is written: a comma is a thousands separator only when exactly three digits follow,
# so "£50, as always" is £50 and "£1,250.00" is one amount.
AMOUNT = r"\d+(?:,\d{3}(?!\d))*(?:\.\d+)?"

_HOST = r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}(?::\d{1,5})?"
_PATH = r"[^\s<>\"')\]]*"
# Every link a reader could follow: with a scheme; scheme-relative ("//host/…"); a bare "www." host; or a bare
# domain with a path ("shop.example/sale"). Not preceded by "@" or a host character, so the domain of an email
# address is not a link.
LINK = re.compile(
    rf"https?://[^\s<>\"')\]]+"
    rf"|(?<![\w:/@.-])//{_HOST}(?:/{_PATH})?"
    rf"|(?<![\w@./-])www\.{_HOST}(?:/{_PATH})?"
    rf"|(?<![\w@./-]){_HOST}/{_PATH}",
    re.IGNORECASE,
)
_TRAILING = ".,;:!?"

# Words and single punctuation marks: the units product titles are indexed and looked up by.
TOKEN = re.compile(r"\w+|[^\w\s]")


def link_host(link: str) -> str:
    """The host a link goes to, lower-cased ("" when it has none); a link without a scheme is read as one."""
    link = link.rstrip(_TRAILING)
    if not re.match(r"[a-z][a-z0-9+.-]*:", link, re.IGNORECASE) and not link.startswith("//"):
        link = "//" + link
    try:
        return (urlsplit(link).hostname or "").lower()
    except ValueError:  # an invalid port or IPv6 literal: no host anyone may trust
        return ""


def tokens(text: str) -> list[re.Match[str]]:
    return list(TOKEN.finditer(text))


class PhraseIndex:
    """Finds the phrases in a text as ``phrase_pattern`` over them would, without the regex alternation.

    Same semantics: case-insensitive, the exact characters of the phrase (its spacing and punctuation
    included), whole words only, and from left to right the longest phrase starting at each place, with no
    overlaps. Phrases are indexed once by their token tuples; a text is tokenised once and each token start
    looks up the n-grams beginning there, stopping as soon as no phrase begins with them: O(tokens × the
    longest phrase's token count) dictionary lookups, whatever the number of phrases."""

    __slots__ = ("_full", "_prefixes", "heads", "max_n", "parts", "size")

    def __init__(self, phrases: Iterable[str], *, with_parts: bool = False) -> None:
        """``with_parts`` also keeps every run of consecutive words of every phrase (``parts``) and each
        phrase's last word (``heads``): what telling a part of a real name from an invented one takes."""
        self._full: dict[tuple[str, ...], frozenset[str]] = {}
        self._prefixes: set[tuple[str, ...]] = set()
        self.parts: set[tuple[str, ...]] = set()
        self.heads: set[str] = set()
        grouped: dict[tuple[str, ...], set[str]] = {}
        for phrase in phrases:
            phrase = phrase.strip()
            key = tuple(t.lower() for t in TOKEN.findall(phrase))
            if key:
                grouped.setdefault(key, set()).add(phrase.lower())
        for key, spellings in grouped.items():
            self._full[key] = frozenset(spellings)
            self._prefixes.update(key[:n] for n in range(1, len(key) + 1))
            if with_parts:
                words = tuple(t for t in key if t[0].isalnum())
                self.heads.add(words[-1] if words else key[-1])
                self.parts.update(words[a:b] for a in range(len(words)) for b in range(a + 1, len(words) + 1))
        self.max_n = max((len(k) for k in grouped), default=0)
        self.size = len(grouped)

    def longest_at(self, text: str, toks: Sequence[re.Match[str]], keys: Sequence[str], i: int) -> int:
        """The end offset of the longest phrase starting at token ``i`` (-1 when none)."""
        start = toks[i].start()
        if start > 0 and _is_word(text[start - 1]):
            return -1
        best = -1
        for n in range(1, min(self.max_n, len(toks) - i) + 1):
            key = tuple(keys[i : i + n])
            if key not in self._prefixes:
                break
            spellings = self._full.get(key)
            if spellings is None:
                continue
            end = toks[i + n - 1].end()
            if text[start:end].lower() in spellings and (end == len(text) or not _is_word(text[end])):
                best = end
        return best


def find_phrases(
    indexes: Sequence[PhraseIndex], text: str, toks: Sequence[re.Match[str]] | None = None
) -> Iterator[tuple[int, int]]:
    """The spans of the phrases of any of the indexes in the text, as ``PhraseIndex`` describes."""
    toks = tokens(text) if toks is None else toks
    keys = [t.group().lower() for t in toks]
    i = 0
    while i < len(toks):
        end = max((index.longest_at(text, toks, keys, i) for index in indexes), default=-1)
        if end < 0:
            i += 1
            continue
        yield toks[i].start(), end
        while i < len(toks) and toks[i].start() < end:
            i += 1


_WORD = re.compile(r"\w")


def _is_word(char: str) -> bool:
    return _WORD.match(char) is not None


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
