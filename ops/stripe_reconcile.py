"""`python -m ops stripe-reconcile [--dry-run]`: list every subscription from the Stripe API
and repair the ledger's drift, as the daily cron `reconcile-billing` does.

Runs here, against DATABASE_URL and STRIPE_SECRET_KEY (use --env-file for a deployment's
settings), under the same cron lock and run record as the cron. Prints the counts as JSON;
exit 1 when a run is already in progress or a subscription ended as a conflict.
"""

import argparse
import json


def cmd_stripe_reconcile(args: argparse.Namespace) -> int:
    from lib.billing import reconcile  # the stripe SDK loads only when this command runs

    result = reconcile.run(dry_run=args.dry_run)
    print(json.dumps(result, default=str))  # the last line (log lines come before it)
    return 1 if result.get("skipped") or result.get("conflicts") else 0


def register(commands) -> None:
    """Register `stripe-reconcile` on the CLI's subparsers."""
    p = commands.add_parser("stripe-reconcile", help="repair billing drift from the Stripe API",
                            description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true",
                   help="compute every repair and roll it back: report only, change nothing")
    p.set_defaults(run=cmd_stripe_reconcile)
