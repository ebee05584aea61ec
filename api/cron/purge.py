"""GET|POST /api/cron/purge: retention purge with usage rollup (Vercel cron). Not implemented yet."""

from lib.http import Endpoint, not_implemented


class handler(Endpoint):
    route = "/api/cron/purge"
    get = not_implemented
    post = not_implemented
