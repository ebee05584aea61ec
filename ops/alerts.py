"""`alerts`: the alerts cron's state, and a test notice to every configured channel.

    python -m ops alerts          # metric, level, since, last notified, what is still queued
    python -m ops alerts test     # a test notice to ALERT_WEBHOOK_URL, ALERT_EMAIL and Sentry

Reads DATABASE_URL (run it with --env-file for a deployment). Exit codes: `alerts` 0 when
every metric is ok, 3 a warning, 4 a critical (like `ops monitoring`), 1 the call failed;
`alerts test` 0 when every configured channel took the notice, else 1.
"""

import argparse
import contextlib
import sys

from lib.jobs import alerts
from lib.utc import timestamp


def register(commands) -> None:
    p = commands.add_parser("alerts", help="print the alerts' state; `alerts test` sends a test "
                            "notice", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", nargs="?", choices=["test"], help="send a test notice")
    p.set_defaults(run=run)


def _when(value) -> str:
    return timestamp(value) if value else "-"


def render(rows: list[dict]) -> str:
    out = [f"{'METRIC':<26} {'LEVEL':<9} {'SINCE':<21} {'LAST NOTIFIED':<21} QUEUED"]
    for row in rows:
        queued = ",".join(row["pending"]) or "-"
        if row["last_error"]:
            queued += f" (attempts {row['attempts']}: {row['last_error'][:80]})"
        out.append(f"{row['metric']:<26} {row['level']:<9} {_when(row['since']):<21} "
                   f"{_when(row['notified_at']):<21} {queued}")
    if not rows:
        out.append("no state yet: the alerts cron has not run")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    with contextlib.redirect_stdout(sys.stderr):  # the lib's JSON log lines aren't output
        if args.action == "test":
            results = alerts.send_test()
        else:
            rows = alerts.current_state()
    if args.action == "test":
        for channel, outcome in results.items():
            print(f"{channel}: {outcome}")
        return 0 if all(o in ("sent", "not configured") for o in results.values()) else 1
    print(render(rows))
    levels = {row["level"] for row in rows}
    return 4 if "critical" in levels else 3 if "warning" in levels else 0
