"""The brand voice config (``tailor/brand.toml`` by default), shared by the prompts and the guardrails."""

from __future__ import annotations

import hashlib
import tomllib
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tailor.errors import ConfigError

__all__ = ["DEFAULT_BRAND", "BrandConfig", "load_brand"]

DEFAULT_BRAND = Path(__file__).resolve().parent.parent / "tailor" / "brand.toml"


class BrandConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    tone: tuple[str, ...]
    sign_off: str
    banned_phrases: tuple[str, ...] = ()
    allowed_claims: tuple[str, ...] = ()
    allowed_offers: tuple[str, ...] = ()
    max_exclamation_marks: int = Field(1, ge=0)
    subject_max_chars: int = Field(70, ge=10)
    preheader_max_chars: int = Field(110, ge=10)
    intro_max_chars: int = Field(400, ge=20)
    reason_max_chars: int = Field(200, ge=20)
    postal_address: str
    unsubscribe_url: str = Field(pattern=r"^https://.*\{customer_token\}")
    allowed_link_domains: tuple[str, ...]

    def unsubscribe_link(self, customer_id: str) -> str:
        # An opaque token, so the customer id does not travel in the link.
        token = hashlib.sha256(f"unsubscribe:{customer_id}".encode()).hexdigest()[:20]
        return self.unsubscribe_url.format(customer_token=token)


@lru_cache(maxsize=8)
def load_brand(path: Path | None = None) -> BrandConfig:
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
