"""How far Tailor's ranking figures move from seed to seed, on any cut and with any ranker parameters.

One ``RankingEval`` per seed; the reference rankers (repeat, item-kNN, EASE, and repeat and EASE over the same
longer history when there is one) do not depend on the seed, so they are measured once, in the same run, and
Tailor's mean is printed as a ratio to the best of them. The validation cut the README quotes is 2011-06-09;
the peers' reference cut, the default, is 2011-09-09.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ranking_spread.py [--seeds 0,1,2] [--cut 2011-06-09]
        [--no-earlier] [--param n_collab=150 --param n_text=50] [--no-text]

The figures also move a little with the number of BLAS/OpenMP threads: set ``OMP_NUM_THREADS`` to compare
runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evals.ranking import DEFAULT_EARLIER_PARQUET, RankingEval  # noqa: E402

METRICS = ("recall@10", "ndcg@10")
VARIANTS = ("all", "new-only")


def _param(text: str) -> tuple[str, int]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--param wants KEY=VALUE, got {text!r}")
    try:
        return key, int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--param {key}: {value!r} is not an integer") from exc


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--seeds wants integers separated by commas, got {text!r}") from exc
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds is empty")
    return seeds


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=_seeds, default=[0, 1, 2])
    parser.add_argument("--cut", default=None, help="train before it, test from it (default: 2011-09-09)")
    parser.add_argument("--no-earlier", action="store_true", help="fit on Online Retail alone")
    parser.add_argument("--param", type=_param, action="append", default=[], help="a ranker parameter")
    parser.add_argument("--no-text", action="store_true", help="leave the text-similarity signal out")
    args = parser.parse_args()

    params = dict(args.param)
    earlier = None if args.no_earlier else DEFAULT_EARLIER_PARQUET
    print(
        f"cut {args.cut or '2011-09-09 (reference)'}; earlier history: {earlier.name if earlier else 'none'}"
    )
    threads = os.environ.get("OMP_NUM_THREADS", "as installed")
    print(f"ranker parameters: {params or 'defaults'}; OMP_NUM_THREADS {threads}")
    runs: list[dict[str, float]] = []
    refs: dict[str, float] = {}
    for n, seed in enumerate(args.seeds):
        ev = RankingEval(
            earlier=earlier,
            cut=args.cut,
            text=None if args.no_text else "embed",
            cache_dir=REPO / "var" / "cache",
            seed=seed,
            ranker_params=params,
            # The references do not depend on the seed: measured with the first one only.
            references=("repeat", "itemknn", "ease") if n == 0 else (),
        )
        out = ev.run()
        if n == 0:
            refs = out
        runs.append(out)
        row = "  ".join(f"{v} {m} {out[f'ranking.tailor.{v}.{m}']:.4f}" for v in VARIANTS for m in METRICS)
        windows = ev.ranker.windows_used if ev.ranker else 0
        print(f"seed {seed:3d}  {row}  (windows {windows}, fit {ev.timings['fit_s']:.0f}s)", flush=True)

    print()
    # ``best_reference`` is the run's maximum over the references already listed, not one of its own.
    measured = {k: v for k, v in refs.items() if ".best_reference." not in k}
    for key in sorted(k for k in measured if ".tailor." not in k and k.endswith(METRICS)):
        _, name, variant, metric = key.split(".")
        print(f"reference {name:12s} {variant:8s} {metric:9s} {refs[key]:.4f}")
    for variant in VARIANTS:
        for metric in METRICS:
            key = f"ranking.tailor.{variant}.{metric}"
            values = [r[key] for r in runs]
            mean = statistics.fmean(values)
            names = [
                k.split(".")[1]
                for k in measured
                if k.endswith(f".{variant}.{metric}") and ".tailor." not in k
            ]
            best = max(names, key=lambda name: refs[f"ranking.{name}.{variant}.{metric}"])
            ref = refs[f"ranking.{best}.{variant}.{metric}"]
            spread = f"min {min(values):.4f}, max {max(values):.4f}, {len(values)} seeds"
            print(
                f"{variant:8s} {metric:9s} tailor mean {mean:.4f} ({spread})"
                f"  best reference {best} {ref:.4f}  ratio x{mean / ref:.3f}"
            )


if __name__ == "__main__":
    main()
