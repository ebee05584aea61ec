"""GET /api/admin/monitoring: the runbook's dashboard metrics and alerts (OWNER only)."""

from lib.auth import authenticate, require_role
from lib.http import Endpoint
from lib.monitoring import dashboard, parse_days


class handler(Endpoint):
    route = "/api/admin/monitoring"

    def get(self, request):
        require_role(authenticate(request), "OWNER")
        return dashboard(parse_days(request.query))
