"""Whether the model endpoint answers: the one check behind the facade's ``health`` and ``/readyz``."""

from __future__ import annotations

import httpx

from tailor.core.settings import Settings

__all__ = ["llm_endpoint_up"]


def llm_endpoint_up(settings: Settings, *, timeout_s: float = 2.0) -> bool:
    """True when ``GET <llm_base_url>/models`` answers below 500 (an auth error still means it is up).

    A readiness check, not a model call: its timeout is short, well under a probe's own."""
    if not settings.llm_base_url:
        return False
    try:
        response = httpx.get(
            settings.llm_base_url.rstrip("/") + "/models",
            timeout=timeout_s,
            headers={"Authorization": f"Bearer {settings.llm_api_key.get_secret_value()}"},
        )
    except httpx.HTTPError:
        return False
    return response.status_code < 500
