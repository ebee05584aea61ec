"""Postgres (Neon in production) through psycopg 3.

Connections are kept in a small per-process pool so warm invocations of a function reuse
them. Every connection is autocommit with `prepare_threshold=None`, which is what Neon's
pooled endpoint (PgBouncer in transaction mode) needs; multi-statement work opens an explicit
`with conn.transaction():`.

The pool heals: a connection that broke is discarded together with every idle connection
that connected before it (a Postgres, Neon or PgBouncer restart dropped those too), and the
retry runs on a fresh connection. It has a ceiling: DB_MAX_CONNECTIONS per instance (Fluid
compute runs several requests at once in one instance), with a bounded wait (DB_POOL_WAIT_S)
and then DatabaseBusy (503 `database_busy`).
"""

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

from lib.config import Settings, per_settings, settings
from lib.errors import ConfigError, DatabaseBusy, DatabaseUnavailable

T = TypeVar("T")
_MAX_IDLE = 4

# `run(..., retry=...)`: retry once on a fresh connection when the failed connection was a
# reused one (REUSED, the default: it may have been dropped while idle), or whatever it was
# (ALWAYS: for idempotent statements that must not be lost, such as a quota settle).
REUSED, ALWAYS = "reused", "always"


class _Pool:
    """Connections to one database: at most DB_MAX_CONNECTIONS open (in use + idle), of which
    at most _MAX_IDLE idle, reused newest first. At the ceiling a caller waits up to
    DB_POOL_WAIT_S for one to be given back, then gets DatabaseBusy."""

    def __init__(self, cfg: Settings):
        self.url, self._cfg = database_url(cfg), cfg
        self._idle: list[tuple[psycopg.Connection, float, float]] = []  # (conn, idle since, born)
        self._born: dict[int, float] = {}  # id(conn) -> when it connected, for every open one
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)
        self._open = 0
        self._closed = False

    def _connect(self) -> psycopg.Connection:
        born = time.monotonic()
        try:
            conn = psycopg.connect(self.url, autocommit=True, prepare_threshold=None,
                                   row_factory=dict_row,
                                   connect_timeout=self._cfg.db_connect_timeout_s,
                                   application_name="ascendos")
        except BaseException:
            self._forget(None)
            raise
        with self._lock:
            self._born[id(conn)] = born
        return conn

    def _slot(self) -> tuple[psycopg.Connection, float, float] | None:
        """An idle connection, else None after reserving a slot for a new one (waiting at the
        ceiling). Raises DatabaseBusy when none frees up in time."""
        deadline = time.monotonic() + self._cfg.db_pool_wait_s
        with self._lock:
            while True:
                if self._idle:
                    return self._idle.pop()
                if self._open < self._cfg.db_max_connections:
                    self._open += 1
                    return None
                left = deadline - time.monotonic()
                if left <= 0 or not self._freed.wait(left):
                    if not self._idle and self._open >= self._cfg.db_max_connections:
                        raise DatabaseBusy()

    def take(self, fresh: bool = False) -> tuple[psycopg.Connection, bool]:
        """A connection, and whether it was reused from the pool (it may have been dropped by
        the server since); `fresh` skips the idle ones. Raises psycopg.OperationalError when a
        new one can't connect, DatabaseBusy at the ceiling."""
        if fresh:
            self._drop_idle()
        while True:
            idle = self._slot()
            if idle is None:
                return self._connect(), False
            conn, since, _ = idle
            if conn.closed:
                self._forget(conn)
                continue
            # Neon and PgBouncer close idle server connections: one idle past DB_IDLE_CHECK_S is
            # checked (one round trip) before reuse; warm back-to-back requests skip the check.
            if time.monotonic() - since < self._cfg.db_idle_check_s or _alive(conn):
                return conn, True
            self._forget(conn)

    def give_back(self, conn: psycopg.Connection) -> None:
        healthy = not conn.closed and not conn.broken and \
            conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with self._lock:
            if healthy and not self._closed and len(self._idle) < _MAX_IDLE:
                self._idle.append((conn, time.monotonic(), self._born.get(id(conn), 0.0)))
                self._freed.notify()
                return
        self.discard(conn)

    def discard(self, conn: psycopg.Connection) -> None:
        """Close a connection taken from this pool and free its slot."""
        conn.close()
        self._forget(conn)

    def _forget(self, conn: psycopg.Connection | None) -> None:
        with self._lock:
            if conn is not None:
                self._born.pop(id(conn), None)
            self._open -= 1
            self._freed.notify()

    def failed(self, conn: psycopg.Connection) -> None:
        """`conn` failed: discard it and every idle connection that connected before it did
        (a server, Neon or PgBouncer restart dropped them all; reusing them would fail again)."""
        with self._lock:
            born = self._born.get(id(conn), time.monotonic())
            stale = [entry for entry in self._idle if entry[2] <= born]
            self._idle = [entry for entry in self._idle if entry[2] > born]
        self.discard(conn)
        for old, _, _ in stale:
            self.discard(old)

    def _drop_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _, _ in idle:
            self.discard(conn)

    def close_idle(self) -> None:
        self._drop_idle()

    def close(self) -> None:
        """Close the idle connections; ones in use are closed when given back."""
        self._closed = True
        self.close_idle()


def _alive(conn: psycopg.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        conn.close()
        return False


# One pool per settings value: a config reload (another DATABASE_URL) starts a fresh one.
_pool = per_settings(_Pool, close=_Pool.close)


def database_url(cfg: Settings | None = None) -> str:
    url = (cfg or settings()).database_url
    if not url:
        raise ConfigError("DATABASE_URL is not set")
    return url



@contextmanager
def _checkout(fresh: bool = False) -> Iterator[tuple[psycopg.Connection, bool]]:
    """The one checkout path: (connection, reused) for the block, given back after it, or
    discarded, with every idle connection older than it, when the block raised
    psycopg.OperationalError (which propagates). Raises DatabaseBusy at the ceiling."""
    pool = _pool()
    try:
        conn, reused = pool.take(fresh)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable() from exc
    try:
        yield conn, reused
    except psycopg.OperationalError:
        pool.failed(conn)
        raise
    except BaseException:
        pool.give_back(conn)
        raise
    pool.give_back(conn)


@contextmanager
def connection() -> Iterator[psycopg.Connection]:
    """A pooled connection for the duration of the block.

    Raises DatabaseUnavailable when Postgres can't be reached or the connection drops,
    DatabaseBusy when the instance is at DB_MAX_CONNECTIONS for longer than DB_POOL_WAIT_S.
    """
    try:
        with _checkout() as (conn, _):
            yield conn
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable() from exc


def run(work: Callable[[psycopg.Connection], T], retry: str = REUSED) -> T:
    """Run `work(conn)` and return its result, retrying once on a fresh connection when a
    pooled connection turns out to have been dropped while idle (Neon closes idle ones), or,
    with `retry=ALWAYS`, after any connection failure.

    `work` must be safe to repeat after a connection failure: a single statement, or an
    explicit transaction that the failure rolled back (with ALWAYS: idempotent, since the
    failed try may have committed before its answer was lost).
    """
    fresh = False
    for attempt in (1, 2):
        try:
            with _checkout(fresh) as (conn, reused):
                return work(conn)
        except psycopg.OperationalError as exc:
            if attempt == 1 and (reused or retry == ALWAYS):
                fresh = True
                continue
            raise DatabaseUnavailable() from exc
    raise AssertionError("unreachable")


def fetchone(sql: Any, params: Any = None, retry: str = REUSED) -> dict | None:
    """The first row of one statement (as a dict), or None. Retried like `run`."""
    return run(lambda conn: conn.execute(sql, params).fetchone(), retry)


def fetchall(sql: Any, params: Any = None, retry: str = REUSED) -> list[dict]:
    """Every row of one statement (as dicts). Retried like `run`."""
    return run(lambda conn: conn.execute(sql, params).fetchall(), retry)


def execute(sql: Any, params: Any = None, retry: str = REUSED) -> int:
    """Run one statement; its row count. Retried like `run`, so it must be safe to repeat."""
    return run(lambda conn: conn.execute(sql, params).rowcount, retry)


def ping() -> None:
    """`SELECT 1` against the database. Raises DatabaseUnavailable on failure."""
    fetchone("SELECT 1")


def close_all() -> None:
    """Close every idle pooled connection (tests and long-lived processes)."""
    pool = _pool.peek()
    if pool is not None:
        pool.close_idle()
