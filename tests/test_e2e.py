"""End to end on a slice of the real data: the real CLI, real embeddings, embedded Qdrant, the real graph."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from retrieval.embeddings import EmbeddingCache
from retrieval.ranker import Ranker
from tailor.app.service import Tailor
from tailor.core.errors import ConsentError, NotFoundError
from tailor.core.models import Consent, Event, EventKind
from tailor.core.settings import Settings
from tailor.data.frame import purchases_from_store

pytestmark = pytest.mark.slow
NOW = "2011-12-10T10:00:00+00:00"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    data_dir = tmp_path_factory.mktemp("demo")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tailor.app.cli",
            "demo",
            "--customers-limit",
            "40",
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return data_dir, done.stdout


@pytest.fixture
def tailor(demo_run: tuple[Path, str]) -> Iterator[Tailor]:
    with Tailor.open(Settings(data_dir=demo_run[0], now=NOW)) as t:
        yield t


def test_demo_prints_three_customers_end_to_end(demo_run: tuple[Path, str]) -> None:
    out = demo_run[1]
    assert out.count("Customer ") >= 3
    assert out.count("Subject:") + out.count("No email for customer") == 3
    assert out.count("Why item") == 3
    assert "https://example-retail.test/p/" in out and "£" in out


def test_demo_store_holds_the_retailers_two_years(demo_run: tuple[Path, str], tailor: Tailor) -> None:
    source = json.loads((demo_run[0] / "canonical" / "SOURCE.json").read_text())
    assert source["file"] == "online_retail_ii_2009_2010.parquet, online_retail.parquet"
    assert (
        "Online Retail II (Chen, 2012)" in source["dataset"]
        and "Online Retail (Chen, 2015)" in source["dataset"]
    )
    frame = purchases_from_store(tailor.store)
    start = pd.Timestamp("2010-12-01", tz="UTC")
    # Online Retail II's year before Online Retail's first day, then Online Retail to its last.
    assert frame["timestamp"].min() < start - pd.Timedelta(days=300)
    assert frame["timestamp"].max() >= pd.Timestamp("2011-11-01", tz="UTC")
    assert frame["id"].str.startswith("uci2-").any() and frame["id"].str.startswith("uci-").any()
    assert frame.loc[frame["timestamp"] >= start, "id"].str.startswith("uci-").all()


def test_second_demo_run_reembeds_nothing(demo_run: tuple[Path, str]) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tailor.app.cli",
            "demo",
            "--customers-limit",
            "40",
            "--data-dir",
            str(demo_run[0]),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "store unchanged" in done.stdout
    assert "items_embedded=0" in done.stdout and "ranker=unchanged" in done.stdout


def test_recommendations_carry_evidence_from_the_customers_own_events(tailor: Tailor) -> None:
    customer = tailor.demo_customers(1)[0]
    recs = tailor.recommend(customer, k=10)
    assert len(recs) == 10
    assert [r.rank for r in recs] == list(range(1, 11))
    own = {e.id for e in tailor.store.events(customer)}
    cited = [i for r in recs for e in r.evidence for i in e.event_ids]
    assert cited and set(cited) <= own
    assert all(r.item.in_stock for r in recs)


def test_email_is_grounded_in_the_catalog(tailor: Tailor) -> None:
    customer = tailor.demo_customers(1)[0]
    outcome = tailor.email(customer)
    assert (outcome.email is None) != (outcome.refusal is None)
    assert outcome.email is not None, outcome.refusal
    for product in outcome.email.products:
        item = tailor.store.get_item(product.item_id)
        assert (product.title, product.price_text, product.url) == (item.title, item.price_text, item.url)
        assert f"{item.title} ({item.price_text})" in outcome.email.body_text
    assert "Unsubscribe" in outcome.email.body_html
    assert [a["node"] for a in outcome.audit][:3] == ["load_context", "retrieve", "plan"]
    assert outcome.audit[-1]["node"] == "finalize"


def test_a_sent_email_holds_back_the_next_one(tailor: Tailor) -> None:
    customer = tailor.demo_customers(3)[-1]
    first = tailor.email(customer, send=True)
    assert first.email is not None, first.refusal
    again = tailor.email(customer)
    assert again.email is None and again.refusal is not None and again.refusal.reason == "frequency_cap"


def test_no_marketing_consent_is_a_logged_refusal(tailor: Tailor) -> None:
    customer = tailor.demo_customers(1)[0]
    before = tailor.store.get_customer(customer).consent
    tailor.set_consent(customer, Consent(marketing_email=False, personalization=True))
    try:
        outcome = tailor.email(customer)
    finally:
        tailor.set_consent(customer, before)
    assert outcome.email is None and outcome.refusal is not None
    assert outcome.refusal.reason == "no_marketing_consent"
    # A refusal still gets a typed plan (action "nothing", citing the rule), but no retrieval or writing.
    assert [a["node"] for a in outcome.audit] == ["load_context", "plan", "finalize"]
    assert outcome.plan is not None
    assert outcome.plan.action == "nothing" and outcome.plan.refused == "no_marketing_consent"
    assert {alt.action for alt in outcome.plan.rejected} >= {"recommend"}


def test_no_personalization_consent_means_no_profiling(tailor: Tailor) -> None:
    customer = tailor.demo_customers(1)[0]
    before = tailor.store.get_customer(customer).consent
    tailor.set_consent(customer, Consent(marketing_email=True, personalization=False))
    try:
        with pytest.raises(ConsentError):
            tailor.recommend(customer)
    finally:
        tailor.set_consent(customer, before)


def test_explanation_sentences_cite_existing_evidence(tailor: Tailor) -> None:
    customer = tailor.demo_customers(1)[0]
    item = tailor.recommend(customer, k=1)[0].item
    explanation = tailor.why(customer, item.id)
    assert explanation.sentences
    own = {e.id for e in tailor.store.events(customer)}
    for sentence in explanation.sentences:
        assert sentence.evidence
        assert all(i in own for e in sentence.evidence for i in e.event_ids)


def test_support_suggestions_come_with_evidence(tailor: Tailor) -> None:
    customer = tailor.demo_customers(1)[0]
    answer = tailor.support(customer, "She's upset her order was late, what can I offer?")
    # Her latest order chased, and the policy's amends for a late order: nothing else is pushed at her.
    assert answer.intent == "late_delivery"
    assert [s.kind for s in answer.suggestions][:2] == ["resolve", "offer"]
    assert all(s.talking_points and s.evidence for s in answer.suggestions)
    assert tailor.brand.offers_for("late_delivery")[0] in " ".join(answer.suggestions[1].talking_points)
    cited = tailor.store.get_events([i for s in answer.suggestions for e in s.evidence for i in e.event_ids])
    assert cited and all(e.customer_id == customer and e.timestamp < tailor.now() for e in cited)


def test_ingest_then_forget_removes_the_customer_everywhere(tailor: Tailor) -> None:
    customer = tailor.store.customer_ids()[-1]
    canary = "The zebra-striped teapot lid arrived cracked, order canary-7731."
    ticket = Event(
        customer_id=customer,
        kind=EventKind.SUPPORT_TICKET,
        text=canary,
        timestamp=datetime(2011, 12, 9, 12, tzinfo=UTC),
    )
    report = tailor.ingest([ticket])
    assert report["events"] == 1 and report["updated_customers"] == 1
    hits = tailor.search_history(customer, "cracked teapot lid", 5)
    assert hits and hits[0].text == canary, "the new ticket is searchable at once, with no re-index"
    texts = {e.text for e in tailor.store.events(customer) if e.text}
    keys = [EmbeddingCache.key(tailor.embedder.model_id, text) for text in texts]
    assert canary in texts and len(tailor.embedder.cache.get_many(keys)) == len(keys)
    assert customer in Ranker.saved_customer_ids(tailor.model.path)
    deleted = tailor.forget(customer)
    assert deleted["customers"] == 1 and deleted["events"] > 0 and deleted["qdrant_history"] >= 1
    assert deleted["embedding_cache_entries"] == len(keys) and deleted["ranker_rows"] > 0
    assert tailor.search_history(customer, "cracked teapot lid", 5) == []
    assert tailor.store.events(customer) == []
    assert tailor.embedder.cache.get_many(keys) == {}
    assert customer not in Ranker.saved_customer_ids(tailor.model.path)
    assert f'"{customer}"' not in tailor.model.path.with_suffix(".json").read_text()
    assert customer not in Ranker.load(tailor.model.path).customer_index
    with pytest.raises(NotFoundError):
        tailor.recommend(customer)


def test_eval_command_writes_a_report_and_passes_its_gates(
    demo_run: tuple[Path, str], tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tailor.app.cli",
            "eval",
            "--quick",
            "--suite",
            "generation",
            "--suite",
            "safety",
            "--suite",
            "policy",
            "--suite",
            "copy",
            "--out",
            str(out),
            "--data-dir",
            str(demo_run[0]),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, "TAILOR_NOW": NOW},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["metrics"]["safety.canary_leaks"] == 0
    assert report["metrics"]["generation.grounding.violation_rate"] == 0
    # Re-checked outside the agent, and gated: released emails are grounded by an independent check too.
    assert report["metrics"]["generation.independent_grounding.violation_rate"] == 0
    assert report["metrics"]["generation.explanation.products"] >= 1
    assert any(n.startswith("generation: clock at ") for n in report["meta"]["notes"])
    assert report["metrics"]["policy.synthetic.ips_max_z"] <= 3.0
    assert all(g["status"] in ("pass", "skipped") for g in report["gates"])
    html = (out / "report.html").read_text()
    assert "<img" in html
    # The copy suite: the rail on both hand-labelled sets, and the writers' emails side by side.
    assert report["metrics"]["copy.heldout.recall"] >= 0.95
    assert report["metrics"]["copy.writer.template.emails_sent"] >= 1
    assert "Emails side by side" in html and "copy.labelled.false_positive_rate" in html


def test_ranking_suite_on_the_demo_store_learns_from_the_earlier_year(
    demo_run: tuple[Path, str], tailor: Tailor, tmp_path: Path
) -> None:
    """The store path of ``tailor eval --suite ranking``: the reference protocol on the store's purchases, the
    earlier year as history only, and the ranker fitted with the service's text vectors."""
    from tailor.app.evaluate import run_suites

    gates = tmp_path / "gates.toml"
    gates.write_text(
        '[gates]\n"ranking.tailor.all.recall@10" = { above = "ranking.popularity.all.recall@10" }\n'
    )
    report = run_suites(
        Settings(data_dir=demo_run[0], now=NOW), ["ranking"], tmp_path / "out", gates_path=gates
    )
    assert report.meta["errors"] == {}
    assert report.meta["ranking_protocol"]["cut"] == "2011-09-09T00:00:00+00:00"
    notes = report.meta["notes"]
    assert "ranking: purchases before 2010-12-01 are earlier history, not measured" in notes
    n_items = len(tailor.store.items())
    assert f"ranking: store purchases; text vectors of the store's {n_items} items" in notes
    m = report.metrics
    # The same-history references exist only when the split holds earlier history.
    assert 0.0 < m["ranking.repeat_full.all.recall@10"] <= 1.0
    assert m["ranking.customers.all"] >= 20
    assert [g.status for g in report.gates] == ["pass"]
