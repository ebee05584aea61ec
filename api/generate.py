"""POST /api/generate: one LLM generation for the caller's organization. Not implemented yet."""

from lib.http import Endpoint, not_implemented


class handler(Endpoint):
    route = "/api/generate"
    post = not_implemented
