"""`python -m ops stripe-trigger TYPE`: send a correctly signed sample Stripe event to a
webhook URL, local or deployed (this project's `stripe trigger`).

The payloads are shaped like the ones Stripe sends for API_VERSION (the version the pinned
stripe SDK speaks). Signing uses Stripe's scheme: `Stripe-Signature: t=<unix>,v1=<hex
HMAC-SHA256 of "<t>.<body>" keyed with the endpoint secret>`.
"""

import argparse
import json
import secrets
import sys
import time

import httpx

from lib.billing import events
from lib.config import settings

API_VERSION = "2026-10-28.endive"  # the one place the sample payloads' API version is pinned
MONTH_S = 30 * 24 * 3600
TYPES = (*events.HANDLED_TYPES, "test.unknown_event")
DEFAULT_STATUS = {"customer.subscription.deleted": "canceled",
                  "customer.subscription.trial_will_end": "trialing"}


def _id(prefix: str) -> str:
    return f"{prefix}_test_{secrets.token_hex(12)}"


def subscription_object(*, subscription: str, customer: str, org: str | None, price: str,
                        status: str, created: int, period_end: int,
                        cancel_at_period_end: bool = False, ended_at: int | None = None) -> dict:
    """A `subscription` object as API_VERSION renders it (period fields live on the items)."""
    ended = (ended_at or created) if status in ("canceled", "incomplete_expired") else None
    return {
        "id": subscription, "object": "subscription", "customer": customer, "status": status,
        "created": created, "start_date": created, "livemode": False, "currency": "usd",
        "cancel_at_period_end": cancel_at_period_end, "cancel_at": None,
        "canceled_at": ended, "ended_at": ended, "collection_method": "charge_automatically",
        "metadata": {"organization_id": org} if org else {},
        "trial_start": None, "trial_end": period_end if status == "trialing" else None,
        "latest_invoice": _id("in"),
        "items": {"object": "list", "has_more": False, "total_count": 1,
                  "url": f"/v1/subscription_items?subscription={subscription}", "data": [{
                      "id": _id("si"), "object": "subscription_item", "quantity": 1,
                      "subscription": subscription, "created": created,
                      "current_period_start": period_end - MONTH_S,
                      "current_period_end": period_end,
                      "price": {"id": price, "object": "price", "active": True,
                                "currency": "usd", "unit_amount": 4900, "type": "recurring",
                                "recurring": {"interval": "month", "interval_count": 1},
                                "product": "prod_test_ascendos"}}]},
    }


def invoice_object(*, subscription: str, customer: str, price: str, paid: bool,
                   period_end: int) -> dict:
    """An `invoice` object as API_VERSION renders it (the subscription lives under `parent`)."""
    return {
        "id": _id("in"), "object": "invoice", "customer": customer, "livemode": False,
        "status": "paid" if paid else "open", "billing_reason": "subscription_cycle",
        "currency": "usd", "amount_due": 4900, "amount_paid": 4900 if paid else 0,
        "attempt_count": 1, "attempted": True,
        "parent": {"type": "subscription_details", "quote_details": None,
                   "subscription_details": {"subscription": subscription, "metadata": {}}},
        "lines": {"object": "list", "has_more": False, "total_count": 1, "data": [{
            "id": _id("il"), "object": "line_item", "amount": 4900, "currency": "usd",
            "period": {"start": period_end - MONTH_S, "end": period_end},
            "pricing": {"type": "price_details",
                        "price_details": {"price": price, "product": "prod_test_ascendos"}},
            "quantity": 1}]},
        "period_start": period_end - 2 * MONTH_S, "period_end": period_end - MONTH_S,
    }


def checkout_object(*, customer: str, subscription: str, org: str | None) -> dict:
    return {
        "id": _id("cs"), "object": "checkout.session", "mode": "subscription",
        "status": "complete", "payment_status": "paid", "livemode": False,
        "client_reference_id": org, "customer": customer, "subscription": subscription,
        "metadata": {"organization_id": org} if org else {}, "currency": "usd",
        "amount_total": 4900, "success_url": "https://example.invalid/billing?success=1",
    }


def sample_event(event_type: str, *, org: str | None = None, customer: str | None = None,
                 subscription: str | None = None, price: str = "price_test_team",
                 status: str | None = None, created: int | None = None,
                 period_end: int | None = None, event_id: str | None = None,
                 subscription_created: int | None = None) -> dict:
    """A complete Stripe `event` of `event_type` (any string; unknown types get a bare object).
    `created` is the event's time; the subscription began at `subscription_created` (default:
    the same)."""
    created = int(time.time()) if created is None else created
    customer, subscription = customer or _id("cus"), subscription or _id("sub")
    period_end = period_end or created + MONTH_S
    if event_type == events.CHECKOUT_TYPE:
        obj = checkout_object(customer=customer, subscription=subscription, org=org)
    elif event_type in events.SUBSCRIPTION_TYPES:
        obj = subscription_object(subscription=subscription, customer=customer, org=org,
                                  price=price, created=subscription_created or created,
                                  period_end=period_end, ended_at=created,
                                  status=status or DEFAULT_STATUS.get(event_type, "active"))
    elif event_type in events.INVOICE_TYPES:
        obj = invoice_object(subscription=subscription, customer=customer, price=price,
                             paid=events.INVOICE_TYPES[event_type] == "paid", period_end=period_end)
    else:
        obj = {"id": _id("obj"), "object": "unknown"}
    return {"id": event_id or _id("evt"), "object": "event", "api_version": API_VERSION,
            "created": created, "livemode": False, "pending_webhooks": 1, "type": event_type,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": obj, "previous_attributes": {}}}


# How a subscription's life may end (event type, the status it leaves).
ENDINGS = (("customer.subscription.deleted", "canceled"), ("customer.subscription.updated", "unpaid"),
           ("customer.subscription.updated", "active"), ("customer.subscription.updated", "past_due"),
           ("customer.subscription.updated", "incomplete_expired"))


def subscription_lifecycle(rng, start: int, price: str, other_price: str,
                           checkout: bool = True) -> list[tuple[str, str | None, dict]]:
    """One subscription's life as Stripe sends it, one to three seconds apart from `start`:
    our checkout (when `checkout`), created `incomplete`, active, paid, a failed payment,
    past_due, paid again, a price change (to `other_price`, or not), a renewal notice or an
    update, then one of ENDINGS. Each step is (event type, the subscription status it leaves
    or None for a non-subscription event, sample_event's `created`, `period_end` and `price`).
    `rng` (a random.Random) makes it reproducible."""
    period, renewed = start + MONTH_S, start + 2 * MONTH_S
    plan: list[tuple[str, str | None, int, str]] = [
        *([(events.CHECKOUT_TYPE, None, period, price)] if checkout else []),
        ("customer.subscription.created", "incomplete", period, price),
        ("customer.subscription.updated", "active", period, price),
        ("invoice.paid", None, period, price),
        ("invoice.payment_failed", None, renewed, price),
        ("customer.subscription.updated", "past_due", period, price),
        ("invoice.paid", None, renewed, price)]
    price = rng.choice([price, other_price])
    plan.append(("customer.subscription.updated", "active", renewed, price))
    plan.append(("customer.subscription.trial_will_end" if rng.random() < 0.3 else
                 "customer.subscription.updated", "active", renewed, price))
    plan.append((*rng.choice(ENDINGS), renewed, price))
    steps, t = [], start
    for event_type, status, period_end, step_price in plan:
        steps.append((event_type, status, {"created": t, "period_end": period_end,
                                           "price": step_price}))
        t += rng.randint(1, 3)
    return steps


def signature_header(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    import stripe  # only the operator command signs; keep the SDK out of plain `ops` imports

    return stripe.WebhookSignature.generate_signature_header(payload.decode(), secret, timestamp)


def send(url: str, event: dict, secret: str, timeout_s: float = 30) -> httpx.Response:
    """POST `event` to `url`, signed with `secret`, the way Stripe delivers it."""
    payload = json.dumps(event, indent=2).encode()  # Stripe sends pretty-printed JSON
    return httpx.post(url, content=payload, timeout=timeout_s, headers={
        "Content-Type": "application/json; charset=utf-8", "User-Agent": "Stripe/1.0",
        "Stripe-Signature": signature_header(payload, secret)})


def cmd_stripe_trigger(args: argparse.Namespace) -> int:
    config = settings()
    team_prices = config.stripe_prices["TEAM"]
    event = sample_event(args.type, org=args.org, customer=args.customer,
                         subscription=args.subscription, status=args.status,
                         price=args.price or (team_prices[0] if team_prices else "price_test_team"))
    if args.print:
        print(json.dumps(event, indent=2))
        return 0
    secret = args.secret or (config.stripe_webhook_secrets or (None,))[0]
    if not secret:
        print("error: no secret: pass --secret or set STRIPE_WEBHOOK_SECRET", file=sys.stderr)
        return 2
    url = args.url or f"{config.app_url}/api/webhooks/stripe"
    response = send(url, event, secret)
    print(f"{event['type']} {event['id']} -> {url}")
    print(f"{response.status_code} {response.text}")
    return 0 if response.is_success else 1


def register(commands) -> None:
    """Register `stripe-trigger` on the CLI's subparsers."""
    p = commands.add_parser("stripe-trigger", help="send a signed sample Stripe event",
                            description=__doc__.split("\n\n")[0])
    p.add_argument("type", choices=TYPES)
    p.add_argument("--url", help="webhook URL (default: $APP_URL/api/webhooks/stripe)")
    p.add_argument("--secret", help="signing secret (default: first of STRIPE_WEBHOOK_SECRET)")
    p.add_argument("--org", help="organization external id (Clerk org or user id) to link")
    p.add_argument("--customer", help="Stripe customer id (default: a new cus_test_...)")
    p.add_argument("--subscription", help="Stripe subscription id (default: a new sub_test_...)")
    p.add_argument("--price", help="price id (default: first of STRIPE_PRICE_TEAM)")
    p.add_argument("--status", help="subscription status for customer.subscription.* events")
    p.add_argument("--print", action="store_true", help="print the event instead of sending it")
    p.set_defaults(run=cmd_stripe_trigger)
