"""The scheduled jobs: the shared cron machinery (`cron`), the retention purge (`purge`), the
weekly reminder emails (`reminders`) with their SMTP transport (`mailer`) and signed
unsubscribe links (`unsubscribe`).

`JOBS` is the one list of cron job names. A job's route is `path(name)`; its schedule is in
vercel.json `crons` (tests/test_ops_cron.py checks that the two agree). This module imports
nothing, so naming a job never loads a job.
"""

PURGE = "purge"
WEEKLY_REMINDERS = "weekly-reminders"
RECONCILE_BILLING = "reconcile-billing"  # its job lives in lib.billing.reconcile
JOBS = (PURGE, WEEKLY_REMINDERS, RECONCILE_BILLING)


def path(name: str) -> str:
    """The route that runs job `name`, e.g. '/api/cron/purge'."""
    return f"/api/cron/{name}"
