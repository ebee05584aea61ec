"""GET /api/health: the runbook's contract, and a bounded answer when a dependency is down."""

import re
import socket
import threading
import time

import httpx
import pytest

from lib import config
from devtools.serve import serve_through_vercel_runtime

ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never answers (a hung dependency)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held = []
    stop = threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    yield sock.getsockname()[1]
    stop.set()
    for conn in held:
        conn.close()
    sock.close()


def test_healthy_matches_the_runbook_contract(serve):
    response = httpx.get(serve("api/health.py") + "/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["checks"] == {"database": "ok", "redis": "ok"}
    assert ISO_MS_Z.match(body["timestamp"])
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-request-id"]


def _get_unhealthy(url: str) -> tuple[dict, float]:
    started = time.monotonic()
    response = httpx.get(url + "/api/health", timeout=10)
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    return body, elapsed


def test_database_refusing_connections_is_unhealthy(serve, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"postgresql://nobody:secretpw@127.0.0.1:{_closed_port()}/x")
    config.reload()
    body, elapsed = _get_unhealthy(serve("api/health.py"))
    assert body["checks"] == {"database": "error", "redis": "ok"}
    assert "secretpw" not in str(body) and elapsed < 3


def test_hung_database_answers_within_three_seconds(serve, monkeypatch, silent_server):
    monkeypatch.setenv("DATABASE_URL", f"postgresql://u@127.0.0.1:{silent_server}/x")
    config.reload()
    body, elapsed = _get_unhealthy(serve("api/health.py"))
    assert body["checks"]["database"] == "error"
    assert elapsed < 3


def test_redis_down_is_unhealthy(serve, monkeypatch):
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", f"http://127.0.0.1:{_closed_port()}")
    config.reload()
    body, elapsed = _get_unhealthy(serve("api/health.py"))
    assert body["checks"] == {"database": "ok", "redis": "error"}
    assert elapsed < 3


def test_hung_redis_answers_within_three_seconds(serve, monkeypatch, silent_server):
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", f"http://127.0.0.1:{silent_server}")
    config.reload()
    body, elapsed = _get_unhealthy(serve("api/health.py"))
    assert body["checks"] == {"database": "ok", "redis": "error"}
    assert elapsed < 3


def test_wrong_upstash_token_is_unhealthy(serve, monkeypatch):
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", "not-the-token")
    config.reload()
    body, _ = _get_unhealthy(serve("api/health.py"))
    assert body["checks"]["redis"] == "error"


@pytest.mark.slow
def test_health_through_the_vercel_runtime_adapter(app_env):
    with serve_through_vercel_runtime("api/health.py", app_env) as url:
        response = httpx.get(url + "/api/health", headers={"x-vercel-id": "fra1::abc123"}, timeout=20)
        assert response.status_code == 200
        assert response.json()["checks"] == {"database": "ok", "redis": "ok"}
        assert response.headers["x-request-id"] == "fra1::abc123"
        assert httpx.post(url + "/api/health", timeout=20).status_code == 405


@pytest.mark.slow
def test_health_through_the_adapter_reports_a_dead_database(app_env):
    env = {**app_env, "DATABASE_URL": f"postgresql://u@127.0.0.1:{_closed_port()}/x"}
    with serve_through_vercel_runtime("api/health.py", env) as url:
        response = httpx.get(url + "/api/health", timeout=20)
        assert response.status_code == 503
        assert response.json()["checks"] == {"database": "error", "redis": "ok"}
