"""GET /api/health: the runbook's health check (database SELECT 1, Redis PING).

Answers in maintenance mode too: no maintenance gate in `before`."""

from lib.http import Endpoint
from lib.routes import health


class handler(Endpoint):
    route = "/api/health"

    def get(self, request):
        return health.health(request)
