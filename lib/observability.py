"""Structured logs on stdout and error reports to Sentry.

Every log line is one JSON object carrying the current request id. Sentry is off unless
SENTRY_DSN is set, and the SDK is imported only then (it costs ~130 ms of cold start).
Events are scrubbed of credentials before they leave the process.
"""

import contextvars
import json
import sys

from lib.config import per_settings
from lib.utc import timestamp

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_SECRET_HEADERS = {"authorization", "cookie", "set-cookie", "stripe-signature", "x-api-key",
                   "proxy-authorization", "upstash-token"}


def log(event: str, level: str = "info", **fields) -> None:
    """Write one JSON log line. Never pass secrets in `fields`."""
    record = {"ts": timestamp(), "level": level,
              "event": event, "request_id": request_id.get(), **fields}
    sys.stdout.write(json.dumps(record, default=str) + "\n")
    sys.stdout.flush()


def _scrub(event: dict, _hint: dict) -> dict:
    request = event.get("request") or {}
    headers = request.get("headers")
    if isinstance(headers, dict):
        for name in list(headers):
            if name.lower() in _SECRET_HEADERS:
                headers[name] = "[Filtered]"
    request.pop("cookies", None)
    request.pop("data", None)
    return event


@per_settings
def _sentry(cfg):
    """The sentry_sdk module when a DSN is configured, else None. Initialised once per
    settings value (a config reload re-initialises it)."""
    if not cfg.sentry_dsn:
        return None
    import sentry_sdk

    sentry_sdk.init(dsn=cfg.sentry_dsn, environment=cfg.environment, send_default_pii=False,
                    before_send=_scrub, default_integrations=False,
                    auto_enabling_integrations=False, traces_sample_rate=0)
    return sentry_sdk


def report(exc: BaseException, **tags) -> None:
    """Send `exc` to Sentry (when configured) and wait for delivery: a function is frozen
    right after its response, so an unflushed event would be lost. Never raises."""
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
        sdk.flush(timeout=2)
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
