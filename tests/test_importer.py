from __future__ import annotations

import json
from pathlib import Path

import pytest

from tailor.core.errors import DataError, RecordError
from tailor.core.models import EventKind
from tailor.data.importer import import_dir
from tailor.data.store import Store

ITEM = {
    "id": "A1",
    "title": "Jute Bag",
    "category": "Bags",
    "price": 2.5,
    "url": "https://example-retail.test/p/A1",
}
CUSTOMER = {
    "id": "c1",
    "first_name": "Ann",
    "email": "ann@example.com",
    "country": "United Kingdom",
    "consent": {"marketing_email": True, "personalization": True},
}
EVENT = {
    "customer_id": "c1",
    "kind": "purchase",
    "item_id": "A1",
    "quantity": 2,
    "value": 5.0,
    "timestamp": "2011-05-01T10:00:00Z",
    "order_id": "o1",
}


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_jsonl_round_trip(tmp_path: Path, fresh_store: Store) -> None:
    write_jsonl(tmp_path / "items.jsonl", [ITEM])
    write_jsonl(tmp_path / "customers.jsonl", [CUSTOMER])
    write_jsonl(tmp_path / "events.jsonl", [EVENT])
    report = import_dir(fresh_store, tmp_path)
    assert (report.items, report.customers, report.events) == (1, 1, 1)
    assert fresh_store.get_item("A1").price_text == "£2.50"
    assert fresh_store.get_customer("c1").consent.marketing_email is True
    [event] = fresh_store.events("c1")
    assert event.kind is EventKind.PURCHASE and event.id is not None


def test_unchanged_input_is_skipped_and_reimport_is_idempotent(tmp_path: Path, fresh_store: Store) -> None:
    write_jsonl(tmp_path / "items.jsonl", [ITEM])
    write_jsonl(tmp_path / "customers.jsonl", [CUSTOMER])
    write_jsonl(tmp_path / "events.jsonl", [EVENT])
    import_dir(fresh_store, tmp_path)
    assert import_dir(fresh_store, tmp_path).skipped
    import_dir(fresh_store, tmp_path, force=True)
    assert fresh_store.counts() == {"items": 1, "customers": 1, "events": 1}


def test_csv_with_flat_consent_columns(tmp_path: Path, fresh_store: Store) -> None:
    (tmp_path / "items.csv").write_text(
        "id,title,category,price,in_stock,url\nA1,Jute Bag,Bags,2.5,no,https://example-retail.test/p/A1\n"
    )
    (tmp_path / "customers.csv").write_text(
        "id,first_name,email,country,consent_marketing_email,consent_personalization,quiet_hours_start,quiet_hours_end\n"
        "c1,Ann,ann@example.com,UK,true,false,21:00,08:00\n"
    )
    import_dir(fresh_store, tmp_path)
    assert fresh_store.get_item("A1").in_stock is False
    assert fresh_store.get_item("A1").named is True  # no column: a title is a name
    customer = fresh_store.get_customer("c1")
    assert customer.consent.personalization is False
    assert customer.quiet_hours is not None and customer.quiet_hours.start.hour == 21


def test_bad_record_names_file_line_and_field_and_writes_nothing(tmp_path: Path, fresh_store: Store) -> None:
    write_jsonl(tmp_path / "items.jsonl", [ITEM, {**ITEM, "id": "A2", "price": "cheap"}])
    write_jsonl(tmp_path / "customers.jsonl", [CUSTOMER])
    with pytest.raises(DataError) as info:
        import_dir(fresh_store, tmp_path)
    message = str(info.value)
    assert "items.jsonl:2" in message and "'price'" in message and "nothing was imported" in message
    assert fresh_store.counts() == {"items": 0, "customers": 0, "events": 0}


def test_broken_json_line_is_reported(tmp_path: Path, fresh_store: Store) -> None:
    (tmp_path / "items.jsonl").write_text(json.dumps(ITEM) + "\n{not json\n")
    with pytest.raises(DataError, match=r"items.jsonl:2"):
        import_dir(fresh_store, tmp_path)


def test_event_for_unknown_customer_is_refused_whole(tmp_path: Path, fresh_store: Store) -> None:
    write_jsonl(tmp_path / "items.jsonl", [ITEM])
    write_jsonl(tmp_path / "customers.jsonl", [CUSTOMER])
    write_jsonl(tmp_path / "events.jsonl", [EVENT, {**EVENT, "customer_id": "ghost"}])
    with pytest.raises(RecordError) as info:
        import_dir(fresh_store, tmp_path)
    assert info.value.field == "customer_id" and info.value.line == 2 and info.value.record_id == "ghost"
    assert fresh_store.counts()["items"] == 0


def test_missing_items_file_is_a_clear_error(tmp_path: Path, fresh_store: Store) -> None:
    with pytest.raises(DataError, match=r"no items\.jsonl or items\.csv"):
        import_dir(fresh_store, tmp_path)


def test_an_unnamed_item_keeps_its_flag_through_jsonl_and_csv(tmp_path: Path, fresh_store: Store) -> None:
    code = {**ITEM, "id": "4710085120468", "title": "Item 4710085120468", "named": False}
    write_jsonl(tmp_path / "items.jsonl", [ITEM, code])
    import_dir(fresh_store, tmp_path)
    assert fresh_store.get_item("4710085120468").named is False
    assert fresh_store.get_item("A1").named is True
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "items.csv").write_text(
        "id,title,category,price,url,named\n"
        "B1,Item B1,Subclass 1,2.5,https://tafeng.example.test/p/B1,false\n"
        "B2,Oat Milk,Dairy,1.5,https://tafeng.example.test/p/B2,maybe\n"
    )
    with pytest.raises(DataError, match=r"items\.csv:3.*named: expected true/false, got 'maybe'"):
        import_dir(fresh_store, tmp_path / "csv")
