"""GET|POST /api/cron/reconcile-billing: CRON_SECRET, then `?dry_run=` / `{"dry_run": ...}`,
then one run of the Stripe reconciliation (lib.billing.reconcile)."""

from lib.billing import reconcile
from lib.http import Request
from lib.routes.cron import authorize
from lib.routes.purge import dry_run_requested


def reconcile_billing(request: Request) -> dict:
    authorize(request)
    return reconcile.run(dry_run=dry_run_requested(request))
