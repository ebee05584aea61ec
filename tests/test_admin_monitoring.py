"""GET /api/admin/monitoring over real HTTP: OWNER only, bad input is a clear 4xx, Redis
trouble degrades only the Redis part, Postgres trouble is a 503."""

import socket
from datetime import datetime, timedelta, timezone

import httpx
import psycopg
import pytest

from lib import config
from tests.support import monitoring_data as data
from devtools.serve import serve_through_vercel_runtime
from tests.support.tokens import OTHER_PRIVATE_PEM, PUBLIC_PEM, mint_token, unsigned_token

PATH = "/api/admin/monitoring"
PAYLOAD_KEYS = {"generated_at", "organizations", "generations", "blocked_ips", "tokens", "llm",
                "crons", "alerts"}


OPERATOR_ORG = "org_operator"


@pytest.fixture
def clerk_key(monkeypatch):
    monkeypatch.setenv("CLERK_JWT_KEY", PUBLIC_PEM)
    monkeypatch.setenv("OPERATOR_ORG_IDS", f"org_other_ops,{OPERATOR_ORG}")
    config.reload()


@pytest.fixture
def url(serve, clerk_key):
    return serve("api/admin/monitoring.py") + PATH


def _owner() -> dict:
    """A platform operator: an OWNER of an organization in OPERATOR_ORG_IDS."""
    return {"Authorization": "Bearer " + mint_token("user_owner", org_id=OPERATOR_ORG, role="OWNER")}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Built when the test runs: session tokens live 60 s, longer than collecting the whole suite.
CALLERS = {
    "none": lambda: None,
    "garbage": lambda: "Bearer not-a-token",
    "basic": lambda: "Basic dXNlcjpwYXNz",
    "alg none": lambda: "Bearer " + unsigned_token({"sub": "u", "metadata": {"role": "OWNER"}}),
    "forged key": lambda: "Bearer " + mint_token("u", role="OWNER", key=OTHER_PRIVATE_PEM),
    "expired": lambda: "Bearer " + mint_token("u", role="OWNER", exp=1),
    "huge": lambda: "Bearer " + "x" * 20000,
    "member": lambda: "Bearer " + mint_token("u", org_id="org_1", role="MEMBER"),
    "no role claim": lambda: "Bearer " + mint_token("u", org_id="org_1"),
    "admin": lambda: "Bearer " + mint_token("u", org_id="org_1", role="ADMIN"),
}


@pytest.mark.parametrize("caller,status", [
    ("none", 401), ("garbage", 401), ("basic", 401), ("alg none", 401), ("forged key", 401),
    ("expired", 401), ("huge", 401), ("member", 403), ("no role claim", 403), ("admin", 403),
])
def test_only_an_owner_token_gets_the_dashboard(url, caller, status):
    authorization = CALLERS[caller]()
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.get(url, headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["code"] == {401: "unauthorized", 403: "forbidden"}[status]
    assert not PAYLOAD_KEYS & set(response.json()) and "by_plan" not in response.text


def test_owner_gets_every_section(url, app_env):
    with psycopg.connect(app_env["DATABASE_URL"], autocommit=True) as conn:
        org = data.organization(conn, "AGENCY", "active")
        data.generations(conn, org, datetime.now(timezone.utc) - timedelta(minutes=1), 3)
    response = httpx.get(url, headers=_owner())
    assert response.status_code == 200
    body = response.json()
    assert PAYLOAD_KEYS <= set(body)
    assert body["organizations"]["by_plan"] == {"TRIAL": 0, "TEAM": 0, "AGENCY": 1}
    assert body["generations"]["daily"][-1]["count"] == 3
    assert len(body["generations"]["daily"]) == 14 and len(body["generations"]["weekly"]) == 8
    assert body["llm"]["1h"]["requests"] == 3
    assert body["blocked_ips"] == {"count": 0, "ips": [], "last_hour": 0}
    assert response.headers["cache-control"] == "no-store"


def test_days_parameter_is_honoured(url):
    response = httpx.get(url + "?days=30", headers=_owner())
    assert response.status_code == 200 and len(response.json()["generations"]["daily"]) == 30


@pytest.mark.parametrize("query", ["?days=0", "?days=91", "?days=abc", "?days=-3", "?foo=bar",
                                   "?days=7&Days=7", "?" + "&".join(f"p{i}=1" for i in range(60))])
def test_bad_query_is_400(url, query):
    response = httpx.get(url + query, headers=_owner())
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


def test_bad_query_without_a_token_is_still_401(url):
    assert httpx.get(url + "?days=abc").status_code == 401


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "BREW"])
def test_other_methods_are_405(url, method):
    response = httpx.request(method, url, headers=_owner())
    assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"


def test_hostile_headers_get_a_4xx_not_a_500(url):
    for headers in ({"Authorization": "Bearer \u00e9\u00e9".encode("latin-1")}, {"Authorization": "Bearer a.b.c"},
                    {"Authorization": "Bearer " + "a." * 3000}, {"x-forwarded-for": "<script>" * 50}):
        response = httpx.get(url, headers=headers)
        assert 400 <= response.status_code < 500, headers


def test_redis_down_degrades_only_the_blocked_ips(url, monkeypatch):
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", f"http://127.0.0.1:{_closed_port()}")
    config.reload()
    response = httpx.get(url, headers=_owner(), timeout=20)
    assert response.status_code == 200
    body = response.json()
    assert body["blocked_ips"]["error"] == "unavailable"
    assert "count" not in body["blocked_ips"]
    assert body["organizations"]["total"] == 0 and len(body["generations"]["daily"]) == 14


def test_database_down_is_503_not_500(url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"postgresql://u:pw@127.0.0.1:{_closed_port()}/x")
    config.reload()
    response = httpx.get(url, headers=_owner(), timeout=20)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"


@pytest.mark.slow
def test_dashboard_through_the_vercel_runtime_adapter(app_env):
    env = {**app_env, "CLERK_JWT_KEY": PUBLIC_PEM, "OPERATOR_ORG_IDS": OPERATOR_ORG}
    with serve_through_vercel_runtime("api/admin/monitoring.py", env) as base:
        response = httpx.get(base + PATH + "?days=7", headers=_owner(), timeout=30)
        assert response.status_code == 200
        assert len(response.json()["generations"]["daily"]) == 7
        member = mint_token("u", org_id="o", role="MEMBER")
        assert httpx.get(base + PATH, headers={"Authorization": f"Bearer {member}"},
                         timeout=30).status_code == 403
