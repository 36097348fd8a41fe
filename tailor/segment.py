"""Segment spec calls (``track``, ``identify`` and ``batch``) mapped to Tailor events and customers.

Only the e-commerce spec events that carry a signal Tailor uses are accepted; any other event name is
rejected by name, so a CRM integration that sends something Tailor would silently drop finds out at once.
Event ids derive from Segment's ``messageId``, so a redelivered call is stored once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from tailor.errors import RecordError
from tailor.models import Consent, Customer, Event, EventKind

__all__ = ["TRACK_EVENTS", "SegmentResult", "from_segment", "is_segment"]

# Segment e-commerce spec names → what they mean to Tailor.
TRACK_EVENTS: dict[str, EventKind] = {
    "Product Viewed": EventKind.VIEW,
    "Product Added": EventKind.ADD_TO_CART,
    "Order Completed": EventKind.PURCHASE,
    "Order Refunded": EventKind.RETURN,
    "Email Opened": EventKind.EMAIL_OPEN,
    "Email Link Clicked": EventKind.EMAIL_CLICK,
    "Support Ticket Created": EventKind.SUPPORT_TICKET,
}


@dataclass
class SegmentResult:
    events: list[Event] = field(default_factory=list)
    customers: list[Customer] = field(default_factory=list)


def is_segment(body: Any) -> bool:
    return isinstance(body, Mapping) and ("type" in body or "batch" in body)


def _fail(line: int, message: str, field_name: str | None = None, record: str | None = None) -> RecordError:
    return RecordError(message, source="segment", line=line, field=field_name, record_id=record)


def _user(call: Mapping[str, Any], line: int) -> str:
    user = call.get("userId")
    if isinstance(user, int) and not isinstance(user, bool):
        user = str(user)
    if not isinstance(user, str) or not user.strip():
        # anonymousId alone is not enough: Tailor personalizes for known customers only.
        raise _fail(line, "userId is required (anonymous calls are not accepted)", "userId")
    return user.strip()


def _timestamp(call: Mapping[str, Any], line: int) -> datetime:
    raw = call.get("timestamp") or call.get("sentAt")
    if raw is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError as exc:
        raise _fail(line, f"not an ISO 8601 timestamp: {raw!r}", "timestamp") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _event_id(message_id: str, n: int) -> str:
    return "seg_" + hashlib.blake2b(f"{message_id}|{n}".encode(), digest_size=10).hexdigest()


def _track(call: Mapping[str, Any], line: int) -> list[Event]:
    name = call.get("event")
    if name not in TRACK_EVENTS:
        raise _fail(line, f"unsupported track event {name!r}; accepted: {', '.join(TRACK_EVENTS)}", "event")
    kind = TRACK_EVENTS[str(name)]
    user = _user(call, line)
    props = call.get("properties") or {}
    if not isinstance(props, Mapping):
        raise _fail(line, "properties must be an object", "properties")
    ts = _timestamp(call, line)
    message_id = str(call.get("messageId") or "")
    base: dict[str, Any] = {"customer_id": user, "kind": kind, "timestamp": ts}
    if kind in (EventKind.PURCHASE, EventKind.RETURN):
        products = props.get("products")
        if not isinstance(products, Sequence) or isinstance(products, str) or not products:
            raise _fail(line, f"{name} needs properties.products (a non-empty list)", "properties.products")
        order = props.get("order_id")
        rows = [
            {
                **base,
                "item_id": _product_id(p, line, f"properties.products[{n}]"),
                "quantity": p.get("quantity", 1),
                "value": p.get("price"),
                "order_id": str(order) if order is not None else None,
            }
            for n, p in enumerate(products)
        ]
    elif kind in (EventKind.VIEW, EventKind.ADD_TO_CART):
        rows = [
            {
                **base,
                "item_id": _product_id(props, line, "properties"),
                "quantity": props.get("quantity"),
                "value": props.get("price"),
            }
        ]
    elif kind is EventKind.SUPPORT_TICKET:
        rows = [{**base, "text": props.get("text") or props.get("subject")}]
    else:
        rows = [{**base, "item_id": props.get("product_id")}]
    events = []
    for n, row in enumerate(rows):
        if message_id:
            row["id"] = _event_id(message_id, n)
        try:
            events.append(Event.model_validate(row))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"]) or None
            raise _fail(line, err["msg"], loc, message_id or None) from exc
    return events


def _product_id(props: Any, line: int, where: str) -> str:
    if not isinstance(props, Mapping):
        raise _fail(line, f"{where} must be an object", where)
    pid = props.get("product_id") or props.get("sku")
    if pid is None or not str(pid).strip():
        raise _fail(line, "product_id is required", f"{where}.product_id")
    return str(pid).strip()


def _identify(call: Mapping[str, Any], line: int, known: Mapping[str, Customer]) -> Customer:
    user = _user(call, line)
    traits = call.get("traits") or {}
    if not isinstance(traits, Mapping):
        raise _fail(line, "traits must be an object", "traits")
    address = traits.get("address") if isinstance(traits.get("address"), Mapping) else {}
    updates: dict[str, Any] = {}
    first = traits.get("firstName") or traits.get("first_name")
    if first:
        updates["first_name"] = first
    if traits.get("email"):
        updates["email"] = traits["email"]
    country = traits.get("country") or (address or {}).get("country")
    if country:
        updates["country"] = country
    for src, dst in (("locale", "locale"), ("timezone", "timezone")):
        if traits.get(src):
            updates[dst] = traits[src]
    consent = traits.get("consent")
    if isinstance(consent, Mapping):
        updates["consent"] = Consent.model_validate(consent)
    existing = known.get(user)
    try:
        if existing is not None:
            return Customer.model_validate({**existing.model_dump(), **updates})
        return Customer.model_validate({"id": user, **updates})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or None
        hint = "a new customer needs traits firstName, email and country" if existing is None else None
        raise RecordError(
            err["msg"],
            source="segment",
            line=line,
            field=f"traits.{loc}" if loc else None,
            record_id=user,
            hint=hint,
        ) from exc


def from_segment(body: Mapping[str, Any], known: Mapping[str, Customer]) -> SegmentResult:
    """Map one Segment call or a ``batch`` to events and customers. ``known``: existing customers by id
    (an identify for one of them is a partial update). ``line`` in errors is the 1-based batch position."""
    calls: Sequence[Any]
    if "batch" in body:
        batch = body["batch"]
        if not isinstance(batch, list) or not batch:
            raise _fail(1, "batch must be a non-empty list", "batch")
        calls = batch
    else:
        calls = [body]
    out = SegmentResult()
    seen: dict[str, Customer] = dict(known)
    for line, call in enumerate(calls, start=1):
        if not isinstance(call, Mapping):
            raise _fail(line, "each call must be an object", "batch")
        kind = call.get("type")
        if kind == "track":
            out.events.extend(_track(call, line))
        elif kind == "identify":
            customer = _identify(call, line, seen)
            seen[customer.id] = customer
            out.customers.append(customer)
        else:
            raise _fail(line, f"unsupported call type {kind!r}; accepted: track, identify", "type")
    return out
