"""Applying verified Stripe events to Postgres: exactly once, order-independent, all or nothing.

Exactly once: the event id is recorded in `stripe_events` in the same transaction as its
effect, by an INSERT that the primary key arbitrates. Every billing transaction first takes
one advisory lock, so a concurrent delivery of the same event waits, then finds its INSERT
taken and rolls its own work back.

Ownership (issue 11 §3): a subscription belongs to exactly one organization, decided at its
first authoritative link (our own `metadata.organization_id`, or its customer's link) and
never moved; a customer is linked to one organization (`stripe_customers`). An event whose
references disagree is recorded `conflict`, applied to nobody, logged and reported, and
counted by `conflicts_since` for the monitoring alert `billing_conflicts`.

Order-independent: Stripe delivers events in any order and `created` has one-second
resolution. Per subscription we keep the newest full snapshot (customer.subscription.*) and
the newest invoice outcome, each with the event that carried it; an event older than what is
stored is `stale` and changes nothing. "Newer" compares, in order: terminal status (a canceled
subscription never comes back), event `created`, the subscription's `current_period_end`, its
lifecycle position (incomplete < trialing < active < past_due < unpaid < paused), and finally
the event id, so any two events compare the same way on every delivery. The organization's
plan is then recomputed from all of its subscriptions, so the final state depends only on the
set of events received, never on their order. Every organization an event touches is
recomputed.
"""

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from lib import db
from lib.billing import STATUSES, events as ev
from lib.config import settings
from lib.observability import log, report

ENTITLED = ("trialing", "active", "past_due")
TERMINAL = ("canceled", "incomplete_expired")
NEVER_ACTIVE = ("incomplete", "incomplete_expired")  # such a subscription doesn't end the trial
DUPLICATE = "duplicate"
CONFLICT = "conflict"
REJECTED = "rejected"
_LIFECYCLE = {"incomplete": 0, "trialing": 1, "active": 2, "past_due": 3, "unpaid": 4, "paused": 5,
              "incomplete_expired": 6, "canceled": 7}
_EPOCH = datetime.fromtimestamp(0, UTC)


def apply_event(event: ev.Event, *, dry_run: bool = False) -> str:
    """Apply `event` once and return its outcome: applied | stale | unmatched | ignored |
    conflict | rejected, or `duplicate` when it was recorded before (no second effect).

    Transactional: the effect and the `stripe_events` row commit together or not at all, so
    a failure (DatabaseUnavailable, a bug) leaves the event unrecorded for Stripe's retry.
    Raises InvalidEvent (400) for a payload that is not the shape its type promises.
    A `conflict` (the event names an organization other than the one its subscription or
    customer belongs to) and a `rejected` event (strings Postgres can never store) change
    nothing but their own record, and are logged and reported to Sentry. With `dry_run`, the
    outcome is computed in a transaction that is rolled back: nothing changes, nothing is
    reported.
    """
    if event.unstorable:
        return REJECTED if dry_run else _reject(event)
    detail = ev.details(event)  # parse before touching the database
    if db.fetchone(_RECORDED, (event.id,)):
        return DUPLICATE  # fast path only; the INSERT below is what guarantees once
    result = db.run(lambda conn: _apply_in_transaction(conn, event, detail, dry_run))
    if dry_run:
        return result.outcome
    fields = {"event_id": event.id, "type": event.type, "outcome": result.outcome,
              "organization_id": result.organization_id}
    if result.outcome == CONFLICT:
        log("stripe_event_conflict", level="warning", customer=getattr(detail, "customer", None),
            organizations=sorted(result.named), **fields)
        report(BillingConflict(f"{event.type} names organizations {sorted(result.named)}"),
               event_id=event.id, event_type=event.type)
    elif result.outcome == "unmatched":
        log("stripe_event_unmatched", level="warning", customer=getattr(detail, "customer", None),
            **fields)
    else:
        log("stripe_event", **fields)
    return result.outcome


class BillingConflict(Exception):
    """A Stripe event naming an organization that conflicts with an existing link (reported)."""


class UnstorableEvent(Exception):
    """A correctly signed Stripe event whose strings Postgres can't store (reported)."""


def _storable(text: str) -> str:
    """`text` with NUL and lone surrogates escaped (JSON-style), at most 255 characters."""
    return json.dumps(text)[1:-1][:255]


def _reject(event: ev.Event) -> str:
    recorded = db.fetchone(_RECORD, {"id": _storable(event.id), "type": _storable(event.type),
                                     "created": event.created, "outcome": REJECTED,
                                     "organization_id": None})
    if recorded is None:
        return DUPLICATE
    log("stripe_event_rejected", level="warning", event_id=_storable(event.id),
        type=_storable(event.type), reason="NUL or lone surrogate in a string")
    report(UnstorableEvent("signed Stripe event with NUL or lone surrogates in its strings"),
           event_type=_storable(event.type)[:64])
    return REJECTED


def conflicts_since(since: datetime) -> int:
    """How many events were recorded as `conflict` since `since` (monitoring's alert)."""
    return db.fetchone("SELECT count(*) AS n FROM stripe_events "
                       "WHERE outcome = 'conflict' AND processed_at >= %s", (since,))["n"]


_RECORDED = "SELECT 1 FROM stripe_events WHERE id = %s"

_RECORD = """
INSERT INTO stripe_events (id, type, created, outcome, organization_id)
VALUES (%(id)s, %(type)s, %(created)s, %(outcome)s, %(organization_id)s)
ON CONFLICT (id) DO NOTHING
RETURNING id
"""

# One key for every billing transaction: events are applied one at a time (a few per second
# at most), so links are decided against a state nobody else is changing, and no lock order
# between organizations, customers and subscriptions can deadlock.
_LOCK = "SELECT pg_advisory_xact_lock(%s)"
_LOCK_KEY = 0x73747269706500  # "stripe"


@dataclass
class _Result:
    outcome: str
    organization_id: object = None
    touched: set = field(default_factory=set)  # organizations to recompute
    named: set = field(default_factory=set)  # organizations (or unknown refs) in a conflict


def _apply_in_transaction(conn, event: ev.Event, detail, dry_run: bool = False) -> _Result:
    rolled_back = None
    with conn.transaction() as tx:
        conn.execute(_LOCK, (_LOCK_KEY,))
        if isinstance(detail, ev.Subscription):
            result = _apply_subscription(conn, event, detail)
        elif isinstance(detail, ev.Invoice):
            result = _apply_invoice(conn, event, detail)
        elif isinstance(detail, ev.Checkout):
            result = _apply_checkout(conn, event, detail)
        else:
            result = _Result("ignored")
        for organization_id in sorted(result.touched, key=str):
            conn.execute(_RECOMPUTE_ORGANIZATION, {"org": organization_id})
        recorded = conn.execute(_RECORD, {"id": event.id, "type": event.type,
                                          "created": event.created, "outcome": result.outcome,
                                          "organization_id": result.organization_id}).fetchone()
        if recorded is None:  # a concurrent delivery of this event committed first
            raise psycopg.Rollback(tx)
        if not dry_run:
            return result
        rolled_back = result
        raise psycopg.Rollback(tx)
    return rolled_back or _Result(DUPLICATE)


# --- who an event belongs to ---------------------------------------------------------------
#
# Authoritative links are the ones our own code sets, never a value the buyer controls:
# `metadata.organization_id` on the checkout session and on the subscription (set when we
# create the checkout). `client_reference_id` can be set by anyone holding a payment link, so
# it links nothing. A subscription's organization is decided at its first authoritative link
# (or, lacking one, by its customer's link) and never changes; a customer is linked to one
# organization. An event whose references disagree is a `conflict`.

def _org_by_ref(conn, ref: str | None):
    row = ref and conn.execute("SELECT id FROM organizations WHERE external_id = %s", (ref,)).fetchone()
    return row["id"] if row else None


# stripe_customers, or the organization row itself (rows written before migration 0007's
# backfill, or by tools that set organizations.stripe_customer_id directly).
_CUSTOMER_ORG = """
SELECT organization_id FROM stripe_customers WHERE id = %(c)s
UNION ALL
SELECT id FROM organizations WHERE stripe_customer_id = %(c)s
LIMIT 1
"""


def _org_by_customer(conn, customer: str | None):
    row = customer and conn.execute(_CUSTOMER_ORG, {"c": customer}).fetchone()
    return row["organization_id"] if row else None


def _subscription_row(conn, subscription_id: str | None) -> dict | None:
    if not subscription_id:
        return None
    return conn.execute("SELECT * FROM stripe_subscriptions WHERE id = %s FOR UPDATE",
                        (subscription_id,)).fetchone()


def _resolve(conn, *, ref: str | None, customer: str | None, row: dict | None):
    """(organization id or None, the conflicting names or an empty set)."""
    named = set()
    if ref is not None:
        named.add(_org_by_ref(conn, ref) or f"unknown:{ref[:64]}")
    for found in (_org_by_customer(conn, customer), row and row["organization_id"]):
        if found:
            named.add(found)
    if len(named) > 1:
        return None, {str(name) for name in named}
    organization = next(iter(named), None)
    if isinstance(organization, str) and organization.startswith("unknown:"):
        organization = None  # metadata naming no organization we know: unmatched, kept
    return organization, set()


_LOCK_SUBSCRIPTION = """
INSERT INTO stripe_subscriptions (id, customer_id, organization_id)
VALUES (%(id)s, %(customer)s, %(organization_id)s)
ON CONFLICT (id) DO UPDATE
    SET organization_id = COALESCE(stripe_subscriptions.organization_id, EXCLUDED.organization_id)
RETURNING *
"""


def _lock_subscription(conn, subscription_id: str, customer: str, organization_id) -> dict:
    """The subscription's row, created on first sight; bound to `organization_id` when it
    has no organization yet (an existing binding is never replaced)."""
    return conn.execute(_LOCK_SUBSCRIPTION, {"id": subscription_id, "customer": customer,
                                             "organization_id": organization_id}).fetchone()


_EVER_ACTIVE = "UPDATE stripe_subscriptions SET ever_active = true WHERE id = %s"

_STORE_SUBSCRIPTION = """
UPDATE stripe_subscriptions
SET created = %(created)s, price_id = %(price_id)s, plan = %(plan)s, status = %(status)s,
    current_period_end = %(current_period_end)s, cancel_at_period_end = %(cancel_at_period_end)s,
    snapshot_status = %(snapshot_status)s, snapshot_period_end = %(snapshot_period_end)s,
    snapshot_event_id = %(snapshot_event_id)s, snapshot_event_created = %(snapshot_event_created)s,
    invoice_outcome = %(invoice_outcome)s, invoice_period_end = %(invoice_period_end)s,
    invoice_event_id = %(invoice_event_id)s, invoice_event_created = %(invoice_event_created)s,
    updated_at = now()
WHERE id = %(id)s
"""


def _store_subscription(conn, row: dict) -> None:
    row["status"], row["current_period_end"] = _effective_state(row)
    conn.execute(_STORE_SUBSCRIPTION, row)


def _effective_state(row: dict) -> tuple[str | None, datetime | None]:
    """The snapshot, with an invoice outcome folded in when it is strictly newer: paying
    again ends past_due/unpaid/incomplete, a failed payment makes an active one past_due."""
    status, period_end = row["snapshot_status"], row["snapshot_period_end"]
    invoiced = row["invoice_event_created"]
    if status is None or invoiced is None or invoiced <= row["snapshot_event_created"]:
        return status, period_end
    if row["invoice_outcome"] == "paid":
        if status in ("past_due", "unpaid", "incomplete"):
            status = "active"
        if status in ENTITLED and row["invoice_period_end"]:
            period_end = max(period_end or _EPOCH, row["invoice_period_end"])
    elif status == "active":
        status = "past_due"
    return status, period_end


def _snapshot_order(status: str, created: datetime, period_end: datetime | None, event_id: str):
    return (status in TERMINAL, created, period_end or _EPOCH, _LIFECYCLE[status], event_id)


def plan_of(price_id: str | None) -> str | None:
    for plan, prices in settings().stripe_prices.items():
        if price_id in prices:
            return plan
    return None


def _apply_subscription(conn, event: ev.Event, sub: ev.Subscription) -> _Result:
    if sub.status not in STATUSES:
        log("stripe_unknown_status", level="warning", event_id=event.id, status=sub.status[:40])
        return _Result("ignored")
    row = _subscription_row(conn, sub.id)
    org, named = _resolve(conn, ref=sub.organization_ref, customer=sub.customer, row=row)
    if named:
        return _Result(CONFLICT, named=named)
    row = _lock_subscription(conn, sub.id, sub.customer, org)
    if sub.status not in NEVER_ACTIVE and not row["ever_active"]:
        conn.execute(_EVER_ACTIVE, (sub.id,))
    incoming = _snapshot_order(sub.status, event.created, sub.current_period_end, event.id)
    stored = row["snapshot_event_id"] and _snapshot_order(
        row["snapshot_status"], row["snapshot_event_created"], row["snapshot_period_end"],
        row["snapshot_event_id"])
    outcome = "stale"
    if not stored or incoming > stored:
        plan = plan_of(sub.price_id)
        if plan is None:
            log("stripe_unknown_price", level="warning", event_id=event.id, price_id=sub.price_id)
        row.update(created=sub.created, price_id=sub.price_id, plan=plan,
                   cancel_at_period_end=sub.cancel_at_period_end, snapshot_status=sub.status,
                   snapshot_period_end=sub.current_period_end, snapshot_event_id=event.id,
                   snapshot_event_created=event.created)
        _store_subscription(conn, row)
        outcome = "applied"
    if org and sub.organization_ref:
        _link_customer(conn, org, sub.customer, event)
    return _settled(org, outcome)


def _apply_invoice(conn, event: ev.Event, invoice: ev.Invoice) -> _Result:
    if invoice.subscription_id is None:
        return _Result("ignored")  # a one-off invoice: nothing to do with the plan
    row = _subscription_row(conn, invoice.subscription_id)
    org, named = _resolve(conn, ref=None, customer=invoice.customer, row=row)
    if named:
        return _Result(CONFLICT, named=named)
    row = _lock_subscription(conn, invoice.subscription_id, invoice.customer, org)
    outcome = "stale"
    if not row["invoice_event_id"] or \
            (event.created, event.id) > (row["invoice_event_created"], row["invoice_event_id"]):
        row.update(invoice_outcome=invoice.outcome, invoice_period_end=invoice.period_end,
                   invoice_event_id=event.id, invoice_event_created=event.created)
        _store_subscription(conn, row)
        outcome = "applied"
    return _settled(org, outcome)


def _apply_checkout(conn, event: ev.Event, checkout: ev.Checkout) -> _Result:
    if checkout.mode != "subscription" or not checkout.customer:
        return _Result("ignored")  # one-time payments don't change a plan
    if checkout.client_reference and checkout.client_reference != checkout.organization_ref:
        log("stripe_client_reference_ignored", level="warning", event_id=event.id,
            has_metadata=checkout.organization_ref is not None)
    if checkout.organization_ref is None:
        return _Result("unmatched")  # client_reference_id alone is the buyer's word: links nothing
    row = _subscription_row(conn, checkout.subscription_id)
    org, named = _resolve(conn, ref=checkout.organization_ref, customer=checkout.customer, row=row)
    if named:
        return _Result(CONFLICT, named=named)
    if org is None:
        return _Result("unmatched")
    _link_customer(conn, org, checkout.customer, event)
    if checkout.subscription_id:
        _lock_subscription(conn, checkout.subscription_id, checkout.customer, org)
    return _settled(org, "applied")


# Subscription events that arrived before their customer was linked were kept without an
# organization: the link adopts them (only unbound ones; a binding never moves).
_ADOPT = """
UPDATE stripe_subscriptions SET organization_id = %(org)s, updated_at = now()
WHERE customer_id = %(customer)s AND organization_id IS NULL
"""
# linked_at is the earliest linking event's time, so it doesn't depend on delivery order.
_LINK_CUSTOMER = """
INSERT INTO stripe_customers AS c (id, organization_id, linked_at, linked_by_event)
VALUES (%(customer)s, %(org)s, %(at)s, %(event)s)
ON CONFLICT (id) DO UPDATE SET linked_at = LEAST(c.linked_at, EXCLUDED.linked_at),
    linked_by_event = CASE WHEN EXCLUDED.linked_at < c.linked_at THEN EXCLUDED.linked_by_event
                           ELSE c.linked_by_event END
WHERE c.organization_id = EXCLUDED.organization_id
"""
# The organization's first customer is also on the organization row (UNIQUE there too).
_FIRST_CUSTOMER = """
UPDATE organizations
SET stripe_customer_id = %(customer)s,
    stripe_customer_linked_at = LEAST(CASE WHEN stripe_customer_id = %(customer)s
                                           THEN stripe_customer_linked_at END, %(at)s),
    updated_at = now()
WHERE id = %(org)s AND (stripe_customer_id IS NULL OR stripe_customer_id = %(customer)s)
  AND NOT EXISTS (SELECT 1 FROM organizations
                  WHERE stripe_customer_id = %(customer)s AND id <> %(org)s)
"""


def _link_customer(conn, org, customer: str, event: ev.Event) -> None:
    """Link `customer` to `org` (the caller has checked it is linked to no other one)."""
    params = {"org": org, "customer": customer, "at": event.created, "event": event.id}
    conn.execute(_LINK_CUSTOMER, params)
    conn.execute(_FIRST_CUSTOMER, params)
    conn.execute(_ADOPT, params)


def _settled(org, outcome: str) -> _Result:
    if org is None:
        return _Result("unmatched")
    return _Result(outcome, organization_id=org, touched={org})


# The organization's billing columns as a function of all its subscriptions: the entitled
# one (trialing/active/past_due) if any, else the newest. Without an entitled subscription
# the plan is TRIAL; once any subscription became active (got past `incomplete` rather than
# expiring there), the free trial is over
# (ended no later than that subscription began), so /api/generate answers 402 until paying.
_RECOMPUTE_ORGANIZATION = """
WITH subscriptions AS (
    SELECT * FROM stripe_subscriptions WHERE organization_id = %(org)s AND status IS NOT NULL
), chosen AS (
    SELECT * FROM subscriptions
    ORDER BY status IN ('trialing', 'active', 'past_due') DESC, created DESC NULLS LAST, id DESC
    LIMIT 1
), began AS (
    SELECT min(created) AS at FROM subscriptions WHERE ever_active
)
UPDATE organizations o
SET plan = CASE WHEN c.status IN ('trialing', 'active', 'past_due') THEN COALESCE(c.plan, 'TRIAL')
                ELSE 'TRIAL' END,
    trial_ends_at = CASE WHEN b.at IS NULL THEN o.trial_ends_at
                         ELSE LEAST(o.trial_ends_at, b.at) END,
    stripe_subscription_id = c.id,
    subscription_status = c.status,
    current_period_end = c.current_period_end,
    cancel_at_period_end = c.cancel_at_period_end,
    updated_at = now()
FROM chosen c, began b
WHERE o.id = %(org)s
"""
