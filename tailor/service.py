"""The service facade: one object that wires the store, retrieval, the agent and guardrails together.

The CLI and the HTTP API both talk to Tailor through this class, so they behave the same way.
Heavy parts (the embedding model, Qdrant, the ranker) are opened lazily, on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from tailor.errors import DataError
from tailor.importer import ImportReport, import_dir
from tailor.models import Consent, Customer, Event, EventKind, Explanation, Recommendation
from tailor.settings import Settings
from tailor.store import Store

__all__ = ["DEMO_SOURCE", "Tailor"]

DEMO_SOURCE = Path(__file__).resolve().parent.parent / "data" / "raw" / "online_retail.parquet"

Progress = Callable[[str, int, int], None]


class Tailor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(settings.store_path)
        self._lock = threading.RLock()

    @classmethod
    def open(cls, settings: Settings | None = None) -> Tailor:
        return cls(settings or Settings())

    def close(self) -> None:
        if "vectors" in self.__dict__:
            self.vectors.close()
        self.store.close()

    def __enter__(self) -> Tailor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self) -> datetime:
        if self.settings.now:
            moment = datetime.fromisoformat(self.settings.now)
            return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
        return datetime.now(UTC)

    # -- data ------------------------------------------------------------------------------------
    def import_dir(self, directory: Path, *, force: bool = False) -> ImportReport:
        return import_dir(self.store, directory, force=force)

    def import_uci(
        self, parquet: Path = DEMO_SOURCE, *, customers_limit: int | None = None, force: bool = False
    ) -> ImportReport:
        """Convert UCI Online Retail to the canonical format under the data dir, then import it."""
        from tailor.uci import convert

        if not parquet.exists():
            raise DataError(f"{parquet} does not exist", hint="pass the path of online_retail.parquet")
        out = self.settings.data_dir / "canonical"
        marker = (
            f"{parquet.resolve()}:{parquet.stat().st_size}:{parquet.stat().st_mtime_ns}:{customers_limit}"
        )
        if force or self.store.get_meta("uci_source") != marker or not (out / "items.jsonl").exists():
            convert(parquet, out, customers_limit=customers_limit)
            self.store.set_meta("uci_source", marker)
        return self.import_dir(out, force=force)

    # -- the rest is filled in as retrieval and the agent land ------------------------------------
    def recommend(self, customer_id: str, k: int = 10) -> list[Recommendation]:
        raise NotImplementedError

    def why(self, customer_id: str, item_id: str) -> Explanation:
        raise NotImplementedError

    def ingest(self, events: Sequence[Event], customers: Sequence[Customer] = ()) -> dict[str, int]:
        raise NotImplementedError

    def set_consent(self, customer_id: str, consent: Consent) -> Customer:
        customer = self.store.get_customer(customer_id).model_copy(update={"consent": consent})
        self.store.upsert_customers([customer])
        return customer

    def demo_customers(self, n: int = 3) -> list[str]:
        """Customers worth showing: opted in, with a long history, one of them with a support ticket."""
        rows = self.store.busiest_customers(limit=200)
        chosen: list[str] = []
        with_ticket = set(self.store.customers_with(EventKind.SUPPORT_TICKET))
        for customer_id in sorted(rows, key=lambda c: (c not in with_ticket, rows.index(c))):
            customer = self.store.get_customer(customer_id)
            if customer.consent.marketing_email and customer.consent.personalization:
                chosen.append(customer_id)
            if len(chosen) == n:
                break
        return chosen

    def forget(self, customer_id: str) -> dict[str, int]:
        raise NotImplementedError

    def health(self) -> dict[str, bool]:
        raise NotImplementedError

    @cached_property
    def vectors(self) -> Any:
        raise NotImplementedError
