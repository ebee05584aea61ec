"""`doctor`: every setting checked without printing secrets, then Postgres and Redis."""

import uuid

import psycopg
import pytest

from lib import config
from ops import doctor
from tests.conftest import _with_dbname
from tests.support.cli import run_cli
from tests.support.tokens import PUBLIC_PEM

SECRETS = {
    "OPENAI_API_KEY": "sk-proj-" + "A" * 40,
    "ANTHROPIC_API_KEY": "sk-ant-api03-" + "B" * 40,
    "STRIPE_SECRET_KEY": "sk_live_" + "C" * 30,
    "STRIPE_WEBHOOK_SECRET": "whsec_" + "D" * 32 + ",whsec_" + "E" * 32,
    "CRON_SECRET": "F" * 32,
    "CLERK_JWT_KEY": PUBLIC_PEM.replace("\n", "\\n"),
}
GOOD = {**SECRETS, "STRIPE_PRICE_TEAM": "price_team1", "STRIPE_PRICE_AGENCY": "price_ag1,price_ag2",
        "SENTRY_DSN": "https://abc123@o1.ingest.sentry.io/42", "SMTP_URL": "smtp://u:p@mail.local:587",
        "EMAIL_FROM": "Ascendos <hello@example.com>",
        "CLERK_AUTHORIZED_PARTIES": "https://app.example.com", "OPERATOR_ORG_IDS": "org_ops"}


def _lines(stdout: str) -> dict[str, str]:
    return {line.split()[1]: line for line in stdout.splitlines() if len(line.split()) > 1
            and line.split()[0] in ("ok", "warn", "FAIL")}


def test_a_complete_configuration_passes_and_no_secret_is_printed():
    result = run_cli("doctor", env=GOOD)
    assert result.returncode == 0, result.stdout
    lines = _lines(result.stdout)
    assert all(line.startswith("ok") for line in lines.values()), result.stdout
    assert "postgres" in lines and "redis" in lines and "RSA 2048-bit" in lines["CLERK_JWT_KEY"]
    assert lines["OPENAI_API_KEY"].split()[2] == "sk-proj-…"  # the runbook's `head -c`, shorter
    for secret in SECRETS.values():
        for part in secret.split(","):
            assert part[:12] not in result.stdout or part.startswith("-----BEGIN")
    assert "p@mail" not in result.stdout  # the SMTP password either


@pytest.mark.parametrize("name,value,message", [
    ("OPENAI_API_KEY", "sk-ant-api03-" + "x" * 30, "does not look like sk-..."),
    ("OPENAI_API_KEY", "pk-" + "x" * 30, "does not look like sk-..."),
    ("ANTHROPIC_API_KEY", "sk-proj-" + "x" * 30, "does not look like sk-ant-..."),
    ("STRIPE_WEBHOOK_SECRET", "whsec_ok,notwhsec", "does not start with whsec_"),
    ("CLERK_JWT_KEY", "-----BEGIN PUBLIC KEY-----\\ngarbage\\n-----END PUBLIC KEY-----", "not a parseable PEM"),
    ("CRON_SECRET", "short", "only 5 characters, needs at least 16"),
    ("STRIPE_PRICE_AGENCY", "", "not set"),
    ("STRIPE_PRICE_TEAM", "prod_123", "does not start with price_"),
    ("STRIPE_SECRET_KEY", "", "not set"),
    ("SMTP_URL", "http://mail.local", "scheme must be smtp or smtps"),
    ("CLERK_AUTHORIZED_PARTIES", "", "not set"),
])
def test_each_wrong_setting_fails_with_a_fix(name, value, message):
    result = run_cli("doctor", "--offline", env={**GOOD, name: value, "VERCEL_ENV": "production"})
    assert result.returncode == 1
    line = _lines(result.stdout)[name]
    assert line.startswith("FAIL") and message in line and "->" in line


def test_optional_features_off_are_warnings_not_failures():
    result = run_cli("doctor", "--offline", env={**GOOD, "SENTRY_DSN": "", "SMTP_URL": "",
                                                 "ANTHROPIC_API_KEY": ""})
    assert result.returncode == 0
    lines = _lines(result.stdout)
    assert all(lines[name].startswith("warn") for name in ("SENTRY_DSN", "SMTP_URL", "ANTHROPIC_API_KEY"))


def test_a_malformed_variable_is_named(monkeypatch):
    result = run_cli("doctor", "--offline", env={**GOOD, "QUOTA_TEAM": "lots"})
    assert result.returncode == 1 and "QUOTA_TEAM must be an integer" in _lines(result.stdout)["settings"]


def test_unreachable_redis_and_postgres_fail():
    result = run_cli("doctor", env={**GOOD, "UPSTASH_REDIS_REST_URL": "http://127.0.0.1:9",
                                    "DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:9/x"})
    lines = _lines(result.stdout)
    assert result.returncode == 1
    assert lines["postgres"].startswith("FAIL") and lines["redis"].startswith("FAIL")
    assert "hunter2" not in result.stdout


def test_pending_migrations_fail_with_the_command_that_fixes_them(postgres_server_url):
    name = f"ascendos_doc_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        result = run_cli("doctor", env={**GOOD, "DATABASE_URL": _with_dbname(postgres_server_url, name)})
        line = _lines(result.stdout)["postgres"]
        assert result.returncode == 1 and "pending" in line and "python -m ops migrate" in line
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_every_variable_production_requires_is_checked_and_every_check_is_a_variable():
    required = {var.name for var in config.VARS if doctor.ENVIRONMENT in var.required}
    assert required and required <= set(doctor._CHECKS) <= set(config.BY_NAME)


def test_config_docs_reports_the_generated_files_up_to_date():
    result = run_cli("config-docs", "--check")
    assert result.returncode == 0 and "up to date" in result.stdout


# --- --live: the providers' models endpoints (issue 12) -----------------------------------

@pytest.fixture
def providers():
    from devtools.fake_llm import FakeAnthropic, FakeOpenAI

    openai, anthropic = FakeOpenAI(), FakeAnthropic()
    openai.models = ["gpt-4.1-mini", "gpt-5.4-mini", "gpt-5.4-mini-2026-03-17"]
    anthropic.models = ["claude-haiku-5-5-20260901", "claude-sonnet-5"]
    yield openai, anthropic
    openai.close()
    anthropic.close()


def _live_env(openai, anthropic, **extra: str) -> dict[str, str]:
    return {**GOOD, "OPENAI_BASE_URL": openai.base_url, "ANTHROPIC_BASE_URL": anthropic.base_url,
            "OPENAI_MODEL": "gpt-5.4-mini", "ANTHROPIC_MODEL": "claude-haiku-5-5", **extra}


def test_live_passes_when_both_models_exist(providers):
    openai, anthropic = providers
    result = run_cli("doctor", "--live", env=_live_env(openai, anthropic))
    assert result.returncode == 0, result.stdout
    lines = _lines(result.stdout)
    assert lines["openai-model"].startswith("ok") and "gpt-5.4-mini is listed" in lines["openai-model"]
    assert lines["anthropic-model"].startswith("ok")  # an alias of a dated snapshot
    assert [r["path"].split("?")[0] for r in openai.requests] == ["/v1/models"]
    sent = anthropic.requests[0]["headers"]
    assert SECRETS["ANTHROPIC_API_KEY"] in (sent.get("x-api-key") or sent["authorization"])


def test_live_fails_with_the_fix_when_a_model_is_missing(providers):
    openai, anthropic = providers
    result = run_cli("doctor", "--live", env=_live_env(
        openai, anthropic, ANTHROPIC_MODEL="claude-3-5-haiku-latest"))
    assert result.returncode == 1, result.stdout
    line = _lines(result.stdout)["anthropic-model"]
    assert line.startswith("FAIL") and "claude-3-5-haiku-latest is not among the 2 models" in line
    assert "set ANTHROPIC_MODEL to one of: claude-haiku-5-5-20260901, claude-sonnet-5" in line
    assert _lines(result.stdout)["openai-model"].startswith("ok")


def test_live_says_when_the_key_is_refused(providers):
    openai, anthropic = providers
    openai.status = 401
    result = run_cli("doctor", "--live", env=_live_env(openai, anthropic))
    assert result.returncode == 1
    line = _lines(result.stdout)["openai-model"]
    assert "HTTP 401" in line and "OPENAI_API_KEY is refused" in line
    assert SECRETS["OPENAI_API_KEY"][:12] not in result.stdout
