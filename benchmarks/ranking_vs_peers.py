"""Tailor's ranker against the peer libraries on UCI Online Retail, measured in the same run.

Runs the peer script (``../shared/bench/retail_peers.py``: popularity, repeat history, item-kNN, EASE,
implicit ALS) as a subprocess, then Tailor's ``RankingEval`` on the same protocol, and prints both side by
side with Tailor's ratio to the best peer of each variant.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ranking_vs_peers.py [--peers P] [--parquet P] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402

from evals.ranking import (  # noqa: E402
    DEFAULT_EARLIER_PARQUET,
    DEFAULT_PARQUET,
    RankingEval,
    rebuy_by_recency,
    recency_shift_bound,
)

_LINE = re.compile(
    r"^(?P<name>\S+)\s+(?P<variant>all|new-only)\s+Recall@10 (?P<recall>[\d.]+)\s+NDCG@10 (?P<ndcg>[\d.]+)"
    r"\s+HitRate@10 (?P<hit>[\d.]+)\s+customers (?P<n>\d+)"
)


def run_peers(script: Path, parquet: Path) -> tuple[dict[tuple[str, str], dict[str, float]], str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(script), str(parquet)], capture_output=True, text=True, check=False, timeout=1800
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"peer script failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for line in proc.stdout.splitlines():
        m = _LINE.match(line.strip())
        if m:
            rows[(m["name"], m["variant"])] = {
                "recall@10": float(m["recall"]),
                "ndcg@10": float(m["ndcg"]),
                "hitrate@10": float(m["hit"]),
                "customers": float(m["n"]),
            }
    if not rows:
        raise SystemExit(f"no result lines in the peer output:\n{proc.stdout[-3000:]}")
    return rows, proc.stdout, elapsed


def _print_recency(ev: RankingEval) -> None:
    """Rebuy rates by days since the last purchase, in the test window and in the ranker's last training
    window: where the two differ beyond what the training window holds, no feature learned before the cut can
    follow the test period."""
    split = ev.split
    if split is None or ev.ranker is None:
        return
    label_days = ev.ranker.params["label_days"]
    frame = pd.concat([split.history, split.test])
    test = rebuy_by_recency(frame, split.cut, label_days)
    train = rebuy_by_recency(split.history, split.cut - pd.Timedelta(days=label_days), label_days)
    print(f"\nrebuy within {label_days} days by days since last bought (pairs, share):")
    print(f"{'days':>9s} {'last training window':>24s} {'test window':>20s}")
    for key in test:
        n, rate = test[key]
        tn, trate = train.get(key, (0, float("nan")))
        left = f"{tn:7d} {trate:6.3f}" if tn else f"{'none':>14s}"
        print(f"{key:>9s} {left:>24s} {n:13d} {rate:6.3f}")
    # How much that gap is worth: raise every item last bought 240+ days before by a fixed log-odds, with the
    # test window's answers in hand. No feature learned before the cut could do better through this bucket.
    bound = recency_shift_bound(ev.ranker, split)
    base = bound[0.0]
    print("\nRecall@10 (all) if items last bought 240+ days before scored higher (test answers: a bound):")
    print("  " + "  ".join(f"+{s:.2f}: {r:.4f} ({r - base:+.4f})" for s, r in bound.items()))


def _figures(out: dict[str, float], ranker: str, variant: str) -> dict[str, float]:
    """One ranker's row of the table, from a ``RankingEval`` result."""
    row = {m: out[f"ranking.{ranker}.{variant}.{m}"] for m in ("recall@10", "ndcg@10", "hitrate@10")}
    return {**row, "customers": out[f"ranking.customers.{variant}"]}


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=Path, default=REPO.parent / "shared" / "bench" / "retail_peers.py")
    parser.add_argument("--parquet", type=Path, default=DEFAULT_PARQUET)
    parser.add_argument("--earlier", type=Path, default=DEFAULT_EARLIER_PARQUET, help="earlier history")
    parser.add_argument("--no-earlier", action="store_true", help="fit on the protocol's file alone")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    parser.add_argument("--no-text", action="store_true", help="leave the text-similarity signal out")
    args = parser.parse_args()

    peers, peer_stdout, peer_s = run_peers(args.peers, args.parquet)
    print(peer_stdout.rstrip())
    print(f"peer script wall time {peer_s:.1f}s\n")
    text = None if args.no_text else "embed"
    t0 = time.perf_counter()
    ev = RankingEval(
        parquet=args.parquet,
        earlier=None if args.no_earlier else args.earlier,
        text=text,
        cache_dir=REPO / "var" / "cache",
    )
    ours = ev.run()
    tailor_s = time.perf_counter() - t0
    file_only: dict[str, float] = {}
    if not args.no_earlier:
        file_only = RankingEval(
            parquet=args.parquet, earlier=None, text=text, cache_dir=REPO / "var" / "cache", references=()
        ).run()

    header = (
        f"{'ranker':22s} {'variant':8s} {'Recall@10':>9s} {'NDCG@10':>8s} {'Hit@10':>7s} {'customers':>9s}"
    )
    print(header)
    print("-" * len(header))
    summary: dict[str, float] = {}
    for variant in ("all", "new-only"):
        rows = [(f"peer:{n}", m) for (n, v), m in peers.items() if v == variant]
        rows.append(("tailor", _figures(ours, "tailor", variant)))
        if file_only:
            rows.append(("tailor-file-only", _figures(file_only, "tailor", variant)))
        for name in ("popularity", "repeat", "repeat_full", "itemknn", "ease_full"):
            if f"ranking.{name}.{variant}.recall@10" in ours:
                rows.append((f"tailor-ref:{name}", _figures(ours, name, variant)))
        for name, m in sorted(rows, key=lambda r: -r[1]["recall@10"]):
            print(
                f"{name:22s} {variant:8s} {m['recall@10']:9.4f} {m['ndcg@10']:8.4f} {m['hitrate@10']:7.4f}"
                f" {int(m['customers']):9d}"
            )
        best_name, best = max(
            ((n, m) for (n, v), m in peers.items() if v == variant), key=lambda nm: nm[1]["recall@10"]
        )
        r_ratio = ours[f"ranking.tailor.{variant}.recall@10"] / best["recall@10"]
        n_ratio = ours[f"ranking.tailor.{variant}.ndcg@10"] / best["ndcg@10"]
        print(f"=> {variant}: tailor / best peer ({best_name}):", end=" ")
        print(f"Recall@10 x{r_ratio:.3f}, NDCG@10 x{n_ratio:.3f}")
        summary[f"{variant}.recall_ratio_vs_{best_name}"] = r_ratio
        summary[f"{variant}.ndcg_ratio_vs_{best_name}"] = n_ratio
        if file_only:
            f_ratio = file_only[f"ranking.tailor.{variant}.recall@10"] / best["recall@10"]
            print(f"   file only (no earlier history): Recall@10 x{f_ratio:.3f}")
            summary[f"{variant}.file_only_recall_ratio_vs_{best_name}"] = f_ratio
        # The peers see the protocol's file alone; the same rankers over the same longer history say how much
        # of Tailor's lead is the data and how much the model.
        same = [n for n in ("repeat_full", "ease_full") if f"ranking.{n}.{variant}.recall@10" in ours]
        if same:
            ref = max(same, key=lambda n: ours[f"ranking.{n}.{variant}.recall@10"])
            ratio = ours[f"ranking.tailor.{variant}.recall@10"] / ours[f"ranking.{ref}.{variant}.recall@10"]
            n_same = ours[f"ranking.tailor.{variant}.ndcg@10"] / ours[f"ranking.{ref}.{variant}.ndcg@10"]
            print(f"   tailor / best reference on the same longer history ({ref}):", end=" ")
            print(f"Recall@10 x{ratio:.3f}, NDCG@10 x{n_same:.3f}")
            summary[f"{variant}.recall_ratio_vs_{ref}"] = ratio
            summary[f"{variant}.ndcg_ratio_vs_{ref}"] = n_same
        print()
    for name in ("tailor", "popularity", "repeat", "itemknn"):
        keys = ("coverage", "diversity", "novelty", "popularity_bias")
        vals = [ours.get(f"ranking.{name}.all.{k}@10") for k in keys]
        if all(v is not None for v in vals):
            print(f"{name:12s} all@10 " + "  ".join(f"{k} {v:.3f}" for k, v in zip(keys, vals, strict=True)))
    _print_recency(ev)
    fit_s = ev.timings["fit_s"]
    print(f"\nwall time: tailor eval {tailor_s:.1f}s (fit {fit_s:.1f}s) vs peer script {peer_s:.1f}s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "tailor": ours,
            "tailor_file_only": file_only,
            "peers": {f"{n}.{v}": m for (n, v), m in peers.items()},
            "ratios": summary,
            "timings": {**ev.timings, "peer_script_s": peer_s},
        }
        args.json.write_text(json.dumps(payload, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
