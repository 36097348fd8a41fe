"""Segment spec calls (one call, or a ``batch``) mapped to Tailor events and customers.

Segment has six call types: ``track``, ``identify``, ``page``, ``screen``, ``group`` and ``alias``. Tailor
uses ``identify`` (a profile) and the ``track`` events of the e-commerce spec in ``TRACK_EVENTS``. Every
other well-formed call is skipped and counted by reason (``page``, ``track:Product List Viewed``,
``anonymous:track``), because a CDP forwards its whole stream and one call Tailor has no use for must not
cost the batch. A malformed call (no user, a field of the wrong type, a known event with bad properties)
fails the whole batch with an error naming its position and field, before anything is returned to be
written: a batch is ingested whole or not at all.

Event ids derive from Segment's ``messageId``, so a redelivered call is stored once. A messageId names one
call: sent again for another user or another event, in the same batch or later, it is a conflict and the
batch is refused (``tailor.data.store``), never folded into the earlier call's customer. A call without
``timestamp`` or ``sentAt`` is dated when its body arrives, so only its redelivery within that body is the
same call; a sender that retries later must send a timestamp.

A product's ``price`` is a unit price in Segment and an event's ``value`` is what the line cost in Tailor
(as in the UCI import), so ``value`` is ``price`` times ``quantity``.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from tailor.core.errors import ConflictError, RecordError
from tailor.core.models import Customer, Event, EventKind
from tailor.core.sends import send_of_link

__all__ = ["CALL_TYPES", "TRACK_EVENTS", "SegmentResult", "from_segment", "is_segment"]

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

CALL_TYPES = ("track", "identify", "page", "screen", "group", "alias")

# A skip reason quotes the event name; a CDP's names are short, and a runaway one must not bloat answers.
_MAX_NAME = 100
# Far above any real order line, and far below what SQLite's INTEGER can hold.
_MAX_COUNT = 1_000_000_000


@dataclass
class SegmentResult:
    """What a body maps to. ``accepted``: calls that became events or customers; ``skipped``: well-formed
    calls Tailor does not use, counted by reason."""

    events: list[Event] = field(default_factory=list)
    customers: list[Customer] = field(default_factory=list)
    accepted: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def is_segment(body: Any) -> bool:
    return isinstance(body, Mapping) and ("type" in body or "batch" in body)


@dataclass(frozen=True)
class _At:
    """Where a call is: ``line`` its 1-based position, ``prefix`` its path in the body (``batch[3].``)."""

    line: int
    prefix: str = ""

    def fail(
        self,
        message: str,
        field_name: str | None = None,
        *,
        record: str | None = None,
        hint: str | None = None,
    ) -> RecordError:
        where = self.prefix + field_name if field_name else self.prefix.rstrip(".") or None
        return RecordError(
            message, source="segment", line=self.line, field=where, record_id=record, hint=hint
        )


def _id(call: Mapping[str, Any], name: str, at: _At) -> str | None:
    """An id field (userId, anonymousId, previousId, groupId): a string or an integer; blank is absent."""
    value = call.get(name)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise at.fail(f"{name} must be a string", name)
    return value.strip() or None


def _object(call: Mapping[str, Any], name: str, at: _At) -> Mapping[str, Any]:
    value = call.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise at.fail(f"{name} must be an object", name)
    return value


def _time_field(call: Mapping[str, Any]) -> str:
    return "timestamp" if call.get("timestamp") is not None else "sentAt"


def _timestamp(call: Mapping[str, Any], at: _At, received: datetime) -> datetime:
    name = _time_field(call)
    raw = call.get(name)
    if raw is None:
        return received
    if not isinstance(raw, str):
        raise at.fail(f"{name} must be an ISO 8601 string", name)
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise at.fail(f"not an ISO 8601 timestamp: {raw!r}", name) from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _number(value: Any, at: _At, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise at.fail("must be a number", where)
    if value < 0:
        raise at.fail(f"must not be negative (got {value})", where)
    return float(value)


def _count(value: Any, at: _At, where: str) -> int | None:
    if value is None:
        return None
    whole = isinstance(value, float) and value.is_integer()
    if isinstance(value, bool) or not (isinstance(value, int) or whole):
        raise at.fail("must be a whole number", where)
    if value < 0:
        raise at.fail(f"must not be negative (got {value})", where)
    if value > _MAX_COUNT:
        raise at.fail(f"must be at most {_MAX_COUNT:,} (got {value})", where)
    return int(value)


def _text(value: Any, at: _At, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise at.fail("must be a string", where)
    return value.strip() or None


def _event_id(message_id: str, n: int) -> str:
    return "seg_" + hashlib.blake2b(f"{message_id}|{n}".encode(), digest_size=10).hexdigest()


def _product(props: Any, at: _At, where: str) -> dict[str, Any]:
    """item_id, quantity and value (price × quantity) of a product object, each checked where it is."""
    if not isinstance(props, Mapping):
        raise at.fail("must be an object", where)
    key = "product_id" if props.get("product_id") is not None else "sku"
    pid = _text(props.get(key), at, f"{where}.{key}")
    if pid is None:
        raise at.fail("product_id is required", f"{where}.product_id")
    quantity = _count(props.get("quantity"), at, f"{where}.quantity")
    price = _number(props.get("price"), at, f"{where}.price")
    value = None if price is None else round(price * (1 if quantity is None else quantity), 2)
    if value is not None and not math.isfinite(value):
        raise at.fail("price times quantity is too large", f"{where}.price")
    return {"item_id": pid, "quantity": quantity, "value": value}


def _product_fields(where: str) -> dict[str, str]:
    return {"item_id": f"{where}.product_id", "quantity": f"{where}.quantity", "value": f"{where}.price"}


def _send_id(props: Mapping[str, Any], at: _At) -> tuple[str | None, str]:
    """The send an Email Opened or Email Link Clicked belongs to, and the field it came from:
    ``properties.send_id``, else the ``tailor_send`` parameter of the clicked link (``properties.link_url``),
    which Tailor's job results put on every product link."""
    given = _text(props.get("send_id"), at, "properties.send_id")
    if given:
        return given, "properties.send_id"
    link = _text(props.get("link_url"), at, "properties.link_url")
    found = send_of_link(link) if link else None
    return (found, "properties.link_url") if found else (None, "properties.send_id")


def _track(call: Mapping[str, Any], kind: EventKind, user: str, at: _At, received: datetime) -> list[Event]:
    name = str(call["event"])
    props = _object(call, "properties", at)
    base: dict[str, Any] = {"customer_id": user, "kind": kind, "timestamp": _timestamp(call, at, received)}
    # Where each Event field came from, so a validation error names the caller's field, not Tailor's;
    # "" is an error of the whole event (a model validator's).
    rows: list[tuple[dict[str, Any], dict[str, str]]]
    if kind in (EventKind.PURCHASE, EventKind.RETURN):
        products = props.get("products")
        if not isinstance(products, Sequence) or isinstance(products, str) or not products:
            raise at.fail(f"{name} needs properties.products (a non-empty list)", "properties.products")
        order = _text(props.get("order_id"), at, "properties.order_id")
        rows = []
        for n, p in enumerate(products):
            where = f"properties.products[{n}]"
            product = _product(p, at, where)
            if product["quantity"] is None:
                product["quantity"] = 1  # an order line without a quantity is one of the product
            rows.append(({**base, **product, "order_id": order}, _product_fields(where)))
    elif kind in (EventKind.VIEW, EventKind.ADD_TO_CART):
        rows = [({**base, **_product(props, at, "properties")}, _product_fields("properties"))]
    elif kind is EventKind.SUPPORT_TICKET:
        key = "text" if props.get("text") is not None else "subject"
        text = _text(props.get(key), at, f"properties.{key}")
        rows = [({**base, "text": text}, {"text": f"properties.{key}", "": "properties.text"})]
    else:
        item = _text(props.get("product_id"), at, "properties.product_id")
        send, where = _send_id(props, at)
        fields = {"item_id": "properties.product_id", "send_id": where}
        rows = [({**base, "item_id": item, "send_id": send}, fields)]
    message_id = _text(call.get("messageId"), at, "messageId") or ""
    events = []
    for n, (row, fields) in enumerate(rows):
        if message_id:
            row["id"] = _event_id(message_id, n)
        try:
            events.append(Event.model_validate(row))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            path = {"timestamp": _time_field(call), "customer_id": "userId", **fields}.get(loc) or loc or None
            raise at.fail(err["msg"], path, record=message_id or None) from exc
    return events


def _identify(call: Mapping[str, Any], user: str, at: _At, known: Mapping[str, Customer]) -> Customer:
    traits = _object(call, "traits", at)
    address = traits.get("address")
    if address is not None and not isinstance(address, Mapping):
        raise at.fail("traits.address must be an object", "traits.address")
    updates: dict[str, Any] = {}
    origin: dict[str, str] = {}
    first_key = "firstName" if traits.get("firstName") is not None else "first_name"
    sources = {
        "first_name": (traits.get(first_key), f"traits.{first_key}"),
        "email": (traits.get("email"), "traits.email"),
        "country": (traits.get("country"), "traits.country"),
        "locale": (traits.get("locale"), "traits.locale"),
        "timezone": (traits.get("timezone"), "traits.timezone"),
    }
    if sources["country"][0] is None and address:
        sources["country"] = (address.get("country"), "traits.address.country")
    for name, (value, where) in sources.items():
        origin[name] = where
        if value is not None and value != "":
            updates[name] = value
    # A consent object replaces the stored one whole: a flag it leaves out is off, which fails closed.
    consent = traits.get("consent")
    if consent is not None:
        if not isinstance(consent, Mapping):
            raise at.fail("traits.consent must be an object", "traits.consent")
        updates["consent"] = dict(consent)
    existing = known.get(user)
    try:
        if existing is not None:
            return Customer.model_validate({**existing.model_dump(), **updates})
        return Customer.model_validate({"id": user, **updates})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(x) for x in err["loc"]]
        head = loc[0] if loc else ""
        path = {**origin, "id": "userId"}.get(head) or (f"traits.{'.'.join(loc)}" if loc else None)
        hint = "a new customer needs traits firstName, email and country" if existing is None else None
        raise at.fail(err["msg"], path, record=user, hint=hint) from exc


def _skip_reason(kind: str, call: Mapping[str, Any], user: str | None) -> str | None:
    """Why a well-formed call is not used, or None when it is."""
    if kind not in ("track", "identify"):
        return kind
    if kind == "track" and call["event"] not in TRACK_EVENTS:
        return f"track:{str(call['event'])[:_MAX_NAME]}"
    # Tailor personalizes for known customers; a visitor's calls before they sign in have no one to update.
    return f"anonymous:{kind}" if user is None else None


def _envelope(call: Mapping[str, Any], at: _At) -> tuple[str, str | None]:
    """Check what the Segment spec requires of every call; its type and userId (None when anonymous)."""
    kind = call.get("type")
    if kind is None:
        raise at.fail("type is required", "type")
    if kind not in CALL_TYPES:
        raise at.fail(f"unsupported call type {kind!r}; Segment's are {', '.join(CALL_TYPES)}", "type")
    user = _id(call, "userId", at)
    anonymous = _id(call, "anonymousId", at)
    if kind == "alias":
        if user is None:
            raise at.fail("an alias call needs userId", "userId")
        if _id(call, "previousId", at) is None:
            raise at.fail("an alias call needs previousId", "previousId")
    elif user is None and anonymous is None:
        raise at.fail("userId or anonymousId is required", "userId")
    if kind == "group" and _id(call, "groupId", at) is None:
        raise at.fail("a group call needs groupId", "groupId")
    if kind == "track":
        name = call.get("event")
        if not isinstance(name, str) or not name.strip():
            raise at.fail("a track call needs an event name (a string)", "event")
    for name in ("properties", "traits"):
        _object(call, name, at)
    _text(call.get("messageId"), at, "messageId")
    _timestamp(call, at, datetime.now(UTC))
    return str(kind), user


def _check_reuse(event: Event, at: _At, message_id: str, first: dict[str, tuple[Event, _At]]) -> None:
    """Refuse a messageId that an earlier call of the batch used for another event, naming both calls (the
    store would refuse the batch too, but could name neither call)."""
    if event.id is None:
        return
    earlier, where = first.setdefault(event.id, (event, at))
    if where == at or earlier == event:
        return
    fields = [f for f in Event.model_fields if getattr(earlier, f) != getattr(event, f)]
    # Only the names of the fields: the earlier call may be another customer's.
    raise ConflictError(
        f"{at.prefix}messageId {message_id!r} was used by {where.prefix.rstrip('.')} for an event with a "
        f"different {', '.join(fields)}; nothing of the batch was written",
        hint="a messageId names one call: redeliver a call unchanged, or give another call its own",
    )


def from_segment(body: Mapping[str, Any], known: Mapping[str, Customer]) -> SegmentResult:
    """Map one Segment call or a ``batch`` to events and customers; ``known``: existing customers by id
    (an identify for one of them is a partial update). Errors carry the call's 1-based position as
    ``line`` and its path in the body (``batch[0].properties.products[1].quantity``) as ``field``."""
    calls: Sequence[Any]
    if "batch" in body:
        batch = body["batch"]
        if not isinstance(batch, list) or not batch:
            raise _At(1).fail("batch must be a non-empty list", "batch")
        calls, in_batch = batch, True
    else:
        calls, in_batch = [body], False
    out = SegmentResult()
    seen: dict[str, Customer] = dict(known)
    # One arrival time for the body: a call redelivered within it, without a timestamp, is the same call.
    received = datetime.now(UTC)
    first: dict[str, tuple[Event, _At]] = {}
    for n, call in enumerate(calls):
        at = _At(n + 1, f"batch[{n}]." if in_batch else "")
        if not isinstance(call, Mapping):
            raise at.fail("each call must be an object")
        kind, user = _envelope(call, at)
        reason = _skip_reason(kind, call, user)
        if reason is not None:
            out.skipped[reason] += 1
            continue
        assert user is not None  # a call with no userId has a skip reason
        if kind == "track":
            for event in _track(call, TRACK_EVENTS[str(call["event"])], user, at, received):
                _check_reuse(event, at, _text(call.get("messageId"), at, "messageId") or "", first)
                out.events.append(event)
        else:
            customer = _identify(call, user, at, seen)
            seen[customer.id] = customer
            out.customers.append(customer)
        out.accepted += 1
    return out
