"""The support graph, offline, in process: time per answer (target p95 <= 150 ms) over the labelled support
questions (``evals/data/support_questions*.jsonl``, real customers of the demo store, at its clock), with
the time of each tool, beside a peer measured in the same run: the recommender call for the same customers,
which a support answer about products makes once.

Needs the demo store imported and indexed (``make demo`` or ``tailor import && tailor index``): the
questions are about its customers, and the ticket search reads its Qdrant history index.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/support_bench.py [--data-dir var] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from evals.support import CLOCK, DEV, HELDOUT, questions  # noqa: E402
from tailor.app.service import Tailor  # noqa: E402
from tailor.core.errors import ConsentError  # noqa: E402
from tailor.core.settings import Settings  # noqa: E402


def _p(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] if xs else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="an indexed demo store (TAILOR_DATA_DIR)")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the questions after a warm one")
    args = parser.parse_args()
    settings = Settings(now=CLOCK.isoformat(), **({"data_dir": args.data_dir} if args.data_dir else {}))
    cases = [*questions(DEV), *questions(HELDOUT)]
    with Tailor(settings) as tailor:
        missing = [c["customer_id"] for c in cases if not tailor.store.has_customer(c["customer_id"])]
        if missing:
            raise SystemExit(
                f"{settings.data_dir}: not the demo store (no customer {missing[0]}): run `make demo`"
            )
        answerable = []
        for c in cases:  # the warm pass: models, indexes, per-country caches
            try:
                tailor.support(c["customer_id"], c["question"])
            except ConsentError:
                continue
            # The peer needs personalization consent too; her account questions are answered without it.
            if tailor.store.get_customer(c["customer_id"]).consent.personalization:
                answerable.append(c)
        answer_ms: list[float] = []
        tool_ms: dict[str, list[float]] = defaultdict(list)
        peer_ms: list[float] = []
        for _ in range(args.rounds):
            for c in answerable:
                start = time.perf_counter()
                answer = tailor.support(c["customer_id"], c["question"])
                answer_ms.append((time.perf_counter() - start) * 1000)
                for tool in answer.tools:
                    tool_ms[tool.name].append(tool.ms)
                start = time.perf_counter()
                tailor.recommend(c["customer_id"], 3)
                peer_ms.append((time.perf_counter() - start) * 1000)
    p50, p95 = statistics.median(answer_ms), _p(answer_ms, 0.95)
    peer50, peer95 = statistics.median(peer_ms), _p(peer_ms, 0.95)
    print(
        f"questions={len(answerable)} rounds={args.rounds} answers={len(answer_ms)}"
        f" clock={CLOCK:%Y-%m-%d %H:%M}"
    )
    print(f"support answer  p50={p50:.1f} ms  p95={p95:.1f} ms  (target p95 <= 150 ms: {p95 <= 150})")
    print(f"recommend (peer) p50={peer50:.1f} ms  p95={peer95:.1f} ms")
    print(f"ratio answer/recommend  p50={p50 / max(peer50, 1e-9):.1f}x  p95={p95 / max(peer95, 1e-9):.1f}x")
    for name, ms in sorted(tool_ms.items(), key=lambda kv: -_p(kv[1], 0.95)):
        print(
            f"  tool {name:<16} calls={len(ms):<4} p50={statistics.median(ms):7.2f} ms"
            f"  p95={_p(ms, 0.95):7.2f} ms"
        )


if __name__ == "__main__":
    main()
