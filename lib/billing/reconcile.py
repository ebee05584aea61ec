"""Reconciliation with the Stripe API (issue 11 §4): repair what missed webhooks left wrong.

Stripe stops retrying a delivery after three days, so a lost `customer.subscription.updated`
would leave an organization on the wrong plan forever. Once a day (cron `reconcile-billing`,
or `python -m ops stripe-reconcile`) every subscription is listed from the Stripe API with
the stripe SDK and compared with `stripe_subscriptions`. A subscription that differs (or that
we never heard of) is repaired through the ledger, exactly as if its webhook had arrived: a
`customer.subscription.updated` event carrying the listed object, stamped now (the API's
state is the newest there is), with the id `reconcile_<subscription>_<unix time>_<random>`. The same
ownership rules hold, so a drift that names a conflicting organization is a `conflict`.

STRIPE_SECRET_KEY authenticates; STRIPE_API_BASE (tests, local) points the SDK at a local
server speaking the Stripe API. The SDK is imported only when a run starts (~340 ms).
"""

import uuid
from datetime import UTC, datetime
from typing import Any

from lib import db
from lib.billing import events as ev, ledger
from lib.config import per_settings
from lib.errors import ConfigError, InvalidEvent, ServiceUnavailable
from lib.jobs import RECONCILE_BILLING, cron
from lib.observability import log

JOB = RECONCILE_BILLING
PAGE_SIZE = 100
EVENT_TYPE = "customer.subscription.updated"


@per_settings
def _client(cfg):
    if not cfg.stripe_secret_key:
        raise ConfigError("STRIPE_SECRET_KEY is not set; billing can't be reconciled")
    import stripe

    bases = {"api": cfg.stripe_api_base.rstrip("/")} if cfg.stripe_api_base else None
    return stripe.StripeClient(cfg.stripe_secret_key, base_addresses=bases, max_network_retries=2)


def _subscriptions():
    """Every subscription Stripe has (any status), page by page as the SDK lists them."""
    import stripe

    try:
        page = _client().v1.subscriptions.list(params={"status": "all", "limit": PAGE_SIZE})
        for item in page.auto_paging_iter():
            yield item.to_dict()
    except stripe.StripeError as exc:
        raise ServiceUnavailable(f"The Stripe API could not be listed ({type(exc).__name__})") from exc


_STORED = """
SELECT s.status, s.plan, s.current_period_end, s.cancel_at_period_end, o.external_id
FROM stripe_subscriptions s LEFT JOIN organizations o ON o.id = s.organization_id
WHERE s.id = %s
"""


def _drifted(sub: ev.Subscription, stored: dict | None) -> bool:
    """Whether our row says something other than what Stripe lists for `sub`."""
    if stored is None or stored["status"] is None:
        return True
    if sub.organization_ref and sub.organization_ref != stored["external_id"]:
        return True  # unbound, or bound elsewhere (which the ledger calls a conflict)
    return ((stored["status"], stored["plan"], stored["current_period_end"],
             stored["cancel_at_period_end"])
            != (sub.status, ledger.plan_of(sub.price_id), sub.current_period_end,
                sub.cancel_at_period_end))


def reconcile(budget: cron.Budget, *, dry_run: bool = False, now: datetime | None = None) -> dict:
    """Compare every listed subscription with the ledger and repair the drifted ones (see
    the module docstring) while `budget` lasts. With `dry_run`, every repair is computed and
    rolled back: nothing changes. Returns {"dry_run", "checked", "repaired", "conflicts",
    "unmatched", "complete"}; `repaired` counts subscriptions whose repair was applied (or,
    in a dry run, would be)."""
    now = now or datetime.now(UTC)
    stamp = int(now.timestamp())
    counts = {"checked": 0, "repaired": 0, "conflicts": 0, "unmatched": 0}
    complete = True
    for obj in _subscriptions():
        if not budget.keep_going():
            complete = False
            break
        counts["checked"] += 1
        outcome = _repair(obj, stamp, now, dry_run)
        if outcome == "applied":
            counts["repaired"] += 1
        elif outcome == ledger.CONFLICT:
            counts["conflicts"] += 1
        elif outcome == "unmatched":
            counts["unmatched"] += 1
    return {"dry_run": dry_run, **counts, "complete": complete}  # run_exclusively logs it


def _repair(obj: dict[str, Any], stamp: int, now: datetime, dry_run: bool) -> str | None:
    """The ledger's outcome for `obj`'s repair, or None when it hasn't drifted (or can't be read)."""
    sub_id = obj.get("id")
    # Unique per run: two runs in one second must not read as a redelivery of each other
    # (a dry run after a real one would then count a conflict that is still there as none).
    event = ev.Event(id=f"reconcile_{sub_id}_{stamp}_{uuid.uuid4().hex[:8]}"[:255], type=EVENT_TYPE, created=now,
                     object=obj, unstorable=ev.unstorable(obj))
    try:
        sub = ev.subscription(event)
    except InvalidEvent:
        log("stripe_reconcile_unreadable", level="warning", subscription=str(sub_id)[:64])
        return None
    if not event.unstorable and not _drifted(sub, db.fetchone(_STORED, (sub.id,))):
        return None
    outcome = ledger.apply_event(event, dry_run=dry_run)
    log("stripe_reconcile_repair", subscription=sub.id, outcome=outcome, dry_run=dry_run)
    return outcome


def run(*, dry_run: bool = False) -> dict:
    """One run of the reconciliation under its cron lock (lib.jobs.cron.run_exclusively)."""
    return cron.run_exclusively(JOB, lambda budget: reconcile(budget, dry_run=dry_run))
