"""The operator CLI: one entry point for the runbook's procedures.

    python -m ops --help
    python -m ops migrate            # apply pending migrations to DATABASE_URL
    python -m ops migrate status     # list applied and pending migrations
    python -m ops cron NAME          # fire a cron as the Vercel scheduler does (GET + Bearer)
    python -m ops stripe-trigger TYPE [--url URL] [--secret S] [--org ORG]   # signed test event
    python -m ops doctor             # check every setting, Postgres and Redis
    python -m ops --env-file .env.production.local health --url https://...

Every command has --help. Exit codes: 0 success, 1 the operation failed, 2 bad usage.
"""

import argparse
import os
import sys
from pathlib import Path

from lib import config, migrate
from lib.config import settings
from lib.errors import AppError, ConfigError
from ops import (cron, dev_token, doctor, health, ip_blocks, maintenance, monitoring, seed_demo,
                 stripe_events)

# Command groups, each registering its subcommands (one module per group under ops/).
_GROUPS = (doctor, health, monitoring, ip_blocks, maintenance, dev_token, seed_demo)


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
    root.add_argument("--env-file", type=Path, metavar="PATH",
                      help="load settings from this file first, over the environment "
                           "(e.g. the output of `vercel env pull`)")
    commands = root.add_subparsers(dest="command", required=True)
    p = commands.add_parser("migrate", help="apply migrations, or `migrate status`")
    p.add_argument("action", nargs="?", choices=["apply", "status"], default="apply")
    p.set_defaults(run=cmd_migrate)
    cron.add_parser(commands)
    stripe_events.add_command(commands)
    for group in _GROUPS:
        group.register(commands)
    return root


def _load_env_file(path: Path) -> None:
    from devtools.dev import read_env_file

    if not path.is_file():
        raise ConfigError(f"--env-file {path} does not exist")
    os.environ.update(read_env_file(path))
    config.reload()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.env_file:
            _load_env_file(args.env_file)
        return args.run(args)
    except (AppError, migrate.MigrationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # an operator sees one line, not a traceback
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
