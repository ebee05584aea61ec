"""POST /api/generate: one LLM generation for the caller's organization (lib.generation)."""

from lib.generation import generate
from lib.http import Endpoint


class handler(Endpoint):
    route = "/api/generate"

    def post(self, request):
        return generate(request)
