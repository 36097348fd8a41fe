"""Grounding: every product, SKU, price, amount, percentage, offer, date and URL in the text is a fact
from the plan and the catalog, written exactly as the catalog has it."""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date
from functools import lru_cache

from guardrails._text import AMOUNT, CURRENCY_CODES, LINK, PhraseIndex, find_phrases, tokens
from guardrails.base import Finding, RailContext, Verdict
from tailor.core.models import Item, format_price

__all__ = ["check", "name", "warm"]

name = "grounding"

# Currencies a reader takes for money, by symbol, ISO code or word, before or after the amount ("NT$120",
# "120.00 TWD", "TWD 120", "¥900"). The shop's own currency joins them (``_money``), so a retailer trading
# in a currency not listed here still has its amounts checked.
_SYMBOLS = r"[£€$¥₩₹₽₺₪฿₫₱]"
_WORDS = r"pounds?|euros?|dollars?|yen|yuan"


@lru_cache(maxsize=8)
def _money(currency: str) -> re.Pattern[str]:
    codes = "|".join(CURRENCY_CODES if currency in CURRENCY_CODES else (*CURRENCY_CODES, re.escape(currency)))
    return re.compile(
        # Codes in capitals only: "give it 1 try" is no amount of Turkish lira.
        rf"(?:{_SYMBOLS}\s?{AMOUNT}|\b(?-i:{codes})\s?{AMOUNT}|\b{AMOUNT}\s?(?:(?-i:{codes})|{_WORDS})\b)",
        re.IGNORECASE,
    )


_LONG_NUMBER = re.compile(r"(?<![\w.,-])[A-Za-z]?\d{4,}(?![\w.,]\d|-\d)")
_PERCENT = re.compile(r"\b\d+(?:\.\d+)?\s?(?:%|per ?cent\b)", re.IGNORECASE)
# Any wording of a deal. Only the brand's allowed offers, each written whole (condition and amount included),
# may carry one: "free delivery" on its own is not "free delivery on orders over £50".
_OFFER_WORDS = re.compile(
    r"\b(?:discount(?:s|ed)?|vouchers?|coupons?|promo(?:tion(?:al)?)?(?: codes?)?|(?:offer|gift) codes?"
    r"|(?:use|enter|apply|quote|with)\s+(?:the\s+|this\s+|our\s+|my\s+)?code\b|codes?:?\s+[a-z]*\d[a-z\d]*"
    r"|% off|half[- ]price|sale price|on sale|clearance|special offer|exclusive offer|money off|price drop"
    r"|free (?:gifts?|delivery|shipping|postage|p&p|returns?|gift[- ]wrap(?:ping)?|wrapping|samples?)"
    r"|for free|free of charge|cashback|cash back|bogof?"
    r"|buy\s+(?:one|two|three|a|any|\d+)\b,?\s+get\b"
    r"|get\s+(?:one|another|a second|the second|\d+)(?:\s+\w+)?\s+(?:free|half[- ]price)"
    r"|(?:\d+|one|two|three|four|five|six)\s+for\s+(?:the\s+price\s+of\s+)?(?:\d+|one|two|three|four|five)\b"
    r"|(?:for\s+)?the\s+price\s+of\s+(?:one|two|\d+))\b",
    re.IGNORECASE,
)
# Whole month names or their abbreviations only: "Dec[a-z]*" read the product "Decoupage" as a date.
_MONTHS = {
    "jan": 1,
    "feb": 2,
    "mar": 3,
    "apr": 4,
    "may": 5,
    "jun": 6,
    "jul": 7,
    "aug": 8,
    "sep": 9,
    "oct": 10,
    "nov": 11,
    "dec": 12,
}
_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?"
    r"|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
# Numeric dates in every order a reader takes for one: ISO (2011-12-20, 2011/12/20) and day first
# (20/12/2011, 16.12.2011, 20-12-11). Not part of a longer run of numbers (a version, a decimal, an IP).
_NOT_BEFORE = r"(?<![\d./-])"
_NOT_AFTER = r"(?!\d|[./-]\d)"
_DATE = re.compile(
    rf"{_NOT_BEFORE}(?P<iy>\d{{4}})(?P<isep>[-/.])(?P<im>\d{{1,2}})(?P=isep)(?P<id>\d{{1,2}}){_NOT_AFTER}"
    rf"|{_NOT_BEFORE}(?P<na>\d{{1,2}})(?P<nsep>[-/.])(?P<nb>\d{{1,2}})(?P=nsep)(?P<ny>\d{{4}}|\d{{2}}){_NOT_AFTER}"
    rf"|\b(?P<dd>\d{{1,2}})(?:st|nd|rd|th)? (?P<dm>{_MONTH})(?: (?P<dy>\d{{4}}))?\b"
    rf"|\b(?P<mm>{_MONTH}) (?P<md>\d{{1,2}})(?:st|nd|rd|th)?(?:,? (?P<my>\d{{4}}))?\b"
)
_SKU = re.compile(r"\b\d{5}[A-Z]{0,2}\b")
# Template slots a model copied instead of filling ("[product_id]", "{{ name }}", "<customer_name>").
_PLACEHOLDER = re.compile(r"\[[A-Za-z_ ]{2,30}\]|\{\{?\s*[A-Za-z_]+\s*\}?\}|<[a-z]+_[a-z_]+>")
_SCHEME = re.compile(r"^(?:https?:)?//", re.IGNORECASE)

# (year or None, month, day): a date as the reader takes it, however it is written.
DateKey = tuple[int | None, int, int]


def _valid(year: int | None, month: int, day: int) -> DateKey | None:
    try:
        date(year or 2000, month, day)  # 2000 is a leap year: "29 Feb" without a year is a date
    except ValueError:
        return None
    return (year, month, day)


def _date_key(m: re.Match[str]) -> DateKey | None:
    """The date a match reads as; None when it is no real date (then it is never grounded)."""
    g = m.groupdict()
    if g["iy"]:
        return _valid(int(g["iy"]), int(g["im"]), int(g["id"]))
    if g["na"]:
        year = int(g["ny"]) + (2000 if len(g["ny"]) == 2 else 0)
        a, b = int(g["na"]), int(g["nb"])
        # The brand writes day first (a British shop); month first only where day first is no date at all.
        return _valid(year, b, a) or _valid(year, a, b)
    day, month, written_year = (g["dd"], g["dm"], g["dy"]) if g["dd"] else (g["md"], g["mm"], g["my"])
    return _valid(int(written_year) if written_year else None, _MONTHS[month[:3].lower()], int(day))


def _fact_dates(facts: str) -> set[DateKey]:
    return {key for m in _DATE.finditer(facts) if (key := _date_key(m)) is not None}


def _grounded_date(m: re.Match[str], fact_dates: set[DateKey]) -> bool:
    # Compared as dates, not as strings: "3 Dec" is not grounded by "13 Dec 2011", "20/12/2011" is by
    # "2011-12-20".
    key = _date_key(m)
    if key is None:
        return False
    year, month, day = key
    # Without a year on one side, the day and month must agree; with both, the year too.
    return any(
        (fm, fd) == (month, day) and (year is None or fy is None or fy == year) for fy, fm, fd in fact_dates
    )


# The catalog's title index, built once per catalog object (``warm``) and kept with a reference to it, so the
# object's id stays its own, and with the size it had (a catalog that grew or shrank is indexed again). A
# catalog seen for the first time (the eval's per-case copies of a warmed catalog plus a few items) reuses a
# warmed index and indexes only the items it adds or retitles.
_Cached = tuple[Mapping[str, Item], int, tuple[PhraseIndex, ...]]
_WARM: OrderedDict[int, _Cached] = OrderedDict()
_SEEN: OrderedDict[int, _Cached] = OrderedDict()
_LOCK = threading.Lock()
_MAX_WARM, _MAX_SEEN = 4, 16


def _indexed(item: Item) -> bool:
    # One-word or very short titles are too easily ordinary words; two words and ten letters ("Daisy
    # Journal") are already a product name, and a fabricated one must not slip through.
    return len(item.title) >= 10 and len(item.title.split()) >= 2


def _build(items: Iterable[Item]) -> PhraseIndex:
    return PhraseIndex((i.title for i in items if _indexed(i)), with_parts=True)


# Words that open a noun phrase but are never the start of a product's own name.
_OPENERS = {
    "a",
    "an",
    "the",
    "our",
    "your",
    "my",
    "his",
    "her",
    "their",
    "its",
    "this",
    "these",
    "that",
    "those",
    "dear",
    "hi",
    "hello",
    "every",
    "each",
    "any",
    "some",
    "both",
}
# Words that end product names in any home and gift shop, beside the heads the catalog's own titles give: a
# catalog of a few items (a new shop, a test) still knows a lantern is a product.
_PRODUCT_HEADS = frozenset(
    """bag bags basket baskets bottle bowl bowls box boxes bunting candle candles card cards case clock
    coaster coasters cup cups cushion cushions decoration decorations dish doormat frame frames garland
    glass glasses holder holders hook hooks jar jars jug kit lamp lantern lanterns light lights mat mats
    mug mugs napkins notebook ornament ornaments pot pots print purse rack sign set sets stand sticker
    stickers teapot throw tin tins tray trays vase wreath""".split()  # noqa: SIM905
)
_SENTENCE_END = re.compile(r"(?:^|[.!?:;\n\"'(])\s*$")
# Joiners that may sit inside a product name ("Set of 3", "Salt & Pepper", "T-Light", "Children's").
_JOINERS = {"of", "and", "&", "-", "'", "’"}


def _name_runs(toks: Sequence[re.Match[str]]) -> Iterator[list[re.Match[str]]]:
    """Runs of capitalised words (and numbers), joined by the joiners a product name uses: the shape of a
    name in running text, "our Rustic Oak Candle Lantern", whatever the catalog holds."""
    run: list[re.Match[str]] = []
    for i, tok in enumerate(toks):
        word = tok.group()
        named = word[0].isupper() or (word.isdigit() and bool(run))
        joined = (
            bool(run)
            and word.lower() in _JOINERS
            and i + 1 < len(toks)
            and toks[i + 1].group()[0].isupper()
            and (word.isalpha() or tok.end() == toks[i + 1].start())
        )
        if named or joined:
            run.append(tok)
            continue
        if run:
            yield run
        run = []
    if run:
        yield run


def _invented(
    text: str,
    toks: Sequence[re.Match[str]],
    indexes: Sequence[PhraseIndex],
    known: list[tuple[int, int]],
    facts_lower: str,
) -> list[Finding]:
    """Names shaped like the catalog's that no catalog title holds: "our Rustic Oak Candle Lantern" in a
    catalog with lanterns but no such one. A run of capitalised words is a product name when it ends in a
    word that ends a catalog title (Lantern, Holder, Bag) and, once words no title uses are trimmed from its
    front (a sentence's first word, "Our", "Dear"), still has two words; it is grounded when those words
    run, in order, inside some catalog title, or the customer's facts hold it."""
    out: list[Finding] = []
    for run in _name_runs(toks):
        start, end = run[0].start(), run[-1].end()
        if any(a <= start and end <= b for a, b in known):
            continue
        words = [t for t in run if t.group()[0].isalnum()]
        keys = [t.group().lower() for t in words]
        # A sentence's first word is capitalised whatever it is: it joins the name only if titles use it.
        first = words[0].start() if words else 0
        opens = first == 0 or bool(_SENTENCE_END.search(text[max(0, first - 3) : first]))
        # Trimmed by an index, not by slicing at each word: "A A A …" thousands long would cost its square.
        cut = 0
        while cut < len(keys) and (
            keys[cut] in _OPENERS or (opens and not any((keys[cut],) in ix.parts for ix in indexes))
        ):
            cut += 1
            opens = False
        keys, words = keys[cut:], words[cut:]
        if len(keys) < 2 or not (keys[-1] in _PRODUCT_HEADS or any(keys[-1] in ix.heads for ix in indexes)):
            continue
        if any(tuple(keys) in ix.parts for ix in indexes):
            continue
        name = text[words[0].start() : end]
        if name.lower() in facts_lower:
            continue
        out.append(
            Finding("invented_product", f"product {name!r} is in no catalog title", words[0].start(), end)
        )
    return out


def _cached(cache: OrderedDict[int, _Cached], catalog: Mapping[str, Item]) -> tuple[PhraseIndex, ...] | None:
    hit = cache.get(id(catalog))
    if hit is None or hit[0] is not catalog or hit[1] != len(catalog):
        return None
    cache.move_to_end(id(catalog))
    return hit[2]


def _store(
    cache: OrderedDict[int, _Cached], catalog: Mapping[str, Item], indexes: tuple[PhraseIndex, ...]
) -> None:
    cache[id(catalog)] = (catalog, len(catalog), indexes)
    cache.move_to_end(id(catalog))
    while len(cache) > (_MAX_WARM if cache is _WARM else _MAX_SEEN):
        cache.popitem(last=False)


def warm(catalog: Mapping[str, Item]) -> None:
    """Index the catalog's titles ahead of the first check (it takes a while on a big catalog)."""
    with _LOCK:
        if _cached(_WARM, catalog) is not None:
            return
    index = _build(catalog.values())
    with _LOCK:
        _store(_WARM, catalog, (index,))
        _SEEN.pop(id(catalog), None)


def _title_indexes(catalog: Mapping[str, Item]) -> tuple[PhraseIndex, ...]:
    with _LOCK:
        hit = _cached(_WARM, catalog) or _cached(_SEEN, catalog)
        if hit is not None:
            return hit
        bases = [(ref, indexes) for ref, size, indexes in reversed(_WARM.values()) if len(ref) == size]
    found: tuple[PhraseIndex, ...] | None = None
    for ref, indexes in bases:
        added = [
            item for k, item in catalog.items() if (old := ref.get(k)) is None or old.title != item.title
        ]
        # A base the catalog mostly shares: its titles and the few the catalog adds. A base title the
        # catalog no longer has can only be flagged as a product outside the plan: failing closed. Both
        # ways "mostly": a small catalog of other items is not a variant of a big warmed one, and checked
        # over its titles it would find its own short titles "invented", unlike in a process that warmed
        # nothing.
        kept = len(catalog) - len(added)
        if len(added) <= max(64, len(catalog) // 10) and kept >= len(ref) - max(64, len(ref) // 10):
            found = (*indexes, _build(added)) if added else indexes
            break
    if found is None:
        found = (_build(catalog.values()),)
    with _LOCK:
        _store(_SEEN, catalog, found)
    return found


def check(text: str, context: RailContext, *, part: str | None = None) -> Verdict:
    start = time.perf_counter()
    findings: list[Finding] = []
    plan = [context.catalog[i] for i in context.plan_item_ids if i in context.catalog]
    plan_ids = {i.id for i in plan}
    prices = {format_price(i.price, i.currency).replace(" ", "") for i in plan}
    facts = context.extra.get("facts", "")
    facts_lower = facts.lower()

    # An allowed offer counts only written whole, in its words in order (any spacing, any case).
    offer_spans: list[tuple[int, int]] = []
    for offer in context.allowed_offers:
        words = offer.split()
        if not words:
            continue
        pattern = r"(?<!\w)" + r"\s+".join(re.escape(w) for w in words) + r"(?!\w)(?![.,]\d)"
        offer_spans.extend(m.span() for m in re.finditer(pattern, text, re.IGNORECASE))

    plan_titles = {i.title.lower() for i in plan}
    title_spans: list[tuple[int, int]] = []  # the product names the text may name: planned or in the facts
    unplanned: list[Finding] = []
    indexes = _title_indexes(context.catalog)
    toks = tokens(text)
    for s, e in find_phrases(indexes, text, toks):
        title = text[s:e].lower()
        if title in plan_titles or title in facts_lower:
            title_spans.append((s, e))
        else:
            unplanned.append(Finding("unplanned_product", f"product {text[s:e]!r} is not in the plan", s, e))

    def inside(m: re.Match[str], spans: list[tuple[int, int]]) -> bool:
        return any(a <= m.start() and m.end() <= b for a, b in spans)

    for m in _money(context.brand.currency).finditer(text):
        if inside(m, offer_spans):
            continue
        if m.group().replace(" ", "") not in prices:
            findings.append(
                Finding(
                    "ungrounded_price",
                    f"amount {m.group()!r} is not the price of a planned product",
                    m.start(),
                    m.end(),
                )
            )
    for m in _PERCENT.finditer(text):
        if not inside(m, offer_spans):
            findings.append(
                Finding("ungrounded_percentage", f"{m.group()!r} is not an allowed offer", m.start(), m.end())
            )
    for m in _OFFER_WORDS.finditer(text):
        if not inside(m, offer_spans) and not inside(m, title_spans):
            findings.append(
                Finding(
                    "unapproved_offer",
                    f"offer {m.group()!r} is not in the brand's allowed offers",
                    m.start(),
                    m.end(),
                )
            )
    fact_dates = _fact_dates(facts) if facts else set()
    for m in _DATE.finditer(text):
        if not _grounded_date(m, fact_dates):
            findings.append(
                Finding(
                    "ungrounded_date",
                    f"date {m.group()!r} is not a fact of this customer",
                    m.start(),
                    m.end(),
                )
            )
    allowed_urls = {i.url for i in plan} | set(context.extra.get("urls", "").split())
    for m in LINK.finditer(text):
        url = m.group().rstrip(".,;:!?")
        bare = not re.match(r"https?://", url, re.IGNORECASE)
        # A link written without its scheme is grounded when the planned link is that link with one.
        if url in allowed_urls or (
            bare and any(s + _SCHEME.sub("", url) in allowed_urls for s in ("https://", "http://"))
        ):
            continue
        findings.append(
            Finding(
                "ungrounded_url",
                f"link {url!r} is not a planned product's link",
                m.start(),
                m.start() + len(url),
            )
        )
    for m in _SKU.finditer(text):
        if (
            m.group() in context.catalog
            and m.group() not in plan_ids
            and m.group() not in facts
            and not inside(m, title_spans)  # a number in a planned product's own name ("… Waterpump 17096")
        ):
            findings.append(
                Finding("ungrounded_sku", f"SKU {m.group()!r} is not a planned product", m.start(), m.end())
            )
    if context.purpose == "support":
        # What an agent says stands on the customer's own facts: an order number, or any number as long,
        # that the facts do not hold is one a writer made up.
        for m in _LONG_NUMBER.finditer(text):
            if m.group() not in facts and not inside(m, title_spans) and not inside(m, offer_spans):
                findings.append(
                    Finding(
                        "ungrounded_number",
                        f"number {m.group()!r} is not in this customer's facts",
                        m.start(),
                        m.end(),
                    )
                )
    for m in _PLACEHOLDER.finditer(text):
        findings.append(Finding("placeholder", f"unfilled placeholder {m.group()!r}", m.start(), m.end()))
    findings.extend(unplanned)
    findings.extend(
        _invented(text, toks, indexes, title_spans + [(u.start, u.end) for u in unplanned], facts_lower)
    )
    return Verdict(name, not findings, tuple(findings), (time.perf_counter() - start) * 1000)
