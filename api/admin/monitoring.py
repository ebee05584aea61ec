"""GET /api/admin/monitoring: the runbook's dashboard metrics (OWNER only). Not implemented yet."""

from lib.http import Endpoint, not_implemented


class handler(Endpoint):
    route = "/api/admin/monitoring"
    get = not_implemented
