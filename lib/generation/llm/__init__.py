"""LLM completions: OpenAI first, Anthropic as the fallback, under one overall deadline.

Falls back on what says "this provider can't serve now" (`failed`: 429, 408, 5xx, timeouts,
connection errors, unparseable replies) and on what says "our configuration of it is wrong"
(`misconfigured`: 401/403, the runbook's invalid key; 404, model not found; 400 naming an
unsupported parameter or value). A misconfiguration is reported at most once per instance
per MISCONFIGURED_REPORT_S for each provider and reason. A 4xx the request itself caused (a
context too long, ...) is `rejected`: the caller's 400, not retried elsewhere (the other
provider would most likely refuse it too).

Only provider-side outcomes are caught here. Anything else raised while building or sending
the request (an SDK encoding error, a bug) propagates: the edge answers 500 and reports it,
and the circuit breaker never sees it (issue 11).

Deadline: LLM_TIMEOUT_S covers every attempt. With a fallback configured the primary gets at
most PRIMARY_SHARE of it, so a hung primary still leaves the fallback time to answer. A cold
instance's SDK import is not counted against it (see `complete`); vercel.json's maxDuration
(30 s) leaves room for that above the default 25 s.
SDK-level retries are off (see the provider modules). SDKs are imported on first use.
"""

import json
import sys
import threading
import time
from dataclasses import dataclass, field

from lib.config import settings
from lib.errors import ProviderUnavailable, ServiceUnavailable
from lib.generation.llm.types import Attempt, BadProviderResponse, Reply
from lib.observability import log, report

PRIMARY_SHARE = 0.6
MISCONFIGURED_REPORT_S = 300
_MIN_ATTEMPT_S = 0.5  # below this a call can't complete; record it as skipped instead


class NoProviderConfigured(ServiceUnavailable):
    code, default_message = "no_provider_configured", (
        "No LLM provider is configured: set OPENAI_API_KEY or ANTHROPIC_API_KEY "
        "(`make dev` starts a local provider, model local-dev, when neither is set)")


class ProviderRejected(ProviderUnavailable):
    """A 4xx the request itself caused (e.g. a context too long): the caller's 400."""

    status, code, default_message = 400, "provider_rejected", "The LLM provider rejected the request"


class ProviderMisconfigured(ProviderUnavailable):
    """Every provider tried said our configuration of it is wrong (key, model, parameter)."""

    code, default_message = "provider_misconfigured", "The LLM providers are misconfigured"


@dataclass(frozen=True)
class Provider:
    name: str
    model: str
    api_key: str
    base_url: str | None

    def _module(self):
        if self.name == "openai":
            from lib.generation.llm import openai_chat as module
        else:
            from lib.generation.llm import anthropic_messages as module
        return module

    def prepare(self) -> None:
        """Import the SDK and build the client (once per process)."""
        from lib.generation.llm.clients import client

        client(self.name, self.api_key, self.base_url)

    def complete(self, messages, system, max_tokens, temperature, timeout) -> Reply:
        return self._module().complete(self.api_key, self.base_url, self.model, messages, system,
                                       max_tokens, temperature, timeout)


@dataclass
class Outcome:
    """Every attempt of one request, and the reply when one succeeded."""

    attempts: list[Attempt] = field(default_factory=list)
    reply: Reply | None = None
    provider: str | None = None

    @property
    def primary_outcome(self) -> str | None:
        return self.attempts[0].outcome if self.attempts else None

    @property
    def fallback(self) -> bool:
        """Whether the fallback provider was tried (because the primary failed or was skipped)."""
        return any(a.provider != PRIMARY for a in self.attempts if a.outcome != "skipped")

    @property
    def fallback_reason(self) -> str | None:
        first = self.attempts[0] if self.attempts else None
        return first.reason if first and first.outcome in ("failed", "misconfigured", "skipped") \
            else None

    @property
    def error_class(self) -> str | None:
        tried = [a for a in self.attempts if a.outcome != "skipped"]
        return tried[-1].error_class if tried and self.reply is None else None

    @property
    def model(self) -> str | None:
        tried = [a for a in self.attempts if a.outcome != "skipped"]
        return self.reply.model if self.reply else (tried[-1].model if tried else None)

    @property
    def last_provider(self) -> str | None:
        tried = [a for a in self.attempts if a.outcome != "skipped"]
        return self.provider or (tried[-1].provider if tried else None)


PRIMARY = "openai"


def providers() -> list[Provider]:
    """The configured providers in order of preference (primary first)."""
    cfg = settings()
    configured = []
    if cfg.openai_api_key:
        configured.append(Provider("openai", cfg.openai_model, cfg.openai_api_key, cfg.openai_base_url))
    if cfg.anthropic_api_key:
        configured.append(Provider("anthropic", cfg.anthropic_model, cfg.anthropic_api_key,
                                   cfg.anthropic_base_url))
    return configured


def require_provider() -> None:
    """Raise NoProviderConfigured (503) unless at least one provider has a key."""
    if not providers():
        raise NoProviderConfigured()


_PROVIDER_MODULES = ("openai", "anthropic")
_UNSUPPORTED = ("unsupported_parameter", "unsupported_value", "unsupported parameter",
                "unsupported value", "not supported", "does not support")


def _is_provider_error(exc: BaseException) -> bool:
    """Whether `exc` is the provider's doing: an SDK APIError (HTTP status, timeout,
    connection, response validation), a 2xx that isn't a completion, or a body that isn't
    JSON. An SDK's local errors (encoding a lone surrogate, a TypeError) are not."""
    if isinstance(exc, (BadProviderResponse, json.JSONDecodeError)):
        return True
    for name in _PROVIDER_MODULES:
        module = sys.modules.get(name)
        if module is not None and isinstance(exc, module.APIError):
            return True
    return False


def _error_text(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    error = body.get("error", body) if isinstance(body, dict) else None
    parts = [str(getattr(exc, "code", "") or "")]
    if isinstance(error, dict):
        parts += [str(error.get(key) or "") for key in ("code", "type", "message")]
    else:
        parts.append(str(getattr(exc, "message", "") or ""))
    return " ".join(parts).lower()


def classify(exc: BaseException) -> tuple[str, str, int | None] | None:
    """(outcome, reason, http status) of a provider call's exception, or None when it is not
    the provider's doing (a local error: re-raised). Both SDKs raise the same shapes
    (APIStatusError with status_code and body, APITimeoutError, APIConnectionError)."""
    if not _is_provider_error(exc):
        return None
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    if isinstance(status, int):
        if status == 429:
            return "failed", "rate_limited", status
        if status == 408:
            return "failed", "timeout", status
        if status >= 500:
            return "failed", "server_error", status
        if status in (401, 403):
            return "misconfigured", "auth_error", status
        if status == 404:
            return "misconfigured", "model_not_found", status
        text = _error_text(exc)
        if "model_not_found" in text:
            return "misconfigured", "model_not_found", status
        if any(marker in text for marker in _UNSUPPORTED):
            return "misconfigured", "unsupported_parameter", status
        return "rejected", "request_rejected", status
    if "Timeout" in name:
        return "failed", "timeout", None
    if "Connection" in name:
        return "failed", "connection_error", None
    return "failed", "bad_response", None  # e.g. a reply the SDK couldn't parse


_reported: dict[tuple[str, str], float] = {}
_reported_lock = threading.Lock()


def report_misconfigured(provider: "Provider", reason: str, status: int | None,
                         exc: BaseException) -> None:
    """Log every misconfiguration; send it to Sentry at most once per MISCONFIGURED_REPORT_S
    per instance, provider and reason (every request would otherwise report it)."""
    log("provider_misconfigured", level="error", provider=provider.name, model=provider.model,
        reason=reason, http_status=status)
    now, key = time.monotonic(), (provider.name, reason)
    with _reported_lock:
        if now - _reported.get(key, -MISCONFIGURED_REPORT_S) < MISCONFIGURED_REPORT_S:
            return
        _reported[key] = now
    report(exc, component="llm", provider=provider.name, model=provider.model,
           reason=f"misconfigured:{reason}", http_status=status)


def complete(messages, system: str | None, max_tokens: int, temperature: float | None,
             skip_primary_reason: str | None = None) -> Outcome:
    """Try each configured provider in order until one answers. Returns the Outcome (with
    every attempt); raises ProviderRejected / ProviderUnavailable (502), carrying it as
    `.outcome`, when none did. `messages` is the conversation ([{"role", "content"}], user
    first and last). `skip_primary_reason` (e.g. "circuit_open") skips OpenAI."""
    configured = providers()
    if not configured:
        raise NoProviderConfigured()
    outcome = Outcome()
    if configured[0].name != PRIMARY:
        cfg = settings()
        outcome.attempts.append(Attempt(PRIMARY, cfg.openai_model, "skipped", "not_configured"))
    elif skip_primary_reason and len(configured) > 1:
        outcome.attempts.append(Attempt(PRIMARY, configured[0].model, "skipped", skip_primary_reason))
        configured = configured[1:]
    deadline = time.monotonic() + settings().llm_timeout_s
    for index, provider in enumerate(configured):
        # A cold instance imports the SDK here (0.5-3 s of local CPU, once per process). That
        # is not provider time: it extends the deadline rather than eating a provider's share.
        prepared = time.monotonic()
        provider.prepare()
        deadline += time.monotonic() - prepared
        remaining = deadline - time.monotonic()
        has_fallback = index < len(configured) - 1
        budget = min(remaining, settings().llm_timeout_s * PRIMARY_SHARE) if has_fallback else remaining
        if budget < _MIN_ATTEMPT_S:
            outcome.attempts.append(Attempt(provider.name, provider.model, "skipped", "deadline"))
            continue
        started = time.monotonic()
        try:
            reply = provider.complete(messages, system, max_tokens, temperature, budget)
        except Exception as exc:  # provider-side failures are classified; the rest re-raised
            classified = classify(exc)
            if classified is None:
                raise
            response = getattr(exc, "response", None)
            request_id = response.headers.get("x-request-id") or \
                response.headers.get("request-id") if response is not None else None
            record_failure(outcome, provider, classified, exc, _ms(started), request_id)
            continue
        outcome.attempts.append(Attempt(provider.name, reply.model, "succeeded",
                                        latency_ms=_ms(started), request_id=reply.request_id))
        outcome.reply, outcome.provider = reply, provider.name
        return outcome
    raise exhausted(outcome)


def record_failure(outcome: Outcome, provider: "Provider", classified: tuple[str, str, int | None],
                   exc: BaseException, latency_ms: int, request_id: str | None = None) -> None:
    """Record a provider-side failure as an attempt (reporting a misconfiguration); raises
    ProviderRejected when the provider refused the request itself (the caller's 400)."""
    result, reason, status = classified
    outcome.attempts.append(Attempt(provider.name, provider.model, result, reason,
                                    type(exc).__name__, status, latency_ms, request_id))
    if result == "misconfigured":
        report_misconfigured(provider, reason, status, exc)
    if result == "rejected":
        raise ProviderRejected(f"{provider.name} rejected the request (HTTP {status})",
                               outcome=outcome) from exc


def exhausted(outcome: Outcome) -> ProviderUnavailable:
    """The error when no provider answered: misconfigured when every one tried refused our
    configuration (an operator must act), else unavailable."""
    tried = [a for a in outcome.attempts if a.outcome != "skipped"]
    if tried and all(a.outcome == "misconfigured" for a in tried):
        return ProviderMisconfigured(outcome=outcome)
    return ProviderUnavailable(outcome=outcome)


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
