"""The generation eval through the real agent (template writer), recommender and rails on the demo slice."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent import AgentDeps
from evals.generation import GenerationEval, flesch_reading_ease, jaccard_distance, syllables
from retrieval.recommender import HybridRecommender
from tailor.errors import DataError
from tailor.settings import Settings
from tailor.store import Store

NOW = datetime(2011, 12, 10, 10, tzinfo=UTC)


def test_readability_and_distinctness_measures() -> None:
    assert [syllables(w) for w in ("cat", "table", "beautiful", "make")] == [1, 2, 3, 1]
    easy = flesch_reading_ease("The cat sat. The dog ran. We had fun.")
    hard = flesch_reading_ease(
        "Personalisation considerations notwithstanding, organisational interoperability"
        " necessitates deliberation."
    )
    assert easy > 90 > 0 > hard
    assert jaccard_distance("a b c", "a b c") == 0.0
    assert jaccard_distance("a b", "c d") == 1.0
    assert jaccard_distance("a b c", "a b d") == pytest.approx(0.5)
    with pytest.raises(DataError, match="no words"):
        flesch_reading_ease("123 456")


@pytest.mark.slow
def test_generation_eval_on_the_slice(slice_store: Store, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", now=NOW.isoformat())
    recommender = HybridRecommender.build(slice_store, settings)
    deps = AgentDeps(store=slice_store, recommender=recommender, settings=settings, now=NOW)
    ev = GenerationEval(deps, n=4, seed=3, out_dir=tmp_path / "out")
    assert ev.customers() == GenerationEval(deps, n=4, seed=3).customers()  # seeded sample
    out = ev.run()
    assert out["generation.customers"] == 4
    assert out["generation.refusal_or_email_rate"] == 1.0
    assert out["generation.email_rate"] + out["generation.refusal_rate"] == pytest.approx(1.0)
    assert out["generation.email_rate"] > 0, "consented customers of the slice should get an email"
    assert out["generation.grounding.violation_rate"] == 0.0  # the template writer is grounded by design
    assert 0.0 < out["generation.personalization.pairwise_jaccard"] <= 1.0
    assert out["generation.tokens_per_email"] == 0.0  # no LLM, no tokens
    assert out["generation.subject.chars"] > 0
    assert any(k.startswith("generation.rails.") for k in out)
    if "generation.explanation.faithfulness" in out:
        assert 0.0 <= out["generation.explanation.faithfulness"] <= 1.0
    lines = (tmp_path / "out/generation_samples.jsonl").read_text().splitlines()
    assert len(lines) == 4 and {json.loads(x)["customer_id"] for x in lines} == set(ev.customers())
    arts = ev.artifacts()
    assert len(arts["generation_latency"]["values"]["email"]) == 4
