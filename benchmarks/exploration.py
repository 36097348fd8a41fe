"""What exploration costs and what it buys (``agent.exploration``, ``evals.own_log``).

Two parts, each at exploration shares of 0, 5, 10 and 20%:

- **What it buys**, on simulated decision logs whose true values are known (``simulate_own_log``: a 10%
  holdout, 10,000 decisions, 200 seeds): for the served policy and an alternative ("a recommendation
  whenever one qualifies"), the mean width of the 95% interval, how often it holds the true value, and
  the reward the explored decisions cost against always serving the planner's choice.
- **What it costs in ranking**, on real stores (UCI Online Retail at the reference cut, with its earlier
  year; Ta-Feng with February held out): a ranker is fitted on the history before the cut and ranks each
  evaluated customer's items; the email shows the first three, and exploration draws the third among
  ranks 3 to 8. Printed: the expected Recall@3 (what the email shows), NDCG@10 and Recall@10 of the list
  with the drawn item in third place, exact expectations over the draw, not samples.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/exploration.py [--stores uci,ta-feng] [--runs 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.exploration import epsilon_propensity  # noqa: E402
from evals.own_log import estimate, recommend_first, served, simulate_own_log, true_value  # noqa: E402
from evals.protocol import ndcg_at, recall_at, temporal_split  # noqa: E402
from retrieval.ranker import Ranker  # noqa: E402

SHARES = (0.0, 0.05, 0.1, 0.2)
SLOT, POOL = 2, 6  # the planner's: the third product, drawn among ranks 3 to 8


def simulated(runs: int) -> None:
    print(f"simulated logs: 10,000 decisions, 10% holdout, {runs} seeds; mean 95% interval width (coverage)")
    print(f"{'share':>6}  {'served, DR':>20}  {'recommend first, DR':>22}  {'reward cost':>11}")
    for share in SHARES:
        widths: dict[str, list[float]] = {"served": [], "alt": []}
        covered: dict[str, int] = {"served": 0, "alt": 0}
        cost = []
        for seed in range(runs):
            log = simulate_own_log(10_000, seed=seed, holdout=0.1, explore=share)
            for name, policy in (("served", served), ("alt", recommend_first)):
                e = estimate(log, policy, method="dr", seed=seed)
                widths[name].append(e.high - e.low)
                covered[name] += e.low <= true_value(log, policy) <= e.high
            assert log.truth is not None
            rows = log.targeted
            logged = log.truth[np.arange(len(log.action)), log.action][rows].mean()
            greedy = log.truth[np.arange(len(log.action)), served(log)][rows].mean()
            cost.append(greedy - logged)
        cells = [
            f"{np.mean(widths[n]):.4f} ({covered[n] / runs:.0%})".rjust(w)
            for n, w in (("served", 20), ("alt", 22))
        ]
        print(f"{share:>6.0%}  {cells[0]}  {cells[1]}  {np.mean(cost):>11.4f}")
    print(
        "  at 0%, an alternative is seen only where it agrees with the planner: elsewhere its estimate"
        " rests on the reward model alone, and the interval misses the truth"
    )


def _store(name: str):  # type: ignore[no-untyped-def]
    from benchmarks.ranking_across_stores import _eval

    return _eval(name, 0, None)


def ranking(stores: list[str]) -> None:
    for name in stores:
        t0 = time.perf_counter()
        ev = _store(name)
        purchases, vectors = ev._load()
        from evals.protocol import holdout_cut

        cut = holdout_cut(purchases, ev.holdout_days) if ev.holdout_days is not None else ev.cut
        split = temporal_split(purchases, cut, start=ev.start)
        ranker = Ranker(seed=0, validate=0).fit(split.history, vectors, now=split.cut)
        customers = list(split.evaluated("all"))
        lists = ranker.rank(customers, k=10)
        fitted = time.perf_counter() - t0
        print(
            f"\n{name}: {len(customers)} customers, test from {split.cut.date()} (fit, rank {fitted:.0f} s)"
        )
        print(f"{'share':>6}  {'recall@3':>9}  {'ndcg@10':>8}  {'recall@10':>9}")
        for share in SHARES:
            r3, n10, r10 = [], [], []
            for cid, ranked in zip(customers, lists, strict=True):
                relevant = split.relevant(cid, "all")
                pool = min(POOL, max(len(ranked) - SLOT, 0))
                if pool < 2:
                    choices = [(list(ranked), 1.0)]
                else:
                    choices = []
                    for j in range(pool):
                        swapped = list(ranked)
                        swapped[SLOT], swapped[SLOT + j] = swapped[SLOT + j], swapped[SLOT]
                        choices.append((swapped, epsilon_propensity(share, pool, greedy=j == 0)))
                r3.append(sum(p * recall_at(lst, relevant, 3) for lst, p in choices))
                n10.append(sum(p * ndcg_at(lst, relevant, 10) for lst, p in choices))
                r10.append(sum(p * recall_at(lst, relevant, 10) for lst, p in choices))
            print(f"{share:>6.0%}  {np.mean(r3):>9.4f}  {np.mean(n10):>8.4f}  {np.mean(r10):>9.4f}")


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="uci,ta-feng")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    simulated(args.runs)
    ranking([s.strip() for s in args.stores.split(",") if s.strip()])


if __name__ == "__main__":
    main()
