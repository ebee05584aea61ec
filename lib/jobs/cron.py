"""What every cron job shares: one run at a time per job, the `cron_runs` record of each run,
and the time budget that ends a run before `maxDuration`. The CRON_SECRET check of the cron
routes is the edge's (lib.routes.cron); the minimum length is lib.config.MIN_SECRET_CHARS.

The lock is a transaction-scoped advisory lock held in an open transaction on a connection of
its own for the whole run. Transaction scope (not session scope) is what survives Neon's pooled
endpoint: PgBouncer in transaction mode pins the server connection to us only while a
transaction is open. A holder that dies loses its connection and with it the lock; one that
hangs is cut off by `idle_in_transaction_session_timeout`.

A run whose lock connection dies (Postgres, Neon or PgBouncer restarted, or the backend was
terminated) has lost the lock: another run may start. It notices at its next batch (the
budget checks the lock connection whenever a job asks whether to go on), stops, and is recorded
`interrupted`. Its `succeeded` record is written in the lock's own transaction, so it commits
only while the lock is still held: two runs never both report success for overlapping work.
"""

import time
from collections.abc import Callable

import psycopg
from psycopg.types.json import Jsonb

from lib import db
from lib.config import settings
from lib.errors import DatabaseUnavailable
from lib.jobs import SCHEDULES
from lib.observability import checkin, log

_LOCK_CLASS = 0x63726F6E  # "cron": the first key of every cron job's advisory lock
# Longer than any Vercel function can live (800 s), so only a lost holder is ever cut off.
_LOCK_HOLD_LIMIT_MS = 15 * 60 * 1000


class LockLost(Exception):
    """The run's lock connection died: another run may hold the job's lock now."""


class Budget:
    """The time a run may spend. `keep_going()` is True for the first unit of work (so every
    run makes progress, however small the budget), then while time remains; `exhausted()`
    is the plain check, for jobs that always do a first bounded step. Both raise LockLost
    when the run's lock is gone (`holds_lock`, one round trip on the lock connection)."""

    def __init__(self, seconds: float, holds_lock: Callable[[], bool] | None = None):
        self.seconds = seconds
        self._deadline = time.monotonic() + seconds
        self._started_work = False
        self._holds_lock = holds_lock

    def keep_going(self) -> bool:
        if not self._started_work:
            self._started_work = True
            self.check_lock()
            return True
        return not self.exhausted()

    def exhausted(self) -> bool:
        self.check_lock()
        return time.monotonic() >= self._deadline

    def check_lock(self) -> None:
        if self._holds_lock is not None and not self._holds_lock():
            raise LockLost()


_START_RUN = """
INSERT INTO cron_runs (job, status) VALUES (%s, 'running') RETURNING id
"""
# Only runs whose lock we now hold can be 'running'; any other such row was cut off mid-run.
_MARK_INTERRUPTED = """
UPDATE cron_runs SET status = 'interrupted', finished_at = now(), complete = false,
       error = 'interrupted: the run ended before it could record its result'
WHERE job = %s AND status = 'running'
"""
_RECORD_INTERRUPTED = """
UPDATE cron_runs SET status = 'interrupted', finished_at = now(), complete = false,
       counts = %s, error = 'interrupted: the lock connection was lost'
WHERE id = %s AND status = 'running'
"""
# clock_timestamp(): the success is written in the lock's transaction, whose now() is its start.
_FINISH_RUN = """
UPDATE cron_runs SET status = %s, finished_at = clock_timestamp(), complete = %s, counts = %s,
       error = %s
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


def _alive(lock_conn: psycopg.Connection) -> Callable[[], bool]:
    def holds_lock() -> bool:
        try:
            lock_conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False
    return holds_lock


def run_exclusively(job: str, work: Callable[[Budget], dict]) -> dict:
    """Run `work(budget)` unless another run of `job` holds the job's lock, and record the run
    in `cron_runs` (running -> succeeded / failed / interrupted, with its counts and error
    class).

    Returns `{"job": job, **result}`, or `{"job": job, "skipped": "already running"}` without
    calling `work` when a run is in progress, or `{"job": job, "interrupted": ...}` when the
    lock was lost mid-run. An exception from `work` is recorded and re-raised (what it had
    already committed stays committed; jobs are written to resume).
    """
    work = _monitored(job, work)
    started = time.monotonic()
    run_id, result, lost = None, {}, False
    try:
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
            try:
                result = work(Budget(settings().cron_time_budget_s, _alive(lock_conn)))
            except LockLost:
                lost = True  # leaving the transaction may itself fail on the dead connection
                raise
            except Exception as exc:
                _execute(_FINISH_RUN, ("failed", False, Jsonb({}), f"{type(exc).__name__}"[:200],
                                       run_id))
                log("cron_run", level="error", job=job, status="failed",
                    error_class=type(exc).__name__,
                    duration_ms=round((time.monotonic() - started) * 1000, 1))
                raise
            # In the lock's own transaction: it commits only while the lock is still ours.
            lost = True  # until it commits
            lock_conn.execute(_FINISH_RUN, ("succeeded", result.get("complete"), Jsonb(result),
                                            None, run_id))
    except (LockLost, DatabaseUnavailable):
        if run_id is None or not lost:
            raise
        return _interrupted(job, run_id, result, started)
    log("cron_run", job=job, status="succeeded", duration_ms=round((time.monotonic() - started) * 1000, 1),
        **result)
    return {"job": job, **result}


def _interrupted(job: str, run_id: int, result: dict, started: float) -> dict:
    try:
        _execute(_RECORD_INTERRUPTED, (Jsonb(result), run_id))
    except DatabaseUnavailable:
        pass  # the next run marks it interrupted (it is still 'running')
    log("cron_run", level="warning", job=job, status="interrupted",
        duration_ms=round((time.monotonic() - started) * 1000, 1))
    return {"job": job, "interrupted": "the lock connection was lost", "complete": False}


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
