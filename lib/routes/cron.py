"""What every cron route (lib.routes.purge, lib.routes.weekly_reminders) checks first: the
CRON_SECRET. The jobs themselves (lib.jobs) take plain values; the routes read the request."""

import hmac

from lib import errors
from lib.config import settings
from lib.http import Request
from lib.config import MIN_SECRET_CHARS as MIN_SECRET_LENGTH


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

