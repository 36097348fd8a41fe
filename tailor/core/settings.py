"""One settings object for the whole service. Every field can be set as ``TAILOR_<NAME>``."""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TAILOR_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("var"), description="Where the store, the embedded Qdrant and caches live.")

    # Qdrant: embedded (local mode, on disk under data_dir) unless a URL is given.
    qdrant_url: str | None = Field(
        None, description="A Qdrant server or cluster, e.g. http://127.0.0.1:6333."
    )
    qdrant_api_key: SecretStr | None = None
    qdrant_prefix: str = Field("tailor", description="Collection name prefix, to share one server.")

    embedding_model: str = Field(
        "all-MiniLM-L6-v2", description="'all-MiniLM-L6-v2' (bundled) or a local sentence-transformers path."
    )
    embedding_batch_size: int = Field(64, ge=1)

    # The writer of free text: a deterministic template writer, or any OpenAI-compatible endpoint.
    writer: Literal["template", "openai"] = "template"
    llm_base_url: str | None = None
    llm_api_key: SecretStr = SecretStr("not-needed")
    llm_model: str = "gpt-4o-mini"
    llm_timeout_s: float = Field(20.0, gt=0)
    llm_max_retries: int = Field(1, ge=0, le=5)
    llm_temperature: float = Field(0.2, ge=0, le=2)
    llm_max_tokens: int = Field(400, ge=16)
    llm_json_schema: bool = Field(
        False, description="Send the reply's JSON schema as response_format (llama.cpp makes it a grammar)."
    )
    llm_draws: int = Field(
        1,
        ge=1,
        le=8,
        description="Answers drawn for each part of an email at each try; the first that the part's own"
        " rails pass is kept (1: one answer, as asked).",
    )
    llm_draw_temperature: float = Field(
        0.8, ge=0, le=2, description="The sampling temperature of every draw after a part's first."
    )
    llm_parts: tuple[Literal["subject", "preheader", "intro", "reason"], ...] = Field(
        ("subject", "preheader", "intro", "reason"),
        min_length=1,
        description="The parts of an email the model writes (JSON list); the others are the template's"
        " approved copy: a retailer keeps the parts its model gets wrong (the copy eval's copy.sent.* by"
        " part tells which) to the template.",
    )
    llm_unavailable: Literal["fallback", "defer"] = Field(
        "fallback", description="When the model endpoint is down: use the template writer, or defer the job."
    )

    database_url: str | None = Field(
        None,
        description="PostgreSQL (postgresql://USER@HOST:PORT/DB) for the customer store (catalog, customers,"
        " events, contacts) and the service's jobs, idempotency keys, API keys and audit trail, shared by"
        " every replica and worker; unset, two SQLite files in the data dir.",
    )
    support_thinker: Literal["offline", "model"] | None = Field(
        None,
        description="How the support agent thinks: offline (intent model and plan) or model (tool calls to"
        " the TAILOR_LLM_* endpoint); unset, it follows TAILOR_WRITER.",
    )

    brand_config: Path | None = Field(None, description="Brand voice TOML; the bundled default when unset.")

    # Contact policy.
    frequency_cap_days: int = Field(3, ge=0, description="No two marketing emails within this many days.")
    max_impressions_30d: int = Field(3, ge=1, description="Show one item to one customer at most this often.")
    max_per_category: int = Field(4, ge=1, description="Diversity: items of one category in a top-10.")

    # Merchandising: scores added after ranking, before diversity. The ranker's scores are log-odds, so a
    # boost of 1.0 is a strong push; keep them small unless an item must surface. Set as JSON, e.g.
    # TAILOR_CATEGORY_BOOSTS='{"Christmas": 0.5}'.
    margin_boosts: dict[str, float] = Field(
        default_factory=dict, description="Item id -> score added to it (high-margin items)."
    )
    category_boosts: dict[str, float] = Field(
        default_factory=dict, description="Category -> score added to each of its items."
    )

    # Demo clock: Online Retail ends on 2011-12-09, so "now" defaults to just after it.
    now: str | None = Field(
        None, description="ISO timestamp to use as 'now' (demo and evals); wall clock if unset."
    )

    # HTTP service (tailor serve).
    api_rate_per_s: float = Field(20.0, gt=0, description="Requests per second per API key (token bucket).")
    api_rate_burst: int = Field(40, ge=1, description="Bucket size: requests a key may send at once.")
    api_max_body_bytes: int = Field(1_000_000, ge=1024, description="Larger request bodies get 413.")
    callback_hosts: list[str] = Field(
        ["127.0.0.1", "localhost"], description="Hosts that job results may be POSTed to."
    )
    job_retry_s: float = Field(5.0, gt=0, description="First retry delay of a job whose backend was down.")
    job_concurrency: int = Field(
        4,
        ge=1,
        le=64,
        description="Job items (one customer's email each) run at once. A job never holds every worker"
        " while another job waits: a free worker goes to the job with the fewest items running. 1 runs"
        " items one at a time, in job order.",
    )
    job_time_budget_s: float = Field(
        45.0,
        gt=0,
        description="The most one job item may wait on the model: the writer's timeout and retries are"
        " cut to fit it, then the item falls back or is deferred (TAILOR_LLM_UNAVAILABLE). So a hanging"
        " model delays other jobs by one budget at most.",
    )
    serve_jobs: bool = Field(
        True,
        description="Whether `tailor serve` runs jobs (campaign items, triggers) besides answering the API."
        " false: this replica only queues them, for `tailor worker` processes on the same ops database.",
    )
    serve_blas_threads: int = Field(
        1,
        ge=1,
        le=256,
        description="BLAS threads in the HTTP server. One request's matrix work is small: a second thread"
        " mostly spins (a warm recommendation: 17.9 ms of CPU against 9.2 ms on one thread, in the same wall"
        " time; benchmarks/recommend_latency.py), CPU that other requests and a refit need.",
    )
    holdout_share: float = Field(
        0.0,
        ge=0.0,
        le=0.5,
        description="The share of customers (a stable draw, TAILOR_HOLDOUT_SALT) who get no marketing email,"
        " so that a campaign's effect is measured against them (GET /v1/jobs/{id}/uplift). 0: none.",
    )
    explore_share: float = Field(
        0.0,
        ge=0.0,
        le=0.5,
        description="Exploration (epsilon-greedy): the share of decisions that go to another qualified action"
        " than the planner's, and of recommendations whose last product slot is drawn among the next ranked"
        " items, each with its exact probability in the decision log, so that other policies can be judged"
        " on it (tailor eval --suite policy). 0: the planner's choice always.",
    )
    holdout_salt: str = Field(
        "tailor-holdout-1",
        min_length=1,
        max_length=200,
        description="Draws the holdout group (and, apart from it, exploration's draws); a new salt draws"
        " a new one (earlier campaigns keep theirs).",
    )
    ranker_reload_s: float = Field(
        30.0,
        ge=0.0,
        le=24 * 3600,
        description="How often a running service looks whether the saved ranker was replaced by another"
        " process (another replica's refit or forget on the same data dir, or `tailor refit`), and loads it"
        " if so. 0: at every request.",
    )
    ranker_store: Literal["auto", "files", "database"] = Field(
        "auto",
        description="Where a fitted ranker is shared with other processes: files (the data dir alone) or"
        " database (also published in the store's database at every save, so replicas that share the"
        " database but no volume load it); auto, the database when TAILOR_DATABASE_URL is set.",
    )
    shadow_eval_hours: float = Field(
        24.0,
        ge=0.0,
        le=24 * 30,
        description="How often the server judges the served ranker on what its customers bought since it was"
        " fitted, against repeat history and popularity, and measures the drift of its inputs"
        " (GET /v1/model/shadow, gauges on /metrics). 0: never.",
    )
    shadow_days: int = Field(
        28, ge=1, le=365, description="The shadow evaluation's and drift's window, in days."
    )
    shadow_stale_ratio: float = Field(
        0.9,
        gt=0.0,
        le=2.0,
        description="The served ranker is marked stale when its shadow Recall@10 falls under this share of"
        " the better reference's (with at least 30 customers to judge on).",
    )
    attribution_days: int = Field(
        7,
        ge=1,
        le=90,
        description="A purchase counts toward a campaign when made within this many days after the decision"
        " for that customer (an email made, or held back for the holdout).",
    )
    attribution_rule: Literal["last_send", "every_window"] = Field(
        "last_send",
        description="How a campaign's purchases are credited to its emails (the uplift answer's credit):"
        " last_send, to the last email the customer was sent before the purchase; every_window, to every"
        " email whose window holds it. The targeted-against-holdout comparison counts whole windows either"
        " way.",
    )
    console_session_hours: float = Field(
        8.0, gt=0, le=24 * 30, description="How long a console login lasts before the key is asked for again."
    )
    why_link_days: float = Field(
        30.0,
        gt=0,
        le=365,
        description="How long a customer's signed why-link opens (made by the console).",
    )
    eval_report: Path = Field(
        Path("out/eval/report.json"), description="The evaluation report the console's quality page shows."
    )
    refit_after_forget: bool = Field(
        True,
        description="Refit the ranker in the background after a customer is deleted over HTTP, so their"
        " share of the item-level aggregates goes too (one fit at a time; about a minute on the demo store).",
    )

    @field_validator("margin_boosts", "category_boosts")
    @classmethod
    def _finite_boosts(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not math.isfinite(v)}
        if bad:
            raise ValueError(f"boosts must be finite numbers, got {bad}")
        return value

    @cached_property
    def store_path(self) -> Path:
        return self.data_dir / "tailor.db"

    @property
    def store_database(self) -> str | Path:
        """Where the customer store lives: PostgreSQL when ``TAILOR_DATABASE_URL`` says so, else the SQLite
        file in the data dir."""
        return self.database_url or self.store_path

    @property
    def store_exists(self) -> bool:
        """Whether there is a store to open (a database by URL always is; it may be empty)."""
        return self.database_url is not None or self.store_path.exists()

    @property
    def ranker_published(self) -> bool:
        """Whether every save of the ranker is also published in the store's database
        (``TAILOR_RANKER_STORE``)."""
        auto = self.ranker_store == "auto" and self.database_url is not None
        return self.ranker_store == "database" or auto

    @cached_property
    def ops_path(self) -> Path:
        return self.data_dir / "ops.db"

    @property
    def ops_database(self) -> str | Path:
        """Where jobs, idempotency keys, API keys and the audit trail live: PostgreSQL when
        ``TAILOR_DATABASE_URL`` says so (shared by every replica and worker), else the SQLite file."""
        return self.database_url or self.ops_path

    @property
    def ops_exists(self) -> bool:
        return self.database_url is not None or self.ops_path.exists()

    @property
    def job_lease_s(self) -> float:
        """How long a worker holds a job item before another may take it: longer than any item may run
        (its model budget, retries and the rails), so only a dead worker's items are taken."""
        return 4 * self.job_time_budget_s + 60

    @cached_property
    def qdrant_path(self) -> Path:
        return self.data_dir / "qdrant"

    @cached_property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"
