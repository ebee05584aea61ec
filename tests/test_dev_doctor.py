"""doctor knows where it runs: the local defaults `make dev` uses are warnings in development
(naming the default) and failures in production."""

import pytest

from tests.support.cli import run_cli
from tests.support.tokens import PUBLIC_PEM

DEV = {"OPENAI_API_KEY": "sk-local-dev", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
       "OPENAI_MODEL": "local-dev", "ANTHROPIC_API_KEY": "", "STRIPE_SECRET_KEY": "",
       "STRIPE_WEBHOOK_SECRET": "whsec_dev_" + "x" * 30, "STRIPE_PRICE_TEAM": "price_test_team",
       "STRIPE_PRICE_AGENCY": "price_test_agency", "SMTP_URL": "", "EMAIL_FROM": "",
       "CRON_SECRET": "c" * 32, "CLERK_JWT_KEY": PUBLIC_PEM.replace("\n", "\\n"),
       "APP_ENV": "development", "VERCEL_ENV": ""}
LOCAL = ("OPENAI_API_KEY", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_PRICE_TEAM",
         "STRIPE_PRICE_AGENCY", "SMTP_URL")


def _lines(stdout: str) -> dict[str, str]:
    return {line.split()[1]: line for line in stdout.splitlines() if len(line.split()) > 1
            and line.split()[0] in ("ok", "warn", "FAIL")}


def test_in_development_the_local_defaults_are_warnings_that_name_them():
    result = run_cli("doctor", env=DEV)
    assert result.returncode == 0, result.stdout
    lines = _lines(result.stdout)
    assert all(lines[name].startswith("warn") for name in LOCAL), result.stdout
    assert "local-dev" in lines["OPENAI_API_KEY"] and "whsec_dev_" in lines["STRIPE_WEBHOOK_SECRET"]
    assert "skipped: email not configured" in lines["SMTP_URL"]
    assert "development" in lines["environment"]


@pytest.mark.parametrize("unset", ["OPENAI_API_KEY", "STRIPE_WEBHOOK_SECRET", "SMTP_URL"])
def test_in_development_a_missing_one_is_a_warning_too(unset):
    result = run_cli("doctor", "--offline", env={**DEV, unset: "", "OPENAI_MODEL": "gpt-4o-mini"})
    assert result.returncode == 0, result.stdout
    assert _lines(result.stdout)[unset].startswith("warn")


def test_in_production_the_same_things_fail():
    result = run_cli("doctor", "--offline", env={**DEV, "VERCEL_ENV": "production"})
    assert result.returncode == 1
    lines = _lines(result.stdout)
    assert all(lines[name].startswith("FAIL") for name in LOCAL), result.stdout
    assert "production" in lines["environment"]
    missing = run_cli("doctor", "--offline", env={**DEV, "VERCEL_ENV": "production",
                                                  "OPENAI_API_KEY": "", "OPENAI_MODEL": "gpt-4o-mini",
                                                  "STRIPE_WEBHOOK_SECRET": ""})
    lines = _lines(missing.stdout)
    assert lines["OPENAI_API_KEY"].startswith("FAIL") and lines["STRIPE_WEBHOOK_SECRET"].startswith("FAIL")
