"""GET|POST /api/cron/weekly-reminders: the weekly reminder emails (Vercel cron, Mondays).

GET + `Authorization: Bearer $CRON_SECRET` is the Vercel scheduler; POST `?secret=` is the
runbook's manual trigger. At most one reminder per user and ISO week, however often it runs.
"""

from lib.http import Endpoint
from lib.routes import weekly_reminders
from lib.routes.hooks import maintenance_gate


class handler(Endpoint):
    route = "/api/cron/weekly-reminders"
    before = (maintenance_gate,)

    def get(self, request):
        return weekly_reminders.weekly_reminders(request)

    def post(self, request):
        return weekly_reminders.weekly_reminders(request)
