"""Copy quality: an email part that says nothing does not go out, however safe it is.

The other rails keep an email safe; this one keeps it worth reading. It holds each free-text part (subject,
preheader, intro, one reason per product) to what a marketer would sign, and names what is wrong:

- ``placeholder``: a blank left to fill ("Your Name", "[Product]", "{first_name}", "Lorem ipsum");
- ``echo``: the writer's instructions, rules or the rails' findings written back ("Your previous draft",
  "Answer with the JSON object", "in no catalog title", or five words running from the prompt);
- ``names_only``: a part that is only product names, or only the product's own title;
- ``vague_subject``: a subject that names neither a product, nor the occasion, nor the customer's interest;
- ``vague_preheader``: a preheader that is a heading ("Products and Brands"), not a line to the customer;
- ``no_reason``: a reason that gives no reason tied to the product's evidence;
- ``not_a_sentence``: an intro that is not a sentence to the customer;
- ``third_person``: a part that speaks of the customer instead of to them ("They might be running low");
- ``repeated``: a part that says again what another part of the same email says;
- ``wrong_count``: a reason whose count of purchases is not its product's ("bought this bag 15 times" of one
  bought 7 times);
- ``garbled``: text no person types: a run of dashes or marks ("bought ------"), words strung with slashes
  ("red/black/white/green"), a symbol, fraction or ligature ("⅕ cake tins", "ﬂat"), outside a product's name.

A support agent's talking point (``part="support_point"``) is read in its own register: an agent may say "I
am sorry" and speak as "I". It is held to being a sentence an agent can say (``not_a_sentence``: not a
``key:value`` fragment, an identifier or escaped markup), with no blank (``placeholder``), and not the
request written back (``echo``: its scaffolding, "The agent asks:", "Fact:", or five words running from the
question or the brief, given as ``extra["question"]`` and ``extra["instructions"]``).

Everything is decided by rules, which are fast and need no model, except one question of meaning: a reason
with no word of its evidence may still say it in other words ("It matches the lanterns in your last order").
When the context carries a sentence encoder (``RailContext.similarity``, the store's own embedding model
in the agent) such a reason passes if it is close to its evidence. Without one it is held to the words.

The context says what the email is about: the plan's products (``plan_item_ids``) with their evidence
(``product_evidence``), the action, and in ``extra`` the writer's instructions (``instructions``), the
findings it was last given (``findings``) and every part of the email (``part:NAME``), for repetition.

One module, over 600 lines, as every rail is one module (the NeMo-Guardrails way): its rules share the
context's reading (the brief's words, the evidence's lexicon) and are tuned together on one labelled set."""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

from guardrails.base import Finding, RailContext, Verdict
from tailor.core.models import Evidence

__all__ = ["check", "name"]

name = "copy_quality"

_PARTS = ("subject", "preheader", "intro", "reason")


def _bag(words: str) -> frozenset[str]:
    return frozenset(words.split())


_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)

_STOP = _bag(
    "a an and are as at be been but by for from had has have he her here his i if in into is "
    "it its it's me more most my no not of on or our ours out so some such than that the "
    "their them then there these they this those to too up us very was we were what when "
    "where which who will with would you your yours you'll you're you've we've we're we'll "
    "just also all any one ones few lot lots"
)

# A blank left in the copy: brackets or braces around a word, template syntax ("$name", not a price as
# "NT$350" writes it), or the stock words of a form that was never filled in.
_PLACEHOLDER = re.compile(
    r"\[[^\]\n]{1,40}\]|\{\{?[^{}\n]{1,40}\}?\}|<(?!/?(?:b|i|em|strong|br)\b)[A-Za-z_][\w ]{0,30}>"
    r"|%\(?\w+\)?[sd]|\$\{?(?!\d)\w+\}?|\bX{3,}\b|\blorem ipsum\b|\bTBD\b|\bTODO\b|\bN/A\b"
    r"|\b(?:insert|enter) (?:the |your )?"
    r"(?:name|product|text|here)\b|\bplaceholder\b"
    r"|\b(?:your|first|last|customer(?:'s)?|product|item|brand|company|shop|store|recipient|user)[ _]name\b"
    r"(?!\s+(?-i:[A-Z][a-z]))"
    r"|\b(?:product|item)[ _]?#?\d{1,2}\b|\bdear (?:customer|user|valued customer|sir or madam)\b"
    r"|\b(?:product|item) (?:title|description|details|category)\b",
    re.IGNORECASE,
)

# Words of a writer's brief, not of a letter to a customer: the prompt's own vocabulary, a model talking
# about itself, and the rails' findings.
_ECHO = re.compile(
    r"\b(?:previous draft|(?:the|these|those|my|your) (?:rules|instructions)|broke (?:these|the) rules"
    r"|json|product ids?|item ids?|<<<|>>>|\bdata\b(?= *>>>)|guardrails?|catalog(?:ue)? titles?|findings?"
    r"|banned phrases?|exclamation marks?|the action is|answer with|as an ai"
    r"|(?:a |an )?(?:large )?language model"
    r"|i (?:cannot|can't|am unable|'m unable|am sorry|'m sorry)|here (?:is|are) (?:the|your|a) "
    r"(?:email|subject|preheader|intro|reason|draft|json|copy|text)"
    r"|^(?:subject|preheader|intro|introduction|reason|reasons|body|email)\s*[:\-]"
    r"|(?:the|this) (?:subject|preheader|intro)(?: line)?\b"
    r"|(?:address|addressing) the customer|the customer(?:'s)?\b"
    r"|marketing emails?|write only|free text|fix them|one sentence on why|do not (?:write|use)"
    r"|under \d+ characters|capital[- ]letter|product descriptions?"
    r"|the (?:facts|evidence|category) (?:is|are|says?)|\bthe facts about\b|\bwe(?:'re| are) talking about\b"
    r"|(?:this|the) reason (?:for|is|why)|no catalog|worked example|example (?:email|answer)|why line"
    r"|^\s*(?:sure|certainly|of course|okay|ok|as requested|as asked)\b[^.\n]{0,40}[:!]"
    r"|here(?:'s| is) (?:a|an|the|your) (?:subject|preheader|preview|intro|opening|reason|sentence|line)\b"
    r"|\bone sentence\b|subject line|\bpreheader\b|\bgoes here\b|\b[a-z]+_[a-z_]+\b"
    r"|\bmax(?:imum)? \d+ char|\b\d+ chars\b"
    r"|^(?:why this product|why|tone|summary of evidence|evidence|facts|occasion|customer|product|products|"
    r"voice|action|output|answer|text)\s*:)",
    re.IGNORECASE | re.MULTILINE,
)

# Words that say why a product suits this customer, by the kind of evidence behind it. A reason must use
# one (or a content word of its evidence's own summary) to count as a reason.
_WHY_WORDS: Mapping[str, frozenset[str]] = {
    "repeat_purchase": _bag(
        "bought order ordered orders again regular regulars restock usual times running reorder staple "
        "staples"
    ),
    "similar_customers": _bag(
        "customers shoppers people others basket baskets also bought choose chose popular pair pairs "
        "alongside"
    ),
    "text_similarity": _bag(
        "similar goes go match matches matching pair pairs complements complement alongside same style "
        "bought collection set together"
    ),
    "category_affinity": _bag("bought often shop range collection usual regular"),
    "trending": _bag("popular customers trending month week weeks season many shoppers"),
    "popular": _bag("popular customers choose chosen many shoppers bought"),
    "cart": _bag("basket cart left still waiting added saved kept aside"),
    "recent_view": _bag("viewed looked looking browsing browsed saw seen"),
    "support_ticket": _bag("asked ticket help support contacted"),
}
_ANY_WHY = frozenset().union(*_WHY_WORDS.values())
_NO_EVIDENCE_WHY = _bag("popular customers choose shoppers")

# The occasion each action is, in the words a subject may use for it.
_OCCASION: Mapping[str, frozenset[str]] = {
    "abandoned_cart": _bag("basket cart left waiting still saved forget forgot"),
    "replenishment": _bag("restock stock running low again time top reorder refill supply"),
    "win_back": _bag("miss missed back while saved return welcome"),
    "recommend": _bag("picked chosen pick ideas new favourites selection think like love try discover"),
}
_SECOND_PERSON = _bag("you your you'll you're you've yours")
_SEPARATORS = re.compile(r"[|,;/·•+&\-–—:()\"'“”‘’!?.…]+")
_SENTENCE_END = re.compile(r"[.!?…]['\"’”)]*\s*$")
# How close (cosine) a reason must be to its evidence to tie to it by meaning alone.
REASON_SIMILARITY = 0.45
# Two parts this alike (share of words) say the same thing.
_REPEAT_JACCARD = 0.8


def _words(text: str) -> list[str]:
    return [w.lower().replace("’", "'") for w in _WORD.findall(text)]


def _content(words: Iterable[str]) -> set[str]:
    return {w for w in words if w not in _STOP and len(w) > 1}


def _part_kind(part: str | None) -> str:
    if part is None:
        return "text"
    return "reason" if part.startswith("reason:") else part


def _titles(context: RailContext) -> list[str]:
    titles = [context.catalog[i].title for i in context.plan_item_ids if i in context.catalog]
    return sorted(titles, key=len, reverse=True)


@lru_cache(maxsize=4096)
def _title_pattern(titles: tuple[str, ...]) -> re.Pattern[str] | None:
    if not titles:
        return None
    return re.compile("|".join(re.escape(t) for t in titles), re.IGNORECASE)


def _without_names(text: str, context: RailContext) -> str:
    """The text with the plan's product names, the customer's first name and the shop's name cut out."""
    pattern = _title_pattern(tuple(_titles(context)))
    out = pattern.sub(" ", text) if pattern else text
    for word in (context.customer.first_name, context.brand.name):
        if word:
            out = re.sub(rf"(?<![\w-]){re.escape(word)}(?![\w-])", " ", out, flags=re.IGNORECASE)
    return out


def _interest_words(context: RailContext) -> set[str]:
    """Content words of the plan's products: their names and categories (what the customer is shown)."""
    words: set[str] = set()
    for item_id in context.plan_item_ids:
        item = context.catalog.get(item_id)
        if item is not None:
            words |= {w for w in _content(_words(f"{item.title} {item.category}")) if len(w) > 2}
    return words


def _echo_spans(text: str, context: RailContext, part: str | None = None) -> list[Finding]:
    found = (
        _example_words(text, context, part)
        + _data_format(text, context)
        + [
            Finding("echo", f"reads as the writer's brief: {m.group()!r}", m.start(), m.end())
            for m in _ECHO.finditer(text)
        ]
    )
    if found:
        return found
    summaries = [e.summary for evidence in context.product_evidence.values() for e in evidence]
    own = _content(_words(" ".join([*_titles(context), context.extra.get("facts", ""), *summaries])))
    for key, what in (("instructions", "the writer's instructions"), ("findings", "the rails' findings")):
        source = context.extra.get(key, "")
        if not source:
            continue
        run = 5 if key == "instructions" else 4
        shared = _shared_run(_words(text), _words(source), run, own)
        if shared:
            found.append(Finding("echo", f"repeats {what}: {shared!r}"))
    return found


def _example_words(text: str, context: RailContext, part: str | None = None) -> list[Finding]:
    """The worked example's made-up names (its customer, its products) in this customer's copy: "add this
    mug too" in an email that sells no mug. Words this email's own products, evidence or customer use are
    theirs to use."""
    example = context.extra.get("example", "")
    if not example:
        return []
    # A reason's own words are its product's and that product's evidence's: another product in the email
    # that is a mug does not make "add this mug too" true of this one.
    item = part.removeprefix("reason:") if part and part.startswith("reason:") else None
    if item is not None and item in context.catalog:
        titles = [context.catalog[item].title, context.catalog[item].category]
        summaries = [e.summary for e in context.product_evidence.get(item, ())]
    else:
        titles = [
            *_titles(context),
            *(context.catalog[i].category for i in context.plan_item_ids if i in context.catalog),
        ]
        summaries = [e.summary for ev in context.product_evidence.values() for e in ev]
    own = {_stem(w) for w in _words(" ".join([*titles, *summaries, context.customer.first_name]))}
    borrowed = {_stem(w) for w in _content(_words(example)) if len(w) > 2} - own
    hits = sorted({w for w in _words(text) if _stem(w) in borrowed})
    return [Finding("echo", f"borrows the worked example's names: {', '.join(hits)}")] if hits else []


def _data_format(text: str, context: RailContext) -> list[Finding]:
    """The request's data written as it was given: a product's category in brackets after its name."""
    categories = {context.catalog[i].category for i in context.plan_item_ids if i in context.catalog}
    for category in categories:
        if category and f"({category.lower()})" in text.lower():
            return [Finding("echo", f"writes the data as given: '({category})'")]
    return []


def _shared_run(words: Sequence[str], source: Sequence[str], n: int, own: set[str]) -> str:
    """A run of ``n`` words found in ``source`` too, with at least two content words that are not the
    products' or the evidence's own (those may be quoted), or ``""``."""
    if len(words) < n:
        return ""
    grams = {tuple(source[i : i + n]) for i in range(len(source) - n + 1)}
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        if gram in grams and len({w for w in _content(gram) - own if not w.isdigit()}) >= 2:
            return " ".join(gram)
    return ""


# The products an evidence summary names ("often bought by customers who also bought A, B, C").
_NAMED_IN_SUMMARY = re.compile(
    r"\b(?:also bought|bought together with|alongside)\s+(?P<names>.+)$", re.IGNORECASE
)


def _evidence_names(context: RailContext) -> tuple[str, ...]:
    names: set[str] = set()
    for evidence in context.product_evidence.values():
        for e in evidence:
            m = _NAMED_IN_SUMMARY.search(e.summary)
            if m:
                # The recommender joins names with ", " ("Black and White Paisley Mug" is one name).
                names.update(n.strip() for n in m.group("names").split(",") if len(n.strip()) >= 4)
    return tuple(sorted(names, key=len, reverse=True))


@lru_cache(maxsize=4096)
def _whole_names(names: tuple[str, ...]) -> re.Pattern[str] | None:
    """Names as whole words only: "Leaf" of a name is not "Leaflet"."""
    if not names:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(n) for n in names) + r")(?!\w)", re.IGNORECASE)


# Words that make a string of phrases a sentence to someone: a person spoken to or for, or a verb.
_SENTENCE_WORDS = _bag(
    "you your yours we our us is are was were be been have has had bought buy get got make makes made keep "
    "kept go goes love loves like likes need needs want wants find found bring brings add adds pair pairs "
    "sit sits look looks feel feels work works fit fits come comes shop stock ready try enjoy give gives "
    "thought think know hope"
)


def _without_any_names(text: str, context: RailContext) -> str:
    """``_without_names``, and the other products the evidence names cut out too (a list of them is a list
    of names as well)."""
    rest = _without_names(text, context)
    others = _whole_names(_evidence_names(context))
    return others.sub(" ", rest) if others is not None else rest


def _bare_list(text: str, context: RailContext, kind: str) -> bool:
    """A string of noun phrases and nothing said: three or more (or two of the products' and categories'
    own words) between commas or semicolons, with no one spoken to and no verb ("A set of plates, a set of
    platters, a set of paper."; "The Jumbo Bag Red Retrospot, Bags.")."""
    segments = [s.strip() for s in re.split(r"[,;]", text.strip().rstrip(".!?")) if s.strip()]
    if kind == "subject" and segments and segments[0].lower() == context.customer.first_name.lower():
        segments = segments[1:]
    if len(segments) >= 3 and len({seg.lower() for seg in segments}) < len(segments):
        return True  # a name said twice in a list of three is a list, whatever words its names hold
    # One piece between commas is a list only when three or more are joined by "&" or "+"; the costlier
    # reading of names below is left to the texts that may be one.
    if len(segments) < 2 and not (_JOINS.search(text) and len(_joined(text, context)) >= 3):
        return False
    # A verb inside a name says nothing ("Love Building Block Word"): the names are left out first.
    if set(_words(_without_any_names(text, context))) & _SENTENCE_WORDS:
        return False
    if len(segments) < 2 or len(segments) >= 3:
        return True
    own = {_stem(w) for w in _interest_words(context)} | {
        _stem(w) for name in _evidence_names(context) for w in _words(name)
    }
    return all({_stem(w) for w in _content(_words(seg))} <= own for seg in segments)


_JOINS = re.compile(r"\s[&+]\s")


def _joined(text: str, context: RailContext) -> list[str]:
    """The pieces of a text joined by an ampersand or a plus with spaces around it ("Tomato Coaster Set &
    Carrot Coaster Set & ..."), the names' own left whole ("Blue & White Breakfast Tray")."""
    pattern = _title_pattern(_quoted_names(context))
    if pattern is not None:
        text = pattern.sub(lambda m: re.sub(r"\s*([&+])\s*", r"\1", m.group()), text)
    return [s.strip() for s in _JOINS.split(text.strip().rstrip(".!?")) if s.strip()]


def _names_only(text: str, context: RailContext, kind: str) -> Finding | None:
    if kind in _PARTS and _bare_list(text, context, kind):
        return Finding("names_only", f"the {kind} is a list of names, with nothing said about them")
    rest = _content(_words(_SEPARATORS.sub(" ", _without_any_names(text, context))))
    if rest:
        return None
    titles = _titles(context)
    if not titles or not _title_pattern(tuple(titles)) or not _title_pattern(tuple(titles)).search(text):  # type: ignore[union-attr]
        return None
    return Finding("names_only", f"the {kind} is only product names, with nothing said about them")


def _ties_to_evidence(text: str, evidence: Sequence[Evidence], context: RailContext, item_id: str) -> bool:
    words = set(_words(text))
    if not evidence:
        return bool(words & _NO_EVIDENCE_WHY)
    own_title = _content(_words(context.catalog[item_id].title)) if item_id in context.catalog else set()
    for e in evidence:
        if words & _WHY_WORDS.get(e.kind, frozenset()):
            return True
        summary_words = {w for w in _content(_words(e.summary)) - own_title if len(w) > 3 and not w.isdigit()}
        # Two of the evidence's own words (a bought product's name, say): one ("pink") may be chance.
        if len(words & summary_words) >= 2:
            return True
    similarity = context.similarity
    if similarity is None:
        return False
    return any(similarity(text, e.summary) >= REASON_SIMILARITY for e in evidence)


_CITED = re.compile(
    r"\b(?:bought|chose|chosen|picked|ordered|purchased)\s+(?:the\s+|this\s+|a\s+|an\s+)?(?P<what>[^,.;]{3,80}?)"
    r"(?:,?\s+(?:as|like)\s+you\s+did\b)",
    re.IGNORECASE,
)


_VAGUE_CITED = _bag("set pack one bag box two three four five six several both all these those them it")


def _cites_itself(text: str, evidence: Sequence[Evidence], context: RailContext, item_id: str) -> bool:
    """A reason that gives as what the customer bought ("shoppers who chose X, as you did…") the product
    itself, or something its evidence does not name: the customer did not buy it, or the evidence says
    what they did buy. A product they buy again (repeat purchase) may be cited as bought."""
    title = context.catalog[item_id].title if item_id in context.catalog else ""
    own = {_stem(w) for w in _content(_words(title))}
    named = {_stem(w) for e in evidence for w in _content(_words(e.summary))} - own
    bought_it = any(e.kind == "repeat_purchase" for e in evidence)
    summaries = [e.summary.lower() for e in evidence]
    # Stemmed as what a reason cites is: "the essentials", "these boxes" are as vague as "the set".
    vague = _generic_stems() | {_stem(w) for w in _VAGUE_CITED}
    for m in _CITED.finditer(text):
        what = m.group("what").strip().lower()
        cited = {_stem(w) for w in _content(_words(what))}
        if not cited or any(what in summary for summary in summaries):
            continue  # it names what the evidence names
        if not cited - vague:
            return True  # "shoppers who bought the set, as you did", "these three items": which?
        # "Shoppers who chose <this very product>, as you did, often buy it too" says nothing.
        if len(cited & own) * 2 >= len(cited) and len(cited & named) < len(cited & own):
            return True
        if not bought_it and not cited & named:
            return True
    return False


def _repeats(text: str, part: str, context: RailContext) -> Finding | None:
    """A part that says what an earlier part of the same email said. The first of two alike parts keeps
    its words; the later one (in the email's reading order) is the repeat."""
    # Whole words, product names and all: two reasons that are one sentence around different names are
    # not alike for that, and a part said again is. The greeting and the name are how a part opens.
    name = {*_words(context.customer.first_name), "hi", "hello", "hey", "dear"}
    raw = _content(_words(text)) - name
    for key, other in context.extra.items():
        if not key.startswith("part:"):
            continue
        other_part = key.removeprefix("part:")
        if other_part == part:
            break  # parts are listed in reading order: only those before this one count
        both_reasons = part.startswith("reason:") and other_part.startswith("reason:")
        mine = raw
        theirs = _content(_words(other)) - name
        if len(mine) < 2 or not theirs:
            continue
        shared = len(mine & theirs)
        # Alike as a whole, or this part said almost wholly inside the earlier one (a reason that is a
        # sentence of the intro, a preheader that is the subject again).
        # Two reasons are held to the first test only: each quotes its own evidence, dates and counts
        # alike, and most of one may well be found in the other without saying the same.
        contained = not both_reasons and len(mine) >= 3 and shared / len(mine) >= 0.8
        if shared / len(mine | theirs) >= _REPEAT_JACCARD or contained:
            return Finding("repeated", f"says again what the {other_part} says")
    return None


def _title_spans(text: str, context: RailContext) -> list[tuple[int, int]]:
    pattern = _title_pattern(tuple(_titles(context)))
    return [m.span() for m in pattern.finditer(text)] if pattern is not None else []


def _inside(start: int, end: int, spans: Sequence[tuple[int, int]]) -> bool:
    return any(start < e and s < end for s, e in spans)


def _is_heading(text: str) -> bool:
    words = [w for w in _WORD.findall(text) if w.lower() not in _STOP]
    return bool(words) and all(w[:1].isupper() for w in words) and not _SENTENCE_END.search(text)


_SCAFFOLD = re.compile(
    r"\b(?:the agent asks|fact|facts|suggestion|data|talking[ _]points?|points)\s*:|<<<|>>>|\bjson\b"
    r"|\b(?:as an ai|language model)\b",
    re.IGNORECASE,
)
# Not words to say: "data_type:string", "message_id:16fab…", "&#34;", "dataURL:".
_FRAGMENT = re.compile(
    r"\b\w+_\w+\b|\b\w+:(?!\s)\S|&#?\w+;|\b[0-9a-f]{8,}\b|^\W|\w+URL\b|^\s*\w+\d+\s*:"
    r"|^\s*\d+[.)]\s|\b\w+\.[A-Za-z]"  # a numbered list's line; a dotted name ("items.maxLength")
    r"|\b[a-z]+[A-Z]\w*",  # camelCase: a field's name, not a word
)
# A sentence an agent says has a person or a verb in it: "3 days, 4 weeks and 5 months" has neither.
_SAYABLE = _bag(
    "i we you she he they it her his their our us me your is are was were be been will would can could "
    "may might should shall do does did has have had let please ask check confirm offer send sent tell "
    "apologise apologize thank make look help arrange refund replace return chase say suggest"
)


def _support_point(text: str, context: RailContext) -> list[Finding]:
    found = [
        Finding("placeholder", f"a blank left to fill: {m.group()!r}", m.start(), m.end())
        for m in _PLACEHOLDER.finditer(text)
        if not _inside(m.start(), m.end(), _title_spans(text, context))
    ]
    found += [
        Finding("echo", f"writes the request back: {m.group()!r}", m.start(), m.end())
        for m in _SCAFFOLD.finditer(text)
    ]
    fragment = _FRAGMENT.search(text)
    words = [w for w in _words(text) if w.isalpha()]
    if fragment is not None or len(words) < 4 or not set(words) & _SAYABLE:
        found.append(Finding("not_a_sentence", "the talking point is not a sentence an agent can say"))
    own = _content(_words(" ".join([*_titles(context), context.extra.get("facts", "")])))
    for key, what in (("question", "the agent's question"), ("instructions", "the brief")):
        shared = _shared_run(_words(text), _words(context.extra.get(key, "")), 5, own)
        if shared:
            found.append(Finding("echo", f"repeats {what}: {shared!r}"))
    return [Finding(f.rule, f.message, f.start, f.end, f.severity, "support_point") for f in found]


# Marks in a row (spaces between them or not): "------", "- - - -", "...?!". Within a product's name they
# are its name's; in the copy they are a model that lost its way.
_MARK_RUN = re.compile(r"(?:[-–—‐‑‒―_~=*/\\|.,;:!?]\s*){3,}")
# Anchored at a word's start: unanchored, a search retries every position of a long word (quadratic).
_SLASHED = re.compile(r"(?<!\w)[^\W\d_]+(?:\s*/\s*[^\W\d_]+){2,}")
# What copy may hold beyond letters, digits and spaces: the punctuation a sentence uses, and currency.
_PLAIN_MARKS = frozenset("'’‘\"“”.…,;:!?-‐‑‒–—―&%()/£€$+•°")


# Currency signs with only spaces between them ("is $ $ $ $ $"), or one before a blank ("£__", "$XX", "£?"):
# a price the model was to fill in. A currency named alone ("prices in NT$ include tax", "Save £££") is not.
def _blank_price(text: str) -> tuple[int, int] | None:
    """Where a price was left blank, or None. An amount, where there is one, is the grounding rail's."""
    signs = "".join(sorted({ch for ch in text if unicodedata.category(ch) == "Sc"}))
    if not signs:
        return None
    sign = "[" + re.escape(signs) + "]"
    m = re.search(sign + r"(?:\s+" + sign + r")+|" + sign + r"\s*(?:_+|X{2,}|\?+)(?!\w)", text)
    return (m.start(), m.end()) if m is not None else None


def _quoted_names(context: RailContext) -> tuple[str, ...]:
    """The plan's product names and those its evidence quotes ("also bought Amber Glass/Shell Necklace"):
    a name is written as the catalog spells it, slashes and all."""
    quoted = [
        piece.strip()
        for ev in context.product_evidence.values()
        for e in ev
        for piece in re.split(r",\s*|:\s*|\balso bought\s+|\bsimilar to\s+", e.summary)
        if len(piece.strip()) >= 4
    ]
    return tuple(sorted({*_titles(context), *quoted}, key=len, reverse=True))


def _garbled(text: str, context: RailContext) -> str:
    """What in the text no person would type, outside product names, or ``""``."""
    text = unicodedata.normalize("NFC", text)
    names = _quoted_names(context)
    pattern = _title_pattern(names)
    # Each product name stands as one plain word: a list of names ("A, B, C") is no run of commas.
    rest = pattern.sub("name", text) if pattern is not None else text
    for m in (_MARK_RUN.search(rest), _SLASHED.search(rest)):
        if m is not None and not re.fullmatch(r"[.…]{3}\s*[?!]?\s*", m.group()):
            return m.group().strip()
    for ch in rest:
        if ch.isspace() or ch in _PLAIN_MARKS:
            continue
        # A symbol, a fraction, a ligature or a full-width letter: NFKC folds the last three to plain text.
        if not ch.isalnum() or unicodedata.normalize("NFKC", ch) != ch:
            return ch
    # A word in a writing system the shop does not write in ("a lunch bag design for the эталями"): the
    # shop's are Latin, the copy's own, and those of its own words, its products' names and categories and
    # the customer's name. A lone letter ("50μm", "π") is a sign, not a word.
    if rest.isascii():
        return ""
    words = [str(w) for w in re.findall(r"[^\W\d_]+", rest) if not w.isascii()]
    foreign = [(w, _scripts(w) - {"LATIN"}) for w in words]
    foreign = [(w, f) for w, f in foreign if f and sum(_script(ch) in f for ch in w) >= 2]
    if not foreign:
        return ""
    brand = context.brand
    own = _scripts(
        " ".join(
            (brand.name, brand.description, brand.sign_off, *brand.tone, *brand.allowed_offers,
             *brand.allowed_claims, context.customer.first_name, *names,
             *(item.category for item in context.catalog.values()))
        )
    )  # fmt: skip
    for word, scripts in foreign:
        if scripts - own:
            return word
    return ""


# Japanese writes in three scripts at once, with its own marks (ー, 々): one writing system here.
_SAME_SCRIPT = {"HIRAGANA": "CJK", "KATAKANA": "CJK", "KATAKANA-HIRAGANA": "CJK", "IDEOGRAPHIC": "CJK"}


def _script(ch: str) -> str:
    """A letter's writing system, by the first word of its Unicode name; the modifier letters that stand
    for an apostrophe (ʼ, ʻ) are Latin."""
    if ch in "ʼʻ":
        return "LATIN"
    first = unicodedata.name(ch, "?").split(" ", 1)[0]
    return _SAME_SCRIPT.get(first, first)


def _scripts(text: str) -> set[str]:
    """The writing systems of the text's letters (``_script``)."""
    return {_script(ch) for ch in text if ch.isalpha()}


# Words no shop puts in front of a customer; a product's own name may hold one ("Cocktail" does not).
# Exact forms, not stems: "prickly", "Pissarro", "shiitake", "flame retardant" and "Wankel" are innocent.
_PROFANE = re.compile(
    r"\b(?:shit|shits|shitty|bullshit|fuck|fucks|fucked|fucking|fucker|crap|crappy|bitch|bitches|bastard|"
    r"bastards|arsehole|arseholes|asshole|assholes|piss|pissed|pissing|cunt|cunts|dickhead|dickheads|"
    r"cocksucker|bollocks|wanker|wankers|twat|twats|slut|sluts|whore|whores|damn|damned|goddamn|retard|"
    r"retarded|retards)\b",
    re.IGNORECASE,
)
# A reason that argues against the product it is there to recommend ("so we can't recommend it to you");
# "we can't recommend it enough" is praise.
_AGAINST = re.compile(
    r"\b(?:can['’]?t|cannot|can not|couldn['’]?t|could not|won['’]?t|don['’]?t|do not|would not|"
    r"wouldn['’]?t|never|not)\s+(?:be\s+)?(?:recommend|recommended|suggest|advise)\b"
    r"(?!\s+(?:\w+\s+){0,2}(?:enough|more|highly|a better|anything better)\b)"
    r"|\badvise against\b",
    re.IGNORECASE,
)


def _profane(text: str, context: RailContext) -> Finding | None:
    # A product's, the customer's or the shop's own name is theirs (a customer called Dick).
    spans = list(_title_spans(text, context))
    for name in (*_quoted_names(context), context.customer.first_name, context.brand.name):
        if name:
            spans += [
                (m.start(), m.end()) for m in re.finditer(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.I)
            ]
    for m in _PROFANE.finditer(text):
        if not _inside(m.start(), m.end(), spans):
            return Finding(
                "profanity", f"a word no shop writes to a customer: {m.group()!r}", m.start(), m.end()
            )
    return None


def check(text: str, context: RailContext, *, part: str | None = None) -> Verdict:
    start = time.perf_counter()
    if part == "support_point":
        findings_ = _support_point(text, context)
        swear = _profane(text, context)
        if swear is not None:
            findings_ = [*findings_, swear]
        return Verdict(name, not findings_, tuple(findings_), (time.perf_counter() - start) * 1000)
    kind = _part_kind(part)
    findings: list[Finding] = []
    stripped = text.strip()
    # A real product's name may hold such words ("Name Tag Stickers", "Customer Favourites Box"): inside
    # it they are its name, not a blank or the brief.
    names = _title_spans(text, context)
    quoted = " ".join(e.summary for ev in context.product_evidence.values() for e in ev).lower()
    for m in _PLACEHOLDER.finditer(text):
        # Words the evidence itself holds (a bought product called "Product Details Notebook") are quoted.
        if not _inside(m.start(), m.end(), names) and m.group().lower() not in quoted:
            findings.append(
                Finding("placeholder", f"a blank left to fill: {m.group()!r}", m.start(), m.end())
            )
    blank = _blank_price(text)
    if blank is not None and not _inside(*blank, names):
        at = blank[0]
        findings.append(Finding("placeholder", f"a price left blank: {text[at : at + 12]!r}", *blank))
    findings.extend(
        f for f in _echo_spans(text, context, part) if f.start < 0 or not _inside(f.start, f.end, names)
    )
    findings.extend(_voice(text, context, kind))
    swear = _profane(text, context)
    if swear is not None:
        findings.append(swear)
    if stripped and kind in _PARTS:
        odd = _garbled(text, context)
        if odd:
            findings.append(Finding("garbled", f"holds what no person would type: {odd!r}"))
    if not stripped:
        findings.append(Finding("empty", f"the {kind} is empty"))
    elif kind in ("subject", "preheader", "intro", "reason"):
        only_names = _names_only(text, context, kind)
        if only_names is not None:
            findings.append(only_names)
        elif kind == "subject":
            if not _subject_says_something(text, context):
                findings.append(
                    Finding(
                        "vague_subject",
                        "the subject names no product, no occasion and none of the customer's interests",
                    )
                )
        elif kind == "preheader":
            # A preview line says what the email holds: a product, an interest or the occasion, not only
            # adjectives around "you" ("A beautiful, elegant piece of your home").
            words = _words(text)
            if len(words) < 4 or _is_heading(text) or _fluff(text, context):
                findings.append(
                    Finding("vague_preheader", "the preheader is a heading, not a line to the customer")
                )
        elif kind == "intro":
            words = _words(text)
            to_customer = set(words) & _SECOND_PERSON or _names_customer(text, context)
            if len(words) < 5 or not to_customer or _is_heading(text):
                findings.append(
                    Finding("not_a_sentence", "the intro is not a sentence addressed to the customer")
                )
        elif kind == "reason":
            item_id = part.removeprefix("reason:") if part else ""
            evidence = context.product_evidence.get(item_id, ())
            if len(_words(text)) < 4 or not _ties_to_evidence(text, evidence, context, item_id):
                findings.append(
                    Finding("no_reason", "the reason gives no reason tied to the product's evidence")
                )
            elif _AGAINST.search(text):
                findings.append(Finding("no_reason", "the reason argues against the product it recommends"))
            else:
                count = _wrong_count(text, evidence)
                if count:
                    findings.append(Finding("wrong_count", f"says {count} times; its facts do not"))
                misnamed = _misnamed(text, context, item_id)
                if misnamed:
                    findings.append(
                        Finding("unknown_product", f"calls the product what it is not: {misnamed!r}")
                    )
                if not (count or misnamed) and _cites_itself(text, evidence, context, item_id):
                    findings.append(
                        Finding(
                            "no_reason",
                            "the reason cites as bought what its evidence does not say was bought",
                        )
                    )
    if stripped and kind in _PARTS and _third_person(text, context):
        findings.append(Finding("third_person", f"the {kind} speaks of the customer, not to them"))
    if stripped and kind in ("subject", "preheader", "intro"):
        invented = _unknown_product(text, context)
        if invented:
            findings.append(Finding("unknown_product", f"offers what the email does not hold: {invented!r}"))
    if stripped and kind in _PARTS and _bought_called_new(text, context):
        findings.append(Finding("false_fact", "calls new what the customer has bought before"))
    if stripped and kind in _PARTS and _puffery(text):
        findings.append(Finding("puffery", f"the {kind} praises instead of saying something true"))
    # A bare product name does not end a sentence either; it is names_only, said once.
    if (
        stripped
        and kind in _PARTS
        and not any(f.rule == "names_only" for f in findings)
        and (_unfinished(text, kind) or _cut_to_a_letter(text, context))
    ):
        findings.append(Finding("unfinished", f"the {kind} stops mid-sentence"))
    if part is not None and stripped:
        repeated = _repeats(text, part, context)
        if repeated is not None:
            findings.append(repeated)
    findings = [
        f if f.part or part is None else Finding(f.rule, f.message, f.start, f.end, f.severity, part)
        for f in findings
    ]
    return Verdict(name, not findings, tuple(findings), (time.perf_counter() - start) * 1000)


_ABOUT_THEM = (
    r"(?:may|might|could|likes?|loves?|enjoys?|buys?|bought|needs?|wants?|seems?"
    r"|is looking|are looking|has bought|have bought|is running|are running)"
)


def _third_person(text: str, context: RailContext) -> bool:
    """Whether the text speaks of the customer in the third person and nowhere to them. "They" alone may be
    the products ("they go with your tins"), so it counts only with a verb of a shopper; the customer's
    name counts when a sentence goes on about them ("Tom has not shopped…", "Ann left…"), not when it is
    said to them ("Ann, …", "Hello Ann", "picked for Ann"), whether or not the text also says "you"."""
    first = context.customer.first_name
    if first and _named_in_third_person(text, first):
        return True
    if set(_words(text)) & _SECOND_PERSON:
        return False
    if re.search(
        rf"\b(?:they|she|he|the customer|the shopper)(?:\s+|'ll\s+|’ll\s+)(?:\w+ly\s+)?"
        rf"(?:{_ABOUT_THEM}|like|love|enjoy|want|need)\b",
        text,
        re.IGNORECASE,
    ):
        return True
    possessive = r"\b(?:her|his|their)\s+(?:basket|cart|order|orders|usual|last|kitchen|home|pantry)\b"
    return re.search(possessive, text, re.IGNORECASE) is not None


# Words that praise without saying anything: a line made of them is no preview of anything.
_FLUFF = _bag(
    "beautiful elegant lovely special unique perfect wonderful luxurious stunning amazing great nice "
    "gorgeous fantastic fabulous exquisite delightful charming stylish sweet piece pieces item items "
    "product products thing things home life collection selection range brand brands quality"
)


_PUFF = _bag(
    "beautiful elegant lovely special unique perfect wonderful luxurious stunning amazing gorgeous fantastic "
    "fabulous exquisite delightful charming stylish colorful colourful antique handmade hand-crafted"
)
_PUFF_PHRASE = re.compile(
    r"\b(?:never seen before|you(?:'ve| have) ever seen|of (?:a|your) lifetime|for generations|passed down"
    r"|will make your day|the most (?:beautiful|elegant|luxurious|expensive|stunning|amazing|wonderful))\b",
    re.IGNORECASE,
)


def _puffery(text: str) -> bool:
    """Praise in place of a fact: three or more words of praise in one part, or a phrase no shop could
    stand behind ("a gift of your lifetime", "you have never seen before")."""
    return sum(1 for w in _words(text) if w in _PUFF) >= 3 or _PUFF_PHRASE.search(text) is not None


def _fluff(text: str, context: RailContext) -> bool:
    words = _content(_words(_without_names(text, context))) - _SECOND_PERSON
    if not words:
        return True
    return len(words & _FLUFF) / len(words) >= 0.6 and not _names_something(text, context)


def _named_in_third_person(text: str, first: str) -> bool:
    about = re.compile(rf"(?<![\w-]){re.escape(first)}(?![\w-])\s+(?!and\b)(?:[a-z]\w*|'s\b)", re.IGNORECASE)
    for m in about.finditer(text):
        if not text[m.start()].isupper():
            continue  # "you will like" is not about a customer named Will
        before = text[: m.start()].rstrip().lower()
        if not re.search(r"\b(?:hi|hello|hey|dear|for|to|thanks|thank you|with)$|,$", before):
            return True
    return False


def _names_customer(text: str, context: RailContext) -> bool:
    first = context.customer.first_name
    return (
        bool(first) and re.search(rf"(?<![\w-]){re.escape(first)}(?![\w-])", text, re.IGNORECASE) is not None
    )


def _stem(word: str) -> str:
    """Singular enough to match a title's word: "noodles" and "noodle", "berries" and "berry"."""
    if word in ("news", "less"):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def _names_something(text: str, context: RailContext) -> bool:
    """Whether the text names a plan product, a word of one's name or category, or the occasion."""
    pattern = _title_pattern(tuple(_titles(context)))
    if pattern is not None and pattern.search(text):
        return True
    rest = {_stem(w) for w in _content(_words(_without_names(text, context)))}
    wanted = {_stem(w) for w in _interest_words(context) | _occasion(context)}
    return bool(rest & wanted)


# A letter from the shop is written as "we"; a model often writes as "I" and tells a story of its own.
_FIRST_PERSON = re.compile(
    r"\b(?:I|I'm|I've|I'll|I'd|I’m|I’ve|I’ll|I’d)\b|\b(?:my|me|mine|myself)\b", re.IGNORECASE
)
# History the evidence cannot hold: years, always, a life.
_INVENTED = re.compile(
    r"\b(?:for (?:many |so many |a few )?years|all your life|(?:part of )?your (?:whole )?life|in my family"
    r"|you(?:'ve| have) always|always (?:loved|wanted|had|been)|since (?:childhood|you were)"
    r"|been with you for|you(?:'ve| have) been wearing"
    r"|since (?:the day|we opened|the (?:very )?(?:start|beginning))"
    r"|(?:as you did |you did |bought (?:it )?)?(?:last (?:month|week|night)|yesterday|this morning)"
    r"|as you (?:mentioned|said|told us|asked|requested|wished)|you (?:mentioned|told us)|the other day"
    r"|your new (?:life|home|house|flat|job|baby|partner))\b",
    re.IGNORECASE,
)
_GREETING = re.compile(r"^\s*(?i:hi|hello|hey|dear)\s+([A-Z][\w'’-]*)|^\s*([A-Z][\w'’-]*)\s*,", re.MULTILINE)


def _voice(text: str, context: RailContext, kind: str) -> list[Finding]:
    """The shop's voice to this customer: written as "we", to the right person, without invented history."""
    found: list[Finding] = []
    if kind in _PARTS:
        for m in _FIRST_PERSON.finditer(text):
            if m.group() == "I" or m.group().lower() != "i":
                found.append(Finding("first_person", "written as 'I', not as the shop", m.start(), m.end()))
                break
        for m in _INVENTED.finditer(text):
            found.append(
                Finding(
                    "invented_history",
                    f"history the evidence does not hold: {m.group()!r}",
                    m.start(),
                    m.end(),
                )
            )
            break
    first = context.customer.first_name.lower()
    titles = " ".join(_titles(context))
    # The name whole and in its parts ("Anne Marie", "D’Arcy"), and every word of the products' names,
    # hyphens kept or not ("Hand-Warmer"): any of them may open a line without being someone else's name.
    known = {
        first,
        *(w.lower() for w in re.split(r"[\s'’-]+", context.customer.first_name) if w),
        *(w.lower() for w in _words(titles)),
        *(w.strip(".,:;!?()").lower() for w in titles.split()),
    }
    for m in _GREETING.finditer(text):
        addressed = (m.group(1) or m.group(2) or "").lower()
        plain_word = addressed in _NOT_NAMES or addressed.endswith("ly")
        if addressed and addressed not in known and not plain_word and first:
            found.append(
                Finding("wrong_name", f"addressed to {addressed!r}, not the customer", m.start(), m.end())
            )
    return found


# Words that may open a part followed by a comma without being anybody's name.
_NOT_NAMES = _bag(
    "hello hi hey dear yes no so well now oh also still plus again sure okay ok today tonight sadly good "
    "great perfect lovely "
    "fresh new here there finally meanwhile besides instead sometimes often and but or psst welcome"
)


# Where what is offered ends: a clause, a pronoun, a verb ("a bag everyone is talking about").
_OFFER_ENDS = (
    "to|for|that|which|who|with|from|you|in|on|as|and|or|so|our|your|their|his|her|its|everyone|everybody"
    "|people|is|are|was|were|be|been|keep|keeps|again|before|now|today|this|these|those|we|they|it"
    # What may follow the thing without naming it ("the lunch bag back in stock", "a tea set made for
    # sharing", "your bunting while stocks last"): the thing's last word must be its own.
    "|of|the|a|an|at|by|while|back|ahead|ready|perfect|ideal|waiting|made|fit|just|still|here|there|too"
    "|also|right|out|up|off|into|over|like|since|until|when|if|but|all|every|each|more|once"
)
_OFFERED = re.compile(
    r"\b(?:(?:found|picked|chosen|chose|brought|got|have|saved)\s+(?:you\s+)?(?:a|an|the|some)"
    r"|(?:stock up on|know about|restock|reorder)\s+(?:your|our|the|a|an|some))\s+"
    r"(?:(?:new|few|little|lovely|small|big|large)\s+)?"
    r"(?:(?:set|pack|box|bag|pair|collection|assortment|selection|range|variety|bundle|bunch|jar|tin|bottle"
    r"|packet)\s+of\s+)?"
    r"(?P<what>[a-z][\w'’-]*(?:\s+(?!(?:" + _OFFER_ENDS + r")\b)[a-z][\w'’-]*){0,4})",
    re.IGNORECASE,
)
_GENERIC = _bag(
    "few couple things thing ideas idea selection something pick picks favourite favourites items item range "
    "essentials everyday basics "
    "reminder look little lot new more treat gift gifts one ones way while piece pieces christmas winter "
    "summer spring autumn season seasonal holiday holidays"
)


@lru_cache(maxsize=1)
def _generic_stems() -> frozenset[str]:
    return frozenset(_stem(w) for w in _GENERIC)


# "You have bought this <X> 5 times": what a reason calls its product, up to the count, a time or the
# clause's end ("this twice", "these in the last four weeks" name nothing).
_AFTER_NAME = (
    "to|for|that|which|with|from|you|in|on|at|by|as|and|or|so|but|because|when|again|before|times?|twice|once"
    "|back|last|most|already|recently|here|now|often|every|each|ago|since|during|over|all|it|is|are|was|were"
    "|this|these|one|ones|too|also|as well"
)
_THIS_ONE = re.compile(
    r"\b(?:bought|ordered|chose|chosen|picked|love|like)\s+(?:this|these)\s+"
    r"(?P<what>(?!(?:%s)\b)[a-z][\w'’-]*(?:\s+(?!(?:%s)\b)[a-z][\w'’-]*){0,4})" % ((_AFTER_NAME,) * 2),
    re.IGNORECASE,
)


# Words that may stand between "this" and what it names, or for it, without naming anything else.
_NOT_A_NAME = _bag(
    "many much same exact very quite handy little lovely year after design style look colour color pattern "
    "print shape size kind sort type version choice pick favourite favorite one ones item items product "
    "products piece pieces set pack up out off down away around"
)


# Words that say how a product looks (its colour, size or print), never what it is: a reason that calls its
# product by one ("you have bought this pink 5 times" of pink cutlery, "this red", "this small") names
# nothing, whatever the product's name holds. A shop whose category is named by one ("Red Wine") may call
# its products so. A word that is also a product is not one: "cream" (a jug's colour, or hand cream),
# "vintage" (a print, or a port), "doily" (a bag's print, or a pack of paper doilies).
_DESCRIBES = _bag(
    "red pink blue green yellow white black ivory beige brown grey gray purple violet turquoise teal "
    "navy aqua lilac magenta scarlet crimson pinkish bluish reddish greenish "
    "small large mini jumbo big medium tiny giant "
    "retrospot polkadot polkadots spotty spot spots dotty stripe stripes striped stripey paisley "
    "floral tartan gingham retro regency"
)
_ONE_NEXT = re.compile(r"\s+ones?\b", re.IGNORECASE)
# The kinds of evidence whose summary names other products than the one it supports.
_NAMES_OTHERS = frozenset({"similar_customers", "text_similarity", "recent_view"})


# What holds or counts a product, before "of" ("this pair of gloves", "this jar of honey"): the product is
# named after it, if at all ("this set of three" names nothing).
_CONTAINERS = _bag(
    "pair pairs bundle bundles bottle bottles jar jars tin tins packet packets pack packs roll rolls trio "
    "duo collection collections box boxes bag bags set sets selection case cases carton cartons bunch "
    "bunches pot pots tub tubs sack sacks bar bars can cans cup cups dozen couple lot lots range variety "
    "assortment"
)
# A number said in words, which a count after "of" may be ("this set of three").
_NUMBER_WORDS = _bag("two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty")
# The words after "this ... of": up to four, to the clause's end or a word that ends a name.
_AFTER_OF = re.compile(
    r"\s+of\s+(?P<rest>(?:(?:\d+|(?!(?:" + _AFTER_NAME + r")\b)[a-z][\w'’-]*)\s*){1,4})", re.IGNORECASE
)


def _misnamed(text: str, context: RailContext, item_id: str) -> str:
    """What a reason calls its product when that is not the product ("you have bought this ketchup" of a
    paper chain kit), or ``""``. The word that names must be of the product's own name or category, or of
    its own evidence (not the other products a fact names), or plain ("one", "design"); an adverb names
    nothing. That word is the last of the phrase; before "of", the one after it when the one before holds
    or counts ("this pair of gloves": gloves; "this set of three" names nothing), else either may name it."""
    item = context.catalog.get(item_id)
    if item is None:
        return ""
    evidence = context.product_evidence.get(item_id, ())
    # Its own evidence: a fact that names other products ("often bought by customers who also bought ... Mug")
    # lends the product none of their names alone (SmolLM2 sent "this mug" of a pack of tissues); a word of
    # theirs with a word of its own name beside it is a fair description ("this t-light holder" of a hanging
    # t-light).
    mine = [e.summary for e in evidence if e.kind not in _NAMES_OTHERS and set(e.item_ids) <= {item_id}]
    own_name = {_stem(w) for w in _words(f"{item.title} {item.category}")}
    own = own_name | {_stem(w) for w in _words(" ".join(mine))}
    others = {_stem(w) for w in _words(" ".join(e.summary for e in evidence if e.summary not in mine))}
    plain = _generic_stems() | {_stem(w) for w in _NOT_A_NAME | _VAGUE_CITED}

    def forms(word: str) -> set[str]:
        return {
            _stem(word),
            _stem(word[:-2]) if word.endswith("es") else "",
            _stem(word[:-3] + "f") if word.endswith("ves") else "",
        } - {""}

    def names_it(words: list[str], allowed: set[str]) -> bool:
        head = forms(words[-1])
        if head & allowed:
            return True
        # Two words of one the name writes as one ("this cake stand" of a cakestand).
        if len(words) > 1 and forms(words[-2] + words[-1]) & allowed:
            return True
        return bool(head & others) and any(_stem(w) in own_name - plain for w in words[:-1])

    category = {_stem(w) for w in _words(item.category)}
    for m in _THIS_ONE.finditer(text):
        split = re.split(r"\s+of\b", m.group("what"), maxsplit=1, flags=re.IGNORECASE)
        said = [w for w in _words(split[0]) if not w.isdigit()]
        # One such word alone names nothing; two together are a print's name ("this pink polkadot", as a
        # person reads it), and in "this small one" it describes the one.
        # Only without an "of": "this red of the season" names what follows.
        alone = len(split) == 1 and len(said) == 1 and said[0] in _DESCRIBES
        alone = alone and not _ONE_NEXT.match(text, m.end())
        if alone and not forms(said[0]) & category:
            return m.group("what")
        words = [w for w in said if not w.endswith("ly")]
        if not words:
            continue
        after: list[str] = []
        if len(split) > 1:
            rest = _AFTER_OF.match(text, m.start("what") + len(split[0]))
            if rest is not None:
                after = [w for w in _words(rest.group("rest")) if not w.isdigit() and w not in _NUMBER_WORDS]
        if len(split) > 1 and words[-1] in _CONTAINERS:
            # "this set of three" is a count; "this pair of gloves" is named after the "of".
            if not after or names_it(words, own) or names_it(after, own | plain):
                continue
        elif names_it(words, own | plain) or (after and names_it(after, own | plain)):
            continue
        return " ".join([m.group("what"), *after]) if after else m.group("what")
    return ""


# "7 times": a count of purchases ("at once", "think twice" are not one).
_TIMES = re.compile(r"\b(\d+)\s*times?\b", re.IGNORECASE)


def _wrong_count(text: str, evidence: Sequence[Evidence]) -> str:
    """A count of purchases the reason gives ("bought this bag 15 times") that its product's evidence does
    not ("bought 7 times"), or ``""``. Only counts said as times: a date or a pack size is no count."""

    def counts(said: str) -> list[str]:
        return [m.group(1) for m in _TIMES.finditer(said)]

    known = {n for e in evidence for n in counts(e.summary)}
    wrong = [n for n in counts(text) if n not in known]
    return wrong[0] if wrong else ""


# What a shop's things are called together ("your party supplies", "our garden tools"): a kind of thing,
# which says which by the words before it.
_KINDS_OF_THINGS = frozenset(
    _stem(w)
    for w in _bag(
        "supplies supply decorations decoration decor accessories tools kit kits bits goodies staples gear"
        " stuff needs"
    )
)


def _unknown_product(text: str, context: RailContext) -> str:
    """What the text says the shop found for the customer when that is none of the email's products (a
    model inventing "an Easter egg" for a customer sent a cakestand, "a set of baby bedding" for one sent
    napkins), or ``""``. A thing described mostly in words none of the products' names or categories use is
    not one of them, whichever of its words ("set", "silver") it shares."""
    known = {_stem(w) for w in _interest_words(context)}

    def unknown(word: str) -> bool:
        bare = word.removesuffix("'s").removesuffix("'")
        plural = {
            _stem(bare),
            _stem(bare[:-2]) if bare.endswith("es") else "",
            _stem(bare[:-3] + "f") if bare.endswith("ves") else "",
            _stem(bare[:-3] + "fe") if bare.endswith("ves") else "",
        }
        return not plural & known

    for m in _OFFERED.finditer(text):
        said = _words(m.group("what"))
        content = _content(said)
        # In the order said: the last is what the thing is ("party hats"), the others say which.
        words = [w for w in dict.fromkeys(said) if w in content]
        concrete = [
            w
            for w in words
            if w not in _GENERIC and _stem(w) not in _generic_stems() | _KINDS_OF_THINGS and len(w) > 2
        ]
        strange = [w for w in concrete if unknown(w)]
        if concrete and (len(strange) * 2 > len(concrete) or concrete[-1] in strange):
            return m.group("what")
    return ""


_AS_YOU_DID = re.compile(r"\bas you did\b", re.IGNORECASE)
_OTHERS_BOUGHT = re.compile(
    r"\b(?:shoppers|customers|people|others|those|everyone|many|most)\b[^.;!?]*\b(?:bought|chose|picked|ordered|"
    r"buy|choose|pick|order|added|love|loved)\b",
    re.IGNORECASE,
)


def _garbled_as_you_did(text: str) -> bool:
    """ "…, as you did" belongs after others doing something ("shoppers who chose X, as you did, …"); after
    anything else ("try a doormat, as you did", "you bought it, as you did") it is the example's shape
    pasted where it does not fit."""
    for m in _AS_YOU_DID.finditer(text):
        clause = re.split(r"[.;!?]", text[max(0, m.start() - 200) : m.start()])[-1]
        if not _OTHERS_BOUGHT.search(clause):
            return True
    return False


def _unfinished(text: str, kind: str) -> bool:
    """A part cut off by a length limit: a sentence part that does not end a sentence, or any part that
    ends on a joining word or a dash."""
    stripped = text.rstrip()
    if re.search(
        r"(?:[-–—,;:]|\w['’]s|\b(?:and|or|to|the|a|an|of|with|for|your|but|as|at|by|into|than|which"
        r"|our|their))$",
        stripped,
        re.IGNORECASE,
    ):
        return True
    # A grammar that must end a part with a full stop ends a cut-off one there: "…, a .", "… for your.";
    # a preposition may end a sentence ("things you'll want more of.").
    if re.search(r"(?:\s|[-–—,;:]|\b(?:and|or|the|a|an|your|our|their))[.!?]$", stripped, re.I):
        return True
    if kind in ("preheader", "intro", "reason") and not _SENTENCE_END.search(stripped):
        return True
    return _garbled_as_you_did(stripped)


# One lower-case letter alone at the end, but "a" and "i": "... you can't t.", "... running low on p.".
_LAST_LETTER = re.compile(r"(?<![\w'’.&+-])(?![ai])([a-z])[.!?…]?$")
# One capital letter alone at the end, and the two words before it.
_LAST_CAPITAL = re.compile(r"(?:^|\s)([^\W\d_][\w'’-]*\s+[^\W\d_][\w'’-]*\s+[A-Z])[.!?…]?$")


def _cut_to_a_letter(text: str, context: RailContext) -> bool:
    """A last word cut to its first letter by a length limit: a lower-case letter ("you can't t."), or a
    capital that cuts a product's name short ("..., Mint Kitchen Scales, Black Kitchen S."). Not "plan B",
    "from A to Z" or a name that ends in a letter ("Wooden Letter B"). A name's plural leaves its "s" behind
    when the name is cut out ("our t-light holders."): the text must end so with and without its names."""
    stripped = text.rstrip()
    if _LAST_LETTER.search(stripped) and _LAST_LETTER.search(_without_any_names(text, context).rstrip()):
        return True
    m = _LAST_CAPITAL.search(stripped)
    if m is None:
        return False
    tail = " " + m.group(1).lower()
    for name in _quoted_names(context):
        at = (" " + name.lower()).find(tail)
        end = at + len(tail)
        if at >= 0 and end < len(name) + 1 and (" " + name.lower())[end].isalpha():
            return True
    return False


# Things called new as a whole: "a few new things", "our new home decor", "new stock" ("a new one" of a
# product bought before is a fresh one of it, and may be said).
_NEW_THINGS = re.compile(
    r"\bnew (?:things|items|arrivals|products|stock|pieces|finds|additions|home ?decor\w*)\b", re.IGNORECASE
)


def _bought_called_new(text: str, context: RailContext) -> bool:
    """The email's products called new where the customer has bought every one of them before."""
    evidence = context.product_evidence
    return (
        bool(context.plan_item_ids)
        and all(any(e.kind == "repeat_purchase" for e in evidence.get(i, ())) for i in context.plan_item_ids)
        and _NEW_THINGS.search(text) is not None
    )


def _occasion(context: RailContext) -> frozenset[str]:
    return _OCCASION.get(context.action, _OCCASION["recommend"])


def _subject_says_something(text: str, context: RailContext) -> bool:
    # "Picked for you" is no occasion: a recommendation's subject must name what it recommends.
    if context.action in ("recommend", ""):
        pattern = _title_pattern(tuple(_titles(context)))
        if pattern is not None and pattern.search(text):
            return True
        rest = {_stem(w) for w in _content(_words(_without_names(text, context)))}
        return bool(rest & {_stem(w) for w in _interest_words(context)})
    return _names_something(text, context)
