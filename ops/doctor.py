"""`doctor`: check every setting and reach Postgres and Redis, one line per check with a fix
for each failure. Secrets are never printed: only their first characters (like the runbook's
`echo $OPENAI_API_KEY | head -c 10`) and their length. Exit 1 when anything required is wrong;
warnings (optional features off) don't fail."""

import argparse
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from lib import config, db, migrate, redis

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    level: str
    detail: str
    fix: str = ""


def register(commands) -> None:
    p = commands.add_parser("doctor", help="check settings, Postgres and Redis",
                            description=__doc__)
    p.add_argument("--offline", action="store_true", help="check the settings only")
    p.set_defaults(run=run)


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def preview(value: str) -> str:
    """The first characters of a secret (at most 8, at most a quarter of it) and its length."""
    shown = value[:min(8, len(value) // 4)]
    return f"{shown}… ({len(value)} chars)"


def _prefixed(name: str, prefixes: tuple[str, ...], *, required: bool, fix: str,
              refuse: tuple[str, ...] = ()) -> Check:
    value = _env(name)
    if not value:
        return Check(name, FAIL if required else WARN, "not set", fix)
    if value.startswith(refuse) or not value.startswith(prefixes):
        expected = " or ".join(f"{p}..." for p in prefixes)
        return Check(name, FAIL, f"{preview(value)} does not look like {expected}", fix)
    return Check(name, OK, preview(value))


def _database_url() -> Check:
    value = _env("DATABASE_URL")
    fix = "set DATABASE_URL to the Neon pooled connection string (postgresql://...)"
    if not value:
        return Check("DATABASE_URL", FAIL, "not set", fix)
    parts = urlsplit(value)
    if parts.scheme not in ("postgres", "postgresql"):
        return Check("DATABASE_URL", FAIL, f"scheme {parts.scheme[:12]!r}, expected postgresql", fix)
    host = parts.hostname or "(local socket)"
    return Check("DATABASE_URL", OK, f"{parts.scheme}://{parts.username or ''}@{host}{parts.path}")


def _upstash() -> list[Check]:
    url, token = _env("UPSTASH_REDIS_REST_URL"), _env("UPSTASH_REDIS_REST_TOKEN")
    fix = "copy the REST URL and token from the Upstash console (both are needed)"
    checks = []
    if not url:
        checks.append(Check("UPSTASH_REDIS_REST_URL", FAIL, "not set", fix))
    elif urlsplit(url).scheme not in ("https", "http"):
        checks.append(Check("UPSTASH_REDIS_REST_URL", FAIL, "not an http(s) URL", fix))
    else:
        checks.append(Check("UPSTASH_REDIS_REST_URL", OK, urlsplit(url).netloc))
    checks.append(Check("UPSTASH_REDIS_REST_TOKEN", OK, preview(token)) if token
                  else Check("UPSTASH_REDIS_REST_TOKEN", FAIL, "not set", fix))
    return checks


def _clerk() -> list[Check]:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    pem, secret = _env("CLERK_JWT_KEY").replace("\\n", "\n"), _env("CLERK_SECRET_KEY")
    fix = ("paste the PEM public key from Clerk > API keys > JWT public key (one line, \\n "
           "escapes), or set CLERK_SECRET_KEY")
    checks = []
    if pem:
        try:
            key = load_pem_public_key(pem.encode())
        except ValueError:
            checks.append(Check("CLERK_JWT_KEY", FAIL, "not a parseable PEM public key", fix))
        else:
            if isinstance(key, rsa.RSAPublicKey):
                checks.append(Check("CLERK_JWT_KEY", OK, f"RSA {key.key_size}-bit public key"))
            else:
                checks.append(Check("CLERK_JWT_KEY", FAIL, "not an RSA key (tokens are RS256)", fix))
    if secret:
        checks.append(_prefixed("CLERK_SECRET_KEY", ("sk_",), required=True,
                                fix="use the secret key (sk_live_/sk_test_) from Clerk > API keys"))
    if not checks:
        checks.append(Check("CLERK_JWT_KEY", FAIL, "neither CLERK_JWT_KEY nor CLERK_SECRET_KEY set", fix))
    return checks


def _llm() -> list[Check]:
    openai = _prefixed("OPENAI_API_KEY", ("sk-",), required=False, refuse=("sk-ant-",),
                       fix="use an OpenAI API key (sk-...; an sk-ant- key belongs in ANTHROPIC_API_KEY)")
    anthropic = _prefixed("ANTHROPIC_API_KEY", ("sk-ant-",), required=False,
                          fix="set an Anthropic key (sk-ant-...) to have a fallback provider")
    if openai.level == WARN and anthropic.level == WARN:
        openai = Check("OPENAI_API_KEY", FAIL, "no LLM provider configured",
                       "set OPENAI_API_KEY (and ANTHROPIC_API_KEY for the fallback)")
    return [openai, anthropic]


def _stripe() -> list[Check]:
    checks = [_prefixed("STRIPE_SECRET_KEY", ("sk_", "rk_"), required=True,
                        fix="use the secret (sk_) or restricted (rk_) key from Stripe > Developers")]
    secrets = [s.strip() for s in _env("STRIPE_WEBHOOK_SECRET").split(",") if s.strip()]
    fix = "copy the signing secret (whsec_...) of the webhook endpoint from Stripe > Webhooks"
    if not secrets:
        checks.append(Check("STRIPE_WEBHOOK_SECRET", FAIL, "not set", fix))
    elif not all(s.startswith("whsec_") for s in secrets):
        checks.append(Check("STRIPE_WEBHOOK_SECRET", FAIL, "a value does not start with whsec_", fix))
    else:
        checks.append(Check("STRIPE_WEBHOOK_SECRET", OK,
                            ", ".join(preview(s) for s in secrets)))
    for plan in ("TEAM", "AGENCY"):
        name = f"STRIPE_PRICE_{plan}"
        prices = [p.strip() for p in _env(name).split(",") if p.strip()]
        fix = f"set the Stripe price id(s) of the {plan} plan (price_...; comma list)"
        if not prices:
            checks.append(Check(name, FAIL, "not set", fix))
        elif not all(p.startswith("price_") for p in prices):
            checks.append(Check(name, FAIL, "an id does not start with price_", fix))
        else:
            checks.append(Check(name, OK, ", ".join(prices)))  # price ids are not secret
    return checks


def _cron_secret() -> Check:
    value = _env("CRON_SECRET")
    fix = "set CRON_SECRET to at least 16 random characters (e.g. `openssl rand -hex 32`)"
    if not value:
        return Check("CRON_SECRET", FAIL, "not set (cron routes refuse to run)", fix)
    if len(value) < 16:
        return Check("CRON_SECRET", FAIL, f"only {len(value)} characters, needs at least 16", fix)
    return Check("CRON_SECRET", OK, preview(value))


def _optional() -> list[Check]:
    checks = []
    dsn = _env("SENTRY_DSN")
    if not dsn:
        checks.append(Check("SENTRY_DSN", WARN, "not set: errors are not reported",
                            "set the project DSN from Sentry > Settings > Client Keys"))
    else:
        parts = urlsplit(dsn)
        valid = parts.scheme in ("http", "https") and parts.username and parts.path.strip("/")
        checks.append(Check("SENTRY_DSN", OK, f"project {parts.path.strip('/')} at {parts.hostname}")
                      if valid else Check("SENTRY_DSN", FAIL, "not a DSN (https://key@host/project)",
                                          "copy the DSN from Sentry > Settings > Client Keys"))
    smtp, sender = _env("SMTP_URL"), _env("EMAIL_FROM")
    if not smtp:
        checks.append(Check("SMTP_URL", WARN, "not set: weekly reminders are not sent",
                            "set SMTP_URL=smtp://user:pass@host:587 (or smtps://) and EMAIL_FROM"))
    elif urlsplit(smtp).scheme not in ("smtp", "smtps"):
        checks.append(Check("SMTP_URL", FAIL, "scheme must be smtp or smtps",
                            "use smtp://user:pass@host:587 (STARTTLS) or smtps://host:465"))
    else:
        checks.append(Check("SMTP_URL", OK, f"{urlsplit(smtp).scheme}://{urlsplit(smtp).hostname}"))
        if "@" not in sender:
            checks.append(Check("EMAIL_FROM", FAIL, "not an email address",
                                "set EMAIL_FROM, e.g. Ascendos <hello@example.com>"))
    return checks


def settings_checks() -> list[Check]:
    """Every setting's check, without touching the network."""
    try:
        config.reload()
        parsed = Check("settings", OK, "every variable parses")
    except config.ConfigError as exc:
        parsed = Check("settings", FAIL, str(exc), "correct the variable named above")
    return [parsed, _database_url(), *_upstash(), *_clerk(), *_llm(), *_stripe(), _cron_secret(),
            *_optional()]


def connectivity_checks() -> list[Check]:
    """Postgres (`SELECT 1`, pending migrations) and Redis (`PING`)."""
    checks = []
    try:
        db.ping()
        pending = [m.version for m in migrate.status(db.database_url()) if m.applied_at is None]
        checks.append(Check("postgres", OK, "SELECT 1 ok, migrations up to date") if not pending
                      else Check("postgres", FAIL, f"{len(pending)} migration(s) pending: "
                                 f"{', '.join(pending)}", "run `python -m ops migrate`"))
    except Exception as exc:  # noqa: BLE001 - any failure is a failed check, not a traceback
        checks.append(Check("postgres", FAIL, f"unreachable ({type(exc).__name__})",
                            "check DATABASE_URL and the Neon status page"))
    try:
        redis.ping()
        checks.append(Check("redis", OK, "PING ok"))
    except Exception as exc:  # noqa: BLE001 - any failure is a failed check, not a traceback
        checks.append(Check("redis", FAIL, f"unreachable ({type(exc).__name__})",
                            "check the Upstash URL/token and the Upstash status page"))
    return checks


def run(args: argparse.Namespace) -> int:
    checks = settings_checks()
    if not args.offline:
        checks += connectivity_checks()
    width = max(len(c.name) for c in checks)
    for check in checks:
        fix = f"  -> {check.fix}" if check.level != OK and check.fix else ""
        print(f"{check.level:<5} {check.name:<{width}}  {check.detail}{fix}")
    failed = sum(c.level == FAIL for c in checks)
    warned = sum(c.level == WARN for c in checks)
    print(f"{failed} failed, {warned} warning(s), {len(checks) - failed - warned} ok")
    return 1 if failed else 0
