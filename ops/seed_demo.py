"""`seed-demo`: fill a LOCAL database with realistic demo data (organizations on every plan,
users, months of generations with the purge's rollup for what retention would have deleted,
cron runs, IP blocks in Postgres and Redis) so the dashboard shows something. Replaces earlier
demo data (everything `demo_`), never touches other rows, and refuses a non-local database
unless --force."""

import argparse
from datetime import datetime, timezone
from urllib.parse import urlsplit

from lib import db, monitoring, redis
from lib.config import settings
from lib.errors import ConfigError
from lib.ip_blocks import KEY_PREFIX
from ops.arguments import int_range

_LOCAL_HOSTS = {"", "localhost", "127.0.0.1", "::1"}


def register(commands) -> None:
    p = commands.add_parser("seed-demo", help="fill a local database with demo data",
                            description=__doc__)
    p.add_argument("--orgs", type=int_range(1, 100_000), default=40, help="default %(default)s")
    p.add_argument("--generations", type=int_range(0, 5_000_000), default=20_000,
                   help="generated before retention is applied (default %(default)s)")
    p.add_argument("--days", type=int_range(1, 730), default=120,
                   help="history length (default %(default)s)")
    p.add_argument("--seed", type=int, default=6, help="random seed (default %(default)s)")
    p.add_argument("--remove", action="store_true", help="only remove the demo data")
    p.add_argument("--force", action="store_true", help="allow a non-local database")
    p.set_defaults(run=run)


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return (parts.hostname or "") in _LOCAL_HOSTS or (parts.hostname or "").startswith("/")


def run(args: argparse.Namespace) -> int:
    from devtools import demo_data  # dev-only: not loaded by `import ops.cli`

    cfg = settings()
    url = db.database_url()
    if not args.force and (cfg.environment == "production" or not is_local(url)):
        raise ConfigError("refusing to seed a non-local or production database (use --force)")
    with db.connection() as conn:
        removed = demo_data.remove(conn)
        if args.remove:
            monitoring.forget_rollup()
            print(f"removed {removed} demo organization(s)")
            return 0
        seeded = demo_data.seed(conn, organizations=args.orgs, generations=args.generations,
                                days=args.days, seed_value=args.seed)
    monitoring.forget_rollup()  # history changed under the settled-day rollup
    blocked = _block_in_redis(seeded.ip_blocks)
    print(f"seeded {seeded.organizations} organizations, {seeded.users} users, "
          f"{seeded.generations} generations (+ {seeded.rolled_up_days} purged days in "
          f"usage_daily), {seeded.cron_runs} cron runs, {blocked} blocked IPs"
          + (f" (replaced {removed} demo organizations)" if removed else ""))
    return 0


def _block_in_redis(blocks: list[tuple[str, str, datetime]]) -> int:
    now = datetime.now(timezone.utc)
    try:
        client = redis.client()
        for ip, _reason, expires_at in blocks:
            redis.call(client.setex, KEY_PREFIX + ip, max(1, int((expires_at - now).total_seconds())),
                       "true")
    except (redis.RedisUnavailable, ConfigError):
        print("warning: Redis unreachable, the demo IP blocks exist only in Postgres")
        return 0
    return len(blocks)
