"""GET|POST /api/cron/weekly-reminders: CRON_SECRET, then one run of the reminder emails
(lib.jobs.reminders)."""

from lib.http import Request
from lib.jobs import reminders
from lib.routes.cron import authorize


def weekly_reminders(request: Request) -> dict:
    authorize(request)
    return reminders.run()
