"""Every setting, read from the environment in this one module.

`settings()` parses and validates once per process (warm invocations reuse it). A malformed
value raises ConfigError naming the variable, never echoing its value. Settings that only one
feature needs are optional here; the feature raises ConfigError when it needs one that is unset.
"""

import os
import re
from dataclasses import dataclass
from functools import cache

from lib.errors import ConfigError

PLANS = ("TRIAL", "TEAM", "AGENCY")


@dataclass(frozen=True)
class Rate:
    """A rate limit: `limit` requests per `window_s` seconds (parsed from e.g. '20/60s')."""

    limit: int
    window_s: int


@dataclass(frozen=True)
class Settings:
    environment: str
    # infrastructure
    database_url: str | None
    upstash_url: str | None
    upstash_token: str | None
    sentry_dsn: str | None
    max_body_bytes: int
    db_connect_timeout_s: int
    db_idle_check_s: float
    redis_timeout_s: float
    health_timeout_s: float
    # auth (Clerk)
    clerk_jwt_key: str | None
    clerk_secret_key: str | None
    clerk_api_url: str
    clerk_authorized_parties: tuple[str, ...]
    # plans, quotas, protection
    trial_days: int
    quotas: dict[str, int]
    rate_limit_ip: Rate
    rate_limit_user: Rate
    auto_block_threshold: int
    # LLM providers
    openai_api_key: str | None
    openai_base_url: str | None
    openai_model: str
    anthropic_api_key: str | None
    anthropic_base_url: str | None
    anthropic_model: str
    llm_timeout_s: float
    # billing (Stripe)
    stripe_secret_key: str | None
    stripe_webhook_secrets: tuple[str, ...]
    stripe_api_base: str | None
    stripe_prices: dict[str, tuple[str, ...]]
    # crons, email
    cron_secret: str | None
    retention_days: dict[str, int]
    app_url: str
    smtp_url: str | None
    email_from: str | None
    cron_time_budget_s: float
    purge_batch_size: int
    unsubscribe_secret: str | None
    # LLM circuit breaker (issue 3): skip the primary after N consecutive failures
    circuit_breaker_threshold: int
    circuit_breaker_cooldown_s: int


def _str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or default


def _int(name: str, default: int, lo: int = 0, hi: int = 2**31 - 1) -> int:
    raw = _str(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}")
    return value


def _float(name: str, default: float, lo: float = 0.0, hi: float = 3600.0) -> float:
    raw = _str(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number") from None
    if not lo < value <= hi:
        raise ConfigError(f"{name} must be in ({lo}, {hi}]")
    return value


def _list(name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in (_str(name) or "").split(",") if part.strip())


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*([smh]?)\s*$")


def _rate(name: str, default: str) -> Rate:
    match = _RATE.match(_str(name, default))
    if not match:
        raise ConfigError(f"{name} must look like '20/60s' (requests/window, unit s, m or h)")
    limit, amount, unit = int(match[1]), int(match[2]), match[3] or "s"
    window = amount * {"s": 1, "m": 60, "h": 3600}[unit]
    if limit < 1 or window < 1:
        raise ConfigError(f"{name} needs a limit and a window of at least 1")
    return Rate(limit, window)


def _url(name: str) -> str | None:
    value = _str(name)
    if value is not None and not re.match(r"^[a-z][a-z0-9+.-]*://", value):
        raise ConfigError(f"{name} must be a URL with a scheme")
    return value


@cache
def settings() -> Settings:
    """The process's settings, parsed once. Raises ConfigError on a malformed variable."""
    upstash_url, upstash_token = _url("UPSTASH_REDIS_REST_URL"), _str("UPSTASH_REDIS_REST_TOKEN")
    if bool(upstash_url) != bool(upstash_token):
        raise ConfigError("UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN must be set together")
    return Settings(
        environment=_str("VERCEL_ENV") or _str("APP_ENV", "development"),
        database_url=_url("DATABASE_URL"),
        upstash_url=upstash_url.rstrip("/") if upstash_url else None,
        upstash_token=upstash_token,
        sentry_dsn=_url("SENTRY_DSN"),
        max_body_bytes=_int("MAX_BODY_BYTES", 1024 * 1024, 1024, 4_500_000),
        db_connect_timeout_s=_int("DB_CONNECT_TIMEOUT_S", 3, 2, 30),
        db_idle_check_s=_float("DB_IDLE_CHECK_S", 30.0, -1, 3600),
        redis_timeout_s=_float("REDIS_TIMEOUT_S", 1.0, 0, 30),
        health_timeout_s=_float("HEALTH_TIMEOUT_S", 2.5, 0, 10),
        clerk_jwt_key=(_str("CLERK_JWT_KEY") or "").replace("\\n", "\n") or None,
        clerk_secret_key=_str("CLERK_SECRET_KEY"),
        clerk_api_url=(_url("CLERK_API_URL") or "https://api.clerk.com").rstrip("/"),
        clerk_authorized_parties=_list("CLERK_AUTHORIZED_PARTIES"),
        trial_days=_int("TRIAL_DAYS", 14, 0, 365),
        quotas={
            "TRIAL": _int("QUOTA_TRIAL", 50, 0),
            "TEAM": _int("QUOTA_TEAM", 1000, 0),
            "AGENCY": _int("QUOTA_AGENCY", 5000, 0),
        },
        rate_limit_ip=_rate("RATE_LIMIT_IP", "20/60s"),
        rate_limit_user=_rate("RATE_LIMIT_USER", "10/60s"),
        auto_block_threshold=_int("AUTO_BLOCK_THRESHOLD", 50, 1),
        openai_api_key=_str("OPENAI_API_KEY"),
        openai_base_url=_url("OPENAI_BASE_URL"),
        openai_model=_str("OPENAI_MODEL", "gpt-4o-mini"),
        anthropic_api_key=_str("ANTHROPIC_API_KEY"),
        anthropic_base_url=_url("ANTHROPIC_BASE_URL"),
        anthropic_model=_str("ANTHROPIC_MODEL", "claude-3-5-haiku-latest"),
        llm_timeout_s=_float("LLM_TIMEOUT_S", 25.0, 0, 300),
        stripe_secret_key=_str("STRIPE_SECRET_KEY"),
        stripe_webhook_secrets=_list("STRIPE_WEBHOOK_SECRET"),
        stripe_api_base=_url("STRIPE_API_BASE"),
        stripe_prices={"TEAM": _list("STRIPE_PRICE_TEAM"), "AGENCY": _list("STRIPE_PRICE_AGENCY")},
        cron_secret=_str("CRON_SECRET"),
        retention_days={
            "TRIAL": _int("RETENTION_DAYS_TRIAL", 30, 1),
            "TEAM": _int("RETENTION_DAYS_TEAM", 180, 1),
            "AGENCY": _int("RETENTION_DAYS_AGENCY", 365, 1),
        },
        app_url=(_url("APP_URL") or "http://localhost:3000").rstrip("/"),
        smtp_url=_url("SMTP_URL"),
        email_from=_str("EMAIL_FROM"),
        cron_time_budget_s=_float("CRON_TIME_BUDGET_S", 45.0, 0, 800),
        purge_batch_size=_int("PURGE_BATCH_SIZE", 5000, 1, 100_000),
        unsubscribe_secret=_str("UNSUBSCRIBE_SECRET"),
        circuit_breaker_threshold=_int("CIRCUIT_BREAKER_THRESHOLD", 5, 1, 1000),
        circuit_breaker_cooldown_s=_int("CIRCUIT_BREAKER_COOLDOWN_S", 30, 1, 3600),
    )


def reload() -> Settings:
    """Re-read the environment (for long-lived processes such as the operator CLI and tests)."""
    settings.cache_clear()
    return settings()
