"""What every cron job shares: one run at a time per job, the `cron_runs` record of each run,
and the time budget that ends a run before `maxDuration`. The CRON_SECRET check of the cron
routes is the edge's (lib.routes.cron); the minimum length is lib.config.MIN_SECRET_CHARS.

The lock is a transaction-scoped advisory lock held in an open transaction on a connection of
its own for the whole run. Transaction scope (not session scope) is what survives Neon's pooled
endpoint: PgBouncer in transaction mode pins the server connection to us only while a
transaction is open. A holder that dies loses its connection and with it the lock; one that
hangs is cut off by `idle_in_transaction_session_timeout`.
"""

import time
from collections.abc import Callable

from psycopg.types.json import Jsonb

from lib import db
from lib.config import settings
from lib.jobs import SCHEDULES
from lib.observability import checkin, log

_LOCK_CLASS = 0x63726F6E  # "cron": the first key of every cron job's advisory lock
# Longer than any Vercel function can live (800 s), so only a lost holder is ever cut off.
_LOCK_HOLD_LIMIT_MS = 15 * 60 * 1000


class Budget:
    """The time a run may spend. `keep_going()` is True for the first unit of work (so every
    run makes progress, however small the budget), then while time remains; `exhausted()`
    is the plain check, for jobs that always do a first bounded step."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._deadline = time.monotonic() + seconds
        self._started_work = False

    def keep_going(self) -> bool:
        if not self._started_work:
            self._started_work = True
            return True
        return not self.exhausted()

    def exhausted(self) -> bool:
        return time.monotonic() >= self._deadline


_START_RUN = """
INSERT INTO cron_runs (job, status) VALUES (%s, 'running') RETURNING id
"""
# Only runs whose lock we now hold can be 'running'; any other such row was cut off mid-run.
_MARK_INTERRUPTED = """
UPDATE cron_runs SET status = 'failed', finished_at = now(), complete = false,
       error = 'interrupted: the run ended before it could record its result'
WHERE job = %s AND status = 'running'
"""
_FINISH_RUN = """
UPDATE cron_runs SET status = %s, finished_at = now(), complete = %s, counts = %s, error = %s
WHERE id = %s
"""
_RECORD_SKIPPED = """
INSERT INTO cron_runs (job, status, finished_at, counts)
VALUES (%s, 'skipped', now(), '{"skipped": "already running"}')
"""


def _execute(sql: str, params: tuple) -> dict | None:
    """One autocommitted statement (the record must survive the run's own failure)."""
    def statement(conn):
        cursor = conn.execute(sql, params)
        return cursor.fetchone() if cursor.description else None
    return db.run(statement)


def run_exclusively(job: str, work: Callable[[Budget], dict]) -> dict:
    """Run `work(budget)` unless another run of `job` holds the job's lock, and record the run
    in `cron_runs` (running -> succeeded / failed, with its counts and error class).

    Returns `{"job": job, **result}`, or `{"job": job, "skipped": "already running"}` without
    calling `work` when a run is in progress. An exception from `work` is recorded and
    re-raised (what it had already committed stays committed; jobs are written to resume).
    """
    work = _monitored(job, work)
    with db.connection() as lock_conn, lock_conn.transaction():
        lock_conn.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, true)",
                          (str(_LOCK_HOLD_LIMIT_MS),))
        locked = lock_conn.execute("SELECT pg_try_advisory_xact_lock(%s, hashtext(%s)) AS got",
                                   (_LOCK_CLASS, job)).fetchone()["got"]
        if not locked:
            _execute(_RECORD_SKIPPED, (job,))
            log("cron_skipped", job=job, reason="already running")
            return {"job": job, "skipped": "already running"}
        _execute(_MARK_INTERRUPTED, (job,))
        run_id = _execute(_START_RUN, (job,))["id"]
        started = time.monotonic()
        try:
            result = work(Budget(settings().cron_time_budget_s))
        except Exception as exc:
            _execute(_FINISH_RUN, ("failed", False, Jsonb({}), f"{type(exc).__name__}"[:200], run_id))
            log("cron_run", level="error", job=job, status="failed", error_class=type(exc).__name__,
                duration_ms=round((time.monotonic() - started) * 1000, 1))
            raise
        _execute(_FINISH_RUN, ("succeeded", result.get("complete"), Jsonb(result), None, run_id))
        log("cron_run", job=job, status="succeeded", duration_ms=round((time.monotonic() - started) * 1000, 1),
            **result)
        return {"job": job, **result}


def _monitored(job: str, work: Callable[[Budget], dict]) -> Callable[[Budget], dict]:
    """`work` wrapped in Sentry cron check-ins (in_progress, then ok or error) on the job's
    monitor, scheduled as lib.jobs.SCHEDULES says: Sentry then flags a run that never came.
    A run skipped for the lock checks in nothing (the running one speaks for the job)."""
    def checked_in(budget: Budget) -> dict:
        schedule, started = SCHEDULES.get(job), time.monotonic()
        checkin_id = checkin(job, "in_progress", schedule=schedule)
        try:
            result = work(budget)
        except BaseException:
            checkin(job, "error", schedule=schedule, checkin_id=checkin_id,
                    duration_s=time.monotonic() - started)
            raise
        checkin(job, "ok", schedule=schedule, checkin_id=checkin_id,
                duration_s=time.monotonic() - started)
        return result
    return checked_in
