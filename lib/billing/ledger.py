"""Applying verified Stripe events to Postgres: exactly once, order-independent, all or nothing.

Exactly once: the event id is recorded in `stripe_events` in the same transaction as its
effect, by an INSERT that the primary key arbitrates. A concurrent delivery of the same event
waits on that key (or on the row locks taken before it) and then rolls its own work back.

Order-independent: Stripe delivers events in any order and `created` has one-second
resolution. Per subscription we keep the newest full snapshot (customer.subscription.*) and
the newest invoice outcome, each with the event that carried it; an event older than what is
stored is `stale` and changes nothing. "Newer" compares, in order: terminal status (a canceled
subscription never comes back), event `created`, the subscription's `current_period_end`, its
lifecycle position (incomplete < trialing < active < past_due < unpaid < paused), and finally
the event id, so any two events compare the same way on every delivery. The organization's
plan is then recomputed from all of its subscriptions, so the final state depends only on the
set of events received, never on their order.
"""

from datetime import UTC, datetime

import psycopg

from lib import db
from lib.billing import STATUSES, events as ev
from lib.config import settings
from lib.observability import log

ENTITLED = ("trialing", "active", "past_due")
TERMINAL = ("canceled", "incomplete_expired")
DUPLICATE = "duplicate"
_LIFECYCLE = {"incomplete": 0, "trialing": 1, "active": 2, "past_due": 3, "unpaid": 4, "paused": 5,
              "incomplete_expired": 6, "canceled": 7}
_EPOCH = datetime.fromtimestamp(0, UTC)


def apply_event(event: ev.Event) -> str:
    """Apply `event` once and return its outcome: applied | stale | unmatched | ignored, or
    `duplicate` when it was recorded before (no second effect).

    Transactional: the effect and the `stripe_events` row commit together or not at all, so
    a failure (DatabaseUnavailable, a bug) leaves the event unrecorded for Stripe's retry.
    Raises InvalidEvent (400) for a payload that is not the shape its type promises.
    """
    detail = ev.details(event)  # parse before touching the database
    if db.fetchone(_RECORDED, (event.id,)):
        return DUPLICATE  # fast path only; the INSERT below is what guarantees once
    outcome, organization_id = db.run(lambda conn: _apply_once(conn, event, detail))
    fields = {"event_id": event.id, "type": event.type, "outcome": outcome,
              "organization_id": organization_id}
    if outcome == "unmatched":
        log("stripe_event_unmatched", level="warning", customer=getattr(detail, "customer", None),
            **fields)
    else:
        log("stripe_event", **fields)
    return outcome


_RECORDED = "SELECT 1 FROM stripe_events WHERE id = %s"

_RECORD = """
INSERT INTO stripe_events (id, type, created, outcome, organization_id)
VALUES (%(id)s, %(type)s, %(created)s, %(outcome)s, %(organization_id)s)
ON CONFLICT (id) DO NOTHING
RETURNING id
"""


class _OrganizationAppeared(Exception):
    """A concurrent checkout linked the subscription's organization after we looked for it."""


def _apply_once(conn: psycopg.Connection, event: ev.Event, detail) -> tuple[str, object]:
    for _ in range(3):
        try:
            return _apply_in_transaction(conn, event, detail)
        except _OrganizationAppeared:
            continue  # rolled back; the next attempt finds (and locks) the organization first
    raise RuntimeError("organization kept changing while applying a Stripe event")


def _apply_in_transaction(conn, event: ev.Event, detail) -> tuple[str, object]:
    with conn.transaction() as tx:
        if isinstance(detail, ev.Subscription):
            outcome, org = _apply_subscription(conn, event, detail)
        elif isinstance(detail, ev.Invoice):
            outcome, org = _apply_invoice(conn, event, detail)
        elif isinstance(detail, ev.Checkout):
            outcome, org = _apply_checkout(conn, event, detail)
        else:
            outcome, org = "ignored", None
        organization_id = org["id"] if org else None
        recorded = conn.execute(_RECORD, {"id": event.id, "type": event.type,
                                          "created": event.created, "outcome": outcome,
                                          "organization_id": organization_id}).fetchone()
        if recorded is None:  # a concurrent delivery of this event committed first
            raise psycopg.Rollback(tx)
        return outcome, organization_id
    return DUPLICATE, None


# The organization an event belongs to, locked so that two events of one organization
# recompute its plan one after the other. metadata.organization_id wins over the customer link.
_FIND_ORGANIZATION = """
SELECT id, stripe_customer_id, stripe_customer_linked_at
FROM organizations
WHERE external_id = %(ref)s OR stripe_customer_id = %(customer)s
   OR id = (SELECT organization_id FROM stripe_subscriptions WHERE id = %(subscription)s)
ORDER BY (external_id = %(ref)s) IS TRUE DESC, (stripe_customer_id = %(customer)s) IS TRUE DESC
LIMIT 1
FOR UPDATE
"""


def _find_organization(conn, ref: str | None, customer: str | None,
                       subscription: str | None) -> dict | None:
    return conn.execute(_FIND_ORGANIZATION, {"ref": ref, "customer": customer,
                                             "subscription": subscription}).fetchone()


# Creates the row on first sight and locks it either way; keeps an earlier organization
# when this event names none.
_LOCK_SUBSCRIPTION = """
INSERT INTO stripe_subscriptions (id, customer_id, organization_id)
VALUES (%(id)s, %(customer)s, %(organization_id)s)
ON CONFLICT (id) DO UPDATE
    SET organization_id = COALESCE(EXCLUDED.organization_id, stripe_subscriptions.organization_id)
RETURNING *
"""

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


def _lock_subscription(conn, subscription_id: str, customer: str, org: dict | None) -> dict:
    row = conn.execute(_LOCK_SUBSCRIPTION, {"id": subscription_id, "customer": customer,
                                            "organization_id": org["id"] if org else None}).fetchone()
    if org is None and row["organization_id"] is not None:
        # Locking the organization now would take the locks in the opposite order of every
        # other path (organization, then subscription) and could deadlock; start over instead.
        raise _OrganizationAppeared()
    return row


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


def _plan(price_id: str | None) -> str | None:
    for plan, prices in settings().stripe_prices.items():
        if price_id in prices:
            return plan
    return None


def _apply_subscription(conn, event: ev.Event, sub: ev.Subscription):
    if sub.status not in STATUSES:
        log("stripe_unknown_status", level="warning", event_id=event.id, status=sub.status[:40])
        return "ignored", None
    org = _find_organization(conn, sub.organization_ref, sub.customer, sub.id)
    row = _lock_subscription(conn, sub.id, sub.customer, org)
    incoming = _snapshot_order(sub.status, event.created, sub.current_period_end, event.id)
    stored = row["snapshot_event_id"] and _snapshot_order(
        row["snapshot_status"], row["snapshot_event_created"], row["snapshot_period_end"],
        row["snapshot_event_id"])
    outcome = "stale"
    if not stored or incoming > stored:
        plan = _plan(sub.price_id)
        if plan is None:
            log("stripe_unknown_price", level="warning", event_id=event.id, price_id=sub.price_id)
        row.update(created=sub.created, price_id=sub.price_id, plan=plan,
                   cancel_at_period_end=sub.cancel_at_period_end, snapshot_status=sub.status,
                   snapshot_period_end=sub.current_period_end, snapshot_event_id=event.id,
                   snapshot_event_created=event.created)
        _store_subscription(conn, row)
        outcome = "applied"
    if org and sub.organization_ref:
        _link_customer(conn, org, sub.customer, event.created, relink=False)
    return _settle(conn, org, outcome)


def _apply_invoice(conn, event: ev.Event, invoice: ev.Invoice):
    if invoice.subscription_id is None:
        return "ignored", None  # a one-off invoice: nothing to do with the plan
    org = _find_organization(conn, None, invoice.customer, invoice.subscription_id)
    row = _lock_subscription(conn, invoice.subscription_id, invoice.customer, org)
    outcome = "stale"
    if not row["invoice_event_id"] or \
            (event.created, event.id) > (row["invoice_event_created"], row["invoice_event_id"]):
        row.update(invoice_outcome=invoice.outcome, invoice_period_end=invoice.period_end,
                   invoice_event_id=event.id, invoice_event_created=event.created)
        _store_subscription(conn, row)
        outcome = "applied"
    return _settle(conn, org, outcome)


_ADOPT = """
UPDATE stripe_subscriptions SET organization_id = %(org)s, updated_at = now()
WHERE (customer_id = %(customer)s OR id = %(subscription)s)
  AND organization_id IS DISTINCT FROM %(org)s
"""


def _apply_checkout(conn, event: ev.Event, checkout: ev.Checkout):
    if checkout.mode != "subscription" or not checkout.customer:
        return "ignored", None  # one-time payments don't change a plan
    org = conn.execute("SELECT id, stripe_customer_id, stripe_customer_linked_at FROM organizations "
                       "WHERE external_id = %s FOR UPDATE", (checkout.organization_ref,)).fetchone()
    if org:
        _link_customer(conn, org, checkout.customer, event.created, relink=True)
        # Subscription events that arrived before this one were kept without an organization.
        conn.execute(_ADOPT, {"org": org["id"], "customer": checkout.customer,
                              "subscription": checkout.subscription_id})
    return _settle(conn, org, "applied")


# Links a customer to an organization. Never steals a customer linked to another
# organization; `relink` (a newer checkout) may replace the organization's own older link.
_LINK_CUSTOMER = """
UPDATE organizations
SET stripe_customer_id = %(customer)s,
    stripe_customer_linked_at = CASE WHEN stripe_customer_id = %(customer)s
        THEN GREATEST(stripe_customer_linked_at, %(at)s) ELSE %(at)s END,
    updated_at = now()
WHERE id = %(org)s
  AND (stripe_customer_id IS NULL OR stripe_customer_id = %(customer)s
       OR (%(relink)s AND stripe_customer_linked_at < %(at)s))
  AND NOT EXISTS (SELECT 1 FROM organizations other
                  WHERE other.stripe_customer_id = %(customer)s AND other.id <> %(org)s)
RETURNING id
"""


def _link_customer(conn, org: dict, customer: str, at: datetime, relink: bool) -> None:
    linked_at = org["stripe_customer_linked_at"]
    if org["stripe_customer_id"] == customer and linked_at and linked_at >= at:
        return
    if not conn.execute(_LINK_CUSTOMER, {"org": org["id"], "customer": customer, "at": at,
                                         "relink": relink}).fetchone() \
            and org["stripe_customer_id"] != customer:
        log("stripe_customer_not_linked", level="warning", organization_id=org["id"],
            customer=customer)


# The organization's billing columns as a function of all its subscriptions: the entitled
# one (trialing/active/past_due) if any, else the newest. Without an entitled subscription
# the plan is TRIAL; once any subscription got past `incomplete`, the free trial is over
# (ended no later than that subscription began), so /api/generate answers 402 until paying.
_RECOMPUTE_ORGANIZATION = """
WITH subscriptions AS (
    SELECT * FROM stripe_subscriptions WHERE organization_id = %(org)s AND status IS NOT NULL
), chosen AS (
    SELECT * FROM subscriptions
    ORDER BY status IN ('trialing', 'active', 'past_due') DESC, created DESC NULLS LAST, id DESC
    LIMIT 1
), began AS (
    SELECT min(created) AS at FROM subscriptions WHERE status <> 'incomplete'
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


def _settle(conn, org: dict | None, outcome: str):
    if org is None:
        return "unmatched", None
    conn.execute(_RECOMPUTE_ORGANIZATION, {"org": org["id"]})
    return outcome, org
