"""The retention purge (cron `purge`).

Deletes, in bounded batches (PURGE_BATCH_SIZE rows, each batch one short transaction):
- generations older than the retention of the plan in force when each was created
  (`generations.plan`, set on insert; RETENTION_DAYS_TRIAL/_TEAM/_AGENCY), so a downgrade or
  an unpaid night never shortens the life of existing rows, after rolling their counts and
  token/cost sums into `usage_daily` in the same statement, so a failed batch loses nothing
  and a retried one counts nothing twice;
- Stripe events processed more than 90 days ago, reminder rows older than 400 days,
  cron-runs rows older than 90 days, and IP blocks that expired more than 7 days ago (the
  grace keeps every block created in the last week visible to the monitoring route).

A row exactly at its cutoff is kept: only `created_at < now - retention` goes. Each kind of
row gets one batch per run; more batches follow only while the time budget lasts. A run that
stops early reports `complete: false`, and the next run simply continues, since what is left
is exactly what is still expired.

`usage_daily` follows the definitions the monitoring route shares: per (UTC day, organization,
provider, model), `requests` = rows whose status is not 'pending', `failed` = status 'failed',
tokens and cost summed; a missing provider/model is ''.
"""

import time
from datetime import datetime, timedelta, timezone

from lib import db
from lib.jobs import PURGE, cron
from lib.config import PLANS, settings
from lib.generation import quota

JOB = PURGE
STRIPE_EVENT_DAYS = 90
REMINDER_DAYS = 400
CRON_RUN_DAYS = 90
IP_BLOCK_GRACE_DAYS = 7

_EXPIRED_GENERATIONS = """
FROM generations g
WHERE g.plan = %(plan)s AND g.created_at < %(cutoff)s
"""
# No ORDER BY: which expired rows go first doesn't matter, and ordering made the planner read
# and sort every expired row for each batch (bench/purge.py: 5x slower at 200k rows).
_PURGE_GENERATIONS = """
WITH doomed AS (
    SELECT g.id """ + _EXPIRED_GENERATIONS + """
    LIMIT %(limit)s
    FOR UPDATE OF g SKIP LOCKED
), deleted AS (
    DELETE FROM generations g USING doomed WHERE g.id = doomed.id
    RETURNING g.created_at, g.organization_id, g.provider, g.model, g.status,
              g.input_tokens, g.output_tokens, g.cost_usd
), rolled_up AS (
    INSERT INTO usage_daily AS u (day, organization_id, provider, model, requests, failed,
                                  input_tokens, output_tokens, cost_usd)
    SELECT (created_at AT TIME ZONE 'UTC')::date, organization_id, coalesce(provider, ''),
           coalesce(model, ''), count(*) FILTER (WHERE status <> 'pending'),
           count(*) FILTER (WHERE status = 'failed'), sum(input_tokens), sum(output_tokens),
           sum(cost_usd)
    FROM deleted
    GROUP BY 1, 2, 3, 4
    ON CONFLICT (day, organization_id, provider, model) DO UPDATE SET
        requests = u.requests + EXCLUDED.requests,
        failed = u.failed + EXCLUDED.failed,
        input_tokens = u.input_tokens + EXCLUDED.input_tokens,
        output_tokens = u.output_tokens + EXCLUDED.output_tokens,
        cost_usd = u.cost_usd + EXCLUDED.cost_usd
)
SELECT count(*) AS n FROM deleted
"""

# (what it deletes, the rows it would delete); each purge statement deletes one batch.
_SIMPLE = {
    "stripe_events": (
        "DELETE FROM stripe_events WHERE id IN "
        "(SELECT id FROM stripe_events WHERE processed_at < %(cutoff)s LIMIT %(limit)s)",
        "SELECT count(*) AS n FROM stripe_events WHERE processed_at < %(cutoff)s"),
    "reminder_deliveries": (
        "DELETE FROM reminder_deliveries WHERE (user_id, iso_week) IN "
        "(SELECT user_id, iso_week FROM reminder_deliveries WHERE created_at < %(cutoff)s LIMIT %(limit)s)",
        "SELECT count(*) AS n FROM reminder_deliveries WHERE created_at < %(cutoff)s"),
    "ip_blocks": (
        "DELETE FROM ip_blocks WHERE id IN "
        "(SELECT id FROM ip_blocks WHERE expires_at < %(cutoff)s LIMIT %(limit)s)",
        "SELECT count(*) AS n FROM ip_blocks WHERE expires_at < %(cutoff)s"),
    "cron_runs": (
        "DELETE FROM cron_runs WHERE id IN "
        "(SELECT id FROM cron_runs WHERE started_at < %(cutoff)s AND status <> 'running' LIMIT %(limit)s)",
        "SELECT count(*) AS n FROM cron_runs WHERE started_at < %(cutoff)s AND status <> 'running'"),
}
_SIMPLE_DAYS = {"stripe_events": STRIPE_EVENT_DAYS, "reminder_deliveries": REMINDER_DAYS,
                "ip_blocks": IP_BLOCK_GRACE_DAYS, "cron_runs": CRON_RUN_DAYS}
TABLES = (*_SIMPLE, "generations")


def _count(sql: str, params: dict) -> int:
    return db.fetchone(sql, params)["n"]


def _delete_batch(sql: str, params: dict) -> int:
    def batch(conn):
        with conn.transaction():
            cursor = conn.execute(sql, params)
            return cursor.fetchone()["n"] if cursor.description else cursor.rowcount
    return db.run(batch)


def _work(now: datetime) -> list[tuple[str, str, str, dict]]:
    """(table, batch delete, dry-run count, parameters) for every kind of expired row."""
    work = [(table, delete, count, {"cutoff": now - timedelta(days=_SIMPLE_DAYS[table])})
            for table, (delete, count) in _SIMPLE.items()]
    retention = settings().retention_days
    for plan in PLANS:
        work.append(("generations", _PURGE_GENERATIONS, "SELECT count(*) AS n" + _EXPIRED_GENERATIONS,
                     {"cutoff": now - timedelta(days=retention[plan]), "plan": plan}))
    return work


def purge(budget: cron.Budget, *, dry_run: bool = False, now: datetime | None = None) -> dict:
    """Delete every expired row (see the module docstring), batch by batch, within `budget`.

    Each batch commits on its own, so a failure or an exhausted budget leaves a consistent
    state that the next run continues from. With `dry_run`, counts what would be deleted and
    changes nothing. Returns {"dry_run", "deleted": {table: n}, "complete", "batches",
    "longest_batch_ms"} (the last two show how long the tables were ever held by one batch).
    """
    now, limit = now or datetime.now(timezone.utc), settings().purge_batch_size
    deleted = dict.fromkeys(TABLES, 0)
    complete, batches, longest = True, 0, 0.0
    for table, delete, count, params in _work(now):
        if dry_run:
            deleted[table] += _count(count, params)
            continue
        while True:  # every kind of row gets one bounded batch per run, then only while time remains
            started = time.perf_counter()
            n = _delete_batch(delete, {**params, "limit": limit})
            batches, longest = batches + 1, max(longest, time.perf_counter() - started)
            deleted[table] += n
            if n < limit:
                break
            if budget.exhausted():
                complete = False
                break
    return {"dry_run": dry_run, "deleted": deleted, "complete": complete, "batches": batches,
            "longest_batch_ms": round(longest * 1000, 1)}


def run(*, dry_run: bool = False) -> dict:
    """One run of the purge under its lock (see lib.jobs.cron.run_exclusively), then the
    sweep of reservations left unsettled past RESERVATION_TIMEOUT_S (`reclaimed`, issue 11;
    after the purge, so expired pending rows are simply deleted as before)."""
    def work(budget: cron.Budget) -> dict:
        result = purge(budget, dry_run=dry_run)
        return {**result, "reclaimed": 0 if dry_run else quota.sweep_abandoned()}
    return cron.run_exclusively(JOB, work)
