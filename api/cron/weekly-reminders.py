"""GET|POST /api/cron/weekly-reminders: the weekly reminder emails (Vercel cron). Not implemented yet."""

from lib.http import Endpoint, not_implemented


class handler(Endpoint):
    route = "/api/cron/weekly-reminders"
    get = not_implemented
    post = not_implemented
