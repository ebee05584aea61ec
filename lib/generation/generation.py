"""One LLM generation for the caller's organization (served by lib.routes.generate).

The order is cheapest first, and each step runs only if the previous ones passed:
1. `admit`: one Redis round trip: blocked IP, IP and user rate limits, the OpenAI circuit
   state; blocked -> 403, IP limit -> 429 (and a strike towards the auto-block), bad token ->
   401, user limit -> 429. The edge verifies the token (CPU only with CLERK_JWT_KEY) before
   that round trip so the user's limiter can ride in it; `admit` acts on its verdict only
   after the IP checks.
2. `parse_generation_request`: the body is validated (400 naming the field);
3. `generate`: one Postgres statement provisions the caller and reserves a unit of quota
   (402 when the trial ended, the subscription is inactive or the month's quota is used up);
4. the providers are called (lib.generation.llm); 5. one statement closes the generations
   row (`quota.record_success`, or `quota.release` giving the unit back).
Redis trouble fails open (reported, request served, the Postgres quota still holds);
Postgres trouble is a 503 with nothing written. Plain values in and out: no Request here.
"""

import math
import time
from dataclasses import dataclass

from decimal import Decimal
from uuid import UUID

from psycopg.types.json import Jsonb

from lib import redis
from lib.auth import Identity
from lib.errors import AppError, BadRequest, IpBlocked, Unauthorized
from lib.generation import circuit_breaker, llm, pricing, quota, rate_limits
from lib.observability import log, report_degraded

MAX_PROMPT_CHARS = 20_000
MAX_SYSTEM_CHARS = 20_000
MAX_TOKENS = 4096
DEFAULT_MAX_TOKENS = 1024
_FIELDS = {"prompt", "system", "max_tokens", "temperature"}


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    system: str | None
    max_tokens: int
    temperature: float | None


def _field_error(name: str, message: str) -> BadRequest:
    return BadRequest(f"{name}: {message}", details={"field": name})


def parse_generation_request(body: dict) -> GenerationRequest:
    """Validate the JSON body; raises BadRequest naming the offending field. Pure."""
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise _field_error(unknown[0][:64], "unknown field")
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise _field_error("prompt", "required, a string")
    if not 1 <= len(prompt) <= MAX_PROMPT_CHARS or not prompt.strip():
        raise _field_error("prompt", f"must be 1 to {MAX_PROMPT_CHARS} characters, not blank")
    system = body.get("system")
    if system is not None and (not isinstance(system, str) or len(system) > MAX_SYSTEM_CHARS):
        raise _field_error("system", f"must be a string of at most {MAX_SYSTEM_CHARS} characters")
    max_tokens = body.get("max_tokens", DEFAULT_MAX_TOKENS)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or \
            not 1 <= max_tokens <= MAX_TOKENS:
        raise _field_error("max_tokens", f"must be an integer from 1 to {MAX_TOKENS}")
    temperature = body.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or \
                not math.isfinite(temperature) or not 0 <= temperature <= 2:
            raise _field_error("temperature", "must be a number from 0 to 2")
        temperature = float(temperature)
    return GenerationRequest(prompt, system or None, max_tokens, temperature)


@dataclass(frozen=True)
class Admission:
    """What the batched Redis checks let through: the user's limiter state (None when Redis
    was unreachable: fail open) and the primary provider's circuit breaker."""

    user_limit: rate_limits.LimitResponse | None
    breaker: circuit_breaker.BreakerState


@dataclass(frozen=True)
class Generation:
    """One served generation: the reply and its accounting."""

    id: UUID
    text: str
    provider: str
    model: str
    fallback: bool
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    quota: dict


def _checks(ip: str, user_id: str | None):
    """Run the batched Redis checks. Fails open: (None, closed breaker) when Redis is down."""
    batch = redis.Batch()
    checks = rate_limits.queue_checks(batch, ip, user_id)
    breaker = circuit_breaker.queue_read(batch, llm.PRIMARY)
    try:
        batch.run()
        return checks(), breaker()
    except redis.RedisUnavailable as exc:
        report_degraded("redis", exc, part="rate_limits", fail_open=True)
        return None, circuit_breaker.BreakerState(llm.PRIMARY)


def admit(client_ip: str, identity: Identity | None,
          auth_error: AppError | None = None) -> Admission:
    """Step 1 (one Redis round trip). `identity` is the verified caller, or None with
    `auth_error` saying why not; that verdict is raised only after the IP checks, so an
    IP over its limit gets its 429 (and strike) whatever token it sends. Raises IpBlocked,
    RateLimitExceeded (IP, then user) or `auth_error`."""
    checks, breaker = _checks(client_ip, identity.user_id if identity else None)
    if checks is not None and checks.blocked:
        raise IpBlocked()
    if checks is not None and not checks.ip.allowed:
        rate_limits.record_ip_strike(client_ip)
        raise rate_limits.rejection(checks.ip, "IP address")
    if auth_error is not None or identity is None:
        raise auth_error or Unauthorized()
    if checks is not None and not checks.user.allowed:
        raise rate_limits.rejection(checks.user, "user")
    return Admission(checks.user if checks is not None else None, breaker)


def generate(identity: Identity, params: GenerationRequest,
             admission: Admission) -> Generation:
    """Steps 3-5 for an admitted caller. Every call that reaches the providers leaves exactly
    one closed generations row. Raises NoProviderConfigured, the quota refusals (402),
    DatabaseUnavailable, or ProviderUnavailable / ProviderRejected carrying the generation id
    and the quota after the unit was given back."""
    llm.require_provider()
    reservation = quota.reserve(identity)
    breaker = admission.breaker
    started = time.monotonic()
    try:
        outcome = llm.complete(params.prompt, params.system, params.max_tokens,
                               params.temperature,
                               skip_primary_reason="circuit_open" if breaker.open else None)
    except llm.ProviderUnavailable as exc:
        _update_breaker(breaker, exc.outcome)
        used = quota.release(reservation, _failure_record(exc.outcome, started))
        raise type(exc)(exc.message, outcome=exc.outcome, details={
            "generation_id": str(reservation.generation_id),
            "quota": reservation.quota(used)}) from exc
    except BaseException as exc:
        quota.release(reservation, _failure_record(llm.Outcome(), started, exc))
        raise
    _update_breaker(breaker, outcome)
    reply = outcome.reply
    price = pricing.price_for(reply.model)
    cost = pricing.cost_usd(price, reply.input_tokens, reply.output_tokens)
    try:
        quota.record_success(reservation, {
            **_common_record(outcome, started), "provider": outcome.provider, "model": reply.model,
            "input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens,
            "cost_usd": cost, "price_version": price.version})
    except AppError as exc:
        # The text exists and the quota stays reserved (the row stays pending); losing the
        # answer the user already waited for would be worse than a gap in the accounting.
        report_degraded("record_generation", exc,
                        generation_id=str(reservation.generation_id))
    log("generation", provider=outcome.provider, model=reply.model, fallback=outcome.fallback,
        input_tokens=reply.input_tokens, output_tokens=reply.output_tokens, cost_usd=str(cost))
    return Generation(reservation.generation_id, reply.text, outcome.provider, reply.model,
                      outcome.fallback, reply.input_tokens, reply.output_tokens, cost,
                      reservation.quota())


def _update_breaker(breaker: circuit_breaker.BreakerState, outcome: llm.Outcome) -> None:
    primary = next((a for a in outcome.attempts if a.provider == llm.PRIMARY), None)
    if primary is None or primary.outcome in ("skipped", "rejected"):
        return
    if primary.outcome == "failed":
        circuit_breaker.record_failure(breaker)
    else:
        circuit_breaker.record_success(breaker)


def _common_record(outcome: llm.Outcome, started: float) -> dict:
    return {"latency_ms": round((time.monotonic() - started) * 1000), "fallback": outcome.fallback,
            "fallback_reason": outcome.fallback_reason, "primary_outcome": outcome.primary_outcome,
            "attempts": Jsonb([a.as_json() for a in outcome.attempts])}


def _failure_record(outcome: llm.Outcome, started: float, exc: BaseException | None = None) -> dict:
    return {**_common_record(outcome, started), "provider": outcome.last_provider,
            "model": outcome.model,
            "error_class": type(exc).__name__ if exc is not None else outcome.error_class}
