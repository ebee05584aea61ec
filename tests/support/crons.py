"""Fixtures and rows for the cron tests: CRON_SECRET set, a real SMTP server, and small
factories for organizations, users and generations written with plain SQL."""

import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from lib import config
from devtools.smtp import SmtpServer, SmtpSink

SECRET = "test-cron-secret-0123456789"
SENDER = "Ascendos <reminders@ascendos.test>"


@pytest.fixture
def cron_secret(monkeypatch) -> str:
    monkeypatch.setenv("CRON_SECRET", SECRET)
    config.reload()
    return SECRET


@pytest.fixture
def smtp(monkeypatch, cron_secret):
    """A running SMTP server, configured as SMTP_URL/EMAIL_FROM; yields its SmtpSink."""
    sink = SmtpSink()
    server = SmtpServer(sink)
    monkeypatch.setenv("SMTP_URL", server.url)
    monkeypatch.setenv("EMAIL_FROM", SENDER)
    monkeypatch.setenv("APP_URL", "https://app.ascendos.test")
    config.reload()
    yield sink
    server.stop()


def fire(url: str, path: str, method: str = "GET", secret: str | None = SECRET, **kwargs) -> httpx.Response:
    headers = {"authorization": f"Bearer {secret}"} if secret else {}
    return httpx.request(method, url + path, headers=headers, timeout=30, **kwargs)


def now() -> datetime:
    return datetime.now(timezone.utc)


def org(conn, plan: str = "TEAM", *, status: str | None = "active", trial_ends_at: datetime | None = None) -> str:
    if plan == "TRIAL" and trial_ends_at is None:
        trial_ends_at = now() + timedelta(days=10)
    return str(conn.execute(
        "INSERT INTO organizations (external_id, plan, subscription_status, trial_ends_at) "
        "VALUES (%s, %s, %s, %s) RETURNING id",
        (f"org_{uuid.uuid4().hex[:10]}", plan, None if plan == "TRIAL" else status, trial_ends_at),
    ).fetchone()["id"])


def user(conn, organization_id: str, email: str | None = "auto", *, opted_out: bool = False) -> str:
    user_id = f"user_{uuid.uuid4().hex[:10]}"
    if email == "auto":
        email = f"{user_id}@example.test"
    conn.execute("INSERT INTO users (id, organization_id, email, reminders_opt_out) VALUES (%s, %s, %s, %s)",
                 (user_id, organization_id, email, opted_out))
    return user_id


def generation(conn, organization_id: str, *, user_id: str | None = None, created_at: datetime | None = None,
               status: str = "succeeded", provider: str | None = "openai", model: str | None = "gpt-4o-mini",
               input_tokens: int = 10, output_tokens: int = 20, cost_usd: str = "0.00010000") -> None:
    conn.execute(
        "INSERT INTO generations (organization_id, user_id, status, provider, model, input_tokens, "
        "output_tokens, cost_usd, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (organization_id, user_id, status, provider, model, input_tokens, output_tokens, cost_usd,
         created_at or now()))
