"""Read the canonical format (JSONL or CSV) and load it into the store, all or nothing.

The canonical format is one file per record type in a directory:

- ``items.jsonl`` / ``items.csv``: id, title, description, category, price, currency, in_stock, url, named
  (optional, default true; false when the title is a stand-in such as a product code)
- ``customers.jsonl`` / ``customers.csv``: id, first_name, email, country, consent (JSONL: an object with
  marketing_email and personalization; CSV: columns consent_marketing_email, consent_personalization),
  quiet_hours (JSONL: {start, end} as HH:MM; CSV: quiet_hours_start, quiet_hours_end), locale, timezone,
  synthetic
- ``events.jsonl`` / ``events.csv``: customer_id, kind (view, add_to_cart, purchase, return, support_ticket,
  email_open, email_click), item_id, quantity, value, text, timestamp (ISO 8601), order_id, id (optional)

Every record is validated before anything is written; the first errors are reported with file, line and field.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from tailor.core.errors import DataError, RecordError
from tailor.core.models import Customer, Event, Item
from tailor.data.store import Store

__all__ = ["RANKER_INPUT", "ImportReport", "import_dir", "ranker_input", "read_records"]

# The store's meta key for ``ranker_input``; the ranker's own fingerprint is compared with it.
RANKER_INPUT = "ranker_input"

M = TypeVar("M", bound=BaseModel)
_MAX_ERRORS = 20
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}


@dataclass
class ImportReport:
    items: int = 0
    customers: int = 0
    events: int = 0
    skipped: bool = False
    errors: list[RecordError] = field(default_factory=list)


def _csv_row(kind: str, row: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {k: v for k, v in row.items() if v not in ("", None)}
    if kind == "items":
        for name in ("in_stock", "named"):
            if name in data:
                data[name] = _parse_bool(data[name], name)
    if kind == "customers":
        consent = {}
        for name in ("marketing_email", "personalization"):
            if f"consent_{name}" in data:
                consent[name] = _parse_bool(data.pop(f"consent_{name}"), f"consent_{name}")
        data["consent"] = consent
        if "quiet_hours_start" in data or "quiet_hours_end" in data:
            data["quiet_hours"] = {
                "start": data.pop("quiet_hours_start", None),
                "end": data.pop("quiet_hours_end", None),
            }
        if "synthetic" in data:
            data["synthetic"] = _parse_bool(data["synthetic"], "synthetic")
    return data


def _parse_bool(value: str, name: str) -> bool:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"{name}: expected true/false, got {value!r}")


def _raw_records(path: Path, kind: str) -> Iterator[tuple[int, dict[str, Any] | Exception]]:
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield n, exc
                    continue
                yield (
                    n,
                    obj
                    if isinstance(obj, dict)
                    else TypeError(f"expected a JSON object, got {type(obj).__name__}"),
                )
    else:
        with path.open(encoding="utf-8", newline="") as fh:
            for n, row in enumerate(csv.DictReader(fh), start=2):
                try:
                    yield n, _csv_row(kind, row)
                except ValueError as exc:
                    yield n, exc


def read_records(
    path: Path, model: type[M], kind: str, *, defaults: dict[str, Any] | None = None
) -> tuple[list[M], list[RecordError]]:
    """Parse and validate every record; return the good ones and the errors (capped). ``defaults`` fill the
    fields a record leaves out (an item's currency: the retailer's own)."""
    good: list[M] = []
    errors: list[RecordError] = []
    for line, raw in _raw_records(path, kind):
        if isinstance(raw, Exception):
            errors.append(RecordError(str(raw), source=path.name, line=line))
            continue
        if defaults:
            raw = {**defaults, **raw}
        try:
            good.append(model.model_validate(raw))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or None
            errors.append(
                RecordError(
                    first["msg"],
                    source=path.name,
                    line=line,
                    field=loc,
                    record_id=str(raw.get("id") or raw.get("customer_id") or "") or None,
                )
            )
        if len(errors) >= _MAX_ERRORS:
            break
    return good, errors


def _find(directory: Path, kind: str) -> Path | None:
    for suffix in (".jsonl", ".csv"):
        candidate = directory / f"{kind}{suffix}"
        if candidate.exists():
            return candidate
    return None


def _fingerprint(paths: list[Path]) -> str:
    return json.dumps([[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in paths])


# What an item's description feeds is search (its Qdrant text vector), never the ranker, which reads the
# name, category, price, stock and purchases (``Item.ranking_text``): a change to it alone re-embeds the
# item (its content hash changed) and leaves the fitted ranker current.
_NOT_RANKED = {"description"}


def ranker_input(items: list[Item], others: list[Path], currency: str | None) -> str:
    """A fingerprint of what the ranker is fitted on: the items less their descriptions, and the
    customers' and events' files. The ranker is stale when it differs from the one it was fitted on."""
    digest = hashlib.sha256()
    for item in sorted(items, key=lambda i: i.id):
        digest.update(json.dumps(item.model_dump(mode="json", exclude=_NOT_RANKED), sort_keys=True).encode())
    return json.dumps([digest.hexdigest(), _fingerprint(others), currency])


def import_dir(
    store: Store, directory: Path, *, force: bool = False, currency: str | None = None
) -> ImportReport:
    """Validate the whole directory, then write it in one transaction. Unchanged input is skipped.

    ``currency`` (the retailer's) is given to items that name none; without it they fall back on the
    item model's default."""
    if not directory.is_dir():
        raise DataError(f"{directory} is not a directory", hint="point at a folder with items.jsonl etc.")
    files = {kind: _find(directory, kind) for kind in ("items", "customers", "events")}
    if files["items"] is None:
        raise DataError(
            f"no items.jsonl or items.csv in {directory}", hint="see the canonical format in the README"
        )
    present = [p for p in files.values() if p is not None]
    fingerprint = _fingerprint(present) + f":{currency}"
    if not force and store.get_meta("import_fingerprint") == fingerprint:
        counts = store.counts()
        return ImportReport(counts["items"], counts["customers"], counts["events"], skipped=True)

    report = ImportReport()
    items, errs = read_records(
        files["items"], Item, "items", defaults={"currency": currency} if currency else None
    )
    report.errors += errs
    customers: list[Customer] = []
    events: list[Event] = []
    if files["customers"] is not None:
        customers, errs = read_records(files["customers"], Customer, "customers")
        report.errors += errs
    if files["events"] is not None:
        events, errs = read_records(files["events"], Event, "events")
        report.errors += errs
    if report.errors:
        first = report.errors[0]
        more = f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
        raise DataError(
            f"{first}{more}; nothing was imported", hint="fix the records and run the import again"
        )

    _check_references(store, items, customers, events, files["events"])
    store.import_all(items, customers, events)
    store.set_meta("import_fingerprint", fingerprint)
    others = [p for p in (files["customers"], files["events"]) if p is not None]
    # The store's catalog, not the file's: an import adds to what earlier ones left.
    store.set_meta(RANKER_INPUT, ranker_input(store.items(), others, currency))
    return ImportReport(len(items), len(customers), len(events))


def _check_references(
    store: Store, items: list[Item], customers: list[Customer], events: list[Event], source: Path | None
) -> None:
    known_items = {i.id for i in items} | set(store.item_hashes())
    known_customers = {c.id for c in customers} | set(store.customer_ids())
    seen: set[str] = set()
    for n, event in enumerate(events, start=1):
        if event.customer_id not in known_customers and event.customer_id not in seen:
            raise RecordError(
                "unknown customer",
                source=source.name if source else "events",
                line=n,
                field="customer_id",
                record_id=event.customer_id,
                hint="import the customer first, or add it to customers.jsonl",
            )
        if event.item_id is not None and event.item_id not in known_items:
            raise RecordError(
                "unknown item",
                source=source.name if source else "events",
                line=n,
                field="item_id",
                record_id=event.item_id,
                hint="add the item to items.jsonl",
            )
