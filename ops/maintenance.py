"""`maintenance on|off|status`: the runbook's maintenance mode. While on, every route but
/api/health and the Stripe webhook answers 503 with Retry-After, and health reports
`"maintenance": true`. Running instances notice within a few seconds (their cache)."""

import argparse

from lib import db, maintenance, redis
from lib.errors import AppError, ConfigError
from ops.arguments import int_range


def register(commands) -> None:
    p = commands.add_parser("maintenance", help="turn maintenance mode on or off, or show it",
                            description=__doc__)
    p.add_argument("action", choices=["on", "off", "status"])
    p.add_argument("--retry-after", type=int_range(1, 86400), default=maintenance.DEFAULT_RETRY_AFTER_S,
                   metavar="SECONDS", help="Retry-After sent with each 503 (default %(default)s)")
    p.add_argument("--message", help="the 503's error message (default: a generic one)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "status":
        state = maintenance.read()
        if state.source == "none":
            print("maintenance: unknown (neither Redis nor Postgres answered)")
            return 1
        detail = f" since {state.since}, Retry-After {state.retry_after_s}s" if state.on else ""
        print(f"maintenance: {'ON' if state.on else 'off'}{detail} (read from {state.source})")
        return 0
    if args.action == "on":
        failed = maintenance.enable(args.retry_after, (args.message or "").strip()[:200] or None)
    else:
        failed = maintenance.disable()
    if failed:
        reasons = "; ".join(f"{store}: {_why(store)}" for store in failed)
        print(f"error: could not update {' and '.join(failed)} ({reasons}); routes read Redis "
              "first and Postgres only while Redis is down. Fix the store and run this again.")
        return 1
    print(f"maintenance {args.action}: Redis and Postgres updated; instances follow within "
          f"{maintenance.CACHE_S:g} s")
    return 0


def _why(store: str) -> str:
    """Why `store` could not be written: the missing variable, or the error it answers with."""
    try:
        if store == "database":
            db.fetchone("SELECT 1")
        else:
            redis.call(redis.client().ping)
    except (AppError, ConfigError, redis.RedisUnavailable) as exc:
        return str(exc) or type(exc).__name__
    return "it answers now; run this again"
