"""The scheduled jobs: the shared cron machinery (`cron`), the retention purge (`purge`), the
weekly reminder emails (`reminders`) with their SMTP transport (`mailer`) and signed
unsubscribe links (`unsubscribe`), and the alerts (`alerts`).

`JOBS` is the one list of cron job names. A job's route is `path(name)`; its schedule is
`SCHEDULES[name]` (UTC crontab), which devtools/vercel_config.py writes into vercel.json
`crons` and the alerts job and Sentry's cron monitors read (lib.jobs.schedule). This module
imports nothing, so naming a job never loads a job.
"""

PURGE = "purge"
WEEKLY_REMINDERS = "weekly-reminders"
ALERTS = "alerts"
RECONCILE_BILLING = "reconcile-billing"  # its job lives in lib.billing.reconcile
JOBS = (PURGE, WEEKLY_REMINDERS, RECONCILE_BILLING, ALERTS)

# Vercel's Hobby plan accepts only schedules that fire at most once a day (a deploy with
# `*/10` fails there): see docs/operations.md, "Alerts".
SCHEDULES = {
    WEEKLY_REMINDERS: "0 9-11 * * 1",
    PURGE: "0 3 * * *",
    RECONCILE_BILLING: "30 4 * * *",
    ALERTS: "*/10 * * * *",
}


def path(name: str) -> str:
    """The route that runs job `name`, e.g. '/api/cron/purge'."""
    return f"/api/cron/{name}"
