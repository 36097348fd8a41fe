"""Turn UCI Online Retail (Chen, 2015; CC BY 4.0) into Tailor's canonical JSONL format.

The dataset has no names, e-mail addresses, consent or support tickets. Those are generated here,
deterministically from a seed, and flagged synthetic (``Customer.synthetic``; ticket events carry
``order_id`` of a real invoice but their text is written here). Everything else is the real data:
items, prices, countries, purchases and returns.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

import pandas as pd

from tailor.core.errors import DataError
from tailor.core.models import Consent, Customer, Event, EventKind, Item, QuietHours

__all__ = [
    "ConvertReport",
    "catalog_from_parquet",
    "categorize",
    "clean_title",
    "convert",
    "join_years",
    "load_transactions",
    "read_uci",
]

# Postage, fees and manual adjustments are not products.
NON_PRODUCTS = frozenset(
    {"POST", "DOT", "M", "m", "BANK CHARGES", "AMAZONFEE", "CRUK", "D", "PADS", "B", "S", "C2"}
)
URL_BASE = "https://example-retail.test/p/"

# First matching rule wins: "CHRISTMAS" comes before "CANDLE" so that a Christmas candle is seasonal.
_CATEGORY_RULES: tuple[tuple[str, str], ...] = (
    ("Christmas", r"CHRISTMAS|XMAS|ADVENT|SANTA|REINDEER|SNOWFLAKE|NATIVITY"),
    ("Candles & Lighting", r"CANDLE|T-LIGHT|TLIGHT|LANTERN|LIGHTS?\b|LAMP|NIGHTLIGHT|CHANDELIER"),
    ("Bags", r"\bBAGS?\b|SHOPPER|TOTE|PURSE|WASHBAG|RUCKSACK|BACKPACK"),
    (
        "Kitchen & Dining",
        r"MUG|CUP|SAUCER|PLATE|BOWL|JUG|TEAPOT|\bTEA\b|CAKE|BAKING|CUTTERS|NAPKIN|COASTER|"
        r"LUNCH BOX|CUTLERY|SPOON|APRON|OVEN|JAM|TRAY|TUMBLER|GLASS|BOTTLE|RECIPE|KITCHEN|PANTRY|STRAWS",
    ),
    (
        "Stationery & Cards",
        r"CARD|NOTEBOOK|PENCIL|\bPEN\b|PAPER|STICKER|WRAP|ENVELOPE|TAPE|NOTE|ERASER|"
        r"CALENDAR|DIARY|JOURNAL|CHALK|BOOK\b|CRAYONS|STAMP|TAGS?\b",
    ),
    ("Party & Gifts", r"PARTY|BUNTING|BALLOON|GARLAND|TISSUE|GIFT|RIBBON|CONFETTI|PINATA|BIRTHDAY"),
    ("Toys & Games", r"TOY|GAME|PUZZLE|DOLL|JIGSAW|SPACEBOY|DOMINO|SKITTLES|PLAYING|TEDDY|NINJA|SOLDIER"),
    ("Garden & Outdoor", r"GARDEN|PLANT|\bPOT\b|WATERING|BIRD|PARASOL|PICNIC|FLOWER|HEN HOUSE|SEED"),
    (
        "Home Decor",
        r"FRAME|SIGN|CLOCK|MIRROR|HOLDER|DECORATION|HANGING|HOOK|KNOB|DOORSTOP|CUSHION|"
        r"DOORMAT|WREATH|VASE|ORNAMENT|WALL|SHELF|DRAWER|CABINET|BOX|BASKET|BLANKET|THROW|CURTAIN|STORAGE",
    ),
    (
        "Fashion & Accessories",
        r"NECKLACE|BRACELET|EARRINGS|RING\b|HAIR|SCARF|UMBRELLA|HAT\b|GLOVES|"
        r"JEWEL|SLIPPER|KEY.?RING|CHARM|BROOCH|SUNGLASSES|WALLET",
    ),
    (
        "Bath & Beauty",
        r"SOAP|BATH|TOWEL|MAKE.?UP|COSMETIC|SPONGE|SCENT|FRAGRANCE|INCENSE|OIL BURNER|"
        r"HOT WATER BOTTLE|HAND WARMER",
    ),
)
_COMPILED = tuple((name, re.compile(pattern)) for name, pattern in _CATEGORY_RULES)

_FIRST_NAMES = (
    "Alice",
    "Amelia",
    "Ava",
    "Ben",
    "Charlie",
    "Chloe",
    "Daniel",
    "Eleanor",
    "Ella",
    "Emily",
    "Ethan",
    "Freya",
    "George",
    "Grace",
    "Hannah",
    "Harry",
    "Isla",
    "Jack",
    "Jacob",
    "James",
    "Lily",
    "Lucas",
    "Mia",
    "Noah",
    "Olivia",
    "Oscar",
    "Poppy",
    "Rosie",
    "Ruby",
    "Sam",
    "Sophie",
    "Thomas",
    "William",
    "Zara",
    "Aisha",
    "Mateo",
    "Léa",
    "Hugo",
    "Sofia",
    "Lukas",
    "Emma",
    "Finn",
    "Nora",
    "Liam",
    "Maya",
    "Luca",
    "Anna",
    "Elias",
)
_LAST_NAMES = (
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Williams",
    "Wilson",
    "Johnson",
    "Davies",
    "Patel",
    "Wright",
    "Walker",
    "Roberts",
    "Evans",
    "Green",
    "Hall",
    "Wood",
    "Clarke",
    "Hughes",
    "Martin",
    "Müller",
    "Dubois",
)
_TIMEZONES = {
    "United Kingdom": "Europe/London",
    "EIRE": "Europe/Dublin",
    "Germany": "Europe/Berlin",
    "France": "Europe/Paris",
    "Spain": "Europe/Madrid",
    "Netherlands": "Europe/Amsterdam",
    "Belgium": "Europe/Brussels",
    "Switzerland": "Europe/Zurich",
    "Portugal": "Europe/Lisbon",
    "Australia": "Australia/Sydney",
    "Norway": "Europe/Oslo",
    "Italy": "Europe/Rome",
    "Channel Islands": "Europe/London",
    "Finland": "Europe/Helsinki",
    "Cyprus": "Asia/Nicosia",
    "Sweden": "Europe/Stockholm",
    "Austria": "Europe/Vienna",
    "Denmark": "Europe/Copenhagen",
    "Japan": "Asia/Tokyo",
    "Poland": "Europe/Warsaw",
    "USA": "America/New_York",
    "Israel": "Asia/Jerusalem",
    "Singapore": "Asia/Singapore",
    "Iceland": "Atlantic/Reykjavik",
    "Canada": "America/Toronto",
    "Greece": "Europe/Athens",
    "Malta": "Europe/Malta",
    "United Arab Emirates": "Asia/Dubai",
    "Lebanon": "Asia/Beirut",
    "Lithuania": "Europe/Vilnius",
    "Brazil": "America/Sao_Paulo",
    "Czech Republic": "Europe/Prague",
    "Bahrain": "Asia/Bahrain",
    "Saudi Arabia": "Asia/Riyadh",
    "RSA": "Africa/Johannesburg",
}
_TICKETS = (
    "My order {order} arrived two days late and one of the {item} was chipped. Not happy.",
    "Could you tell me when the {item} will be back in stock? I'd like to order more for my shop.",
    "The {item} from order {order} were lovely, my customers loved them. Do you offer a bulk discount?",
    "I was charged twice for order {order}. Please refund the duplicate payment.",
    "The parcel for order {order} was left outside in the rain and the {item} got wet.",
    "Do you have the {item} in other colours? Looking for something for a Christmas display.",
)


def categorize(title: str) -> str:
    upper = title.upper()
    for name, pattern in _COMPILED:
        if pattern.search(upper):
            return name
    return "Other"


def clean_title(description: str) -> str:
    """'WHITE HANGING HEART T-LIGHT HOLDER' -> 'White Hanging Heart T-Light Holder'."""
    text = re.sub(r"\s+", " ", description).strip().rstrip(".,")
    words = []
    # Short codes and sizes ("S/3", "3D", "LED") stay upper-case; words are title-cased.
    for word in text.split(" "):
        if word in {"LED", "UK", "USA", "DIY"}:
            words.append(word)
        elif any(c.isdigit() for c in word):
            words.append(re.sub(r"[A-Z]{3,}", lambda m: m.group().capitalize(), word))
        else:
            words.append("-".join(p.capitalize() for p in word.lower().split("-")))
    return " ".join(words)


# Online Retail II names three of the columns differently; the rows mean the same.
_UCI_II_NAMES = {"Invoice": "InvoiceNo", "Price": "UnitPrice", "Customer ID": "CustomerID"}
# Each dataset's event ids, so that the two years' line numbers never meet (oldest year first).
_EVENT_PREFIX = {"online-retail-ii": "uci2-", "online-retail": "uci-"}


def read_uci(path: Path | str) -> pd.DataFrame:
    """A UCI Online Retail or Online Retail II parquet under Online Retail's column names, dates parsed.

    ``frame.attrs["dataset"]`` says which of the two it was (``"online-retail"`` or ``"online-retail-ii"``).
    """
    try:
        raw = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}", hint="pass a UCI Online Retail parquet file") from exc
    ii = "Invoice" in raw.columns and "InvoiceNo" not in raw.columns
    raw = raw.rename(columns={k: v for k, v in _UCI_II_NAMES.items() if k in raw.columns})
    raw.attrs["dataset"] = "online-retail-ii" if ii else "online-retail"
    if "InvoiceDate" in raw.columns and not pd.api.types.is_datetime64_any_dtype(raw["InvoiceDate"]):
        try:
            raw["InvoiceDate"] = pd.to_datetime(raw["InvoiceDate"])
        except (ValueError, TypeError) as exc:
            raise DataError(f"{path}: InvoiceDate holds a value that is not a date: {exc}") from exc
    return raw


def load_transactions(path: Path | Sequence[Path]) -> pd.DataFrame:
    """Product lines of one UCI file, or of several years of it (Online Retail II's 2009-2010 and Online
    Retail's 2010-2011, say) as one history.

    Overlapping days are read once (``join_years``). Each dataset numbers its lines apart: ``event_key`` is
    ``uci-<line>`` for Online Retail, as it always was, and ``uci2-<line>`` for Online Retail II.
    """
    paths = [path] if isinstance(path, Path) else list(path)
    if not paths:
        raise DataError("no UCI file given", hint="pass online_retail.parquet")
    loaded = [_load_one(p) for p in paths]
    if len(loaded) == 1:
        return loaded[0][1]
    kinds = [kind for kind, _ in loaded]
    for kind in dict.fromkeys(kinds):
        if kinds.count(kind) > 1:
            same = ", ".join(str(p) for p, k in zip(paths, kinds, strict=True) if k == kind)
            raise DataError(
                f"{kind} is given twice ({same})",
                hint="give each dataset once: Online Retail II's 2009-2010 year and Online Retail",
            )
    return join_years([frame for _, frame in loaded])


def join_years(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """UCI frames of consecutive years as one history, oldest first.

    The years overlap (Online Retail II's last nine days are Online Retail's first), so each frame is kept
    only before the first day of the next one: a line of the shared days is read once, from the later file.
    """
    ordered = sorted(frames, key=lambda f: f["InvoiceDate"].min())
    kept = [
        f[f["InvoiceDate"] < nxt["InvoiceDate"].min().normalize()] for f, nxt in itertools.pairwise(ordered)
    ]
    return pd.concat([*kept, ordered[-1]], ignore_index=True)


def _load_one(path: Path) -> tuple[str, pd.DataFrame]:
    frame = read_uci(path)
    kind = str(frame.attrs["dataset"])
    expected = {
        "InvoiceNo",
        "StockCode",
        "Description",
        "Quantity",
        "InvoiceDate",
        "UnitPrice",
        "CustomerID",
        "Country",
    }
    missing = expected - set(frame.columns)
    if missing:
        raise DataError(f"{path}: missing columns {sorted(missing)}", hint="is this UCI Online Retail?")
    # "84536a" and "84536A" are one product: codes differ only in case in the source.
    frame["StockCode"] = frame["StockCode"].astype(str).str.strip().str.upper()
    frame["InvoiceNo"] = frame["InvoiceNo"].astype(str).str.strip()
    # The source has identical duplicate lines; the line number keeps each one a distinct event.
    frame["event_key"] = _EVENT_PREFIX[kind] + frame.index.astype(str)
    return kind, frame[~frame["StockCode"].isin(NON_PRODUCTS) & (frame["UnitPrice"] > 0)]


@dataclass(frozen=True)
class ConvertReport:
    items: int
    customers: int
    events: int
    out_dir: Path


def _items(frame: pd.DataFrame, as_of: pd.Timestamp) -> list[Item]:
    described = frame.dropna(subset=["Description"])
    # Upper-case descriptions are product names; lower-case ones are stock notes ("damaged", "check").
    described = described[
        described["Description"].str.strip().str.upper() == described["Description"].str.strip()
    ]
    name_counts = described.groupby(["StockCode", "Description"]).size().reset_index(name="n")
    name_counts = name_counts.sort_values(["StockCode", "n", "Description"], ascending=[True, False, True])
    names = name_counts.drop_duplicates("StockCode").set_index("StockCode")["Description"]
    variants = name_counts.groupby("StockCode")["Description"].apply(list)
    sales = frame[frame["Quantity"] > 0]
    price = sales.groupby("StockCode")["UnitPrice"].median()
    last_sold = sales.groupby("StockCode")["InvoiceDate"].max()
    items = []
    for code, raw in names.items():
        if code not in price.index:
            continue
        title = clean_title(str(raw))
        other = [clean_title(v) for v in variants[code][1:4]]
        description = f"{title}. Also listed as: {'; '.join(other)}." if other else ""
        # Not sold in the last 90 days of the data: treat as discontinued.
        in_stock = bool(last_sold[code] >= as_of - pd.Timedelta(days=90))
        items.append(
            Item(
                id=str(code),
                title=title,
                description=description,
                category=categorize(title),
                price=round(float(price[code]), 2),
                currency="GBP",
                in_stock=in_stock,
                url=URL_BASE + str(code),
            )
        )
    return items


def _customers(frame: pd.DataFrame, seed: int) -> list[Customer]:
    known = frame.dropna(subset=["CustomerID"])
    country = known.groupby("CustomerID")["Country"].agg(lambda s: s.value_counts().index[0])
    customers = []
    for cid, ctry in country.items():
        key = str(int(cid))
        rng = random.Random(f"{seed}:{key}")
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        local = f"{first}.{last}".lower().replace("é", "e").replace("ü", "u")
        customers.append(
            Customer(
                id=key,
                first_name=first,
                email=f"{local}.{key}@example.com",
                country=str(ctry),
                consent=Consent(marketing_email=rng.random() < 0.85, personalization=rng.random() < 0.95),
                quiet_hours=QuietHours(start=time(21, 0), end=time(8, 0)),
                locale="en-GB",
                timezone=_TIMEZONES.get(str(ctry), "Europe/London"),
                synthetic=True,
            )
        )
    return customers


def _events(frame: pd.DataFrame, titles: dict[str, str], seed: int) -> Iterator[Event]:
    known = frame.dropna(subset=["CustomerID"])
    known = known[known["StockCode"].isin(titles)]
    cancelled = known["InvoiceNo"].str.startswith("C")
    rows = known[
        ["event_key", "InvoiceNo", "StockCode", "Quantity", "UnitPrice", "InvoiceDate", "CustomerID"]
    ]
    for (key, invoice, code, qty, unit, when, cid), is_return in zip(
        rows.itertuples(index=False, name=None), cancelled, strict=True
    ):
        if (qty > 0) == is_return:
            continue  # a positive quantity on a cancellation invoice (or the reverse) is an adjustment
        kind = EventKind.RETURN if is_return else EventKind.PURCHASE
        yield Event(
            id=str(key),
            customer_id=str(int(cid)),
            kind=kind,
            item_id=str(code),
            quantity=abs(int(qty)),
            value=round(abs(int(qty)) * float(unit), 2),
            timestamp=when.to_pydatetime().replace(tzinfo=UTC),
            order_id=str(invoice),
        )
    # Synthetic support tickets for one customer in twenty, about a real order of theirs.
    purchases = known[~cancelled & (known["Quantity"] > 0)]
    last_orders = purchases.sort_values("InvoiceDate").groupby("CustomerID").tail(1)
    for invoice, code, when, cid in last_orders[
        ["InvoiceNo", "StockCode", "InvoiceDate", "CustomerID"]
    ].itertuples(index=False, name=None):
        key = str(int(cid))
        rng = random.Random(f"{seed}:ticket:{key}")
        if rng.random() >= 0.05:
            continue
        template = rng.choice(_TICKETS)
        yield Event(
            customer_id=key,
            kind=EventKind.SUPPORT_TICKET,
            item_id=str(code),
            text=template.format(order=invoice, item=titles[str(code)]),
            timestamp=(when + pd.Timedelta(days=rng.randint(2, 6))).to_pydatetime().replace(tzinfo=UTC),
            order_id=str(invoice),
        )


def _write_jsonl(path: Path, records: Iterator[Any] | list[Any]) -> int:
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(record.model_dump_json(exclude_none=True) + "\n")
            n += 1
    tmp.replace(path)  # atomic: a reader never sees a half-written file
    return n


def catalog_from_parquet(parquet: Path) -> list[Item]:
    """Just the catalog of a UCI Online Retail file, as Tailor items."""
    frame = load_transactions(parquet)
    return _items(frame, frame["InvoiceDate"].max())


_DATASETS = {
    "online-retail": "UCI Online Retail (Chen, 2015), CC BY 4.0, https://doi.org/10.24432/C5BW33",
    "online-retail-ii": "UCI Online Retail II (Chen, 2012), CC BY 4.0, https://doi.org/10.24432/C5CG6D",
}


def convert(
    parquet: Path | Sequence[Path], out_dir: Path, *, seed: int = 7, customers_limit: int | None = None
) -> ConvertReport:
    """Write items.jsonl, customers.jsonl and events.jsonl (the canonical format) into ``out_dir``.

    Several files (Online Retail II's 2009-2010 year and Online Retail) make one store of both years.
    """
    paths = [parquet] if isinstance(parquet, Path) else list(parquet)
    frame = load_transactions(paths)
    if customers_limit is not None:
        # A deterministic slice: the customers with the most invoices, for small demos and tests.
        busiest = frame.dropna(subset=["CustomerID"]).groupby("CustomerID")["InvoiceNo"].nunique()
        keep = busiest.sort_values(ascending=False, kind="stable").index[:customers_limit]
        frame = frame[frame["CustomerID"].isin(keep) | frame["CustomerID"].isna()]
    as_of = frame["InvoiceDate"].max()
    out_dir.mkdir(parents=True, exist_ok=True)
    items = _items(frame, as_of)
    n_items = _write_jsonl(out_dir / "items.jsonl", items)
    n_customers = _write_jsonl(out_dir / "customers.jsonl", _customers(frame, seed))
    n_events = _write_jsonl(out_dir / "events.jsonl", _events(frame, {i.id: i.title for i in items}, seed))
    kinds = [
        kind for kind, prefix in _EVENT_PREFIX.items() if frame["event_key"].str.startswith(prefix).any()
    ]
    source = {
        "dataset": "; ".join(_DATASETS[k] for k in kinds),
        "file": ", ".join(p.name for p in paths),
        "sha256": ", ".join(hashlib.sha256(p.read_bytes()).hexdigest() for p in paths),
        "seed": seed,
        "customers_limit": customers_limit,
        "synthetic": ["customer names, e-mail addresses, consent flags, quiet hours", "support ticket texts"],
        "converted_at": datetime.now(UTC).isoformat(),
    }
    (out_dir / "SOURCE.json").write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
    return ConvertReport(items=n_items, customers=n_customers, events=n_events, out_dir=out_dir)
