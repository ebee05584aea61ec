"""POST /api/generate: one LLM generation for the caller's organization (lib.routes.generate)."""

from lib.http import Endpoint
from lib.routes import generate
from lib.routes.hooks import maintenance_gate


class handler(Endpoint):
    route = "/api/generate"
    before = (maintenance_gate,)

    def post(self, request):
        return generate.post(request)
