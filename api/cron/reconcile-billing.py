"""GET|POST /api/cron/reconcile-billing: repair billing drift from missed Stripe webhooks
(Vercel cron, daily).

GET + `Authorization: Bearer $CRON_SECRET` is the Vercel scheduler; POST `?secret=` is the
runbook's manual trigger. `?dry_run=1` or `{"dry_run": true}` only counts.
"""

from lib.http import Endpoint
from lib.routes import reconcile_billing
from lib.routes.hooks import maintenance_gate


class handler(Endpoint):
    route = "/api/cron/reconcile-billing"
    before = (maintenance_gate,)

    def get(self, request):
        return reconcile_billing.reconcile_billing(request)

    def post(self, request):
        return reconcile_billing.reconcile_billing(request)
