"""lib.db: pooled connections survive a server-side drop; an unreachable server is a clean error."""

import psycopg
import pytest

from lib import config, db
from lib.errors import DatabaseUnavailable


def _backend_pid() -> int:
    return db.run(lambda conn: conn.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"])


def test_warm_calls_reuse_one_connection():
    assert _backend_pid() == _backend_pid()


def test_connection_dropped_while_idle_is_replaced_transparently(database_url):
    first = _backend_pid()
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first,))
    second = _backend_pid()
    assert second != first


def test_connection_context_drops_a_broken_connection(database_url):
    with db.connection() as conn:
        pid = conn.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(DatabaseUnavailable):
        with db.connection() as conn:
            conn.execute("SELECT 1")
    assert _backend_pid() != pid


def test_unreachable_database_is_database_unavailable(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1:1/x")
    config.reload()
    with pytest.raises(DatabaseUnavailable):
        db.ping()


def test_pooled_connections_are_safe_for_pgbouncer_transaction_mode():
    def settings_of(conn):
        return conn.prepare_threshold, conn.autocommit

    assert db.run(settings_of) == (None, True)


def test_long_idle_connection_is_checked_before_reuse(database_url, monkeypatch):
    monkeypatch.setenv("DB_IDLE_CHECK_S", "0.001")
    config.reload()
    first = _backend_pid()
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first,))
    with db.connection() as conn:  # no retry here: the check must have replaced it
        assert conn.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"] != first
