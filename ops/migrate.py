"""`migrate`: apply pending migrations to DATABASE_URL_UNPOOLED
(Neon's direct connection string) when set, else DATABASE_URL; or `migrate status` to list them."""

import argparse

from lib import migrate


def register(commands) -> None:
    p = commands.add_parser("migrate", help="apply migrations, or `migrate status`", description=__doc__)
    p.add_argument("action", nargs="?", choices=["apply", "status"], default="apply")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    url = migrate.url()
    if args.action == "status":
        pending = 0
        for migration in migrate.status(url):
            state = migration.applied_at.isoformat() if migration.applied_at else "pending"
            pending += migration.applied_at is None
            print(f"{migration.version:<40} {state}")
        print(f"{pending} pending")
        return 0
    applied = migrate.apply(url)
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0
