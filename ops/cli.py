"""The operator CLI: one entry point for the runbook's procedures.

    python -m ops --help
    python -m ops migrate            # apply pending migrations to DATABASE_URL
    python -m ops migrate status     # list applied and pending migrations
    python -m ops cron NAME          # fire a cron as the Vercel scheduler does (GET + Bearer)
    python -m ops stripe-trigger TYPE [--url URL] [--secret S] [--org ORG]   # signed test event
    python -m ops stripe-reconcile [--dry-run]   # repair billing drift from the Stripe API
    python -m ops doctor             # check every setting, Postgres and Redis
    python -m ops alerts [test]      # the alerts' state; a test notice to every channel
    python -m ops --env-file .env.production.local health --url https://...

Settings come from the environment, then from --env-file PATH when given, else from the `.env`
that `make dev` writes (when it exists; a note on stderr says so). Real environment variables
win over the project's `.env`; an explicit --env-file wins over both.

Every command has --help. Exit codes: 0 success, 1 the operation failed, 2 bad usage.
"""

import argparse
import os
import sys
from pathlib import Path

from lib import config
from lib.errors import AppError, ConfigError
from lib.migrate import MigrationError
from ops import (alerts, cron, doctor, envfile, health, ip_blocks, maintenance, migrate,
                 monitoring, stripe_events, stripe_reconcile)
from ops import dev_token, seed_demo  # dev-only: they import devtools inside run()

# One module per command group under ops/, each registering its subcommands the same way.
_GROUPS = (migrate, cron, stripe_events, stripe_reconcile, doctor, health, monitoring, ip_blocks,
           maintenance, dev_token, seed_demo, alerts)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m ops", description=__doc__.splitlines()[0])
    root.add_argument("--env-file", type=Path, metavar="PATH",
                      help="load settings from this file first, over the environment "
                           "(e.g. the output of `vercel env pull`)")
    commands = root.add_subparsers(dest="command", required=True)
    for group in _GROUPS:
        group.register(commands)
    return root


def _load_env_file(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"--env-file {path} does not exist")
    os.environ.update(envfile.read_env_file(path))
    config.reload()


def _load_project_env() -> Path | None:
    """Fill in what the environment lacks from the `.env` that `make dev` writes, if any."""
    path = envfile.ENV_FILE
    if os.environ.get("OPS_NO_DOTENV") == "1" or not path.is_file():
        return None
    added = {k: v for k, v in envfile.read_env_file(path).items() if k not in os.environ}
    os.environ.update(added)
    config.reload()
    print(f"ops: settings from {_shown(path)} ({len(added)} values; the environment wins)",
          file=sys.stderr)
    return path


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _where(source: Path | None, explicit: bool) -> str:
    if source is None:
        return f"the environment (no {_shown(envfile.ENV_FILE)}: start `make dev`, or pass --env-file PATH)"
    return f"the environment and {'--env-file ' if explicit else ''}{_shown(source)}"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    source = None
    try:
        if args.env_file:
            _load_env_file(args.env_file)
            source = args.env_file
        else:
            source = _load_project_env()
        return args.run(args)
    except ConfigError as exc:
        message = str(exc)
        if " is not set" in message:  # name the file(s) the variable was looked for in
            message += f" (looked in {_where(source, bool(args.env_file))})"
        print(f"error: {message}", file=sys.stderr)
        return 1
    except (AppError, MigrationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - an operator sees one line, not a traceback
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
