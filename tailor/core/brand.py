"""The retailer's configuration: who the shop is and how it speaks, read by the prompts, the writers, the
footer, the support policy and the guardrails alike.

No module loads it by itself: the service loads it once (``TAILOR_BRAND_CONFIG``, or the bundled
``tailor/core/brand.toml`` when unset) and hands the one object to every part, down to each rail through
``RailContext.brand``. A part that fell back to a default brand of its own would check one shop's email
against another shop's footer."""

from __future__ import annotations

import hashlib
import tomllib
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tailor.core.errors import ConfigError

__all__ = ["DEFAULT_BRAND", "BrandConfig", "load_brand"]

DEFAULT_BRAND = Path(__file__).resolve().parent / "brand.toml"


class BrandConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    # One line on what the shop sells ("a gift and homeware shop"): the model is told this, nothing more.
    description: str = ""
    tone: tuple[str, ...]
    sign_off: str
    # ISO 4217: the currency the shop trades in, given to catalog rows that name none, and recognised as
    # money by the grounding rail ("120 TWD" is an amount to check, like "£12").
    currency: str = Field("GBP", pattern=r"^[A-Z]{3}$")
    banned_phrases: tuple[str, ...] = ()
    allowed_claims: tuple[str, ...] = ()
    # What marketing emails may offer, each written whole (condition and amount included).
    allowed_offers: tuple[str, ...] = ()
    # What a support agent may offer a customer who had a problem; never copied into marketing.
    support_offers: tuple[str, ...] = ()
    # Which amends fit which problem (a TOML table: ``late_delivery = ["..."]``, keyed by the support agent's
    # intents: late_delivery, return_refund, damaged_item, email_complaint, ...). A problem it names nothing
    # for gets ``support_offers``; kept as pairs, not a dict, so that the config stays hashable.
    support_policy: tuple[tuple[str, tuple[str, ...]], ...] = ()
    max_exclamation_marks: int = Field(1, ge=0)
    subject_max_chars: int = Field(70, ge=10)
    preheader_max_chars: int = Field(110, ge=10)
    intro_max_chars: int = Field(400, ge=20)
    reason_max_chars: int = Field(200, ge=20)
    postal_address: str = Field(min_length=1)
    unsubscribe_url: str = Field(pattern=r"^https://.*\{customer_token\}")
    allowed_link_domains: tuple[str, ...] = Field(min_length=1)

    @field_validator("support_policy", mode="before")
    @classmethod
    def _policy_pairs(cls, value: object) -> object:
        if isinstance(value, dict):
            pairs = ((str(k), tuple(v) if isinstance(v, list | tuple) else v) for k, v in value.items())
            return tuple(sorted(pairs))
        return value

    def offers_for(self, intent: str) -> tuple[str, ...]:
        """What the support policy lets an agent offer for a problem of this kind."""
        return dict(self.support_policy).get(intent, self.support_offers)

    @field_validator("allowed_link_domains")
    @classmethod
    def _bare_hosts(cls, domains: tuple[str, ...]) -> tuple[str, ...]:
        for domain in domains:
            if not domain or "/" in domain or ":" in domain or " " in domain:
                raise ValueError(f"{domain!r} is not a bare host name such as 'shop.example.com'")
        return tuple(d.lower() for d in domains)

    def unsubscribe_link(self, customer_id: str) -> str:
        # An opaque token, so the customer id does not travel in the link.
        token = hashlib.sha256(f"unsubscribe:{customer_id}".encode()).hexdigest()[:20]
        return self.unsubscribe_url.format(customer_token=token)


@lru_cache(maxsize=8)
def load_brand(path: Path | None) -> BrandConfig:
    """The retailer configuration at ``path``; ``None`` names the bundled one (the demo retailer)."""
    path = path or DEFAULT_BRAND
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"brand config {path} not found", hint="set TAILOR_BRAND_CONFIG to a TOML file"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"brand config {path} is not valid TOML: {exc}") from exc
    try:
        return BrandConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(
            f"brand config {path}: field {'.'.join(map(str, first['loc']))}: {first['msg']}"
        ) from exc
