"""`maintenance on|off|status` against the real Redis and Postgres, seen by a real route."""

import httpx

from tests.support.cli import run_cli


def test_on_then_off_switches_the_routes(serve):
    url = serve("api/admin/monitoring.py") + "/api/admin/monitoring"
    result = run_cli("maintenance", "on", "--retry-after", "90", "--message", "Back at 04:00 UTC")
    assert result.returncode == 0, result.stderr
    response = httpx.get(url)
    assert response.status_code == 503 and response.headers["retry-after"] == "90"
    assert response.json()["error"]["message"] == "Back at 04:00 UTC"
    status = run_cli("maintenance", "status")
    assert status.returncode == 0 and "maintenance: ON" in status.stdout and "(read from redis)" in status.stdout
    assert run_cli("maintenance", "off").returncode == 0
    assert "maintenance: off" in run_cli("maintenance", "status").stdout


def test_status_reads_postgres_when_redis_is_down():
    assert run_cli("maintenance", "on").returncode == 0
    status = run_cli("maintenance", "status", env={"UPSTASH_REDIS_REST_URL": "http://127.0.0.1:9"})
    assert status.returncode == 0 and "ON" in status.stdout and "(read from database)" in status.stdout


def test_a_store_that_cannot_be_written_exits_1():
    result = run_cli("maintenance", "on", env={"UPSTASH_REDIS_REST_URL": "http://127.0.0.1:9"})
    assert result.returncode == 1 and "could not update redis" in result.stdout


def test_bad_retry_after_is_a_usage_error():
    assert run_cli("maintenance", "on", "--retry-after", "0").returncode == 2
    assert run_cli("maintenance", "sideways").returncode == 2
