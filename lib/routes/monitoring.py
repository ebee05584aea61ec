"""GET /api/admin/monitoring: OWNER only, `?days=` parsed here, the dashboard from lib.monitoring."""

import re

from lib.auth import authenticate, require_role
from lib.errors import BadRequest
from lib.http import Request
from lib.monitoring import DEFAULT_DAYS, MAX_DAYS, PLATFORM, dashboard

_DAYS = re.compile(r"^[0-9]{1,3}$")


def parse_days(query: dict[str, str]) -> int:
    """`?days=` (1..MAX_DAYS, default DEFAULT_DAYS); BadRequest for it out of bounds or any
    other query parameter."""
    unknown = sorted(set(query) - {"days"})
    if unknown:
        raise BadRequest(f"Unknown query parameter: {unknown[0][:40]}")
    raw = query.get("days")
    if raw is None:
        return DEFAULT_DAYS
    if not _DAYS.match(raw) or not 1 <= int(raw) <= MAX_DAYS:
        raise BadRequest(f"days must be an integer from 1 to {MAX_DAYS}")
    return int(raw)


def monitoring(request: Request) -> dict:
    require_role(authenticate(request.bearer_token()), "OWNER")
    return dashboard(PLATFORM, parse_days(request.query))
