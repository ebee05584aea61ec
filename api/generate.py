"""POST /api/generate: one LLM generation for the caller's organization (lib.routes.generate)."""

from lib.http import Endpoint
from lib.routes import generate


class handler(Endpoint):
    route = "/api/generate"

    def post(self, request):
        return generate.post(request)
