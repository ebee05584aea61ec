"""`python -m ops cron NAME [--url URL]`: fire a cron exactly as the Vercel scheduler does
(GET on the path declared in vercel.json `crons`, `Authorization: Bearer $CRON_SECRET`).

`vercel dev` never fires crons; this (and devtools/cron_scheduler.py, which uses it) does.
CRON_SECRET comes from the environment, else from the `.env` that `make dev` writes. Prints
the JSON answer; exits 1 when the call fails or answers an error.

--until-complete fires again while the answer says `complete: false`, but stops (exit 1) after
a run that made no progress (nothing sent, failed or deleted) and after --max-runs runs.
"""

import argparse
import json
import sys
from pathlib import Path

import httpx

from lib.config import settings
from lib.errors import ConfigError
from lib.jobs import JOBS, path
from ops import envfile
from ops.arguments import int_range

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "http://127.0.0.1:3000"
DEFAULT_MAX_RUNS = 20
PROGRESS_KEYS = ("sent", "failed", "deleted")  # what a run did (skipped = already done before)


def cron_jobs() -> dict[str, dict]:
    """{name: {"path", "schedule"}} for every job in lib.jobs.JOBS, scheduled as vercel.json
    `crons` says. Raises ConfigError when vercel.json and JOBS disagree."""
    config = json.loads((ROOT / "vercel.json").read_text())
    declared = {cron["path"]: cron for cron in config.get("crons", [])}
    if set(declared) != {path(name) for name in JOBS}:
        raise ConfigError(f"vercel.json crons {sorted(declared)} are not the jobs of "
                          f"lib.jobs.JOBS {list(JOBS)}")
    return {name: declared[path(name)] for name in JOBS}


def cron_secret() -> str:
    secret = settings().cron_secret
    if not secret:
        secret = envfile.read_env_file(envfile.ENV_FILE).get("CRON_SECRET")
    if not secret:
        raise ConfigError("CRON_SECRET is not set (in the environment or the .env `make dev` writes)")
    return secret


def fire(path: str, base_url: str = DEFAULT_URL, *, secret: str | None = None,
         dry_run: bool = False, timeout: float = 300) -> httpx.Response:
    """One scheduler-style call of the cron at `path`. Raises httpx.HTTPError when the
    server can't be reached."""
    return httpx.get(base_url.rstrip("/") + path, params={"dry_run": "1"} if dry_run else None,
                     headers={"Authorization": f"Bearer {secret or cron_secret()}",
                              "User-Agent": "vercel-cron/1.0 (ops cron)"},
                     timeout=timeout)


def cmd_cron(args: argparse.Namespace) -> int:
    jobs = cron_jobs()
    args.url = args.url or settings().app_url  # APP_URL: make dev writes the port it serves on
    if args.name not in jobs:
        print(f"error: unknown cron {args.name!r}; vercel.json declares: {', '.join(jobs)}", file=sys.stderr)
        return 2
    runs = 0
    while True:
        runs += 1
        try:
            response = fire(jobs[args.name]["path"], args.url, dry_run=args.dry_run, timeout=args.timeout)
        except httpx.HTTPError as exc:
            print(f"error: {args.url} did not answer: {type(exc).__name__}", file=sys.stderr)
            return 1
        try:
            print(json.dumps(response.json(), indent=2))
        except ValueError:
            print(response.text[:2000])
        if not response.is_success:
            print(f"error: HTTP {response.status_code}", file=sys.stderr)
            return 1
        body = response.json()
        if not (args.until_complete and body.get("complete") is False):
            return 0
        if progress(body) == 0:
            print(f"error: run {runs} made no progress (nothing {', '.join(PROGRESS_KEYS)}) and is "
                  "still incomplete; stopping. Check the answer above.", file=sys.stderr)
            return 1
        if runs >= args.max_runs:
            print(f"error: still incomplete after {runs} runs (--max-runs); stopping", file=sys.stderr)
            return 1


def progress(body: dict) -> int:
    """How much a run did: the sum of its `sent`, `failed` and `deleted` counts (nested ok)."""
    def total(value) -> int:
        if isinstance(value, bool):
            return 0
        if isinstance(value, int):
            return value
        if isinstance(value, dict):
            return sum(total(v) for v in value.values())
        return 0
    return sum(total(body.get(key)) for key in PROGRESS_KEYS)


def register(commands) -> None:
    p = commands.add_parser("cron", help="fire a cron as the Vercel scheduler does (GET + Bearer)")
    p.add_argument("name", help="the cron's name, e.g. weekly-reminders or purge")
    p.add_argument("--url", help="base URL of the app (default $APP_URL, else http://localhost:3000)")
    p.add_argument("--dry-run", action="store_true", help="add ?dry_run=1 (purge: count only)")
    p.add_argument("--until-complete", action="store_true",
                   help="fire again while the answer says complete: false (stops after a "
                        "run without progress, or --max-runs)")
    p.add_argument("--max-runs", type=int_range(1, 1000), default=DEFAULT_MAX_RUNS, metavar="N",
                   help="with --until-complete: at most this many runs (default %(default)s)")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for the answer")
    p.set_defaults(run=cmd_cron)
