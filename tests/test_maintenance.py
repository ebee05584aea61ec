"""Maintenance mode: every route but health and the Stripe webhook answers 503 with
Retry-After; the flag is read from Redis, from Postgres while Redis is down, cached briefly."""

import socket
import time

import httpx
import psycopg
import pytest

from lib import config, maintenance


@pytest.fixture
def short_cache(monkeypatch):
    monkeypatch.setattr(maintenance, "CACHE_S", 1.5)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("entrypoint,method,path", [
    ("api/admin/monitoring.py", "GET", "/api/admin/monitoring"),
    ("api/generate.py", "POST", "/api/generate"),
    ("api/cron/purge.py", "GET", "/api/cron/purge"),
    ("api/cron/weekly-reminders.py", "GET", "/api/cron/weekly-reminders"),
])
def test_routes_answer_503_with_retry_after_during_maintenance(serve, entrypoint, method, path):
    assert maintenance.enable(retry_after_s=120, message="Upgrading the database") == []
    response = httpx.request(method, serve(entrypoint) + path, json={})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "120"
    error = response.json()["error"]
    assert (error["code"], error["message"]) == ("maintenance", "Upgrading the database")


def test_health_reports_maintenance_and_stays_healthy(serve):
    url = serve("api/health.py") + "/api/health"
    assert "maintenance" not in httpx.get(url).json()
    maintenance.enable()
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.json()["maintenance"] is True and response.json()["status"] == "healthy"


def test_stripe_webhook_is_not_refused_during_maintenance(serve):
    maintenance.enable()
    response = httpx.post(serve("api/webhooks/stripe.py") + "/api/webhooks/stripe", json={"type": "test"})
    assert response.status_code != 503


def test_routes_answer_again_after_maintenance_off(serve):
    url = serve("api/admin/monitoring.py") + "/api/admin/monitoring"
    maintenance.enable()
    assert httpx.get(url).status_code == 503
    assert maintenance.disable() == []
    assert httpx.get(url).status_code == 401  # back to normal: the route wants a token


def test_flag_is_read_from_postgres_while_redis_is_down(serve, monkeypatch):
    maintenance.enable(retry_after_s=30)
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", f"http://127.0.0.1:{_closed_port()}")
    config.reload()
    state = maintenance.read()
    assert state.on and state.source == "database" and state.retry_after_s == 30
    response = httpx.get(serve("api/admin/monitoring.py") + "/api/admin/monitoring")
    assert response.status_code == 503 and response.headers["retry-after"] == "30"


def test_redis_is_authoritative_while_it_answers(app_env, redis_direct):
    maintenance.enable()
    redis_direct.delete(maintenance.KEY)  # e.g. turned off by hand in Redis
    assert maintenance.read().on is False


def test_both_stores_down_fails_open(monkeypatch):
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("DATABASE_URL", f"postgresql://u@127.0.0.1:{_closed_port()}/x")
    config.reload()
    assert maintenance.current() == maintenance.State(False, source="none")


def test_enable_reports_a_store_it_could_not_write(app_env, monkeypatch):
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", f"http://127.0.0.1:{_closed_port()}")
    config.reload()
    assert maintenance.enable() == ["redis"]
    with psycopg.connect(app_env["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT count(*) FROM app_flags WHERE name = 'maintenance'").fetchone()[0] == 1


def test_each_process_reads_the_flag_once_per_cache_window(serve, redis_direct, short_cache):
    url = serve("api/admin/monitoring.py") + "/api/admin/monitoring"
    assert httpx.get(url).status_code == 401          # reads the flag: off, cached
    redis_direct.set(maintenance.KEY, '{"retry_after_s": 60}')  # another operator switches it on
    assert httpx.get(url).status_code == 401          # still the cached value: no round trip
    time.sleep(1.6)
    response = httpx.get(url)
    assert response.status_code == 503 and response.headers["retry-after"] == "60"


def test_a_garbled_flag_still_means_maintenance(redis_direct):
    redis_direct.set(maintenance.KEY, "not json")
    state = maintenance.read()
    assert state.on and state.retry_after_s == maintenance.DEFAULT_RETRY_AFTER_S
