"""GET|POST /api/cron/<job>: the CRON_SECRET check and each job's request parsing.

The jobs themselves (lib.jobs) take plain values; everything read from the request is read here.
"""

import hmac

from lib import errors
from lib.config import settings
from lib.http import Request
from lib.jobs import purge as purge_job
from lib.jobs import reminders
from lib.jobs.cron import MIN_SECRET_LENGTH


def _same(given: str, secret: str) -> bool:
    # Bytes, so a non-ASCII header can't make compare_digest raise (it refuses non-ASCII str).
    return hmac.compare_digest(given.encode("utf-8", "replace"), secret.encode("utf-8"))


def authorize(request: Request) -> None:
    """Accept the Vercel scheduler (`Authorization: Bearer <CRON_SECRET>`, GET or POST) and the
    runbook's manual trigger (POST `?secret=`), compared in constant time.

    Raises Unauthorized for a wrong or missing secret, and ConfigError (500) when CRON_SECRET
    is unset or shorter than 16 characters: a cron never runs unauthenticated.
    """
    secret = settings().cron_secret
    if not secret or len(secret) < MIN_SECRET_LENGTH:
        raise errors.ConfigError(
            f"CRON_SECRET is not set or shorter than {MIN_SECRET_LENGTH} characters; "
            "cron routes refuse to run without it")
    given = [request.bearer_token()]
    if request.method == "POST":  # never on GET: query strings end up in caches and logs
        given.append(request.query.get("secret"))
    if not any(candidate and _same(candidate, secret) for candidate in given):
        raise errors.Unauthorized("A valid CRON_SECRET is required")


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
    """/api/cron/purge: authorize, read dry_run, then one purge run (lib.jobs.purge)."""
    authorize(request)
    return purge_job.run(dry_run=dry_run_requested(request))


def weekly_reminders(request: Request) -> dict:
    """/api/cron/weekly-reminders: authorize, then one reminders run (lib.jobs.reminders)."""
    authorize(request)
    return reminders.run()
