"""Issue 10 §1: no configured secret, prompt or email reaches Sentry, whatever fails.

Every secret variable holds a distinct canary. Each fault path is driven against the real
handler (served the way production serves it) with the real SDK sending to the local Sentry
receiver; the raw envelopes it received must hold none of the canaries, no prompt, no email.
"""

import hmac
import json
import re
from urllib.parse import quote

import httpx
import psycopg
import pytest

from devtools import upstash_proxy
from devtools.fake_llm import FakeAnthropic, FakeOpenAI
from devtools.serve import SentryReceiver
from devtools.services import free_port
from lib import config
from ops.stripe_events import sample_event
from tests.support.stripe_signing import PRICE_AGENCY, PRICE_TEAM, ROUTE, signature
from tests.support.tokens import PUBLIC_PEM, mint_token

DB_PASSWORD = "canaryDbPassw0rd7c1e"
CANARIES = {
    "UPSTASH_REDIS_REST_TOKEN": "canary-upstash-token-5d2a91",
    "OPENAI_API_KEY": "sk-canary-openai-8b7e66",
    "ANTHROPIC_API_KEY": "sk-ant-canary-anthropic-3f09c4",
    "STRIPE_SECRET_KEY": "sk_test_canary_stripe_a61d20",
    "STRIPE_WEBHOOK_SECRET": "whsec_canary_current_9e4b17,whsec_canary_previous_02cd55",
    "CLERK_SECRET_KEY": "sk_test_canary_clerk_b83f0e",
    "CRON_SECRET": "canary-cron-secret-4477aa19",
    "UNSUBSCRIBE_SECRET": "canary-unsubscribe-secret-61be03",
    "SMTP_URL": "smtp://mailer:canarySmtpPass6e2f@127.0.0.1:{smtp_port}",
    "DATABASE_URL_UNPOOLED": "postgresql://postgres:canaryUnpooledPw7c1d@127.0.0.1:1/direct",
    "ALERT_WEBHOOK_URL": "http://127.0.0.1:1/services/T0/B0/canary-alert-hook-93ad5e",
}
SECRET_VALUES = [DB_PASSWORD, "smtp://mailer:canarySmtpPass6e2f", "canarySmtpPass6e2f",
                 "canaryUnpooledPw7c1d", "canary-alert-hook-93ad5e",
                 *[v for k, v in CANARIES.items() if k not in ("SMTP_URL", "STRIPE_WEBHOOK_SECRET")],
                 *CANARIES["STRIPE_WEBHOOK_SECRET"].split(",")]
PROMPT = "Draft the Zorblax merger memo for Quintessa"
SYSTEM = "You are the Zorblax counsel"
EMAIL = "victim.canary@example.com"


class Env:
    def __init__(self, monkeypatch, receiver, openai, anthropic, database_url, upstash_url):
        self.monkeypatch, self.receiver = monkeypatch, receiver
        self.openai, self.anthropic = openai, anthropic
        self.database_url, self.upstash_url = database_url, upstash_url
        self.dead = f"127.0.0.1:{free_port()}"

    def set(self, **env: str) -> None:
        for key, value in env.items():
            self.monkeypatch.setenv(key, value)
        config.reload()

    def postgres_down(self) -> None:
        self.set(DATABASE_URL=f"postgresql://postgres:{DB_PASSWORD}@{self.dead}/ascendos")

    def redis_down(self) -> None:
        self.set(UPSTASH_REDIS_REST_URL=f"http://{self.dead}")

    def assert_clean(self, min_events: int = 1) -> bytes:
        """Wait for the expected events, then check every byte the receiver got."""
        assert self.receiver.wait_for(min_events, timeout=10), "the fault was not reported"
        raw = b"".join(self.receiver.raw)
        text = raw.decode("utf-8", "replace")
        for secret in SECRET_VALUES:
            for form in {secret, quote(secret, safe=""), json.dumps(secret)[1:-1]}:
                assert form not in text, f"secret {secret[:8]}... reached Sentry"
        for personal in (PROMPT, SYSTEM, "Zorblax", "Quintessa", EMAIL, "victim.canary"):
            assert personal not in text, f"{personal!r} reached Sentry"
        assert not re.search(r"[\w.+-]+@[\w-]+\.[\w.]+", text.replace("publickey@", "")), \
            "an email address reached Sentry"
        return raw


@pytest.fixture
def env(monkeypatch, database_url, redis_url):
    receiver = SentryReceiver()
    proxy = upstash_proxy.serve(redis_url, CANARIES["UPSTASH_REDIS_REST_TOKEN"])
    openai, anthropic = FakeOpenAI(), FakeAnthropic()
    # The real test database, reached with a password (trust auth ignores it; Sentry mustn't see it).
    user_part = database_url.split("://", 1)[1].split("@", 1)
    with_password = f"postgresql://postgres:{DB_PASSWORD}@{user_part[1]}"
    upstash_url = f"http://127.0.0.1:{proxy.server_address[1]}"
    values = {**CANARIES, "SMTP_URL": CANARIES["SMTP_URL"].format(smtp_port=free_port()),
              "SENTRY_DSN": receiver.dsn, "DATABASE_URL": with_password,
              "UPSTASH_REDIS_REST_URL": upstash_url,
              "CLERK_JWT_KEY": PUBLIC_PEM, "CLERK_AUTHORIZED_PARTIES": "",
              "OPENAI_BASE_URL": openai.base_url, "ANTHROPIC_BASE_URL": anthropic.base_url,
              "LLM_TIMEOUT_S": "5", "REDIS_TIMEOUT_S": "2",
              "STRIPE_PRICE_TEAM": PRICE_TEAM, "STRIPE_PRICE_AGENCY": PRICE_AGENCY}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    config.reload()
    yield Env(monkeypatch, receiver, openai, anthropic, with_password, upstash_url)
    receiver.close()
    proxy.shutdown()
    proxy.server_close()
    openai.close()
    anthropic.close()


def _generate(url: str, token: str | None = None) -> httpx.Response:
    token = token or mint_token("user_canary", org_id="org_canary", email=EMAIL)
    return httpx.post(url + "/api/generate", json={"prompt": PROMPT, "system": SYSTEM},
                      headers={"authorization": f"Bearer {token}"}, timeout=30)


def test_every_secret_variable_holds_a_canary(env):
    """The canary set covers every secret of the settings table (but the DSN, which is the
    receiver's address), so a new secret variable makes this test ask for its canary."""
    secret_vars = {var.name for var in config.VARS if var.secret} - {"SENTRY_DSN"}
    assert secret_vars == set(CANARIES) | {"DATABASE_URL"}


def test_health_with_postgres_down(env, serve):
    url = serve("api/health.py")
    env.postgres_down()
    assert httpx.get(url + "/api/health", timeout=30).status_code == 503
    env.assert_clean()


def test_webhook_with_postgres_down(env, serve):
    url = serve("api/webhooks/stripe.py")
    env.postgres_down()
    body = json.dumps(sample_event("customer.subscription.created", org="org_x",
                                   customer="cus_x", price=PRICE_TEAM)).encode()
    secret = CANARIES["STRIPE_WEBHOOK_SECRET"].split(",")[0]
    response = httpx.post(url + ROUTE, content=body, timeout=30, headers={
        "content-type": "application/json", "stripe-signature": signature(body, [secret])})
    assert response.status_code >= 500
    env.assert_clean()


def test_generate_with_postgres_down(env, serve):
    url = serve("api/generate.py")
    env.postgres_down()
    assert _generate(url).status_code >= 500
    env.assert_clean(min_events=0)


def test_generate_with_redis_down(env, serve):
    url = serve("api/generate.py")
    env.redis_down()
    assert _generate(url).status_code == 200
    env.assert_clean()


def test_providers_failing_with_redis_down(env, serve):
    url = serve("api/generate.py")
    env.redis_down()
    env.openai.status = env.anthropic.status = 500
    assert _generate(url).status_code == 502
    env.assert_clean()


def test_malformed_clerk_key(env, serve):
    url = serve("api/generate.py")
    env.set(CLERK_JWT_KEY="-----BEGIN PUBLIC KEY-----\\nbm90IGEga2V5\\n-----END PUBLIC KEY-----")
    response = _generate(url)
    assert response.status_code == 500
    env.assert_clean()


def _exploding(*args, **kwargs):
    """A third-party failure whose message carries everything it could possibly see."""
    raise RuntimeError(f"driver exploded: dsn={config.settings().database_url} "
                       f"settings={vars(config.settings())} prompt={PROMPT} system={SYSTEM} "
                       f"user={EMAIL}")


def test_unhandled_exception_in_the_generate_route(env, serve, monkeypatch):
    url = serve("api/generate.py")
    monkeypatch.setattr(psycopg.Connection, "execute", _exploding)
    assert _generate(url).status_code == 500
    monkeypatch.undo()
    env.assert_clean()


def test_unhandled_exception_in_a_cron_route(env, serve, monkeypatch):
    url = serve("api/cron/purge.py")

    original = hmac.compare_digest

    def compare(given, secret):
        if secret != CANARIES["CRON_SECRET"].encode():  # the in-process Upstash proxy's check
            return original(given, secret)
        raise RuntimeError(f"cannot compare {given!r} with {secret!r}; {config.settings()!r} "
                           f"{vars(config.settings())}")

    monkeypatch.setattr(hmac, "compare_digest", compare)
    response = httpx.post(url + "/api/cron/purge?secret=" + CANARIES["CRON_SECRET"], timeout=30)
    assert response.status_code == 500
    monkeypatch.undo()
    env.assert_clean()


def test_settings_repr_masks_every_secret(env):
    shown = repr(config.settings())
    for secret in SECRET_VALUES:
        assert secret not in shown
    assert "***" in shown and config.settings().openai_model in shown  # the rest stays readable
