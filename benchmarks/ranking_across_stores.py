"""Tailor's ranking on stores unlike each other, each beside the reference rankers measured in the same run.

A figure tuned on one store is not a result: this runs the ranking eval on three stores and prints, for each,
Tailor's Recall@10 and NDCG@10 on both variants as a ratio to the best reference of that store (popularity,
repeat history, item-kNN, EASE, and repeat and EASE over the same longer history where there is one). The
floor is x1.00, the goal x1.05. Each ratio comes with its 95% interval from a paired bootstrap of the
evaluated customers (``evals.ranking.ratio_interval``): a ratio under 1 whose interval reaches past 1 is
printed as a tie within it, and still counted below the floor.

- ``uci``: UCI Online Retail with the earlier year, under the reference protocol (cut 2011-09-09);
- ``ta-feng``: four months of a grocery chain (../shared/datasets/ta-feng), no product names, its last
  quarter of days held out (``evals.protocol.sized_holdout_days``);
- ``no-repeat``: a seeded synthetic store in which nobody buys an item twice (``tailor.data.synthetic``).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ranking_across_stores.py [--stores uci,ta-feng,no-repeat]
        [--seed 0] [--tafeng-customers N]

It also prints each store's eval time (fit included), the label window the fit chose, and what each variant
serves with the validation figures behind the choice.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evals.protocol import sized_holdout_days  # noqa: E402
from evals.ranking import DEFAULT_EARLIER_PARQUET, RankingEval  # noqa: E402
from tailor.data.synthetic import SyntheticStore  # noqa: E402
from tailor.data.tafeng import purchases_frame  # noqa: E402

TAFENG = REPO.parent / "shared" / "datasets" / "ta-feng" / "ta_feng.csv.zip"
METRICS = ("recall@10", "ndcg@10")
VARIANTS = ("all", "new-only")
STORES = ("uci", "ta-feng", "no-repeat")
# The synthetic store the README quotes: a year of a mid-sized shop where nobody buys an item twice.
NO_REPEAT = SyntheticStore(customers=8000, items=3000, categories=60, repeat=0.0, one_time=0.3, seed=11)


def _eval(store: str, seed: int, tafeng_customers: int | None) -> RankingEval:
    if store == "uci":
        return RankingEval(earlier=DEFAULT_EARLIER_PARQUET, cache_dir=REPO / "var" / "cache", seed=seed)
    if store == "ta-feng":
        if not TAFENG.exists():
            raise SystemExit(f"{TAFENG} is missing: the Ta-Feng store lives in ../shared/datasets/ta-feng")
        frame = purchases_frame(TAFENG, customers_limit=tafeng_customers)
        # No product names: no text signal (stand-in titles are not text).
        return RankingEval(frame, holdout_days=sized_holdout_days(frame), text=None, seed=seed)
    frame = NO_REPEAT.purchases()
    items = {i.id: i.title for i in NO_REPEAT.items_list()}
    return RankingEval(frame, holdout_days=sized_holdout_days(frame), text=_embed(items), seed=seed)


def _embed(titles: dict[str, str]) -> dict[str, object]:
    from retrieval.embeddings import Embedder

    ids = sorted(titles)
    vectors = Embedder(cache_dir=REPO / "var" / "cache").encode([titles[i] for i in ids])
    return dict(zip(ids, vectors, strict=True))


def _row(store: str, out: dict[str, float]) -> list[str]:
    lines = []
    for variant in VARIANTS:
        for metric in METRICS:
            mine = out[f"ranking.tailor.{variant}.{metric}"]
            best = out[f"ranking.best_reference.{variant}.{metric}"]
            who = max(
                (
                    k.split(".")[1]
                    for k in out
                    if k.endswith(f".{variant}.{metric}")
                    and k.split(".")[1] not in ("tailor", "best_reference")
                ),
                key=lambda name: out[f"ranking.{name}.{variant}.{metric}"],
            )
            ratio = mine / best if best else float("inf")
            mark = "goal" if ratio >= 1.05 else "floor" if ratio >= 1.0 else "BELOW"
            at = f"ranking.tailor_vs_best.{variant}.{metric}"
            # The paired bootstrap's 95% interval of the ratio: how far other customers could move it.
            interval = f" [{out[f'{at}.low']:.3f}, {out[f'{at}.high']:.3f}]" if f"{at}.low" in out else ""
            if mark == "BELOW" and interval and out[f"{at}.high"] >= 1.0:
                mark = "BELOW, a tie within the interval"
            lines.append(
                f"{store:10s} {variant:8s} {metric:9s} tailor {mine:.4f}  best reference {who} {best:.4f}"
                f"  x{ratio:.3f}{interval} ({mark})"
            )
    return lines


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default=",".join(STORES), help=f"comma-separated, from {STORES}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tafeng-customers", type=int, default=None, help="the N busiest Ta-Feng customers")
    args = parser.parse_args()
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = [s for s in stores if s not in STORES]
    if unknown:
        parser.error(f"unknown stores {unknown}: choose from {STORES}")
    report: list[str] = []
    for store in stores:
        t0 = time.perf_counter()
        ev = _eval(store, args.seed, args.tafeng_customers)
        out = ev.run()
        seconds = time.perf_counter() - t0
        fit = ev.ranker.fit_report if ev.ranker is not None else {}
        split = ev.split
        period = f"test from {split.cut.date()}" if split is not None else ""
        print(
            f"{store}: {int(out['ranking.customers.all'])} customers evaluated, {period}; "
            f"label window {fit.get('label_days')} days ({fit.get('windows_used')} windows); "
            f"eval {seconds:.0f} s (fit {ev.timings.get('fit_s', 0):.0f} s)",
            flush=True,
        )
        val = fit.get("validation") or {}
        windows = ", ".join(
            f"{w['window_start'][:10]} ({w['window_days']} days)" + (" skipped" if "skipped" in w else "")
            for w in val.get("windows", [])
        )
        print(f"  served {fit.get('serving')}, chosen on {windows or 'no window'}: {val.get('recall@10')}")
        lines = _row(store, out)
        print("\n".join(lines), flush=True)
        report.extend(lines)
    print("\nsummary")
    print("\n".join(report))
    below = [line for line in report if "(BELOW" in line]
    ties = [line for line in below if "a tie" in line]
    print(
        f"{len(report) - len(below)} of {len(report)} figures at or above the best reference; of the rest,"
        f" {len(ties)} within the 95% interval of a tie and {len(below) - len(ties)} clearly below"
    )


if __name__ == "__main__":
    pd.set_option("display.width", 140)
    main()
