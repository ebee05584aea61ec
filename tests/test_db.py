"""lib.db: pooled connections survive a server-side drop; an unreachable server is a clean error."""

import time

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


def test_one_statement_helpers_return_rows_and_counts():
    db.execute("INSERT INTO app_flags (name, value) VALUES (%s, '{}'::jsonb), (%s, '{}'::jsonb)",
               ("a-flag", "b-flag"))
    assert db.fetchone("SELECT name FROM app_flags WHERE name = %s", ("a-flag",)) == {"name": "a-flag"}
    assert db.fetchone("SELECT name FROM app_flags WHERE name = %s", ("nope",)) is None
    assert [row["name"] for row in db.fetchall("SELECT name FROM app_flags ORDER BY name")] == \
        ["a-flag", "b-flag"]
    assert db.execute("DELETE FROM app_flags WHERE name LIKE %s", ("%-flag",)) == 2


def test_helpers_retry_once_when_a_pooled_connection_was_dropped(database_url):
    first = _backend_pid()
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first,))
    assert db.fetchone("SELECT pg_backend_pid() AS pid")["pid"] != first


def test_a_reload_to_another_database_starts_a_fresh_pool(database_url, monkeypatch):
    first = _backend_pid()
    pool = db._pool.peek()
    monkeypatch.setenv("DATABASE_URL", database_url + "?application_name=other")
    config.reload()
    assert _backend_pid() != first and db._pool.peek() is not pool
    with psycopg.connect(database_url, autocommit=True) as admin:  # the old pool closed its own
        for _ in range(100):  # a closed backend leaves pg_stat_activity within milliseconds
            alive = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                                  (first,)).fetchone()[0]
            if not alive:
                break
            time.sleep(0.02)
        assert alive == 0
