"""The scheduled jobs: the shared cron machinery (`cron`), the retention purge (`purge`), the
weekly reminder emails (`reminders`) with their SMTP transport (`mailer`) and signed
unsubscribe links (`unsubscribe`).

`JOBS` is the one list of cron job names with their routes and schedules; `vercel.json`,
`ops cron` and the dev scheduler all follow it.
"""
