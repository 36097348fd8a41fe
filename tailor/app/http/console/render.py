"""Rendering: one Jinja environment (autoescaped) over the console's templates, and the headers every page
carries (no caching of a customer's data, no framing, a content policy that allows this origin only)."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

__all__ = ["page"]

_ENV = Environment(
    loader=PackageLoader("tailor.app.http.console", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)

# Inline style and the one inline script (a campaign's live progress, allowed by this response's nonce) are
# the console's own; nothing is loaded from elsewhere, and a script that slipped into a page would not run. A
# previewed email's HTML is shown in a sandboxed frame (no script, no origin), whose images may come from the
# retailer's https site.
_CONSOLE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; connect-src 'self'; "
    "img-src https: data:; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_PUBLIC_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; frame-ancestors 'none'"


def page(template: str, *, status: int = 200, public: bool = False, **context: Any) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    html = _ENV.get_template(template).render(**context, csp_nonce=nonce)
    headers = {
        "Cache-Control": "no-store",
        "Content-Security-Policy": _PUBLIC_POLICY if public else _CONSOLE_POLICY.format(nonce=nonce),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer" if public else "same-origin",
    }
    return HTMLResponse(html, status_code=status, headers=headers)
