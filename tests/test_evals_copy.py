"""The copy eval: the copy-quality rail on the hand-labelled parts (both brands, and the held-out set written
apart), the writers on real customers of the slice, and the report that shows their emails side by side."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent import AgentDeps
from evals.base import read_jsonl
from evals.copy import HELDOUT, LABELLED, CopyQualityEval, sample_context
from evals.report import Report, evaluate_gates, load_gates, render_html
from retrieval.recommender import HybridRecommender
from tailor.app.evaluate import DEFAULT_FACTORIES, SUITES
from tailor.core.errors import DataError
from tailor.core.settings import Settings
from tailor.data.store import Store
from tests.retailers import HARBOUR, HEARTH, RETAILERS

NOW = datetime(2011, 12, 10, 10, tzinfo=UTC)


def test_the_labelled_sets_cover_both_brands_every_part_and_every_kind() -> None:
    for path, least in ((LABELLED, 300), (HELDOUT, 200)):
        samples = list(read_jsonl(path))
        assert len(samples) >= least
        assert {s["brand"] for s in samples} == set(RETAILERS)
        assert {s["part"] for s in samples} == {"subject", "preheader", "intro", "reason"}
        kinds = {s["kind"] for s in samples if s["label"] == "bad"}
        assert {"placeholder", "echo", "names_only", "no_reason", "repeated", "vague_subject"} <= kinds
        good = sum(s["label"] == "good" for s in samples)
        assert 0.3 < good / len(samples) < 0.7, "both good and bad parts, in measure"


def test_a_sample_is_read_in_the_context_it_was_written_in() -> None:
    sample = next(s for s in read_jsonl(LABELLED) if s["kind"] == "repeated" and s["part"] == "reason")
    brand = HEARTH if sample["brand"] == "hearth" else HARBOUR
    part, ctx = sample_context(sample, brand)
    assert part == f"reason:{sample['context']['item']}"
    keys = [k for k in ctx.extra if k.startswith("part:")]
    assert keys[-1] == f"part:{part}" and len(keys) == len(sample["context"]["earlier"]) + 1
    assert ctx.product_evidence[sample["context"]["item"]] and ctx.action == sample["context"]["action"]


def test_the_rail_meets_its_gates_on_both_labelled_sets() -> None:
    """Recall >= 0.95 on the bad parts and <= 3 % of the good ones stopped, on the set the rail was built
    on and on the one written apart after it; the shipped gates say so, and fail a run that does not."""
    ev = CopyQualityEval(None)
    metrics = ev.run()
    for key in ("labelled", "heldout"):
        assert metrics[f"copy.{key}.recall"] >= 0.95, ev.artifacts()["copy_misses"]
        assert metrics[f"copy.{key}.false_positive_rate"] <= 0.03, ev.artifacts()["copy_misses"]
        assert metrics[f"copy.{key}.rail_p95_ms_per_part"] > 0
    gates = {k: v for k, v in load_gates(quick=True).items() if k.startswith("copy.")}
    assert {g.status for g in evaluate_gates(metrics, gates, ["copy"])} == {"pass"}
    worse = {**metrics, "copy.heldout.false_positive_rate": 0.05}
    assert "fail" in {g.status for g in evaluate_gates(worse, gates, ["copy"])}


def test_a_labelled_set_naming_an_unknown_brand_is_refused_by_name(tmp_path: Path) -> None:
    sample = next(read_jsonl(LABELLED))
    bad = tmp_path / "parts.jsonl"
    lines = [json.dumps({**sample, "brand": "nowhere"}), json.dumps(sample)]
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="unknown brand 'nowhere'"):
        CopyQualityEval(None, labelled=bad, heldout=None, model_parts=None).run()


def test_the_copy_suite_is_one_of_the_eval_suites() -> None:
    assert "copy" in SUITES and "copy" in DEFAULT_FACTORIES


@pytest.mark.slow
def test_writers_on_real_customers_and_their_emails_side_by_side(slice_store: Store, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", now=NOW.isoformat())
    recommender = HybridRecommender.build(slice_store, settings)
    deps = AgentDeps(store=slice_store, recommender=recommender, settings=settings, brand=HEARTH, now=NOW)
    recorded = tmp_path / "model_emails.jsonl"
    recorded.write_text(
        json.dumps(
            {
                "model": "smollm2-135m-instruct",
                "customer_id": "12347",
                "part_writers": {"subject": "openai", "intro": "template"},
                "subject": "Ann, more lanterns for the garden",
                "preheader": "A lantern to go with the ones you bought.",
                "body_text": "Hello Ann, ...",
            }
        )
        + "\n"
    )
    ev = CopyQualityEval(deps, n=3, seed=1, heldout=None, model_parts=None, model_emails=recorded)
    metrics = ev.run()
    assert metrics["copy.writer.template.emails_sent"] >= 1
    # The template writer is the fallback: every part it writes is accepted, every email wholly its own.
    assert metrics["copy.writer.template.parts_accepted"] == 1.0
    assert metrics["copy.writer.template.fully_written"] == 1.0
    assert metrics["copy.writer.template.emails_per_minute"] > 0
    arts = ev.artifacts()
    writers = {e["writer"] for e in arts["copy_emails"]["emails"]}
    assert writers == {"template", "smollm2-135m-instruct (recorded)"}
    html = render_html(Report(metrics=metrics, artifacts=arts, meta={"suites": ["copy"]}))
    assert "Ann, more lanterns for the garden" in html and "template wrote: intro" in html


def _judged(
    model: str, brand: str, labels: list[dict[str, str] | None], *, template: int = 0, intro: str = ""
) -> dict[str, object]:
    parts: list[dict[str, object]] = [
        {"part": "subject", "writer": "openai", "text": "Ann, a kettle for your kitchen", "label": labels[0]},
        {
            "part": "intro",
            "writer": "openai",
            "text": intro or "Hello Ann, we found a kettle.",
            "label": labels[1],
        },
    ]
    parts += [{"part": "reason:K1", "writer": "template", "text": "You bought a teapot."}] * template
    kettle = {
        "id": "K1",
        "title": "Enamel Kettle",
        "category": "Kitchen",
        "evidence": [{"kind": "repeat_purchase", "summary": "bought 3 times, last on 2011-10-02"}],
    }
    return {
        "id": f"{model}-{brand}-{template}",
        "model_key": model,
        "brand": brand,
        "first_name": "Ann",
        "action": "replenishment",
        "products": [kettle],
        "fully_model_written": not template,
        "parts": parts,
    }


def test_what_the_models_sent_is_counted_as_a_person_judged_it(tmp_path: Path) -> None:
    good, vague, echo = (
        {"verdict": "good"},
        {"verdict": "bad", "kind": "vague_subject"},
        {
            "verdict": "bad",
            "kind": "echo",
        },
    )
    rows = [
        _judged("small", "hearth", [good, good]),
        _judged("small", "harbour", [vague, good], template=1),
        _judged("other", "harbour", [good, echo], intro="Hello Ann, we found a kettle, from its Why line."),
    ]
    judged = tmp_path / "judged.jsonl"
    judged.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ev = CopyQualityEval(
        None, heldout=None, model_parts=None, drawn_parts=None, sent_judged=judged, sent_earlier=None
    )
    out = ev.run()
    assert out["copy.sent.all.emails"] == 3 and out["copy.sent.all.gate_violations"] == 1
    assert out["copy.sent.small.gate_violations"] == 0 and out["copy.sent.other.gate_violations"] == 1
    assert out["copy.sent.small.fully_model_written"] == 0.5 and out["copy.sent.small.signed"] == 0.5
    assert out["copy.sent.small.model_parts_good"] == 0.75
    assert out["copy.sent.small.good.subject"] == 0.5 and out["copy.sent.small.good.intro"] == 1.0
    assert "copy.sent.small.good.reason" not in out  # the template wrote them
    assert out["copy.sent.all.fully_model_written_and_signed"] == pytest.approx(1 / 3)
    table = ev.artifacts()["copy_sent_bad"]
    assert table["rows"] == [  # type: ignore[typeddict-item]
        ["small", "harbour", "subject", "Ann, a kettle for your kitchen", "vague_subject"],
        ["other", "harbour", "intro", "Hello Ann, we found a kettle, from its Why line.", "echo"],
    ]
    # The rails as they stand on every model part sent: the echo is stopped now, the good parts are not.
    assert (out["copy.sent_parts.parts"], out["copy.sent_parts.bad"], out["copy.sent_parts.good"]) == (
        6,
        2,
        4,
    )
    assert out["copy.sent_parts.recall.echo"] == 1.0 and out["copy.sent_parts.false_positive_rate"] == 0.0
    # A model part nobody labelled is refused by name, not counted as good.
    judged.write_text(json.dumps(_judged("small", "hearth", [good, None])) + "\n")
    with pytest.raises(DataError, match="a model-written part has no good or bad label: 'Hello Ann"):
        ev.run()


def test_the_judged_large_run_covers_both_models_and_both_retailers_and_is_read_whole() -> None:
    """evals/data/model_emails_judged.jsonl and ..._earlier.jsonl: the 200-email runs of issue #19, each
    model part labelled; the latest is counted as sent, and every run's parts judge the rails now."""
    from evals.copy import SENT_EARLIER, SENT_JUDGED

    rows = list(read_jsonl(SENT_JUDGED))
    earlier = list(read_jsonl(SENT_EARLIER))
    assert len(rows) >= 195 and len(earlier) >= 195
    for run in (rows, earlier):
        assert {(r["model_key"], r["brand"]) for r in run} == {
            (m, b) for m in ("smollm2_3draws", "gemma3_1draw") for b in ("hearth", "harbour")
        }
    assert not {r["id"] for r in rows} & {r["id"] for r in earlier}
    out = CopyQualityEval(None, heldout=None, model_parts=None, drawn_parts=None).run()
    by_hand = sum(
        any(p["writer"] != "template" and p["label"].get("kind") in ("placeholder", "echo", "names_only")
            for p in r["parts"])
        for r in rows
    )  # fmt: skip
    assert out["copy.sent.all.emails"] == len(rows) and out["copy.sent.all.gate_violations"] == by_hand
    model_parts = sum(p["writer"] != "template" for r in (*rows, *earlier) for p in r["parts"])
    assert out["copy.sent_parts.parts"] == model_parts
