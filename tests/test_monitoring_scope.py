"""GET /api/admin/monitoring in its two scopes (issue 10 §3), over real HTTP: OWNERs of an
organization in OPERATOR_ORG_IDS see the platform; any other OWNER sees exactly their own
organization, and nothing of any other tenant's; ADMIN/MEMBER 403, no or bad token 401."""

from datetime import date, datetime, timedelta, timezone

import httpx
import pytest

from lib import config
from tests.support import monitoring_data as data
from tests.support.tokens import OTHER_PRIVATE_PEM, PUBLIC_PEM, mint_token

PATH = "/api/admin/monitoring"
OPERATOR_ORG = "org_platform_ops"
PLATFORM_ONLY = {"organizations", "blocked_ips", "crons", "alerts"}


@pytest.fixture
def url(serve, monkeypatch):
    monkeypatch.setenv("CLERK_JWT_KEY", PUBLIC_PEM)
    monkeypatch.setenv("OPERATOR_ORG_IDS", f"org_someone_else, {OPERATOR_ORG}")
    monkeypatch.setenv("QUOTA_TEAM", "100")
    config.reload()
    return serve("api/admin/monitoring.py") + PATH


def _get(url: str, token: str | None, query: str = "") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(url + query, headers=headers, timeout=30)


@pytest.mark.parametrize("org,role,status,scope", [
    (OPERATOR_ORG, "OWNER", 200, "platform"),
    (OPERATOR_ORG, "ADMIN", 403, None),
    (OPERATOR_ORG, "MEMBER", 403, None),
    (OPERATOR_ORG, None, 403, None),
    ("org_customer", "OWNER", 200, "organization"),
    ("org_customer", "ADMIN", 403, None),
    ("org_customer", "MEMBER", 403, None),
    (None, "OWNER", 200, "organization"),  # a personal organization's owner
])
def test_access_matrix_for_both_scopes(url, org, role, status, scope):
    response = _get(url, mint_token("user_matrix", org_id=org, role=role))
    assert response.status_code == status, response.text
    body = response.json()
    if status == 403:
        assert body["error"]["code"] == "forbidden" and "scope" not in body
        return
    assert body["scope"] == scope
    if scope == "platform":
        assert PLATFORM_ONLY <= set(body) and "organization" not in body
    else:
        assert not PLATFORM_ONLY & set(body)
        assert body["organization"]["id"] == (org or "user_matrix")


@pytest.mark.parametrize("token", [None, "not-a-token",
                                   mint_token("u", org_id=OPERATOR_ORG, role="OWNER",
                                              key=OTHER_PRIVATE_PEM)])
def test_no_or_bad_token_is_401_in_either_scope(url, token):
    response = _get(url, token)
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"


def test_operator_org_ids_unset_means_no_one_sees_the_platform(url, monkeypatch):
    monkeypatch.setenv("OPERATOR_ORG_IDS", "")
    config.reload()
    body = _get(url, mint_token("user_ops", org_id=OPERATOR_ORG, role="OWNER")).json()
    assert body["scope"] == "organization" and body["organization"]["id"] == OPERATOR_ORG


def _organization(conn, external_id: str, plan: str, status: str | None) -> str:
    return conn.execute("INSERT INTO organizations (external_id, plan, subscription_status)"
                        " VALUES (%s, %s, %s) RETURNING id::text",
                        (external_id, plan, status)).fetchone()[0]


def test_organization_scope_is_exact_with_two_busy_tenants(url, conn):
    now = datetime.now(timezone.utc)
    recent, days_ago_3, today = now - timedelta(minutes=5), now - timedelta(days=3), now.date()
    acme = _organization(conn, "org_acme", "TEAM", "active")
    other = _organization(conn, "org_globex", "AGENCY", "active")
    # acme: 6 OpenAI successes, 2 failures, 2 fallbacks to Anthropic in the last hour; 4 three
    # days ago; a purged day 20 days ago (usage_daily); one pending row that doesn't count.
    data.generations(conn, acme, recent, 6, latency_ms=400)
    data.generations(conn, acme, recent, 2, status="failed", input_tokens=0, output_tokens=0,
                     cost_usd=0, latency_ms=900)
    data.generations(conn, acme, recent, 2, provider="anthropic", model="claude-3-5-haiku-latest",
                     input_tokens=5, output_tokens=7, cost_usd=0.002, latency_ms=1500,
                     fallback=True)
    data.generations(conn, acme, days_ago_3, 4)
    data.generations(conn, acme, recent, 1, status="pending", latency_ms=None)
    data.rollup(conn, today - timedelta(days=20), acme, 7, 1, input_tokens=70, output_tokens=140,
                cost_usd=0.007)
    conn.execute("INSERT INTO generation_usage (organization_id, month, used, quota_limit)"
                 " VALUES (%s, %s, 12, 100)", (acme, today.replace(day=1)))
    # globex: busier, other models, the same days, its own purged day and quota counter.
    data.generations(conn, other, recent, 50, model="gpt-4o", cost_usd=0.02, latency_ms=3000)
    data.generations(conn, other, recent, 20, status="failed", latency_ms=9000)
    data.generations(conn, other, recent, 5, fallback=True, fallback_reason="circuit_open")
    data.generations(conn, other, days_ago_3, 30, model="gpt-4o")
    data.rollup(conn, today - timedelta(days=20), other, 90, 9, model="gpt-4o",
                input_tokens=900, output_tokens=900, cost_usd=1.5)
    conn.execute("INSERT INTO generation_usage (organization_id, month, used, quota_limit)"
                 " VALUES (%s, %s, 105, 5000)", (other, today.replace(day=1)))

    response = _get(url, mint_token("user_acme_owner", org_id="org_acme", role="OWNER"), "?days=7")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.pop("generated_at").endswith("Z")

    def day_count(day: date) -> int:
        return (10 if day == recent.date() else 0) + (4 if day == days_ago_3.date() else 0) + \
            (7 if day == today - timedelta(days=20) else 0)

    def day_failed(day: date) -> int:
        return (2 if day == recent.date() else 0) + (1 if day == today - timedelta(days=20) else 0)

    daily = [{"date": (today - timedelta(days=6 - i)).isoformat(),
              "count": day_count(today - timedelta(days=6 - i)),
              "failed": day_failed(today - timedelta(days=6 - i))} for i in range(7)]
    week_start = today - timedelta(days=today.weekday() + 7 * 7)
    weekly = []
    for w in range(8):
        monday = week_start + timedelta(days=7 * w)
        iso = monday.isocalendar()
        weekly.append({"week": f"{iso.year}-W{iso.week:02d}",
                       "count": sum(day_count(monday + timedelta(days=d)) for d in range(7))})
    next_month = date(today.year + today.month // 12, today.month % 12 + 1, 1)
    recent_in_7d = recent.date() >= today - timedelta(days=6)

    def totals(requests, input_tokens, output_tokens, cost):
        return {"requests": requests, "input_tokens": input_tokens, "output_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens, "cost_usd": pytest.approx(cost)}

    live = {"requests": 10, "failed": 2, "error_rate": 0.2, "openai_error_rate": 0.2,
            "fallback_rate": 0.2, "p95_latency_ms": 1500.0, "provider_misconfigured": 0}
    assert body == {
        "scope": "organization",
        "days": 7,
        "organization": {"id": "org_acme", "plan": "TEAM", "subscription_status": "active",
                         "trial_ends_at": None,
                         "quota": {"limit": 100, "used": 12, "remaining": 88,
                                   "resets_at": f"{next_month.isoformat()}T00:00:00Z"}},
        "generations": {"daily": daily, "weekly": weekly},
        "tokens": {
            "24h": totals(10, 70, 134, 0.010),
            "7d": {"since": (today - timedelta(days=6)).isoformat(),
                   **(totals(14, 110, 214, 0.014) if recent_in_7d else totals(4, 40, 80, 0.004))},
            "30d": {"since": (today - timedelta(days=29)).isoformat(),
                    **totals(21, 180, 354, 0.021)},
            "by_model": [
                {"provider": "openai", "model": "gpt-4o-mini", **totals(19, 170, 340, 0.017)},
                {"provider": "anthropic", "model": "claude-3-5-haiku-latest",
                 **totals(2, 10, 14, 0.004)},
            ],
        },
        "llm": {"1h": live, "24h": live},
    }
    assert "gpt-4o\"" not in response.text and "globex" not in response.text

    # The other tenant's OWNER sees theirs, and the operator still sees both.
    globex = _get(url, mint_token("user_globex_owner", org_id="org_globex", role="OWNER")).json()
    assert globex["organization"]["quota"]["used"] == 105
    assert globex["llm"]["1h"]["requests"] == 75
    platform = _get(url, mint_token("user_ops", org_id=OPERATOR_ORG, role="OWNER")).json()
    assert platform["scope"] == "platform" and platform["llm"]["1h"]["requests"] == 85
