"""`health --url`: the runbook's health check from a terminal, non-zero when unhealthy."""

from lib import maintenance
from tests.support.cli import run_cli


def test_healthy_deployment_exits_0(serve):
    result = run_cli("health", "--url", serve("api/health.py"))
    assert result.returncode == 0
    assert result.stdout.strip() == "healthy [200]: database ok, redis ok"


def test_unhealthy_deployment_exits_1(serve, monkeypatch):
    from lib import config

    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:9")
    config.reload()
    result = run_cli("health", "--url", serve("api/health.py"))
    assert result.returncode == 1
    assert result.stdout.strip() == "unhealthy [503]: database ok, redis error"


def test_unreachable_deployment_exits_1():
    result = run_cli("health", "--url", "http://127.0.0.1:9", "--timeout", "2")
    assert result.returncode == 1 and "did not answer" in result.stdout


def test_maintenance_is_shown(serve):
    maintenance.enable()
    result = run_cli("health", "--url", serve("api/health.py"))
    assert result.returncode == 0 and "maintenance mode ON" in result.stdout
