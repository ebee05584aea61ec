"""GET /api/health: the domain's health result as 200 (healthy) or 503 (unhealthy)."""

from lib.health import check_health
from lib.http import Request, Response


def health(request: Request) -> Response:
    result = check_health()
    return Response(200 if result["status"] == "healthy" else 503, result)
