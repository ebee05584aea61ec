"""Structured logs on stdout and error reports to Sentry.

Every log line is one JSON object carrying the current request id. Sentry is off unless
SENTRY_DSN is set, and the SDK is imported only then (it costs ~130 ms of cold start).

Nothing secret or personal leaves the process (issue 10). Structurally: the SDK captures no
local variables, no request bodies and no PII. Then every string of every event (exception
values, messages, tags, extra, contexts, breadcrumbs, frames) and every log line goes through
`redact`, which replaces each configured secret value (every `secret` variable of
lib.config.VARS, the password of each database URL), the values registered for the current
request (`redact_in_request`: the bearer token, the strings of the JSON body such as a
prompt), `secret=`/`token=` query values and email addresses.

Reports are flushed off the response path: inside a request (`defer_flush`, which
lib.http.Endpoint opens) the flush waits until the response bytes are written, and runs before
the handler returns, so the instance can't be frozen with the event unsent. Degraded-mode
reports (`report_degraded`) are sent at most once per component per minute per instance.
"""

import contextvars
import json
import os
import re
import sys
import time
from urllib.parse import quote, unquote, urlsplit

from lib.config import VARS, csv, per_settings, url
from lib.utc import timestamp

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_SECRET_HEADERS = {"authorization", "cookie", "set-cookie", "stripe-signature", "x-api-key",
                   "proxy-authorization", "upstash-token"}
FILTERED = "[Filtered]"
_MIN_SECRET_CHARS = 4  # shorter values would shred every event and can't be real credentials
# Connection strings Vercel's Postgres integrations may set besides the settings table's own.
_EXTRA_URL_VARS = ("DATABASE_URL_UNPOOLED", "POSTGRES_URL", "POSTGRES_URL_NON_POOLING",
                   "POSTGRES_PRISMA_URL")
_EXTRA_SECRET_VARS = ("PGPASSWORD", "POSTGRES_PASSWORD")
_SECRET_PARAM = re.compile(r"((?:secret|token|api_key|apikey|password|signature)=)[^&\s\"'#]+",
                           re.IGNORECASE)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_request_values: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "redacted_request_values", default=())


def _forms(value: str) -> set[str]:
    """The ways a value can be spelled in an event or a line: raw, URL-quoted, JSON/repr-escaped."""
    forms = {value, json.dumps(value)[1:-1], repr(value)[1:-1]}
    try:
        forms.add(quote(value, safe=""))
    except UnicodeEncodeError:  # a lone surrogate (bad input the route will refuse): no URL form
        pass
    return forms


def _url_password(value: str) -> list[str]:
    try:
        password = urlsplit(value).password
    except ValueError:
        return []
    return [password, unquote(password)] if password else []


_secrets_cache: tuple[tuple, tuple[str, ...]] = ((), ())


def _secrets() -> tuple[str, ...]:
    """Every configured secret value, in every spelling, longest first. Read from the raw
    environment (not `settings()`), so scrubbing works even when a setting is malformed;
    recomputed only when a secret variable changes."""
    global _secrets_cache
    raw = tuple(var.raw() for var in VARS if var.secret)
    extra = tuple(os.environ.get(name) for name in _EXTRA_URL_VARS + _EXTRA_SECRET_VARS)
    key = raw + extra
    if _secrets_cache[0] == key:
        return _secrets_cache[1]
    values: set[str] = set()
    for var in VARS:
        value = var.raw() if var.secret else None
        if not value:
            continue
        values.add(value)
        if var.parse is csv:
            values.update(part.strip() for part in value.split(","))
        if var.parse is url:
            values.update(_url_password(value))
    for name in _EXTRA_URL_VARS:
        value = os.environ.get(name)
        if value:
            values.add(value)
            values.update(_url_password(value))
    values.update(os.environ.get(name) or "" for name in _EXTRA_SECRET_VARS)
    spelled = {form for value in values if len(value) >= _MIN_SECRET_CHARS for form in _forms(value)}
    result = tuple(sorted(spelled, key=len, reverse=True))
    _secrets_cache = (key, result)
    return result


def redact_in_request(*values: str | None) -> None:
    """Treat these values (a bearer token, a prompt) as secret for the rest of the request."""
    found = [v for v in values if isinstance(v, str) and len(v.strip()) >= _MIN_SECRET_CHARS]
    if found:
        spelled = {form for value in found for form in _forms(value)}
        _request_values.set(_request_values.get() + tuple(sorted(spelled, key=len, reverse=True)))


def redacted_request_scope() -> contextvars.Token:
    """Start a request's own set of redacted values (lib.http.Endpoint, per request)."""
    return _request_values.set(())


def redacted_request_values_reset(token: contextvars.Token) -> None:
    _request_values.reset(token)


def redact(text: str) -> str:
    """`text` with every secret, request value, `secret=` value and email address replaced."""
    for value in _request_values.get() + _secrets():
        if value in text:
            text = text.replace(value, FILTERED)
    text = _SECRET_PARAM.sub(r"\1" + FILTERED, text)
    return _EMAIL.sub("[email]", text)


def _walk(value):
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _walk(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_walk(item) for item in value]
    return value


def log(event: str, level: str = "info", **fields) -> None:
    """Write one JSON log line (redacted: see `redact`). Never pass secrets in `fields`."""
    record = {"ts": timestamp(), "level": level,
              "event": event, "request_id": request_id.get(), **fields}
    sys.stdout.write(redact(json.dumps(record, default=str)) + "\n")
    sys.stdout.flush()


def _scrub(event: dict, _hint: dict) -> dict:
    """before_send / before_send_transaction: drop what must never be sent, then redact every
    string anywhere in the event."""
    request = event.get("request") or {}
    headers = request.get("headers")
    if isinstance(headers, dict):
        for name in list(headers):
            if name.lower() in _SECRET_HEADERS:
                headers[name] = FILTERED
    for key in ("cookies", "data", "query_string", "env"):
        request.pop(key, None)
    event.pop("user", None)
    for container in [event.get("exception"), event.get("threads")]:
        for entry in (container or {}).get("values") or []:
            for frame in (entry.get("stacktrace") or {}).get("frames") or []:
                frame.pop("vars", None)
    return _walk(event)


def _scrub_breadcrumb(crumb: dict, _hint: dict) -> dict:
    return _walk(crumb)


@per_settings
def _sentry(cfg):
    """The sentry_sdk module when a DSN is configured, else None. Initialised once per
    settings value (a config reload re-initialises it)."""
    if not cfg.sentry_dsn:
        return None
    import sentry_sdk

    sentry_sdk.init(dsn=cfg.sentry_dsn, environment=cfg.environment, release=cfg.release,
                    send_default_pii=False,
                    include_local_variables=False, max_request_body_size="never",
                    before_send=_scrub, before_send_transaction=_scrub,
                    before_breadcrumb=_scrub_breadcrumb, default_integrations=False,
                    auto_enabling_integrations=False, traces_sample_rate=0)
    return sentry_sdk


_deferred: contextvars.ContextVar[list | None] = contextvars.ContextVar("sentry_deferred",
                                                                      default=None)
FLUSH_TIMEOUT_S = 2.0


def defer_flush() -> contextvars.Token:
    """Inside a request: reports queue their events and `flush_deferred` sends them once the
    response is written (lib.http.Endpoint). Outside one (the CLI), `report` flushes at once."""
    return _deferred.set([])


def flush_deferred(token: contextvars.Token) -> None:
    """Wait (at most FLUSH_TIMEOUT_S) for the events queued since `defer_flush`. Called after
    the response bytes went out and before the handler returns: the client isn't kept
    waiting, and the runtime can't freeze the instance before the events are sent (the same
    window vercel_runtime's wait_until drains in). Never raises."""
    pending = _deferred.get()
    _deferred.reset(token)
    if pending:
        _flush(pending[0])


def _flush(sdk) -> None:
    try:
        sdk.flush(timeout=FLUSH_TIMEOUT_S)
    except Exception as failure:  # noqa: BLE001 - reporting must never break the response
        log("sentry_failed", level="warning", error_class=type(failure).__name__)


def flush_after_response(sdk) -> None:
    """Make sure what `sdk` has queued is delivered: inside a request, once the response is
    written (`defer_flush`); outside one, now. For anything captured besides `report`."""
    pending = _deferred.get()
    if pending is None:
        _flush(sdk)
    elif not pending:
        pending.append(sdk)


DEGRADED_INTERVAL_S = 60.0


@per_settings
def _degraded_slots(cfg) -> dict[str, list[float]]:
    """Per process (an instance), like the SDK; a config reload (tests) starts afresh."""
    return {}



def _claim_degraded(component: str) -> bool:
    """Whether this thread may report `component` now: at most once per DEGRADED_INTERVAL_S.
    Lock-free and thread-safe: each component has a one-token slot (a list, created once by
    the atomic dict.setdefault); list.pop/append are atomic, so exactly one thread holds the
    token at a time, and a thread that finds the slot empty knows another is deciding."""
    try:
        slots = _degraded_slots()
    except Exception:  # noqa: BLE001 - a malformed setting: report (the report says why)
        return True
    slot = slots.setdefault(component, [float("-inf")])
    try:
        last = slot.pop()
    except IndexError:
        return False
    now = time.monotonic()
    if now - last < DEGRADED_INTERVAL_S:
        slot.append(last)
        return False
    slot.append(now)
    return True


def report_degraded(component: str, exc: BaseException, **tags) -> None:
    """A dependency failed and the caller carries on degraded (Redis fail-open, a provider
    fallback, a settle retry): logged every time, sent to Sentry at most once per component
    per minute per instance (an outage must not cost every request an event and a flush)."""
    if _claim_degraded(component):
        report(exc, component=component, degraded=True, **tags)
    else:
        log("degraded", level="warning", component=component, error_class=type(exc).__name__,
            **tags)


def report(exc: BaseException, **tags) -> None:
    """Send `exc` to Sentry (when configured) and make sure it is delivered: a function is
    frozen right after its response, so an unflushed event would be lost. Inside a request
    the flush waits until the response is written (`defer_flush`). Never raises."""
    log("error", level="error", error_class=type(exc).__name__, **tags)
    try:
        sdk = _sentry()
        if sdk is None:
            return
        with sdk.new_scope() as scope:
            scope.set_tag("request_id", request_id.get())
            for key, value in tags.items():
                scope.set_tag(key, value)
            sdk.capture_exception(exc)
        flush_after_response(sdk)
    except Exception as failure:  # noqa: BLE001 - reporting must never break the response
        log("sentry_failed", level="warning", error_class=type(failure).__name__)


# --- cron monitors and alert messages (issue 14) ----------------------------------------------

_MESSAGE_LEVELS = {"critical": "error", "warning": "warning", "ok": "info"}


def checkin(monitor: str, status: str, *, schedule: str | None = None,
            checkin_id: str | None = None, duration_s: float | None = None) -> str | None:
    """Send one Sentry cron check-in ("in_progress", "ok" or "error") for `monitor`, upserting
    the monitor with `schedule` (UTC crontab) so Sentry itself flags a run that never happened.
    Returns the check-in id to pass with the final status; None when Sentry is off. A final
    status is flushed before returning (the function may be frozen right after). Never raises."""
    try:
        sdk = _sentry()
        if sdk is None:
            return None
        from sentry_sdk.crons import capture_checkin

        config = None
        if schedule:
            # checkin_margin: Vercel's scheduler may start a run some minutes late.
            config = {"schedule": {"type": "crontab", "value": schedule}, "timezone": "UTC",
                      "checkin_margin": 15, "max_runtime": 15}
        found = capture_checkin(monitor_slug=monitor, check_in_id=checkin_id, status=status,
                                duration=duration_s,
                                monitor_config=config)  # type: ignore[arg-type]  # a TypedDict
        if status != "in_progress":
            sdk.flush(timeout=2)
        return found
    except Exception as failure:  # noqa: BLE001 - monitoring must never break the run
        log("sentry_failed", level="warning", error_class=type(failure).__name__)
        return None


def capture_alert(text: str, level: str, **tags) -> bool:
    """Send an alert notice to Sentry as a message at the alert's level (critical -> error,
    warning, ok -> info), grouped per metric and level, and wait for delivery. True when
    Sentry took it (as far as the SDK can tell); False when Sentry is off or failed."""
    try:
        sdk = _sentry()
        if sdk is None:
            return False
        with sdk.new_scope() as scope:
            for key, value in tags.items():
                scope.set_tag(key, value)
            scope.fingerprint = ["alert", str(tags.get("metric")), level]
            sent = sdk.capture_message(text, level=_MESSAGE_LEVELS.get(level, "info"))
        sdk.flush(timeout=2)
        return sent is not None
    except Exception as failure:  # noqa: BLE001 - reporting must never break the run
        log("sentry_failed", level="warning", error_class=type(failure).__name__)
        return False


def sentry_enabled() -> bool:
    """Whether error reports (and alert messages) go to Sentry."""
    try:
        return _sentry() is not None
    except Exception:  # noqa: BLE001 - a broken SDK means "not enabled"
        return False
