"""The operator CLI: one entry point for the runbook's procedures.

    python -m ops --help
    python -m ops migrate            # apply pending migrations to DATABASE_URL
    python -m ops migrate status     # list applied and pending migrations
    python -m ops cron NAME          # fire a cron as the Vercel scheduler does (GET + Bearer)
    python -m ops stripe-trigger TYPE [--url URL] [--secret S] [--org ORG]   # signed test event

Exit codes: 0 success, 1 the operation failed, 2 bad usage.
"""

import argparse
import sys

from lib import migrate
from lib.config import settings
from lib.errors import ConfigError
from ops import cron, stripe_events


def _database_url() -> str:
    url = settings().database_url
    if not url:
        raise ConfigError("DATABASE_URL is not set")
    return url


def cmd_migrate(args: argparse.Namespace) -> int:
    url = _database_url()
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


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m ops", description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="command", required=True)
    p = commands.add_parser("migrate", help="apply migrations, or `migrate status`")
    p.add_argument("action", nargs="?", choices=["apply", "status"], default="apply")
    p.set_defaults(run=cmd_migrate)
    cron.add_parser(commands)
    stripe_events.add_command(commands)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, migrate.MigrationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # an operator sees one line, not a traceback
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
