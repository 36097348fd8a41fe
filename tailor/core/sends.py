"""A sent email's token in its links, so that what the customer does with the email comes back tied to it.

A job's email is sent under ``job_send_id`` (the id ``Store.record_send`` keeps its contact under). What the
email carries is not that id, which names the customer, but ``send_token``: an HMAC of it under a secret of
the ops database (``Ops.secret``), the same on every replica. The job result's ``send_id`` is the token, and
every product link of the email the job returns carries it as ``tailor_send=`` (``tag_email``), as an email
platform's click tracking would (a direct send, ``tailor email --send``, likewise: ``token_of`` its
``direct:`` id); so a click on it, and the CRM's Email Opened and Email Link Clicked events
(``tailor.data.segment``), name the send they belong to (``Event.send_id``) without the customer's id
travelling in a link.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from markupsafe import escape

__all__ = ["SEND_PARAM", "job_send_id", "send_of_link", "send_token", "tag_email", "tag_link", "token_of"]

SEND_PARAM = "tailor_send"
# A link followed by one of these is part of a longer one (a path, a query, a fragment, a file name); a full
# stop before a space, a bracket, a quote, a space or a tag ends it.
_GOES_ON = r"(?![\w\-/%~+=&?#]|\.\w)"
_PARAM = re.compile(rf"(?:^|&){SEND_PARAM}=[^&]*")


def job_send_id(job_id: str, customer_id: str) -> str:
    """The id a job's send is recorded under (``Store.record_send``): it names the customer, so it stays in
    Tailor's stores."""
    return f"job:{job_id}:{customer_id}"


def send_token(secret: bytes, job_id: str, customer_id: str) -> str:
    """What a job's email carries for its send: opaque, and the same for the same send on every replica."""
    return token_of(secret, job_send_id(job_id, customer_id))


def token_of(secret: bytes, send_id: str) -> str:
    """The token of any recorded send (a job's, or a direct one's ``direct:<id>``)."""
    digest = hmac.new(secret, send_id.encode(), hashlib.sha256).hexdigest()
    return "s_" + digest[:24]


def tag_link(url: str, token: str) -> str:
    """``url`` with ``tailor_send=<token>`` at the end of its query (replacing one it had); the rest of the
    query is kept as it was written, byte for byte (a signed link stays signed), and so is the fragment."""
    head, hash_mark, fragment = url.partition("#")
    path, _, query = head.partition("?")
    query = _PARAM.sub("", query).lstrip("&")
    query = f"{query}&{SEND_PARAM}={token}" if query else f"{SEND_PARAM}={token}"
    return f"{path}?{query}{hash_mark}{fragment}"


def send_of_link(url: str) -> str | None:
    """The send token a tagged link carries, or None."""
    found = [v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True) if k == SEND_PARAM]
    return found[-1] if found else None


def tag_email(email: Mapping[str, Any], token: str) -> dict[str, Any]:
    """An email (as a job result holds it: ``Email`` in JSON) with every product link tagged, in its
    products and wherever its text and HTML bodies show that link (the HTML as Jinja escapes it). Only whole
    links: one that another begins with is not tagged inside it, the longest is tried first, and a link
    followed by more of a path, a query or a file name is left alone."""
    products = [dict(p) for p in email.get("products", ())]
    tagged = {str(p["url"]): tag_link(str(p["url"]), token) for p in products if p.get("url")}
    for p in products:
        if p.get("url"):
            p["url"] = tagged[str(p["url"])]
    out = {**email, "products": products}
    if not tagged:
        return out

    def swap(text: str, table: Mapping[str, str]) -> str:
        pattern = "|".join(re.escape(u) for u in sorted(table, key=len, reverse=True))
        return re.sub(f"(?:{pattern}){_GOES_ON}", lambda m: table[m.group(0)], text)

    if isinstance(email.get("body_text"), str):
        out["body_text"] = swap(email["body_text"], tagged)
    if isinstance(email.get("body_html"), str):
        out["body_html"] = swap(
            email["body_html"], {str(escape(u)): str(escape(t)) for u, t in tagged.items()}
        )
    return out
