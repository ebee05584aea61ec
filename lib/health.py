"""The runbook's health check: `SELECT 1` on Postgres and `PING` on Redis, concurrently,
bounded by HEALTH_TIMEOUT_S so a dead dependency can't hang the route."""

import concurrent.futures

from lib import db, maintenance, redis
from lib.config import settings
from lib.observability import log, report_degraded
from lib.utc import timestamp

# Module-level so a check still stuck in a dead socket never blocks the response on exit.
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="health")
_CHECKS = {"database": db.ping, "redis": redis.ping}


def check_health() -> dict:
    """{"status": "healthy", "timestamp", "checks"} when every check passes, else "unhealthy"
    with the failing check marked "error", plus `"maintenance": true` while maintenance mode
    is on (the route answers 200 or 503). Error details go to the log and Sentry, never here."""
    timeout = settings().health_timeout_s
    futures = {name: _pool.submit(check) for name, check in _CHECKS.items()}
    done, _ = concurrent.futures.wait(futures.values(), timeout=timeout)
    checks = {}
    for name, future in futures.items():
        if future not in done:
            log("health_check_timeout", level="error", check=name, timeout_s=timeout)
            checks[name] = "error"
        elif future.exception() is not None:
            report_degraded(f"health_{name}", future.exception(), check=name)
            checks[name] = "error"
        else:
            checks[name] = "ok"
    healthy = all(value == "ok" for value in checks.values())
    body = {"status": "healthy" if healthy else "unhealthy", "timestamp": timestamp(timespec="milliseconds"),
            "checks": checks}
    if maintenance.current().on:
        body["maintenance"] = True
    return body
