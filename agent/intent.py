"""What a support question is about: its intent (offline, by the store's own sentence encoder) and its
entities (by rules: order ids, products, months, amounts).

The intent model needs no training and no model of its own: each intent has a handful of example questions
(``agent/intents.toml``), embedded once by the encoder the store already uses for search. A question takes
the intent whose two nearest examples are closest, with a small lift for an intent it names outright
("refund", "cassé"); below ``MIN_CONFIDENCE`` it is ``other`` and the answer stays general. Entities are
read against the customer's own orders and the catalog, so an order number that is not hers is found to be
no order of hers, not taken on trust.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from difflib import get_close_matches
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from tailor.core.models import Event, EventKind, Item

__all__ = [
    "INTENTS",
    "MIN_CONFIDENCE",
    "Entities",
    "Intent",
    "IntentGuess",
    "IntentModel",
    "read_entities",
]

Intent = Literal[
    "late_delivery",
    "return_refund",
    "damaged_item",
    "product_question",
    "gift_idea",
    "email_complaint",
    "account_consent",
    "other",
]
INTENTS: tuple[Intent, ...] = get_args(Intent)
EXAMPLES = Path(__file__).resolve().parent / "intents.toml"
# Chosen on the development questions (evals/data/support_questions.jsonl), never on the held-out ones.
MIN_CONFIDENCE = 0.30
_WORD_LIFT = 0.12

Encode = Callable[[Sequence[str]], npt.NDArray[np.float32]]


def fold(text: str) -> str:
    """Lower case without accents or apostrophe variants: "Arrivée" and "arrivee" read the same."""
    text = unicodedata.normalize("NFKD", text.replace("’", "'")).encode("ascii", "ignore").decode()
    return text.lower()


@dataclass(frozen=True)
class IntentGuess:
    intent: Intent
    confidence: float  # cosine of the nearest examples, plus the lift of a named word
    scores: Mapping[str, float]
    # The question names the intent outright ("late", "cassé", "refund"), not only reads like it: amends are
    # offered for a problem the question names, never for one it only resembles.
    named: bool = False


@lru_cache(maxsize=1)
def _examples() -> tuple[tuple[tuple[Intent, str], ...], dict[Intent, tuple[str, ...]]]:
    raw = tomllib.loads(EXAMPLES.read_text(encoding="utf-8"))
    unknown = set(raw) - set(INTENTS)
    if unknown:
        raise ValueError(f"{EXAMPLES}: unknown intents {sorted(unknown)}")
    pairs = tuple((intent, text) for intent in INTENTS for text in raw.get(intent, {}).get("examples", ()))
    words = {intent: tuple(fold(w) for w in raw.get(intent, {}).get("words", ())) for intent in INTENTS}
    return pairs, words


def _named(folded: str, word: str) -> bool:
    return re.search(rf"(?<![a-z]){re.escape(word)}(?![a-z])", folded) is not None


class IntentModel:
    """Nearest examples by the store's sentence encoder, built once per encoder (the examples' vectors).
    Without an encoder (a store with no model loaded) only the words that name an intent count."""

    def __init__(self, encode: Encode | None, *, examples: Encode | None = None) -> None:
        """``encode`` embeds the questions; ``examples`` the shop's examples (default ``encode``): the
        service caches the examples and never the questions."""
        self._encode = encode
        pairs, self._words = _examples()
        self._labels = np.array([intent for intent, _ in pairs])
        embed_examples = examples or encode
        self._vectors = (
            _unit(embed_examples([text for _, text in pairs])) if embed_examples is not None else None
        )

    def guess(self, question: str) -> IntentGuess:
        similarity = None
        if self._encode is not None and self._vectors is not None:
            similarity = self._vectors @ _unit(self._encode([question]))[0]
        # "Invoice 577279" refers to an order; it does not ask for an invoice: a reference is no named word.
        folded = fold(_ORDER_WORD.sub(" ", question))
        scores: dict[str, float] = {}
        for intent in INTENTS:
            near = 0.0
            if similarity is not None:
                own = np.sort(similarity[self._labels == intent])[::-1]
                near = float(own[:2].mean()) if len(own) else 0.0
            words = sum(_named(folded, w) for w in self._words[intent])
            # Words alone: each one that names the intent counts, so that "late" and "parcel" beat "parcel".
            lift = _WORD_LIFT if similarity is not None and words else _WORD_LIFT * 3 * min(words, 3)
            scores[intent] = round(near + lift, 4)
        best = max(INTENTS, key=lambda i: scores[i])
        if scores[best] < MIN_CONFIDENCE:
            return IntentGuess("other", scores[best], scores)
        named = any(_named(folded, w) for w in self._words[best])
        return IntentGuess(best, scores[best], scores, named=named)


def _unit(matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    m = np.asarray(matrix, dtype=np.float32)
    unit: npt.NDArray[np.float32] = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)
    return unit


# -- entities ---------------------------------------------------------------------------------------------

# A number the question says is an order: after "order", "invoice", "commande", "#"..., or any token that is
# one of her own order ids (any store's ids, whatever their shape).
_ORDER_WORD = re.compile(
    r"(?<![\w-])(?:orders?|ordr|oder|invoices?|receipt|commandes?|comande|facture|bestellung|rechnung|#|n°|no\.|nr\.)"
    r"[\s:#(-]*(?:(?:number|num(?:e|é)ro|ref(?:erence)?|id|no\.?|nr\.?|n°|n\.)[\s:#.-]*)?"
    r"((?:[A-Za-z]{0,3}\d[\w-]{3,19})(?:(?:\s*(?:,|and|et|&)\s*)[A-Za-z]{0,3}\d[\w-]{3,19})*)",
    re.IGNORECASE,
)
_ID = re.compile(r"[A-Za-z]{0,3}\d[\w-]{3,19}")
# Not an order number, whatever word comes before it: a date, an ordinal, a year.
_NOT_AN_ID = re.compile(
    r"^(?:\d{4}-\d{1,2}(?:-\d{1,2})?|\d{1,2}(?:st|nd|rd|th|er|e)|(?:19|20)\d{2})$", re.IGNORECASE
)
_TOKEN = re.compile(r"[A-Za-z0-9][\w-]*")
_LAST = re.compile(
    r"\b(?:last|latest|most recent|recent|previous|derni[eè]re|dernier|r[ée]cente?)\b", re.IGNORECASE
)
_MONTH_NAMES = {
    **{m: n for n, m in enumerate(("january", "february", "march", "april", "may", "june", "july", "august",
                                   "september", "october", "november", "december"), start=1)},
    **{m: n for n, m in enumerate(("janvier", "fevrier", "mars", "avril", "mai", "juin", "juillet", "aout",
                                   "septembre", "octobre", "novembre", "decembre"), start=1)},
}  # fmt: skip
# A month as a time ("in May", "en novembre", "on 6 November"), not the verb "may" or "to march".
_MONTH = re.compile(rf"\b(?:in|from|since|during|of|en|de|depuis|\d{{1,2}})\s+({'|'.join(_MONTH_NAMES)})\b")
_AMOUNT = re.compile(
    r"(?:[£€$]\s?\d+(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?\s?(?:£|€|\$|eur|euros?|gbp|pounds?))"
)
_STOP = frozenset(
    [
        "the",
        "and",
        "for",
        "with",
        "from",
        "this",
        "that",
        "her",
        "his",
        "their",
        "she",
        "he",
        "they",
        "our",
        "your",
        "you",
        "are",
        "was",
        "were",
        "has",
        "have",
        "had",
        "not",
        "any",
        "can",
        "could",
        "would",
        "will",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "how",
        "does",
        "did",
        "its",
        "it's",
        "set",
        "pack",
        "box",
        "of",
        "les",
        "des",
        "une",
        "pour",
        "avec",
        "dans",
        "est",
        "sur",
        "pas",
        "que",
        "qui",
        "elle",
        "il",
        "son",
        "ses",
    ]
)


# Title words by item, items by title word, and title words by (first letter, length) for misspellings.
_Index = tuple[dict[str, frozenset[str]], dict[str, frozenset[str]], dict[tuple[str, int], tuple[str, ...]]]


@dataclass(frozen=True)
class Entities:
    """What the question names. ``order_ids``: her orders it names (or means: "her last order");
    ``unknown_order_ids``: numbers it calls orders that are none of hers; ``item_ids``: products it names,
    her own purchases first; ``months``: months it names (1-12); ``amounts``: sums of money as written."""

    order_ids: tuple[str, ...] = ()
    unknown_order_ids: tuple[str, ...] = ()
    item_ids: tuple[str, ...] = ()
    months: tuple[int, ...] = ()
    amounts: tuple[str, ...] = ()
    by_reference: bool = False  # an order meant, not numbered ("her last order")
    words: tuple[str, ...] = field(default=(), repr=False)


def _words(text: str) -> list[str]:
    return [w for w in (fold(t) for t in _TOKEN.findall(text)) if len(w) >= 3 and w not in _STOP]


_INDEXES: dict[int, tuple[Mapping[str, Item], _Index]] = {}


def _index_of(catalog: Mapping[str, Item]) -> _Index:
    """The title index of this catalog object, built on its first question (the catalog of a recommender
    is one object for its life; a new catalog is a new object)."""
    kept = _INDEXES.get(id(catalog))
    if kept is not None and kept[0] is catalog:
        return kept[1]
    index = _title_index(tuple((i.id, i.title) for i in catalog.values() if i.named))
    if len(_INDEXES) >= 4:
        _INDEXES.clear()
    _INDEXES[id(catalog)] = (catalog, index)
    return index


def _title_index(
    titles: tuple[tuple[str, str], ...],
) -> _Index:
    words = {item_id: frozenset(_words(title)) for item_id, title in titles}
    postings: dict[str, set[str]] = {}
    for item_id, ws in words.items():
        for w in ws:
            postings.setdefault(w, set()).add(item_id)
    # A misspelt word is compared only with title words of its first letter and about its length: the
    # whole vocabulary, word by word, took a third of a second a question.
    near: dict[tuple[str, int], list[str]] = {}
    for w in postings:
        near.setdefault((w[0], len(w)), []).append(w)
    return words, {w: frozenset(ids) for w, ids in postings.items()}, {k: tuple(v) for k, v in near.items()}


def _products(asked: Sequence[str], catalog: Mapping[str, Item], own: Sequence[str]) -> tuple[str, ...]:
    """Items whose title the question names: most of a title's words (typos forgiven), her items first."""
    words, postings, near = _index_of(catalog)
    said: set[str] = set()
    for w in asked:
        if w in postings:
            said.add(w)
        elif len(w) >= 5 and not w.isdigit():
            pool = [v for n in (len(w) - 1, len(w), len(w) + 1) for v in near.get((w[0], n), ())]
            said.update(get_close_matches(w, pool, n=1, cutoff=0.85))
    scored: list[tuple[float, int, str]] = []
    mine = {item_id: n for n, item_id in enumerate(own)}
    candidates = {i for w in said for i in postings.get(w, ())}
    for item_id in candidates:
        title = words[item_id]
        hit = len(title & said)
        share = hit / max(len(title), 1)
        # Two words of a title, or all of a one-word title; her own purchases need one word less.
        needed = 1 if item_id in mine else min(2, len(title))
        if (hit >= needed and share >= 0.5) or hit >= 3:
            scored.append((share + (0.5 if item_id in mine else 0.0), -mine.get(item_id, 10**9), item_id))
    scored.sort(reverse=True)
    return tuple(item_id for _, _, item_id in scored[:3])


def read_entities(question: str, *, orders: Sequence[Event], catalog: Mapping[str, Item]) -> Entities:
    """The entities of ``question`` for one customer: ``orders`` are her purchase lines before the clock,
    oldest first."""
    by_order: dict[str, datetime] = {}
    for e in orders:
        if e.kind is EventKind.PURCHASE and e.order_id:
            by_order[e.order_id] = max(by_order.get(e.order_id, e.timestamp), e.timestamp)
    known = {o.lower(): o for o in by_order}
    named: list[str] = []
    unknown: list[str] = []
    for m in _ORDER_WORD.finditer(question):
        for token in _ID.findall(m.group(1)):
            if token.lower() in known:
                named.append(known[token.lower()])
            elif (
                not _NOT_AN_ID.match(token) and token not in catalog and sum(c.isdigit() for c in token) >= 4
            ):
                unknown.append(token)
    for token in _TOKEN.findall(question):
        if token.lower() in known and known[token.lower()] not in named:
            named.append(known[token.lower()])
    unknown = [u for u in dict.fromkeys(unknown) if u.lower() not in known]
    folded = fold(question)
    months = tuple(dict.fromkeys(_MONTH_NAMES[m.group(1)] for m in _MONTH.finditer(folded)))
    by_reference = False
    if not named and not unknown and by_order:
        newest = sorted(by_order, key=lambda o: by_order[o], reverse=True)
        in_month = [o for o in newest if by_order[o].month in months]
        if in_month:
            named, by_reference = [in_month[0]], True
        elif _LAST.search(question) or re.search(
            r"\b(?:order|commande|parcel|colis|delivery|livraison)\b", folded
        ):
            named, by_reference = [newest[0]], True
    own = list(dict.fromkeys(e.item_id for e in reversed(orders) if e.item_id))
    asked = _words(question)
    return Entities(
        order_ids=tuple(dict.fromkeys(named)),
        unknown_order_ids=tuple(unknown),
        item_ids=_products(asked, catalog, own),
        months=months,
        amounts=tuple(m.group(0) for m in _AMOUNT.finditer(question)),
        by_reference=by_reference,
        words=tuple(asked),
    )
