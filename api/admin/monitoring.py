"""GET /api/admin/monitoring: the runbook's dashboard metrics and alerts (OWNER only)."""

from lib.http import Endpoint
from lib.routes import monitoring
from lib.routes.hooks import maintenance_gate


class handler(Endpoint):
    route = "/api/admin/monitoring"
    before = (maintenance_gate,)

    def get(self, request):
        return monitoring.monitoring(request)
