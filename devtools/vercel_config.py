"""The one source of vercel.json: `python -m devtools.vercel_config` writes it, `--check` exits 1
when the committed file differs (tests/test_vercel_config.py runs the check).

vercel.json has no way to share a setting between functions: CLI 58.10.0 gives each function
the config of the FIRST `functions` key that matches it (`getFunction` and build-utils'
`getLambdaOptionsFromFunction` both return the first match, nothing is merged), so one
"api/**/*.py" glob for the exclusions can't sit beside a per-function maxDuration (tried:
with the glob last, `vercel build` fails "pattern doesn't match any Serverless Functions";
first, it would shadow every maxDuration). The
exclusions are said once here instead, and repeated only in the generated file.
"""

import argparse
import json
import sys
from pathlib import Path

from lib.jobs import SCHEDULES, path

ROOT = Path(__file__).resolve().parent.parent
VERCEL_JSON = ROOT / "vercel.json"

# Where every function runs: beside the Neon database and the Upstash Redis (AWS us-east-1),
# since each request makes several round trips to both. Move all three together
# (docs/deploying.md, Regions).
REGION = "iad1"
DATA_REGION = "aws us-east-1"

# Seconds each function may run, one entry per file under api/ (in vercel.json's order).
MAX_DURATION_S = {
    "api/health.py": 10,
    "api/generate.py": 300,  # a streamed 4096-token answer (lib.generation.llm.streaming)
    "api/webhooks/stripe.py": 30,
    "api/cron/weekly-reminders.py": 60,
    "api/cron/purge.py": 60,
    "api/cron/alerts.py": 60,
    "api/cron/reconcile-billing.py": 60,
    "api/admin/monitoring.py": 30,
}

# Never shipped in a function: the local stack, tooling, tests and their settings.
EXCLUDE_FILES = (".venv/**", "node_modules/**", ".data/**", "devtools/**", "ops/**", "tests/**",
                 "bench/**", ".ci/**", "README.md", ".env", ".env.*", "Makefile", "package.json",
                 "package-lock.json", "requirements.in", "requirements-dev.txt", "pytest.ini", "ruff.toml", "mypy.ini",
                 ".gitignore")

# The schedules are lib.jobs.SCHEDULES: the alerts job and Sentry's monitors read them there.
CRONS = tuple({"path": path(name), "schedule": schedule} for name, schedule in SCHEDULES.items())


def config() -> dict:
    functions = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "api").rglob("*.py"))
    if set(functions) != set(MAX_DURATION_S):
        raise ValueError(f"MAX_DURATION_S must name every api/ file: {functions}")
    exclude = "{" + ",".join(EXCLUDE_FILES) + "}"
    return {
        "outputDirectory": "public",
        "regions": [REGION],
        "functions": {path: {"maxDuration": seconds, "excludeFiles": exclude}
                      for path, seconds in MAX_DURATION_S.items()},
        "crons": [dict(cron) for cron in CRONS],
    }


def render() -> str:
    return json.dumps(config(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.vercel_config", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if vercel.json is out of date")
    args = parser.parse_args(argv)
    if args.check:
        if VERCEL_JSON.read_text() != render():
            print("vercel.json is out of date: run python -m devtools.vercel_config", file=sys.stderr)
            return 1
        return 0
    VERCEL_JSON.write_text(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
