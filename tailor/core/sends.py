"""A sent email's id in its links, so that what the customer does with the email comes back tied to it.

A job's email is sent under ``job_send_id`` (the id ``Store.record_send`` keeps, and the job result's
``send_id``). Every product link of the email the job returns carries it as ``tailor_send=`` (``tag_email``),
as an email platform's click tracking would, so a click on it, and the CRM's Email Opened and Email Link
Clicked events (``tailor.data.segment``), name the send they belong to (``Event.send_id``).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["SEND_PARAM", "job_send_id", "send_of_link", "tag_email", "tag_link"]

SEND_PARAM = "tailor_send"
# What, following a link in the email's text, would make it part of a longer one (a full stop, a bracket, a
# quote, a space or a tag ends it).
_URL_CHARS = r"[\w\-/%~+=&]"


def job_send_id(job_id: str, customer_id: str) -> str:
    return f"job:{job_id}:{customer_id}"


def tag_link(url: str, send_id: str) -> str:
    """``url`` with ``tailor_send=<send_id>`` in its query (replacing one it had), the rest unchanged."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != SEND_PARAM]
    return urlunsplit(parts._replace(query=urlencode([*query, (SEND_PARAM, send_id)])))


def send_of_link(url: str) -> str | None:
    """The send id a tagged link carries, or None."""
    found = [v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True) if k == SEND_PARAM]
    return found[-1] if found else None


def tag_email(email: Mapping[str, Any], send_id: str) -> dict[str, Any]:
    """An email (as a job result holds it: ``Email`` in JSON) with every product link tagged, in its
    products and wherever its text and HTML bodies show that link (the longest link first, and only whole
    links: a link that another begins with is not tagged inside it)."""
    products = [dict(p) for p in email.get("products", ())]
    tagged = {str(p["url"]): tag_link(str(p["url"]), send_id) for p in products if p.get("url")}
    for p in products:
        if p.get("url"):
            p["url"] = tagged[str(p["url"])]
    out = {**email, "products": products}
    if not tagged:
        return out

    def swap(text: str, table: Mapping[str, str]) -> str:
        pattern = "|".join(re.escape(u) for u in sorted(table, key=len, reverse=True))
        return re.sub(f"(?:{pattern})(?!{_URL_CHARS})", lambda m: table[m.group(0)], text)

    if isinstance(email.get("body_text"), str):
        out["body_text"] = swap(email["body_text"], tagged)
    if isinstance(email.get("body_html"), str):
        escaped = {html.escape(u, quote=True): html.escape(t, quote=True) for u, t in tagged.items()}
        out["body_html"] = swap(email["body_html"], escaped)
    return out
