"""GET /api/admin/monitoring: OWNER only, `?days=` parsed here, the dashboard from
lib.monitoring. Its scope is the caller's: the OWNERs of an organization in OPERATOR_ORG_IDS
(platform operators) see the whole platform; any other OWNER sees their own organization
(provisioned on first contact, as generate does). ADMIN and MEMBER get 403."""

import re

from lib.auth import Identity, authenticate, require_role
from lib.config import settings
from lib.errors import BadRequest
from lib.generation import tenancy
from lib.http import Request
from lib.monitoring import DEFAULT_DAYS, MAX_DAYS, PLATFORM, dashboard, organization_dashboard

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


def is_operator(identity: Identity) -> bool:
    """Whether the caller acts for a platform operator organization (OPERATOR_ORG_IDS)."""
    return identity.org_external_id is not None and \
        identity.org_external_id in settings().operator_org_ids


def monitoring(request: Request) -> dict:
    identity = authenticate(request.bearer_token())
    require_role(identity, "OWNER")
    days = parse_days(request.query)
    if is_operator(identity):
        return dashboard(PLATFORM, days)
    return organization_dashboard(tenancy.provision(identity).organization_id, days)
