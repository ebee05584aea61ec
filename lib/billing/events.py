"""Stripe event payloads, parsed into plain values. Pure: no I/O, no stripe SDK.

Stripe changed some shapes across API versions (`current_period_end` moved from the
subscription to its items, an invoice's `subscription` moved under `parent`); both shapes are
read, so a webhook endpoint on either side of the change works.
"""

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from lib.errors import InvalidEvent, InvalidJson

SUBSCRIPTION_TYPES = ("customer.subscription.created", "customer.subscription.updated",
                      "customer.subscription.deleted", "customer.subscription.trial_will_end")
INVOICE_TYPES = {"invoice.paid": "paid", "invoice.payment_failed": "failed"}
CHECKOUT_TYPE = "checkout.session.completed"
HANDLED_TYPES = (CHECKOUT_TYPE, *SUBSCRIPTION_TYPES, *INVOICE_TYPES)


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    created: datetime
    object: dict
    unstorable: bool = False  # a string holds NUL or a lone surrogate: Postgres can't store it


@dataclass(frozen=True)
class Subscription:
    """The full state a customer.subscription.* event carries."""

    id: str
    customer: str
    organization_ref: str | None  # metadata.organization_id: the Clerk org (or user) id
    created: datetime | None
    status: str
    price_id: str | None
    current_period_end: datetime | None
    cancel_at_period_end: bool


@dataclass(frozen=True)
class Invoice:
    subscription_id: str | None
    customer: str
    outcome: str  # paid | failed
    period_end: datetime | None  # end of the service period the invoice pays for


@dataclass(frozen=True)
class Checkout:
    mode: str | None
    organization_ref: str | None  # metadata.organization_id: set by our checkout creation
    client_reference: str | None  # client_reference_id: the buyer can set it, never trusted
    customer: str | None
    subscription_id: str | None


def _timestamp(value) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**33:
        return None
    return datetime.fromtimestamp(value, UTC)


def _id(value) -> str | None:
    """A Stripe reference: the id string, or the expanded object's id."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and 0 < len(value) <= 255 else None


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _items(value) -> list[dict]:
    data = _dict(value).get("data")
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def parse_event(payload: str) -> Event:
    """The verified payload as an Event. Raises InvalidJson / InvalidEvent (400)."""
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        raise InvalidJson() from None
    if not isinstance(value, dict):
        raise InvalidJson("Request body must be a JSON object")
    event_id, event_type = _id(value.get("id")), value.get("type")
    created = _timestamp(value.get("created"))
    obj = _dict(value.get("data")).get("object")
    if not event_id or not isinstance(event_type, str) or not 0 < len(event_type) <= 255:
        raise InvalidEvent("A Stripe event needs a string `id` and `type`")
    if created is None:
        raise InvalidEvent("A Stripe event needs an integer `created`")
    if not isinstance(obj, dict):
        raise InvalidEvent("A Stripe event needs `data.object`")
    return Event(event_id, event_type, created, obj, unstorable=unstorable(value))


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable(value) -> bool:
    """Whether any key or string in `value` holds NUL or a lone surrogate (which Postgres
    text, and UTF-8, can't hold). Iterative: the payload may nest as deep as json allows."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _organization_ref(obj: dict) -> str | None:
    ref = _dict(obj.get("metadata")).get("organization_id")
    return ref if isinstance(ref, str) and 0 < len(ref) <= 255 else None


def subscription(event: Event) -> Subscription:
    obj = event.object
    sub_id, customer, status = _id(obj.get("id")), _id(obj.get("customer")), obj.get("status")
    if not sub_id or not customer:
        raise InvalidEvent("A subscription needs `id` and `customer`")
    if event.type == "customer.subscription.deleted":
        status = "canceled"  # a deleted subscription is over, whatever else the object says
    if not isinstance(status, str):
        raise InvalidEvent("A subscription needs a `status`")
    items = _items(obj.get("items"))
    ends = [_timestamp(item.get("current_period_end")) for item in items]
    ends.append(_timestamp(obj.get("current_period_end")))
    prices = [_id(item.get("price")) for item in items]
    return Subscription(
        id=sub_id, customer=customer, organization_ref=_organization_ref(obj),
        created=_timestamp(obj.get("created")), status=status,
        price_id=next((p for p in prices if p), None),
        current_period_end=max((end for end in ends if end), default=None),
        cancel_at_period_end=obj.get("cancel_at_period_end") is True)


def invoice(event: Event) -> Invoice:
    obj = event.object
    customer = _id(obj.get("customer"))
    if not customer:
        raise InvalidEvent("An invoice needs `customer`")
    details = _dict(_dict(obj.get("parent")).get("subscription_details"))
    sub_id = _id(details.get("subscription")) or _id(obj.get("subscription"))
    ends = [_timestamp(_dict(line.get("period")).get("end")) for line in _items(obj.get("lines"))]
    return Invoice(subscription_id=sub_id, customer=customer, outcome=INVOICE_TYPES[event.type],
                   period_end=max((end for end in ends if end), default=None))


def checkout(event: Event) -> Checkout:
    obj = event.object
    ref = obj.get("client_reference_id")
    mode = obj.get("mode")
    return Checkout(mode=mode if isinstance(mode, str) else None,
                    organization_ref=_organization_ref(obj),
                    client_reference=ref if isinstance(ref, str) and 0 < len(ref) <= 255 else None,
                    customer=_id(obj.get("customer")), subscription_id=_id(obj.get("subscription")))


def details(event: Event) -> Subscription | Invoice | Checkout | None:
    """What a handled event type carries; None for every other type. Raises InvalidEvent."""
    if event.type in SUBSCRIPTION_TYPES:
        return subscription(event)
    if event.type in INVOICE_TYPES:
        return invoice(event)
    if event.type == CHECKOUT_TYPE:
        return checkout(event)
    return None
