"""lib/config.py: one table of variables, and everything that comes from it."""

import dataclasses
from pathlib import Path

import pytest

from lib import config
from lib.config import VARS, ConfigError, Settings

ROOT = Path(__file__).resolve().parent.parent
NUMBERS = [var for var in VARS if var.parse in (config.integer, config.number)]


@pytest.mark.parametrize("relative", sorted(config.GENERATED))
def test_generated_files_agree_with_the_table(relative):
    assert (ROOT / relative).read_text() == config.GENERATED[relative](), \
        f"{relative} is out of date: run `python -m ops config-docs`"


def test_every_setting_comes_from_exactly_one_variable():
    declared = [var.field.partition(".")[0] for var in VARS if var.field]
    plain = [name for name in declared if name not in ("quotas", "retention_days", "stripe_prices")]
    assert sorted(set(declared)) == sorted(f.name for f in dataclasses.fields(Settings))
    assert len(plain) == len(set(plain))
    assert len({var.name for var in VARS}) == len(VARS)


def test_every_variable_is_in_env_example_and_the_docs():
    example = (ROOT / ".env.example").read_text()
    docs = (ROOT / "docs/configuration.md").read_text()
    for var in VARS:
        assert f"\n{var.name}={var.default or ''}" in example
        assert f"| `{var.name}` |" in docs


def test_unset_variables_take_their_defaults(monkeypatch):
    for var in VARS:
        monkeypatch.delenv(var.name, raising=False)
    monkeypatch.delenv("VERCEL_ENV", raising=False)
    cfg = config.reload()
    assert cfg.environment == "development" and cfg.max_body_bytes == 1024 * 1024
    assert cfg.quotas == config.PerPlan(50, 1000, 5000) and cfg.rate_limit_ip == config.Rate(20, 60)
    assert cfg.stripe_prices == config.PerPaidPlan((), ()) and cfg.database_url is None
    assert cfg.clerk_api_url == "https://api.clerk.com" and cfg.redis_timeout_s == 1.0


@pytest.mark.parametrize("var", NUMBERS, ids=lambda var: var.name)
def test_bounds_are_inclusive(var, monkeypatch):
    lo = var.lo if var.lo is not None else 0
    hi = var.hi if var.hi is not None else 2**31 - 1
    field, _, plan = var.field.partition(".")
    for value in (lo, hi):
        monkeypatch.setenv(var.name, str(value))
        parsed = getattr(config.reload(), field)
        assert (parsed[plan.upper()] if plan else parsed) == value
    step = 1 if var.parse is config.integer else lo / 2 if lo else 0.5
    for value in (lo - step, hi + 1):
        monkeypatch.setenv(var.name, str(value))
        with pytest.raises(ConfigError, match=f"{var.name} must be between"):
            config.reload()


def test_malformed_values_name_the_variable_and_never_echo_it(monkeypatch):
    for name, value, message in [("QUOTA_TEAM", "lots-of-them", "must be an integer"),
                                 ("LLM_TIMEOUT_S", "soon-ish", "must be a number"),
                                 ("RATE_LIMIT_IP", "many-per-minute", "must look like '20/60s'"),
                                 ("SENTRY_DSN", "not-a-dsn-at-all", "must be a URL with a scheme")]:
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError) as caught:
            config.reload()
        assert str(caught.value).startswith(name) and message in str(caught.value)
        assert value not in str(caught.value)
        monkeypatch.delenv(name)


def test_vercel_env_wins_over_app_env(monkeypatch):
    monkeypatch.setenv("APP_ENV", "development")
    monkeypatch.setenv("VERCEL_ENV", "preview")
    assert config.reload().environment == "preview"


def test_upstash_url_and_token_go_together(monkeypatch):
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", "")
    with pytest.raises(ConfigError, match="must be set together"):
        config.reload()


def test_settings_are_frozen_and_hashable_by_value(monkeypatch):
    monkeypatch.setenv("STRIPE_PRICE_TEAM", "price_a, price_b")
    first = config.reload()
    second = config.reload()
    assert first is not second and first == second and hash(first) == hash(second)
    assert {first: 1}[second] == 1
    assert first.stripe_prices["TEAM"] == first.stripe_prices.team == ("price_a", "price_b")
    assert dict(first.quotas.items()) == {"TRIAL": 50, "TEAM": 1000, "AGENCY": 5000}
    with pytest.raises(KeyError):
        first.quotas["GOLD"]
    with pytest.raises(AttributeError):
        first.quotas.team = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.trial_days = 1  # type: ignore[misc]
    monkeypatch.setenv("QUOTA_TEAM", "7")
    assert config.reload() != first


def test_repr_masks_every_secret(monkeypatch):
    values = {}
    for index, var in enumerate(v for v in VARS if v.secret and v.field):
        value = f"{'smtp://' if var.parse is config.url else ''}secret{index}x{'Q' * 20}"
        values[var.name] = value
        monkeypatch.setenv(var.name, value)
    text = repr(config.reload())
    for value in values.values():
        assert value not in text and "Q" * 8 not in text
    assert "openai_api_key='***'" in text and "openai_model='gpt-5.4-mini'" in text
    assert "database_url='***'" in text and "quotas=PerPlan(trial=50" in text


def test_per_settings_builds_once_per_settings_value_and_reload_starts_afresh(monkeypatch):
    built, closed = [], []

    def build(cfg):
        built.append(cfg.openai_model)
        return object()

    cached = config.per_settings(build, close=closed.append)
    try:
        first = cached()
        assert cached() is first and built == ["gpt-5.4-mini"]
        monkeypatch.setenv("OPENAI_MODEL", "gpt-x")
        assert cached() is first  # the environment is read again only on reload()
        config.reload()
        second = cached()
        assert second is not first and built == ["gpt-5.4-mini", "gpt-x"] and closed == [first]
    finally:
        config.per_settings._all.remove(cached)


def test_a_failed_build_is_not_cached(monkeypatch):
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", "")
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", "")
    config.reload()
    from lib import db, redis

    with pytest.raises(ConfigError):
        redis.client()
    monkeypatch.setenv("DATABASE_URL", "")
    config.reload()
    with pytest.raises(ConfigError):
        db.ping()
    assert db._pool.peek() is None
