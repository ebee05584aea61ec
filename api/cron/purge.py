"""GET|POST /api/cron/purge: the retention purge with its usage rollup (Vercel cron, daily).

GET + `Authorization: Bearer $CRON_SECRET` is the Vercel scheduler; POST `?secret=` is the
runbook's manual trigger. `?dry_run=1` or `{"dry_run": true}` only counts.
"""

from lib.http import Endpoint
from lib.routes import purge
from lib.routes.hooks import maintenance_gate


class handler(Endpoint):
    route = "/api/cron/purge"
    before = (maintenance_gate,)

    def get(self, request):
        return purge.purge(request)

    def post(self, request):
        return purge.purge(request)
