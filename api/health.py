"""GET /api/health: the runbook's health check (database SELECT 1, Redis PING)."""

from lib.health import check_health
from lib.http import Endpoint


class handler(Endpoint):
    route = "/api/health"
    maintenance_exempt = True

    def get(self, request):
        return check_health()
