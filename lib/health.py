"""The runbook's health check: `SELECT 1` on Postgres and `PING` on Redis, concurrently,
bounded by HEALTH_TIMEOUT_S so a dead dependency can't hang the route."""

import concurrent.futures
from datetime import datetime, timezone

from lib import db, maintenance, redis
from lib.config import settings
from lib.http import Response
from lib.observability import log, report

# Module-level so a check still stuck in a dead socket never blocks the response on exit.
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="health")
_CHECKS = {"database": db.ping, "redis": redis.ping}


def _timestamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_health() -> Response:
    """200 {"status": "healthy", ...} when every check passes, else 503 "unhealthy" with the
    failing check marked "error", plus `"maintenance": true` while maintenance mode is on.
    Error details go to the log and Sentry, never the body."""
    timeout = settings().health_timeout_s
    futures = {name: _pool.submit(check) for name, check in _CHECKS.items()}
    done, _ = concurrent.futures.wait(futures.values(), timeout=timeout)
    checks = {}
    for name, future in futures.items():
        if future not in done:
            log("health_check_timeout", level="error", check=name, timeout_s=timeout)
            checks[name] = "error"
        elif future.exception() is not None:
            report(future.exception(), check=name)
            checks[name] = "error"
        else:
            checks[name] = "ok"
    healthy = all(value == "ok" for value in checks.values())
    body = {"status": "healthy" if healthy else "unhealthy", "timestamp": _timestamp(),
            "checks": checks}
    if maintenance.current().on:
        body["maintenance"] = True
    return Response(200 if healthy else 503, body)
