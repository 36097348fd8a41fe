"""The two retailer configurations every agent, rail and API test runs under.

``hearth`` is the bundled demo retailer (GBP, example-retail.test); ``harbour`` is a second one
(``examples/brands/harbour_lane.toml``: TWD, its own voice, banned phrases, offers, link domain and
footer). Tests take the ``retailer`` fixture (``tests/conftest.py``), which runs them once under each."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tailor.core.brand import DEFAULT_BRAND, BrandConfig, load_brand
from tailor.core.models import Item

__all__ = ["HARBOUR", "HARBOUR_PATH", "HEARTH", "RETAILERS", "Retailer", "rebrand_catalog", "rebrand_item"]

HARBOUR_PATH = Path(__file__).resolve().parent.parent / "examples" / "brands" / "harbour_lane.toml"
HEARTH = load_brand(DEFAULT_BRAND)
HARBOUR = load_brand(HARBOUR_PATH)


@dataclass(frozen=True)
class Retailer:
    key: str
    brand: BrandConfig
    path: Path

    @property
    def domain(self) -> str:
        return self.brand.allowed_link_domains[0]

    def url(self, item_id: str) -> str:
        return f"https://{self.domain}/p/{item_id}"


RETAILERS = {
    "hearth": Retailer("hearth", HEARTH, DEFAULT_BRAND),
    "harbour": Retailer("harbour", HARBOUR, HARBOUR_PATH),
}


def rebrand_item(item: Item, retailer: Retailer) -> Item:
    """The same product as this retailer sells it: its currency, a link on its own domain."""
    return item.model_copy(update={"currency": retailer.brand.currency, "url": retailer.url(item.id)})


def rebrand_catalog(src: Path, dst: Path, retailer: Retailer) -> Path:
    """A copy of a canonical folder whose catalog is sold by ``retailer`` (customers and events unchanged)."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        if path.suffix != ".jsonl":
            continue
        if path.name != "items.jsonl":
            (dst / path.name).write_bytes(path.read_bytes())
            continue
        with path.open(encoding="utf-8") as fh, (dst / path.name).open("w", encoding="utf-8") as out:
            for line in fh:
                row = json.loads(line)
                row["currency"] = retailer.brand.currency
                row["url"] = retailer.url(row["id"])
                out.write(json.dumps(row) + "\n")
    return dst
