"""GET|POST /api/cron/purge: CRON_SECRET, then `?dry_run=` / `{"dry_run": ...}`, then one run
of the retention purge (lib.jobs.purge)."""

from lib import errors
from lib.http import Request
from lib.jobs import purge as job
from lib.routes.cron import authorize


def _flag(value, source: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "0", "false", ""):
        return value.lower() in ("1", "true")
    raise errors.BadRequest(f"dry_run in the {source} must be true/false (or 1/0)")


def dry_run_requested(request: Request) -> bool:
    """`?dry_run=1` (any verb) or a POST body `{"dry_run": true}`. Raises BadRequest otherwise."""
    dry_run = _flag(request.query.get("dry_run", ""), "query")
    if request.method == "POST" and request.body().strip():
        body = request.json()
        unknown = set(body) - {"dry_run"}
        if unknown:
            raise errors.BadRequest(f"Unknown field(s): {', '.join(sorted(unknown))[:200]}")
        dry_run = dry_run or _flag(body.get("dry_run", False), "body")
    return dry_run


def purge(request: Request) -> dict:
    authorize(request)
    return job.run(dry_run=dry_run_requested(request))
