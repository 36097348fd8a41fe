"""Copy quality: does the copy-quality rail stop what must not go out and let through what a marketer wrote,
and how much of a writer's copy reaches the customer?

Two parts, one report:

- **The labelled set** (``evals/data/copy_parts.jsonl``): email parts written by hand in the voice of two
  retailers, good and bad (placeholders, echoes, names only, vague subjects, no reasons, not a sentence,
  third person, repeats), and parts written by the local models (before any rail, and drawn until the rails
  passed one), each labelled by a person. The rail's precision and recall on the bad parts, its
  false-positive rate on the good ones, and each kind's recall.
- **Writers on real customers** (``deps``): the share of parts accepted, the share of emails fully written
  by the writer (no part fell back), emails per minute, and the emails themselves side by side with the
  template writer's for the same customers, for a person to judge. The template writer always runs; a
  model writer runs when the service is configured with one (``TAILOR_WRITER=openai``), and the emails the
  local models wrote when last measured (``evals/data/model_emails.jsonl``, from
  ``benchmarks/agent_bench.py --llm``) are shown beside them.
- **What was sent, judged** (``evals/data/model_emails_judged.jsonl``): every email the local models wrote
  in the last large run (both models, both retailers), as it went out, each model-written part labelled by
  a person as a marketer would judge it. Per model: emails sent with a placeholder, an echo or a
  names-only part (the gate: none), the share fully model-written, the share of model parts judged good,
  and the share of emails a marketer would sign as they are; the bad parts that went out, in a table. And
  the rails as they stand on every model part of that run and the runs before it
  (``model_emails_judged_earlier.jsonl``): how many of the bad parts that went out they stop now, and how
  many of the good ones they would stop (``copy.sent_parts.*``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import agent
from agent import AgentDeps, TemplateWriter
from agent.writers import EXAMPLE_NAMES
from evals.base import Artifact, read_jsonl
from guardrails import copy_quality
from guardrails.base import RailContext
from guardrails.runner import RAILS_BY_PART, check_all, part_kind
from tailor.core.brand import DEFAULT_BRAND, BrandConfig, load_brand
from tailor.core.errors import DataError
from tailor.core.models import Consent, Customer, Evidence, Item

__all__ = ["BRANDS", "LABELLED", "MODEL_EMAILS", "CopyQualityEval", "sample_context"]

DATA = Path(__file__).resolve().parent / "data"
LABELLED = DATA / "copy_parts.jsonl"
# Written apart, by another hand, after the rail was built on the first set; read to confirm its figures.
HELDOUT = DATA / "copy_parts_heldout.jsonl"
# Parts the two local models wrote for demo customers (before any rail), each labelled by a person as a
# marketer would judge it; the brief and the worked example they were shown are in each sample's context.
MODEL_PARTS = DATA / "copy_parts_models.jsonl"
# Every answer the two local models drew with the grammar, the per-occasion examples and ``llm_draws`` 3
# (demo customers the rules were not built on), each labelled by a person after the rail's last change:
# the figures a retailer gets from drawing until the rails pass, where what they miss is chosen for.
DRAWN_PARTS = DATA / "copy_parts_drawn.jsonl"
MODEL_EMAILS = DATA / "model_emails.jsonl"
SENT_JUDGED = DATA / "model_emails_judged.jsonl"
# The runs before it, judged the same way (their ids say which: ``sh-001`` the first, ``r2-sh-001`` the
# second); the rules since were written on reading them (and on part of the latest): their parts count
# toward ``copy.sent_parts.*`` beside the latest run's.
SENT_EARLIER = DATA / "model_emails_judged_earlier.jsonl"
# What must never reach a customer, whatever else a part gets wrong.
GATE_KINDS = frozenset({"placeholder", "echo", "names_only"})
# What a person may call a bad part (the labelled sets' kinds, and "other" with a why).
KINDS = GATE_KINDS | frozenset(
    [
        "vague_subject",
        "vague_preheader",
        "no_reason",
        "not_a_sentence",
        "third_person",
        "repeated",
        "unknown_product",
        "false_fact",
        "invented_history",
        "unfinished",
        "first_person",
        "garbled",
        "puffery",
        "profanity",
        "wrong_name",
        "other",
    ]
)
BRANDS: Mapping[str, Path] = {
    "hearth": DEFAULT_BRAND,
    "harbour": Path(__file__).resolve().parents[1] / "examples" / "brands" / "harbour_lane.toml",
}
_PARTS = ("subject", "preheader", "intro", "reason")


def sample_context(sample: Mapping[str, Any], brand: BrandConfig) -> tuple[str, RailContext]:
    """A labelled sample's part name and the rail context it was written in (its customer, products,
    evidence, occasion and the parts before it in the same email)."""
    ctx = sample["context"]
    customer = Customer(
        id="sample",
        # Tailor always knows a first name (a stand-in one when the CRM has none); a sample written for a
        # customer without one is read with a name its text never uses.
        first_name=ctx["first_name"] or "Alex",
        email="sample@example.com",
        country="Unknown",
        consent=Consent(marketing_email=True, personalization=True),
    )
    domain = brand.allowed_link_domains[0]
    items: dict[str, Item] = {}
    evidence: dict[str, tuple[Evidence, ...]] = {}
    for p in ctx["products"]:
        items[p["id"]] = Item(
            id=p["id"],
            title=p["title"],
            category=p["category"],
            price=1.0,
            url=f"https://{domain}/p/{p['id']}",
        )
        evidence[p["id"]] = tuple(
            Evidence(kind=e["kind"], summary=e["summary"]) for e in p.get("evidence", ())
        )
    part = f"reason:{ctx['item']}" if sample["part"] == "reason" else sample["part"]
    earlier = {f"part:{k}": v for k, v in ctx.get("earlier", {}).items() if k != part}
    context = RailContext(
        customer=customer,
        catalog=items,
        brand=brand,
        plan_item_ids=tuple(items),
        action=ctx["action"],
        product_evidence=evidence,
        # What the writer was told and shown, when the sample records it (the model-written parts do).
        extra={
            "facts": " ".join(e.summary for ev in evidence.values() for e in ev),
            "instructions": ctx.get("instructions", ""),
            "example": ctx.get("example", ""),
            **earlier,
            f"part:{part}": sample["text"],
        },
    )
    return part, context


def _sent_samples(emails: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every model-written part of judged sent emails as a labelled sample (``sample_context``'s form), with
    the parts before it in its email."""
    samples: list[dict[str, Any]] = []
    for e in emails:
        earlier: dict[str, str] = {}
        for p in e["parts"]:
            kind, _, item = str(p["part"]).partition(":")
            if p["writer"] != "template":
                label = p["label"]
                context = {
                    "first_name": e["first_name"],
                    "action": e["action"],
                    "products": e["products"],
                    "earlier": dict(earlier),
                    # The worked example's names every model request shows (its brief is not recorded).
                    "example": EXAMPLE_NAMES,
                    **({"item": item} if kind == "reason" else {}),
                }
                samples.append(
                    {
                        "id": f"{e['id']}-{p['part']}",
                        "brand": e["brand"],
                        "part": kind,
                        "text": p["text"],
                        "label": label["verdict"],
                        "kind": label.get("kind", "good") if label["verdict"] == "bad" else "good",
                        "source": str(e["model_key"]),
                        "context": context,
                    }
                )
            earlier[str(p["part"])] = str(p["text"])
    return samples


class CopyQualityEval:
    """``run()`` → ``copy.*``: the rail on the labelled set, and each writer on ``n`` seeded customers."""

    name = "copy"

    def __init__(
        self,
        deps: AgentDeps | None = None,
        *,
        n: int = 10,
        seed: int = 0,
        labelled: Path = LABELLED,
        heldout: Path | None = HELDOUT,
        model_parts: Path | None = MODEL_PARTS,
        drawn_parts: Path | None = DRAWN_PARTS,
        model_emails: Path = MODEL_EMAILS,
        sent_judged: Path | None = SENT_JUDGED,
        sent_earlier: Path | None = SENT_EARLIER,
        similarity: Any = None,
    ) -> None:
        self.deps = deps
        self.n = n
        self.seed = seed
        self.labelled = labelled
        self.heldout = heldout
        self.model_parts = model_parts
        self.drawn_parts = drawn_parts
        self.model_emails = model_emails
        self.sent_judged = sent_judged
        self.sent_earlier = sent_earlier
        self.similarity = similarity
        self._brands = {k: load_brand(p) for k, p in BRANDS.items()}
        self._missed: list[dict[str, Any]] = []
        self._false_alarms: list[dict[str, Any]] = []
        self._emails: list[dict[str, Any]] = []
        self._rail_ms: list[float] = []
        self._sent_bad: list[list[str]] = []

    # -- the labelled set ------------------------------------------------------------------------------
    def _labelled(self, path: Path, key: str) -> dict[str, float]:
        return self._judge_parts(list(read_jsonl(path)), key, path)

    def _judge_parts(
        self, samples: Sequence[Mapping[str, Any]], key: str, path: Path, *, list_misses: bool = True
    ) -> dict[str, float]:
        """``copy.<key>.*``: the rails on labelled parts (``sample_context``'s form). Good parts stopped go to
        the report's table; bad parts let through too, unless ``list_misses`` is off."""
        self._rail_ms = []
        if len(samples) < 2:
            raise DataError(f"{path} holds {len(samples)} labelled parts; the suite needs some of each")
        tp = fp = fn = tn = all_tp = all_fp = 0
        by_kind: Counter[str] = Counter()
        caught: Counter[str] = Counter()
        by_source: Counter[str] = Counter()
        source_ok: Counter[str] = Counter()
        for s in samples:
            brand = self._brands.get(s["brand"])
            if brand is None:
                raise DataError(f"{path}: sample {s.get('id')} names an unknown brand {s['brand']!r}")
            part, context = sample_context(s, brand)
            if self.similarity is not None:
                context = RailContext(**{**context.__dict__, "similarity": self.similarity})
            t0 = time.perf_counter()
            verdict = copy_quality.check(s["text"], context, part=part)
            self._rail_ms.append((time.perf_counter() - t0) * 1000)
            flagged = not verdict.passed
            bad = s["label"] == "bad"
            # As the agent checks a part: every rail of a free-text part, the copy-quality rail among them.
            others = [r.rail for r in RAILS_BY_PART[part_kind(part)] if r.rail.name != copy_quality.name]
            stopped = flagged or any(not v.passed for v in check_all(s["text"], context, others, part=part))
            all_tp += bad and stopped
            all_fp += not bad and stopped
            by_source[s["source"]] += 1
            source_ok[s["source"]] += flagged == bad
            if bad:
                by_kind[s["kind"]] += 1
                caught[s["kind"]] += flagged
                tp += flagged
                fn += not flagged
                if not flagged and list_misses:
                    self._missed.append(
                        {"id": s["id"], "kind": s["kind"], "part": s["part"], "text": s["text"]}
                    )
            else:
                fp += flagged
                tn += not flagged
                if flagged:
                    self._false_alarms.append(
                        {
                            "id": s["id"],
                            "part": s["part"],
                            "text": s["text"],
                            "rules": [f.rule for f in verdict.findings],
                        }
                    )
        out = {
            f"copy.{key}.parts": float(len(samples)),
            f"copy.{key}.bad": float(tp + fn),
            f"copy.{key}.good": float(fp + tn),
            f"copy.{key}.precision": tp / (tp + fp) if tp + fp else 1.0,
            f"copy.{key}.recall": tp / (tp + fn) if tp + fn else 1.0,
            f"copy.{key}.false_positive_rate": fp / (fp + tn) if fp + tn else 0.0,
            f"copy.{key}.rail_p95_ms_per_part": float(np.percentile(self._rail_ms, 95)),
            f"copy.{key}.all_rails.recall": all_tp / (tp + fn) if tp + fn else 1.0,
            f"copy.{key}.all_rails.false_positive_rate": all_fp / (fp + tn) if fp + tn else 0.0,
        }
        for kind, n in sorted(by_kind.items()):
            out[f"copy.{key}.recall.{kind}"] = caught[kind] / n
        for source, n in sorted(by_source.items()):
            out[f"copy.{key}.accuracy.{source}"] = source_ok[source] / n
        return out

    # -- writers on real customers ---------------------------------------------------------------------
    def _customers(self, deps: AgentDeps) -> list[str]:
        ids = sorted(
            c.id for c in deps.store.customers() if c.consent.marketing_email and c.consent.personalization
        )
        rng = np.random.default_rng(self.seed)
        if not ids:
            return []
        picked = rng.choice(len(ids), size=min(self.n, len(ids)), replace=False)
        return [ids[int(i)] for i in sorted(picked)]

    def _writer(self, deps: AgentDeps, label: str, customers: Sequence[str]) -> dict[str, float]:
        start = time.perf_counter()
        written = accepted = sent = whole = blocked = 0
        for cid in customers:
            out = agent.run_email_sync(deps, cid)
            if out.email is None:
                if out.refusal is not None and out.refusal.reason == "guardrail_blocked" and out.plan:
                    # Blocked whole: none of its parts reached the customer, and it was not written.
                    blocked += 1
                    written += 3 + len(out.plan.products)
                continue
            sent += 1
            parts = out.email.part_writers
            written += len(parts)
            accepted += sum(1 for p in parts if p not in out.email.fallback_parts)
            whole += out.email.fallback_parts == ()
            self._emails.append(
                {
                    "writer": label,
                    "customer_id": cid,
                    "subject": out.email.subject,
                    "preheader": out.email.preheader,
                    "body_text": out.email.body_text,
                    "fallback_parts": list(out.email.fallback_parts),
                }
            )
        minutes = (time.perf_counter() - start) / 60
        key = f"copy.writer.{label}"
        return {
            f"{key}.emails_sent": float(sent),
            f"{key}.parts_accepted": accepted / written if written else 0.0,
            f"{key}.emails_blocked": float(blocked),
            f"{key}.fully_written": whole / (sent + blocked) if sent + blocked else 0.0,
            f"{key}.emails_per_minute": sent / minutes if minutes else 0.0,
        }

    def _writers(self) -> dict[str, float]:
        deps = self.deps
        if deps is None:
            return {}
        customers = self._customers(deps)
        configured = deps.writer
        out: dict[str, float] = {}
        try:
            deps.writer = TemplateWriter()
            out.update(self._writer(deps, "template", customers))
            if configured.name != "template":
                deps.writer = configured
                model = getattr(configured, "model", configured.name)
                out.update(self._writer(deps, str(model), customers))
        finally:
            deps.writer = configured
        if self.model_emails.exists():
            for row in read_jsonl(self.model_emails):
                self._emails.append({**row, "writer": f"{row['model']} (recorded)"})
        return out

    def _sent(self, path: Path) -> dict[str, float]:
        """``copy.sent.<model>.*`` and ``copy.sent.all.*`` from the judged emails as they were sent."""
        emails: list[Mapping[str, Any]] = list(read_jsonl(path))
        groups: dict[str, list[Mapping[str, Any]]] = {"all": list(emails)}
        for e in emails:
            groups.setdefault(str(e["model_key"]), []).append(e)
        out: dict[str, float] = {}
        for key, group in groups.items():
            parts = [p for e in group for p in e["parts"] if p["writer"] != "template"]
            for p in parts:
                label = p.get("label")
                if (
                    isinstance(label, Mapping)
                    and label.get("verdict") == "bad"
                    and label.get("kind") not in KINDS
                ):
                    raise DataError(
                        f"{path}: a part's kind {label.get('kind')!r} is not one of the labelled kinds",
                        hint=f"use one of {', '.join(sorted(KINDS))}",
                    )
                if not isinstance(label, Mapping) or label.get("verdict") not in ("good", "bad"):
                    raise DataError(
                        f"{path}: a model-written part has no good or bad label: {p.get('text')!r}",
                        hint='label it {"verdict": "good"} or {"verdict": "bad", "kind": "..."}',
                    )

            def bad(e: Mapping[str, Any], kinds: frozenset[str] | None = None) -> bool:
                return any(
                    p["writer"] != "template"
                    and p["label"]["verdict"] == "bad"
                    and (kinds is None or p["label"].get("kind") in kinds)
                    for p in e["parts"]
                )

            n = max(len(group), 1)
            out[f"copy.sent.{key}.emails"] = float(len(group))
            out[f"copy.sent.{key}.gate_violations"] = float(sum(bad(e, GATE_KINDS) for e in group))
            out[f"copy.sent.{key}.fully_model_written"] = (
                sum(bool(e["fully_model_written"]) for e in group) / n
            )
            out[f"copy.sent.{key}.model_parts"] = float(len(parts))
            out[f"copy.sent.{key}.model_parts_good"] = sum(
                p["label"]["verdict"] == "good" for p in parts
            ) / max(len(parts), 1)
            out[f"copy.sent.{key}.signed"] = sum(not bad(e) for e in group) / n
            # By part: what this model gets right, and what to keep to the template (TAILOR_LLM_PARTS).
            for kind in _PARTS:
                of_kind = [p for p in parts if p["part"].split(":")[0] == kind]
                if of_kind:
                    good = sum(p["label"]["verdict"] == "good" for p in of_kind)
                    out[f"copy.sent.{key}.good.{kind}"] = good / len(of_kind)
            out[f"copy.sent.{key}.fully_model_written_and_signed"] = (
                sum(bool(e["fully_model_written"]) and not bad(e) for e in group) / n
            )
        # The rails as they stand now on every model-written part that went out: how many of the bad ones they
        # stop since (recall), and how many of the good ones they would have stopped (false positives).
        # (The bad ones let through are in the sent table already.) The earlier runs' parts count too.
        earlier: list[Mapping[str, Any]] = []
        if self.sent_earlier is not None and self.sent_earlier.exists():
            earlier = [{**e, "model_key": f"{e['model_key']}_earlier"} for e in read_jsonl(self.sent_earlier)]
        samples = _sent_samples([*emails, *earlier])
        out.update(self._judge_parts(samples, "sent_parts", path, list_misses=False))
        self._sent_bad = [
            [
                str(e["model_key"]),
                str(e["brand"]),
                p["part"].split(":")[0],
                p["text"],
                p["label"].get("kind", ""),
            ]
            for e in emails
            for p in e["parts"]
            if p["writer"] != "template" and p["label"]["verdict"] == "bad"
        ]
        return out

    def run(self) -> dict[str, float]:
        self._missed, self._false_alarms, self._emails, self._rail_ms = [], [], [], []
        self._sent_bad = []
        out = self._labelled(self.labelled, "labelled")
        for path, key in (
            (self.heldout, "heldout"),
            (self.model_parts, "models"),
            (self.drawn_parts, "drawn"),
        ):
            if path is not None and path.exists():
                out.update(self._labelled(path, key))
        if self.sent_judged is not None and self.sent_judged.exists():
            out.update(self._sent(self.sent_judged))
        return {**out, **self._writers()}

    def artifacts(self) -> dict[str, Artifact]:
        arts: dict[str, Artifact] = {
            "copy_misses": {
                "kind": "table",
                "title": "Copy quality: bad parts the rail let through, and good parts it stopped",
                "columns": ["what", "part", "text", "kind or rules"],
                "rows": [["missed", m["part"], m["text"], m["kind"]] for m in self._missed]
                + [["stopped", f["part"], f["text"], ", ".join(f["rules"])] for f in self._false_alarms],
            }
        }
        if self._sent_bad:
            arts["copy_sent_bad"] = {
                "kind": "table",
                "title": "Sent by the local models: model parts a person judged a marketer would strike",
                "columns": ["model", "retailer", "part", "text", "what is wrong"],
                "rows": self._sent_bad,
            }
        if self._emails:
            arts["copy_emails"] = {
                "kind": "emails",
                "title": "Emails side by side: the template writer and the models, for the same customers",
                "emails": self._emails,
            }
        return arts
