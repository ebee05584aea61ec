"""GET|POST /api/cron/alerts: CRON_SECRET, then one run of the alerts job (lib.jobs.alerts)."""

from lib.http import Request
from lib.jobs import alerts as job
from lib.routes.cron import authorize


def alerts(request: Request) -> dict:
    authorize(request)
    return job.run()
