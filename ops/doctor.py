"""`doctor`: check every setting and reach Postgres and Redis, one line per check with a fix
for each failure. Secrets are never printed: only their first characters (like the runbook's
`echo $OPENAI_API_KEY | head -c 10`) and their length. Exit 1 when anything required is wrong;
warnings (optional features off) don't fail. `--live` also asks each configured LLM
provider's models endpoint whether the configured model id exists.

What is checked comes from the table of variables in lib/config.py (`VARS`): each variable is
parsed by lib.config, a variable production requires fails when unset, and one that is secret
is shown only as a preview. This module adds what the table can't say: the shape a provider's
key has, and where to get it (`_CHECKS`). `config-docs` writes .env.example and
docs/configuration.md from the same table.

Where it runs matters (APP_ENV, VERCEL_ENV wins): in development, a missing LLM key, Stripe
setting or SMTP, or the local value `make dev` put in its place, is a warning that names the
local default in use (so a fresh `make dev` stack passes); deployed (preview, production) the
same things fail."""

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from lib import config, db, migrate, redis

OK, WARN, FAIL = "ok", "warn", "FAIL"
ENVIRONMENT = "production"  # what a deployment needs; development relaxes _LOCAL_DEFAULTS
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Check:
    name: str
    level: str
    detail: str
    fix: str = ""


class _Bad(Exception):
    """A set value of the wrong shape; the message is the check's detail (never the value)."""


def register(commands) -> None:
    p = commands.add_parser("doctor", help="check settings, Postgres and Redis",
                            description=__doc__)
    p.add_argument("--offline", action="store_true", help="check the settings only")
    p.add_argument("--live", action="store_true", help="also ask each configured LLM provider's "
                   "models endpoint whether the configured model exists")
    p.set_defaults(run=run)
    p = commands.add_parser("config-docs", help="write .env.example and docs/configuration.md "
                            "from lib/config.py", description=config_docs.__doc__)
    p.add_argument("--check", action="store_true", help="only report files that are out of date")
    p.set_defaults(run=config_docs)


def preview(value: str) -> str:
    """The first characters of a secret (at most 8, at most a quarter of it) and its length."""
    shown = value[:min(8, len(value) // 4)]
    return f"{shown}… ({len(value)} chars)"


def _shown(var: config.Var, value) -> str:
    values = value if isinstance(value, tuple) else (value,)
    return ", ".join(preview(v) if var.secret else str(v) for v in values)


def _prefixed(*prefixes: str, refuse: tuple[str, ...] = ()) -> Callable[[config.Var, str], str]:
    def check(var: config.Var, value: str) -> str:
        if value.startswith(refuse) or not value.startswith(prefixes):
            expected = " or ".join(f"{p}..." for p in prefixes)
            raise _Bad(f"{preview(value)} does not look like {expected}")
        return _shown(var, value)
    return check


def _each(prefix: str, noun: str) -> Callable[[config.Var, tuple[str, ...]], str]:
    def check(var: config.Var, values: tuple[str, ...]) -> str:
        if not all(v.startswith(prefix) for v in values):
            raise _Bad(f"{noun} does not start with {prefix}")
        return _shown(var, values)
    return check


def _database_url(var, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("postgres", "postgresql"):
        raise _Bad(f"scheme {parts.scheme[:12]!r}, expected postgresql")
    host = parts.hostname or "(local socket)"
    return f"{parts.scheme}://{parts.username or ''}@{host}{parts.path}"


def _http_url(var, value: str) -> str:
    if urlsplit(value).scheme not in ("https", "http"):
        raise _Bad("not an http(s) URL")
    return urlsplit(value).netloc


def _clerk_jwt_key(var, pem: str) -> str:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem.encode())
    except ValueError:
        raise _Bad("not a parseable PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise _Bad("not an RSA key (tokens are RS256)")
    return f"RSA {key.key_size}-bit public key"


def _cron_secret(var, value: str) -> str:
    if len(value) < config.MIN_SECRET_CHARS:
        raise _Bad(f"only {len(value)} characters, needs at least {config.MIN_SECRET_CHARS}")
    return preview(value)


def _sentry_dsn(var, dsn: str) -> str:
    parts = urlsplit(dsn)
    if not (parts.scheme in ("http", "https") and parts.username and parts.path.strip("/")):
        raise _Bad("not a DSN (https://key@host/project)")
    return f"project {parts.path.strip('/')} at {parts.hostname}"


def _smtp_url(var, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("smtp", "smtps"):
        raise _Bad("scheme must be smtp or smtps")
    return f"{parts.scheme}://{parts.hostname}"


def _email_from(var, value: str) -> str:
    if "@" not in value:
        raise _Bad("not an email address")
    return value


_UPSTASH_FIX = "copy the REST URL and token from the Upstash console (both are needed)"
_CLERK_FIX = ("paste the PEM public key from Clerk > API keys > JWT public key (one line, \\n "
              "escapes), or set CLERK_SECRET_KEY")
# Variable -> (shape check: parsed value -> what to show, raising _Bad; the fix when it fails).
_CHECKS: dict[str, tuple[Callable | None, str]] = {
    "DATABASE_URL": (_database_url, "set DATABASE_URL to the Neon pooled connection string "
                     "(postgresql://...)"),
    "UPSTASH_REDIS_REST_URL": (_http_url, _UPSTASH_FIX),
    "UPSTASH_REDIS_REST_TOKEN": (None, _UPSTASH_FIX),
    "CLERK_JWT_KEY": (_clerk_jwt_key, _CLERK_FIX),
    "CLERK_SECRET_KEY": (_prefixed("sk_"), "use the secret key (sk_live_/sk_test_) from Clerk > "
                         "API keys"),
    "OPENAI_API_KEY": (_prefixed("sk-", refuse=("sk-ant-",)), "use an OpenAI API key (sk-...; an "
                       "sk-ant- key belongs in ANTHROPIC_API_KEY)"),
    "ANTHROPIC_API_KEY": (_prefixed("sk-ant-"), "set an Anthropic key (sk-ant-...) to have a "
                          "fallback provider"),
    "STRIPE_SECRET_KEY": (_prefixed("sk_", "rk_"), "use the secret (sk_) or restricted (rk_) key "
                          "from Stripe > Developers"),
    "STRIPE_WEBHOOK_SECRET": (_each("whsec_", "a value"), "copy the signing secret (whsec_...) of "
                              "the webhook endpoint from Stripe > Webhooks"),
    "STRIPE_PRICE_TEAM": (_each("price_", "an id"), "set the Stripe price id(s) of the TEAM plan "
                          "(price_...; comma list)"),
    "STRIPE_PRICE_AGENCY": (_each("price_", "an id"), "set the Stripe price id(s) of the AGENCY "
                            "plan (price_...; comma list)"),
    "CRON_SECRET": (_cron_secret, f"set CRON_SECRET to at least {config.MIN_SECRET_CHARS} random "
                    "characters (e.g. `openssl rand -hex 32`)"),
    "SENTRY_DSN": (_sentry_dsn, "set the project DSN from Sentry > Settings > Client Keys"),
    "SMTP_URL": (_smtp_url, "set SMTP_URL=smtp://user:pass@host:587 (STARTTLS) or smtps://... "
                 "and EMAIL_FROM"),
    "EMAIL_FROM": (_email_from, "set EMAIL_FROM, e.g. Ascendos <hello@example.com>"),
    "CLERK_AUTHORIZED_PARTIES": (None, "set the frontend's origins, e.g. "
                                 "CLERK_AUTHORIZED_PARTIES=https://app.example.com"),
}


_LOCAL_LLM = "the local provider `make dev` starts (model local-dev)"
# Variable -> (the local default development uses instead, is the value that local default?).
_LOCAL_DEFAULTS: dict[str, tuple[str, Callable[[object, dict], bool]]] = {
    "OPENAI_API_KEY": (_LOCAL_LLM, lambda value, values: values.get("OPENAI_MODEL") == "local-dev"),
    "STRIPE_SECRET_KEY": ("no Stripe API calls; `ops stripe-trigger` sends signed test events",
                          lambda value, values: False),
    "STRIPE_WEBHOOK_SECRET": ("the dev secret `make dev` generates (whsec_dev_...), which "
                              "`ops stripe-trigger` signs with",
                              lambda value, values: any(v.startswith("whsec_dev_") for v in value)),  # type: ignore[attr-defined]
    "STRIPE_PRICE_TEAM": ("price_test_team, the price `ops stripe-trigger` sends",
                          lambda value, values: value == ("price_test_team",)),
    "STRIPE_PRICE_AGENCY": ("price_test_agency", lambda value, values: value == ("price_test_agency",)),
    "SMTP_URL": ("no email: reminders report `skipped: email not configured` (devtools/smtp.py "
                 "is a local SMTP sink)", lambda value, values: False),
    # Required in production only (issue 10 §5); locally any azp is accepted.
    "CLERK_AUTHORIZED_PARTIES": ("any azp (tokens from `ops dev-token`)", lambda value, values: False),
}


def environment() -> str:
    try:
        return config.settings().environment
    except config.ConfigError:
        return "development"


def _variable_check(var: config.Var, values: dict[str, object]) -> Check | None:
    value = values[var.name]
    shape, fix = _CHECKS.get(var.name, (None, "set it (see docs/configuration.md)"))
    if isinstance(value, config.ConfigError):
        return Check(var.name, FAIL, str(value), fix)
    deployed = environment() in config.DEPLOYED
    local = _LOCAL_DEFAULTS.get(var.name)
    if local and value not in (None, ()) and local[1](value, values):
        if deployed:
            return Check(var.name, FAIL, f"the local dev value ({local[0]}) in {environment()}", fix)
        return Check(var.name, WARN, f"local default: {local[0]}", fix)
    if value in (None, ()):
        if local and not deployed:
            return Check(var.name, WARN, f"not set: development uses {local[0]}", fix)
        if local and var.name == "SMTP_URL":
            return Check(var.name, FAIL, f"not set in {environment()}: {var.unset}", fix)
        alternative = values.get(var.alternative) if var.alternative else None
        if ENVIRONMENT in var.required and alternative in (None, ()):
            also = f" (nor {var.alternative})" if var.alternative else ""
            return Check(var.name, FAIL, f"not set{also}", fix)
        if var.unset:
            return Check(var.name, WARN, f"not set: {var.unset}", fix)
        return None  # optional, and nothing is lost without it
    try:
        return Check(var.name, OK, shape(var, value) if shape else _shown(var, value))
    except _Bad as bad:
        return Check(var.name, FAIL, str(bad), fix)


def settings_checks() -> list[Check]:
    """Every setting's check, without touching the network."""
    try:
        config.reload()
        parsed = Check("settings", OK, "every variable parses")
    except config.ConfigError as exc:
        parsed = Check("settings", FAIL, str(exc), "correct the variable named above")
    values = config.read_all()
    if values["SMTP_URL"] in (None, ()):
        values["EMAIL_FROM"] = None  # only the reminders' sender: unused without SMTP
    elif values["EMAIL_FROM"] is None:
        values["EMAIL_FROM"] = ""  # needed with SMTP: fails the shape check
    checks = [_variable_check(config.BY_NAME[name], values) for name in _CHECKS]
    where = Check("environment", OK, f"{environment()} (APP_ENV; VERCEL_ENV wins)"
                  + ("" if environment() in config.DEPLOYED else
                     ": local defaults are warnings, deployed they fail"))
    return [parsed, where, *(check for check in checks if check is not None)]


def connectivity_checks() -> list[Check]:
    """Postgres (`SELECT 1`, pending migrations) and Redis (`PING`)."""
    checks = []
    try:
        db.ping()
        pending = [m.version for m in migrate.status(migrate.url()) if m.applied_at is None]
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


_MODEL_FIX = {"openai": "OPENAI_MODEL", "anthropic": "ANTHROPIC_MODEL"}
_KEY_FIX = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
_LIVE_TIMEOUT_S = 10


def _listed_ids(provider) -> list[str]:
    from lib.generation.llm.clients import client

    sdk = client(provider.name, provider.api_key, provider.base_url)
    return [model.id for model in sdk.models.list(timeout=_LIVE_TIMEOUT_S)]


def provider_checks() -> list[Check]:
    """`--live`: each configured provider's models endpoint (through its SDK), and whether the
    configured model is among the ids it lists (a dated snapshot of an alias counts)."""
    from lib.generation import llm
    from lib.generation.llm import models

    checks = []
    for provider in llm.providers():
        name, variable = f"{provider.name}-model", _MODEL_FIX[provider.name]
        try:
            ids = _listed_ids(provider)
        except Exception as exc:  # noqa: BLE001 - any failure is a failed check, not a traceback
            status = getattr(exc, "status_code", None)
            fix = (f"{_KEY_FIX[provider.name]} is refused: create a new key" if status in (401, 403)
                   else f"check {provider.name.upper()}_BASE_URL and the provider's status page")
            checks.append(Check(name, FAIL, f"models endpoint failed ({type(exc).__name__}"
                                f"{f', HTTP {status}' if status else ''})", fix))
            continue
        if provider.model in ids or any(i.startswith(provider.model + "-") for i in ids):
            checks.append(Check(name, OK, f"{provider.model} is listed"))
            continue
        known = [i for i in ids if models.spec_for(provider.name, i).family is not None]
        suggestions = ", ".join((known or ids)[:5]) or "(the endpoint listed no models)"
        checks.append(Check(name, FAIL, f"{provider.model} is not among the {len(ids)} models "
                            "this key can use", f"set {variable} to one of: {suggestions}"))
    return checks


def run(args: argparse.Namespace) -> int:
    checks = settings_checks()
    if not args.offline:
        checks += connectivity_checks()
    if args.live:
        checks += provider_checks()
    width = max(len(c.name) for c in checks)
    for check in checks:
        fix = f"  -> {check.fix}" if check.level != OK and check.fix else ""
        print(f"{check.level:<5} {check.name:<{width}}  {check.detail}{fix}")
    failed = sum(c.level == FAIL for c in checks)
    warned = sum(c.level == WARN for c in checks)
    print(f"{failed} failed, {warned} warning(s), {len(checks) - failed - warned} ok")
    return 1 if failed else 0


def config_docs(args: argparse.Namespace) -> int:
    """Write .env.example and docs/configuration.md from the table of variables in
    lib/config.py (with --check, only list the files that differ and exit 1)."""
    stale = []
    for relative, render in config.GENERATED.items():
        path, text = ROOT / relative, render()
        if not path.exists() or path.read_text() != text:
            stale.append(relative)
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    verb = "out of date" if args.check else "written"
    print(f"{verb}: {', '.join(stale)}" if stale else "up to date")
    return 1 if stale and args.check else 0
