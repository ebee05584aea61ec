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
from typing import TypeVar

import psycopg
from psycopg.rows import dict_row

from lib.config import settings
from lib.errors import ConfigError, DatabaseUnavailable

T = TypeVar("T")
_MAX_IDLE = 4
_idle: list[tuple[str, psycopg.Connection, float]] = []
_lock = threading.Lock()


def _connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, prepare_threshold=None, row_factory=dict_row,
                           connect_timeout=settings().db_connect_timeout_s,
                           application_name="ascendos")


def _alive(conn: psycopg.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        conn.close()
        return False


def _take(url: str) -> tuple[psycopg.Connection, bool]:
    while True:
        with _lock:
            if not _idle:
                break
            idle_url, conn, since = _idle.pop()
        if idle_url != url or conn.closed:
            conn.close()
        # Neon and PgBouncer close idle server connections: one idle past DB_IDLE_CHECK_S is
        # checked (one round trip) before reuse; warm back-to-back requests skip the check.
        elif time.monotonic() - since < settings().db_idle_check_s or _alive(conn):
            return conn, True
    return _connect(url), False


def _give_back(url: str, conn: psycopg.Connection) -> None:
    healthy = not conn.closed and not conn.broken and \
        conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with _lock:
        if healthy and len(_idle) < _MAX_IDLE:
            _idle.append((url, conn, time.monotonic()))
            return
    conn.close()


def database_url() -> str:
    url = settings().database_url
    if not url:
        raise ConfigError("DATABASE_URL is not set")
    return url


@contextmanager
def connection() -> Iterator[psycopg.Connection]:
    """A pooled connection for the duration of the block.

    Raises DatabaseUnavailable when Postgres can't be reached or the connection drops.
    """
    url = database_url()
    try:
        conn, _ = _take(url)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable() from exc
    try:
        yield conn
    except psycopg.OperationalError as exc:
        conn.close()
        raise DatabaseUnavailable() from exc
    except BaseException:
        _give_back(url, conn)
        raise
    else:
        _give_back(url, conn)


def run(work: Callable[[psycopg.Connection], T]) -> T:
    """Run `work(conn)` and return its result, retrying once on a fresh connection when a
    pooled connection turns out to have been dropped while idle (Neon closes idle ones).

    `work` must be safe to repeat after a connection failure: a single statement, or an
    explicit transaction that the failure rolled back.
    """
    url = database_url()
    for attempt in (1, 2):
        try:
            conn, reused = _take(url)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable() from exc
        try:
            result = work(conn)
        except psycopg.OperationalError as exc:
            conn.close()
            if reused and attempt == 1:
                continue
            raise DatabaseUnavailable() from exc
        except BaseException:
            _give_back(url, conn)
            raise
        _give_back(url, conn)
        return result
    raise AssertionError("unreachable")


def ping() -> None:
    """`SELECT 1` against the database. Raises DatabaseUnavailable on failure."""
    run(lambda conn: conn.execute("SELECT 1").fetchone())


def close_all() -> None:
    """Close every idle pooled connection (tests and long-lived processes)."""
    with _lock:
        while _idle:
            _idle.pop()[1].close()
