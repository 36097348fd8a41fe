"""A seeded synthetic retailer: a store of any size and shape, for benchmarks and tests.

Real stores differ in what matters to a recommender: how often customers buy the same thing again, how many
come once and never return, how sharply popularity falls off, how much the season moves it. The generator
makes each of these a parameter, so a ranking figure can be checked on a store unlike the demo (nobody buys
an item twice, say), and a size figure on a store larger than any real one at hand.

How a store is drawn, all from one seed:
- items fall into categories; within a category, popularity follows a power law (``zipf``) and each item has
  a seasonal peak (``season``: 0 is flat, 1 doubles an item's pull at its peak month and empties it at the
  opposite one);
- each customer likes two or three categories; a share of customers (``one_time``) order once, the others
  a Poisson number of times, with exponential gaps;
- each line of an order re-buys one of the customer's own earlier items with probability ``repeat`` (the
  most recent ones likelier), or else a new item of a liked category. With ``repeat=0`` no customer ever
  buys the same item twice.

Item titles and descriptions are made from word lists, so text signals have something to read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, time
from pathlib import Path

import numpy as np
import pandas as pd

from tailor.core.errors import DataError
from tailor.core.models import Consent, Customer, Event, EventKind, Item, QuietHours

__all__ = ["SyntheticStore", "write_canonical"]

_MATERIALS = (
    "Linen", "Oak", "Ceramic", "Enamel", "Wool", "Cotton", "Glass", "Copper", "Bamboo", "Velvet", "Rattan",
    "Stoneware", "Brass", "Cork", "Jute", "Porcelain", "Felt", "Marble", "Pine", "Tin",
)  # fmt: skip
_THINGS = (
    "Mug", "Tea Towel", "Candle", "Lantern", "Basket", "Cushion", "Vase", "Planter", "Tray", "Bowl", "Jar",
    "Clock", "Frame", "Throw", "Apron", "Coaster Set", "Storage Box", "Notebook", "Bunting", "Doorstop",
    "Egg Cup", "Teapot", "Lunch Bag", "Wall Hook", "Night Light", "Jigsaw", "Gift Wrap", "Trinket Dish",
)  # fmt: skip
_COLOURS = (
    "Sage", "Ivory", "Navy", "Mustard", "Blush", "Charcoal", "Teal", "Rust", "Cream", "Forest", "Lilac",
    "Sky Blue", "Terracotta", "Mint", "Plum", "Sand",
)  # fmt: skip
_THEMES = (
    "Kitchen", "Garden", "Christmas", "Nursery", "Bathroom", "Picnic", "Study", "Party", "Spring", "Autumn",
    "Seaside", "Woodland", "Vintage", "Scandi", "Botanical", "Retro",
)  # fmt: skip
_NAMES = (
    "Ada",
    "Ben",
    "Cleo",
    "Dev",
    "Ema",
    "Finn",
    "Gus",
    "Hana",
    "Ivo",
    "Jun",
    "Kai",
    "Lea",
    "Max",
    "Noor",
)


@dataclass(frozen=True)
class SyntheticStore:
    """The shape of a synthetic retailer; ``purchases()`` and ``items()`` draw it (the same seed, the same
    store)."""

    customers: int = 5000
    items: int = 2000
    categories: int = 40
    days: int = 365
    start: str = "2023-01-01"
    repeat: float = 0.3
    one_time: float = 0.35
    orders: float = 5.0  # mean orders of a returning customer
    basket: float = 3.0  # mean lines of an order
    zipf: float = 1.1
    season: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "customers": self.customers >= 1,
            "items": self.items >= 2,
            "categories": 1 <= self.categories <= self.items,
            "days": self.days >= 7,
            "repeat": 0.0 <= self.repeat <= 1.0,
            "one_time": 0.0 <= self.one_time <= 1.0,
            "orders": self.orders >= 1.0,
            "basket": self.basket >= 1.0,
            "zipf": self.zipf >= 0.0,
            "season": 0.0 <= self.season <= 1.0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise DataError(f"synthetic store: {bad[0]}={getattr(self, bad[0])!r} is out of range")

    # -- the catalog -----------------------------------------------------------------------------
    def _catalog(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each item's category, popularity weight and peak month (0-11)."""
        rng = np.random.default_rng([self.seed, 1])
        category = np.concatenate(
            [np.arange(self.categories), rng.integers(0, self.categories, self.items - self.categories)]
        )
        rng.shuffle(category)
        weight = np.empty(self.items)
        for c in range(self.categories):
            members = np.flatnonzero(category == c)
            ranks = rng.permutation(len(members))
            weight[members] = 1.0 / (ranks + 1.0) ** self.zipf
        peak = rng.integers(0, 12, self.items)
        return category, weight, peak

    def _prices(self) -> np.ndarray:
        return np.round(2.0 + 40.0 * np.random.default_rng([self.seed, 5]).beta(1.5, 6.0, self.items), 2)

    def items_list(self) -> list[Item]:
        category, _, _ = self._catalog()
        price = self._prices()
        rng = np.random.default_rng([self.seed, 2])
        out = []
        for i in range(self.items):
            theme = _THEMES[int(category[i]) % len(_THEMES)]
            thing = _THINGS[(int(category[i]) // len(_THEMES) + int(category[i])) % len(_THINGS)]
            material = _MATERIALS[int(rng.integers(len(_MATERIALS)))]
            colour = _COLOURS[int(rng.integers(len(_COLOURS)))]
            title = f"{material} {thing} {colour}"
            out.append(
                Item(
                    id=f"S{i:06d}",
                    title=title,
                    description=f"A {colour.lower()} {thing.lower()} in {material.lower()}, from the "
                    f"{theme} range.",
                    category=f"{theme} {thing}s",
                    price=float(price[i]),
                    url=f"https://synthetic-retail.test/p/S{i:06d}",
                    in_stock=bool(rng.random() > 0.05),
                )
            )
        return out

    # -- the purchases ---------------------------------------------------------------------------
    def purchases(self) -> pd.DataFrame:
        """Purchase lines: customer_id, item_id, timestamp (UTC), quantity, value, order_id."""
        category, weight, peak = self._catalog()
        rng = np.random.default_rng([self.seed, 3])
        months = np.arange(12)
        # Seasonal pull per (month, item): 1 + season·cos(distance to the item's peak).
        pull = 1.0 + self.season * np.cos(2 * np.pi * (months[:, None] - peak[None, :]) / 12.0)
        by_cat = [np.flatnonzero(category == c) for c in range(self.categories)]
        # Cumulative weights per (month, category), so a draw is one searchsorted.
        cum = [[np.cumsum(weight[m] * pull[mo, m]) for m in by_cat] for mo in range(12)]
        price = self._prices()
        start = pd.Timestamp(self.start, tz="UTC")
        start_month = start.month - 1
        cust_col: list[np.ndarray] = []
        item_col: list[np.ndarray] = []
        day_col: list[np.ndarray] = []
        order_col: list[np.ndarray] = []
        n_orders = np.where(
            rng.random(self.customers) < self.one_time, 1, 1 + rng.poisson(self.orders - 1.0, self.customers)
        )
        order_no = 0
        for c in range(self.customers):
            k = int(rng.integers(2, 4))
            liked = rng.choice(self.categories, size=min(k, self.categories), replace=False)
            taste = rng.dirichlet(np.ones(len(liked)) * 2.0)
            n = int(n_orders[c])
            first = rng.uniform(0, self.days)
            gaps = rng.exponential(self.days / max(2.0 * n, 1.0), n - 1)
            days = np.concatenate([[first], first + np.cumsum(gaps)])
            days = days[days < self.days]
            past: list[int] = []
            owned: set[int] = set()
            for day in days:
                lines = 1 + int(rng.poisson(self.basket - 1.0))
                month = (start_month + int(day // 30.44)) % 12
                basket: list[int] = []
                for _ in range(lines):
                    item = -1
                    if past and rng.random() < self.repeat:
                        # The most recent of her own items likelier: a geometric step back from the end.
                        back = min(int(rng.geometric(0.3)) - 1, len(past) - 1)
                        item = past[-1 - back]
                    else:
                        for _attempt in range(8):
                            cat = int(liked[np.searchsorted(np.cumsum(taste), rng.random() * 0.999999)])
                            cw = cum[month][cat]
                            j = int(by_cat[cat][min(np.searchsorted(cw, rng.random() * cw[-1]), len(cw) - 1)])
                            if j not in owned or self.repeat > 0:
                                item = j
                                break
                    if item < 0 or item in basket:
                        continue
                    basket.append(item)
                if not basket:
                    continue
                past.extend(basket)
                owned.update(basket)
                cust_col.append(np.full(len(basket), c))
                item_col.append(np.asarray(basket))
                day_col.append(np.full(len(basket), day))
                order_col.append(np.full(len(basket), order_no))
                order_no += 1
        if not cust_col:
            raise DataError("synthetic store: the parameters produced no purchase at all")
        cust = np.concatenate(cust_col)
        bought = np.concatenate(item_col)
        when = np.concatenate(day_col)
        qty = 1 + rng.poisson(0.4, len(bought))
        return pd.DataFrame(
            {
                "customer_id": np.char.add("c", cust.astype(str)),
                "item_id": np.char.add("S", np.char.zfill(bought.astype(str), 6)),
                "timestamp": start + pd.to_timedelta(np.floor(when * 86400), unit="s"),
                "quantity": qty,
                "value": np.round(qty * price[bought], 2),
                "order_id": np.char.add("o", np.concatenate(order_col).astype(str)),
            }
        )


def _customers(spec: SyntheticStore, ids: list[str]) -> Iterator[Customer]:
    rng = np.random.default_rng([spec.seed, 4])
    for cid in ids:
        name = _NAMES[int(rng.integers(len(_NAMES)))]
        yield Customer(
            id=cid,
            first_name=name,
            email=f"{name.lower()}.{cid}@example.com",
            country="United Kingdom",
            consent=Consent(
                marketing_email=bool(rng.random() < 0.85), personalization=bool(rng.random() < 0.95)
            ),
            quiet_hours=QuietHours(start=time(21, 0), end=time(8, 0)),
            locale="en-GB",
            timezone="Europe/London",
            synthetic=True,
        )


def write_canonical(spec: SyntheticStore, out_dir: Path) -> dict[str, int]:
    """The store in Tailor's canonical format (items, customers, events JSONL, SOURCE.json)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = spec.purchases()
    counts: dict[str, int] = {}

    def write(name: str, rows: Iterator[str]) -> None:
        tmp = out_dir / f"{name}.jsonl.tmp"
        n = 0
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(row + "\n")
                n += 1
        tmp.replace(out_dir / f"{name}.jsonl")
        counts[name] = n

    write("items", (i.model_dump_json() for i in spec.items_list()))
    ids = sorted(frame["customer_id"].unique().tolist())
    write("customers", (c.model_dump_json() for c in _customers(spec, ids)))

    def events() -> Iterator[str]:
        for n, (cid, iid, ts, qty, value, order) in enumerate(frame.itertuples(index=False, name=None)):
            yield Event(
                id=f"syn-{n}",
                customer_id=cid,
                kind=EventKind.PURCHASE,
                item_id=iid,
                quantity=int(qty),
                value=float(value),
                timestamp=ts.to_pydatetime(),
                order_id=order,
            ).model_dump_json(exclude_none=True)

    write("events", events())
    source = {
        "dataset": "synthetic (tailor.data.synthetic.SyntheticStore)",
        "parameters": asdict(spec),
        "synthetic": ["everything"],
        "generated_at": datetime.now(UTC).isoformat(),
    }
    (out_dir / "SOURCE.json").write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
    return counts
