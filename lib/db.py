"""Postgres (Neon in production) through psycopg 3.

Connections are kept in a small per-process pool so warm invocations of a function reuse
them. Every connection is autocommit with `prepare_threshold=None`, which is what Neon's
pooled endpoint (PgBouncer in transaction mode) needs; multi-statement work opens an explicit
`with conn.transaction():`. A connection that broke is dropped, and the next call reconnects.
"""

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

from lib.config import Settings, per_settings, settings
from lib.errors import ConfigError, DatabaseUnavailable

T = TypeVar("T")
_MAX_IDLE = 4


class _Pool:
    """Idle connections to one database, at most _MAX_IDLE, reused newest first."""

    def __init__(self, cfg: Settings):
        self.url, self._cfg = database_url(cfg), cfg
        self._idle: list[tuple[psycopg.Connection, float]] = []
        self._lock = threading.Lock()
        self._closed = False

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True, prepare_threshold=None,
                               row_factory=dict_row, connect_timeout=self._cfg.db_connect_timeout_s,
                               application_name="ascendos")

    def take(self) -> tuple[psycopg.Connection, bool]:
        """A connection, and whether it was reused from the pool (it may have been dropped by
        the server since). Raises psycopg.OperationalError when a new one can't connect."""
        while True:
            with self._lock:
                if not self._idle:
                    break
                conn, since = self._idle.pop()
            if conn.closed:
                continue
            # Neon and PgBouncer close idle server connections: one idle past DB_IDLE_CHECK_S is
            # checked (one round trip) before reuse; warm back-to-back requests skip the check.
            if time.monotonic() - since < self._cfg.db_idle_check_s or _alive(conn):
                return conn, True
        return self._connect(), False

    def give_back(self, conn: psycopg.Connection) -> None:
        healthy = not conn.closed and not conn.broken and \
            conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with self._lock:
            if healthy and not self._closed and len(self._idle) < _MAX_IDLE:
                self._idle.append((conn, time.monotonic()))
                return
        conn.close()

    def close_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()

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
def _checkout() -> Iterator[tuple[psycopg.Connection, bool]]:
    """The one checkout path: (connection, reused) for the block, given back after it, or
    closed when the block raised psycopg.OperationalError (which propagates)."""
    pool = _pool()
    try:
        conn, reused = pool.take()
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable() from exc
    try:
        yield conn, reused
    except psycopg.OperationalError:
        conn.close()
        raise
    except BaseException:
        pool.give_back(conn)
        raise
    pool.give_back(conn)


@contextmanager
def connection() -> Iterator[psycopg.Connection]:
    """A pooled connection for the duration of the block.

    Raises DatabaseUnavailable when Postgres can't be reached or the connection drops.
    """
    try:
        with _checkout() as (conn, _):
            yield conn
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable() from exc


def run(work: Callable[[psycopg.Connection], T]) -> T:
    """Run `work(conn)` and return its result, retrying once on a fresh connection when a
    pooled connection turns out to have been dropped while idle (Neon closes idle ones).

    `work` must be safe to repeat after a connection failure: a single statement, or an
    explicit transaction that the failure rolled back.
    """
    for attempt in (1, 2):
        try:
            with _checkout() as (conn, reused):
                return work(conn)
        except psycopg.OperationalError as exc:
            if reused and attempt == 1:
                continue
            raise DatabaseUnavailable() from exc
    raise AssertionError("unreachable")


def fetchone(sql: Any, params: Any = None) -> dict | None:
    """The first row of one statement (as a dict), or None. Retried like `run`."""
    return run(lambda conn: conn.execute(sql, params).fetchone())


def fetchall(sql: Any, params: Any = None) -> list[dict]:
    """Every row of one statement (as dicts). Retried like `run`."""
    return run(lambda conn: conn.execute(sql, params).fetchall())


def execute(sql: Any, params: Any = None) -> int:
    """Run one statement; its row count. Retried like `run`, so it must be safe to repeat."""
    return run(lambda conn: conn.execute(sql, params).rowcount)


def ping() -> None:
    """`SELECT 1` against the database. Raises DatabaseUnavailable on failure."""
    fetchone("SELECT 1")


def close_all() -> None:
    """Close every idle pooled connection (tests and long-lived processes)."""
    pool = _pool.peek()
    if pool is not None:
        pool.close_idle()
