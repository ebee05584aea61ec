"""Issue 11 §6: a pool that heals and has a ceiling; no lock across network I/O in the
maintenance cache; a cron whose lock connection dies stops and is recorded `interrupted`;
migrations on DATABASE_URL_UNPOOLED."""

import json
import threading
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import psycopg
import pytest

from lib import config, db, maintenance
from lib.errors import DatabaseBusy
from lib.jobs import cron
from tests.support.cli import run_cli


# The cron lock's holder in this test database (the server is shared with other sessions).
_OUR_ADVISORY_LOCK = ("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
                      "database = (SELECT oid FROM pg_database WHERE datname = current_database())")


def _pids(n: int) -> list[int]:
    """Open `n` pooled connections at once and give them back: n idle connections."""
    with ExitStack() as stack:
        conns = [stack.enter_context(db.connection()) for _ in range(n)]
        return [c.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"] for c in conns]


def _terminate(database_url: str, pids: list[int]) -> None:
    with psycopg.connect(database_url, autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_four_dropped_idle_connections_cost_no_request(serve, database_url):
    url = serve("api/health.py") + "/api/health"
    assert httpx.get(url, timeout=10).status_code == 200
    db.close_all()
    dead = _pids(4)
    _terminate(database_url, dead)  # Postgres / Neon / PgBouncer restarted under the idle pool
    statuses = [httpx.get(url, timeout=10).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 200]
    assert not set(_pids(2)) & set(dead)


def test_at_the_ceiling_a_request_waits_then_gets_database_busy(monkeypatch):
    monkeypatch.setenv("DB_MAX_CONNECTIONS", "2")
    monkeypatch.setenv("DB_POOL_WAIT_S", "0.2")
    config.reload()
    with db.connection(), db.connection():
        with pytest.raises(DatabaseBusy) as caught:
            db.ping()
        assert caught.value.status == 503 and caught.value.code == "database_busy"
    db.ping()  # given back: room again


def test_a_waiting_request_gets_the_connection_given_back(monkeypatch):
    monkeypatch.setenv("DB_MAX_CONNECTIONS", "1")
    monkeypatch.setenv("DB_POOL_WAIT_S", "10")
    config.reload()
    got, holding = [], threading.Event()
    with db.connection() as held:
        pid = held.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]
        waiter = threading.Thread(target=lambda: got.append(db.fetchone(
            "SELECT pg_backend_pid() AS pid")["pid"]))
        waiter.start()
        holding.wait(0.3)
        assert got == []  # waits: the one connection is in use
    waiter.join(10)
    assert got == [pid]


def test_the_ceiling_counts_connections_in_use_not_only_idle(monkeypatch, database_url):
    monkeypatch.setenv("DB_MAX_CONNECTIONS", "3")
    monkeypatch.setenv("DB_POOL_WAIT_S", "0.5")
    config.reload()
    results: list[str] = []
    inside = threading.Barrier(8, timeout=10)

    def request():
        try:
            with db.connection() as conn:
                conn.execute("SELECT pg_sleep(0.3)")
                results.append("ok")
        except DatabaseBusy:
            results.append("busy")
        finally:
            inside.wait()
    threads = [threading.Thread(target=request) for _ in range(7)]
    for t in threads:
        t.start()
    with psycopg.connect(database_url, autocommit=True) as admin:
        peak = 0
        for _ in range(20):
            peak = max(peak, admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ascendos' "
                "AND datname = current_database()").fetchone()[0])
    inside.wait()
    for t in threads:
        t.join(10)
    assert peak <= 3 and len(results) == 7 and "ok" in results


class _StallingUpstash:
    """A server speaking Upstash's REST protocol that answers `null` to every command, and
    hangs while `stalled` is set (a Redis that stopped answering)."""

    def __init__(self):
        self.stalled, self.release = threading.Event(), threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                if outer.stalled.is_set():
                    outer.release.wait(20)
                body = json.dumps({"result": None}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_maintenance_holds_no_lock_while_reading_the_stores(monkeypatch):
    upstash = _StallingUpstash()
    try:
        monkeypatch.setenv("UPSTASH_REDIS_REST_URL", upstash.url)
        monkeypatch.setenv("REDIS_TIMEOUT_S", "20")
        monkeypatch.setattr(maintenance, "CACHE_S", 0.05)
        config.reload()
        assert maintenance.current().on is False  # cached
        threading.Event().wait(0.1)  # expired
        upstash.stalled.set()
        slow = threading.Thread(target=maintenance.current)
        slow.start()  # refreshes: stuck in Redis
        threading.Event().wait(0.2)
        answered: list[bool] = []
        other = threading.Thread(target=lambda: answered.append(maintenance.current().on))
        other.start()
        other.join(5)
        assert answered == [False] and slow.is_alive()  # answered while the refresh hangs
        upstash.release.set()
        slow.join(10)
    finally:
        upstash.close()


def test_a_cron_whose_lock_connection_dies_stops_and_is_interrupted(cron_secret, sql, database_url):
    second_result: list[dict] = []
    batches = []

    def first_work(budget):
        while budget.keep_going():
            batches.append(1)
            if len(batches) == 2:
                lock_pid = sql.execute(
                    _OUR_ADVISORY_LOCK).fetchone()["pid"]
                sql.execute("SELECT pg_terminate_backend(%s)", (lock_pid,))
                # the lock is free: another run takes it and finishes its own (overlapping) work
                second_result.append(cron.run_exclusively("purge", lambda b: {"complete": True}))
            if len(batches) > 50:
                break
        return {"complete": True, "batches": len(batches)}

    first = cron.run_exclusively("purge", first_work)
    assert first["complete"] is False and "interrupted" in first
    assert len(batches) == 2  # noticed at its very next batch
    assert second_result == [{"job": "purge", "complete": True}]
    runs = sql.execute("SELECT status, complete FROM cron_runs ORDER BY id").fetchall()
    assert [r["status"] for r in runs] == ["interrupted", "succeeded"]


def test_a_lock_lost_after_the_last_batch_is_never_recorded_as_success(cron_secret, sql):
    def work(budget):
        budget.keep_going()
        lock_pid = sql.execute(
            _OUR_ADVISORY_LOCK).fetchone()["pid"]
        sql.execute("SELECT pg_terminate_backend(%s)", (lock_pid,))
        return {"complete": True}

    assert "interrupted" in cron.run_exclusively("purge", work)
    assert [r["status"] for r in sql.execute("SELECT status FROM cron_runs").fetchall()] == \
        ["interrupted"]


def test_migrations_use_the_unpooled_url_when_set(monkeypatch, database_url):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1:1/pooled-unreachable")
    monkeypatch.setenv("DATABASE_URL_UNPOOLED", database_url)
    config.reload()
    result = run_cli("migrate", "status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 pending" in result.stdout and "0006_reliability" in result.stdout
