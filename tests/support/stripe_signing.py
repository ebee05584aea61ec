"""Stripe's webhook signing scheme, written from its documentation and independent of the
stripe SDK (so the tests check that our verification speaks the real scheme, not that the
SDK agrees with itself): `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256("<t>.<body>")>`."""

import hashlib
import hmac
import json
import time

import httpx
import pytest

from lib import config

SECRET = "whsec_test_current_0123456789abcdef"
OLD_SECRET = "whsec_test_previous_fedcba9876543210"
PRICE_TEAM, PRICE_TEAM_YEARLY, PRICE_AGENCY = "price_team_monthly", "price_team_yearly", "price_agency"
BILLING_ENV = {"STRIPE_WEBHOOK_SECRET": SECRET,
               "STRIPE_PRICE_TEAM": f"{PRICE_TEAM},{PRICE_TEAM_YEARLY}",
               "STRIPE_PRICE_AGENCY": PRICE_AGENCY}
ROUTE = "/api/webhooks/stripe"


def signature(body: bytes, secrets: list[str], timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + body
    parts = [f"t={timestamp}"]
    parts += [f"v1={hmac.new(s.encode(), signed, hashlib.sha256).hexdigest()}" for s in secrets]
    return ",".join(parts)


def deliver(base_url: str, event: dict | bytes, secret: str = SECRET, timestamp: int | None = None,
            client: httpx.Client | None = None) -> httpx.Response:
    """POST one event the way Stripe does: the raw JSON body, signed."""
    body = event if isinstance(event, bytes) else json.dumps(event, indent=2).encode()
    headers = {"Content-Type": "application/json; charset=utf-8",
               "Stripe-Signature": signature(body, [secret], timestamp)}
    return (client or httpx).post(base_url + ROUTE, content=body, headers=headers, timeout=30)


@pytest.fixture
def webhook_url(serve, monkeypatch) -> str:
    """The real webhook handler over HTTP, with the billing settings above."""
    for key, value in BILLING_ENV.items():
        monkeypatch.setenv(key, value)
    config.reload()
    return serve("api/webhooks/stripe.py")
