"""All rails on whole emails: p50/p95 ms per email, against one plain ``re`` scan of the same texts.

Run: ``python benchmarks/guardrails_bench.py [--emails 200] [--show]`` from the repo root. The catalog is the
demo store's (``var/tailor.db``, as ``make demo`` builds it) when there is one, else a synthetic catalog of
4,000 items. Emails are made as the agent makes them (``evals.make_redteam``: a plan from the planner over a
synthetic history, copy from the template writer or varied wordings, ``agent.compose`` for product lines,
prices, links and footer), and checked in the rail context the agent builds: the whole catalog, the
customer's events (views within the day among them), other customers in play, facts, links and footer.
Target: p95 <= 20 ms per email on 2 cores; the copy-quality rail's share of it (its time on all of an
email's free-text parts) p95 <= 5 ms.

Then each rail on hostile text (long runs of one or two characters, the shapes that make a regex read its
input again from each position), at 1,000 and 16,000 characters: the worst shape's time and its growth, ×16
where the rail reads in linear time, ×256 where in quadratic."""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
from pathlib import Path

# Run as a script (benchmarks/run_all.py does), this file's folder comes first on sys.path and the file
# itself would shadow the ``guardrails`` package; the repo root must win.
_ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(_ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != _ROOT / "benchmarks"]

from agent.compose import rail_context  # noqa: E402
from evals.make_redteam import render, scene, template_copy, varied_copy  # noqa: E402
from guardrails import grounding  # noqa: E402
from guardrails.base import RailContext  # noqa: E402
from guardrails.runner import RAILS, check_all, check_email  # noqa: E402
from tailor.core.brand import DEFAULT_BRAND, load_brand  # noqa: E402
from tailor.core.models import Item  # noqa: E402
from tailor.data.store import Store  # noqa: E402

STORE = _ROOT / "var" / "tailor.db"
SEED = 7

_ADJ = ("Vintage", "Retro", "Rustic", "Painted", "Enamel", "Woven", "Glass", "Ceramic", "Wooden", "Zinc")
_COLOUR = ("Red", "Blue", "Pink", "Ivory", "Green", "Gold", "Silver", "Cream", "Black", "Pastel")
_MOTIF = ("Heart", "Spot", "Floral", "Star", "Bird", "Paisley", "Gingham", "Regency", "Owl", "Lace")
_NOUN = ("Storage Jar", "Tea Cup", "Cake Tin", "Lantern", "Photo Frame", "Shopper Bag", "Notebook", "Cushion")


def _synthetic_catalog(n: int = 4000) -> dict[str, Item]:
    rng = random.Random(SEED)
    items: dict[str, Item] = {}
    k = 0
    while len(items) < n:
        k += 1
        title = f"{rng.choice(_ADJ)} {rng.choice(_COLOUR)} {rng.choice(_MOTIF)} {rng.choice(_NOUN)}"
        if rng.random() < 0.3:
            title += f" Set Of {rng.choice((2, 3, 4, 6, 12))}"
        item_id = f"{20000 + k}"
        items[item_id] = Item(
            id=item_id,
            title=title,
            category="Home Decor",
            price=round(rng.uniform(0.4, 25), 2),
            url=f"https://example-retail.test/p/{item_id}",
        )
    return items


def _catalog() -> tuple[dict[str, Item], str]:
    if STORE.is_file():
        store = Store(STORE)
        try:
            catalog = store.item_map()
        finally:
            store.close()
        if catalog:
            return catalog, f"demo store {STORE.relative_to(_ROOT)}"
    return _synthetic_catalog(), "synthetic"


# The peer: a single regex pass that finds prices, URLs and a few banned words, no context, no logic.
_BASELINE = re.compile(r"£\d+\.\d{2}|https?://\S+|\b(?:act now|click here|guaranteed)\b", re.IGNORECASE)


# The copy-quality rail reads only email parts; an intro runs every one of its rules.
_PART = {"copy_quality": "intro"}
HOSTILE = ("a", "1", "@", "<", "-", ".", " ", "a-", "1-", "a@", "<a ", "a.", "£1", " on", "www.", "A ", "{{")


def _hostile(ctx: RailContext, lengths: tuple[int, int] = (1000, 16000)) -> None:
    """The slowest hostile shape per rail at each length, best of three runs (a shared machine is noisy)."""
    print(f"hostile text, worst of {len(HOSTILE)} shapes (ms at {lengths[0]:,} / {lengths[1]:,} characters):")
    for rail in RAILS:
        worst: list[tuple[float, str]] = []
        for n in lengths:
            times = []
            for shape in HOSTILE:
                text = (shape * (n // len(shape) + 1))[:n]
                runs = [
                    check_all(text, ctx, (rail,), part=_PART.get(rail.name, "body"), budget_ms=1e9)[
                        0
                    ].elapsed_ms
                    for _ in range(3)
                ]
                times.append((min(runs), shape))
            worst.append(max(times))
        (small, _), (large, shape) = worst
        growth = large / max(small, 1e-3)
        print(f"  {rail.name:10s} {small:7.2f} / {large:8.2f} ms  growth x{growth:.0f}  ({shape!r})")


def _pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--emails", type=int, default=200)
    ap.add_argument("--show", action="store_true", help="print the findings of blocked emails")
    args = ap.parse_args()
    brand = load_brand(DEFAULT_BRAND)
    catalog, source = _catalog()
    pool = [i for i in catalog.values() if i.in_stock and len(i.title) >= 14]
    rng = random.Random(SEED)
    emails: list[tuple[dict[str, str], RailContext]] = []
    n_events = n_others = 0
    for n in range(args.emails):
        sc = scene(rng, n, pool)
        copy = template_copy(sc, brand) if n % 3 == 0 else varied_copy(rng, sc, brand)
        parts, _ = render(sc, copy, brand)
        # The whole catalog, as the agent's check node has it (the scene knows only the items it touched).
        ctx = rail_context(sc.customer, sc.plan, catalog, brand, sc.events, sc.now, others=sc.others)
        emails.append((parts, ctx))
        n_events += len(sc.events)
        n_others += len(sc.others)
    grounding.warm(catalog)  # as agent.context.AgentDeps does, outside any rail's time budget
    check_email(*emails[0])  # warm the remaining caches (compiled patterns, brand config)
    rails_ms, base_ms, copy_ms, blocked = [], [], [], 0
    for parts, ctx in emails:
        t = time.perf_counter()
        verdicts = check_email(parts, ctx)
        rails_ms.append((time.perf_counter() - t) * 1000)
        copy_ms.append(sum(v.elapsed_ms for v in verdicts if v.rail == "copy_quality"))
        blocked += not all(v.passed for v in verdicts)
        if args.show and not all(v.passed for v in verdicts):
            print([(f.part, f.rule, f.message) for v in verdicts for f in v.findings])
        t = time.perf_counter()
        for text in parts.values():
            _BASELINE.findall(text)
        base_ms.append((time.perf_counter() - t) * 1000)
    p50, p95 = statistics.median(rails_ms), _pct(rails_ms, 0.95)
    b50, b95 = statistics.median(base_ms), _pct(base_ms, 0.95)
    print(f"catalog={source} items={len(catalog)}")
    print(
        f"emails={len(emails)} blocked={blocked} events/email={n_events / len(emails):.1f} "
        f"other customers={n_others}"
    )
    print(f"all rails  p50={p50:.3f} ms  p95={p95:.3f} ms  (target p95 <= 20 ms: {p95 <= 20})")
    print(f"re scan    p50={b50:.3f} ms  p95={b95:.3f} ms")
    print(f"ratio rails/re  p50={p50 / b50:.1f}x  p95={p95 / b95:.1f}x")
    c50, c95 = statistics.median(copy_ms), _pct(copy_ms, 0.95)
    print(f"copy_quality p50={c50:.3f} ms  p95={c95:.3f} ms per email  (target p95 <= 5 ms: {c95 <= 5})")
    _hostile(emails[0][1])


if __name__ == "__main__":
    main()
