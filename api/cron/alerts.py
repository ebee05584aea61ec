"""GET|POST /api/cron/alerts: evaluate the runbook's alerts and notify on a change of level
(Vercel cron, every 10 minutes; lib.jobs.alerts).

GET + `Authorization: Bearer $CRON_SECRET` is the Vercel scheduler; POST `?secret=` is the
runbook's manual trigger. No maintenance gate: alerts must keep running during maintenance.
"""

from lib.http import Endpoint
from lib.routes import alerts


class handler(Endpoint):
    route = "/api/cron/alerts"

    def get(self, request):
        return alerts.alerts(request)

    def post(self, request):
        return alerts.alerts(request)
